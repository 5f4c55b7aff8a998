#!/usr/bin/env bash
# Codec figures (docs/figures.md, "Codecs in the loop"): Fashion-MNIST, MLP 784-256-10, 8 workers,
# Dirichlet(0.5), H = 50, ROUNDS (default 20) rounds, at the DiLoCo paper's outer step and plain
# error feedback (outer lr 0.7, μ 0.9, β 1, as the table in docs/figures.md was measured): final
# test accuracy and bytes per worker for each codec, then the default setting of a cohort
# (topk:0.03/m+q1, outer lr 1, μ 0.8, β 0.9).
# Usage: scripts/codec-figures.sh [OUTDIR]   (env: DATA=DIR, the full set; ROUNDS=20; BIN=bin/cohort)
# A result already in OUTDIR is not recomputed: remove it to re-run.
set -euo pipefail
out=${1:-out/codec-figures}
bin=${BIN:-bin/cohort}
mkdir -p "$out"
for codec in fp32 fp16 q8 q4 topk:0.05+q4 topk:0.01+q4 topk:0.01+q2 lowrank:4+q8 topk:0.03/m+q1; do
  name=$(echo "$codec" | tr ':+/' '_-_')
  if [ ! -s "$out/$name.json" ]; then
    "$bin" --log-level warn train --model mlp --mode diloco --workers 8 --inner-steps 50 --rounds ${ROUNDS:-20} \
      --partition dirichlet:0.5 --seed 1 ${DATA:+--data "$DATA"} --codec "$codec" \
      --outer-lr 0.7 --outer-momentum 0.9 --ef-decay 1 --json | tail -n 1 > "$out/$name.json.tmp"
    mv "$out/$name.json.tmp" "$out/$name.json"
  fi
  jq -r '[.codec, .final_val_accuracy, .bytes_per_worker] | @tsv' "$out/$name.json"
done
# The default setting of a cohort (outer lr 1, momentum 0.8, error-feedback decay 0.9):
if [ ! -s "$out/tuned.json" ]; then
  "$bin" --log-level warn train --model mlp --mode diloco --workers 8 --inner-steps 50 --rounds ${ROUNDS:-20} \
    --partition dirichlet:0.5 --seed 1 ${DATA:+--data "$DATA"} --codec topk:0.03/m+q1 --ef-decay 0.9 \
    --outer-lr 1 --outer-momentum 0.8 --json | tail -n 1 > "$out/tuned.json.tmp"
  mv "$out/tuned.json.tmp" "$out/tuned.json"
fi
jq -r '[.codec + " (tuned)", .final_val_accuracy, .bytes_per_worker] | @tsv' "$out/tuned.json"
