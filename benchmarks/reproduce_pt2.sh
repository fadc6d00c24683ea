#!/usr/bin/env bash
# The .pt2 (AOTInductor x86 int8) tables in benchmarks/README.md: ViT-B-32 timing against the int8 .pte and the naive
# onnxruntime routes (random weights), and the fixture's accuracy on all 10,000 test images with the other new routes
# (fused attention, ToMe) and the naive peers.  ~15 minutes on 2 cores;
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

# The fixture: the speed issue's new routes against the naive peers, all 10,000 test images, one bench run
F="--model $FIX --data $DATA --out $W/fixture --json"
edgeclip export $F --format pte --quant int8 > /dev/null
edgeclip export $F --format onnx --quant int8 --fused-attention --name fixture-onnx-int8-fused-attention > /dev/null
edgeclip export $F --format onnx --quant int8 --token-merge 8 --accept-drop 100 --name fixture-onnx-int8-tome-r8 > /dev/null
edgeclip export $F --format pt2 --quant int8 --scheme static > /dev/null
edgeclip export $F --format pt2 --quant int8 --scheme static --calib-method auto --name fixture-pt2-static-auto > /dev/null
edgeclip export $F --format pt2 --quant int8 --scheme dynamic > /dev/null
edgeclip bench --out "$W/fixture" --peers --threads 2 --rounds 10 --reps 10 --report-dir benchmarks/results/fixture_pt2
