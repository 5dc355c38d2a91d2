#!/usr/bin/env python3
"""Optuna's side of benchmark 5 (search efficiency on the TaskSet curves); run by bench/src/search-efficiency.ts.

The same simulated-time loop as Rung's side: W workers; one curve point = one unit of GPU time; each unit
of wall time every busy worker advances its trial by one point, in worker order; a free worker asks for the
next trial at once and trains the next configuration of the seed's draw order (the same order Rung's side
uses). Per point: trial.report(loss, t), then trial.should_prune(); pruned -> tell(PRUNED); point 50 ->
tell(loss) (a NaN final loss is told as FAIL). In-memory storage. With the pruners alone (optuna-sha,
optuna-hyperband) the sampler is RandomSampler and no parameter is suggested: the configuration comes from
the draw order, so only the pruner differs from Rung's side. With TPE (optuna-tpe-*), TPESampler(multivariate,
constant_liar) suggests every hyperparameter of the file and the suggestion is mapped to the nearest
configuration not drawn yet, in the same unit cube as Rung's side (bench/src/tabular-search.ts: log scale
for a positive hyperparameter spanning two decades or more, else linear).

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


def load_file(path):
    with open(path) as f:
        data = json.load(f)  # Python's json accepts the bare NaN tokens
    valid = [[float(x) for x in c["valid"]["loss"]] for c in data]
    return valid, tabular_space([c["hp"] for c in data])


def tabular_space(configs):
    keys = sorted(configs[0].keys())
    space = {}
    unit = [[0.0] * len(keys) for _ in configs]
    for i, k in enumerate(keys):
        xs = [c[k] for c in configs]
        lo, hi = min(xs), max(xs)
        upper = hi + abs(hi) * 1e-9 + 2.220446049250313e-16
        log = lo > 0 and hi / lo >= 100
        space[k] = (lo, upper, log)
        for j, x in enumerate(xs):
            unit[j][i] = (math.log(x) - math.log(lo)) / (math.log(upper) - math.log(lo)) if log else (x - lo) / (upper - lo)
    return {"keys": keys, "space": space, "unit": unit}


def nearest_unused(tab, params, used):
    target = []
    for k in tab["keys"]:
        lo, upper, log = tab["space"][k]
        v = params[k]
        target.append((math.log(v) - math.log(lo)) / (math.log(upper) - math.log(lo)) if log else (v - lo) / (upper - lo))
    best, best_d = None, math.inf
    for c, u in enumerate(tab["unit"]):
        if used[c]:
            continue
        d = sum((a - b) ** 2 for a, b in zip(u, target))
        if d < best_d:
            best, best_d = c, d
    return best


def make_pruner(name, max_t):
    if name.endswith("sha"):
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3, min_early_stopping_rate=0)
    if name.endswith("hyperband"):
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_t, reduction_factor=3)
    if name.endswith("median"):
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    raise ValueError(name)


def make_sampler(name, seed):
    if name.startswith("optuna-tpe"):
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=seed)


def simulate(valid, tab, order, workers, pruner_name, seed, max_t, targets):
    finals = [v[max_t] for v in valid if not math.isnan(v[max_t])]
    best = min(finals)
    goals = [best * (1 + q) for q in targets]
    study = optuna.create_study(
        study_name=f"taskset-{seed}",
        direction="minimize",
        sampler=make_sampler(pruner_name, seed),
        pruner=make_pruner(pruner_name, max_t),
    )
    slots = [None] * workers
    nxt = 0
    clock = 0
    gpu = 0
    gpu_on_nan = 0
    completed = 0
    hits = [None] * len(goals)

    used = [False] * len(valid)
    model = pruner_name.startswith("optuna-tpe")

    def take(w):
        nonlocal nxt
        if nxt >= len(order):
            slots[w] = None
            return
        trial = study.ask()
        if model:
            params = {}
            for k in tab["keys"]:
                lo, upper, log = tab["space"][k]
                params[k] = trial.suggest_float(k, lo, upper, log=log)
            cfg = nearest_unused(tab, params, used)
        else:
            cfg = order[nxt]
        used[cfg] = True
        nxt += 1
        slots[w] = [cfg, 0, trial]

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


_file_cache = {}


def job(args):
    path, pruner, seed, order, workers, max_t, targets = args
    if path not in _file_cache:
        _file_cache[path] = load_file(path)
    valid, tab = _file_cache[path]
    r = simulate(valid, tab, order, workers, pruner, seed, max_t, targets)
    name = path.rsplit("/", 1)[-1][: -len(".json")]
    r.update({"file": name, "pruner": pruner, "seed": seed})
    return r


def main():
    spec = json.load(open(sys.argv[1]))
    jobs_n = int(sys.argv[sys.argv.index("--jobs") + 1]) if "--jobs" in sys.argv else 1
    jobs = [
        (path, pruner, seed, order, spec["workers"], spec["maxT"], spec["targets"])
        for path in spec["files"]
        for pruner in spec.get("methods", ["optuna-sha", "optuna-hyperband"])
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
