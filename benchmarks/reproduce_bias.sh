#!/usr/bin/env bash
# Static int8 ONNX with and without --bias-correction, on the trained fixture and on its x50-outlier twin
# (benchmarks/outlier_model.py: same fp32 function): first with the range rule alone (SmoothQuant off, no node kept
# float, percentile ranges), then with edgeclip's defaults (SmoothQuant 0.5, 3 sensitive nodes float).  10,000 test
# images, one bench run.  Needs ../shared.
set -euo pipefail
W=${WORK:-/tmp/edgeclip-bias}
. benchmarks/outlier_pair.sh
for M in fixture hostile; do
  for B in no-bias-correction bias-correction; do
    for R in alone defaults; do
      RULE=(); [ "$R" = alone ] && RULE=(--smoothquant 0 --sensitive-float 0)
      edgeclip export --model "$(model_dir "$M")" --out "$W/out" --format onnx --quant int8 --scheme static --"$B" \
        "${RULE[@]}" --min-agreement 0 --name "$M-static-$R-$B" --json > /dev/null
    done
  done
done
edgeclip bench --out "$W/out" --target cpu --threads "$THREADS" --rounds 1 --reps 3 --report-dir benchmarks/results/bias_correction "$@"
