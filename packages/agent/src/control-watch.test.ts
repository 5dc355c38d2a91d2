import type { KV, KvEntry } from "@nats-io/kv";
import { BadMessageCounter, type ClaimNotice, encode, MeshNames, silentLogger } from "@rung/protocol";
import { describe, expect, it } from "vitest";
import { ControlWatch } from "./control-watch.js";

/** A bucket whose watches deliver what the test puts, by key pattern (`*` one token, `>` the rest). */
function fakeBucket() {
  const watches: { pattern: RegExp; push(e: KvEntry): void; end(): void }[] = [];
  const kv = {
    async watch(o: { key: string }) {
      const queue: KvEntry[] = [];
      let wake: (() => void) | null = null;
      let ended = false;
      const pattern = new RegExp(`^${o.key.replace(/\./g, "\\.").replace(/\*/g, "[^.]+").replace(/>$/, ".+")}$`);
      watches.push({
        pattern,
        push: (e) => {
          queue.push(e);
          wake?.();
        },
        end: () => {
          ended = true;
          wake?.();
        },
      });
      return {
        stop: () => {
          ended = true;
          wake?.();
        },
        async *[Symbol.asyncIterator]() {
          for (;;) {
            const e = queue.shift();
            if (e) {
              yield e;
              continue;
            }
            if (ended) return;
            await new Promise<void>((r) => {
              wake = r;
            });
          }
        },
      };
    },
  } as unknown as KV;
  const put = (key: string, value = new Uint8Array()) => {
    for (const w of watches) if (w.pattern.test(key)) w.push({ key, operation: "PUT", value } as KvEntry);
  };
  return { kv, put };
}

const tick = () => new Promise((r) => setTimeout(r, 5));

describe("work wakes in the control watch", () => {
  it("wakes a waiting claim loop for a pool it wants, not for another, and remembers a wake that came before the wait", async () => {
    const { kv, put } = fakeBucket();
    const names = new MeshNames("w");
    const w = new ControlWatch({
      kv,
      subjects: names.subjects,
      log: silentLogger(),
      bad: new BadMessageCounter(silentLogger()),
      onStop: () => {},
    });
    await w.start();
    expect(w.watchingWork).toBe(true);
    const never = new AbortController().signal;
    const wantShares = (p: string) => p === "gpu1of2";

    // Another pool's wake does not end the wait; the wanted one does.
    let woken = false;
    const waiting = w.waitForWork(w.wakes, 60_000, never, wantShares).then(() => {
      woken = true;
    });
    put(names.subjects.workWakeKey("gpu4"));
    await tick();
    expect(woken).toBe(false);
    put(names.subjects.workWakeKey("gpu1of2"));
    await waiting;
    expect(woken).toBe(true);

    // A wake between the count taken (before looking at the pools) and the wait: the wait ends at once
    // for a wanted pool, and not for an unwanted one.
    const mark = w.wakes;
    put(names.subjects.workWakeKey("gpu1of2"));
    put(names.subjects.workWakeKey("gpu1"));
    await tick();
    const first = await Promise.race([
      w.waitForWork(mark, 60_000, never, wantShares).then(() => "woken"),
      tick().then(() => "still waiting"),
    ]);
    expect(first).toBe("woken");
    let other = false;
    const p = w
      .waitForWork(mark, 60_000, never, (pool) => pool === "gpu8")
      .then(() => {
        other = true;
      });
    await tick();
    expect(other).toBe(false);

    await w.close();
    await p;
    expect(other).toBe(true); // closing ends every wait
  });

  it("hands on the claim notices among the work keys, and only well-formed ones naming the trial of their key", async () => {
    const { kv, put } = fakeBucket();
    const names = new MeshNames("w");
    const bad = new BadMessageCounter(silentLogger());
    const notices: ClaimNotice[] = [];
    const w = new ControlWatch({
      kv,
      subjects: names.subjects,
      log: silentLogger(),
      bad,
      onStop: () => {},
      onClaim: (n) => notices.push(n),
    });
    await w.start();
    const notice: ClaimNotice = {
      v: 1,
      type: "claim",
      study: "s",
      studyId: "abc",
      trial: "t0002",
      attempt: 2,
      agent: "a3",
      ts: 1,
    };
    const wakes = w.wakes;
    put(names.subjects.claimNoticeKey("s", "t0002"), encode(notice));
    put(names.subjects.claimNoticeKey("s", "t0003"), encode(notice)); // names another trial than its key
    put(names.subjects.claimNoticeKey("s", "t0004"), new TextEncoder().encode("{not json"));
    put(names.subjects.workWakeKey("gpu1"));
    await tick();
    expect(notices).toEqual([notice]);
    expect(bad.total).toBe(1);
    expect(w.wakes).toBe(wakes + 1); // a notice is no wake; the wake still counts
    await w.close();
  });
});
