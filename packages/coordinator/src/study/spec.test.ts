import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  canonicalJson,
  compileSpec,
  generateTrials,
  loadSpec,
  parseSpec,
  SpecError,
  schedulerOptionsOf,
  specHash,
  specToInput,
  trialArgv,
} from "../index.js";
import { specContinuation } from "./spec.js";

const EXAMPLE = `
name: digits-asha                       # token rules from protocol (validToken)
command: /usr/bin/python3 train.py --lr {lr} --batch-size {batch_size} --epochs {max_t}
workdir: examples/digits                # relative to the agent's --workdir
env: { OMP_NUM_THREADS: "1" }
secret_env: [WANDB_API_KEY]
metric: { name: val_acc, mode: max }
search:
  algorithm: random
  samples: 27
  seed: 7
  space:
    lr: { loguniform: [1.0e-4, 1.0e-1] }
    batch_size: { choice: [32, 64, 128] }
    hidden: { randint: [32, 257] }
    dropout: { uniform: [0.0, 0.5] }
    optimizer: { grid: [sgd, adam] }
    momentum: { quniform: [0.5, 0.9, 0.1] }
    wd: { qloguniform: [1.0e-5, 1.0e-2, 1.0e-5] }
    noise: { randn: [0, 1] }
    seed_offset: 3
scheduler:
  type: asha
  time_attr: epoch
  grace_period: 1
  reduction_factor: 3
  max_t: 27
  brackets: 1
  stop_last_trials: true
early_stopping: { monitor: val_loss, mode: min, patience: 3, min_delta: 0.0 }
resources: { gpus: 1 }
max_concurrent: 8
retries: 2
`;

/** A spec document as tests poke at it: any field, any depth. */
// biome-ignore lint/suspicious/noExplicitAny: tests build deliberately wrong documents
type Doc = Record<string, any>;

/** A small valid spec as an object, to vary one field at a time. */
function base(): Doc {
  return {
    name: "s1",
    command: "python train.py --lr {lr} --epochs {max_t}",
    metric: { name: "val_acc", mode: "max" },
    search: { space: { lr: { loguniform: [1e-4, 1e-1] } } },
    scheduler: { type: "asha", max_t: 27, reduction_factor: 3 },
  };
}

function errorOf(input: unknown): SpecError {
  try {
    compileSpec(input);
  } catch (err) {
    if (err instanceof SpecError) return err;
    throw err;
  }
  throw new Error("expected a SpecError");
}

function tweak(change: (s: Doc) => void): SpecError {
  const s = base();
  change(s);
  return errorOf(s);
}

describe("parseSpec", () => {
  it("compiles the example spec with camelCase fields and defaults", () => {
    const spec = parseSpec(EXAMPLE, "digits-asha.yaml");
    expect(spec.name).toBe("digits-asha");
    expect(spec.argv).toEqual([
      "/usr/bin/python3",
      "train.py",
      "--lr",
      "{lr}",
      "--batch-size",
      "{batch_size}",
      "--epochs",
      "{max_t}",
    ]);
    expect(spec.workdir).toBe("examples/digits");
    expect(spec.env).toEqual({ OMP_NUM_THREADS: "1" });
    expect(spec.secretEnv).toEqual(["WANDB_API_KEY"]);
    expect(spec.metric).toEqual({ name: "val_acc", mode: "max" });
    expect(spec.search.algorithm).toBe("random");
    expect(spec.search.samples).toBe(27);
    expect(spec.search.seed).toBe(7);
    expect(spec.search.space.lr).toEqual({ kind: "loguniform", lower: 1e-4, upper: 1e-1 });
    expect(spec.search.space.optimizer).toEqual({ kind: "grid", values: ["sgd", "adam"] });
    expect(spec.search.space.seed_offset).toEqual({ kind: "constant", value: 3 });
    expect(spec.scheduler).toEqual({
      type: "asha",
      timeAttr: "epoch",
      gracePeriod: 1,
      reductionFactor: 3,
      maxT: 27,
      brackets: 1,
      stopLastTrials: true,
    });
    expect(spec.earlyStopping).toEqual({ monitor: "val_loss", mode: "min", patience: 3, minDelta: 0 });
    expect(spec.resources).toEqual({ gpus: 1, cpus: 0, gpuMemoryMiB: null });
    expect(spec.maxConcurrent).toBe(8);
    expect(spec.retries).toBe(2);
    expect(generateTrials(spec)).toHaveLength(54);
    expect(schedulerOptionsOf(spec)).toMatchObject({ type: "asha", mode: "max", maxT: 27 });
  });

  it("applies defaults to a minimal spec", () => {
    const spec = compileSpec(base());
    expect(spec.workdir).toBe(".");
    expect(spec.env).toEqual({});
    expect(spec.search).toMatchObject({ algorithm: "random", samples: 1, seed: 0 });
    expect(spec.scheduler).toMatchObject({ timeAttr: "epoch", gracePeriod: 1, brackets: 1, stopLastTrials: true });
    expect(spec.earlyStopping).toBeNull();
    expect(spec.resources).toEqual({ gpus: 1, cpus: 0, gpuMemoryMiB: null });
    expect(spec.maxConcurrent).toBeNull();
    expect(spec.retries).toBe(2);
  });

  it("reads JSON when the file name says so", () => {
    const spec = parseSpec(JSON.stringify(base()), "s1.json");
    expect(spec.name).toBe("s1");
    expect(() => parseSpec("{nope", "s1.json")).toThrow(/s1\.json: is not valid JSON/);
  });

  it("renders a trial's argv with parameters, max_t, trial and study", () => {
    const s = base();
    s.command = ["python", "train.py", "--lr={lr}", "--epochs", "{max_t}", "--name", "{study}-{trial}"];
    const spec = compileSpec(s);
    const [t] = generateTrials(spec);
    if (!t) throw new Error("no trial");
    expect(trialArgv(spec, t)).toEqual(["python", "train.py", `--lr=${t.params.lr}`, "--epochs", "27", "--name", "s1-t0001"]);
  });

  it("stringifies env values and defaults early stopping to the metric", () => {
    const s = base();
    s.env = { OMP_NUM_THREADS: 1, DEBUG: true };
    s.early_stopping = { patience: 2 };
    const spec = compileSpec(s);
    expect(spec.env).toEqual({ OMP_NUM_THREADS: "1", DEBUG: "true" });
    expect(spec.earlyStopping).toEqual({ monitor: "val_acc", mode: "max", patience: 2, minDelta: 0 });
  });

  it("hyperband defaults its brackets to bracket 0's rung count", () => {
    const s = base();
    s.scheduler = { type: "hyperband", max_t: 27, reduction_factor: 3 };
    expect(compileSpec(s).scheduler).toMatchObject({ type: "hyperband", brackets: 4 });
  });

  it("median and fifo need max_t only when the command uses {max_t}", () => {
    const s = base();
    s.scheduler = { type: "median" };
    expect(tweak((x) => (x.scheduler = { type: "median" })).message).toContain(
      "command: {max_t} needs scheduler.max_t, which the median scheduler here does not set",
    );
    s.command = "python train.py --lr {lr}";
    expect(compileSpec(s).scheduler).toEqual({
      type: "median",
      timeAttr: "epoch",
      gracePeriod: 1,
      minSamplesRequired: 3,
      maxT: null,
    });
    s.scheduler = { type: "fifo", time_attr: "step" };
    expect(compileSpec(s).scheduler).toEqual({ type: "fifo", timeAttr: "step", maxT: null });
  });
});

describe("spec errors name the field path and what is allowed", () => {
  it("unknown keys, at every level, with a suggestion", () => {
    expect(tweak((s) => (s.colour = "red")).problems).toEqual([
      {
        path: "colour",
        message:
          "unknown key; allowed here: name, command, workdir, env, secret_env, metric, search, scheduler, diverged, early_stopping, resources, packing, max_concurrent, retries, report_timeout, trial_timeout, budget, checkpoints",
      },
    ]);
    const e = tweak((s) => (s.scheduler.reduction = 3));
    expect(e.path).toBe("scheduler.reduction");
    expect(e.message).toContain('scheduler.reduction: unknown key; did you mean "reduction_factor"?');
    expect(tweak((s) => (s.metric.mod = "max")).message).toContain('metric.mod: unknown key; did you mean "mode"?');
    expect(tweak((s) => (s.search.sample = 3)).message).toContain('search.sample: unknown key; did you mean "samples"?');
    expect(tweak((s) => (s.resources = { gpu: 1 })).message).toContain('resources.gpu: unknown key; did you mean "gpus"?');
    expect(tweak((s) => (s.early_stopping = { patience: 1, patient: 2 })).path).toBe("early_stopping.patient");
    // keys valid for another scheduler type are unknown here
    expect(tweak((s) => (s.scheduler = { type: "fifo", reduction_factor: 3 })).message).toContain(
      "scheduler.reduction_factor: unknown key; allowed here: type, time_attr, max_t",
    );
  });

  it("missing required fields", () => {
    const e = errorOf({ name: "x" });
    expect(e.problems.map((p) => p.path)).toEqual(["command", "metric", "search"]);
    expect(e.message).toContain("command: is required (a string or a list)");
    expect(tweak((s) => delete s.metric.mode).message).toContain("metric.mode: is required; one of max, min");
  });

  it("wrong types and enumerations", () => {
    expect(tweak((s) => (s.metric.mode = "maxx")).message).toContain('metric.mode: must be one of max, min, got "maxx"');
    expect(tweak((s) => (s.scheduler.type = "ashaa")).message).toContain(
      'scheduler.type: must be one of asha, hyperband, promotion, pbt, curve, median, fifo, got "ashaa"',
    );
    expect(tweak((s) => (s.search.algorithm = "bayes")).message).toContain("search.algorithm: must be one of grid, random");
    expect(tweak((s) => (s.scheduler.max_t = "27")).message).toContain('scheduler.max_t: must be a number, got "27"');
    expect(tweak((s) => (s.search.samples = 2.5)).message).toContain("search.samples: must be an integer, got 2.5");
    expect(tweak((s) => (s.search.samples = 0)).message).toContain("search.samples: must be >= 1, got 0");
    expect(tweak((s) => (s.resources = { gpus: -1 })).message).toContain(
      "resources.gpus: must be 0 (a CPU slot), a share of one GPU such as 0.25, or a whole number of GPUs such as 1, got -1",
    );
    expect(tweak((s) => (s.retries = -1)).message).toContain("retries: must be >= 0, got -1");
    expect(tweak((s) => (s.max_concurrent = 0)).message).toContain("max_concurrent: must be >= 1, got 0");
    expect(tweak((s) => (s.scheduler.stop_last_trials = "yes")).message).toContain(
      'scheduler.stop_last_trials: must be true or false, got "yes"',
    );
  });

  it("scheduler construction rules", () => {
    expect(tweak((s) => (s.scheduler.reduction_factor = 1)).message).toBe("scheduler.reduction_factor: must be > 1, got 1");
    expect(tweak((s) => (s.scheduler.max_t = 0)).message).toBe("scheduler.max_t: must be > 0, got 0");
    expect(tweak((s) => (s.scheduler.grace_period = 0)).message).toBe("scheduler.grace_period: must be > 0, got 0");
    expect(tweak((s) => (s.scheduler.grace_period = 30)).message).toBe("scheduler.grace_period: must be <= max_t (27), got 30");
    expect(tweak((s) => (s.scheduler.brackets = 0)).message).toBe("scheduler.brackets: must be an integer >= 1, got 0");
    expect(tweak((s) => (s.scheduler.brackets = 1.5)).message).toBe("scheduler.brackets: must be an integer >= 1, got 1.5");
    expect(tweak((s) => (s.scheduler = { type: "median", min_samples_required: 0, max_t: 5 })).message).toBe(
      "scheduler.min_samples_required: must be an integer >= 1, got 0",
    );
  });

  it("lists several problems of one pass in one error", () => {
    const e = tweak((s) => {
      s.scheduler.reduction_factor = 1;
      s.scheduler.brackets = 0;
      s.name = "a b";
    });
    expect(e.problems.map((p) => p.path)).toEqual(["name", "scheduler.reduction_factor", "scheduler.brackets"]);
    expect(e.message).toMatch(
      /^3 problems in the study spec: name: .*; scheduler\.reduction_factor: must be > 1, got 1; scheduler\.brackets/,
    );
  });

  it("name must be a token", () => {
    expect(tweak((s) => (s.name = "digits asha")).message).toBe(
      'name: "digits asha" contains whitespace; use letters, digits, "-" and "_" only (at most 64 characters)',
    );
    expect(tweak((s) => (s.name = "a.b")).path).toBe("name");
  });

  it("command placeholders must be space parameters or max_t, trial, study", () => {
    expect(tweak((s) => (s.command = "python train.py --lr {lrr}")).message).toBe(
      "command: {lrr} is not a search.space parameter; use one of lr, or max_t, trial, study",
    );
    expect(tweak((s) => (s.command = "python 'train.py")).message).toContain("command: unclosed ' quote");
    expect(tweak((s) => (s.command = "   ")).path).toBe("command");
    expect(tweak((s) => (s.command = ["", "x"])).path).toBe("command[0]");
  });

  it("search space entries", () => {
    expect(tweak((s) => (s.search.space.lr = { logunifrom: [1, 2] })).message).toBe(
      'search.space.lr: unknown distribution "logunifrom"; use one of uniform, quniform, loguniform, qloguniform, randint, randn, choice, grid',
    );
    expect(tweak((s) => (s.search.space.lr = { loguniform: [0, 1] })).message).toBe(
      "search.space.lr.loguniform: lower must be > 0 for a log scale, got 0",
    );
    expect(tweak((s) => (s.search.space.h = { randint: [32.5, 64] })).path).toBe("search.space.h.randint");
    expect(tweak((s) => (s.search.space.b = { choice: [] })).path).toBe("search.space.b.choice");
    expect(tweak((s) => (s.search.space.b = [1, 2])).message).toContain("search.space.b: a list is not a value");
    expect(tweak((s) => (s.search.space["batch-size"] = 3)).message).toContain(
      "search.space.batch-size: is not a usable parameter name",
    );
    expect(tweak((s) => (s.search.space.trial = 3)).message).toContain("search.space.trial: is reserved");
  });

  it("grid search takes only enumerable values", () => {
    const e = tweak((s) => (s.search.algorithm = "grid"));
    expect(e.message).toBe(
      "search.space.lr: loguniform needs search.algorithm: random; a grid search takes grid, choice or plain values",
    );
  });

  it("tpe and bohb: startup_trials only for them, choice instead of grid, bohb needs rungs", () => {
    const tpe = compileSpec({ ...base(), search: { ...base().search, algorithm: "tpe", samples: 30 } });
    expect(tpe.search).toMatchObject({ algorithm: "tpe", startupTrials: 10 });
    expect(compileSpec(JSON.parse(JSON.stringify(specToInput(tpe))))).toEqual(tpe);
    expect(
      compileSpec({ ...base(), search: { ...base().search, algorithm: "bohb", startup_trials: 4 } }).search.startupTrials,
    ).toBe(4);
    expect("startupTrials" in compileSpec(base()).search).toBe(false);
    expect(tweak((s) => (s.search.startup_trials = 5)).message).toBe(
      "search.startup_trials: applies to search.algorithm tpe or bohb (the random draws before the model is used), not random",
    );
    expect(
      tweak((s) => {
        s.search.algorithm = "tpe";
        s.search.space.opt = { grid: ["sgd", "adam"] };
      }).message,
    ).toBe('search.space.opt: grid is not sampled by tpe: write { choice: ["sgd","adam"] } and the model picks among the values');
    expect(
      tweak((s) => {
        s.search.algorithm = "bohb";
        s.scheduler = { type: "fifo", max_t: 9 };
      }).message,
    ).toBe(
      "search.algorithm: bohb learns from the results at the scheduler's rungs, and the fifo scheduler has none; use scheduler type asha, hyperband, promotion or curve, or search.algorithm: tpe",
    );
    expect(
      tweak((s) => {
        s.search.algorithm = "tpe";
        s.scheduler = { type: "pbt", max_t: 9, hyperparam_mutations: ["lr"] };
      }).message,
    ).toBe(
      "search.algorithm: tpe learns which parameters give which results, and pbt changes a trial's parameters while it trains; use search.algorithm: random with pbt",
    );
  });

  it("scheduler curve: defaults, its own options and their rules", () => {
    const spec = compileSpec({ ...base(), scheduler: { type: "curve", max_t: 27 } });
    expect(spec.scheduler).toMatchObject({
      type: "curve",
      gracePeriod: 1,
      reductionFactor: 3,
      maxT: 27,
      probability: 0.01,
      topK: 1,
    });
    expect(compileSpec(JSON.parse(JSON.stringify(specToInput(spec))))).toEqual(spec);
    expect(tweak((s) => (s.scheduler = { type: "curve", max_t: 27, probability: 1 })).message).toBe(
      "scheduler.probability: must be in (0, 1), got 1",
    );
    expect(tweak((s) => (s.scheduler = { type: "curve", max_t: 27, top_k: 0 })).message).toBe(
      "scheduler.top_k: must be an integer >= 1, got 0",
    );
    expect(tweak((s) => (s.scheduler = { type: "asha", max_t: 27, probability: 0.1 })).message).toContain(
      "scheduler.probability: unknown key; allowed here: type, time_attr, max_t, grace_period, reduction_factor",
    );
  });

  it("refuses a study that would create too many trials", () => {
    const e = tweak((s) => {
      s.search.samples = 1000;
      s.search.space.a = { grid: Array.from({ length: 200 }, (_, i) => i) };
    });
    expect(e.message).toBe("search: would create 200000 trials; at most 100000 (check samples and the grid sizes)");
  });

  it("early stopping needs a mode when it monitors another metric", () => {
    expect(tweak((s) => (s.early_stopping = { monitor: "val_loss", patience: 3 })).message).toBe(
      "early_stopping.mode: is required (max or min) when monitor (val_loss) is not metric.name (val_acc)",
    );
    expect(tweak((s) => (s.early_stopping = { patience: 0 })).message).toBe("early_stopping.patience: must be >= 1, got 0");
    expect(tweak((s) => (s.early_stopping = { patience: 1, min_delta: -1 })).path).toBe("early_stopping.min_delta");
  });

  it("workdir, env and secret_env", () => {
    expect(tweak((s) => (s.workdir = "/abs")).message).toContain("workdir: must be a relative path");
    expect(tweak((s) => (s.workdir = "a/../../b")).message).toContain(
      'workdir: must stay inside the agent\'s --workdir (no "..")',
    );
    expect(tweak((s) => (s.env = { "1BAD": "x" })).path).toBe("env.1BAD");
    expect(tweak((s) => (s.env = { CUDA_VISIBLE_DEVICES: "0" })).message).toContain(
      "env.CUDA_VISIBLE_DEVICES: is set by the agent",
    );
    expect(tweak((s) => (s.env = { A: ["x"] })).message).toContain(
      "env.A: must be a string, a number or true or false, got a list",
    );
    expect(tweak((s) => (s.secret_env = ["OK", "NOT OK"])).path).toBe("secret_env[1]");
  });

  it("documents that are not a mapping, invalid YAML and duplicate keys", () => {
    expect(() => parseSpec("", "s.yaml")).toThrow(
      "s.yaml: is empty; a study spec needs name, command, metric, search and scheduler",
    );
    expect(() => parseSpec("- a\n- b\n", "s.yaml")).toThrow("s.yaml: must be a mapping of study settings");
    expect(() => parseSpec("name: a\nname: b\n", "s.yaml")).toThrow(
      /s\.yaml: is not valid YAML: Map keys must be unique at line 2/,
    );
    expect(() => parseSpec("name: [a\n", "s.yaml")).toThrow(/is not valid YAML/);
    const e = (() => {
      try {
        parseSpec("name: 1\n", "s.yaml");
      } catch (err) {
        return err as SpecError;
      }
    })();
    expect(e).toBeInstanceOf(SpecError);
    expect(e?.file).toBe("s.yaml");
    expect(e?.name).toBe("SpecError");
  });
});

describe("loadSpec", () => {
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "rung-spec-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads a YAML file and names the file in errors", async () => {
    const path = join(dir, "digits.yaml");
    await writeFile(path, EXAMPLE);
    expect((await loadSpec(path)).name).toBe("digits-asha");
    await writeFile(path, EXAMPLE.replace("reduction_factor: 3", "reduction_factor: 1"));
    await expect(loadSpec(path)).rejects.toThrow(`${path}: scheduler.reduction_factor: must be > 1, got 1`);
    await expect(loadSpec(join(dir, "missing.yaml"))).rejects.toThrow(/missing\.yaml: cannot read the study spec: no such file/);
  });
});

describe("specHash and specToInput", () => {
  it("hashes the compiled spec: key order, comments and spelled-out defaults do not matter", () => {
    const a = parseSpec(EXAMPLE);
    const reordered = parseSpec(
      EXAMPLE.replace("metric: { name: val_acc, mode: max }", "metric: { mode: max, name: val_acc }  # moved").replace(
        "retries: 2",
        "retries: 2   # a comment\n\n",
      ),
    );
    expect(specHash(reordered)).toBe(specHash(a));
    const explicit = compileSpec({ ...base(), workdir: ".", retries: 2, resources: { gpus: 1, cpus: 0 } });
    expect(specHash(explicit)).toBe(specHash(compileSpec(base())));
    expect(specHash(a)).toMatch(/^[0-9a-f]{64}$/);
  });

  it("keeps the hash a study was recorded with before budget and gpu_memory existed", () => {
    // Computed with the code of commit 9a5ccea: a spec without budget or gpu_memory must hash the same,
    // or `rung study run` refuses to resume every study recorded before them.
    expect(specHash(parseSpec(EXAMPLE))).toBe("1c12fd1a09d2b5812146470d3d4d6cfc65bc8f2fdd099ed13086edcf8fd658e4");
    const limited = compileSpec({
      name: "s1",
      command: "python train.py --lr {lr}",
      metric: { name: "loss", mode: "min" },
      search: { samples: 4, space: { lr: { loguniform: [0.001, 0.1] } } },
      scheduler: { type: "asha", max_t: 9 },
      resources: { gpus: 2, cpus: 4 },
      report_timeout: "10m",
      checkpoints: { keep: 3 },
    });
    expect(specHash(limited)).toBe("9f13d141ae0a1b8435118aed9e41248b0fc608459f217c34a4233d6eccf2eb9a");
    const withMemory = compileSpec({ ...base(), resources: { gpus: 0.5, gpu_memory: "10GiB" } });
    expect(specHash(withMemory)).not.toBe(specHash(compileSpec({ ...base(), resources: { gpus: 0.5 } })));
  });

  it("continues a study whose samples or budget grew, and no other change", () => {
    const budgeted = (b: Doc | undefined, samples = 2) =>
      compileSpec({ ...base(), search: { ...base().search, samples }, ...(b ? { budget: b } : {}) });
    const was = budgeted({ gpu_hours: 1, cost: 5 });
    const stored = { hash: specHash(was), samples: 2, budget: was.budget };
    expect(specContinuation(stored, was)).toBe("same");
    expect(specContinuation(stored, budgeted({ gpu_hours: 2, cost: 5 }))).toBe("extended");
    expect(specContinuation(stored, budgeted({ gpu_hours: 2, cost: 5 }, 4))).toBe("extended");
    expect(specContinuation(stored, budgeted({ gpu_hours: 1 }))).toBe("extended"); // the cost limit dropped
    expect(specContinuation(stored, budgeted(undefined))).toBe("extended");
    expect(specContinuation(stored, budgeted({ gpu_hours: 0.5, cost: 5 }))).toEqual({
      changed: "budget.gpu_hours can only grow (the study has 1, the spec asks for 0.5)",
    });
    const none = budgeted(undefined);
    const storedNone = { hash: specHash(none), samples: 2, budget: null };
    expect(specContinuation(storedNone, budgeted({ cost: 5 }))).toEqual({
      changed:
        "budget.cost can only grow, and the study was started without it; drop it, or delete the study to start again with it",
    });
    // Without the stored budget a changed budget is a changed spec.
    expect(specContinuation({ hash: stored.hash, samples: 2 }, budgeted({ gpu_hours: 2, cost: 5 }))).toEqual({
      changed: "the spec differs from the one the study was started with",
    });
    expect(specContinuation(stored, { ...budgeted({ gpu_hours: 2, cost: 5 }), retries: 5 })).toEqual({
      changed: "the spec differs from the one the study was started with",
    });
  });

  it("changes when anything that matters changes", () => {
    const a = compileSpec(base());
    const b = compileSpec({ ...base(), search: { ...base().search, seed: 1 } });
    expect(specHash(b)).not.toBe(specHash(a));
  });

  it("round-trips: compileSpec(specToInput(spec)) gives the spec back", () => {
    for (const spec of [parseSpec(EXAMPLE), compileSpec({ ...base(), scheduler: { type: "fifo" }, command: "python x.py" })]) {
      const again = compileSpec(JSON.parse(JSON.stringify(specToInput(spec))));
      expect(again).toEqual(spec);
      expect(specHash(again)).toBe(specHash(spec));
    }
  });

  it("canonicalJson sorts keys at every level", () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { z: 1, y: 2 }], c: null } })).toBe('{"a":{"c":null,"d":[2,{"y":2,"z":1}]},"b":1}');
    expect(() => canonicalJson({ x: Number.NaN })).toThrow(RangeError);
  });
});
