import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { checkLeaks, FakeNvidiaSmi, fakeGpu, fakeMigInstance } from "@rung/testkit";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  expandMig,
  migProfile,
  parseComputeApps,
  parseMigListing,
  queryComputeApps,
  queryGpuInventory,
  queryMigListing,
  queryMigModes,
} from "./nvidia-smi.js";
import { outOfMemoryLine } from "./trial-runner.js";

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), "rung-mig-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(async () => {
  await checkLeaks();
});

describe("MIG and GPU processes from nvidia-smi", () => {
  it("parses -L with MIG devices and offers a MIG GPU as its instances", async () => {
    const text = [
      "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)",
      "  MIG 3g.20gb     Device  0: (UUID: MIG-1f1c1b5e-2d2c-5f7e-9a8b-7c6d5e4f3a2b)",
      "  MIG 1g.5gb      Device  1: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)",
      "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-aa)",
    ].join("\n");
    const listing = parseMigListing(text);
    expect(listing).toEqual([
      { parent: 0, device: 0, profile: "3g.20gb", uuid: "MIG-1f1c1b5e-2d2c-5f7e-9a8b-7c6d5e4f3a2b" },
      { parent: 0, device: 1, profile: "1g.5gb", uuid: "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f" },
    ]);
    const gpus = expandMig(
      [
        { index: 0, uuid: "GPU-5d", name: "NVIDIA A100-SXM4-40GB", memoryTotalMiB: 40960, driver: "535", fake: false },
        { index: 1, uuid: "GPU-aa", name: "NVIDIA A100-SXM4-40GB", memoryTotalMiB: 40960, driver: "535", fake: false },
      ],
      listing,
    );
    // Memory: 97.5 % of the profile's figure (a real 1g.5gb has less than 5 GiB usable).
    expect(gpus.map((g) => [g.index, g.uuid, g.memoryTotalMiB, g.mig?.computeShare])).toEqual([
      [100, "MIG-1f1c1b5e-2d2c-5f7e-9a8b-7c6d5e4f3a2b", 19_968, 3 / 7],
      [101, "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f", 4992, 1 / 7],
      [1, "GPU-aa", 40960, undefined],
    ]);
  });

  it("reads compute-instance profiles, and offers nothing of a GPU in MIG mode without instances", () => {
    expect(migProfile("1g.10gb")).toEqual({ slices: 1, memoryMiB: 9984 });
    expect(migProfile("1c.3g.40gb")).toEqual({ slices: 1, memoryMiB: 39_936 });
    expect(migProfile("3g.40gb+me")).toEqual({ slices: 3, memoryMiB: 39_936 });
    expect(migProfile("odd")).toBeNull();
    const a100 = (index: number) => ({
      index,
      uuid: `GPU-${index}`,
      name: "NVIDIA A100-SXM4-80GB",
      memoryTotalMiB: 81_920,
      driver: "535",
      fake: false,
    });
    const listing = parseMigListing(
      "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-0)\n  MIG 1c.3g.40gb   Device  0: (UUID: MIG-a)\nGPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-1)\nGPU 2: NVIDIA A100-SXM4-80GB (UUID: GPU-2)\n",
    );
    const gpus = expandMig([a100(0), a100(1), a100(2)], listing, new Set([0, 1]));
    expect(gpus.map((g) => [g.index, g.memoryTotalMiB, g.mig?.computeShare])).toEqual([
      [100, 39_936, 1 / 7],
      [2, 81_920, undefined],
    ]);
  });

  it("reads which GPUs are in MIG mode, and lists a MIG process under its parent GPU as the real tool does", async () => {
    const smi = new FakeNvidiaSmi(join(dir, "smi-modes"), [
      fakeGpu(0, { mig: [fakeMigInstance(0, 0, "1g.10gb")] }),
      fakeGpu(1, { mig: [] }),
      fakeGpu(2),
    ]);
    expect([...(await queryMigModes(smi.path))]).toEqual([0, 1]);
    smi.addProcess(process.pid, [{ uuid: fakeMigInstance(0, 0, "1g.10gb").uuid, memoryMiB: 700, compute: 0.1 }]);
    expect(await queryComputeApps(smi.path)).toEqual([{ pid: process.pid, usedMiB: 700, gpuUuid: fakeGpu(0).uuid }]);
  });

  it("reads the fake's MIG layout and its processes in the real tool's formats", async () => {
    const smi = new FakeNvidiaSmi(join(dir, "smi"), [
      fakeGpu(0, { mig: [fakeMigInstance(0, 0, "3g.40gb"), fakeMigInstance(0, 1, "1g.10gb")] }),
      fakeGpu(1),
    ]);
    const inv = await queryGpuInventory(smi.path);
    if (!inv.ok) throw inv.error;
    const gpus = expandMig(inv.gpus, await queryMigListing(smi.path));
    expect(gpus.map((g) => g.uuid)).toEqual([
      fakeMigInstance(0, 0, "3g.40gb").uuid,
      fakeMigInstance(0, 1, "1g.10gb").uuid,
      fakeGpu(1).uuid,
    ]);
    expect(gpus[1]?.mig).toEqual({ parent: 0, profile: "1g.10gb", computeShare: 1 / 7 });
    expect(await queryComputeApps(smi.path)).toEqual([]);
    expect(
      parseComputeApps("4242, 1536, GPU-a1b2c3d4-0000-4000-8000-000000000000\n4243, [N/A], MIG-x\nNo running processes found\n"),
    ).toEqual([
      { pid: 4242, usedMiB: 1536, gpuUuid: "GPU-a1b2c3d4-0000-4000-8000-000000000000" },
      { pid: 4243, usedMiB: 0, gpuUuid: "MIG-x" },
    ]);
  });

  it("adds up its processes' memory, and caps their compute at 100 % of a GPU", async () => {
    const smi = new FakeNvidiaSmi(join(dir, "smi-procs"), [fakeGpu(0), fakeGpu(1)]);
    const uuid = fakeGpu(0).uuid;
    // Three live processes (this one, its parent, init) want 60 % of GPU 0 each: 180 % in all.
    smi.addProcess(process.pid, [{ uuid, memoryMiB: 1000, compute: 0.6 }]);
    smi.addProcess(process.ppid, [{ uuid, memoryMiB: 2000, compute: 0.6 }]);
    smi.addProcess(1, [
      { uuid, memoryMiB: 3000, compute: 0.6 },
      { uuid: fakeGpu(1).uuid, memoryMiB: 500, compute: 0.25 },
    ]);
    const apps = await queryComputeApps(smi.path);
    expect(apps?.map((p) => [p.pid, p.usedMiB, p.gpuUuid])).toEqual(
      [
        [1, 3000, uuid],
        [1, 500, fakeGpu(1).uuid],
        [process.ppid, 2000, uuid],
        [process.pid, 1000, uuid],
      ].sort((a, b) => (a[0] as number) - (b[0] as number)),
    );
    const { stdout } = await run(smi.path, ["--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits"]);
    expect(stdout).toBe("0, 100, 6000\n1, 25, 500\n");
  });

  it("recognises CUDA's out-of-memory error in a trial's output", () => {
    expect(
      outOfMemoryLine([
        "Traceback (most recent call last):",
        "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total capacity)",
      ]),
    ).toMatch(/^torch\.cuda\.OutOfMemoryError: CUDA out of memory/);
    expect(outOfMemoryLine(["RuntimeError: CUDA error: out of memory"])).not.toBeNull();
    for (const line of [
      "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
      "RuntimeError: cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
      "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8589934592 bytes.",
      "tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating tensor with shape[8192,8192]",
    ])
      expect(outOfMemoryLine(["Traceback (most recent call last):", line, "exit"])).toBe(line);
    expect(outOfMemoryLine(["ValueError: bad lr", "exit"])).toBeNull();
  });
});
