#!/usr/bin/env bash
# Token merging on the ViT-B-32 image tower (open_clip, random weights: timing only, accuracy columns mean nothing):
# batch-1 latency of int8 .onnx / .pte files with R = 2 and 3 tokens merged per block (50 tokens: 49 patches + class
# token, 12 blocks), beside the unmerged int8 files and the naive routes (--peers), one interleaved bench run.
# Offline (no weights are downloaded). ~20 min on 2 cores; run on an otherwise idle machine.
set -euo pipefail
DATA=${DATA:-fashion-mnist:../shared/data/fashion_mnist}
W=${WORK:-/tmp/edgeclip-tome-vitb32}
THREADS=${THREADS:-2}
REPORT=${REPORT:-benchmarks/results/vitb32_tome}
rm -rf "$W"; mkdir -p "$W" "$REPORT"
EXPORT=(edgeclip export --model ViT-B-32 --pretrained none --data "$DATA" --verify-size 16 --out "$W/out" --json)
"${EXPORT[@]}" --format onnx,pte --quant int8 > /dev/null
for R in 2 3; do
  "${EXPORT[@]}" --format onnx,pte --quant int8 --token-merge "$R" > /dev/null
done
edgeclip bench "$W/out" --data "$DATA" --limit 64 --threads "$THREADS" --rounds 10 --reps 10 --batch 16 --peers --report-dir "$REPORT"
