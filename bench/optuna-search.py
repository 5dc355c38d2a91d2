#!/usr/bin/env python3
"""Optuna's side of benchmark 5 (search efficiency on the TaskSet curves); run by bench/src/search-efficiency.ts.

The same simulated-time loop as Rung's side: W workers; one curve point = one unit of GPU time; each unit
of wall time every busy worker advances its trial by one point, in worker order; a free worker asks for the
next trial at once and trains the next configuration of the seed's draw order (the same order Rung's side
uses). Per point: trial.report(loss, t), then trial.should_prune(); pruned -> tell(PRUNED); point 50 ->
tell(loss) (a NaN final loss is told as FAIL). In-memory storage, RandomSampler (no parameter is suggested:
the configuration comes from the draw order, so only the pruner differs between methods).

Input: a JSON file {files, seeds, orders, workers, maxT, targets}. Output (stdout): {version, runs: [...]}.
"""
import json
import math
import multiprocessing
import sys
import warnings

import optuna
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore")


def load_valid(path):
    with open(path) as f:
        data = json.load(f)  # Python's json accepts the bare NaN tokens
    return [[float(x) for x in c["valid"]["loss"]] for c in data]


def make_pruner(name, max_t):
    if name == "optuna-sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3, min_early_stopping_rate=0)
    if name == "optuna-hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_t, reduction_factor=3)
    raise ValueError(name)


def simulate(valid, order, workers, pruner_name, seed, max_t, targets):
    finals = [v[max_t] for v in valid if not math.isnan(v[max_t])]
    best = min(finals)
    goals = [best * (1 + q) for q in targets]
    study = optuna.create_study(
        study_name=f"taskset-{seed}",
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=make_pruner(pruner_name, max_t),
    )
    slots = [None] * workers
    nxt = 0
    clock = 0
    gpu = 0
    gpu_on_nan = 0
    completed = 0
    hits = [None] * len(goals)

    def take(w):
        nonlocal nxt
        if nxt >= len(order):
            slots[w] = None
            return
        cfg = order[nxt]
        nxt += 1
        slots[w] = [cfg, 0, study.ask()]

    for w in range(workers):
        take(w)
    while any(s is not None for s in slots):
        clock += 1
        freed = []
        hit_now = [False] * len(goals)
        for w in range(workers):
            s = slots[w]
            if s is None:
                continue
            s[1] += 1
            t = s[1]
            gpu += 1
            curve = valid[s[0]]
            if math.isnan(curve[max_t]):
                gpu_on_nan += 1
            loss = curve[t]
            trial = s[2]
            if t >= max_t:
                if math.isnan(loss):
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    study.tell(trial, loss)
                completed += 1
                for i, g in enumerate(goals):
                    if hits[i] is None and loss <= g:
                        hit_now[i] = True
                freed.append(w)
                continue
            trial.report(loss, t)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                freed.append(w)
        for i, h in enumerate(hit_now):
            if h and hits[i] is None:
                hits[i] = {"gpu": gpu, "wall": clock}
        if all(h is not None for h in hits):
            break
        for w in freed:
            take(w)
    return {"hits": hits, "gpu": gpu, "wall": clock, "trials": nxt, "completed": completed, "gpuOnNaN": gpu_on_nan}


_valid_cache = {}


def job(args):
    path, pruner, seed, order, workers, max_t, targets = args
    if path not in _valid_cache:
        _valid_cache[path] = load_valid(path)
    r = simulate(_valid_cache[path], order, workers, pruner, seed, max_t, targets)
    name = path.rsplit("/", 1)[-1][: -len(".json")]
    r.update({"file": name, "pruner": pruner, "seed": seed})
    return r


def main():
    spec = json.load(open(sys.argv[1]))
    jobs_n = int(sys.argv[sys.argv.index("--jobs") + 1]) if "--jobs" in sys.argv else 1
    jobs = [
        (path, pruner, seed, order, spec["workers"], spec["maxT"], spec["targets"])
        for path in spec["files"]
        for pruner in ("optuna-sha", "optuna-hyperband")
        for seed, order in zip(spec["seeds"], spec["orders"])
    ]
    runs = []
    with multiprocessing.Pool(jobs_n) as pool:
        for i, r in enumerate(pool.imap_unordered(job, jobs, chunksize=1)):
            runs.append(r)
            if (i + 1) % 10 == 0 or i + 1 == len(jobs):
                print(f"progress {i + 1}/{len(jobs)}", file=sys.stderr, flush=True)
    json.dump({"version": optuna.__version__, "runs": runs}, sys.stdout)


if __name__ == "__main__":
    main()
