#!/usr/bin/env bash
# The .ptl engine table in benchmarks/README.md: int8 dynamic .ptl built for qnnpack, fbgemm and x86, with
# SmoothQuant off and on, on the fixture with x50 outlier channels injected (benchmarks/outlier_model.py: same fp32
# function), all 10,000 test images, one bench run (interleaved timing, 1 thread).  Needs ../shared.
set -euo pipefail
FIX=${FIXTURE:-../shared/fixtures/tiny_clip_fmnist}
DATA=${DATA:-fashion-mnist:../shared/data/fashion_mnist}
W=${WORK:-/tmp/edgeclip-ptl-engines}
rm -rf "$W"; mkdir -p "$W/out"
python benchmarks/outlier_model.py "$FIX" "$W/hostile" --scale 50
for SQ in 0 0.5; do
  for BE in qnnpack fbgemm x86; do
    # --min-agreement 0: the point is to measure the naive file, which the gate would refuse
    edgeclip export --model "$W/hostile" --data "$DATA" --out "$W/out" --format ptl --quant int8 --scheme dynamic \
      --backend "$BE" --smoothquant "$SQ" --min-agreement 0 --name "hostile-sq$SQ-$BE" --json > /dev/null
  done
done
edgeclip bench --out "$W/out" --data "$DATA" --target cpu --threads 1 --rounds 5 --reps 10 \
  --report-dir benchmarks/results/ptl_engines "$@"
# Optional (ARM64=1): the SmoothQuant-off files on aarch64 kernels under emulation (accuracy and loadability only;
# emulated time is not device time), 500 images.
if [ "${ARM64:-0}" = 1 ]; then
  mkdir -p "$W/arm"; cp -r "$W"/out/hostile-sq0-* "$W/arm/"
  edgeclip bench --out "$W/arm" --data "$DATA" --target arm64 --limit 500 --rounds 1 --reps 2 --no-baseline \
    --report-dir benchmarks/results/ptl_engines_arm64
fi
