#!/usr/bin/env bash
# The ARM table in benchmarks/README.md: the files phones and ARM boards run, run by the aarch64 builds of
# their runtimes (emulated here; see runtimes/devices/emulated.py), against the x86 fp32 model.
# Needs root, ../shared, and 'edgeclip device setup arm64' (run first; cached).  LIMIT=200 is the CI check.
# With DEVICE=ssh://user@host[:port] the same files run on that board instead, with real latency.
set -euo pipefail
FIX=${FIXTURE:-../shared/fixtures/tiny_clip_fmnist}
W=${WORK:-/tmp/edgeclip-arm64}
LIMIT=${LIMIT:-1000}
REPORT=${REPORT:-benchmarks/results/fixture_arm64}
rm -rf "$W"; mkdir -p "$W"
edgeclip device setup arm64
M="--model $FIX --out $W --verify-size 64 --json"
edgeclip export $M --format onnx,pte > /dev/null
edgeclip export $M --format onnx,pte --quant int8 --scheme dynamic > /dev/null
edgeclip export $M --format pte --quant int8 --scheme static > /dev/null
edgeclip export $M --format ptl --quant int8 --scheme dynamic --backend qnnpack > /dev/null
edgeclip bench --out "$W" --target arm64 --limit "$LIMIT" ${DEVICE:+--device "$DEVICE"} --report-dir "$REPORT" "$@"
