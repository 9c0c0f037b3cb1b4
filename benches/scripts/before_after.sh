#!/usr/bin/env bash
# Before/after benchmark (used for issue 15, BENCHMARKS.md): release binaries of BEFORE and AFTER, alternating runs,
# same inputs, same machine. Usage: benches/scripts/before_after.sh BEFORE_RELEASE_DIR AFTER_RELEASE_DIR [RUNS=5]
set -euo pipefail
B=$1; A=$2; runs=${3:-5}
work=$(mktemp -d /tmp/ab.XXXX); trap 'rm -rf "$work"' EXIT
"$A/fpga-sim" --preset bench --duration 5s --rate 4M --seed 5 --out "$work/sim" >/dev/null
hits=$(python3 -c "import json;print(json.load(open('$work/sim/summary.json'))['hits_emitted'])")
echo "bench.rawf: $(stat -c %s "$work/sim/bench.rawf") bytes, $hits hits; load $(cut -d' ' -f1-3 /proc/loadavg)"
cat "$work/sim/bench.rawf" >/dev/null
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for side in before after; do : > "$work/replay-$side"; : > "$work/ingest-$side"; : > "$work/sink-$side"; done
for i in $(seq "$runs"); do
  for side in before after; do
    bin=$B; [ $side = after ] && bin=$A
    rm -rf "$work/runs"
    /usr/bin/time -f "%e %U %S %M" -o "$work/t" "$bin/scandaq" replay "$work/sim/bench.rawf" --calib "$work/sim/calib" --out "$work/runs" --no-progress >/dev/null 2>&1
    cat "$work/t" >> "$work/replay-$side"
  done
done
single=$(ls "$work"/runs/run-*/singles-*.parquet | head -1)
for i in $(seq "$runs"); do
  for side in before after; do
    bin=$B; [ $side = after ] && bin=$A
    "$bin/sink_bench" "$single" 3 | python3 -c "import sys,json;[print(d['rows_per_s']) for d in map(json.loads,sys.stdin) if d['writer']=='scandaq']" >> "$work/sink-$side"
  done
done
for i in $(seq 3); do
  for side in before after; do
    bin=$B; [ $side = after ] && bin=$A
    /usr/bin/time -f "%U %S" -o "$work/t" "$bin/udp_ingest" --seconds 8 5 > "$work/u"
    loss=$(awk 'NR==3{print $5}' "$work/u")
    echo "$(awk '{print $1+$2}' "$work/t") $loss" >> "$work/ingest-$side"
  done
done
for side in before after; do
  echo "== $side"
  echo "replay wall s: $(cut -d' ' -f1 "$work/replay-$side" | tr '\n' ' ') median $(cut -d' ' -f1 "$work/replay-$side" | median)"
  echo "replay CPU s:  $(awk '{printf "%.2f ", $2+$3}' "$work/replay-$side") median $(awk '{print $2+$3}' "$work/replay-$side" | median)"
  echo "replay peak RSS MB: median $(awk '{print $4/1024}' "$work/replay-$side" | median)"
  echo "sink rows/s: $(tr '\n' ' ' < "$work/sink-$side") median $(median < "$work/sink-$side")"
  echo "ingest 5 Gbit/s 8 s, CPU s and missing: $(tr '\n' ';' < "$work/ingest-$side") median CPU $(cut -d' ' -f1 "$work/ingest-$side" | median)"
done
