import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readStudyEvents } from "@rung/coordinator";
import { connectNats, MeshNames, type TrialEventOf } from "@rung/protocol";
import { rung, rungAgents, uniquePrefix } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

/** `budget:` end to end: `rung study run` on two `rung agent` processes that advertise a price. */

const it = meshTest.extend("leakGraceMs", 5000);

describe("a budget the user sets", () => {
  it("dispatches nothing more once the budget is spent, ends running trials at their next report, and says so", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    const flags = ["--nats", nats.url, "--prefix", prefix];
    // 3600 per GPU-hour: a GPU-second costs 1. Two GPUs spend the budget of 3 within two seconds.
    procs.push(...rungAgents(nats.url, prefix, 2, ["--price-per-gpu-hour", "3600"]));
    const file = join(mkdtempSync(join(tmpdir(), "rung-budget-")), "spend.json");
    writeFileSync(
      file,
      JSON.stringify({
        name: "spend",
        command: `${process.execPath} test/fixtures/curve-trial.mjs --quality {quality} --epochs {max_t} --epoch-ms 400`,
        workdir: ".",
        metric: { name: "val_acc", mode: "max" },
        search: { algorithm: "grid", space: { quality: { grid: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8] } } },
        scheduler: { type: "fifo", time_attr: "epoch", max_t: 20 },
        resources: { gpus: 1 },
        budget: { cost: 3 },
      }),
    );
    const run = rung(["study", "run", file, ...flags]);
    procs.push(run);
    expect(await run.exited, run.out()).toBe(0);
    expect(run.stdout().toString()).toMatch(/study spend budget-spent/);

    const nc = await connectNats({ url: nats.url });
    const events = (await readStudyEvents(nc, new MeshNames(prefix), "spend")).map((s) => s.event);
    await nc.close();
    const ended = events.filter((e): e is TrialEventOf<"ended"> => e.type === "ended");
    const created = events.filter((e) => e.type === "created");
    expect(created.length).toBeLessThan(8);
    expect(ended.length).toBe(created.length);
    const byBudget = ended.filter((e) => /^the study's budget is spent \(at epoch \d+\)$/.test(e.reason));
    expect(byBudget.length).toBeGreaterThanOrEqual(1);
    // They stopped at a report, well before their 20 epochs.
    for (const e of byBudget) expect(e.status).toBe("stopped");

    const status = rung(["study", "status", "spend", ...flags]);
    procs.push(status);
    await status.exited;
    expect(status.stdout().toString()).toMatch(/^study spend: budget-spent/);
    expect(status.stdout().toString()).toMatch(/budget: [\d.]+ of 3 spent — spent/);
    // Each trial the budget ended says so in its row, not as a plain scheduler stop.
    expect(status.stdout().toString()).toMatch(/ budget@\d+ /);
    const report = rung(["study", "report", "spend", ...flags]);
    procs.push(report);
    await report.exited;
    expect(report.stdout().toString()).toMatch(/budget: [\d.]+ of 3 spent — spent/);
  }, 90_000);

  it("says at once when a cost budget cannot count anything: no agent advertises a price", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 1));
    const file = join(mkdtempSync(join(tmpdir(), "rung-budget-")), "unpriced.json");
    writeFileSync(
      file,
      JSON.stringify({
        name: "unpriced",
        command: `${process.execPath} test/fixtures/curve-trial.mjs --quality {quality} --epochs 2 --epoch-ms 100`,
        workdir: ".",
        metric: { name: "val_acc", mode: "max" },
        search: { algorithm: "grid", space: { quality: { grid: [0.1, 0.2] } } },
        resources: { gpus: 1 },
        budget: { cost: 0.001 },
      }),
    );
    const run = rung(["study", "run", file, "--nats", nats.url, "--prefix", prefix]);
    procs.push(run);
    expect(await run.exited, run.out()).toBe(0);
    expect(run.out()).toMatch(/budget\.cost is 0\.001, but no live agent advertises a price.*--price-per-gpu-hour/);
  }, 60_000);

  it("refuses a budget that names no limit, in one sentence", async ({ procs }) => {
    const file = join(mkdtempSync(join(tmpdir(), "rung-budget-")), "bad.json");
    writeFileSync(
      file,
      JSON.stringify({
        name: "bad",
        command: "python3 train.py",
        metric: { name: "val_acc", mode: "max" },
        search: { space: { lr: { grid: [0.1] } } },
        budget: {},
      }),
    );
    const run = rung(["study", "run", file, "--dry-run"]);
    procs.push(run);
    expect(await run.exited).not.toBe(0);
    expect(run.out()).toMatch(/budget: names no limit; set gpu_hours \(such as 10\) or cost \(such as 25\), or drop budget/);
  }, 30_000);
});
