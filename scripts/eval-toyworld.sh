#!/usr/bin/env bash
# The toy world's Table III: the built-in model on the toy world's test
# clips (zero-shot identities and held-out layouts), the full method and
# each part taken away, then one table of all rows:
#
#   scripts/eval-toyworld.sh [DATA_DIR [OUT_DIR]]
#
# DATA_DIR is `lcpdiff data toyworld --clips 800 --images 400 --seed 0`
# (written if missing: the training set's seed, so its test clips are the
# ones held out of training). Every row uses the same items, seeds and
# starting noise; a row that was stopped resumes where it was. Rows run
# JOBS at a time (default: one per THREADS cores), quietly when more than
# one: each is a separate process and its numbers do not depend on that.
set -euo pipefail

BIN=${BIN:-build/bin/lcpdiff}
DATA=${1:-runs/toyworld/data}
OUT=${2:-runs/toyworld/eval}
LIMIT=${LIMIT:-40}   # test clips, one image each: every other one has a zero-shot identity
STEPS=${STEPS:-25}
THREADS=${THREADS:-1}
JOBS=${JOBS:-$(($(nproc) / THREADS))}
[ "$JOBS" -ge 1 ] || JOBS=1
quiet=()
[ "$JOBS" -gt 1 ] && quiet=(-q)

if [ ! -f "$DATA/test.jsonl" ]; then
	"$BIN" data toyworld --out "$DATA" --clips 800 --images 400 --seed 0
fi

pids=()
row() { # row NAME METHOD FLAGS...: started once fewer than JOBS rows run
	local name=$1 method=$2
	shift 2
	while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
	[ "$JOBS" -gt 1 ] && echo "row $name ($(date +%T))" >&2
	"$BIN" --threads "$THREADS" eval --bench toyworld --data "$DATA" --limit "$LIMIT" \
		--images-per-prompt 1 --steps "$STEPS" --method "$method" --out "$OUT/$name" "${quiet[@]}" "$@" &
	pids+=($!)
}

# The test frames themselves through the model's VAE: every generated
# image is decoded by it, so no row can score above this one.
row vae "targets through the VAE" --vae-round-trip
row full "LCP (full)"
row no-guidance "w/o box guidance" --no-guidance
row no-grounding "w/o grounding attention" --grounding-tau 0
row no-static "w/o static attention" --static-scale 0
row no-dynamic "w/o dynamic attention" --ip-scale 0
row ip-only "IP-Adapter only" --static-scale 0 --grounding-tau 0 --no-guidance --region-restrict=false
# Every strength 0 and no guidance is the base model exactly (a test checks
# that LCP generation then equals text-to-image bit for bit).
row base "base only" --ip-scale 0 --static-scale 0 --grounding-tau 0 --no-guidance
for pid in "${pids[@]}"; do wait "$pid"; done

"$BIN" eval --compare "$OUT"/{vae,full,no-guidance,no-grounding,no-static,no-dynamic,ip-only,base} | tee "$OUT/table3.md"
