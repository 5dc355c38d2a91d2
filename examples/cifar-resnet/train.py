"""Train a ResNet-18 on CIFAR-10 (mixed precision on CUDA), reporting to Rung every epoch.

The ResNet-18 (the usual CIFAR variant: 3x3 stem, no max-pool) is defined here, so only the
CIFAR-10 data needs torchvision; it is downloaded into --data-dir on first use. --synthetic N
trains on N small random images instead (learnable: each class has its own pattern), which needs
neither torchvision nor a network, for testing the plumbing:

    /usr/bin/python3 train.py --synthetic 64 --epochs 1 --width 8
    python train.py --lr 0.05 --batch-size 128 --optimizer sgd --epochs 30 --num-workers 4
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
from torch.utils.data import DataLoader, Dataset

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, default=0, help="width of an extra hidden layer in the head; 0: none")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout before the classifier")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--width", type=int, default=64, help="channels of the first stage (64: ResNet-18)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-delay-ms", type=float, default=0.0, help="sleep per item in the Dataset")
    p.add_argument("--data-dir", default=os.environ.get("CIFAR10_DIR", "data"))
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="use N random images instead of CIFAR-10")
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


# --- model ------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet18(width=64, hidden=0, dropout=0.0, classes=10):
    layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    cin = width
    for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
        layers += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if hidden > 0:
        layers += [nn.Linear(cin, hidden), nn.ReLU(inplace=True)]
        cin = hidden
    layers += [nn.Dropout(dropout), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


# --- data -------------------------------------------------------------------------------------

class Delayed(Dataset):
    """Any dataset, with an optional sleep per item (like slow storage)."""

    def __init__(self, base, delay_s=0.0):
        self.base, self.delay_s = base, delay_s

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.base[i]


class Synthetic(Dataset):
    """n normalised 3x32x32 images: noise plus a fixed per-class pattern, so it can be learnt."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        patterns = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(1234))
        self.y = torch.arange(n)[torch.randperm(n, generator=g)] % 10  # balanced classes
        self.x = torch.randn(n, 3, 32, 32, generator=g) + 0.5 * patterns[self.y]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def load_data(args):
    if args.synthetic:
        n_val = max(10, args.synthetic // 5)
        return Synthetic(args.synthetic, seed=1), Synthetic(n_val, seed=2)
    try:
        import torchvision
        from torchvision import transforms as T
    except ImportError:
        sys.exit("train.py: torchvision is not installed; install it (pip install torchvision) to train on "
                 "CIFAR-10, or pass --synthetic N to train on N random images.")
    import fcntl

    os.makedirs(args.data_dir, exist_ok=True)
    normalize = T.Normalize(MEAN, STD)
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    with open(os.path.join(args.data_dir, ".download.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # trials on one box share the directory: one download
        try:
            train = torchvision.datasets.CIFAR10(args.data_dir, train=True, download=True, transform=train_tf)
            val = torchvision.datasets.CIFAR10(args.data_dir, train=False, download=True,
                                               transform=T.Compose([T.ToTensor(), normalize]))
        except Exception as e:  # typically no network
            sys.exit("train.py: could not get CIFAR-10 into %s (%s: %s); put cifar-10-python.tar.gz there, "
                     "or pass --synthetic N." % (os.path.abspath(args.data_dir), type(e).__name__, e))
    return train, val


# --- training ---------------------------------------------------------------------------------

def evaluate(model, loader, device):
    from sklearn.metrics import f1_score, roc_auc_score

    model.eval()
    logits, labels = [], []
    with torch.no_grad(), torch.autocast(device_type="cuda", dtype=torch.float16, enabled=device.type == "cuda"):
        for xb, yb in loader:
            xb = xb.to(device, non_blocking=True)
            if device.type == "cuda":
                xb = xb.to(memory_format=torch.channels_last)
            logits.append(model(xb).float().cpu())
            labels.append(yb)
    logits, labels = torch.cat(logits), torch.cat(labels)
    loss = nn.functional.cross_entropy(logits, labels).item()
    probs = torch.softmax(logits.double(), dim=1).numpy()
    truth = labels.numpy()
    pred = probs.argmax(axis=1)
    acc = float((pred == truth).mean())
    f1 = float(f1_score(truth, pred, average="macro", zero_division=0))
    auc = float("nan")
    if np.isfinite(probs).all() and len(np.unique(truth)) == probs.shape[1]:
        probs /= probs.sum(axis=1, keepdims=True)
        auc = float(roc_auc_score(truth, probs, multi_class="ovr", average="macro"))
    return acc, loss, f1, auc


def make_scaler(enabled):
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


# Parameters that must match for a checkpoint to be resumed (not --epochs or --num-workers).
SAME_RUN = ("lr", "batch_size", "hidden", "dropout", "optimizer", "weight_decay", "width", "seed", "synthetic")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True

    train_set, val_set = load_data(args)
    workers = dict(num_workers=args.num_workers, persistent_workers=args.num_workers > 0, pin_memory=cuda)
    loader = DataLoader(Delayed(train_set, args.data_delay_ms / 1000.0), batch_size=args.batch_size,
                        shuffle=True, drop_last=len(train_set) > args.batch_size, **workers)
    val_loader = DataLoader(val_set, batch_size=512, **workers)

    torch.manual_seed(args.seed)
    model = resnet18(args.width, args.hidden, args.dropout).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    if args.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                              weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, args.epochs))
    scaler = make_scaler(cuda)

    ckpt_path = os.path.join(rung_trial.checkpoint_dir(), "last.pt")
    config = {k: getattr(args, k) for k in SAME_RUN}
    start = 0
    if os.path.exists(ckpt_path) and (args.resume or os.environ.get("RUNG_CHECKPOINT_DIR")):
        ckpt = torch.load(ckpt_path, map_location=device)
        if ckpt.get("config") == config:
            for obj, key in ((model, "model"), (opt, "optimizer"), (sched, "scheduler"), (scaler, "scaler")):
                obj.load_state_dict(ckpt[key])
            start = ckpt["epoch"]
            print("resumed from %s at epoch %d (attempt %d)" % (ckpt_path, start, rung_trial.attempt()), flush=True)
        else:
            print("ignoring %s: it is from other parameters" % ckpt_path, file=sys.stderr, flush=True)

    for epoch in range(start, args.epochs):
        torch.manual_seed(args.seed * 100003 + epoch)  # shuffling and dropout: same with or without resume
        model.train()
        loss_sum, steps = torch.zeros((), device=device), 0
        for xb, yb in rung_trial.timed(loader, sync=torch.cuda.synchronize if cuda else None):
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if cuda:
                xb = xb.to(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
                loss = nn.functional.cross_entropy(model(xb), yb)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            loss_sum += loss.detach().float()
            steps += 1
        sched.step()

        acc, val_loss, f1, auc = evaluate(model, val_loader, device)
        tmp = ckpt_path + ".tmp"
        torch.save({"epoch": epoch + 1, "config": config, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "scaler": scaler.state_dict()}, tmp)
        os.replace(tmp, ckpt_path)  # atomic: a kill never leaves half a checkpoint
        rung_trial.report(checkpoint=True, epoch=epoch + 1, train_loss=loss_sum.item() / max(1, steps), val_acc=acc,
                          val_loss=val_loss, macro_f1=f1, auc=auc, num_workers=args.num_workers)


if __name__ == "__main__":
    main()
