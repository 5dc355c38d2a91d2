import { writeFileSync } from "node:fs";
import {
  bestText,
  DetachedError,
  deleteStudy,
  failuresText,
  leaderboardTable,
  lineageText,
  listStudies,
  loadSpec,
  loadStudy,
  loadStudyReport,
  movesText,
  packingSummary,
  renderReportMarkdown,
  renderReportText,
  runStudy,
  type StudyOutcome,
  type StudySpec,
  stopStudy,
  studyEndState,
  studyFailures,
  studyOutcome,
  studyStateWord,
  studyStatusJson,
} from "@rung/coordinator";
import { connectNats, parseDuration, readSigningKey, signOrder } from "@rung/protocol";
import type { Command } from "commander";
import { withMesh } from "../connect.js";
import { dryRun } from "../dry-run.js";
import { ExitCode } from "../exit-codes.js";
import { type NatsFlags, natsOptionsFrom, withNatsOptions } from "../nats-options.js";
import { progressPrinter } from "../progress.js";
import { sentenceLogger } from "../sentence-log.js";
import { onShutdown } from "../signals.js";
import { writeHtmlReport } from "../ui/report-file.js";
import { registerStudyCheckpoint } from "./study-checkpoint.js";
import { registerStudyHistory } from "./study-history.js";

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
      .option("--replicas <n>", "JetStream replicas for the mesh's streams and buckets (3 on a three-node cluster)")
      .option("--samples <n>", "override search.samples: more samples extend a study that has run (nothing finished runs again)")
      .option(
        "--dry-run",
        "check the spec, print the planned trials and the rung ladder, and start nothing (needs no NATS server)",
      ),
  ).action(
    async (
      specPath: string,
      o: NatsFlags & { out?: string; lease: string; signingKey?: string; replicas?: string; samples?: string; dryRun?: boolean },
    ) => {
      let spec = await loadSpec(specPath);
      if (o.samples !== undefined) spec = withSamples(spec, o.samples);
      if (o.dryRun) return dryRun(spec, process.stdout);
      // Read before connecting, so a wrong path is one clear sentence and nothing is left half-started.
      const key = o.signingKey ? readSigningKey(o.signingKey) : undefined;
      if (!key)
        process.stderr.write("note: orders go out unsigned (no --signing-key); only agents started with --insecure run them\n");
      const replicas = o.replicas === undefined ? undefined : Number(o.replicas);
      if (replicas !== undefined && !(Number.isInteger(replicas) && replicas >= 1 && replicas <= 5))
        throw new Error(`--replicas: must be a whole number from 1 to 5, got ${JSON.stringify(o.replicas)}`);
      const nc = await connectNats(natsOptionsFrom(o, `rung-coordinator ${spec.name}`));
      const log = sentenceLogger(process.env.RUNG_LOG_LEVEL ?? "warn");
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
        const outcome = studyOutcome(result.state);
        process.stdout.write(
          `\nstudy ${result.study} ${studyEndState(result.status, result.state)}\n\n${leaderboardTable(result.state)}\n\n${bestText(result.state)}\n`,
        );
        const packing = packingSummary(spec.packing, result.state.trials.values());
        if (packing !== null) process.stdout.write(`${packing}\n`);
        const failures = failuresText(studyFailures(result.state));
        if (failures) process.stdout.write(`\n${failures}\n`);
        if (result.status === "stopped") process.exitCode = ExitCode.stopped;
        else if (outcome.kind === "best") process.exitCode = ExitCode.ok;
        else {
          process.stderr.write(`rung: ${outcomeSentence(outcome, result.state.metric)}\n`);
          process.exitCode = outcome.kind === "no-metric" ? ExitCode.noMetric : ExitCode.allFailed;
        }
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
          process.exitCode = ExitCode.detached;
          return;
        }
        throw err;
      } finally {
        shutdown.dispose();
        await nc.close();
      }
    },
  );

  withNatsOptions(
    study.command("status <name>").description("state of a study and of every trial").option("--json", "machine-readable output"),
  ).action(async (name: string, o: NatsFlags & { json?: boolean }) => {
    await withMesh(o, "rung-status", async (nc, names) => {
      const loaded = await loadStudy(nc, names, name);
      if (o.json) return json(studyStatusJson(loaded));
      const c = loaded.state.counts(true);
      const word = studyStateWord(loaded);
      process.stdout.write(
        `study ${name}: ${word} · ${loaded.planned} planned · ${c.running} running${c.paused ? ` · ${c.paused} paused` : ""} · ${c.queued} queued · ${c.completed} completed · ${c.stopped} stopped · ${c.failed} failed\n`,
      );
      if (loaded.budget !== null) process.stdout.write(`${loaded.budget}\n`);
      if (loaded.packing !== null) process.stdout.write(`${loaded.packing}\n`);
      if (word === "detached")
        process.stdout.write(
          `detached — no coordinator is attached, so nothing stops trials early, retries or queues new ones; run "rung study run SPEC" to resume\n`,
        );
      process.stdout.write(`\n${leaderboardTable(loaded.state, Number.POSITIVE_INFINITY)}\n`);
      const failures = failuresText(studyFailures(loaded.state));
      if (failures) process.stdout.write(`\n${failures}\n`);
      const moves = movesText(loaded.state);
      if (moves) process.stdout.write(`\n${moves}\n`);
      const lineage = lineageText(loaded.state);
      if (lineage) process.stdout.write(`\n${lineage}\n`);
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
        if (studies.length === 0) process.stdout.write("no studies yet — start one with: rung study run configs/digits.yaml\n");
        for (const s of studies) process.stdout.write(`${s.name}\t${s.state}\t${new Date(s.createdAt).toISOString()}\n`);
      });
    },
  );

  withNatsOptions(
    study
      .command("delete <name>")
      .description("remove a study and everything it left in the mesh (queued orders, events, logs, stop keys, record)")
      .option("--force", "delete a study that is still running: stop its trials first")
      .option("-y, --yes", "do not ask for confirmation"),
  ).action(async (name: string, o: NatsFlags & { force?: boolean; yes?: boolean }) => {
    await withMesh(o, "rung-delete", async (nc, names) => {
      const loaded = await loadStudy(nc, names, name);
      if (!o.yes && process.stdin.isTTY && process.stderr.isTTY) {
        const created = [...loaded.state.trials.values()].filter((t) => t.createdAt !== null).length;
        const ok = await confirm(
          `delete study ${name} (${studyStateWord(loaded)}, ${created} trial(s), ${loaded.state.events} event(s)) and everything it left in the mesh? [y/N] `,
        );
        if (!ok) {
          process.stderr.write("not deleted\n");
          process.exitCode = ExitCode.error;
          return;
        }
      }
      const { removedOrders } = await deleteStudy(nc, names, name, {
        force: o.force,
        onProgress: (m) => process.stderr.write(`${m}\n`),
      });
      process.stdout.write(`study ${name} deleted${removedOrders > 0 ? ` (${removedOrders} queued order(s) removed)` : ""}\n`);
    });
  });

  withNatsOptions(
    study
      .command("report <name>")
      .description("leaderboard, rung funnel, GPU time and cost, and the bottlenecks found, worst first")
      .option("--json", "machine-readable output")
      .option("--md", "Markdown, to paste into a pull request")
      .option("--html <file>", "the study page as one self-contained HTML file (plots included; opens from disk, no network)"),
  ).action(async (name: string, o: NatsFlags & { json?: boolean; md?: boolean; html?: string }) => {
    await withMesh(o, "rung-report", async (nc, names) => {
      if (o.html) {
        const file = o.html;
        await writeHtmlReport(nc, names, name, file);
        process.stdout.write(`report of ${name} written to ${file}\n`);
        return;
      }
      const report = await loadStudyReport(nc, names, name);
      if (o.json) return json(report);
      process.stdout.write(o.md ? renderReportMarkdown(report) : renderReportText(report));
    });
  });
  registerStudyHistory(study);
  registerStudyCheckpoint(study);
}

function withSamples(spec: StudySpec, text: string): StudySpec {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`--samples: must be a whole number of at least 1, got ${JSON.stringify(text)}`);
  return { ...spec, search: { ...spec.search, samples: n } };
}

function outcomeSentence(o: StudyOutcome, metric: string): string {
  switch (o.kind) {
    case "best":
      return `best ${metric} ${o.value} (${o.trial})`;
    case "no-metric":
      return `no trial reported ${metric}, so there is no best result — see each trial's reason above`;
    case "all-failed":
      return `every trial failed (${o.failed}) — see each trial's reason above, and "rung logs TRIAL" for its output`;
    case "nothing-ran":
      return "no trial ran";
  }
}

async function confirm(question: string): Promise<boolean> {
  const { createInterface } = await import("node:readline/promises");
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}
