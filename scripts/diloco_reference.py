#!/usr/bin/env python3
"""PyTorch reference for `cohort train` on Fashion-MNIST: DiLoCo and synchronous data-parallel.

MLP 784-256-10 (ReLU), K workers on a Dirichlet(alpha) label partition (or IID), batches drawn
from each worker's shard without replacement (one shuffle per epoch, wrapping into the next),
pixels scaled to [0, 1]; test accuracy on the 10,000 test images at the global model.

DiLoCo: each round every worker starts from the global model, takes H AdamW steps on its own
batches, and sends Δ_i = global − local; the mean Δ is the gradient of an outer
torch.optim.SGD(nesterov=True). DDP: one model, each step the mean of the K workers' gradients
(one batch each) drives one AdamW step.

The partition is Cohort's (datasets.Dirichlet / datasets.IID) bit for bit: the PCG-DXSM
generator of Go's math/rand/v2 is reimplemented below, so the same --seed gives the same shards.
Batch order and the initial weights follow Cohort too when asked (--sampler cohort, --init cohort);
by default they are PyTorch's own (torch.randperm, nn.Linear's default initialisation).

Flags that mimic one Cohort choice at a time (to find which one matters):
  --init torch|cohort          nn.Linear default U(±1/√in) weights and biases | He-uniform hidden,
                               U(±1/√in) output, zero biases, from Cohort's seeded generator
  --weight-decay WD            AdamW decoupled weight decay (torch's default 0.01; Cohort's 0)
  --inner-state keep|reset     AdamW moments and step count kept per worker across rounds | reset
  --sampler torch|cohort       per-epoch torch.randperm | Cohort's ImageSource order exactly
  --partition-rng cohort|numpy the Dirichlet shards of Cohort's partitioner | numpy draws

Usage: python3 scripts/diloco_reference.py --data DIR --mode diloco --seed 7 [flags]
(a Python 3 with PyTorch and numpy; measured with torch 1.13)
Prints one JSON line: {"mode":..., "seed":..., "final_val_accuracy":..., "history":[...]}.
"""

import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch

M64 = (1 << 64) - 1


# ---- Go's math/rand/v2 PCG (DXSM output), as Cohort seeds it ------------------------------


class PCG:
    MUL_HI, MUL_LO = 2549297995355413924, 4865540595714422341
    INC_HI, INC_LO = 6364136223846793005, 1442695040888963407
    MUL = (MUL_HI << 64) | MUL_LO
    INC = (INC_HI << 64) | INC_LO
    M128 = (1 << 128) - 1

    def __init__(self, seed1, seed2):
        self.state = ((seed1 & M64) << 64) | (seed2 & M64)

    def uint64(self):
        self.state = (self.state * self.MUL + self.INC) & self.M128
        hi, lo = self.state >> 64, self.state & M64
        hi ^= hi >> 32
        hi = (hi * 0xDA942042E4DD58B5) & M64
        hi ^= hi >> 48
        hi = (hi * (lo | 1)) & M64
        return hi


def lemire(src, n):
    """A uniform integer in [0, n): Go's Lemire reduction (datasets.rng.intn, Rand.uint64n)."""
    prod = src.uint64() * n
    hi, lo = prod >> 64, prod & M64
    if lo < n:
        thresh = ((1 << 64) - n) % n
        while lo < thresh:
            prod = src.uint64() * n
            hi, lo = prod >> 64, prod & M64
    return hi


class GoRand:
    """math/rand/v2.Rand over a PCG: the calls Cohort's sources and initialisers make."""

    def __init__(self, seed1, seed2):
        self.src = PCG(seed1, seed2)

    def uint64n(self, n):
        if n & (n - 1) == 0:
            return self.src.uint64() & (n - 1)
        return lemire(self.src, n)

    def shuffle(self, s):
        for i in range(len(s) - 1, 0, -1):
            j = self.uint64n(i + 1)
            s[i], s[j] = s[j], s[i]

    def float64(self):
        return float(self.src.uint64() & ((1 << 53) - 1)) / (1 << 53)


class DatasetsRNG:
    """datasets.rng: the partitioners' generator."""

    def __init__(self, seed, stream):
        self.src = PCG(seed, stream)

    def intn(self, n):
        return lemire(self.src, n)

    def float(self):  # (0, 1]
        return float((self.src.uint64() >> 11) + 1) * (1.0 / (1 << 53))

    def normal(self):
        u1, u2 = self.float(), self.float()
        return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)

    def shuffle(self, s):
        for i in range(len(s) - 1, 0, -1):
            j = self.intn(i + 1)
            s[i], s[j] = s[j], s[i]

    def log_gamma(self, a):
        if a < 1:
            return self.log_gamma(a + 1) + math.log(self.float()) / a
        d = a - 1.0 / 3
        c = 1 / math.sqrt(9 * d)
        while True:
            x = self.normal()
            v = 1 + c * x
            if v <= 0:
                continue
            v = v * v * v
            u = self.float()
            if u < 1 - 0.0331 * x * x * x * x or math.log(u) < 0.5 * x * x + d * (1 - v + math.log(v)):
                return math.log(d * v)

    def dirichlet(self, k, alpha):
        p = [self.log_gamma(alpha) for _ in range(k)]
        mx = max(p)
        p = [math.exp(x - mx) for x in p]
        s = 0.0
        for x in p:
            s += x
        return [x / s for x in p]


STREAM_IID, STREAM_DIRICHLET = 0x1D1D_0001, 0xD1C1_0002
DIRICHLET_MIN_PART = 10


def largest_remainder(q, total):
    counts = [int(math.floor(p * total)) for p in q]
    left = total - sum(counts)
    rems = [(p * total - math.floor(p * total), j) for j, p in enumerate(q)]
    rems.sort(key=lambda r: -r[0])  # stable: lowest index first on ties
    i = 0
    while left > 0:
        counts[rems[i][1]] += 1
        left -= 1
        i = (i + 1) % len(rems)
    while left < 0:
        j = counts.index(max(counts))
        counts[j] -= 1
        left += 1
    return counts


def dirichlet_partition(labels, classes, k, alpha, seed):
    """datasets.Dirichlet: per class, Dirichlet(alpha) proportions dealt by largest remainder,
    then the minimum-size rule; each part sorted."""
    by_class = [[] for _ in range(classes)]
    for i, l in enumerate(labels):
        by_class[l].append(i)
    r = DatasetsRNG(seed, STREAM_DIRICHLET)
    parts = [[[] for _ in range(classes)] for _ in range(k)]
    sizes = [0] * k
    for c, idx in enumerate(by_class):
        r.shuffle(idx)
        q = r.dirichlet(k, alpha)
        counts = largest_remainder(q, len(idx))
        off = 0
        for j, cnt in enumerate(counts):
            parts[j][c] = idx[off:off + cnt]
            sizes[j] += cnt
            off += cnt
    m = min(DIRICHLET_MIN_PART, len(labels) // k)
    while True:
        small = min(range(k), key=lambda j: (sizes[j], j))
        large = min(range(k), key=lambda j: (-sizes[j], j))
        if sizes[small] >= m:
            break
        c = min(range(classes), key=lambda cc: (-len(parts[large][cc]), cc))
        x = parts[large][c].pop()
        parts[small][c].append(x)
        sizes[large] -= 1
        sizes[small] += 1
    return [sorted(i for s in p for i in s) for p in parts]


def numpy_dirichlet_partition(labels, classes, k, alpha, seed):
    """The same semantics with numpy's generator (what a reference written from scratch would do):
    per class, proportions ~ Dirichlet(alpha) over the k parts, cut at the cumulative sums. Different
    draws from Cohort's for the same seed, so different shards."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    parts = [[] for _ in range(k)]
    for c in range(classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        q = rng.dirichlet([alpha] * k)
        cuts = (np.cumsum(q) * len(idx)).astype(int)[:-1]
        for j, s in enumerate(np.split(idx, cuts)):
            parts[j].extend(s.tolist())
    return [sorted(p) for p in parts]


def iid_partition(n, k, seed):
    perm = list(range(n))
    DatasetsRNG(seed, STREAM_IID).shuffle(perm)
    parts, off = [], 0
    for j in range(k):
        size = n // k + (1 if j < n % k else 0)
        parts.append(sorted(perm[off:off + size]))
        off += size
    return parts


# ---- data -------------------------------------------------------------------------------------


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(dirname):
    def pick(stem):
        for name in (stem + ".gz", stem):
            p = os.path.join(dirname, name)
            if os.path.exists(p):
                return p
        raise SystemExit(f"{stem} not found in {dirname}")

    xtr = read_idx(pick("train-images-idx3-ubyte"))
    ytr = read_idx(pick("train-labels-idx1-ubyte"))
    xte = read_idx(pick("t10k-images-idx3-ubyte"))
    yte = read_idx(pick("t10k-labels-idx1-ubyte"))

    def tensor(x):
        return torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / np.float32(255))

    return tensor(xtr), torch.from_numpy(ytr.astype(np.int64)), tensor(xte), torch.from_numpy(yte.astype(np.int64))


class Sampler:
    """Batches from one shard without replacement: a fresh permutation per epoch, a batch that
    reaches the end of an epoch continues into the next (Cohort's ImageSource)."""

    def __init__(self, idx, kind, seed, worker):
        self.idx = list(idx)
        self.kind = kind
        self.pos = 0
        if kind == "cohort":  # trainer.BuildTask: NewImageSource(train, p, seed*1000003+i+1)
            self.rng = GoRand((seed * 1000003 + worker + 1) & M64, 0x636F686F7274)
            self.order = list(self.idx)
        else:
            self.gen = torch.Generator().manual_seed(seed * 1000003 + worker + 1)
        self.shuffle()

    def shuffle(self):
        if self.kind == "cohort":
            self.rng.shuffle(self.order)
        else:
            self.order = [self.idx[i] for i in torch.randperm(len(self.idx), generator=self.gen).tolist()]
        self.pos = 0

    def next(self, n):
        out = []
        for _ in range(n):
            if self.pos == len(self.order):
                self.shuffle()
            out.append(self.order[self.pos])
            self.pos += 1
        return torch.tensor(out, dtype=torch.long)


# ---- model ------------------------------------------------------------------------------------


def make_model(sizes, init, seed):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i + 2 < len(sizes):
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    linears = [l for l in model if isinstance(l, torch.nn.Linear)]
    if init == "torch":
        torch.manual_seed(seed)
        for l in linears:
            l.reset_parameters()
    elif init == "cohort":  # nn.NewMLP: weights [in, out] in index order from one generator
        r = GoRand(seed, seed ^ 0x9E3779B97F4A7C15)
        for i, l in enumerate(linears):
            fan_in, fan_out = sizes[i], sizes[i + 1]
            lim = 1 / math.sqrt(fan_in) if i == len(linears) - 1 else math.sqrt(6 / fan_in)
            w = np.array([(2 * r.float64() - 1) * lim for _ in range(fan_in * fan_out)], dtype=np.float32)
            with torch.no_grad():
                l.weight.copy_(torch.from_numpy(w.reshape(fan_in, fan_out).T.copy()))
                l.bias.zero_()
    else:
        raise SystemExit(f"--init {init}: want torch or cohort")
    return model


def evaluate(model, x, y):
    with torch.no_grad():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y).item()
        acc = (logits.argmax(1) == y).float().mean().item()
    return loss, acc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="Fashion-MNIST directory (IDX files, .gz or not)")
    ap.add_argument("--mode", choices=["diloco", "ddp"], default="diloco")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--inner-steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.999))
    ap.add_argument("--eps", type=float, default=1e-8)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--outer-lr", type=float, default=0.7)
    ap.add_argument("--outer-momentum", type=float, default=0.9)
    ap.add_argument("--partition", default="dirichlet:0.5", help="iid or dirichlet:ALPHA")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--init", choices=["torch", "cohort"], default="torch")
    ap.add_argument("--inner-state", choices=["keep", "reset"], default="keep")
    ap.add_argument("--sampler", choices=["torch", "cohort"], default="torch")
    ap.add_argument("--partition-rng", choices=["cohort", "numpy"], default="cohort",
                    help="Dirichlet draws: Cohort's partitioner exactly, or numpy's generator")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--show-partition", action="store_true", help="print shard sizes and class counts to stderr")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    xtr, ytr, xte, yte = load(a.data)
    labels = ytr.tolist()
    if a.partition == "iid":
        parts = iid_partition(len(labels), a.workers, a.seed)
    elif a.partition.startswith("dirichlet:"):
        split = dirichlet_partition if a.partition_rng == "cohort" else numpy_dirichlet_partition
        parts = split(labels, 10, a.workers, float(a.partition.split(":", 1)[1]), a.seed)
    else:
        raise SystemExit(f"--partition {a.partition}: want iid or dirichlet:ALPHA")
    if a.show_partition:
        for j, p in enumerate(parts):
            counts = np.bincount(ytr[p].numpy(), minlength=10).tolist()
            print(f"shard {j}: {len(p)} samples, classes {counts}", file=sys.stderr)
    samplers = [Sampler(p, a.sampler, a.seed, j) for j, p in enumerate(parts)]

    sizes = [784, 256, 10]
    glob = make_model(sizes, a.init, a.seed)
    loss_fn = torch.nn.functional.cross_entropy

    def adamw(params):
        return torch.optim.AdamW(params, lr=a.lr, betas=tuple(a.betas), eps=a.eps, weight_decay=a.weight_decay)

    history = []
    start = time.time()
    if a.mode == "diloco":
        outer = torch.optim.SGD(glob.parameters(), lr=a.outer_lr, momentum=a.outer_momentum, nesterov=a.outer_momentum > 0)
        locals_ = [make_model(sizes, a.init, a.seed) for _ in range(a.workers)]
        inners = [adamw(m.parameters()) for m in locals_]
        for t in range(1, a.rounds + 1):
            deltas = [torch.zeros_like(p) for p in glob.parameters()]
            train_loss = 0.0
            for j, m in enumerate(locals_):
                with torch.no_grad():
                    for pl, pg in zip(m.parameters(), glob.parameters()):
                        pl.copy_(pg)
                if a.inner_state == "reset":
                    inners[j] = adamw(m.parameters())
                opt = inners[j]
                for _ in range(a.inner_steps):
                    b = samplers[j].next(a.batch)
                    opt.zero_grad()
                    loss = loss_fn(m(xtr[b]), ytr[b])
                    loss.backward()
                    opt.step()
                    train_loss += loss.item()
                with torch.no_grad():
                    for d, pl, pg in zip(deltas, m.parameters(), glob.parameters()):
                        d += (pg - pl) / a.workers
            outer.zero_grad()
            for p, d in zip(glob.parameters(), deltas):
                p.grad = d
            outer.step()
            vl, va = evaluate(glob, xte, yte)
            history.append({"round": t, "train_loss": train_loss / (a.workers * a.inner_steps), "val_loss": vl, "val_accuracy": va})
    else:
        opt = adamw(glob.parameters())
        for t in range(1, a.rounds + 1):
            train_loss = 0.0
            for _ in range(a.inner_steps):
                opt.zero_grad()
                for j in range(a.workers):
                    b = samplers[j].next(a.batch)
                    loss = loss_fn(glob(xtr[b]), ytr[b]) / a.workers
                    loss.backward()
                    train_loss += loss.item()
                opt.step()
            vl, va = evaluate(glob, xte, yte)
            history.append({"round": t, "train_loss": train_loss / a.inner_steps, "val_loss": vl, "val_accuracy": va})
    out = {k: getattr(a, k) for k in ("mode", "seed", "workers", "inner_steps", "rounds", "batch", "lr", "weight_decay",
                                       "outer_lr", "outer_momentum", "partition", "partition_rng", "init", "inner_state", "sampler")}
    out.update(final_val_loss=history[-1]["val_loss"], final_val_accuracy=history[-1]["val_accuracy"],
               wall_seconds=time.time() - start, shard_sizes=[len(p) for p in parts], history=history)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
