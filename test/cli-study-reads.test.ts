import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RUNG_BIN, rung, rungAgents, stopAll, type TestProcess, uniquePrefix } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

/**
 * Issue 13, items 10, 11 and 12, on studies run for real: agents and `rung study run` as processes,
 * the curve fixture as the trial. Then what a user types afterwards: `rung replay --study NAME
 * [settings]` (README), `rung study history NAME [--json|--csv]`, and `rung logs` of a trial that
 * printed nothing.
 */

const QUALITIES = [0.5, 0.9, 0.3, 0.95, 0.2, 0.7];

function specFile(spec: Record<string, unknown>): string {
  const file = join(mkdtempSync(join(tmpdir(), "rung-spec-")), `${spec.name as string}.json`);
  writeFileSync(file, JSON.stringify(spec));
  return file;
}

interface Studies {
  flags: string[];
  /** ASHA over six curves (grace 1, rf 3, max_t 9, search seed 5). */
  curves: string;
  /** One trial that prints nothing and reports nothing. */
  silent: string;
}

// The studies run once for the file: two agents, then `rung study run` twice, then the agents stop.
const it = meshTest.extend("leakGraceMs", 5000).extend("studies", { scope: "file" }, async ({ nats }): Promise<Studies> => {
  const prefix = uniquePrefix();
  const flags = ["--nats", nats.url, "--prefix", prefix];
  const curves = specFile({
    name: "curves",
    command: `${process.execPath} test/fixtures/curve-trial.mjs --quality {quality} --epochs {max_t} --epoch-ms 60`,
    metric: { name: "val_acc", mode: "max" },
    search: { algorithm: "grid", seed: 5, space: { quality: { grid: QUALITIES } } },
    scheduler: { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: 9 },
    max_concurrent: 2,
    retries: 0,
  });
  const silent = specFile({
    name: "silent",
    command: [process.execPath, "-e", "setTimeout(() => {}, 300)"],
    metric: { name: "val_acc", mode: "max" },
    search: { space: {} },
    scheduler: { type: "fifo" },
    retries: 0,
  });
  const agents = rungAgents(nats.url, prefix, 2);
  const runs: TestProcess[] = [];
  try {
    // The silent one's only trial reports nothing and fails: the run says so, as its record does.
    for (const [spec, ended] of [
      [curves, /study curves completed/],
      [silent, /study silent failed/],
    ] as const) {
      const run = rung(["study", "run", spec, ...flags]);
      runs.push(run);
      await run.exited;
      expect(run.out()).toMatch(ended);
    }
  } finally {
    await stopAll([...runs, ...agents]);
  }
  return { flags, curves: "curves", silent: "silent" };
});

function run(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const p = rung(args);
  return p.exited.then((code) => ({ code, out: p.stdout().toString(), err: p.stderr() }));
}

describe("rung replay --study NAME [settings]", () => {
  it("replays a study's reports with the settings given, the study's own for the rest", async ({ studies }) => {
    const { flags, curves } = studies;
    // As the README shows it: another reduction factor.
    const rf2 = await run(["replay", "--study", curves, "--reduction-factor", "2", ...flags]);
    expect(rf2.err).toBe("");
    expect(rf2.code).toBe(0);
    expect(rf2.out).toMatch(
      /^study curves replayed with asha \(grace_period 1, reduction_factor 2, max_t 9, brackets 1\), mode max, seed 5\n6 trials: these settings spend \d+ epochs \(the live run spent \d+\), stopping \d+/,
    );
    expect(rf2.out).toMatch(/\nwinner: t\d{4} val_acc=\S+ at epoch \d+ · live winner: t\d{4} \S+\n$/);

    // Its own settings: the live run's winner again.
    const own = await run(["replay", "--study", curves, "--json", ...flags]);
    expect(own.code, own.err).toBe(0);
    const r = JSON.parse(own.out) as {
      scheduler: Record<string, unknown>;
      seed: number;
      trials: number;
      winner: { trial: string } | null;
      liveWinner: { trial: string } | null;
    };
    expect(r.scheduler).toEqual({
      type: "asha",
      mode: "max",
      gracePeriod: 1,
      reductionFactor: 3,
      maxT: 9,
      brackets: 1,
      stopLastTrials: true,
    });
    expect(r.seed).toBe(5);
    expect(r.trials).toBe(6);
    expect(r.winner?.trial).toBe("t0004"); // quality 0.95
    expect(r.winner?.trial).toBe(r.liveWinner?.trial);

    // Other scheduler types take their own defaults, not the study's ASHA settings.
    for (const type of ["median", "fifo", "hyperband"]) {
      const other = await run(["replay", "--study", curves, "--scheduler", type, ...flags]);
      expect(other.code, `${type}: ${other.err}`).toBe(0);
      expect(other.out).toMatch(new RegExp(`^study curves replayed with ${type}`));
    }

    // Settings that do not fit still get one clear sentence.
    const bad = await run(["replay", "--study", curves, "--reduction-factor", "1", ...flags]);
    expect(bad.code).toBe(1);
    expect(bad.err).toContain("rung: invalid scheduler options: reductionFactor: must be > 1, got 1");
    expect(bad.err).not.toMatch(/seed|metric|timeAttr/);
  });
});

describe("rung replay from stdin", () => {
  it("takes --scheduler median and fifo (no ASHA-only default slips in)", async () => {
    for (const type of ["median", "fifo"]) {
      const r = spawnSync(process.execPath, [RUNG_BIN, "replay", "--scheduler", type], {
        input: '{"trial":"a","t":1,"value":0.5}\n',
        encoding: "utf8",
        timeout: 30_000,
      });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe('{"trial":"a","t":1,"decision":"CONTINUE"}\n');
    }
  });
});

describe("rung study history NAME", () => {
  it("prints every report of every trial as JSON lines, CSV or a table, and exits", async ({ studies }) => {
    const { flags, curves } = studies;
    const json = await run(["study", "history", curves, "--json", ...flags]);
    expect(json.code, json.err).toBe(0);
    const rows = json.out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(new Set(rows.map((r) => r.trial))).toEqual(new Set(["t0001", "t0002", "t0003", "t0004", "t0005", "t0006"]));
    const METRICS = ["epoch", "val_acc", "val_loss", "data_wait_s", "compute_s"];
    for (const r of rows) {
      const keys = Object.keys(r);
      expect(keys.slice(0, 4)).toEqual(["study", "trial", "attempt", "t"]);
      expect(keys.at(-1)).toBe("ts");
      expect(keys).toEqual(expect.arrayContaining(METRICS));
      expect(r).toMatchObject({ study: "curves", attempt: 1 });
      expect(r.t).toBe(r.epoch);
      expect(typeof r.ts).toBe("number");
    }
    // per trial, one row per epoch, from 1 on; the best trial ran to max_t
    for (const trial of new Set(rows.map((r) => r.trial))) {
      const epochs = rows.filter((r) => r.trial === trial).map((r) => r.epoch as number);
      expect(epochs).toEqual(Array.from({ length: epochs.length }, (_, i) => i + 1));
    }
    expect(rows.filter((r) => r.trial === "t0004").map((r) => r.epoch)).toContain(9);
    const t4e3 = rows.find((r) => r.trial === "t0004" && r.epoch === 3);
    expect(t4e3?.val_acc).toBeCloseTo(0.95 * (1 - 1 / 4), 10);

    const csv = await run(["study", "history", curves, "--csv", ...flags]);
    expect(csv.code, csv.err).toBe(0);
    const lines = csv.out.trim().split("\n");
    const header = (lines[0] ?? "").split(",");
    expect(header.slice(0, 4)).toEqual(["study", "trial", "attempt", "t"]);
    expect(header.at(-1)).toBe("ts");
    expect(header).toEqual(expect.arrayContaining(METRICS));
    expect(lines).toHaveLength(rows.length + 1);
    // the same values as the JSON, row for row
    rows.forEach((r, i) => {
      expect(lines[i + 1]).toBe(header.map((h) => (r[h] === undefined ? "" : String(r[h]))).join(","));
    });

    const table = await run(["study", "history", curves, ...flags]);
    expect(table.code, table.err).toBe(0);
    expect(table.out).toMatch(/^trial +attempt +epoch +val_acc +val_loss +.*time \(UTC\)\n/);
    expect(table.out.trim().split("\n")).toHaveLength(rows.length + 1);

    const missing = await run(["study", "history", "nope", "--csv", ...flags]);
    expect(missing.code).toBe(1);
    expect(missing.err).toContain("rung: no study named nope in this mesh");
  });
});

describe("rung logs of a trial that printed nothing", () => {
  it("says so, and how the attempt ended, instead of printing nothing", async ({ studies }) => {
    const { flags, silent } = studies;
    const logs = await run(["logs", `${silent}/t0001`, ...flags]);
    expect(logs.code, logs.err).toBe(0);
    expect(logs.out).toBe("");
    expect(logs.err).toBe(`rung logs: trial ${silent}/t0001 attempt 1 wrote nothing to its terminal (completed, exit 0)\n`);
    // -f on the ended attempt: the same
    const follow = await run(["logs", `${silent}/t0001`, "-f", ...flags]);
    expect(follow.code, follow.err).toBe(0);
    expect(follow.err).toContain("wrote nothing to its terminal (completed, exit 0)");
  });
});
