#!/usr/bin/env bash
# edgeclip search on the shared fixture: the fastest CPU artifact within 0.5 top-1 points of fp32, then the winner
# rebuilt from best.toml and re-measured by `edgeclip bench` on all 10,000 test images beside the best plain int8
# file of the same search (one interleaved bench run).  Results: benchmarks/results/fixture_search/.
# Needs ../shared (fixture + Fashion-MNIST) and Ray (pip install -e ".[search]").  ~15-25 min on 2 cores.
set -euo pipefail
FIX=${FIXTURE:-../shared/fixtures/tiny_clip_fmnist}
DATA=${DATA:-fashion-mnist:../shared/data/fashion_mnist}
W=${WORK:-/tmp/edgeclip-search}
REPORT=${REPORT:-benchmarks/results/fixture_search}
rm -rf "$W"; mkdir -p "$W" "$REPORT"

/usr/bin/time -f "search wall %e s" edgeclip search --model "$FIX" --data "$DATA" --max-drop 0.5 --target cpu --out "$W/search"

# the winner, rebuilt from its recipe alone, and the fastest plain int8 file of the search, benched together
edgeclip export --recipe "$W/search/best.toml" --model "$FIX" --data "$DATA" --out "$W/bench" --json > /dev/null
python - "$W" <<'PY'
import json, shutil, sys
from pathlib import Path
w = Path(sys.argv[1])
r = json.loads((w / "search" / "search.json").read_text())
plain = r["best_plain"]["artifact"]
tars = w / "search" / ".search" / "artifacts"
from edgeclip.search.tasks import unpack
unpack((tars / f"{r['best_plain']['key']}.tar").read_bytes(), w / "bench")
PY
edgeclip bench "$W/bench" --data "$DATA" --threads 2 --rounds 10 --reps 10 --report-dir "$REPORT"
cp "$W/search/search.json" "$W/search/search.md" "$W/search/search_pareto.png" "$W/search/best.toml" "$REPORT/"
