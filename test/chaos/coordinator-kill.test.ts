import { decideStudy, loadSpec } from "@rung/coordinator";
import { decode, expandEvent, TrialEventSchema } from "@rung/protocol";
import { describe, expect } from "vitest";
import { expectSound } from "./expect.js";
import { chaosSpec, coordinatorProgress, countBy, it, sleep } from "./harness/index.js";

// Scenario 2: kill -9 of the coordinator, then a new `rung study run` of the same spec once its lease
// (3 s) runs out. First at a random moment; then at moments read off the events themselves: the harness
// follows the study's subject and kills the coordinator the instant it sees (a) a `created` event — the
// coordinator is dispatching that trial, its queued event and order still to publish — and (b) a report
// at a rung milestone — the coordinator is between that result and its decision. Each gets three tries
// to land inside its window; where each kill landed is read back from the stream and reported.
// Whatever a kill interrupts, the restarted coordinator must finish the study with every trial created
// once, queued once per attempt, ended once, and exactly the STOPs a replay of the stream gives.

const QUALITIES = [
  0.5, 0.9, 0.3, 0.95, 0.2, 0.7, 0.85, 0.4, 0.99, 0.1, 0.6, 0.8, 0.45, 0.75, 0.92, 0.35, 0.65, 0.55, 0.25, 0.88, 0.15, 0.97, 0.42,
  0.68,
];

describe("chaos 2: coordinator killed with SIGKILL at awkward moments", () => {
  it("resumes from the event stream each time: nothing lost, nothing done twice, same decisions", async ({ nats, openChaos }) => {
    const m = await openChaos({ scenario: "2 coordinator kill -9", url: nats.url, study: "coordkill" });
    const specFile = chaosSpec("coordkill", { qualities: QUALITIES, epochMs: 400, maxConcurrent: 3 });
    m.startAgents(3);
    m.startStudy(specFile);

    type Seen = { type: string; trial: string; epoch: number | undefined };
    const moments: { name: string; window: string | null; trigger: (type: string, epoch: number | undefined) => boolean }[] = [
      { name: "a random moment", window: null, trigger: () => false },
      { name: "dispatch", window: "between created and queued", trigger: (type) => type === "created" },
      {
        name: "a report at a rung",
        window: "between the report and its STOP",
        trigger: (type, epoch) => type === "report" && (epoch === 1 || epoch === 3),
      },
    ];

    /** Arms the trigger, kills the coordinator when it fires (or at a random moment), restarts it. */
    const killOnce = async (moment: (typeof moments)[number]): Promise<{ at: number; seen?: Seen }> => {
      const coord = m.coordinator;
      if (!coord) throw new Error("no coordinator");
      const sub = m.nc.subscribe(m.names.subjects.studyEvents("coordkill"));
      let seen: Seen | undefined;
      const deadline = Date.now() + (moment.window ? 10_000 : 500 + Math.floor(Math.random() * 2000));
      await new Promise<void>((resolve) => {
        const timer = setInterval(() => {
          if (Date.now() >= deadline) {
            clearInterval(timer);
            resolve();
          }
        }, 10);
        void (async () => {
          for await (const msg of sub) {
            const r = decode(TrialEventSchema, msg.data);
            if (!r.ok) continue;
            // A batch of reports: the moment may be any of them.
            const ev = expandEvent(r.value).find((e) =>
              moment.trigger(e.type, e.type === "report" ? e.metrics.epoch : undefined),
            );
            if (ev) {
              coord.child.kill("SIGKILL");
              seen = { type: ev.type, trial: ev.trial, epoch: ev.type === "report" ? ev.metrics.epoch : undefined };
              clearInterval(timer);
              resolve();
              break;
            }
          }
        })();
      });
      coord.child.kill("SIGKILL");
      const f = m.fault({
        kind: "kill -9 coordinator",
        target: "coordinator",
        note: moment.name,
        recovered: coordinatorProgress,
      });
      sub.unsubscribe();
      await coord.exited;
      await m.restartStudy();
      f.clearedAt = Date.now();
      return { at: f.at, seen };
    };

    /** Where a kill landed, from what the stream holds (stored before the kill, or after it). */
    const classify = async (k: { at: number; seen?: Seen }): Promise<string> => {
      await sleep(1000); // the restarted coordinator has caught up and acted by now
      const stored = await m.events();
      if (k.seen?.type === "created") {
        const q = stored.find(({ event: e }) => e.type === "queued" && e.trial === k.seen?.trial && e.attempt === 1);
        if (!q) return "created, never queued";
        return q.storedAt < k.at ? "after queued" : "between created and queued";
      }
      if (k.seen?.type === "report") {
        const d = stored.find(({ event: e }) => e.type === "decision" && e.trial === k.seen?.trial && e.t === k.seen?.epoch);
        if (!d) return "after a report that needed no STOP";
        return d.storedAt < k.at ? "after the STOP" : "between the report and its STOP";
      }
      return "random";
    };

    // Under way first: a coordinator killed before it has done anything tests nothing.
    await m.waitForEvents("the study under way", (evs) => evs.some(({ event: e }) => e.type === "report"));
    let kills = 0;
    for (const moment of moments) {
      // Up to three tries to land inside the window a moment is about.
      for (let tries = 0; tries < 3; tries++) {
        if (m.coordinator?.child.exitCode !== null) break; // the study is over
        const k = await killOnce(moment);
        kills += 1;
        const where = await classify(k);
        m.notes.push(`kill ${kills} on ${moment.name}${k.seen ? ` (${k.seen.type} of ${k.seen.trial})` : ""}: landed ${where}`);
        if (moment.window === null || where === moment.window) break;
      }
    }
    const landedIn = (w: string) => m.notes.some((n) => n.endsWith(`landed ${w}`));

    const r = await m.finish({
      faults: `${kills}× kill -9 of the coordinator (on dispatch, between a report and its STOP, at random), restarted once its 3 s lease ran out`,
    });
    expectSound(r, { outcome: "completed", trials: QUALITIES.length });
    const evs = r.events.map((e) => e.event);
    // Each coordinator action exactly once, across four coordinator processes.
    for (const [key, n] of countBy(
      evs.filter((e) => e.type === "created"),
      (e) => e.trial,
    ))
      expect(n, `created ${key}`).toBe(1);
    for (const [key, n] of countBy(
      evs.filter((e) => e.type === "queued"),
      (e) => `${e.trial}.${e.type === "queued" ? e.attempt : 0}`,
    ))
      expect(n, `queued ${key}`).toBe(1);
    const decisions = evs.flatMap((e) => (e.type === "decision" ? [`${e.trial}@${e.attempt}.${e.seq}`] : []));
    expect(new Set(decisions).size).toBe(decisions.length);
    // Invariant 3 across the kills: the live STOPs are what a replay of the stream decides.
    const spec = await loadSpec(specFile);
    const live = evs.flatMap((e) => (e.type === "decision" ? [`${e.trial}@${e.t}:${e.rung}`] : []));
    expect(live).toEqual(decideStudy(spec, evs).map((d) => `${d.trial}@${d.t}:${d.rung}`));
    // No trial was retried because of a coordinator kill: one attempt each.
    for (const [trial, attempts] of r.attempts) expect(attempts.size, trial).toBe(1);
    expect(r.ttr.every((x) => x !== null)).toBe(true);
    // The windows the scenario is about were hit (each gets three tries; a miss is reported, not hidden).
    expect(landedIn("between created and queued"), m.notes.join("\n")).toBe(true);
    expect(landedIn("between the report and its STOP"), m.notes.join("\n")).toBe(true);
  });
});
