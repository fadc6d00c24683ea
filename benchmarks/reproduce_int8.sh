#!/usr/bin/env bash
# The int8 table in benchmarks/README.md: every int8 route with SmoothQuant off / on, on the trained fixture and
# on the same fixture with x50 outlier channels injected (benchmarks/outlier_model.py: same fp32 function), plus
# accuracy control (--max-drop) and 4-bit weights, all 10,000 test images, one bench run.  Needs ../shared.
# The built-in model instead of the fixture:
#   FIXTURE=models/weights/edgeclip_fmnist PREFIX=builtin- REPORT=benchmarks/results/builtin_int8 bash benchmarks/reproduce_int8.sh
set -euo pipefail
W=${WORK:-/tmp/edgeclip-int8}
P=${PREFIX:-}
REPORT=${REPORT:-benchmarks/results/fixture_int8}
. benchmarks/outlier_pair.sh
for M in fixture hostile; do
  SRC=$(model_dir "$M")
  for SQ in 0 0.5; do
    T="$P$M-sq$SQ"
    # the naive (sq0) files are written past the fidelity gate so they can be measured, not refused
    E="--model $SRC --out $W/out --quant int8 --smoothquant $SQ --json"
    if [ "$SQ" = 0 ]; then E="$E --min-agreement 0"; fi
    edgeclip export $E --format onnx,pte --scheme dynamic --name "$T-dyn" > /dev/null
    edgeclip export $E --format onnx,pte --scheme static --min-agreement 0 --name "$T-static" > /dev/null
    edgeclip export $E --format ptl --backend qnnpack --name "$T-dyn-qnnpack" > /dev/null
  done
  # accuracy control without SmoothQuant: what layer fallback alone buys
  edgeclip export --model "$SRC" --out "$W/out" --quant int8 --smoothquant 0 --max-drop 0.3 --format pte --scheme static \
    --name "$P$M-sq0-maxdrop0.3-static" --json > /dev/null \
    || echo "$P$M --max-drop 0.3 without SmoothQuant: refused (the line above says why)" >&2
  # 4-bit weights (int8 dynamic activations): .onnx MatMulNBits and .pte 8da4w, group 32
  edgeclip export --model "$SRC" --out "$W/out" --quant int4 --format onnx,pte --name "$P$M-int4" --json > /dev/null \
    || echo "$P$M int4: refused by its fidelity gate (the line above says why)" >&2
done
edgeclip bench --out "$W/out" --target cpu --threads "$THREADS" --rounds 3 --reps 5 --report-dir "$REPORT" "$@"
