import { writeFileSync } from "node:fs";
import {
  bestText,
  DetachedError,
  deleteStudy,
  leaderboardTable,
  listStudies,
  loadSpec,
  loadStudy,
  loadStudyReport,
  renderReportMarkdown,
  renderReportText,
  runStudy,
  stopStudy,
  studyStatusJson,
} from "@rung/coordinator";
import { connectNats, createLogger, parseDuration, readSigningKey, signOrder } from "@rung/protocol";
import type { Command } from "commander";
import { withMesh } from "../connect.js";
import { type NatsFlags, natsOptionsFrom, withNatsOptions } from "../nats-options.js";
import { progressPrinter } from "../progress.js";
import { onShutdown } from "../signals.js";

function json(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function registerStudy(program: Command): void {
  const study = program.command("study").description("run and inspect studies");

  withNatsOptions(
    study
      .command("run <spec>")
      .description("run a study (YAML or JSON spec): search, schedule, live progress, leaderboard")
      .option("--out <file>", "also write the best configuration as JSON to this file")
      .option("--lease <duration>", "coordinator lease: how soon another coordinator may take over if this one dies", "15s")
      .option(
        "--signing-key <file>",
        'sign every work order with this key, signing.nk from "rung auth init" (env RUNG_SIGNING_KEY)',
        process.env.RUNG_SIGNING_KEY || undefined,
      )
      .option("--replicas <n>", "JetStream replicas for the mesh's streams and buckets (3 on a three-node cluster)"),
  ).action(async (specPath: string, o: NatsFlags & { out?: string; lease: string; signingKey?: string; replicas?: string }) => {
    const spec = await loadSpec(specPath);
    // Read before connecting, so a wrong path is one clear sentence and nothing is left half-started.
    const key = o.signingKey ? readSigningKey(o.signingKey) : undefined;
    if (!key)
      process.stderr.write("note: orders go out unsigned (no --signing-key); only agents started with --insecure run them\n");
    const replicas = o.replicas === undefined ? undefined : Number(o.replicas);
    if (replicas !== undefined && !(Number.isInteger(replicas) && replicas >= 1 && replicas <= 5))
      throw new Error(`--replicas: must be a whole number from 1 to 5, got ${JSON.stringify(o.replicas)}`);
    const nc = await connectNats(natsOptionsFrom(o, `rung-coordinator ${spec.name}`));
    const log = createLogger({ level: process.env.RUNG_LOG_LEVEL ?? "warn" });
    const printer = progressPrinter();
    const detach = new AbortController();
    const shutdown = onShutdown(() => detach.abort());
    try {
      process.stdout.write(`study ${spec.name}: ${spec.scheduler.type} on ${spec.metric.name} (${spec.metric.mode})\n`);
      const result = await runStudy({
        nc,
        spec,
        prefix: o.prefix,
        log,
        signal: detach.signal,
        leaseMs: parseDuration(o.lease, "--lease"),
        onProgress: (p) => printer.update(p),
        signOrder: key ? (order) => signOrder(order, key.seed) : undefined,
        resources: replicas === undefined ? undefined : { replicas },
      });
      printer.end();
      process.stdout.write(
        `\nstudy ${result.study} ${result.status}\n\n${leaderboardTable(result.state)}\n\n${bestText(result.state)}\n`,
      );
      if (o.out) {
        const best = result.best;
        writeFileSync(
          o.out,
          `${JSON.stringify(best ? { study: result.study, trial: best.trial, value: best.bestValue, t: best.bestT, params: best.params } : null, null, 2)}\n`,
        );
        process.stdout.write(`best configuration written to ${o.out}\n`);
      }
    } catch (err) {
      printer.end();
      if (err instanceof DetachedError) {
        process.stdout.write(`${err.message}\n`);
        return;
      }
      throw err;
    } finally {
      shutdown.dispose();
      await nc.close();
    }
  });

  withNatsOptions(
    study.command("status <name>").description("state of a study and of every trial").option("--json", "machine-readable output"),
  ).action(async (name: string, o: NatsFlags & { json?: boolean }) => {
    await withMesh(o, "rung-status", async (nc, names) => {
      const loaded = await loadStudy(nc, names, name);
      if (o.json) return json(studyStatusJson(loaded));
      const c = loaded.state.counts();
      process.stdout.write(
        `study ${name}: ${loaded.record.state} · ${loaded.planned} planned · ${c.running} running · ${c.queued} queued · ${c.completed} completed · ${c.stopped} stopped · ${c.failed} failed\n\n`,
      );
      process.stdout.write(`${leaderboardTable(loaded.state, Number.POSITIVE_INFINITY)}\n`);
    });
  });

  withNatsOptions(
    study.command("best <name>").description("the best configuration so far").option("--json", "machine-readable output"),
  ).action(async (name: string, o: NatsFlags & { json?: boolean }) => {
    await withMesh(o, "rung-best", async (nc, names) => {
      const loaded = await loadStudy(nc, names, name);
      if (o.json) return json(studyStatusJson(loaded).best);
      process.stdout.write(`${bestText(loaded.state)}\n`);
    });
  });

  withNatsOptions(
    study.command("stop <name>").description("stop a study: running trials are stopped, queued ones cancelled"),
  ).action(async (name: string, o: NatsFlags) => {
    await withMesh(o, "rung-stop", async (nc, names) => {
      const { stopped } = await stopStudy(nc, names, name);
      process.stdout.write(`study ${name} stopped; stop sent to ${stopped.length} trial(s)\n`);
    });
  });

  withNatsOptions(study.command("list").description("studies in this mesh").option("--json", "machine-readable output")).action(
    async (o: NatsFlags & { json?: boolean }) => {
      await withMesh(o, "rung-list", async (nc, names) => {
        const studies = await listStudies(nc, names);
        if (o.json)
          return json(studies.map((s) => ({ name: s.name, state: s.state, createdAt: new Date(s.createdAt).toISOString() })));
        if (studies.length === 0)
          process.stdout.write("no studies yet — start one with: rung study run configs/digits-asha.yaml\n");
        for (const s of studies) process.stdout.write(`${s.name}\t${s.state}\t${new Date(s.createdAt).toISOString()}\n`);
      });
    },
  );

  withNatsOptions(study.command("delete <name>").description("remove a study's events, logs and record")).action(
    async (name: string, o: NatsFlags) => {
      await withMesh(o, "rung-delete", async (nc, names) => {
        await deleteStudy(nc, names, name);
        process.stdout.write(`study ${name} deleted\n`);
      });
    },
  );

  withNatsOptions(
    study
      .command("report <name>")
      .description("leaderboard, rung funnel, GPU time and cost, and the bottlenecks found, worst first")
      .option("--json", "machine-readable output")
      .option("--md", "Markdown, to paste into a pull request"),
  ).action(async (name: string, o: NatsFlags & { json?: boolean; md?: boolean }) => {
    await withMesh(o, "rung-report", async (nc, names) => {
      const report = await loadStudyReport(nc, names, name);
      if (o.json) return json(report);
      process.stdout.write(o.md ? renderReportMarkdown(report) : renderReportText(report));
    });
  });
}
