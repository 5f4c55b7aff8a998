#!/usr/bin/env bash
# Cohort's training step against PyTorch's on this CPU, at equal threads: BenchmarkTrainStep
# (trainer/step_bench_test.go) next to scripts/vs_pytorch.py, the same models, batches and AdamW
# step. For each repetition, model and thread count it runs PyTorch, then the pure-Go build, then
# the -tags openblas build (when ldconfig lists libopenblas), so the figures of one row are taken
# minutes apart at most, and prints one table of medians: ratio = Cohort / PyTorch (> 1: Cohort is
# faster).
#
# Usage: scripts/vs-pytorch.sh     (make vs-pytorch)
# Env:   BENCHTIME=3s   time per measurement: a Go -benchtime, "<n>s", "<n>ms" or "<n>x" (steps)
#        COUNT=3        repetitions; the table shows the median of each
#        MODELS="mlp gpt"   THREADS="1 2"
#        PYTHON=/usr/bin/python3 (needs torch)   GO=go
#        TORCH_OMP_WAIT_POLICY=PASSIVE  OMP_WAIT_POLICY of the PyTorch process: with OpenMP's
#                       default busy-waiting, 2 threads on a shared 2-core machine run tens of
#                       times slower than 1; PASSIVE is PyTorch's better setting there.
set -euo pipefail
cd "$(dirname "$0")/.."

benchtime=${BENCHTIME:-3s}
count=${COUNT:-3}
models=${MODELS:-mlp gpt}
models=${models//,/ }
threads=${THREADS:-1 2}
threads=${threads//,/ }
py=${PYTHON:-/usr/bin/python3}
go=${GO:-go}
omp_wait=${TORCH_OMP_WAIT_POLICY:-PASSIVE}

die() { echo "vs-pytorch: $*" >&2; exit 1; }

if ! "$py" -c 'import torch' 2>/dev/null; then
  die "$py has no torch: apt-get install python3-torch (or set PYTHON to a python with torch)"
fi
case $count in '' | *[!0-9]* | 0) die "COUNT=$count: want a positive integer" ;; esac
for m in $models; do
  case $m in mlp | gpt) ;; *) die "MODELS: unknown model $m, want mlp and/or gpt" ;; esac
done
for t in $threads; do
  case $t in '' | *[!0-9]* | 0) die "THREADS: $t is not a positive integer" ;; esac
done
# The same time (or step count) for PyTorch as for the Go benchmark.
case $benchtime in
  *[0-9]x) torch_time=(--steps "${benchtime%x}") ;;
  *[0-9]ms) torch_time=(--seconds "$(awk -v ms="${benchtime%ms}" 'BEGIN { print ms / 1000 }')") ;;
  *[0-9]s) torch_time=(--seconds "${benchtime%s}") ;;
  *) die "BENCHTIME=$benchtime: want e.g. 3s, 500ms or 20x" ;;
esac

builds=(purego)
if ldconfig -p 2>/dev/null | grep libopenblas >/dev/null; then  # not grep -q: under pipefail its early exit fails ldconfig (SIGPIPE)
  builds+=(openblas)
else
  echo "vs-pytorch: libopenblas not installed: the -tags openblas build is skipped" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for b in "${builds[@]}"; do
  tags=()
  [ "$b" = openblas ] && tags=(-tags openblas)
  echo "vs-pytorch: building the $b benchmark" >&2
  "$go" test -c "${tags[@]}" -o "$tmp/trainer-$b.test" ./trainer/ || die "building the $b benchmark failed"
done

results=$tmp/results # lines: model threads build cohort|pytorch rate unit
: >"$results"
for rep in $(seq "$count"); do
  for m in $models; do
    for t in $threads; do
      line=$(OMP_WAIT_POLICY=$omp_wait OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t \
        "$py" scripts/vs_pytorch.py --threads "$t" --models "$m" "${torch_time[@]}") ||
        die "vs_pytorch.py --threads $t --models $m failed"
      res=$("$py" -c 'import json, sys; r = json.loads(sys.argv[1]); print(r["rate"], r["unit"])' "$line") ||
        die "vs_pytorch.py printed no result: $line"
      rate=${res% *} unit=${res#* }
      echo "$m $t - pytorch $rate $unit" >>"$results"
      echo "vs-pytorch: run $rep/$count $m threads=$t pytorch: $rate $unit" >&2
      for b in "${builds[@]}"; do
        out=$(cd trainer && GOMAXPROCS=$t OPENBLAS_NUM_THREADS=$t "$tmp/trainer-$b.test" \
          -test.run '^$' -test.bench "^BenchmarkTrainStep\$/^$m\$" -test.benchtime "$benchtime" -test.count 1) ||
          die "BenchmarkTrainStep/$m ($b, GOMAXPROCS=$t) failed: $out"
        # BenchmarkTrainStep/mlp-2  375  3190000 ns/op  20060 samples/s  1425899 B/op  966 allocs/op
        res=$(awk '/^BenchmarkTrainStep\// {
            for (i = 3; i <= NF; i++) if ($i ~ /^(samples|tokens)\/s$/) { print $(i - 1), $i; exit } }' <<<"$out")
        [ -n "$res" ] || die "no rate in the output of BenchmarkTrainStep/$m ($b): $out"
        rate=${res% *} unit=${res#* }
        echo "$m $t $b cohort $rate $unit" >>"$results"
        echo "vs-pytorch: run $rep/$count $m threads=$t cohort $b: $rate $unit" >&2
      done
    done
  done
done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo
echo "Training step, median of $count (BENCHTIME=$benchtime); $(nproc) CPUs; torch $("$py" -c 'import torch; print(torch.__version__)'); $("$go" version | cut -d' ' -f3)"
printf '%-5s %7s  %-9s %14s %14s %7s  %s\n' model threads build cohort pytorch ratio unit
for m in $models; do
  for t in $threads; do
    pt=$(awk -v m="$m" -v t="$t" '$1 == m && $2 == t && $4 == "pytorch" { print $5 }' "$results" | median)
    for b in "${builds[@]}"; do
      co=$(awk -v m="$m" -v t="$t" -v b="$b" '$1 == m && $2 == t && $3 == b { print $5 }' "$results" | median)
      unit=$(awk -v m="$m" '$1 == m { print $6; exit }' "$results")
      awk -v m="$m" -v t="$t" -v b="$b" -v co="$co" -v pt="$pt" -v u="$unit" \
        'BEGIN { printf "%-5s %7s  %-9s %14.0f %14.0f %7.2f  %s\n", m, t, b, co, pt, co / pt, u }'
    done
  done
done
