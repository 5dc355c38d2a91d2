"""Classify scikit-learn's bundled 8x8 digits with a small PyTorch MLP (or a tiny CNN).

A complete Rung trial in one file: parameters from argv (or RUNG_PARAMS), a real DataLoader
timed by rung_trial.timed(), one report per epoch, and a checkpoint per epoch so a retried
attempt continues where the last one stopped. Runs in a couple of seconds on one CPU core:

    /usr/bin/python3 train.py --lr 0.005 --batch-size 64 --hidden 128 --optimizer adam --epochs 5

--data-delay-ms adds a sleep per item in the Dataset (like slow storage), so an input-bound
trial can be demonstrated; more --num-workers is then the fix.
"""

import argparse
import os
import sys
import time

try:
    import rung_trial
except ImportError:  # run on its own: use the helper from this repository
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "packages", "agent", "python"))
    import rung_trial

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-delay-ms", type=float, default=0.0, help="sleep per item in the Dataset")
    p.add_argument("--repeat", type=int, default=1,
                   help="passes over the training set per reported epoch (longer epochs, same data)")
    p.add_argument("--resume", action="store_true",
                   help="resume from the last checkpoint when run alone (under Rung it always does)")
    # RUNG_PARAMS (e.g. {"batch_size": 64}) supplies defaults; explicit flags win.
    by_dest = {a.dest: a for a in p._actions}
    defaults = {}
    for key, value in rung_trial.params().items():
        action = by_dest.get(key.replace("-", "_"))
        if action is not None and action.type is not None:
            defaults[action.dest] = action.type(value)
        elif action is not None and action.choices is not None:
            defaults[action.dest] = str(value)
    p.set_defaults(**defaults)
    return p.parse_args(argv)


class Digits(Dataset):
    def __init__(self, x, y, delay_s=0.0):
        self.x, self.y, self.delay_s = x, y, delay_s

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.x[i], self.y[i]


def load_data():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.int64)
    order = torch.from_numpy(np.random.RandomState(0).permutation(len(y)))  # same split for every trial
    n_val = len(y) // 5
    val, train = order[:n_val], order[n_val:]
    return (x[train], y[train]), (x[val], y[val])


def build_model(args):
    if args.model == "cnn":
        return nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(args.dropout),
            nn.Linear(32 * 4 * 4, args.hidden), nn.ReLU(), nn.Dropout(args.dropout),
            nn.Linear(args.hidden, 10),
        )
    return nn.Sequential(
        nn.Linear(64, args.hidden), nn.ReLU(), nn.Dropout(args.dropout),
        nn.Linear(args.hidden, args.hidden), nn.ReLU(), nn.Dropout(args.dropout),
        nn.Linear(args.hidden, 10),
    )


def evaluate(model, x, y, device):
    from sklearn.metrics import f1_score, roc_auc_score

    model.eval()
    with torch.no_grad():
        logits = model(x.to(device)).float()
        loss = nn.functional.cross_entropy(logits, y.to(device)).item()
        probs = torch.softmax(logits, dim=1).double().cpu().numpy()
    truth = y.numpy()
    pred = probs.argmax(axis=1)
    acc = float((pred == truth).mean())
    f1 = float(f1_score(truth, pred, average="macro", zero_division=0))
    if np.isfinite(probs).all():
        probs /= probs.sum(axis=1, keepdims=True)
        auc = float(roc_auc_score(truth, probs, multi_class="ovr", average="macro"))
    else:  # a diverged model: say so instead of crashing
        auc = float("nan")
    return acc, loss, f1, auc


# Parameters that must match for a checkpoint to be resumed (not --epochs or --num-workers).
SAME_RUN = ("lr", "batch_size", "hidden", "dropout", "optimizer", "model", "seed")
# What population-based training may change between a checkpoint and the attempt that goes on from it
# (the agent restored it, RUNG_RESUME_FROM is set): the weights fit, the new values apply from here on.
MUTABLE = ("lr", "dropout", "batch_size")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    (x_train, y_train), (x_val, y_val) = load_data()
    train_set = Digits(x_train, y_train, args.data_delay_ms / 1000.0)
    sampler = RandomSampler(train_set, num_samples=len(train_set) * max(1, args.repeat))
    loader = DataLoader(
        train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0, pin_memory=device.type == "cuda",
    )

    torch.manual_seed(args.seed)
    model = build_model(args).to(device)
    if args.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    ckpt_path = os.path.join(rung_trial.checkpoint_dir(), "last.pt")
    config = {k: getattr(args, k) for k in SAME_RUN}
    start = 0
    if os.path.exists(ckpt_path) and (args.resume or os.environ.get("RUNG_CHECKPOINT_DIR")):
        ckpt = torch.load(ckpt_path, map_location=device)
        saved = ckpt.get("config") or {}
        fixed = [k for k in SAME_RUN if k not in MUTABLE]
        restored = rung_trial.resume_from() is not None
        if saved == config or (restored and all(saved.get(k) == config[k] for k in fixed)):
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            for group in opt.param_groups:  # a perturbed learning rate applies from here on
                group["lr"] = args.lr
            start = ckpt["epoch"]
            changed = {k: (saved.get(k), config[k]) for k in MUTABLE if saved.get(k) != config[k]}
            print("resumed from %s at epoch %d (attempt %d)%s" % (
                ckpt_path, start, rung_trial.attempt(),
                "".join(", %s %s -> %s" % (k, a, b) for k, (a, b) in changed.items())), flush=True)
        else:
            print("ignoring %s: it is from other parameters" % ckpt_path, file=sys.stderr, flush=True)

    for epoch in range(start, args.epochs):
        torch.manual_seed(args.seed * 100003 + epoch)  # shuffling and dropout: same with or without resume
        model.train()
        loss_sum, steps = torch.zeros((), device=device), 0
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        for xb, yb in rung_trial.timed(loader, sync=sync):
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            batch_loss = nn.functional.cross_entropy(model(xb), yb)
            batch_loss.backward()
            opt.step()
            loss_sum += batch_loss.detach()
            steps += 1

        acc, loss, f1, auc = evaluate(model, x_val, y_val, device)
        tmp = ckpt_path + ".tmp"
        torch.save({"epoch": epoch + 1, "config": config, "model": model.state_dict(),
                    "optimizer": opt.state_dict()}, tmp)
        os.replace(tmp, ckpt_path)  # atomic: a kill never leaves half a checkpoint
        rung_trial.report(checkpoint=True, epoch=epoch + 1, train_loss=loss_sum.item() / max(1, steps), val_acc=acc,
                          val_loss=loss, macro_f1=f1, auc=auc, num_workers=args.num_workers)


if __name__ == "__main__":
    main()
