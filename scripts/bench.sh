#!/usr/bin/env bash
# Times internal/torch against Python's torch on the same libtorch, with the
# same thread counts, and prints Go/Python ratios (below 1: Go is faster).
set -euo pipefail
cd "$(dirname "$0")/.."

py=/usr/bin/python3
if ! "$py" -c 'import torch' 2>/dev/null; then
  echo "bench: installing python3-torch (Debian's, the same libtorch) as the yardstick"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q --no-install-recommends python3-torch >/dev/null
  else sudo apt-get install -y -q --no-install-recommends python3-torch >/dev/null; fi
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
echo "threads: OMP_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-unset}; $(nproc) cores"

gout="$(go test ./internal/torch -run '^$' -bench 'TinyAdd|ConvBlock' -benchtime 2s -count 1)"
echo "$gout" | grep -E '^Benchmark'
pout="$("$py" scripts/bench_python.py)"
echo "$pout" | sed 's/^/python /'

ns() { echo "$gout" | awk -v n="$1" '$1 ~ "^Benchmark"n"(-[0-9]+)?$" {print $3}'; }
pns() { echo "$pout" | awk -v n="$1" '$1 == n {print $2}'; }
ratio() { awk -v g="$1" -v p="$2" 'BEGIN {printf "%.3f", g / p}'; }
echo "ratio TinyAdd/free  Go/Python $(ratio "$(ns TinyAdd/free)" "$(pns TinyAdd)")"
echo "ratio TinyAdd/scope Go/Python $(ratio "$(ns TinyAdd/scope)" "$(pns TinyAdd)")"
echo "ratio ConvBlock     Go/Python $(ratio "$(ns ConvBlock)" "$(pns ConvBlock)")"
