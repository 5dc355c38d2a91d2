import type { AgentState } from "@rung/protocol";
import { describe, expect, it } from "vitest";
import { AGENT_TRANSITIONS } from "./agent.js";
import { IllegalTransitionError } from "./errors.js";
import { StateMachine } from "./state-machine.js";

describe("state machines", () => {
  it("move along declared edges and throw, staying put, on any other", () => {
    const m = new StateMachine<"a" | "b" | "c">("test", "a", { a: ["b"], b: ["c", "a"], c: [] });
    expect(m.can("b")).toBe(true);
    expect(m.can("c")).toBe(false);
    m.transition("b");
    expect(m.state).toBe("b");
    m.transition("c");
    expect(() => m.transition("a")).toThrow(IllegalTransitionError);
    expect(m.state).toBe("c");
    const err = (() => {
      try {
        m.transition("b");
      } catch (e) {
        return e;
      }
    })();
    expect(err).toMatchObject({ name: "IllegalTransitionError", machine: "test", from: "c", to: "b" });
    expect((err as Error).message).toBe("test: illegal state transition c → b (a bug in rung agent; please report it)");
  });

  it("the agent's: starting → running → draining → stopped, and failed from any but the ends", () => {
    const edges = (from: AgentState) => [...AGENT_TRANSITIONS[from]].sort();
    expect(edges("starting")).toEqual(["failed", "running"]);
    expect(edges("running")).toEqual(["draining", "failed"]);
    expect(edges("draining")).toEqual(["failed", "stopped"]);
    expect(edges("stopped")).toEqual([]);
    expect(edges("failed")).toEqual([]);
    const agent = new StateMachine<AgentState>("agent", "starting", AGENT_TRANSITIONS);
    expect(() => agent.transition("draining")).toThrow(/agent: illegal state transition starting → draining/);
    agent.transition("running");
    agent.transition("draining");
    agent.transition("stopped");
    expect(() => agent.transition("failed")).toThrow(IllegalTransitionError);
  });
});
