import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { linuxProc, type ProcCpuStat, type ProcSource, parseProcStat, TrialCpuMeter } from "./process-cpu.js";

const AGENT = 1000;

/** A /proc to script: processes (ticks in clock ticks, start in ticks after boot) and the time. */
class FakeProc implements ProcSource {
  procs: ProcCpuStat[] = [];
  env = new Map<number, Map<string, string>>();
  now = 100;
  stats() {
    return this.procs.map((p) => ({ ...p }));
  }
  environ(pid: number) {
    return this.env.get(pid);
  }
  uptimeS() {
    return this.now;
  }
  add(pid: number, ppid: number, session: number, ticks: number, startS: number) {
    this.procs.push({ pid, ppid, session, ticks, start: startS * 100 });
  }
  set(pid: number, ticks: number) {
    const p = this.procs.find((x) => x.pid === pid);
    if (p) (p as { ticks: number }).ticks = ticks;
  }
  drop(pid: number) {
    this.procs = this.procs.filter((p) => p.pid !== pid);
  }
  trial(pid: number, trial: string) {
    this.env.set(
      pid,
      new Map([
        ["RUNG_STUDY", "s"],
        ["RUNG_TRIAL", trial],
        ["RUNG_ATTEMPT", "1"],
      ]),
    );
  }
}

describe("TrialCpuMeter", () => {
  it("sums a trial's session over each interval: new processes in full, reaped ones once, others not at all", () => {
    const proc = new FakeProc();
    // Already running when the meter starts: its time so far is a baseline.
    proc.add(10, AGENT, 10, 5000, 50);
    proc.trial(10, "t1");
    proc.add(11, 10, 10, 3000, 50);
    // Not trials: the agent's own helper in its session, another user's process, a session leader without RUNG_*.
    proc.add(20, AGENT, 1, 900, 60);
    proc.add(30, 1, 30, 900, 60);
    proc.add(40, AGENT, 40, 900, 60);
    const meter = new TrialCpuMeter({ proc, parent: AGENT });

    proc.now = 110;
    proc.set(10, 5100); // +1 s
    proc.set(11, 3800); // +8 s
    proc.add(12, 10, 10, 300, 105); // started in the interval: +3 s
    proc.add(13, 11, 10, 50, 108); // a grandchild in its own process group, same session: +0.5 s
    proc.set(40, 5000);
    expect(meter.sample()).toEqual([{ study: "s", trial: "t1", attempt: 1, cpuCores: 1.25, processes: 4 }]);

    proc.now = 120;
    // Worker 11 exits and is reaped by the leader, whose cutime takes its whole 3900 ticks (100 of
    // them new); 12 used 200 more; 13 dies and is reaped by 11 first, so its 50 reach 10 through 11.
    proc.drop(11);
    proc.drop(13);
    proc.set(10, 5100 + 3800 + 100 + 50);
    proc.set(12, 500);
    expect(meter.sample()).toEqual([{ study: "s", trial: "t1", attempt: 1, cpuCores: 0.3, processes: 2 }]);

    proc.now = 125;
    proc.drop(10);
    proc.drop(12);
    expect(meter.sample()).toEqual([]);
  });

  it("asks again for a leader whose environment is not the trial's yet (between fork and exec)", () => {
    const proc = new FakeProc();
    const meter = new TrialCpuMeter({ proc, parent: AGENT });
    proc.add(10, AGENT, 10, 0, 100.5);
    proc.env.set(10, new Map([["PATH", "/bin"]]));
    proc.now = 101;
    expect(meter.sample()).toEqual([]);
    proc.trial(10, "t2");
    proc.set(10, 150);
    proc.now = 102;
    expect(meter.sample()).toEqual([{ study: "s", trial: "t2", attempt: 1, cpuCores: 1.5, processes: 1 }]);

    // While no slot is held the agent only marks the time; the next trial's interval starts there.
    proc.drop(10);
    proc.now = 200;
    expect(meter.idle()).toEqual([]);
    proc.add(11, AGENT, 11, 40, 201);
    proc.trial(11, "t3");
    proc.now = 204;
    expect(meter.sample()).toEqual([{ study: "s", trial: "t3", attempt: 1, cpuCores: 0.1, processes: 1 }]);
  });

  it("parses /proc/<pid>/stat, names with spaces and parentheses included", () => {
    const line =
      "4242 (python3 (worker) x) S 4200 4242 4242 34817 4242 4194560 1000 0 0 0 150 25 7 3 20 0 1 0 123456 1000000 100 18446744073709551615";
    expect(parseProcStat(4242, line)).toEqual({ pid: 4242, ppid: 4200, session: 4242, ticks: 185, start: 123456 });
    expect(parseProcStat(1, "garbage")).toBeUndefined();
  });

  it.skipIf(process.platform !== "linux")(
    "measures a real trial's CPU time, a worker that came and went between samples included",
    async () => {
      // The real /proc, with the times the meter read kept: its interval is the last two.
      const uptimes: number[] = [];
      const proc: ProcSource = { ...linuxProc, uptimeS: () => uptimes[uptimes.push(linuxProc.uptimeS()) - 1] as number };
      const meter = new TrialCpuMeter({ proc });
      // A session leader (as node-pty makes a trial) that runs a worker to completion (0.4 s of CPU,
      // reaped by it) and burns 0.3 s itself, then idles until killed. CPU time is user and system
      // both: polling cpuUsage() is itself mostly system time.
      const burn =
        "const burn = (s) => { const used = () => { const u = process.cpuUsage(); return u.user + u.system; }; const end = used() + s * 1e6; while (used() < end); };";
      const script = `
        const { spawnSync } = require("node:child_process");
        ${burn}
        spawnSync(process.execPath, ["-e", ${JSON.stringify(`${burn} burn(0.4);`)}]);
        burn(0.3);
        process.stdout.write("done\\n");
        setInterval(() => {}, 1000);`;
      const child = spawn(process.execPath, ["-e", script], {
        detached: true,
        stdio: ["ignore", "pipe", "inherit"],
        env: { ...process.env, RUNG_STUDY: "s", RUNG_TRIAL: "real", RUNG_ATTEMPT: "2" },
      });
      try {
        await new Promise<void>((resolve, reject) => {
          child.stdout?.on("data", (d: Buffer) => d.toString().includes("done") && resolve());
          child.once("exit", () => reject(new Error("the trial exited early")));
        });
        const [s] = meter.sample();
        expect(s).toMatchObject({ study: "s", trial: "real", attempt: 2, processes: 1 });
        // 0.7 s of CPU burnt on purpose (0.4 s of it by a worker that came and went unseen), plus two
        // Node start-ups; the interval is the whole run.
        const interval = (uptimes.at(-1) as number) - (uptimes.at(-2) as number);
        const cpuSeconds = (s?.cpuCores ?? 0) * interval;
        expect(cpuSeconds).toBeGreaterThan(0.65);
        expect(cpuSeconds).toBeLessThan(1.5);
      } finally {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
        await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once("exit", r)));
      }
    },
    20_000,
  );
});
