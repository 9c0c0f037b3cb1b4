#!/usr/bin/env bash
# End-to-end replay throughput: fpga-sim writes a bench .rawf, then `scandaq replay` decodes,
# calibrates, merges and writes Parquet. Beside it, the time to merely read the file
# (cat > /dev/null, page cache warm). Prints the median of RUNS runs of each.
# Usage: benches/scripts/replay_throughput.sh [DURATION=5s] [RATE=4M] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-5s}; rate=${2:-4M}; runs=${3:-3}
cargo build --release -q -p scandaq -p scandaq-fpga-sim
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
target/release/fpga-sim --preset bench --duration "$duration" --rate "$rate" --seed 5 --out "$work/sim" >/dev/null
hits=$(python3 -c "import json;print(json.load(open('$work/sim/summary.json'))['hits_emitted'])")
bytes=$(stat -c %s "$work/sim/bench.rawf")
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_it() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
read_t=$(for _ in $(seq "$runs"); do time_it cat "$work/sim/bench.rawf"; done | median)
replay_t=$(for i in $(seq "$runs"); do time_it target/release/scandaq replay "$work/sim/bench.rawf" --calib "$work/sim/calib" --out "$work/runs" --no-progress; done | median)
echo "file: $bytes bytes, $hits hits; nproc $(nproc)"
printf 'read only   : %.3f s  (%.0f MB/s)\n' "$read_t" "$(echo "$bytes / $read_t / 1000000" | bc -l)"
printf 'replay      : %.3f s  (%.1f M hits/s end to end, Parquet included)\n' "$replay_t" "$(echo "$hits / $replay_t / 1000000" | bc -l)"
