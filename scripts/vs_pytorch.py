#!/usr/bin/python3
"""PyTorch (CPU) counterpart of Cohort's BenchmarkTrainStep (trainer/step_bench_test.go).

One training step is zero_grad(set_to_none=True), forward, cross-entropy, backward, (GPT only)
clip_grad_norm_(1.0), AdamW(lr 1e-3) step, on a fixed random batch:

  mlp  nn.Sequential(Linear(784, 256), ReLU, Linear(256, 10)) at batch 64, in samples/s
  gpt  nanoGPT's decoder (token + learned position embeddings, 4 pre-LayerNorm blocks of causal
       self-attention with 4 heads written as matmul + mask + softmax, a 4x GELU MLP, final
       LayerNorm, lm_head tied to wte, biases, dropout 0), vocab 256, context 64, width 128, at
       batch 12 (768 tokens), in tokens/s

After --warmup steps it times --steps steps, or as many as fill --seconds when --steps is 0, and
prints one JSON line per model on stdout.

Usage: vs_pytorch.py [--threads T] [--models mlp,gpt] [--seconds 3 | --steps N] [--warmup 5]
"""

import argparse
import json
import math
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    sys.exit("vs_pytorch.py: this python has no torch (Debian: apt-get install python3-torch)")


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x, y):
        return F.cross_entropy(self.net(x), y)


class CausalSelfAttention(nn.Module):
    def __init__(self, width, heads, context):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)
        lower = torch.tril(torch.ones(context, context, dtype=torch.bool))
        self.register_buffer("allowed", lower.view(1, 1, context, context), persistent=False)

    def forward(self, x):
        b, t, d = x.shape
        hd = d // self.heads
        q, k, v = self.c_attn(x).split(d, dim=2)
        # [b, t, d] -> [b, heads, t, hd]
        q = q.view(b, t, self.heads, hd).transpose(1, 2)
        k = k.view(b, t, self.heads, hd).transpose(1, 2)
        v = v.view(b, t, self.heads, hd).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        scores = scores.masked_fill(~self.allowed[:, :, :t, :t], float("-inf"))
        y = torch.matmul(F.softmax(scores, dim=-1), v)
        y = y.transpose(1, 2).contiguous().view(b, t, d)
        return self.c_proj(y)


class FeedForward(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        # Cohort's GPT uses the tanh form of GELU; nanoGPT's nn.GELU() is the erf form, of the
        # same cost here.
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, width, heads, context):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, context)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = FeedForward(width)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, layers=4, width=128, heads=4, context=64, vocab=256):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.h = nn.ModuleList(Block(width, heads, context) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections, GPT-2's scaled init
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * layers))

    def forward(self, tokens, targets):
        t = tokens.shape[1]
        pos = torch.arange(t, dtype=torch.long)
        x = self.wte(tokens) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def workload(name, gen):
    """The model, its fixed batch, the clip norm (0: none), the units per step and their name."""
    if name == "mlp":
        batch = 64
        x = torch.randn(batch, 784, generator=gen)
        y = torch.randint(0, 10, (batch,), generator=gen)
        return MLP(), (x, y), 0.0, batch, "samples/s"
    if name == "gpt":
        batch, context, vocab = 12, 64, 256
        tokens = torch.randint(0, vocab, (batch, context), generator=gen)
        targets = torch.randint(0, vocab, (batch, context), generator=gen)
        return GPT(context=context, vocab=vocab), (tokens, targets), 1.0, batch * context, "tokens/s"
    raise ValueError(f"unknown model {name!r}, want mlp or gpt")


def measure(name, args):
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(2)
    model, inputs, clip, units, unit = workload(name, gen)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(*inputs)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    steps = 0
    start = time.perf_counter()
    while True:
        loss = step()
        steps += 1
        elapsed = time.perf_counter() - start
        if (args.steps > 0 and steps >= args.steps) or (args.steps <= 0 and elapsed >= args.seconds):
            break
    return {
        "model": name,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "seconds": round(elapsed, 4),
        "ms_per_step": round(1000 * elapsed / steps, 3),
        "rate": round(steps * units / elapsed, 1),
        "unit": unit,
        "loss": round(float(loss), 4),
        "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--models", default="mlp,gpt", help="comma-separated: mlp, gpt (default both)")
    ap.add_argument("--seconds", type=float, default=3.0, help="time at least this long (default 3)")
    ap.add_argument("--steps", type=int, default=0, help="time exactly this many steps (0: use --seconds)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    args = ap.parse_args()
    if args.threads < 1:
        ap.error("--threads must be ≥ 1")
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    for name in filter(None, (m.strip() for m in args.models.split(","))):
        try:
            result = measure(name, args)
        except ValueError as e:
            ap.error(str(e))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
