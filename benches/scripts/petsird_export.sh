#!/usr/bin/env bash
# PETSIRD export speed and memory (BENCHMARKS.md, "PETSIRD export"): exports each RUN_DIR given
# with `scandaq export petsird` under /usr/bin/time -v, 3 times, and prints per run: events
# (prompts + delayed), input Parquet bytes, output bytes, median wall time, events/s, output
# MB/s and the largest peak RSS of the 3.
# Usage: benches/scripts/petsird_export.sh SCANDAQ_BINARY OUT_DIR RUN_DIR... [-- EXPORT_ARGS...]
set -euo pipefail
bin=$1; out=$2; shift 2
runs=(); while [[ $# -gt 0 && $1 != -- ]]; do runs+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
mkdir -p "$out"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
for run in "${runs[@]}"; do
  in_bytes=$(cat "$run"/coincidences-*.parquet "$run"/delayed-*.parquet 2>/dev/null | wc -c)
  walls=(); rss=0
  for i in 1 2 3; do
    f="$out/$(basename "$run").petsird"
    /usr/bin/time -v "$bin" export petsird "$run" --out "$f" "$@" > "$out/stdout" 2> "$out/time"
    w=$(grep "Elapsed (wall clock)" "$out/time" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    r=$(grep "Maximum resident set size" "$out/time" | awk '{print $NF}')
    walls+=("$w"); (( r > rss )) && rss=$r
  done
  med=$(printf '%s\n' "${walls[@]}" | sort -n | sed -n 2p)
  events=$(grep -oE '[0-9]+ prompts, [0-9]+ delayed' "$out/stdout" | awk '{print $1 + $3}')
  bytes=$(stat -c %s "$f")
  python3 - "$run" "$events" "$in_bytes" "$bytes" "$med" "$rss" <<'PY'
import sys
run, ev, inb, outb, wall, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
print(f"{run}: {ev} events, in {inb/1e6:.1f} MB Parquet, out {outb/1e6:.1f} MB, median wall {wall:.2f} s, "
      f"{ev/wall/1e6:.2f} M events/s, {outb/wall/1e6:.1f} MB/s written ({inb/wall/1e6:.1f} MB/s Parquet read), peak RSS {rss/1024:.1f} MiB")
PY
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
