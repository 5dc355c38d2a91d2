import { COORDINATOR, type TrialEvent } from "@rung/protocol";
import { describe, expect, it } from "vitest";
import { budgetText, budgetUse } from "./budget.js";
import { StudyState } from "./state.js";

const H = 3_600_000;

/** One trial's attempt on `agent` with `gpus`, from `start` to `end` (ms; null: still running). */
function stateWith(
  attempts: { trial: string; agent: string; gpus: number[]; start: number; end: number | null; status?: string }[],
) {
  const s = new StudyState({ study: "s", metric: "val_acc", mode: "max", timeAttr: "epoch" });
  const apply = (e: Record<string, unknown>, agent?: string) =>
    s.apply({ v: 1, study: "s", ...e } as TrialEvent, agent ? { role: "agent", agent } : COORDINATOR);
  attempts.forEach((a, i) => {
    const n = attempts.slice(0, i).filter((b) => b.trial === a.trial).length + 1;
    if (n === 1) apply({ type: "created", trial: a.trial, ts: 0, params: {}, bracket: null });
    apply({ type: "queued", trial: a.trial, ts: a.start, attempt: n });
    apply({ type: "claimed", trial: a.trial, ts: a.start, attempt: n, agent: a.agent, gpus: a.gpus }, a.agent);
    apply({ type: "started", trial: a.trial, ts: a.start, attempt: n, agent: a.agent, pid: 1, gpus: a.gpus }, a.agent);
    if (a.end !== null)
      apply(
        {
          type: "finished",
          trial: a.trial,
          ts: a.end,
          attempt: n,
          agent: a.agent,
          status: a.status ?? "completed",
          exitCode: 0,
          signal: null,
          reason: "",
          logTail: [],
        },
        a.agent,
      );
  });
  return s;
}

describe("budget", () => {
  it("counts GPU-hours by the GPUs (or share) each attempt held, and cost at its agent's price", () => {
    const state = stateWith([
      { trial: "t1", agent: "a", gpus: [0, 1], start: 0, end: H },
      { trial: "t2", agent: "b", gpus: [0], start: 0, end: null },
    ]);
    const spec = { resources: { gpus: 2, cpus: 0, gpuMemoryMiB: null }, budget: { gpuHours: 4, cost: null } };
    const use = budgetUse(spec, state, H / 2, (agent) => (agent === "a" ? 2 : null));
    // t1: 2 GPUs × 1 h; t2 still running, 1 GPU (its gang as started) × 0.5 h.
    expect(use).toMatchObject({ gpuHours: 2.5, cost: 4, unpriced: 1, spent: false });
    // One more attempt of the mean of the ended ones (2.0 GPU-hours: t2's running half hour is not
    // in it) would pass 4 …
    expect(use?.full).toBe(true);
    expect(budgetText(use as NonNullable<typeof use>)).toBe("budget: 2.50 of 4 GPU-hours");
    // … and not 4.75 (2.5 + 2.0 = 4.5): a mean over every attempt's hours (2.5 per ended attempt) would
    // say it does.
    const roomy = budgetUse({ ...spec, budget: { gpuHours: 4.75, cost: null } }, state, H / 2, () => null);
    expect(roomy).toMatchObject({ gpuHours: 2.5, spent: false, full: false });
  });

  it("counts an attempt whose finished never came only up to its trial's end", () => {
    const state = stateWith([{ trial: "t1", agent: "a", gpus: [0], start: 0, end: null }]);
    state.apply(
      { v: 1, study: "s", type: "ended", trial: "t1", ts: H, status: "failed", reason: "lost" } as TrialEvent,
      COORDINATOR,
    );
    const spec = { resources: { gpus: 1, cpus: 0, gpuMemoryMiB: null }, budget: { gpuHours: 10, cost: null } };
    expect(budgetUse(spec, state, 5 * H, () => null)).toMatchObject({ gpuHours: 1, spent: false, full: false });
  });

  it("takes a share of a GPU as that share, and a whole GPU after an out-of-memory attempt", () => {
    const state = stateWith([
      { trial: "t1", agent: "a", gpus: [0], start: 0, end: H, status: "oom" },
      { trial: "t1", agent: "a", gpus: [0], start: H, end: 2 * H },
    ]);
    const spec = { resources: { gpus: 0.25, cpus: 0, gpuMemoryMiB: null }, budget: { gpuHours: null, cost: 5 } };
    const use = budgetUse(spec, state, 2 * H, () => 4);
    expect(use).toMatchObject({ gpuHours: 1.25, cost: 5, spent: true, full: true });
    expect(budgetText(use as NonNullable<typeof use>)).toBe("budget: 5.00 of 5 spent — spent");
    expect(budgetUse({ ...spec, budget: null }, state, 0, () => 1)).toBeNull();
  });
});
