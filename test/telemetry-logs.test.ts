import type { JetStreamClient } from "@nats-io/jetstream";
import { encode, type LogChunk, type MeshNames } from "@rung/protocol";
import { waitFor } from "@rung/testkit";
import { it } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";
import { cli, trialEvent } from "./telemetry-helpers.js";

/** `rung logs` and `rung attach` as real child processes, reading chunks published by hand. Build first. */

// What a trial's terminal really carries: colours, tqdm's carriage-return redraws, a cursor hide.
const PARTS = [
  "\x1b[1mepoch 1\x1b[0m\r\n",
  "\r  0%|          | 0/10 [00:00<?, ?it/s]",
  "\r 50%|\x1b[32m█████     \x1b[0m| 5/10 [00:01<00:01, 4.98it/s]\x1b[?25l",
  "\r100%|\x1b[32m██████████\x1b[0m| 10/10 [00:02<00:00, 5.01it/s]\x1b[?25h\r\n",
  "val_acc=0.97 ✓\r\n",
];

/**
 * Writes one attempt's output as its agent would: the trial's events first (created, queued, and the
 * agent's claim, which makes it the attempt's claimant), then chunks on the agent's own subject.
 */
async function publisher(js: JetStreamClient, names: MeshNames, study: string, trial: string, attempt: number, agent = "box1") {
  for (const e of [
    trialEvent("created", study, trial, Date.now(), { params: {}, bracket: null }),
    trialEvent("queued", study, trial, Date.now(), { attempt }),
    trialEvent("claimed", study, trial, Date.now(), { attempt, agent, gpus: [0] }),
  ])
    await js.publish(names.subjects.eventSubject(e), encode(e));
  let seq = 0;
  return async (text: string, eof = false) => {
    const chunk: LogChunk = {
      v: 1,
      type: "log",
      study,
      trial,
      attempt,
      agent,
      seq,
      ts: Date.now(),
      data: new Uint8Array(Buffer.from(text, "utf8")),
      eof,
    };
    seq += 1;
    await js.publish(names.subjects.logs(study, trial, attempt, agent), encode(chunk), {
      msgID: `${study}.${trial}.${attempt}.log.${chunk.seq}`,
    });
  };
}

describe("rung logs", () => {
  it("prints a trial's output byte for byte, escape sequences intact", async ({ mesh, procs }) => {
    const { names, js, flags } = mesh;
    const write = await publisher(js, names, "digits", "t0001", 1);
    for (const p of PARTS.slice(0, -1)) await write(p);
    await write(PARTS.at(-1) as string, true);
    for (const ref of [["digits/t0001"], ["t0001"], ["t0001", "--study", "digits"]]) {
      const p = cli(["logs", ...ref, ...flags]);
      procs.push(p);
      expect(await p.exited, p.stderr()).toBe(0);
      expect(p.stdout().equals(Buffer.from(PARTS.join(""), "utf8"))).toBe(true);
    }
  });

  it("picks the latest attempt, takes --attempt, and says clearly what is missing or ambiguous", async ({ mesh, procs }) => {
    const { names, js, flags } = mesh;
    await (await publisher(js, names, "s1", "t7", 1))("first attempt\r\n", true);
    await (await publisher(js, names, "s1", "t7", 2))("second attempt\r\n", true);
    await (await publisher(js, names, "s2", "t7", 1))("another study\r\n", true);
    const latest = cli(["logs", "s1/t7", ...flags]);
    const first = cli(["logs", "s1/t7", "--attempt", "1", ...flags]);
    const missing = cli(["logs", "s1/t7", "--attempt", "3", ...flags]);
    const ambiguous = cli(["logs", "t7", ...flags]);
    const unknown = cli(["logs", "nope", ...flags]);
    procs.push(latest, first, missing, ambiguous, unknown);
    expect(await latest.exited).toBe(0);
    expect(latest.stdout().toString()).toBe("second attempt\r\n");
    expect(await first.exited).toBe(0);
    expect(first.stdout().toString()).toBe("first attempt\r\n");
    expect(await missing.exited).toBe(1);
    expect(missing.stderr()).toContain("rung: trial s1/t7 has no output for attempt 3 (attempts with output: 1, 2)");
    expect(await ambiguous.exited).toBe(1);
    expect(ambiguous.stderr()).toContain("trial t7 is in 2 studies (s1, s2) — name one, as s1/t7 or with --study s1");
    expect(await unknown.exited).toBe(1);
    expect(unknown.stderr()).toContain("no trial nope in any study");
  });

  it("follows with -f until the attempt's last chunk", async ({ mesh, procs }) => {
    const { names, js, flags } = mesh;
    const write = await publisher(js, names, "digits", "t0002", 1);
    await write(PARTS[0] as string);
    const p = cli(["logs", "digits/t0002", "-f", ...flags]);
    procs.push(p);
    await waitFor("the stored output", () => p.stdout().length > 0);
    for (const part of PARTS.slice(1, -1)) await write(part);
    await write(PARTS.at(-1) as string, true);
    expect(await p.exited).toBe(0);
    expect(p.stdout().toString("utf8")).toBe(PARTS.join(""));
  });
});

describe("rung attach", () => {
  it("shows a running trial's terminal from its start, live, until it ends", async ({ mesh, procs }) => {
    const { names, js, flags } = mesh;
    const ev = (e: ReturnType<typeof trialEvent>) => js.publish(names.subjects.eventSubject(e), encode(e));
    await (await publisher(js, names, "digits", "t0003", 1))("the failed attempt\r\n", true);
    const write = await publisher(js, names, "digits", "t0003", 2);
    await ev(trialEvent("started", "digits", "t0003", Date.now(), { attempt: 2, agent: "box1", pid: 1, gpus: [0] }));
    await write(PARTS[0] as string);
    await write(PARTS[1] as string);
    const p = cli(["attach", "digits/t0003", ...flags]);
    procs.push(p);
    await waitFor("the screen so far", () => p.stdout().length >= Buffer.byteLength(PARTS[0] + (PARTS[1] as string)));
    for (const part of PARTS.slice(2)) await write(part);
    await ev(
      trialEvent("finished", "digits", "t0003", Date.now(), {
        attempt: 2,
        agent: "box1",
        status: "completed",
        exitCode: 0,
        signal: null,
        reason: "exit 0",
        logTail: [],
      }),
    );
    // The agent died before its last chunk: attach still ends, a moment after the finished event.
    expect(await p.exited).toBe(0);
    expect(p.stdout().toString("utf8")).toBe(PARTS.join(""));
  });

  it("waits for a trial that has not started, and refuses one that has ended", async ({ mesh, procs }) => {
    const { names, js, flags } = mesh;
    const ev = (e: ReturnType<typeof trialEvent>) => js.publish(names.subjects.eventSubject(e), encode(e));
    await ev(trialEvent("queued", "digits", "t0004", Date.now(), { attempt: 1 }));
    const p = cli(["attach", "t0004", ...flags]);
    procs.push(p);
    await waitFor("attach to wait", () => p.stderr().includes("waiting for digits/t0004 to start"));
    await (await publisher(js, names, "digits", "t0004", 1))("hello\r\n", true);
    expect(await p.exited).toBe(0);
    expect(p.stdout().toString()).toBe("hello\r\n");

    await ev(trialEvent("ended", "digits", "t0004", Date.now(), { status: "completed", reason: "done", attempts: 1 }));
    const ended = cli(["attach", "digits/t0004", ...flags]);
    procs.push(ended);
    expect(await ended.exited).toBe(1);
    expect(ended.stderr()).toContain(
      'trial digits/t0004 is not running (completed) — see its output with "rung logs digits/t0004"',
    );
  });
});
