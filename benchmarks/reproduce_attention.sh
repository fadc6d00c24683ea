#!/usr/bin/env bash
# --fused-attention on / off: ViT-B-32 (50 tokens) and ViT-B-16 (197 tokens) image towers, random weights (timing
# only: their accuracy columns mean nothing), fp32 and int8 dynamic .onnx, one interleaved bench run per model.
# Then the trained fixture, 10,000 test images: the same routes with and without, for accuracy (needs ../shared).
# MODELS="" runs the fixture part alone.
set -euo pipefail
W=${WORK:-/tmp/edgeclip-attention}
THREADS=${THREADS:-2}
MODELS=${MODELS-ViT-B-32 ViT-B-16}
rm -rf "$W"
for M in $MODELS; do
  for Q in none int8; do
    for A in no-fused-attention fused-attention; do
      edgeclip export --model "$M" --pretrained none --task image-encoder --format onnx --quant "$Q" --"$A" \
        --verify-size 16 --out "$W/$M" --name "$M-$Q-$A" --json > /dev/null
    done
  done
  edgeclip bench --out "$W/$M" --target cpu --threads "$THREADS" --limit 64 --rounds 10 --reps 10 \
    --report-dir "benchmarks/results/attention_$(echo "$M" | tr 'A-Z-' 'a-z_')" "$@"
done
FIX=${FIXTURE:-../shared/fixtures/tiny_clip_fmnist}
for Q in "none" "int8" "int8 --scheme static"; do
  for A in no-fused-attention fused-attention; do
    edgeclip export --model "$FIX" --format onnx --quant $Q --"$A" --out "$W/fixture" \
      --name "fixture-$(echo "$Q" | tr -d ' -')-$A" --json > /dev/null
  done
done
edgeclip bench --out "$W/fixture" --target cpu --threads "$THREADS" --rounds 10 --reps 10 \
  --report-dir benchmarks/results/attention_fixture "$@"
