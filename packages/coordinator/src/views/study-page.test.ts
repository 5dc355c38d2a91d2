import { describe, expect, it } from "vitest";
import { curvePoints, terminalText } from "./study-page.js";

describe("terminalText", () => {
  it("drops colours and keeps each carriage-return redraw at its last state", () => {
    const raw =
      "\x1b[1mepoch 1\x1b[0m\r\n\r  0%|   | 0/10\r 50%|\x1b[32m██\x1b[0m| 5/10\r100%|██| 10/10\x1b[?25h\r\nval_acc=0.97\r\n";
    expect(terminalText(raw)).toBe("epoch 1\n100%|██| 10/10\nval_acc=0.97\n");
  });
});

describe("curvePoints", () => {
  it("takes the study's metric against the time attribute, NaN as null, rows without either left out", () => {
    const row = (trial: string, t: number | null, metrics: Record<string, number>) => ({
      study: "s",
      trial,
      attempt: 1,
      t,
      metrics,
      ts: 0,
    });
    expect(
      curvePoints(
        [
          row("t1", 1, { epoch: 1, acc: 0.5 }),
          row("t1", 2, { epoch: 2, acc: Number.NaN }),
          row("t2", null, { acc: 0.1 }),
          row("t2", 1, { loss: 1 }),
        ],
        "acc",
      ),
    ).toEqual([
      ["t1", 1, 0.5],
      ["t1", 2, null],
    ]);
  });
});
