#!/usr/bin/env python3
"""Load a `cohort export` file into PyTorch strictly and run one forward pass.

    pip install torch            # the safetensors package is optional
    python3 scripts/check-export.py model.safetensors
    python3 scripts/check-export.py model.safetensors --nanogpt PATH/TO/nanoGPT   # GPT models

An MLP spec (mlp:784-256-10) is loaded into nn.Sequential(Linear, ReLU, ..., Linear) with
load_state_dict(strict=True). A GPT spec (gpt:L-D-NH-T) is loaded into nanoGPT's GPT (model.py
from the directory given with --nanogpt, GPTConfig(vocab_size=256 or the spec's -v<Vocab>, bias=True)) strictly; without
--nanogpt the script checks the state dict's names, shapes and the lm_head/wte tie only. Cohort's
GPT uses the tanh approximation of GELU and nanoGPT the exact one, so logits agree with Cohort's
to a few decimal places, not bit for bit.
"""
import argparse
import json
import struct
import sys

import torch


def load(path):
    """Return (tensors, metadata), with the safetensors package if installed, else by hand."""
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(path), meta
    except ImportError:
        pass
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n :]
    tensors = {}
    for name, e in header.items():
        assert e["dtype"] == "F32", (name, e["dtype"])
        b, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:end]), dtype=torch.float32)
        tensors[name] = t.reshape(e["shape"])
    return tensors, meta


def gpt_names(L):
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(L):
        p = f"transformer.h.{i}."
        for s in ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                  "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                  "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]:
            names.append(p + s)
    return names + ["transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--nanogpt", help="directory holding nanoGPT's model.py")
    args = ap.parse_args()
    sd, meta = load(args.file)
    spec = meta["cohort.spec"]
    print(f"{args.file}: {spec}, cohort {meta['cohort.cohort']}, round {meta['cohort.round']}, "
          f"model hash {meta['cohort.model_hash'][:16]}…")
    kind, rest = spec.split(":", 1)
    fields = rest.split("-")
    vocab = 256
    if kind == "gpt" and len(fields) == 5:  # gpt:L-D-NH-T-v<Vocab>
        vocab = int(fields.pop()[1:])
    sizes = [int(x) for x in fields]
    if kind == "mlp":
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
            if i + 2 < len(sizes):
                layers.append(torch.nn.ReLU())
        model = torch.nn.Sequential(*layers)
        model.load_state_dict(sd, strict=True)
        y = model(torch.rand(2, sizes[0]))
        print("loaded strictly into nn.Sequential; logits of two random inputs:", tuple(y.shape))
        return
    if kind != "gpt":
        sys.exit(f"unknown spec {spec}")
    L, D, NH, T = sizes
    want = gpt_names(L)
    assert sorted(sd) == sorted(want), set(sd) ^ set(want)
    assert torch.equal(sd["lm_head.weight"], sd["transformer.wte.weight"]), "lm_head is not tied to wte"
    assert tuple(sd["transformer.h.0.attn.c_attn.weight"].shape) == (3 * D, D)
    if not args.nanogpt:
        print("names, shapes and the lm_head tie match nanoGPT's GPT; pass --nanogpt DIR to load it")
        return
    sys.path.insert(0, args.nanogpt)
    from model import GPT, GPTConfig

    model = GPT(GPTConfig(block_size=T, vocab_size=vocab, n_layer=L, n_head=NH, n_embd=D, dropout=0.0, bias=True))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # nanoGPT registers a causal-mask buffer "attn.bias" only without flash attention (torch < 2.0).
    missing = [k for k in missing if not k.endswith(".attn.bias")]
    assert not missing and not unexpected, (missing, unexpected)
    model.eval()
    idx = torch.randint(0, vocab, (1, T))
    logits, _ = model(idx)
    print("loaded into nanoGPT's GPT (all parameters); logits:", tuple(logits.shape))


if __name__ == "__main__":
    main()
