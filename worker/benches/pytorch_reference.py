#!/usr/bin/env python3
"""PyTorch reference for latentsweep's CPU training-speed benchmark.

Trains the same EmbeddingNet (conv32 5x5-PReLU-pool-conv64 5x5-PReLU-pool-fc256-PReLU-fc256-PReLU-fc D)
with the same four losses and label conventions as `worker/src/train`, on Fashion-MNIST, and prints
one JSON line per loss: anchor samples per second (a pair or a triplet counts as one anchor),
median over repeats, after warm-up.

Install (Debian, CPU build of PyTorch):   apt-get install -y python3-torch dataset-fashion-mnist
Run:   /usr/bin/python3 worker/benches/pytorch_reference.py --threads 1
"""
import argparse, gzip, json, statistics, struct, sys, time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-9


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    _, _, dtype, ndim = struct.unpack(">BBBB", data[:4])
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class EmbeddingNet(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.convnet = nn.Sequential(
            nn.Conv2d(1, 32, 5), nn.PReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 5), nn.PReLU(), nn.MaxPool2d(2, 2))
        self.fc = nn.Sequential(
            nn.Linear(64 * 4 * 4, 256), nn.PReLU(), nn.Linear(256, 256), nn.PReLU(), nn.Linear(256, dim))

    def forward(self, x):  # [B, 1, 28, 28] -> [B, D]
        return self.fc(self.convnet(x).flatten(1))


def dist(a, b):
    return torch.sqrt(((a - b) ** 2).sum(1) + EPS)


def make_step(loss, net, head, opt, x, y, margin, rng, batch):
    n = len(y)
    by_class = [np.flatnonzero(y == c) for c in range(10)]
    not_class = [np.flatnonzero(y != c) for c in range(10)]

    def pairs():
        a = rng.integers(0, n, batch)
        same = rng.random(batch) < 0.5
        b = np.where(same, [rng.choice(by_class[y[i]]) for i in a], rng.integers(0, n, batch))
        return a, b, torch.from_numpy((y[a] == y[b]).astype(np.float32))

    def step():
        opt.zero_grad()
        if loss == "ce":
            idx = rng.integers(0, n, batch)
            logits = head(net(x[idx]))  # head = PReLU -> linear classifier
            out = F.cross_entropy(logits, torch.from_numpy(y[idx].astype(np.int64)))
        elif loss in ("bce", "contrastive"):
            a, b, same = pairs()
            e = net(x[np.concatenate([a, b])])
            ea, eb = e[:batch], e[batch:]
            if loss == "bce":  # Koch: |f1 - f2| -> linear -> sigmoid, target 1 = same
                out = F.binary_cross_entropy_with_logits(head((ea - eb).abs()).squeeze(1), same)
            else:  # Hadsell: y = 1 same; y d^2 + (1 - y) max(0, m - d)^2
                d = dist(ea, eb)
                out = (same * d ** 2 + (1 - same) * F.relu(margin - d) ** 2).mean()
        else:  # triplet, random mining, plain distances
            a = rng.integers(0, n, batch)
            p = np.array([rng.choice(by_class[y[i]]) for i in a])
            neg = np.array([rng.choice(not_class[y[i]]) for i in a])
            e = net(x[np.concatenate([a, p, neg])])
            ea, ep, en = e[:batch], e[batch : 2 * batch], e[2 * batch :]
            out = F.relu(dist(ea, ep) - dist(ea, en) + margin).mean()
        out.backward()
        opt.step()
        return out.item()

    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per repeat")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--losses", default="ce,bce,contrastive,triplet")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    imgs = read_idx(Path(args.data) / "train-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    labels = read_idx(Path(args.data) / "train-labels-idx1-ubyte.gz").astype(np.int64)
    x = torch.from_numpy((imgs - imgs.mean()) / imgs.std()).unsqueeze(1)
    for loss in args.losses.split(","):
        net = EmbeddingNet(args.dim)
        head = nn.Sequential(nn.PReLU(), nn.Linear(args.dim, 10)) if loss == "ce" else nn.Linear(args.dim, 1)
        opt = torch.optim.Adam(list(net.parameters()) + list(head.parameters()), lr=1e-3)
        step = make_step(loss, net, head, opt, x, labels, 1.0, np.random.default_rng(0), args.batch)
        for _ in range(args.warmup):
            step()
        rates = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates.append(args.steps * args.batch / (time.perf_counter() - t))
        print(json.dumps({"impl": "pytorch", "version": torch.__version__, "threads": args.threads,
                          "loss": loss, "batch": args.batch, "dim": args.dim,
                          "samples_per_sec": round(statistics.median(rates), 1),
                          "runs": [round(r, 1) for r in rates]}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
