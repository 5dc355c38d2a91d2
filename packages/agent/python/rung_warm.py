"""rung_warm: a pre-started Python interpreter that waits for one trial (the agent's warm starts).

The agent starts this file in a pseudo-terminal of its own, in the working directory of the trials it
will serve, with the environment they share (RUNG_* and CUDA_VISIBLE_DEVICES left out), and:

    RUNG_WARM_SOCKET   the agent's Unix socket to say "ready" on and to read the trial from
    RUNG_WARM_TOKEN    this interpreter's name on that socket
    RUNG_WARM_PRELOAD  comma-separated modules to import now (e.g. "torch,sklearn")

It imports those modules, refuses to serve if that loaded the CUDA driver (the driver reads
CUDA_VISIBLE_DEVICES once, when it starts, and each trial must see only its own GPUs), says ready,
and blocks until the agent sends one JSON line:

    {"argv": ["train.py", "--lr", "0.01"], "env": {...}, "cwd": "/abs/dir"}

It then becomes that trial: the environment is replaced (before any of the trial's code runs), the
directory changed, sys.argv and sys.path[0] set as `python train.py ...` would set them, and the
script runs as __main__. Its output goes to this process's terminal and the process exits with the
script's status. One trial per interpreter: the agent never hands a second one to the same process.

If the socket closes before a trial arrives (the agent stopped or dropped this interpreter), it
exits 0 without running anything.
"""

import importlib
import json
import os
import socket
import sys
import traceback

# Exit statuses the agent reads as "this interpreter cannot serve" (before it said ready).
EXIT_PRELOAD_FAILED = 90
EXIT_CUDA_LOADED = 91


def _cuda_driver_loaded():
    """Whether the CUDA driver library is mapped into this process (Linux: /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as f:
            return any("/libcuda.so" in line for line in f)
    except OSError:
        return False


def _read_line(sock):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return buf


def _run_script(script, args):
    """What `python script args...` does after start-up: sys.argv, sys.path[0], a fresh __main__."""
    import builtins
    import importlib.machinery
    import io
    import types

    path = os.path.abspath(script)
    sys.argv = [script] + list(args)
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    main.__cached__ = None
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    sys.modules["__main__"] = main  # pickle and multiprocessing find the script's classes here
    try:
        with io.open_code(path) as f:
            code = compile(f.read(), path, "exec")
        exec(code, main.__dict__)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as e:
        # As an uncaught exception in a script run directly: the traceback (without this file's frames)
        # through sys.excepthook, which rung_trial may have hooked to flag out-of-memory, then exit 1.
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        raise SystemExit(1) from None


def main():
    path = os.environ.pop("RUNG_WARM_SOCKET")
    token = os.environ.pop("RUNG_WARM_TOKEN")
    preload = [m for m in os.environ.pop("RUNG_WARM_PRELOAD", "").split(",") if m.strip()]
    # Found as the script's own imports would be: `python train.py` in this directory puts it first.
    sys.path[0] = os.getcwd()
    for name in preload:
        try:
            importlib.import_module(name.strip())
        except BaseException:
            sys.stderr.write("[rung] warm start: cannot import %s:\n" % name)
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(EXIT_PRELOAD_FAILED)
    torch = sys.modules.get("torch")
    cuda_initialised = False
    if torch is not None:
        try:
            cuda_initialised = bool(torch.cuda.is_initialized())
        except Exception:
            pass
    if cuda_initialised or _cuda_driver_loaded():
        sys.stderr.write("[rung] warm start: the preload loaded the CUDA driver, so a trial's CUDA_VISIBLE_DEVICES could not apply\n")
        sys.stderr.flush()
        os._exit(EXIT_CUDA_LOADED)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall((json.dumps({"ready": token}) + "\n").encode())
    line = _read_line(sock)
    sock.close()
    if line is None:
        os._exit(0)
    spec = json.loads(line)

    # The trial's environment, through os.environ so the C library's (and CUDA's) getenv sees it too.
    os.environ.clear()
    os.environ.update(spec["env"])
    os.chdir(spec["cwd"])
    argv = spec["argv"]
    _run_script(argv[0], argv[1:])


if __name__ == "__main__":
    main()
