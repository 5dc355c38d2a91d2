import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { descendants, freePort, rung, signalPid, type TestProcess, waitFor, waitForOutput } from "@rung/testkit";
import { it } from "@rung/testkit/vitest";
import { afterAll, describe, expect } from "vitest";

/**
 * Issue 13, item 11: `rung server` as a user runs it. A nats-server that dies makes `rung server`
 * exit non-zero (so a supervisor restarts it); a port or a JetStream store already in use is one
 * sentence, not the server's log.
 */

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function storeDir(): string {
  const d = mkdtempSync(join(tmpdir(), "rung-server-"));
  dirs.push(d);
  return d;
}

function server(port: number, store: string): TestProcess {
  return rung(["server", "--port", String(port), "--store", store]);
}

/** The exit code, or "running" if the process has not exited within `ms`. */
function exitWithin(p: TestProcess, ms: number): Promise<number | null | "running"> {
  return Promise.race([p.exited, new Promise<"running">((r) => setTimeout(() => r("running"), ms))]);
}

describe("rung server", () => {
  it("exits non-zero, with one sentence, when its nats-server dies", async ({ procs }) => {
    const p = server(await freePort(), storeDir());
    procs.push(p);
    await waitForOutput(p, /nats-server ready at/, 20_000);
    const nats = await waitFor("the nats-server child", () =>
      descendants(p.child.pid).find((c) => c.cmd.includes("nats-server")),
    );
    signalPid(nats.pid, "SIGKILL");
    expect(await exitWithin(p, 15_000)).toBe(1);
    expect(p.stderr()).toMatch(
      new RegExp(`^rung: nats-server \\(pid ${nats.pid}\\) exited unexpectedly \\(killed by SIGKILL\\) — the mesh is down`, "m"),
    );
    expect(p.stdout().toString()).not.toContain("nats-server stopped");
  });

  it("stops cleanly (exit 0) on Ctrl-C", async ({ procs }) => {
    const p = server(await freePort(), storeDir());
    procs.push(p);
    await waitForOutput(p, /nats-server ready at/, 20_000);
    const code = await p.stop("SIGINT");
    expect(code, `${p.child.signalCode}: ${p.out()}`).toBe(0);
    expect(p.stdout().toString()).toContain("nats-server stopped");
  });

  it("says in one sentence that the port or the store is already in use", async ({ procs }) => {
    const port = await freePort();
    const store = storeDir();
    const first = server(port, store);
    procs.push(first);
    await waitForOutput(first, /nats-server ready at/, 20_000);

    // Same port, another store.
    const samePort = server(port, storeDir());
    procs.push(samePort);
    expect(await exitWithin(samePort, 15_000)).toBe(1);
    const portErr = samePort.stderr().trim().split("\n");
    expect(portErr[0]).toBe(
      `rung: nats-server exited during start: address already in use on 127.0.0.1:${port} — another server listens there (is "rung server" already running?); stop it or choose another port`,
    );
    expect(portErr.length).toBeLessThanOrEqual(2); // and at most "(run with --verbose for details)"
    expect(samePort.stderr()).not.toMatch(/\[(INF|FTL)\]/);

    // Same store, another port: two servers on one JetStream store would corrupt it.
    const sameStore = server(await freePort(), store);
    procs.push(sameStore);
    expect(await exitWithin(sameStore, 15_000)).toBe(1);
    const storeErr = sameStore.stderr().trim().split("\n");
    expect(storeErr[0]).toMatch(
      /^rung: the JetStream store \S+ is in use by another nats-server \(pid \d+; is "rung server" already running\?\) — stop that one, or use another directory$/,
    );
    expect(storeErr[0]).toContain(join(store, "jetstream"));
    expect(storeErr.length).toBeLessThanOrEqual(2);

    // The first one never noticed.
    expect(first.alive()).toBe(true);
  });
});
