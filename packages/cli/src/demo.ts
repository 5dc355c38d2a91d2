import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type Agent, startAgent } from "@rung/agent";
import {
  bestText,
  DetachedError,
  earlyStoppingSavings,
  groupFindings,
  leaderboardTable,
  loadSpec,
  loadStudyReport,
  runStudy,
  type StudyProgress,
  type StudyResult,
  type StudySpec,
  savingsText,
  studyEndState,
} from "@rung/coordinator";
import {
  connectNats,
  createLogger,
  createSigningKey,
  MeshNames,
  type NatsServerProcess,
  signOrder,
  startNatsServer,
} from "@rung/protocol";

/** Where `rung demo` finds the example study: the checkout this CLI was built in. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export interface DemoOptions {
  /** Use this NATS instead of starting an embedded one. */
  nats?: string;
  prefix?: string;
  /** Study spec. Default configs/digits.yaml of the checkout (the recommended configuration). */
  spec?: string;
  /** Root the spec's workdir is relative to. Default the checkout. */
  workdir?: string;
  /** Local agents. Default 4. */
  agents?: number;
  /** Simulated GPUs per agent; default 1, or the real GPUs when nvidia-smi finds some. */
  fakeGpus?: number;
  out: NodeJS.WritableStream;
  onProgress?: (p: StudyProgress) => void;
  /** Called when the study ends, before the summary is printed (to close a progress line). */
  onStudyEnd?: () => void;
  signal?: AbortSignal;
}

export interface DemoResult {
  result: StudyResult;
  spec: StudySpec;
  logFile: string;
}

function realGpusPresent(): boolean {
  const r = spawnSync(process.env.RUNG_NVIDIA_SMI ?? "nvidia-smi", ["-L"], { encoding: "utf8", timeout: 10_000 });
  return r.status === 0 && /GPU \d+:/.test(r.stdout ?? "");
}

/**
 * The whole product on one machine: an embedded nats-server in a temp store, local agents (simulated
 * GPUs unless real ones are found), and the example study run by an in-process coordinator. Every
 * process it starts is stopped before it returns, also when `signal` aborts.
 */
export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const specPath = o.spec ?? join(REPO_ROOT, "configs", "digits.yaml");
  if (!existsSync(specPath)) {
    throw new Error(
      `the demo study ${specPath} is missing — run "rung demo" from a Rung checkout, or pass --spec FILE --workdir DIR`,
    );
  }
  const spec = await loadSpec(specPath);
  const logDir = join(homedir(), ".rung", "demo");
  mkdirSync(logDir, { recursive: true });
  const logFile = join(logDir, `demo-${new Date().toISOString().replace(/[:.]/g, "-")}.log`);
  const log = createLogger({ destination: logFile, level: process.env.RUNG_LOG_LEVEL ?? "info" });
  const dir = mkdtempSync(join(tmpdir(), "rung-demo-"));
  let server: NatsServerProcess | undefined;
  const agents: Agent[] = [];
  const say = (s: string) => o.out.write(`${s}\n`);
  try {
    let url = o.nats;
    if (!url) {
      server = await startNatsServer({ dir: join(dir, "nats") });
      url = server.url;
      say(`embedded nats-server at ${url}`);
    }
    // The secure path, as on rented boxes: an ephemeral signing key for this run; the agents trust
    // only it, so they run only the orders this demo's coordinator signs.
    const key = createSigningKey();
    const real = o.fakeGpus === undefined && realGpusPresent();
    const count = real ? 1 : (o.agents ?? 4);
    for (let i = 0; i < count; i++) {
      agents.push(
        await startAgent({
          nats: { url },
          prefix: o.prefix,
          name: `demo-${i + 1}`,
          fakeGpus: real ? 0 : (o.fakeGpus ?? 1),
          workdir: o.workdir ?? REPO_ROOT,
          stateDir: join(dir, `agent-${i + 1}`),
          stopGrace: "5s",
          drain: "requeue",
          trust: [key.publicKey],
          logger: log.child({ agent: `demo-${i + 1}` }),
        }),
      );
    }
    say(
      `${count} local agent(s) with ${real ? "the real GPUs" : `${o.fakeGpus ?? 1} simulated GPU(s) each`}; logs in ${logFile}`,
    );
    say(`work orders signed with an ephemeral key; the agents trust only ${key.publicKey.slice(0, 12)}…`);
    say(
      `study ${spec.name}: ${spec.scheduler.type}, ${spec.metric.name} (${spec.metric.mode}), up to ${spec.maxConcurrent ?? "∞"} trials at once`,
    );
    const nc = await connectNats({ url, name: "rung-demo coordinator" });
    try {
      const result = await runStudy({
        nc,
        spec,
        prefix: o.prefix,
        log,
        signal: o.signal,
        onProgress: o.onProgress,
        signOrder: (order) => signOrder(order, key.seed),
      });
      o.onStudyEnd?.();
      say("");
      say(`study ${result.study} ${studyEndState(result.status, result.state)}`);
      say("");
      say(leaderboardTable(result.state));
      say("");
      say(bestText(result.state));
      say(savingsText(earlyStoppingSavings(result.state, spec.scheduler.maxT)));
      const report = await loadStudyReport(nc, new MeshNames(o.prefix ?? "rung"), spec.name).catch(() => undefined);
      if (report) {
        const groups = groupFindings(report.findings);
        say("");
        if (groups.length === 0) say("diagnosis: no bottleneck found (GPU busy share and data wait look healthy)");
        for (const g of groups.slice(0, 4)) {
          const first = g.findings[0];
          if (!first) continue;
          const more = g.findings.length > 1 ? ` (and ${g.findings.length - 1} more trial(s))` : "";
          say(`diagnosis · ${first.severity} · ${first.summary}${more}`);
          if (first.advice[0]) say(`  → ${first.advice[0]}`);
        }
        if (o.nats) say(`full report: rung study report ${spec.name} --nats ${o.nats}`);
      }
      return { result, spec, logFile };
    } finally {
      await nc.close();
    }
  } catch (err) {
    if (err instanceof DetachedError) throw new Error("demo interrupted; everything it started has been stopped", { cause: err });
    throw err;
  } finally {
    await Promise.allSettled(agents.map((a) => a.close()));
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
