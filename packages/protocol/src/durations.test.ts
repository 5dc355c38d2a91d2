import { describe, expect, it } from "vitest";
import { durationText, parseDuration } from "./durations.js";

describe("durations", () => {
  it("writes a duration the way a flag takes it, and reads it back", () => {
    expect([30_000, 1_500, 250, 120_000, 7_200_000].map(durationText)).toEqual(["30s", "1.5s", "0.3s", "2m", "2h"]);
    for (const text of ["30s", "1.5s", "2m", "2h", "12s"]) expect(durationText(parseDuration(text))).toBe(text);
  });
});
