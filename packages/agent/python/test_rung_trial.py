"""Tests for rung_trial.py: /usr/bin/python3 -m unittest discover -s packages/agent/python"""

import contextlib
import importlib
import io
import json
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import unittest
from unittest import mock

import rung_trial


class ReportServer:
    """A Unix stream socket that collects the lines written to it, as the agent would."""

    def __init__(self, close_after_first_line=False):
        self.dir = tempfile.mkdtemp(prefix="rung-test-")
        self.path = os.path.join(self.dir, "report.sock")
        self.lines = []
        self.connections = 0
        self._close_early = close_after_first_line
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(4)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("r", encoding="utf-8") as f:
                for line in f:
                    self.lines.append(line)
                    if self._close_early:
                        return

    def wait_for(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.lines

    def close(self):
        self._sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def strict_json(line):
    """Parse as a JavaScript JSON.parse would: bare NaN/Infinity are errors."""

    def reject(name):
        raise ValueError("not JSON: %s" % name)

    return json.loads(line, parse_constant=reject)


class RungTrialTest(unittest.TestCase):
    def setUp(self):
        # A fresh module (no connection, no accumulated timing) and a clean environment per test.
        self.env = mock.patch.dict(os.environ, {}, clear=False)
        self.env.start()
        for k in list(os.environ):
            if k.startswith("RUNG_"):
                del os.environ[k]
        importlib.reload(rung_trial)
        self.servers = []

    def tearDown(self):
        if rung_trial._sock is not None:
            rung_trial._sock.close()
        for s in self.servers:
            s.close()
        self.env.stop()

    def server(self, **kw):
        s = ReportServer(**kw)
        self.servers.append(s)
        os.environ["RUNG_REPORT"] = s.path
        return s

    def quiet_report(self, **metrics):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rung_trial.report(**metrics)
        return out.getvalue(), err.getvalue()

    # --- the socket channel -------------------------------------------------------------------

    def test_writes_one_json_line_per_report_over_one_connection(self):
        srv = self.server()
        out, err = self.quiet_report(epoch=1, val_acc=0.5, val_loss=1.25)
        self.quiet_report(epoch=2, val_acc=0.75, flag=True)
        lines = srv.wait_for(2)
        self.assertEqual(len(lines), 2)
        self.assertTrue(all(line.endswith("\n") and line.count("\n") == 1 for line in lines))
        self.assertEqual(strict_json(lines[0]), {"epoch": 1, "val_acc": 0.5, "val_loss": 1.25})
        self.assertEqual(strict_json(lines[1]), {"epoch": 2, "val_acc": 0.75, "flag": 1})
        self.assertIsInstance(strict_json(lines[0])["epoch"], int)
        self.assertEqual(srv.connections, 1)
        self.assertEqual((out, err), ("", ""))  # nothing on the terminal when the socket works

    def test_checkpoint_true_is_sent_as_the_flag_not_as_a_metric(self):
        srv = self.server()
        self.quiet_report(epoch=3, val_acc=0.9, checkpoint=True)
        self.quiet_report(epoch=4, val_acc=0.91)
        lines = srv.wait_for(2)
        self.assertEqual(strict_json(lines[0]), {"epoch": 3, "val_acc": 0.9, "checkpoint": True})
        self.assertEqual(strict_json(lines[1]), {"epoch": 4, "val_acc": 0.91})

    def test_resume_from_reads_the_restored_checkpoint_time(self):
        os.environ.pop("RUNG_RESUME_FROM", None)
        self.assertIsNone(rung_trial.resume_from())
        os.environ["RUNG_RESUME_FROM"] = "3"
        try:
            self.assertEqual(rung_trial.resume_from(), 3.0)
        finally:
            del os.environ["RUNG_RESUME_FROM"]

    def test_nan_and_infinities_are_strings_a_json_parser_accepts(self):
        srv = self.server()
        self.quiet_report(epoch=1, val_loss=float("nan"), a=float("inf"), b=float("-inf"), c=1e308 * 10)
        (line,) = srv.wait_for(1)
        self.assertEqual(strict_json(line),
                         {"epoch": 1, "val_loss": "NaN", "a": "Infinity", "b": "-Infinity", "c": "Infinity"})

    def test_number_like_values_are_converted(self):
        class Scalar:  # like a numpy float32 or a 0-d tensor
            def __float__(self):
                return 0.25

        srv = self.server()
        self.quiet_report(x=Scalar())
        self.assertEqual(strict_json(srv.wait_for(1)[0]), {"x": 0.25})
        with self.assertRaises(TypeError):
            rung_trial.report(name="resnet")

    # --- timed() --------------------------------------------------------------------------------

    def test_timed_accumulates_data_wait_and_compute(self):
        def slow_batches(n, wait):
            for i in range(n):
                time.sleep(wait)
                yield i

        srv = self.server()
        self.assertEqual(list(rung_trial.timed([])), [])
        seen = []
        for b in rung_trial.timed(slow_batches(4, 0.03)):
            time.sleep(0.05)
            seen.append(b)
        self.assertEqual(seen, [0, 1, 2, 3])
        self.quiet_report(epoch=1)
        first = strict_json(srv.wait_for(1)[0])
        self.assertAlmostEqual(first["data_wait_s"], 0.12, delta=0.05)
        self.assertAlmostEqual(first["compute_s"], 0.20, delta=0.06)

        # Totals restart after each report; breaking out of the loop still counts that step.
        for _ in rung_trial.timed(slow_batches(10, 0.0)):
            time.sleep(0.04)
            break
        self.quiet_report(epoch=2)
        second = strict_json(srv.wait_for(2)[1])
        self.assertAlmostEqual(second["compute_s"], 0.04, delta=0.03)
        self.assertLess(second["data_wait_s"], 0.02)

        # Explicit values win.
        self.quiet_report(epoch=3, data_wait_s=7, compute_s=9)
        third = strict_json(srv.wait_for(3)[2])
        self.assertEqual((third["data_wait_s"], third["compute_s"]), (7, 9))

    def test_timed_measures_the_host_cpu_while_waiting(self):
        # Scripted /proc/stat readings (busy, total ticks): each wait sees 30 busy of 100, each step
        # 100 of 100 (not counted: only the waits are).
        readings = iter([(0, 0), (30, 100), (130, 200), (160, 300), (260, 400), (290, 500)])
        srv = self.server()
        with mock.patch.object(rung_trial, "_host_cpu_ticks", lambda: next(readings)):
            for _ in rung_trial.timed([1, 2]):
                pass
        self.quiet_report(epoch=1)
        self.assertEqual(strict_json(srv.wait_for(1)[0])["data_wait_host_cpu"], 0.3)
        # Where there is no /proc/stat, no such field.
        with mock.patch.object(rung_trial, "_host_cpu_ticks", lambda: None):
            list(rung_trial.timed([1]))
        self.quiet_report(epoch=2)
        self.assertNotIn("data_wait_host_cpu", strict_json(srv.wait_for(2)[1]))

    @unittest.skipUnless(os.path.exists("/proc/stat"), "Linux only")
    def test_timed_tells_a_loader_that_computes_from_one_that_sleeps(self):
        def batches(work):
            for i in range(20):
                end = time.process_time() + 0.01
                if work == "cpu":
                    while time.process_time() < end:
                        pass
                else:
                    time.sleep(0.01)
                yield i

        srv = self.server()
        list(rung_trial.timed(batches("cpu")))
        self.quiet_report(epoch=1)
        busy = strict_json(srv.wait_for(1)[0])["data_wait_host_cpu"]
        # At least the one core that computed, of all of them (others' load only adds).
        self.assertGreaterEqual(busy, 0.8 / os.cpu_count())
        self.assertLessEqual(busy, 1.0)

    def test_timed_passes_len_and_calls_sync(self):
        calls = []
        wrapped = rung_trial.timed([1, 2, 3], sync=lambda: calls.append(1))
        self.assertEqual(len(wrapped), 3)
        self.assertEqual(list(wrapped), [1, 2, 3])
        self.assertEqual(len(calls), 3)

    def test_no_timing_fields_without_timed(self):
        srv = self.server()
        self.quiet_report(epoch=1)
        self.assertEqual(strict_json(srv.wait_for(1)[0]), {"epoch": 1})

    # --- running alone and failures -------------------------------------------------------------

    def test_without_socket_prints_one_line(self):
        out, err = self.quiet_report(epoch=3, val_acc=0.91, val_loss=float("nan"))
        self.assertEqual(out, "[rung] epoch=3 val_acc=0.91 val_loss=nan\n")
        self.assertEqual(err, "")

    def test_unreachable_socket_warns_once_and_keeps_going(self):
        os.environ["RUNG_REPORT"] = os.path.join(tempfile.gettempdir(), "rung-no-such-socket-%d" % os.getpid())
        out1, err1 = self.quiet_report(epoch=1, val_acc=0.5)
        out2, err2 = self.quiet_report(epoch=2, val_acc=0.6)
        self.assertIn("warning", err1)
        self.assertEqual(err2, "")
        self.assertEqual(out1 + out2, "[rung] epoch=1 val_acc=0.5\n[rung] epoch=2 val_acc=0.6\n")

    def test_agent_going_away_does_not_raise(self):
        srv = self.server(close_after_first_line=True)
        errs = []
        for epoch in range(1, 6):
            errs.append(self.quiet_report(epoch=epoch)[1])
            time.sleep(0.02)
        self.assertEqual(strict_json(srv.wait_for(1)[0]), {"epoch": 1})
        self.assertEqual(sum("warning" in e for e in errs), 1)

    # --- environment ----------------------------------------------------------------------------

    def test_params_trial_attempt(self):
        self.assertEqual(rung_trial.params(), {})
        self.assertEqual(rung_trial.trial_id(), "local")
        self.assertEqual(rung_trial.attempt(), 1)
        os.environ.update(RUNG_PARAMS='{"lr": 0.01, "optimizer": "adam"}', RUNG_TRIAL="t-0007", RUNG_ATTEMPT="2")
        self.assertEqual(rung_trial.params(), {"lr": 0.01, "optimizer": "adam"})
        self.assertEqual(rung_trial.trial_id(), "t-0007")
        self.assertEqual(rung_trial.attempt(), 2)
        os.environ["RUNG_PARAMS"] = "[1, 2]"
        with self.assertRaises(ValueError):
            rung_trial.params()

    def test_checkpoint_dir(self):
        tmp = tempfile.mkdtemp(prefix="rung-test-")
        try:
            target = os.path.join(tmp, "a", "b")
            os.environ["RUNG_CHECKPOINT_DIR"] = target
            self.assertEqual(rung_trial.checkpoint_dir(), target)
            self.assertTrue(os.path.isdir(target))
            del os.environ["RUNG_CHECKPOINT_DIR"]
            os.environ["RUNG_TRIAL"] = "t-1"
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                self.assertEqual(rung_trial.checkpoint_dir(), os.path.join("checkpoints", "t-1"))
                self.assertTrue(os.path.isdir(os.path.join(tmp, "checkpoints", "t-1")))
            finally:
                os.chdir(cwd)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
