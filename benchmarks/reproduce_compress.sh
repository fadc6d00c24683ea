#!/usr/bin/env bash
# Regenerate the compression numbers in benchmarks/README.md (about 40 minutes on a 2-core CPU).
# Needs ../shared (the trained tiny_clip_fmnist fixture and Fashion-MNIST). Run from the repository root on an
# otherwise idle machine (latencies are interleaved, but a busy machine still widens them).
set -euo pipefail
FIX=${FIXTURE:-../shared/fixtures/tiny_clip_fmnist}
W=${WORK:-/tmp/edgeclip-compress}
THREADS=${THREADS:-2}
rm -rf "$W"; mkdir -p "$W" benchmarks/results

# 1. The sensitivity study: every series, all 10,000 test images per point.
edgeclip sweep --model "$FIX" --eval-size 0 --out benchmarks/results/fixture_sweep --json > /dev/null

# 2. The target recipe: two vision blocks chosen greedily on calibration images, healed by distillation,
#    then int8 in every format; beside it the uncompressed int8 artifacts, all measured in one bench run.
#    The compression-cost gate refuses more than 1 pt by default: the target allows 1.5 pt (--accept-drop 1.5), and
#    the unhealed comparison row is costly on purpose (--accept-drop 100).
C="--prune-blocks vision:auto:2 --heal-steps 500 --heal-lr 2e-4 --accept-drop 1.5"
edgeclip export --model "$FIX" --format all --quant int8 --backend fbgemm --out "$W/target" --json > /dev/null
edgeclip export --model "$FIX" --format all --quant int8 --backend fbgemm $C --out "$W/target" --json > "$W/target.json"
edgeclip export --model "$FIX" --format onnx --quant int8 --prune-blocks vision:auto:2 --accept-drop 100 --out "$W/target" --json > /dev/null  # unhealed
edgeclip bench --out "$W/target" --threads "$THREADS" --rounds 10 --reps 10 --report-dir benchmarks/results/fixture_compressed
