import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { type AuthInitResult, connectNats, initAuth } from "@rung/protocol";
import { REPO, rung, type TestNats, type TestProcess } from "@rung/testkit";
import { meshTest, type Processes } from "@rung/testkit/vitest";

/**
 * A nats-server that knows only the users `rung auth init` generated (prefix `sec`, agents a1 and a2),
 * and the commands and connections of one test on it, as each role.
 */

export const PREFIX = "sec";

/** The commands and connections of one test on the secured server, as each role; closed after the test. */
export function secureMesh(nats: TestNats, auth: AuthInitResult, procs: Processes, conns: NatsConnection[]) {
  const creds = (file: string) => join(auth.dir, file);
  const mesh = () => ["--nats", nats.url, "--prefix", PREFIX];

  async function as(file: string): Promise<NatsConnection> {
    const nc = await connectNats({ url: nats.url, creds: creds(file), reconnectForever: false, name: `test ${file}` });
    conns.push(nc);
    return nc;
  }

  /** The server's own record of refused publishes and subscriptions since `from` (an offset in its log). */
  function violations(from = 0): string[] {
    return nats.stderr
      .slice(from)
      .split("\n")
      .filter((l) => /Violation/.test(l));
  }

  function agent(name: string): TestProcess {
    const p = rung([
      "agent",
      ...mesh(),
      "--creds",
      creds(`agent-${name}.creds`),
      "--trust",
      auth.signingKey.publicKey,
      "--name",
      name,
      "--fake-gpus",
      "1",
      "--workdir",
      REPO,
      "--state-dir",
      join(auth.dir, "..", `state-${name}`),
      "--lease",
      "3s",
    ]);
    procs.push(p);
    return p;
  }

  async function viewer(args: string[], timeoutMs = 15_000): Promise<{ code: number | null; out: string }> {
    const p = rung([...args, ...mesh(), "--creds", creds("viewer.creds")]);
    procs.push(p);
    const t = setTimeout(() => p.child.kill("SIGINT"), timeoutMs);
    const code = await p.exited;
    clearTimeout(t);
    return { code, out: p.out() };
  }

  /** Writes `spec` (a spec as JSON) and runs it as the coordinator, orders signed. */
  function study(spec: Record<string, unknown> & { name: string }): TestProcess {
    const file = join(mkdtempSync(join(tmpdir(), "rung-secure-study-")), `${spec.name}.json`);
    writeFileSync(file, JSON.stringify(spec));
    const p = rung([
      "study",
      "run",
      file,
      ...mesh(),
      "--creds",
      creds("coordinator.creds"),
      "--signing-key",
      auth.signingKey.file,
    ]);
    procs.push(p);
    return p;
  }

  return { creds, mesh, as, violations, agent, viewer, study };
}

/** A server that knows only the users `rung auth init` generated for this file. */
export const secureTest = meshTest
  .extend("auth", { scope: "file" }, () =>
    initAuth({ dir: join(mkdtempSync(join(tmpdir(), "rung-auth-test-")), "auth"), prefix: PREFIX, agents: ["a1", "a2"] }),
  )
  .extend("natsOptions", { scope: "file" }, ({ auth }) => ({ extraConfig: readFileSync(auth.config, "utf8") }))
  .extend("leakGraceMs", 5000)
  .extend("sec", ({ nats, auth, procs }, { onCleanup }) => {
    const conns: NatsConnection[] = [];
    onCleanup(async () => {
      await Promise.all(conns.splice(0).map((c) => c.close()));
    });
    return secureMesh(nats, auth, procs, conns);
  });
