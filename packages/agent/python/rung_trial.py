"""rung_trial: the one-file helper a training script uses to talk to the Rung agent.

Standard library only, Python 3.9+. Copy it next to your script or put this folder on PYTHONPATH
(the agent does the latter for every trial).

    import rung_trial

    hp = rung_trial.params()                       # {"lr": 0.01, ...} from RUNG_PARAMS
    for epoch in range(start, epochs):
        for x, y in rung_trial.timed(loader):      # times the DataLoader against your step
            ...
        rung_trial.report(epoch=epoch + 1, val_acc=acc, val_loss=loss)

Environment (all optional; set by the agent):

    RUNG_REPORT          path of a Unix stream socket the agent listens on
    RUNG_PARAMS          the trial's parameters as a JSON object
    RUNG_CHECKPOINT_DIR  a directory that survives a retry of the same trial
    RUNG_TRIAL           the trial id
    RUNG_ATTEMPT         the attempt number, 1 for the first run

Wire format: the trial connects to RUNG_REPORT once and writes one flat JSON object per report,
terminated by "\\n", whose values are all numbers, e.g.

    {"epoch": 3, "val_acc": 0.91, "val_loss": 0.28, "data_wait_s": 4.1, "compute_s": 9.7}

JSON has no NaN or infinities, so those are written as the strings "NaN", "Infinity" and
"-Infinity"; the agent maps these three strings back to numbers, and a line stays readable by any
JSON parser. Booleans are sent as 1/0, and anything float() accepts (numpy scalars, 0-d tensors) is
sent as a number.

`data_wait_s` / `compute_s` are the seconds spent, since the previous report, waiting for the
next batch of a `timed(...)` iterable versus between getting a batch and asking for the next one.
They are host-side wall-clock times; CUDA work is asynchronous, so on a GPU use
`timed(loader, sync=torch.cuda.synchronize)` to charge each step's GPU time to compute_s.

`data_wait_host_cpu` (Linux) is the share of the host's CPU, 0..1 over all cores, that was busy
while the loop waited for a batch: the first line of /proc/stat read as each wait begins and ends
(about 10 us a batch). It tells what a starved loader waits on: a CPU that is busy meanwhile (workers
decoding; more workers than cores will not help) or one that is idle (workers waiting on storage or
the network; more workers will).

A script that dies of CUDA's out-of-memory error (uncaught) also prints `[rung] out of GPU memory: …`
on stderr, so the agent ends the attempt as `oom` (retried alone on a GPU) rather than as a crash.

Without RUNG_REPORT, report() prints `[rung] epoch=3 val_acc=0.91 ...` on stdout and does nothing
else, so a script runs the same on its own. A reporting failure (no listener, agent gone) is
warned about once on stderr and never stops the trial; reports then go to stdout instead.
"""

import json
import math
import os
import socket
import sys
import threading
import time

__all__ = ["params", "report", "timed", "checkpoint_dir", "resume_from", "trial_id", "attempt"]

_SEND_TIMEOUT_S = 5.0

_lock = threading.Lock()
_sock = None  # connected socket, once report() has connected
_broken = False  # a connect or write failed: report to stdout from now on
_timing_used = False  # timed() has been used, so reports carry data_wait_s/compute_s
_data_wait_s = 0.0
_compute_s = 0.0
_wait_cpu_busy = 0  # /proc/stat ticks, all cores, busy while waiting for a batch
_wait_cpu_total = 0  # all ticks while waiting for a batch
_stat_fd = None  # (pid, fd) of /proc/stat, opened once per process; (pid, None) where there is none


def params():
    """The trial's parameters: RUNG_PARAMS parsed as a JSON object, or {} when it is unset."""
    raw = os.environ.get("RUNG_PARAMS", "").strip()
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("RUNG_PARAMS must hold a JSON object, got %s" % type(value).__name__)
    return value


def trial_id():
    """The trial id from RUNG_TRIAL, or "local" when the script runs on its own."""
    return os.environ.get("RUNG_TRIAL") or "local"


def attempt():
    """The attempt number from RUNG_ATTEMPT (1 for the first run, also when unset)."""
    try:
        return int(os.environ.get("RUNG_ATTEMPT", "1"))
    except ValueError:
        return 1


def resume_from():
    """The time attribute's value of the checkpoint the agent restored into checkpoint_dir() for this
    attempt (RUNG_RESUME_FROM), or None on a fresh start."""
    v = os.environ.get("RUNG_RESUME_FROM")
    return float(v) if v else None


def checkpoint_dir():
    """A directory for checkpoints that a retried attempt of the same trial sees again.

    RUNG_CHECKPOINT_DIR when set, else ./checkpoints/<trial id or "local">; created if missing.
    """
    path = os.environ.get("RUNG_CHECKPOINT_DIR") or os.path.join("checkpoints", trial_id())
    os.makedirs(path, exist_ok=True)
    return path


def _host_cpu_ticks():
    """(busy, total) clock ticks of all cores since boot, from /proc/stat; None where there is none.

    Idle and iowait are idle (a core waiting on a disk is free for a worker); guest time is already
    inside user and nice."""
    global _stat_fd
    pid = os.getpid()
    if _stat_fd is None or _stat_fd[0] != pid:  # a forked child opens its own
        try:
            _stat_fd = (pid, os.open("/proc/stat", os.O_RDONLY))
        except OSError:
            _stat_fd = (pid, None)
    fd = _stat_fd[1]
    if fd is None:
        return None
    try:
        line = os.pread(fd, 256, 0).split(b"\n", 1)[0].split()
        ticks = [int(x) for x in line[1:9]]
    except (OSError, ValueError):
        return None
    if len(ticks) < 5 or line[0] != b"cpu":
        return None
    total = sum(ticks)
    return total - ticks[3] - ticks[4], total


class timed:
    """Wrap an iterable (a DataLoader) and time it: waiting for a batch counts as data_wait_s,
    the time from receiving a batch until the next one is asked for counts as compute_s.
    The totals are added to the next report(). len() is passed through.

    On a GPU pass sync=torch.cuda.synchronize: it is called (and counted as compute) before each
    next batch is asked for, so compute_s holds the step's GPU work, not just its launch."""

    def __init__(self, iterable, sync=None):
        global _timing_used
        self._iterable = iterable
        self._sync = sync
        _timing_used = True

    def __len__(self):
        return len(self._iterable)

    def __iter__(self):
        global _data_wait_s, _compute_s
        clock = time.perf_counter
        cpu = _host_cpu_ticks
        got_batch_at = None
        try:
            asked_at = clock()
            cpu_at_ask = cpu()
            it = iter(self._iterable)  # starting DataLoader workers is data time too
            while True:
                try:
                    item = next(it)
                except StopIteration:
                    _data_wait_s += clock() - asked_at
                    _add_wait_cpu(cpu_at_ask, cpu())
                    return
                got_batch_at = clock()
                _add_wait_cpu(cpu_at_ask, cpu())
                _data_wait_s += got_batch_at - asked_at
                yield item
                if self._sync is not None:
                    self._sync()
                asked_at = clock()
                cpu_at_ask = cpu()
                _compute_s += asked_at - got_batch_at
                got_batch_at = None
        finally:
            # The loop body broke out (or raised) while holding a batch: that was compute.
            if got_batch_at is not None:
                _compute_s += clock() - got_batch_at


def _add_wait_cpu(before, after):
    global _wait_cpu_busy, _wait_cpu_total
    if before is not None and after is not None and after[1] >= before[1]:
        _wait_cpu_busy += max(0, after[0] - before[0])
        _wait_cpu_total += after[1] - before[1]


def _number(key, value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError("rung_trial.report: %s=%r is not a number" % (key, value)) from None


def _json_value(x):
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    return x


def _text_value(x):
    return "%.6g" % x if isinstance(x, float) else str(x)


def _warn(message):
    sys.stderr.write("[rung] warning: %s; reports go to stdout from now on\n" % message)
    sys.stderr.flush()


def report(checkpoint=False, **metrics):
    """Send one set of metrics (numbers) to the agent, e.g. report(epoch=3, val_acc=0.91).

    checkpoint=True says the checkpoint files in checkpoint_dir() are written: the agent stores a
    snapshot of that directory in the mesh, and any later attempt of the trial, on any box, starts
    with it restored (RUNG_RESUME_FROM set to this report's time attribute).

    Adds data_wait_s and compute_s accumulated by timed() since the last report, unless given
    here. Never raises because of the reporting channel; raises TypeError for a non-number."""
    global _sock, _broken, _data_wait_s, _compute_s, _wait_cpu_busy, _wait_cpu_total
    with _lock:
        values = {str(k): _number(k, v) for k, v in metrics.items()}
        if _timing_used:
            values.setdefault("data_wait_s", round(_data_wait_s, 6))
            values.setdefault("compute_s", round(_compute_s, 6))
            if _wait_cpu_total > 0:
                values.setdefault("data_wait_host_cpu", round(_wait_cpu_busy / _wait_cpu_total, 4))
        _data_wait_s = 0.0
        _compute_s = 0.0
        _wait_cpu_busy = 0
        _wait_cpu_total = 0

        path = os.environ.get("RUNG_REPORT")
        if path and not _broken:
            body = {k: _json_value(v) for k, v in values.items()}
            if checkpoint:
                body["checkpoint"] = True
            line = json.dumps(body, allow_nan=False) + "\n"
            try:
                if _sock is None:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.settimeout(_SEND_TIMEOUT_S)
                    try:
                        s.connect(path)
                    except BaseException:
                        s.close()
                        raise
                    _sock = s
                _sock.sendall(line.encode("utf-8"))
                return
            except OSError as e:  # includes timeouts and a closed peer (BrokenPipeError)
                _broken = True
                if _sock is not None:
                    try:
                        _sock.close()
                    except OSError:
                        pass
                    _sock = None
                _warn("cannot report to %s (%s)" % (path, e))
        print("[rung] " + " ".join("%s=%s" % (k, _text_value(v)) for k, v in values.items()), flush=True)


def _is_out_of_memory(exc):
    """CUDA's out-of-memory error as PyTorch (torch.cuda.OutOfMemoryError) or any CUDA library raises it."""
    name = type(exc).__name__
    text = str(exc)
    return name == "OutOfMemoryError" or "CUDA out of memory" in text or "CUDA error: out of memory" in text


def _excepthook(kind, exc, tb, _previous=sys.excepthook):
    # The agent ends an attempt that ran out of GPU memory as `oom` (retried alone on a GPU, no retry
    # used) when its output says so; say it in one line Rung recognises whatever the traceback looks like.
    if exc is not None and _is_out_of_memory(exc):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else getattr(kind, "__name__", "OutOfMemoryError")
        sys.stderr.write("[rung] out of GPU memory: %s\n" % first[:300])
    _previous(kind, exc, tb)


sys.excepthook = _excepthook
