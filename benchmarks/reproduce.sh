#!/usr/bin/env bash
# Regenerate the measured CPU / mobile tables in benchmarks/README.md (about 35 minutes on a 2-core CPU;
# the CUDA tables: benchmarks/reproduce_cuda.sh on a GPU machine).
# Needs ../shared (the trained tiny_clip_fmnist fixture and Fashion-MNIST). Run from the repository root,
# with the machine otherwise idle: all variants are timed interleaved in one run, but a busy machine
# still widens p90.
set -euo pipefail
FIX=${FIXTURE:-../shared/fixtures/tiny_clip_fmnist}
W=${WORK:-/tmp/edgeclip-bench}
THREADS=${THREADS:-2}
rm -rf "$W"; mkdir -p "$W" benchmarks/results

# 1. Accuracy: the trained fixture, every format, fp32 + int8 dynamic + int8 static, all 10,000 test images.
edgeclip export --model "$FIX" --format all --out "$W/fixture" --json > /dev/null
edgeclip export --model "$FIX" --format all --quant int8 --scheme dynamic --backend fbgemm --out "$W/fixture" --json > /dev/null
edgeclip export --model "$FIX" --format all --quant int8 --scheme static --backend fbgemm --out "$W/fixture" --json > /dev/null
edgeclip bench --out "$W/fixture" --peers --threads "$THREADS" --rounds 10 --reps 10 --report-dir benchmarks/results/fixture_cpu

# 2. Timing: ViT-B-32 image tower, random weights (accuracy columns mean nothing), batch 1 and 16.
V="--model ViT-B-32 --pretrained none --verify-size 32 --out $W/vitb32 --json"
edgeclip export $V --format all > /dev/null
edgeclip export $V --format all --quant int8 --backend fbgemm > /dev/null
edgeclip export $V --format all --quant int8 --scheme static --backend fbgemm --calib-size 64 --sensitive-float 0 > /dev/null
edgeclip export $V --format ptl --quant int8 --backend qnnpack > /dev/null
# x86 with g++ only: the AOTInductor int8 package (the fastest file on the 2026-12-07 EPYC, benchmarks/README.md ".pt2")
if [ "$(uname -m)" = x86_64 ] && command -v "${CXX:-g++}" > /dev/null; then
  edgeclip export $V --format pt2 --quant int8 --scheme static > /dev/null
fi
edgeclip bench --out "$W/vitb32" --peers --threads "$THREADS" --limit 64 --rounds 10 --reps 5 --batch 16 \
  --report-dir benchmarks/results/vitb32_cpu

# 3. Mobile profile: the fixture as phones would run it (XNNPACK .pte, qnnpack .ptl), batch 1, 1/2/4 threads.
M="--model $FIX --out $W/mobile --json"
edgeclip export $M --format pte > /dev/null
edgeclip export $M --format pte --quant int8 > /dev/null
edgeclip export $M --format ptl --quant int8 --backend qnnpack > /dev/null
edgeclip bench --out "$W/mobile" --target mobile --limit 2000 --rounds 10 --reps 10 --report-dir benchmarks/results/fixture_mobile
