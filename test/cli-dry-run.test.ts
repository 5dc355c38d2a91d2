import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO, RUNG_BIN, rung } from "@rung/testkit";
import { it } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

/**
 * Issue 13, item 9: `rung study run SPEC --dry-run` checks a spec and prints its plan without a NATS
 * server, and every example in configs/ loads (grid-lr-batch.yaml has no scheduler: FIFO, as Ray Tune).
 * The built CLI, as a user runs it. Nothing listens on the --nats URL given: a dry run that connected
 * would fail.
 */

const NOWHERE = ["--nats", "nats://127.0.0.1:1"];
const CONFIGS = readdirSync(join(REPO, "configs")).filter((f) => /\.(ya?ml|json)$/.test(f));

async function dryRun(spec: string) {
  const p = rung(["study", "run", spec, "--dry-run", ...NOWHERE]);
  const code = await p.exited;
  return { code, out: p.stdout().toString(), err: p.stderr() };
}

describe("rung study run --dry-run", () => {
  it("dry-runs every spec in configs/ without a NATS server", async () => {
    expect(CONFIGS.length).toBeGreaterThanOrEqual(3);
    for (const file of CONFIGS) {
      const r = await dryRun(join("configs", file));
      expect(r.err, file).not.toMatch(/^rung:/m);
      expect(r.code, `${file}: ${r.err}`).toBe(0);
      expect(r.out, file).toMatch(/^study [\w-]+: \d+ trials? · /);
      expect(r.out, file).toMatch(/^trial {2}/m);
      expect(r.out, file).toMatch(/dry run: nothing was started\n$/);
    }
  });

  it("prints the planned trials and the rung ladder of each example", async () => {
    const digits = await dryRun("configs/digits-asha.yaml");
    expect(digits.code).toBe(0);
    expect(digits.out).toContain("study digits-asha: 16 trials · asha on val_acc (max) · time attribute epoch");
    expect(digits.out).toMatch(/^first trial runs: \/usr\/bin\/python3 train\.py --lr \S+ --batch-size \d+ .* --epochs 9 /m);
    // one row per trial, the parameters as columns (sorted)
    expect(digits.out).toMatch(/^trial +batch_size +dropout +hidden +lr +optimizer$/m);
    expect(digits.out.match(/^t00(0[1-9]|1[0-6]) /gm)).toHaveLength(16);
    expect(digits.out).toContain("bracket 0 (16 trials): epoch 1: 16 → epoch 3: ~6 → epoch 9 (max_t): ~2");
    expect(digits.out).toMatch(/budget: about \d+ epochs in all; 144 if every trial ran to max_t/);

    const cifar = await dryRun("configs/cifar-resnet-asha.yaml");
    expect(cifar.code).toBe(0);
    expect(cifar.out).toContain("bracket 0 (24 trials): epoch 3: 24 → epoch 9: ~8 → epoch 27 (max_t): ~3");
    expect(cifar.out).toContain("early stopping: a trial stops when val_loss (min) has not improved for 5 reports");

    // No scheduler section: FIFO, every trial runs to its end (early stopping aside).
    const grid = await dryRun("configs/grid-lr-batch.yaml");
    expect(grid.code, grid.err).toBe(0);
    expect(grid.out).toContain("study grid-lr-batch: 9 trials · fifo on val_acc (max)");
    expect(grid.out).toMatch(/^trial +batch_size +lr$/m);
    expect(grid.out).toMatch(/^t0009 +128 +0\.1$/m);
    expect(grid.out).toContain("no rung ladder (fifo): every trial runs to its end");
    expect(grid.out).toContain("early stopping: a trial stops when val_loss (min) has not improved for 3 reports");
  });

  it("shows each trial's bracket for Hyperband, and a bad spec as one sentence", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rung-dry-run-"));
    const hb = join(dir, "hb.json");
    writeFileSync(
      hb,
      JSON.stringify({
        name: "hb",
        command: "python3 train.py --lr {lr} --epochs {max_t}",
        metric: { name: "val_loss", mode: "min" },
        search: { samples: 20, seed: 3, space: { lr: { loguniform: [0.0001, 0.1] } } },
        scheduler: { type: "hyperband", max_t: 27, reduction_factor: 3 },
      }),
    );
    const r = await dryRun(hb);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^trial +bracket +lr$/m);
    const rows = r.out.match(/^t00\d\d {2}\d /gm) ?? [];
    expect(rows).toHaveLength(20);
    // four brackets (rung counts 4, 3, 2, 1 below max_t 27: 1-3-9, 3-9, 9, none)
    expect(r.out).toMatch(
      /bracket 0 \(\d+ trials?, \d+% of new trials\): epoch 1: \d+ → epoch 3: ~\d+ → epoch 9: ~\d+ → epoch 27/,
    );
    expect(r.out).toMatch(/bracket 3 \(\d+ trials?, \d+% of new trials\): epoch 27 \(max_t\): \d+/);
    // the brackets in the table add up to the ladder's counts
    const inBracket = (b: number) => rows.filter((row) => row.trim().endsWith(` ${b}`)).length;
    for (let b = 0; b < 4; b++) expect(r.out).toContain(`bracket ${b} (${inBracket(b)} trial`);

    const bad = join(dir, "bad.yaml");
    writeFileSync(
      bad,
      "name: bad\ncommand: x {lr}\nmetric: { name: a, mode: max }\nsearch: { space: { lr: 1 } }\nscheduler: { type: asha, reduction_factor: 1 }\n",
    );
    const b = await dryRun(bad);
    expect(b.code).toBe(1);
    expect(b.out).toBe("");
    expect(b.err).toContain(`rung: ${bad}: scheduler.reduction_factor: must be > 1, got 1\n`);
    expect(b.err.split("\n").filter((l) => l.startsWith("rung:"))).toHaveLength(1);
  });

  it("says what each trial holds and what the study may spend: shares, GPU memory, packing, budget", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rung-dry-run-"));
    const write = (name: string, extra: Record<string, unknown>) => {
      const file = join(dir, `${name}.json`);
      writeFileSync(
        file,
        JSON.stringify({
          name,
          command: "python3 train.py --lr {lr}",
          metric: { name: "val_acc", mode: "max" },
          search: { algorithm: "grid", space: { lr: { grid: [0.1, 0.01] } } },
          ...extra,
        }),
      );
      return file;
    };
    const shares = await dryRun(
      write("shares", { resources: { gpus: 0.25, gpu_memory: "10GiB" }, budget: { gpu_hours: 10, cost: 25 } }),
    );
    expect(shares.code, shares.err).toBe(0);
    expect(shares.out).toMatch(
      /· 0\.25 of a GPU each with 10 GiB of GPU memory · .* · stops at 10 GPU-hours and cost 25 \(budget\)\n/,
    );
    const packed = await dryRun(write("packed", { packing: "auto" }));
    expect(packed.code, packed.err).toBe(0);
    expect(packed.out).toMatch(/· 1 GPU each at first, then up to 8 per GPU \(packing: auto\) · /);
  });
});

describe("output into a pipe whose reader has gone", () => {
  it("ends quietly with the broken pipe's status, not a crash (`rung study run SPEC --dry-run | true`)", () => {
    // `true` exits without reading, and rung starts only after it has: its first write finds the pipe
    // closed (EPIPE).
    const r = spawnSync(
      "bash",
      [
        "-c",
        `(sleep 0.3; exec "${process.execPath}" "${RUNG_BIN}" study run configs/digits.yaml --dry-run) | true; echo "status \${PIPESTATUS[0]}"`,
      ],
      { cwd: REPO, encoding: "utf8" },
    );
    expect(r.stderr).not.toMatch(/Unhandled|EPIPE|at /);
    expect(r.stdout.trim()).toBe("status 141");
  });
});
