"""A training loop whose data loader is slow in one of two ways: it waits on storage, or it decodes.

The diagnosis suite's trial for "what does the loader wait on", standard library only (no torch), so
it starts in a blink and behaves the same on any box. It is built like a PyTorch DataLoader with
worker processes: `--num-workers` forked workers take batch indices from a queue and put batches on
another, `--prefetch-factor` batches per worker asked for ahead; the training loop takes them in
order through `rung_trial.timed`, so data_wait_s, compute_s and data_wait_host_cpu are measured by the
helper exactly as in a real trial.

Per batch, each worker:
  --io-ms X    sleeps X ms: storage or network latency, with the CPU idle meanwhile;
  --cpu-ms Y   spends Y ms of its own CPU time: decoding and augmentation.
The training step (--step-ms) sleeps: the GPU computes while the host waits, as with a real GPU.

    python3 train.py --num-workers 2 --io-ms 100 --step-ms 20 --batches 30 --epochs 8

With I/O latency the loader's throughput grows with the workers far past the core count; with CPU
work it stops growing at the cores. One report per epoch: epoch, val_acc (a made-up curve), loss,
num_workers, batches_per_s, and what timed() adds.
"""

import argparse
import math
import multiprocessing
import os
import sys
import time

try:
    import rung_trial
except ImportError:  # run on its own: use the helper from this repository
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "packages", "agent", "python"))
    import rung_trial


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--prefetch-factor", type=int, default=2)
    p.add_argument("--io-ms", type=float, default=0.0, help="per batch, each worker sleeps this long (storage latency)")
    p.add_argument("--cpu-ms", type=float, default=0.0, help="per batch, each worker burns this much CPU time (decoding)")
    p.add_argument("--step-ms", type=float, default=20.0, help="the training step: a sleep, as the host waits for a GPU")
    p.add_argument("--batches", type=int, default=30, help="batches per epoch")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01, help="only shapes the made-up learning curve")
    defaults = {}
    for key, value in rung_trial.params().items():
        dest = key.replace("-", "_")
        for a in p._actions:
            if a.dest == dest and a.type is not None:
                defaults[dest] = a.type(value)
    p.set_defaults(**defaults)
    return p.parse_args(argv)


def burn_cpu(seconds):
    """Spend `seconds` of this process's CPU time (not wall time: a busy box makes it take longer)."""
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        for i in range(2000):
            x += i * i
    return x


def worker(tasks, results, io_s, cpu_s):
    while True:
        i = tasks.get()
        if i is None:
            return
        if io_s:
            time.sleep(io_s)
        if cpu_s:
            burn_cpu(cpu_s)
        results.put(i)


class Loader:
    """Batches in order from worker processes, `prefetch` per worker requested ahead (as DataLoader)."""

    def __init__(self, args):
        ctx = multiprocessing.get_context("fork")
        self.batches = args.batches
        self.ahead = max(1, args.num_workers) * max(1, args.prefetch_factor)
        self.tasks = ctx.Queue()
        self.results = ctx.Queue()
        self.workers = [
            ctx.Process(target=worker, args=(self.tasks, self.results, args.io_ms / 1000, args.cpu_ms / 1000), daemon=True)
            for _ in range(max(1, args.num_workers))
        ]
        for w in self.workers:
            w.start()

    def __len__(self):
        return self.batches

    def __iter__(self):
        sent = 0
        for _ in range(min(self.ahead, self.batches)):
            self.tasks.put(sent)
            sent += 1
        ready = {}
        for want in range(self.batches):
            while want not in ready:
                i = self.results.get()
                ready[i] = i
            ready.pop(want)
            if sent < self.batches:
                self.tasks.put(sent)
                sent += 1
            yield want

    def close(self):
        for _ in self.workers:
            self.tasks.put(None)
        for w in self.workers:
            w.join(timeout=5)


def main(argv=None):
    args = parse_args(argv)
    loader = Loader(args)
    try:
        for epoch in range(1, args.epochs + 1):
            started = time.perf_counter()
            for _ in rung_trial.timed(loader):
                time.sleep(args.step_ms / 1000)
            elapsed = time.perf_counter() - started
            acc = 0.5 + 0.45 * (1 - math.exp(-epoch * min(1.0, args.lr * 30) / 3))
            rung_trial.report(epoch=epoch, val_acc=round(acc, 4), train_loss=round(1.5 * (1 - acc), 4),
                              num_workers=args.num_workers, batches_per_s=round(args.batches / elapsed, 2))
    finally:
        loader.close()


if __name__ == "__main__":
    main()
