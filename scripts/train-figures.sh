#!/usr/bin/env bash
# Issue-2 figures: Fashion-MNIST accuracy, 8 workers, DDP vs DiLoCo at H ∈ {10, 50, 200}, IID and
# Dirichlet(0.5), the same total samples (STEPS inner steps per worker), and the bytes ratio.
# Usage: scripts/train-figures.sh [OUTDIR]   (env: STEPS=2000 DATA= (default: full set if installed))
set -euo pipefail
out=${1:-out/train-figures}
steps=${STEPS:-2000}
bin=${BIN:-bin/cohort}
mkdir -p "$out"
run() { # name args...
  local name=$1; shift
  if [ ! -s "$out/$name.json" ]; then
    "$bin" --log-level warn train --workers 8 --seed 1 --outer-lr 0.7 --outer-momentum 0.9 --ef-decay 1 ${DATA:+--data "$DATA"} "$@" --json | tail -n 1 > "$out/$name.json.tmp"
    mv "$out/$name.json.tmp" "$out/$name.json"
  fi
  echo "$name $(cat "$out/$name.json" | head -c 400)"
}
for part in iid dirichlet:0.5; do
  p=${part/:/}
  run "ddp-$p" --mode ddp --inner-steps 50 --rounds $((steps / 50)) --partition "$part"
  for h in 10 50 200; do
    run "diloco-$p-h$h" --mode diloco --inner-steps "$h" --rounds $((steps / h)) --partition "$part"
  done
done
