#!/usr/bin/env bash
# Static int8 .pte / .ptl: the torch quantizers' stock HistogramObserver against --calib-method auto (ranges chosen
# per tensor by output-weighted error, exporter/quantize/observer_ranges.py), on the trained fixture and its x50
# outlier twin (benchmarks/outlier_model.py: same fp32 function); the rule alone (SmoothQuant off) and with
# edgeclip's defaults (SmoothQuant 0.5).  Accuracy on all 10,000 test images in one bench run.  Needs ../shared.
set -euo pipefail
W=${WORK:-/tmp/edgeclip-calib-torch}
. benchmarks/outlier_pair.sh
rm -rf "$W/out"; mkdir -p "$W/out"
for M in fixture hostile; do
  for SQ in 0 0.5; do
    for C in histogram auto; do
      cm=$([ "$C" = auto ] && echo auto || echo percentile)    # any non-auto method leaves the torch quantizers' own
      edgeclip export --model "$(model_dir "$M")" --out "$W/out" --format pte --quant int8 --scheme static --calib-method "$cm" \
        --smoothquant "$SQ" --min-agreement 0 --name "$M-pte-static-$C-sq$SQ" --json > /dev/null
      edgeclip export --model "$(model_dir "$M")" --out "$W/out" --format ptl --backend qnnpack --quant int8 --scheme static \
        --calib-method "$cm" --smoothquant "$SQ" --min-agreement 0 --name "$M-ptl-qnnpack-static-$C-sq$SQ" --json > /dev/null
    done
  done
done
edgeclip bench --out "$W/out" --target cpu --threads "$THREADS" --rounds 1 --reps 3 --report-dir benchmarks/results/calib_torch "$@"
