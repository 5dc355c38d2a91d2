import { describe, expect, it } from "vitest";
import { SpecError } from "../errors.js";
import { oomDevice, oomOutcome, oomUsesRetry, orderResources, runsAlone } from "./gpu-placement.js";
import { compileSpec, specToInput } from "./spec.js";

const base = (resources: Record<string, unknown>) => ({
  name: "s1",
  command: "python train.py --lr {lr}",
  metric: { name: "val_acc", mode: "max" },
  search: { space: { lr: { grid: [0.1] } } },
  scheduler: { type: "fifo", max_t: 3 },
  resources,
});

function problem(resources: Record<string, unknown>): string {
  try {
    compileSpec(base(resources));
  } catch (err) {
    if (err instanceof SpecError) return err.problems.map((p) => `${p.path}: ${p.message}`).join("\n");
    throw err;
  }
  return "no problem";
}

describe("resources: shares of a GPU and gpu_memory", () => {
  it("compiles a share with its memory, and writes it back the way it reads", () => {
    const spec = compileSpec(base({ gpus: 0.25, gpu_memory: "10GiB" }));
    expect(spec.resources).toEqual({ gpus: 0.25, cpus: 0, gpuMemoryMiB: 10_240 });
    expect(compileSpec(specToInput(spec)).resources).toEqual(spec.resources);
  });

  it("says in one sentence what is wrong with a share or a size", () => {
    expect(problem({ gpus: 1.5 })).toBe(
      "resources.gpus: more than one GPU must be a whole number, got 1.5; use a share below 1 (such as 0.5) or 1, 2, …",
    );
    expect(problem({ gpus: 0.333 })).toBe(
      "resources.gpus: a share of one GPU is 0.01 to 0.99 in steps of 0.01, got 0.333; write for example 0.25 or 0.33",
    );
    expect(problem({ gpus: 0.5, gpu_memory: 10 })).toBe(
      'resources.gpu_memory: must be a size with a unit such as "10GiB" or "512MiB", got 10',
    );
    expect(problem({ gpus: 0, gpu_memory: "1GiB" })).toBe(
      "resources.gpu_memory: is set but resources.gpus is 0; set gpus (for example 0.25) or drop gpu_memory",
    );
  });
});

describe("out of GPU memory", () => {
  const resources = { gpus: 0.25, cpus: 0, gpuMemoryMiB: 4096 };
  const mig = oomDevice(
    "box",
    [101],
    [
      { index: 100, name: "NVIDIA A100", memoryTotalMiB: 19_968, mig: { parent: 0, profile: "3g.20gb" } },
      { index: 101, name: "NVIDIA A100", memoryTotalMiB: 9_984, mig: { parent: 0, profile: "1g.10gb" } },
    ],
  );

  it("names the device an attempt held, from its agent's advert", () => {
    expect(mig).toEqual({ memoryMiB: 9_984, label: "MIG instance 1g.10gb (GPU 0, device 1) of box (9984 MiB)" });
    expect(oomDevice("box", [0], [{ index: 0, name: "NVIDIA H100", memoryTotalMiB: 81_559 }])).toEqual({
      memoryMiB: 81_559,
      label: "GPU 0 of box (NVIDIA H100, 81559 MiB)",
    });
    expect(oomDevice("box", [0, 1], [])).toBeNull();
    expect(oomDevice("box", [0], undefined)).toBeNull();
  });

  it("after an out-of-memory attempt that shared its GPU, the next order asks for a whole GPU at least as big", () => {
    expect(orderResources(resources, false)).toEqual({ gpus: 0.25, cpus: 0, gpuMemoryMiB: 4096 });
    // The device it ran out on: a whole GPU with at least its memory (a smaller MIG instance will not do).
    expect(orderResources(resources, true, mig)).toEqual({ gpus: 1, cpus: 0, gpuMemoryMiB: 9_984 });
    // Not known (its agent's advert is gone): a whole GPU, at least what the spec declared.
    expect(orderResources(resources, true)).toEqual({ gpus: 1, cpus: 0, gpuMemoryMiB: 4096 });
    expect(orderResources({ ...resources, gpuMemoryMiB: null }, true)).toEqual({ gpus: 1, cpus: 0 });
    expect(orderResources({ gpus: 2, cpus: 0, gpuMemoryMiB: null }, true)).toEqual({ gpus: 2, cpus: 0 });
    const t = { trial: "t1", attempts: [{ status: "oom" }] } as never;
    expect(runsAlone(t)).toBe(true);
    expect(oomOutcome(resources, t, { attempt: 1, agent: "box", reason: "out of GPU memory" }, mig)).toEqual({
      kind: "alone",
      why: "t1 attempt 1 ran out of GPU memory on MIG instance 1g.10gb (GPU 0, device 1) of box (9984 MiB) while sharing it (0.25 of it); retrying alone on a whole GPU with at least 9984 MiB (no retry used)",
    });
  });

  it("one that ran out of memory alone fails, naming the device", () => {
    const alone = { trial: "t1", attempts: [{ status: "oom" }, { status: "oom" }] } as never;
    const ev = { attempt: 2, agent: "box", reason: "out of GPU memory (exit code 1): CUDA out of memory" };
    expect(oomOutcome(resources, alone, ev, mig)).toEqual({
      kind: "fail",
      reason:
        "ran out of GPU memory even alone on MIG instance 1g.10gb (GPU 0, device 1) of box (9984 MiB) (attempt 2 on box: out of GPU memory (exit code 1): CUDA out of memory); lower its batch size or model size, or run it on GPUs with more memory",
    });
    expect(oomOutcome(resources, alone, ev)).toMatchObject({
      reason: expect.stringMatching(/^ran out of GPU memory even alone on a whole GPU \(attempt 2 on box/),
    });
  });

  it("on whole GPUs it is an ordinary failure that uses a retry", () => {
    const whole = { trial: "t1", attempts: [{ status: "oom" }] } as never;
    expect(oomOutcome({ gpus: 1, cpus: 0, gpuMemoryMiB: null }, whole, { attempt: 1, agent: "b", reason: "x" })).toEqual({
      kind: "failure",
    });
    expect(oomUsesRetry({ gpus: 2, cpus: 0, gpuMemoryMiB: null })).toBe(true);
    expect(oomUsesRetry(resources)).toBe(false);
  });
});
