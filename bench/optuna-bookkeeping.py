#!/usr/bin/env python3
"""Optuna's side of benchmark 1 (bookkeeping overhead); run by bench/src/bookkeeping.ts.

The same workload as Rung's: N trials, each one run of the trial command (a Node process reporting R results
through a RUNG_REPORT socket over d seconds), on S worker processes that share one storage (SQLite, or the
journal file storage), each running study.optimize with a SuccessiveHalvingPruner on: every reported result
goes through trial.report and trial.should_prune, as every Rung report goes through ASHA. The workers import
Optuna and open the storage first, then wait for "go" on stdin, so the clock starts with every worker ready,
as Rung's starts with every agent advertised. A worker that crashes is started again (its import counts then),
until the study holds N trials; each crash is counted with the last line of its error.

Output (stdout, JSON): makespan, trials by state, per-trial process start/exit times, crashes.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore")


def storage_for(kind, directory):
    import optuna

    if kind == "sqlite":
        return f"sqlite:///{os.path.join(directory, 'optuna.db')}"
    if kind == "journal":
        return optuna.storages.JournalStorage(optuna.storages.JournalFileStorage(os.path.join(directory, "journal.log")))
    raise ValueError(kind)


def worker(a):
    import optuna
    from optuna.study import MaxTrialsCallback

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    study = optuna.load_study(study_name="bench", storage=storage_for(a.storage, a.dir), pruner=pruner)
    cmd = json.loads(a.cmd)
    runs = []
    out_path = os.path.join(a.dir, f"worker-{os.getpid()}.json")

    def save():
        with open(out_path + ".tmp", "w") as f:
            json.dump(runs, f)
        os.replace(out_path + ".tmp", out_path)

    def objective(trial):
        i = trial.suggest_int("i", 1, a.trials)
        path = os.path.join(a.dir, f"{os.getpid()}-{trial.number}.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        spawned = time.time()
        p = subprocess.Popen(
            cmd + ["--i", str(i)],
            cwd=a.cwd,
            env={**os.environ, "RUNG_REPORT": path},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pruned = False
        last = None
        try:
            conn, _ = srv.accept()
            with conn, conn.makefile("r") as lines:
                for line in lines:
                    m = json.loads(line)
                    last = m["val_acc"]
                    trial.report(last, int(m["epoch"]))
                    if trial.should_prune():
                        pruned = True
                        p.kill()
                        break
        finally:
            p.wait()
            srv.close()
            os.unlink(path)
        runs.append({"spawned": spawned, "exited": time.time(), "pruned": pruned})
        save()
        if pruned:
            raise optuna.TrialPruned()
        return last

    print("ready", flush=True)
    if not a.no_wait:
        sys.stdin.readline()
    if len(study.get_trials(deepcopy=False)) >= a.trials:
        save()
        return
    # states=None: every trial counts, running ones too, so S workers together start exactly N trials.
    study.optimize(objective, callbacks=[MaxTrialsCallback(a.trials, states=None)])
    save()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--storage", choices=["sqlite", "journal"], required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--trials", type=int, required=True)
    p.add_argument("--cmd", required=True, help="the trial argv as a JSON list")
    p.add_argument("--cwd", default=".")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--no-wait", action="store_true")
    a = p.parse_args()
    if a.worker:
        worker(a)
        return

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(study_name="bench", storage=storage_for(a.storage, a.dir), direction="maximize")
    base = [sys.executable, os.path.abspath(__file__), "--worker", "--storage", a.storage, "--dir", a.dir,
            "--trials", str(a.trials), "--cmd", a.cmd, "--cwd", a.cwd]

    def spawn(wait):
        return subprocess.Popen(base + ([] if wait else ["--no-wait"]), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    procs = [spawn(True) for _ in range(a.workers)]
    for w in procs:
        if w.stdout.readline().strip() != "ready":
            raise SystemExit("an Optuna worker failed to start: " + w.stderr.read()[-500:])
    t0 = time.time()
    for w in procs:
        w.stdin.write("go\n")
        w.stdin.flush()
    crashes = []
    live = list(procs)
    while live:
        for w in list(live):
            code = w.poll()
            if code is None:
                continue
            live.remove(w)
            if code != 0:
                err = [l for l in w.stderr.read().strip().splitlines() if l.strip()]
                crashes.append({"exit": code, "error": err[-1][:300] if err else ""})
                if len(crashes) <= 50:
                    n = spawn(False)
                    n.stdout.readline()
                    live.append(n)
        time.sleep(0.02)
    makespan = time.time() - t0
    study = optuna.load_study(study_name="bench", storage=storage_for(a.storage, a.dir))
    states = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    runs = []
    for f in os.listdir(a.dir):
        if f.startswith("worker-") and f.endswith(".json"):
            with open(os.path.join(a.dir, f)) as fh:
                runs.append(json.load(fh))
    json.dump({"version": optuna.__version__, "t0": t0, "makespan": makespan, "states": states,
               "workers": runs, "crashes": crashes}, sys.stdout)


if __name__ == "__main__":
    main()
