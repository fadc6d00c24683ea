#!/usr/bin/env bash
# The .pt2 (AOTInductor x86 int8) tables in benchmarks/README.md: ViT-B-32 timing against the int8 .pte and the naive
# onnxruntime routes (random weights), and the fixture's accuracy on all 10,000 test images.  ~12 minutes on 2 cores;
# needs g++ and ../shared; run with the machine otherwise idle.
set -euo pipefail
FIX=${FIXTURE:-../shared/fixtures/tiny_clip_fmnist}
DATA=${DATA:-fashion-mnist:../shared/data/fashion_mnist}
W=${WORK:-/tmp/edgeclip-pt2}
rm -rf "$W"; mkdir -p "$W" benchmarks/results

V="--model ViT-B-32 --pretrained none --verify-size 64 --out $W/vitb32 --json"
edgeclip export $V --format pte --quant int8 > /dev/null
edgeclip export $V --format pt2 --quant int8 --scheme static > /dev/null
edgeclip bench --out "$W/vitb32" --peers --threads 2 --limit 16 --rounds 10 --reps 5 --batch 16 \
  --report-dir benchmarks/results/vitb32_pt2

F="--model $FIX --data $DATA --out $W/fixture --json"
edgeclip export $F --format pte --quant int8 > /dev/null
edgeclip export $F --format pt2 --quant int8 --scheme static > /dev/null
edgeclip export $F --format pt2 --quant int8 --scheme dynamic > /dev/null
edgeclip bench --out "$W/fixture" --threads 2 --rounds 10 --reps 10 --report-dir benchmarks/results/fixture_pt2
