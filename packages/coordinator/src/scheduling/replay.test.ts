import { describe, expect, it } from "vitest";
import type { AshaOptions } from "../index.js";
import { Asha, compileSchedulerOptions, Replayer, ReplayInputError, replayLines, SchedulerOptionsError } from "../index.js";

const line = (o: Record<string, unknown>) => JSON.stringify(o);
const decisions = (out: string[]) => out.map((l) => (JSON.parse(l) as { decision: string }).decision);

function replayError(lines: string[], options = {}): ReplayInputError {
  try {
    replayLines(lines, options);
  } catch (err) {
    if (err instanceof ReplayInputError) return err;
    throw err;
  }
  throw new Error("expected a ReplayInputError");
}

describe("replayLines", () => {
  it("prints one decision line per result, in order, in the documented shape", () => {
    const out = replayLines(
      [
        line({ trial: "t1", t: 1, value: 0.71 }),
        line({ trial: "t2", t: 1, value: 0.5 }),
        line({ trial: "t3", t: 1, value: 0.9 }),
      ],
      { scheduler: "asha", mode: "max", gracePeriod: 1, reductionFactor: 2, maxT: 8 },
    );
    expect(out).toEqual([
      '{"trial":"t1","t":1,"decision":"CONTINUE"}',
      '{"trial":"t2","t":1,"decision":"STOP"}',
      '{"trial":"t3","t":1,"decision":"CONTINUE"}',
    ]);
  });

  it('reads "NaN" values: recorded, never stopped, left out of cutoffs', () => {
    const out = replayLines(
      [
        line({ trial: "a", t: 1, value: "NaN" }),
        line({ trial: "b", t: 1, value: 5 }),
        line({ trial: "c", t: 1, value: 4 }),
        line({ trial: "d", t: 8, value: "NaN" }),
      ],
      { reductionFactor: 2, maxT: 8 },
    );
    expect(decisions(out)).toEqual(["CONTINUE", "CONTINUE", "STOP", "STOP"]);
  });

  it("prints nothing for complete lines, which still record (after a STOP: at the next lower rung)", () => {
    const opts = { gracePeriod: 1, reductionFactor: 2, maxT: 16 } as const;
    const input = [
      line({ trial: "a", t: 4, value: 9 }),
      line({ trial: "b", t: 4, value: 1 }),
      line({ trial: "b", kind: "complete", t: 4, value: 1 }),
      line({ trial: "c", t: 2, value: 0.5 }),
    ];
    const out = replayLines(input, opts);
    expect(out).toHaveLength(3);
    // b's completion put 1 on rung 2, so c's 0.5 is stopped there; without it c would be first
    expect(decisions(out)).toEqual(["CONTINUE", "STOP", "STOP"]);
    expect(
      decisions(
        replayLines(
          input.filter((l) => !l.includes("complete")),
          opts,
        ),
      ),
    ).toEqual(["CONTINUE", "STOP", "CONTINUE"]);
  });

  it("fixes a trial's bracket from its first line", () => {
    const opts = { scheduler: "hyperband", gracePeriod: 1, reductionFactor: 3, maxT: 81, brackets: 3 } as const;
    const out = replayLines(
      [
        line({ trial: "p", t: 3, value: 0.9, bracket: 0 }),
        line({ trial: "q", t: 3, value: 0.1, bracket: 0 }),
        line({ trial: "r", t: 3, value: 0.1, bracket: 2 }), // bracket 2 starts at 9
        line({ trial: "s", t: 3, value: 0.1, bracket: 1 }), // bracket 1's rung 3 is empty
        line({ trial: "p", t: 9, value: 0.9, bracket: 0 }), // same bracket again is fine
      ],
      opts,
    );
    expect(decisions(out)).toEqual(["CONTINUE", "STOP", "CONTINUE", "CONTINUE", "CONTINUE"]);
  });

  it("gives the same decisions as the scheduler fed directly, and is deterministic per seed", () => {
    const opts = { scheduler: "hyperband", reductionFactor: 3, maxT: 27, seed: 11 } as const;
    const input: string[] = [];
    let x = 0.37;
    for (let t = 1; t <= 27; t++) {
      for (let i = 0; i < 12; i++) {
        x = ((x * 9301 + 49297) % 233280) / 233280;
        input.push(line({ trial: `t${i}`, t, value: x }));
      }
    }
    const out = replayLines(input, opts);
    const { seed, ...schedulerOptions } = opts;
    const direct = new Asha(compileSchedulerOptions(schedulerOptions) as AshaOptions, seed);
    expect(decisions(out)).toEqual(
      input.map((l) => {
        const o = JSON.parse(l) as { trial: string; t: number; value: number };
        return direct.onResult(o.trial, o.t, o.value).decision;
      }),
    );
    expect(replayLines(input, opts)).toEqual(out);
    expect(decisions(out)).toContain("STOP");
  });

  it("replays median and fifo", () => {
    const fifo = replayLines([line({ trial: "a", t: 1, value: 0 }), line({ trial: "a", t: 3, value: 0 })], {
      scheduler: "fifo",
      maxT: 3,
    });
    expect(decisions(fifo)).toEqual(["CONTINUE", "STOP"]);
    const med = replayLines(
      [
        line({ trial: "a", t: 1, value: 1 }),
        line({ trial: "b", t: 1, value: 2 }),
        line({ trial: "c", t: 1, value: 3 }),
        line({ trial: "d", t: 1, value: 0 }),
      ],
      { scheduler: "median" },
    );
    expect(decisions(med)).toEqual(["CONTINUE", "CONTINUE", "CONTINUE", "STOP"]);
  });

  it("skips blank lines but counts them, and streams with Replayer", () => {
    const r = new Replayer({ maxT: 8, reductionFactor: 2 });
    expect(r.push("")).toBeNull();
    expect(r.push(line({ trial: "a", t: 1, value: 1 }))).toBe('{"trial":"a","t":1,"decision":"CONTINUE"}');
    expect(() => r.push("{")).toThrow(/^replay input line 3: not valid JSON/);
  });
});

describe("replay input errors name the line", () => {
  it.each([
    [["{nope"], 1, "not valid JSON"],
    [["", "[1,2]"], 2, "must be a JSON object"],
    [[line({ trial: "a", t: 1 })], 1, "value: is required"],
    [[line({ trial: "a", t: 1, value: null })], 1, 'value: must be a number or "NaN", got null'],
    [[line({ trial: "a", t: 1, value: "nan" })], 1, 'value: must be a number or "NaN", got "nan"'],
    [[line({ trial: "a", t: "1", value: 1 })], 1, 't: must be a number, got "1"'],
    [[line({ trial: "", t: 1, value: 1 })], 1, "trial: must not be empty"],
    [[line({ trial: "a", t: 1, valu: 1, value: 1 })], 1, 'valu: unknown key; did you mean "value"?'],
    [[line({ trial: "a", kind: "done", t: 1, value: 1 })], 1, "kind: must be one of result, complete"],
    [[line({ trial: "a", t: 1, value: 1, bracket: 3 })], 1, "bracket 3 is out of range"],
    [[line({ trial: "a", t: 1, value: 1, bracket: -1 })], 1, "bracket: must be >= 0, got -1"],
    [
      [line({ trial: "a", t: 1, value: 1 }), line({ trial: "a", t: 2, value: 1, bracket: 1 })],
      2,
      "given after trial a's first line",
    ],
  ])("%j -> line %d: %s", (lines, n, text) => {
    const e = replayError(lines, { scheduler: "asha", brackets: 2 });
    expect(e.line).toBe(n);
    expect(e.message).toContain(`replay input line ${n}: `);
    expect(e.message).toContain(text);
  });

  it("refuses brackets for schedulers without them", () => {
    const e = replayError([line({ trial: "a", t: 1, value: 1, bracket: 0 })], { scheduler: "median" });
    expect(e.message).toBe("replay input line 1: bracket 0 given, but the median scheduler has no brackets");
  });

  it("refuses bad scheduler options before reading anything", () => {
    expect(() => replayLines([], { reductionFactor: 1 })).toThrow(SchedulerOptionsError);
    expect(() => replayLines([], { reductionFactor: 1 })).toThrow("reductionFactor: must be > 1, got 1");
    expect(() => replayLines([], { scheduler: "fifo", brackets: 2 })).toThrow("brackets: does not apply to the fifo scheduler");
  });
});
