import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "@rung/protocol";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { type AgentOptions, compileAgentOptions } from "./options.js";
import { trialEnv } from "./trial-runner.js";
import { isPerTrialEnv, sharedEnv, WarmPool, type WarmProcess } from "./warm-pool.js";

const PYTHON = "/usr/bin/python3";
const dir = mkdtempSync(join(tmpdir(), "rung-warm-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const pools: WarmPool[] = [];
afterEach(async () => {
  for (const p of pools.splice(0)) await p.close();
});

function pool(preload: string[] = ["json"], spares = 2, python = PYTHON): WarmPool {
  const p = new WarmPool({
    python,
    preload,
    spares,
    slots: 1,
    socketPath: join(dir, `w${pools.length}.sock`),
    log: createLogger({ level: "silent" }),
  });
  pools.push(p);
  return p;
}

/** The environment trialEnv would give a trial of this id on these GPUs. */
function envOf(trial: string, gpus: number[]): Record<string, string> {
  return trialEnv({
    order: { study: "s", trial, params: { lr: 0.1 }, env: { STUDY_VAR: "x" } } as never,
    attempt: 1,
    gpus,
    checkpointDir: join(dir, "ck", trial),
    reportPath: join(dir, `${trial}.sock`),
  });
}

async function until(what: string, f: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Runs a warm process to its end; returns its output and exit. */
async function run(w: WarmProcess, argv: string[], env: Record<string, string>) {
  const out: Buffer[] = [w.preamble];
  w.term.onData((d) => out.push(d as unknown as Buffer));
  w.start({ argv, env, cwd: dir });
  const exit = await w.exited;
  await new Promise((r) => setTimeout(r, 50));
  return { exit, text: Buffer.concat(out).toString("utf8") };
}

const SCRIPT = join(dir, "trial.py");
writeFileSync(
  SCRIPT,
  `import json, os, sys
print("argv", json.dumps(sys.argv))
print("env", json.dumps({k: os.environ.get(k) for k in ("RUNG_TRIAL", "CUDA_VISIBLE_DEVICES", "STUDY_VAR")}))
print("main", __name__, "path0", sys.path[0] == os.path.dirname(os.path.realpath(__file__)))
print("cwd", os.getcwd())
print("json preloaded", "json" in sys.modules)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
`,
);

describe("warm pool", () => {
  it("compiles --warm-python and --warm-preload", () => {
    const warm = (w: AgentOptions["warm"]) => compileAgentOptions({ insecure: true, warm: w }).warm;
    expect(warm(null)).toBeNull();
    expect(warm({ python: PYTHON, preload: " torch, sklearn ,torch.nn" })).toEqual({
      python: PYTHON,
      preload: ["torch", "sklearn", "torch.nn"],
      spares: null,
    });
    expect(warm({ python: PYTHON, spares: "3" })).toEqual({ python: PYTHON, preload: [], spares: 3 });
    expect(() => warm({ python: PYTHON, preload: "torch;rm -rf /" })).toThrow(/--warm-preload: expects Python module names/);
    expect(() => warm({ python: "", preload: "torch" })).toThrow(/--warm-preload: needs --warm-python/);
    expect(() => warm({ python: PYTHON, spares: 0 })).toThrow(/--warm-spares/);
  });

  it("splits a trial's environment into the shared part and the per-trial part", () => {
    expect(isPerTrialEnv("RUNG_TRIAL")).toBe(true);
    expect(isPerTrialEnv("CUDA_VISIBLE_DEVICES")).toBe(true);
    expect(isPerTrialEnv("CUDA_DEVICE_ORDER")).toBe(false);
    const a = sharedEnv(envOf("t1", [0]));
    const b = sharedEnv(envOf("t2", [1]));
    expect(a).toEqual(b);
    expect(a.STUDY_VAR).toBe("x");
    expect(a.RUNG_TRIAL).toBeUndefined();
  });

  it("starts cold for a new directory, then hands each waiting interpreter to one trial only", async () => {
    const p = pool();
    await p.start();
    const req = (trial: string, gpus: number[]) => ({
      program: PYTHON,
      argv: [PYTHON, "trial.py", "3"],
      cwd: dir,
      env: envOf(trial, gpus),
    });
    expect(p.take(req("t0", [0]))).toBeNull(); // the first of its kind: interpreters start now
    await until("two interpreters ready", () => p.stats.started === 2 && p.waiting === 2);
    // Ready means connected: wait until a take succeeds.
    let w1: WarmProcess | null = null;
    await until("a ready interpreter", () => {
      w1 = p.take(req("t1", [0]));
      return w1 !== null;
    });
    const first = w1 as unknown as WarmProcess;
    let w2: WarmProcess | null = null;
    await until("a second ready interpreter", () => {
      w2 = p.take(req("t2", [1]));
      return w2 !== null;
    });
    const second = w2 as unknown as WarmProcess;
    expect(second.pid).not.toBe(first.pid);
    const [r1, r2] = await Promise.all([
      run(first, ["trial.py", "3"], envOf("t1", [0])),
      run(second, ["trial.py", "0"], envOf("t2", [1])),
    ]);
    expect(r1.exit.exitCode).toBe(3);
    expect(r2.exit.exitCode).toBe(0);
    expect(r1.text).toContain('argv ["trial.py", "3"]');
    expect(r1.text).toContain('env {"RUNG_TRIAL": "t1", "CUDA_VISIBLE_DEVICES": "0", "STUDY_VAR": "x"}');
    expect(r2.text).toContain('env {"RUNG_TRIAL": "t2", "CUDA_VISIBLE_DEVICES": "1", "STUDY_VAR": "x"}');
    expect(r1.text).toContain("main __main__ path0 True");
    expect(r1.text).toContain(`cwd ${dir}`);
    expect(r1.text).toContain("json preloaded True");
    // Replacements start in the background; a taken one is never offered again.
    await until("replacements", () => p.stats.started === 4);
    const later = await (async () => {
      let w: WarmProcess | null = null;
      await until("a replacement", () => {
        w = p.take(req("t3", [0]));
        return w !== null;
      });
      return w as unknown as WarmProcess;
    })();
    expect([first.pid, second.pid]).not.toContain(later.pid);
    const r3 = await run(later, ["trial.py", "0"], envOf("t3", [0]));
    expect(r3.exit.exitCode).toBe(0);
  });

  it("an uncaught exception exits 1 with the script's traceback, as a cold run does", async () => {
    writeFileSync(join(dir, "boom.py"), "def f():\n    raise ValueError('boom')\nf()\n");
    const p = pool(["json"], 1);
    await p.start();
    const req = { program: PYTHON, argv: [PYTHON, "boom.py"], cwd: dir, env: envOf("x", []) };
    p.take(req);
    let w: WarmProcess | null = null;
    await until("a ready interpreter", () => {
      w = p.take(req);
      return w !== null;
    });
    const r = await run(w as unknown as WarmProcess, ["boom.py"], envOf("x", []));
    expect(r.exit.exitCode).toBe(1);
    expect(r.text).toContain("ValueError: boom");
    expect(r.text).toContain('boom.py", line 2, in f');
    expect(r.text).not.toContain("rung_warm.py");
  });

  it("starts cold when the command, the directory or the shared environment differ", async () => {
    const p = pool();
    await p.start();
    expect(p.take({ program: "/bin/sh", argv: ["sh", "x.py"], cwd: dir, env: envOf("a", []) })).toBeNull();
    expect(p.take({ program: PYTHON, argv: [PYTHON, "-m", "x"], cwd: dir, env: envOf("a", []) })).toBeNull();
    expect(p.stats.started).toBe(0);
    p.take({ program: PYTHON, argv: [PYTHON, "trial.py"], cwd: dir, env: envOf("a", []) });
    await until("ready", () => p.waiting === 2);
    // Same directory, another study environment: another set, so cold again.
    const other = { ...envOf("b", []), STUDY_VAR: "y" };
    expect(p.take({ program: PYTHON, argv: [PYTHON, "trial.py"], cwd: dir, env: other })).toBeNull();
  });

  it("gives up on a preload that cannot be imported, and the trials start cold", async () => {
    const p = pool(["no_such_module_xyz"], 1);
    await p.start();
    const req = { program: PYTHON, argv: [PYTHON, "trial.py"], cwd: dir, env: envOf("a", []) };
    expect(p.take(req)).toBeNull();
    await until("the failure", () => p.stats.failed === 1);
    expect(p.givenUp).toEqual([expect.stringContaining("No module named 'no_such_module_xyz'")]);
    expect(p.take(req)).toBeNull();
    expect(p.waiting).toBe(0);
  });

  it("refuses to serve when the preload loaded the CUDA driver (a trial's CUDA_VISIBLE_DEVICES could not apply)", async () => {
    // A stand-in for a module that initialises CUDA on import: it maps a library named libcuda.so.1.
    copyFileSync(realpathSync("/lib/x86_64-linux-gnu/libm.so.6"), join(dir, "libcuda.so.1"));
    writeFileSync(join(dir, "grabs_cuda.py"), `import ctypes, os\nctypes.CDLL(os.path.join("${dir}", "libcuda.so.1"))\n`);
    const p = pool(["grabs_cuda"], 1);
    await p.start();
    // grabs_cuda.py lies in the trials' directory: preload modules are found there, as a script's imports are.
    const req = { program: PYTHON, argv: [PYTHON, "trial.py"], cwd: dir, env: envOf("a", []) };
    expect(p.take(req)).toBeNull();
    await until("the refusal", () => p.stats.failed === 1);
    expect(p.take(req)).toBeNull();
    expect(p.givenUp).toEqual([expect.stringContaining("loaded the CUDA driver")]);
    expect(p.ready).toBe(0);
    expect(p.stats.started).toBe(1);
  });

  it("starts a virtual environment's python through its own path, so the preload and the trial see the environment's packages", async () => {
    // A venv's python is a symlink to the system one: started through its target it would not find the
    // environment (the packages of a machine's PyTorch often live in one).
    const venv = join(dir, "venv");
    execFileSync(PYTHON, ["-m", "venv", "--without-pip", venv]);
    const python = join(venv, "bin", "python3");
    const site = execFileSync(python, ["-c", "import site; print(site.getsitepackages()[0])"], { encoding: "utf8" }).trim();
    mkdirSync(site, { recursive: true });
    writeFileSync(join(site, "only_in_venv.py"), "WHERE = 'venv'\n");
    writeFileSync(join(dir, "venv_trial.py"), "import sys, only_in_venv\nprint('prefix', sys.prefix, only_in_venv.WHERE)\n");
    const p = pool(["only_in_venv"], 1, python);
    await p.start();
    const req = { program: python, argv: [python, "venv_trial.py"], cwd: dir, env: envOf("v", []) };
    expect(p.take(req)).toBeNull();
    let w: WarmProcess | null = null;
    await until("a ready interpreter", () => {
      w = p.take(req);
      return w !== null;
    });
    expect(p.stats.failed).toBe(0);
    const r = await run(w as unknown as WarmProcess, ["venv_trial.py"], envOf("v", []));
    expect(r.exit.exitCode).toBe(0);
    expect(r.text).toContain(`prefix ${venv} venv`);
    // The system python is another environment, though the same file: its trials start cold.
    expect(p.take({ ...req, program: PYTHON, argv: [PYTHON, "venv_trial.py"] })).toBeNull();
    // The venv's other name for its python is the same interpreter in the same environment.
    const other = join(venv, "bin", "python");
    let w2: WarmProcess | null = null;
    await until("another ready interpreter", () => {
      w2 = p.take({ ...req, program: other, argv: [other, "venv_trial.py"] });
      return w2 !== null;
    });
    const r2 = await run(w2 as unknown as WarmProcess, ["venv_trial.py"], envOf("v2", []));
    expect(r2.text).toContain(`prefix ${venv} venv`);
  });

  it("keeps nothing running after close", async () => {
    const p = pool(["json"], 2);
    await p.start();
    p.take({ program: PYTHON, argv: [PYTHON, "trial.py"], cwd: dir, env: envOf("a", []) });
    await until("started", () => p.stats.started === 2);
    // close() waits for their exits: nothing is left for the next test.
    await p.close();
    expect(p.waiting).toBe(0);
  });
});
