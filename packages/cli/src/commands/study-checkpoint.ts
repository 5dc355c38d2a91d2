import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Objm } from "@nats-io/obj";
import { CheckpointStore } from "@rung/agent";
import { loadStudy, StudyState, TrialNotFoundError } from "@rung/coordinator";
import type { Command } from "commander";
import { withMesh } from "../connect.js";
import { type NatsFlags, withNatsOptions } from "../nats-options.js";

/** A checkpoint that cannot be fetched: none stored, or none left that checks out. */
export class NoCheckpointError extends Error {
  override name = "NoCheckpointError";
}

/**
 * `rung study checkpoint NAME TRIAL --out DIR`: a trial's newest stored checkpoint that checks out
 * (size and SHA-256 against its record), unpacked into a new directory — the best trials' last ones
 * outlive the study (spec `checkpoints.keep_best`).
 */
export function registerStudyCheckpoint(study: Command): void {
  withNatsOptions(
    study
      .command("checkpoint <name> <trial>")
      .description("fetch a trial's last stored checkpoint into a new directory (the best trials' last ones outlive the study)")
      .requiredOption("--out <dir>", "where to unpack it: a directory that does not exist yet, or an empty one"),
  ).action(async (name: string, trial: string, o: NatsFlags & { out: string }) => {
    const out = resolve(o.out);
    if (existsSync(out) && readdirSync(out).length > 0)
      throw new NoCheckpointError(`--out ${o.out} is not empty: name a new directory (nothing there was touched)`);
    await withMesh(o, "rung-checkpoint", async (nc, names) => {
      const loaded = await loadStudy(nc, names, name);
      const t = loaded.state.trials.get(trial);
      if (!t || t.createdAt === null) throw new TrialNotFoundError(trial, name);
      const refs = StudyState.latestCheckpoints(t, Number.POSITIVE_INFINITY);
      if (refs.length === 0)
        throw new NoCheckpointError(
          `${name}/${trial} stored no checkpoint — a trial stores one by writing RUNG_CHECKPOINT_DIR and reporting "checkpoint": true`,
        );
      const store = new CheckpointStore(await new Objm(nc).open(names.checkpoints));
      const tmp = join(mkdtempSync(join(tmpdir(), "rung-checkpoint-")), "snapshot");
      const skipped: string[] = [];
      try {
        for (const ref of refs) {
          const r = await store.restore(ref, tmp, out);
          if (r.ok) {
            for (const s of skipped) process.stderr.write(`rung: ${s}\n`);
            process.stdout.write(
              `wrote ${r.files} file(s) of ${name}/${trial}'s checkpoint at ${loaded.state.timeAttr}=${ref.t} (attempt ${ref.attempt} on ${ref.agent}) to ${out}\n`,
            );
            return;
          }
          skipped.push(`the checkpoint at ${loaded.state.timeAttr}=${ref.t}: ${r.why}`);
        }
      } finally {
        rmSync(join(tmp, ".."), { recursive: true, force: true });
      }
      rmSync(out, { recursive: true, force: true });
      throw new NoCheckpointError(
        `none of ${name}/${trial}'s ${refs.length} checkpoint(s) could be fetched (only the best trials' last ones are kept once a study ends): ${skipped.join("; ")}`,
      );
    });
  });
}
