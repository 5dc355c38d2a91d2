import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { connectNats } from "@rung/protocol";
import { checkLeaks, FakeNvidiaSmi, fakeGpu, LeakError, startCluster, startNats } from "@rung/testkit";
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
    const child = spawn(smi.path, ["--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits", "-lms", "50"]);
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    await new Promise((r) => setTimeout(r, 300));
    smi.setGpu(0, { utilizationGpu: 99 });
    await new Promise((r) => setTimeout(r, 300));
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
    const lines = out.trim().split("\n");
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
