import { join } from "node:path";
import { REPO } from "@rung/testkit";
import { describe, expect } from "vitest";
import { secureTest } from "./security-helpers.js";
import { startUi } from "./ui-helpers.js";

/**
 * `rung ui` as the read-only viewer `rung auth init` generates: it needs nothing a viewer may not do.
 * A study runs as the coordinator (orders signed) on an agent with its own user; `rung ui --creds
 * viewer.creds` then lists it and serves its study, trial and mesh data, and the server logs no
 * refused operation of the viewer's.
 */

const it = secureTest;

describe("rung ui as a read-only viewer", () => {
  it("lists the study and serves its pages' data with viewer.creds, without one refused operation", async ({
    nats,
    sec,
    procs,
  }) => {
    const { agent, creds, mesh, violations } = sec;
    agent("a1");
    const study = sec.study({
      name: "viewed",
      command: `${process.execPath} ${join(REPO, "test", "fixtures", "curve-trial.mjs")} --quality {quality} --epochs 3 --epoch-ms 30`,
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: { quality: { grid: [0.5, 0.9] } } },
      scheduler: { type: "fifo" },
      resources: { gpus: 1 },
    });
    expect(await study.exited, study.out()).toBe(0);
    expect(study.out()).toMatch(/study viewed completed/);

    const logStart = nats.stderr.length;
    const ui = await startUi([...mesh(), "--creds", creds("viewer.creds")]);
    procs.push(ui.proc);
    const get = async (path: string) => {
      const res = await fetch(`${ui.url}${path}`);
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };

    const list = await get("/api/studies");
    expect(list.status, JSON.stringify(list.body)).toBe(200);
    const studies = list.body.studies as { name: string; state: string; counts: Record<string, number> }[];
    expect(studies.map((s) => s.name)).toEqual(["viewed"]);
    expect(studies[0]?.state).toBe("completed");
    expect(studies[0]?.counts.completed).toBe(2);

    const page = await get("/api/study/viewed");
    expect(page.status, JSON.stringify(page.body)).toBe(200);
    const summary = page.body.summary as { trials: { trial: string }[] };
    expect(summary.trials.map((t) => t.trial).sort()).toEqual(["t0001", "t0002"]);
    expect((page.body.points as unknown[]).length).toBeGreaterThanOrEqual(6);

    const trial = await get("/api/study/viewed/trial/t0001");
    expect(trial.status, JSON.stringify(trial.body)).toBe(200);
    const mesh1 = await get("/api/mesh");
    expect(mesh1.status).toBe(200);
    expect((mesh1.body.agents as { agent: string }[]).map((a) => a.agent)).toEqual(["a1"]);

    // The study page's live stream opens too, and its first update is the study.
    const ctl = new AbortController();
    const sse = await fetch(`${ui.url}/api/study/viewed/stream`, { signal: ctl.signal });
    expect(sse.status).toBe(200);
    const reader = (sse.body as ReadableStream<Uint8Array>).getReader();
    let text = "";
    while (!/event: summary/.test(text)) text += new TextDecoder().decode((await reader.read()).value);
    ctl.abort();

    expect(violations(logStart)).toEqual([]);
  });
});
