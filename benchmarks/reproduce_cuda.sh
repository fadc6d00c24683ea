#!/usr/bin/env bash
# Regenerate the CUDA tables in benchmarks/README.md on a machine with an NVIDIA GPU (about 5 minutes on an H100).
# Needs ../shared (the trained tiny_clip_fmnist fixture and Fashion-MNIST). Run from the repository root.
# Without a GPU, `edgeclip bench --target cuda` says so and exits 0 having measured nothing.
set -euo pipefail
FIX=${FIXTURE:-../shared/fixtures/tiny_clip_fmnist}
W=${WORK:-/tmp/edgeclip-bench-cuda}
rm -rf "$W"; mkdir -p "$W" benchmarks/results

# 1. Accuracy: fixture, fp16 (onnx + ptl) and bf16 (ptl), verified on 1,000 test images; bench on all 10,000.
edgeclip export --model "$FIX" --quant fp16 --format all --out "$W/fixture" --verify-size 1000 --json > /dev/null
edgeclip export --model "$FIX" --quant bf16 --format ptl --out "$W/fixture" --verify-size 1000 --json > /dev/null
edgeclip bench --out "$W/fixture" --target cuda --rounds 10 --reps 20 --compile --report-dir benchmarks/results/fixture_cuda

# 2. Timing: ViT-B-32 image tower, random weights (accuracy columns mean nothing), batch 1 and 256.
edgeclip export --model ViT-B-32 --pretrained none --quant fp16 --format ptl --out "$W/vitb32" --verify-size 64 --json > /dev/null
edgeclip bench --out "$W/vitb32" --target cuda --limit 2048 --rounds 10 --reps 20 --compile --report-dir benchmarks/results/vitb32_cuda
