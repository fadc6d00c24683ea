#!/usr/bin/env bash
# The int8 table in benchmarks/README.md: every int8 route with SmoothQuant off / on, on the trained fixture and
# on the same fixture with x50 outlier channels injected (benchmarks/outlier_model.py: same fp32 function), plus
# accuracy control (--max-drop), all 10,000 test images, one bench run.  Needs ../shared.
set -euo pipefail
W=${WORK:-/tmp/edgeclip-int8}
. benchmarks/outlier_pair.sh
for M in fixture hostile; do
  SRC=$(model_dir "$M")
  for SQ in 0 0.5; do
    T="$M-sq$SQ"
    E="--model $SRC --out $W/out --quant int8 --smoothquant $SQ --json"
    edgeclip export $E --format onnx,pte --scheme dynamic --name "$T-dyn" > /dev/null
    edgeclip export $E --format onnx,pte --scheme static --min-agreement 0 --name "$T-static" > /dev/null
    edgeclip export $E --format ptl --backend qnnpack --name "$T-dyn-qnnpack" > /dev/null
  done
  # accuracy control without SmoothQuant: what layer fallback alone buys
  edgeclip export --model "$SRC" --out "$W/out" --quant int8 --smoothquant 0 --max-drop 0.3 --format pte --scheme static \
    --name "$M-sq0-maxdrop0.3-static" --json > /dev/null
done
edgeclip bench --out "$W/out" --target cpu --threads "$THREADS" --rounds 3 --reps 5 --report-dir benchmarks/results/fixture_int8 "$@"
