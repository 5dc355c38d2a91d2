import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { connectNats } from "@rung/protocol";
import {
  checkLeaks,
  cpuTicks,
  descendants,
  exitOf,
  FakeNvidiaSmi,
  fakeGpu,
  LeakError,
  procCmdline,
  procEnv,
  procStat,
  rung,
  spawnProcess,
  startCluster,
  startNats,
  type TestMesh,
  type TestNats,
  type TestProcess,
  waitFor,
  waitForOutput,
} from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { afterAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "rung-testkit-"));
  dirs.push(d);
  return d;
}

describe("fake nvidia-smi", () => {
  it("prints exactly the real tool's CSV, [N/A] and [Not Supported] included", async () => {
    const smi = new FakeNvidiaSmi(tmp(), [
      fakeGpu(0, { utilizationGpu: 87, memoryUsedMiB: 40000, powerW: 312.5 }),
      fakeGpu(1, { powerW: "[N/A]", smClockMHz: "[Not Supported]" }),
    ]);
    const { stdout } = await run(smi.path, [
      "--query-gpu=index,utilization.gpu,memory.used,memory.total,power.draw,clocks.sm",
      "--format=csv,noheader,nounits",
    ]);
    expect(stdout).toBe("0, 87, 40000, 81559, 312.50, 345\n1, 0, 0, 81559, [N/A], [Not Supported]\n");
  });

  it("prints a header and units unless told not to, and filters with -i", async () => {
    const smi = new FakeNvidiaSmi(tmp(), 3);
    const { stdout } = await run(smi.path, ["--query-gpu=index,memory.total", "--format=csv", "-i", "2"]);
    expect(stdout).toBe("index, memory.total\n2, 81559 MiB\n");
  });

  it("refuses an unknown field the way the real tool does", async () => {
    const smi = new FakeNvidiaSmi(tmp(), 1);
    await expect(run(smi.path, ["--query-gpu=index,bogus", "--format=csv"])).rejects.toMatchObject({
      code: 2,
      stdout: 'Field "bogus" is not a valid field to query.\n\n',
    });
  });

  it("loops with -lms and follows state changes", async () => {
    const smi = new FakeNvidiaSmi(tmp(), 1);
    const p = spawnProcess(smi.path, ["--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits", "-lms", "50"]);
    await new Promise((r) => setTimeout(r, 300));
    smi.setGpu(0, { utilizationGpu: 99 });
    await new Promise((r) => setTimeout(r, 300));
    await p.stop();
    const lines = p.stdout().toString().trim().split("\n");
    expect(lines.length).toBeGreaterThan(3);
    expect(lines[0]).toBe("0, 0");
    expect(lines.at(-1)).toBe("0, 99");
  });
});

describe("nats servers", () => {
  it("starts a server on a port it picks, and says what nats-server said when it cannot start", async () => {
    const a = await startNats();
    try {
      expect(a.port).toBeGreaterThan(0);
      const nc = await connectNats({ url: a.url });
      expect(nc.info?.jetstream).toBe(true);
      await nc.close();
      // A second server on the same port fails, and the error carries the server's own words.
      await expect(startNats({ port: a.port })).rejects.toThrow(/nats-server exited during start[\s\S]*address already in use/);
    } finally {
      await a.destroy();
    }
  });

  it("starts a three-node JetStream cluster", async () => {
    const cluster = await startCluster(3);
    try {
      const nc = await connectNats({ url: cluster.url });
      const { jetstreamManager } = await import("@nats-io/jetstream");
      const jsm = await jetstreamManager(nc);
      const info = await jsm.streams.add({ name: "R3", subjects: ["r3.>"], num_replicas: 3 });
      expect(info?.config.num_replicas).toBe(3);
      expect(info?.cluster?.replicas?.length).toBe(2);
      await nc.close();
    } finally {
      await cluster.destroy();
    }
  });
});

describe("leak check", () => {
  it("fails a test that leaves a child process or a connection behind", async () => {
    const server = await startNats();
    const child = spawn("sleep", ["30"]);
    const nc = await connectNats({ url: server.url, name: "forgotten" });
    try {
      await expect(checkLeaks({ graceMs: 200 })).rejects.toThrow(LeakError);
      await expect(checkLeaks({ graceMs: 200 })).rejects.toThrow(/forgotten/);
      expect(child.killed || child.exitCode !== null || child.signalCode !== null || (await waitExit(child))).toBeTruthy();
    } finally {
      await nc.close();
      await server.destroy();
    }
    await checkLeaks();
  });
});

function waitExit(child: ReturnType<typeof spawn>): Promise<boolean> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(true);
    child.once("exit", () => resolve(true));
  });
}

describe("/proc", () => {
  it("reads a child's stat, command line and environment, and finds it among this process's descendants", async () => {
    const p = spawnProcess("sleep", ["30"], { env: { RUNG_TESTKIT_MARK: "here" } });
    try {
      const pid = p.child.pid as number;
      await waitFor("the child to run sleep", () => procCmdline(pid) === "sleep 30");
      expect(procStat(pid)).toMatchObject({ pid, ppid: process.pid, pgrp: procStat(process.pid)?.pgrp });
      expect(procStat(process.pid)?.ppid).toBe(process.ppid);
      expect(procEnv(pid)?.get("RUNG_TESTKIT_MARK")).toBe("here");
      expect(descendants().find((d) => d.pid === pid)?.cmd).toBe("sleep 30");
      expect(cpuTicks(process.pid)).toBeGreaterThan(0);
    } finally {
      await p.stop();
    }
    // A process that is not there reads as nothing, never as an error.
    expect(procStat(2 ** 30)).toBeUndefined();
    expect(procEnv(2 ** 30)).toBeUndefined();
    expect(cpuTicks(2 ** 30)).toBe(0);
  });
});

describe("processes", () => {
  it("runs the built CLI, its stdout kept apart and, with stderr, together", async () => {
    const help = rung(["--help"]);
    expect(await help.exited).toBe(0);
    expect(help.lines()[0]).toMatch(/^Usage: rung/);
    expect(help.out()).toBe(help.stdout().toString());
    const bad = rung(["no-such-command"]);
    expect(await bad.exited).toBe(1);
    expect(bad.stdout().length).toBe(0);
    expect(bad.stderr()).toMatch(/unknown command/);
    expect(bad.out()).toBe(bad.stderr());
  });

  it("stops a process with its stop signal, and kills one that ignores it", async () => {
    const deaf = spawnProcess(
      process.execPath,
      ["-e", 'process.on("SIGTERM", () => console.log("ignored")); console.log("ready"); setInterval(() => {}, 1000);'],
      { killAfterMs: 300 },
    );
    await waitForOutput(deaf, /ready/);
    expect(await deaf.stop()).toBeNull();
    expect(await exitOf(deaf.child)).toEqual({ code: null, signal: "SIGKILL" });
    expect(deaf.out()).toContain("ignored");
    const polite = spawnProcess("sleep", ["30"], { stopSignal: "SIGINT" });
    expect(await polite.stop()).toBeNull();
    expect(polite.child.signalCode).toBe("SIGINT");
    expect(polite.alive()).toBe(false);
    // Stopping it again does nothing.
    expect(await polite.stop()).toBeNull();
  });

  it("says why a command could not start", async () => {
    const p = spawnProcess("/nonexistent/rung-testkit", []);
    expect(await p.exited).toBeNull();
    expect(p.alive()).toBe(false);
    expect(p.stderr()).toMatch(/ENOENT/);
  });
});

describe("the vitest fixtures", () => {
  let first: { nats: TestNats; mesh: TestMesh; proc: TestProcess } | undefined;

  meshTest(
    "give each test a mesh of its own on the file's server, and stop the processes it pushes",
    async ({ nats, mesh, procs }) => {
      expect(mesh.url).toBe(nats.url);
      expect(mesh.flags).toEqual(["--nats", nats.url, "--prefix", mesh.prefix]);
      const streams = await mesh.resources.jsm.streams.names().next();
      for (const s of Object.values(mesh.names.streams)) expect(streams).toContain(s);
      const proc = spawnProcess("sleep", ["30"]);
      procs.push(proc);
      first = { nats, mesh, proc };
    },
  );

  meshTest("have disposed of them by the next test; the server lasts the file", async ({ nats, mesh }) => {
    expect(nats).toBe(first?.nats);
    expect(mesh.prefix).not.toBe(first?.mesh.prefix);
    expect(first?.mesh.nc.isClosed()).toBe(true);
    expect(first?.proc.alive()).toBe(false);
  });
});
