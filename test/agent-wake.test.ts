import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Kvm } from "@nats-io/kv";
import { rung, waitFor } from "@rung/testkit";
import { describe, expect } from "vitest";
import { it } from "./agent-helpers.js";
import { studyEvents } from "./gpu-helpers.js";

/**
 * An idle agent wakes when a coordinator queues work, whichever of its pools the work is in.
 *
 * The user's steps: start an agent, let it sit idle, then `rung study run`. An agent serves several
 * pools (whole GPUs, gangs, five share classes) and can pull from one at a time; before work wakes it
 * parked a pull on one of them in turn, so a study's first orders in another pool waited out that pull.
 * Here the agent's pull waits a minute (`pullExpires`), so that wait is unmistakable: each study must
 * run to its end well inside it — with the old claim loop the first waits on `gpu1` while its orders sit
 * in `gpu1of2`, and the second on `gpu1of2` (its last pool) while its orders sit in `gpu1`.
 */

const CURVE_TRIAL = resolve(import.meta.dirname, "fixtures", "curve-trial.mjs");

function spec(name: string, resources: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), "rung-wake-spec-"));
  const file = join(dir, `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      name,
      command: [process.execPath, CURVE_TRIAL, "--epochs", "2", "--epoch-ms", "50", "--quality", "{q}"],
      workdir: ".",
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: { q: { grid: [0.3, 0.6] } } },
      resources,
      retries: 0,
    }),
  );
  return file;
}

describe("an idle agent", () => {
  it("takes a new study's first orders at once, in whichever of its pools they are", async ({ newMesh }) => {
    const mesh = await newMesh();
    await mesh.agent({ fakeGpus: 2, pullExpires: "60s" });
    const flags = ["--nats", mesh.url, "--prefix", mesh.names.prefix];
    // Idle: its first look found no work anywhere (a pull parked on `gpu1` by the old loop).
    await new Promise((r) => setTimeout(r, 1500));

    for (const [name, resources] of [
      ["halves", { gpus: 0.5 }],
      ["wholes", { gpus: 1 }],
    ] as const) {
      const run = rung(["study", "run", spec(name, resources), ...flags]);
      let code: number | null | undefined;
      void run.exited.then((c) => {
        code = c;
      });
      try {
        // Well inside the agent's one-minute pull: the study ends only if the agent woke for it.
        await waitFor(`study ${name} to end (its orders claimed by the idle agent)`, () => code !== undefined, 30_000);
      } finally {
        await run.stop();
      }
      expect(code, run.out().slice(-2000)).toBe(0);
      const events = await studyEvents(mesh.url, mesh.names.prefix, name);
      expect(events.filter((e) => e.type === "ended").map((e) => (e.type === "ended" ? e.status : null))).toEqual([
        "completed",
        "completed",
      ]);
      // What woke it: the coordinator wrote the wake of the pool it queued in.
      const control = await new Kvm(mesh.nc).open(mesh.names.buckets.control);
      const pool = resources.gpus === 1 ? "gpu1" : "gpu1of2";
      expect((await control.get(mesh.names.subjects.workWakeKey(pool)))?.operation).toBe("PUT");
    }
  });
});
