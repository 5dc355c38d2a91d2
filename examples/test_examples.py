"""Smoke tests of the example trials: /usr/bin/python3 -m unittest discover -s examples

Each runs a script as the agent would (its own process, RUNG_REPORT socket, RUNG_CHECKPOINT_DIR)
and checks what it reports. About 15 s on one CPU core, most of it the ResNet-18 epoch.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
METRICS = {"epoch", "train_loss", "val_acc", "val_loss", "macro_f1", "auc", "num_workers", "data_wait_s", "compute_s"}
# rung_trial.timed adds it on Linux when the loop waited across at least one clock tick.
OPTIONAL_METRICS = {"data_wait_host_cpu"}


def has_torchvision():
    return subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True).returncode == 0


class Trial:
    """Run one example script with a report socket and a checkpoint directory, like the agent."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.sock_path = os.path.join(tmp, "report.sock")
        self.ckpt = os.path.join(tmp, "ckpt")

    def run(self, script, *args, attempt=1, timeout=120):
        lines = []
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(self.sock_path)
        srv.listen(1)

        def serve():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn, conn.makefile("r", encoding="utf-8") as f:
                lines.extend(f)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNG_") and k != "PYTHONPATH"}
        env.update(RUNG_REPORT=self.sock_path, RUNG_CHECKPOINT_DIR=self.ckpt, RUNG_TRIAL="smoke",
                   RUNG_ATTEMPT=str(attempt), OMP_NUM_THREADS="1")
        try:
            proc = subprocess.run([sys.executable, os.path.join(HERE, script), *args], cwd=self.tmp, env=env,
                                  capture_output=True, text=True, timeout=timeout)
            t.join(5)
        finally:
            srv.close()
            os.unlink(self.sock_path)
        return proc, [json.loads(line) for line in lines]


class ExamplesTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="rung-examples-")
        self.trial = Trial(self.tmp)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def check_reports(self, proc, reports, epochs):
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual([r["epoch"] for r in reports], epochs)
        for r in reports:
            self.assertEqual(set(r) - OPTIONAL_METRICS, METRICS)
            self.assertTrue(all(isinstance(v, (int, float)) or v in ("NaN", "Infinity", "-Infinity")
                                for v in r.values()), r)
            self.assertGreater(r["compute_s"], 0)

    def test_digits_reports_and_resumes(self):
        args = ["--lr", "0.005", "--batch-size", "64", "--hidden", "128", "--optimizer", "adam"]
        proc, reports = self.trial.run("digits/train.py", *args, "--epochs", "1")
        self.check_reports(proc, reports, [1])
        self.assertGreater(reports[0]["val_acc"], 0.5)
        self.assertEqual(proc.stdout, "")  # metrics went to the socket, not the terminal

        # A retry with the same checkpoint directory continues after the last finished epoch.
        proc, reports = self.trial.run("digits/train.py", *args, "--epochs", "3", attempt=2)
        self.check_reports(proc, reports, [2, 3])
        self.assertIn("resumed", proc.stdout)
        self.assertGreater(reports[-1]["val_acc"], 0.9)

    @unittest.skipUnless(os.path.exists("/proc/stat"), "Linux only")
    def test_slow_loader_waits_on_storage_or_on_the_cpu(self):
        common = ["--num-workers", "2", "--step-ms", "5", "--batches", "10", "--epochs", "2"]
        runs = {}
        for kind in ("io", "cpu"):
            proc, reports = self.trial.run("slow-loader/train.py", *common, "--%s-ms" % kind, "40")
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertEqual([r["epoch"] for r in reports], [1, 2])
            for r in reports:
                self.assertEqual(r["num_workers"], 2)
                self.assertGreater(r["data_wait_s"], r["compute_s"])  # both loaders are slower than the step
            runs[kind] = reports
        # Workers that compute keep up to two cores busy while the loop waits (others' load only adds).
        cores = os.cpu_count() or 1
        for r in runs["cpu"]:
            self.assertGreaterEqual(r["data_wait_host_cpu"], 0.8 * min(2, cores) / cores)

    def test_cifar_synthetic(self):
        proc, reports = self.trial.run("cifar-resnet/train.py", "--synthetic", "64", "--epochs", "1",
                                       "--num-workers", "0")
        self.check_reports(proc, reports, [1])
        self.assertTrue(os.path.exists(os.path.join(self.trial.ckpt, "last.pt")))

    @unittest.skipIf(has_torchvision(), "torchvision is installed")
    def test_cifar_without_torchvision_says_so(self):
        proc = subprocess.run([sys.executable, os.path.join(HERE, "cifar-resnet", "train.py"), "--epochs", "1"],
                              cwd=self.tmp, capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("torchvision is not installed", proc.stderr)
        self.assertIn("--synthetic", proc.stderr)
        self.assertEqual(proc.stderr.strip().count("\n"), 0)  # one sentence, no traceback


if __name__ == "__main__":
    unittest.main()
