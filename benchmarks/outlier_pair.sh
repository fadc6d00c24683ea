# Sourced by the outlier benchmarks (reproduce_int8.sh, reproduce_calib.sh): a fresh work folder $W, the trained
# fixture and its x50-outlier twin ($W/hostile, benchmarks/outlier_model.py: same fp32 function), an fp32 .onnx of
# each in $W/out, and model_dir NAME (fixture | hostile) for the loops.  Needs ../shared.  Set W before sourcing.
set -euo pipefail
FIX=${FIXTURE:-../shared/fixtures/tiny_clip_fmnist}
THREADS=${THREADS:-2}
rm -rf "$W"; mkdir -p "$W/out"
python benchmarks/outlier_model.py "$FIX" "$W/hostile" --scale 50
model_dir() { if [ "$1" = hostile ]; then echo "$W/hostile"; else echo "$FIX"; fi; }
for M in fixture hostile; do
  edgeclip export --model "$(model_dir "$M")" --format onnx --name "${PREFIX:-}$M-fp32" --out "$W/out" --json > /dev/null
done
