#!/usr/bin/env bash
# Static int8 ONNX: the activation-range rule measured alone (SmoothQuant off, no node kept float) with each
# --calib-method, on the trained fixture and on the same fixture with x50 outlier channels injected
# (benchmarks/outlier_model.py: same fp32 function); then percentile vs auto with edgeclip's defaults
# (SmoothQuant 0.5, 3 sensitive nodes float) on the outlier model.  10,000 test images, one bench run.  Needs ../shared.
set -euo pipefail
W=${WORK:-/tmp/edgeclip-calib}
. benchmarks/outlier_pair.sh
for M in fixture hostile; do
  for C in minmax percentile entropy auto; do
    edgeclip export --model "$(model_dir "$M")" --out "$W/out" --format onnx --quant int8 --scheme static --calib-method "$C" \
      --smoothquant 0 --sensitive-float 0 --min-agreement 0 --name "$M-static-$C-alone" --json > /dev/null
  done
done
for C in percentile auto; do
  edgeclip export --model "$(model_dir hostile)" --out "$W/out" --format onnx --quant int8 --scheme static --calib-method "$C" \
    --min-agreement 0 --name "hostile-static-$C-defaults" --json > /dev/null
done
edgeclip bench --out "$W/out" --target cpu --threads "$THREADS" --rounds 1 --reps 3 --report-dir benchmarks/results/calib_methods "$@"
