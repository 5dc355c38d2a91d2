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
  it("builds every subject from the grammar, naming each event's and chunk's publisher", () => {
    expect(s.work("gpu1")).toBe("rung.work.gpu1");
    expect(s.coordinatorEvents("digits", "t0001")).toBe("rung.events.digits.t0001.c");
    expect(s.agentEvents("digits", "t0001", "box-1")).toBe("rung.events.digits.t0001.a.box-1");
    expect(s.trialEvents("digits", "t0001")).toBe("rung.events.digits.t0001.>");
    expect(s.telemetry("box-1")).toBe("rung.telemetry.box-1");
    expect(s.logs("digits", "t0001", 2, "box-1")).toBe("rung.logs.digits.t0001.2.box-1");
    expect(s.attemptLogs("digits", "t0001", 2)).toBe("rung.logs.digits.t0001.2.*");
    expect(s.controlKey("digits", "t0001")).toBe("digits.t0001");
  });
  it("puts an event on its writer's subject: the coordinator's, or the agent's its body names", () => {
    const base = { v: 1 as const, study: "d", trial: "t1", ts: 1 };
    expect(s.eventSubject({ ...base, type: "queued", attempt: 1 })).toBe("rung.events.d.t1.c");
    expect(s.eventSubject({ ...base, type: "claimed", attempt: 1, agent: "b7", gpus: [] })).toBe("rung.events.d.t1.a.b7");
  });
  it("refuses a token that would change the subject", () => {
    expect(() => s.coordinatorEvents("digits", "t.>")).toThrow(/trial/);
    expect(() => s.agentEvents("digits", "t1", "*")).toThrow(/agent/);
    expect(() => s.telemetry("*")).toThrow(/agent/);
    expect(() => s.logs("d", "t", 0, "a")).toThrow(/attempt/);
    expect(() => s.logs("d", "t", 1, "a.b")).toThrow(/agent/);
  });
  it("parses event and log subjects back, with their publisher", () => {
    expect(s.parseEvents("rung.events.d.t1.c")).toEqual({ study: "d", trial: "t1", from: { role: "coordinator" } });
    expect(s.parseEvents("rung.events.d.t1.a.b7")).toEqual({ study: "d", trial: "t1", from: { role: "agent", agent: "b7" } });
    // The unscoped subjects of older versions name no publisher: nobody's.
    expect(s.parseEvents("rung.events.d.t1")).toBeUndefined();
    expect(s.parseEvents("rung.events.d.t1.x.b7")).toBeUndefined();
    expect(s.parseEvents("rung.work.gpu1")).toBeUndefined();
    expect(s.parseLogs("rung.logs.d.t1.2.b7")).toEqual({ study: "d", trial: "t1", attempt: 2, agent: "b7" });
    expect(s.parseLogs("rung.logs.d.t1.2")).toBeUndefined();
    expect(s.parseLogs("rung.logs.d.t1.x.b7")).toBeUndefined();
  });
});
