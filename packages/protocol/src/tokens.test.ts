import { describe, expect, it } from "vitest";
import { InvalidTokenError, Subjects, validToken } from "./index.js";

describe("validToken", () => {
  it("accepts names made of letters, digits, - and _", () => {
    expect(validToken("digits-asha_2")).toBe("digits-asha_2");
  });

  it.each([
    ["a.b", '"."'],
    ["a*", '"*"'],
    ["a>", '">"'],
    ["a b", "whitespace"],
    ["tab\there", "whitespace"],
    ["", "is empty"],
  ])("refuses %j and says why (%s)", (name, why) => {
    expect(() => validToken(name, "study")).toThrow(InvalidTokenError);
    expect(() => validToken(name, "study")).toThrow(why);
  });

  it("refuses names over 64 characters", () => {
    expect(() => validToken("x".repeat(65), "trial")).toThrow(/trial .* is 65 characters long/);
    expect(validToken("x".repeat(64))).toHaveLength(64);
  });
});

describe("Subjects", () => {
  const s = new Subjects("rung");
  it("builds every subject from the grammar", () => {
    expect(s.work("gpu1")).toBe("rung.work.gpu1");
    expect(s.events("digits", "t0001")).toBe("rung.events.digits.t0001");
    expect(s.telemetry("box-1")).toBe("rung.telemetry.box-1");
    expect(s.logs("digits", "t0001", 2)).toBe("rung.logs.digits.t0001.2");
    expect(s.controlKey("digits", "t0001")).toBe("digits.t0001");
  });
  it("refuses a token that would change the subject", () => {
    expect(() => s.events("digits", "t.>")).toThrow(/trial/);
    expect(() => s.telemetry("*")).toThrow(/agent/);
    expect(() => s.logs("d", "t", 0)).toThrow(/attempt/);
  });
  it("parses event subjects back", () => {
    expect(s.parseEvents("rung.events.d.t1")).toEqual({ study: "d", trial: "t1" });
    expect(s.parseEvents("rung.work.gpu1")).toBeUndefined();
  });
});
