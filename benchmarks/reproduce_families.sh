#!/usr/bin/env bash
# The family matrix of the family/route issue: every named model at random weights (offline), int8, every format,
# plain and with --svd 0.5 --prune-blocks vision:-1; then the per-family Markdown report.  About 40 minutes on
# a 2-core CPU.  A route a model cannot take ends its run with one "Error:" line, which the report shows.
set -uo pipefail
W=${WORK:-/tmp/edgeclip-families}
DATA=${DATA:-fashion-mnist}
rm -rf "$W"; mkdir -p "$W" benchmarks/results
for m in MobileCLIP2-S0 MobileCLIP-S1 ViT-B-16-SigLIP2 timm:eva02_tiny_patch14_224 \
         timm:vit_small_patch14_reg4_dinov2 timm:deit_tiny_distilled_patch16_224; do
  for extra in "" "--svd 0.5 --prune-blocks vision:-1"; do
    tag=$(echo "$m" | tr ':' '_')$([ -n "$extra" ] && echo _comp)
    echo "$m" > "$W/$tag.model"
    # shellcheck disable=SC2086
    edgeclip export --model "$m" --pretrained none --data "$DATA" --quant int8 --format all $extra \
      --out "$W/out_$tag" --json > "$W/$tag.json" 2> "$W/$tag.err"
    echo "$tag: exit $?"
  done
done
python -m edgeclip.benchmarks.families "$W" > benchmarks/results/families.md
cat benchmarks/results/families.md
