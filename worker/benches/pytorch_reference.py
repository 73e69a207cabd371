#!/usr/bin/env python3
"""PyTorch reference for latentsweep's CPU training-speed benchmark.

Trains the same networks (embedding-net, koch-siamese, lenet-hadsell, sized from the input as
`worker/src/train/model/nets.rs` does) with the same losses, label conventions and batch shapes
as `worker/src/train`, and prints one JSON line per loss: anchor samples per second (a pair or a
triplet counts as one anchor; a mined P x K batch counts its P*K images), median over repeats,
after warm-up.

Losses: ce, bce, contrastive, triplet (random triplets), triplet-batch-hard, triplet-semi-hard
(online mining on class-balanced P x K batches, P = min(classes, batch/4), K = batch/P, as
`sampler::pk_shape`).

Data: Fashion-MNIST (IDX) or a folder of PGM classes (the AT&T faces), resized as the worker's
folder loader does (longer side brought to <= 64 px by the smallest integer factor: 112x92 ->
56x46) unless --size H W is given.

Install:  python3 -m venv /var/tmp/torchvenv && /var/tmp/torchvenv/bin/pip install numpy torch
Run:      python worker/benches/pytorch_reference.py --network koch-siamese \
              --data /work/shared/datasets/att_faces --losses bce,triplet-batch-hard --threads 2
"""
import argparse, gzip, json, math, statistics, struct, sys, time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-9
FAR = 1e9


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    _, _, dtype, ndim = struct.unpack(">BBBB", data[:4])
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_pgm(path):
    raw = path.read_bytes()
    fields, pos = [], 0
    while len(fields) < 4:  # magic, width, height, maxval (comments skipped)
        while raw[pos : pos + 1].isspace():
            pos += 1
        if raw[pos : pos + 1] == b"#":
            pos = raw.index(b"\n", pos)
            continue
        end = pos
        while not raw[end : end + 1].isspace():
            end += 1
        fields.append(raw[pos:end])
        pos = end
    assert fields[0] == b"P5", f"{path}: not a binary PGM"
    w, h = int(fields[1]), int(fields[2])
    return np.frombuffer(raw, dtype=np.uint8, offset=pos + 1, count=w * h).reshape(h, w)


def load(data, size, limit=None):
    root = Path(data)
    if (root / "train-images-idx3-ubyte.gz").exists():
        imgs = read_idx(root / "train-images-idx3-ubyte.gz")
        labels = read_idx(root / "train-labels-idx1-ubyte.gz").astype(np.int64)
        if limit and limit < len(labels):  # subset the u8 images, as the worker does
            keep = np.sort(np.random.default_rng(0).choice(len(labels), limit, replace=False))
            imgs, labels = imgs[keep], labels[keep]
        imgs = imgs.astype(np.float32) / 255.0
    else:  # one sub-folder per class
        classes = sorted((p for p in root.iterdir() if p.is_dir()),
                         key=lambda p: (len(p.name), p.name))
        imgs, labels = [], []
        for c, d in enumerate(classes):
            for f in sorted(d.glob("*.pgm")):
                imgs.append(read_pgm(f))
                labels.append(c)
        imgs = np.stack(imgs).astype(np.float32) / 255.0
        labels = np.array(labels, dtype=np.int64)
    x = torch.from_numpy(imgs).unsqueeze(1)
    h, w = x.shape[2:]
    if size is None and max(h, w) > 64:
        f = math.ceil(max(h, w) / 64)
        size = (h // f, w // f)
    if size is not None and tuple(size) != (h, w):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    x = (x - x.mean()) / x.std()
    return x.contiguous(), labels


def conv_out(s, k):
    return s - k + 1


class EmbeddingNet(nn.Module):
    def __init__(self, h, w, dim):
        super().__init__()
        side = lambda s: conv_out(conv_out(s, 5) // 2, 5) // 2
        self.convnet = nn.Sequential(
            nn.Conv2d(1, 32, 5), nn.PReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 5), nn.PReLU(), nn.MaxPool2d(2, 2))
        self.fc = nn.Sequential(
            nn.Linear(64 * side(h) * side(w), 256), nn.PReLU(), nn.Linear(256, 256), nn.PReLU(),
            nn.Linear(256, dim))

    def forward(self, x):
        return self.fc(self.convnet(x).flatten(1))


class KochSiamese(nn.Module):
    def __init__(self, h, w, dim):
        super().__init__()
        ks = [10, 7, 4, 4] if min(h, w) >= 96 else [5, 3, 2, 2]
        ch = [1, 64, 128, 128, 256]
        layers = []
        for i, k in enumerate(ks):
            layers += [nn.Conv2d(ch[i], ch[i + 1], k), nn.ReLU()]
            h, w = conv_out(h, k), conv_out(w, k)
            if i < 3:
                layers.append(nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
        self.convnet = nn.Sequential(*layers)
        self.fc = nn.Linear(256 * h * w, dim)

    def forward(self, x):
        return torch.sigmoid(self.fc(self.convnet(x).flatten(1)))


class LenetHadsell(nn.Module):
    def __init__(self, h, w, dim):
        super().__init__()
        ph, pw = conv_out(h + 4, 6) // 3, conv_out(w + 4, 6) // 3
        k = min(9, ph, pw)
        self.convnet = nn.Sequential(
            nn.Conv2d(1, 15, 6, padding=2), nn.ReLU(), nn.AvgPool2d(3),
            nn.Conv2d(15, 30, k), nn.ReLU())
        self.fc = nn.Linear(30 * conv_out(ph, k) * conv_out(pw, k), dim)

    def forward(self, x):
        return self.fc(self.convnet(x).flatten(1))


NETS = {"embedding-net": EmbeddingNet, "koch-siamese": KochSiamese, "lenet-hadsell": LenetHadsell}


def dist(a, b):
    return torch.sqrt(((a - b) ** 2).sum(1) + EPS)


def pairwise(e):  # sqrt(max(0, |a|^2 + |b|^2 - 2ab) + eps), one GEMM, as loss::pairwise_distance
    sq = (e * e).sum(1, keepdim=True)
    return (sq + sq.t() - 2 * e @ e.t()).clamp_min(0) .add(EPS).sqrt()


def online_triplet(e, labels, margin, mining):
    lab = torch.from_numpy(labels)
    same = lab[:, None] == lab[None, :]
    eye = torch.eye(len(lab), dtype=torch.bool)
    pos, neg = (same & ~eye).float(), (~same).float()
    d = pairwise(e)
    if mining == "batch-hard":
        hp = (d * pos).max(1).values
        hn = (d + (1 - neg) * FAR).min(1).values
        has = (pos.sum(1) > 0.5).float()
        return (F.relu(hp - hn + margin) * has).sum() / has.sum().clamp_min(1)
    # semi-hard (FaceNet / TF triplet_semihard_loss), as triplet.rs does it
    n = len(lab)
    d_ap, d_an = d.reshape(n, n, 1), d.reshape(n, 1, n)
    cand = (d_an.detach() > d_ap.detach()) & (neg.reshape(n, 1, n) > 0.5)
    outside = d_an.expand(n, n, n).masked_fill(~cand, FAR).min(2).values
    inside = (d * neg).max(1, keepdim=True).values.expand(n, n)
    chosen = torch.where(cand.any(2), outside, inside)
    return (F.relu(d - chosen + margin) * pos).sum() / pos.sum().clamp_min(1)


def make_step(loss, net, head, opt, x, y, margin, rng, batch):
    n, n_classes = len(y), int(y.max()) + 1
    by_class = [np.flatnonzero(y == c) for c in range(n_classes)]
    not_class = [np.flatnonzero(y != c) for c in range(n_classes)]
    p_cls = min(n_classes, max(batch // 4, 2))
    k_per = max(batch // p_cls, 2)

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
            out = F.cross_entropy(logits, torch.from_numpy(y[idx]))
        elif loss in ("bce", "contrastive"):
            a, b, same = pairs()
            e = net(x[np.concatenate([a, b])])
            ea, eb = e[:batch], e[batch:]
            if loss == "bce":  # Koch: |f1 - f2| -> linear -> sigmoid, target 1 = same
                out = F.binary_cross_entropy_with_logits(head((ea - eb).abs()).squeeze(1), same)
            else:  # Hadsell: y = 1 same; y d^2 + (1 - y) max(0, m - d)^2
                d = dist(ea, eb)
                out = (same * d ** 2 + (1 - same) * F.relu(margin - d) ** 2).mean()
        elif loss == "triplet":  # random triplets, plain distances
            a = rng.integers(0, n, batch)
            p = np.array([rng.choice(by_class[y[i]]) for i in a])
            neg = np.array([rng.choice(not_class[y[i]]) for i in a])
            e = net(x[np.concatenate([a, p, neg])])
            ea, ep, en = e[:batch], e[batch : 2 * batch], e[2 * batch :]
            out = F.relu(dist(ea, ep) - dist(ea, en) + margin).mean()
        else:  # online mining on a P x K batch
            classes = rng.choice(n_classes, p_cls, replace=False)
            idx = np.concatenate([rng.choice(by_class[c], k_per, replace=len(by_class[c]) < k_per)
                                  for c in classes])
            out = online_triplet(net(x[idx]), y[idx], margin, loss.removeprefix("triplet-"))
        out.backward()
        opt.step()
        return out.item()

    anchors = p_cls * k_per if loss.startswith("triplet-") else batch
    return step, anchors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--network", default="embedding-net", choices=sorted(NETS))
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per repeat")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--losses", default="ce,bce,contrastive,triplet")
    ap.add_argument("--limit", type=int, help="keep this many training images (random, seed 0), "
                    "as the worker's train_limit does, so both processes hold the same data")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, labels = load(args.data, args.size, args.limit)
    h, w = x.shape[2:]
    n_classes = int(labels.max()) + 1
    for loss in args.losses.split(","):
        net = NETS[args.network](h, w, args.dim)
        head = (nn.Sequential(nn.PReLU(), nn.Linear(args.dim, n_classes)) if loss == "ce"
                else nn.Linear(args.dim, 1))
        opt = torch.optim.Adam(list(net.parameters()) + list(head.parameters()), lr=1e-3)
        step, anchors = make_step(loss, net, head, opt, x, labels, 1.0, np.random.default_rng(0),
                                  args.batch)
        for _ in range(args.warmup):
            step()
        rates = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates.append(args.steps * anchors / (time.perf_counter() - t))
        print(json.dumps({"impl": "pytorch", "version": torch.__version__, "threads": args.threads,
                          "network": args.network, "loss": loss, "batch": args.batch,
                          "dim": args.dim, "input": [int(h), int(w)],
                          "samples_per_sec": round(statistics.median(rates), 1),
                          "runs": [round(r, 1) for r in rates]}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
