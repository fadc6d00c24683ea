#!/usr/bin/env bash
# Token merging (ToMe, --token-merge R) on the trained fixture, as shipped files: accuracy on the 10,000 test images
# and batch-1 latency of int8 .onnx / .pte files with R = 4 and 8 tokens merged per block, beside token dropping
# at a similar token budget and the unmerged files, all in one interleaved bench run; then the eager sweep of both
# token series.  Needs ../shared.  Run from the repository root on an otherwise idle machine (~25 min on 2 cores).
set -euo pipefail
FIX=${FIXTURE:-../shared/fixtures/tiny_clip_fmnist}
DATA=${DATA:-fashion-mnist:../shared/data/fashion_mnist}
W=${WORK:-/tmp/edgeclip-tome}
THREADS=${THREADS:-2}
REPORT=${REPORT:-benchmarks/results/fixture_tome}
rm -rf "$W"; mkdir -p "$W" "$REPORT"
EXPORT=(edgeclip export --model "$FIX" --data "$DATA" --out "$W/out" --json)

"${EXPORT[@]}" --format onnx > /dev/null                                       # fp32 .onnx
"${EXPORT[@]}" --format onnx,pte --quant int8 > /dev/null                      # int8, no token reduction
for R in 4 8; do                                                               # merged: 64 patch tokens -> 40 / 16 by the last block
  "${EXPORT[@]}" --format onnx,pte --quant int8 --token-merge "$R" --accept-drop 100 > /dev/null
done
# dropping half the tokens at blocks 2 and 4 (64 -> 32 -> 16): FLOPs between the two merge settings
"${EXPORT[@]}" --format onnx,pte --quant int8 --token-keep 0.5 --accept-drop 100 > /dev/null

edgeclip bench "$W/out" --data "$DATA" --threads "$THREADS" --rounds 10 --reps 10 --peers --report-dir "$REPORT"
edgeclip sweep --model "$FIX" --data "$DATA" --series merge-vision,tokens-vision --eval-size 0 --out "$REPORT/sweep" --json > /dev/null
