#!/usr/bin/env bash
# UDP ingest beside iperf3: 8 KiB datagrams over loopback at the same offered rates, sender on
# the same machine. scandaq's side is benches/src/bin/udp_ingest.rs (recvmmsg input, header +
# CRC + sequence checks, ring, a consumer draining it); iperf3's side is `iperf3 -u -l 8192`.
# Both report loss as a percentage of datagrams sent.
#
# Usage: benches/scripts/udp_ingest_vs_iperf3.sh [SECONDS] [RATE_GBIT ...]
# Needs iperf3 (apt-get install iperf3). Run it on a quiet machine: the receiver needs a core.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-10}"
shift || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(1 2 4 6 8)
command -v iperf3 >/dev/null || { echo "iperf3 not found: apt-get install iperf3" >&2; exit 1; }
cargo build -q --release -p scandaq-benches --bin udp_ingest

echo "== scandaq =="
./target/release/udp_ingest --seconds "$seconds" "${rates[@]}"

echo "== iperf3 (default socket buffers, as shipped) =="
port=$((20000 + RANDOM % 20000))
printf "%8s %10s %9s\n" "Gbit/s" "achieved" "loss %"
for rate in "${rates[@]}"; do
  iperf3 -s -p "$port" -1 >/dev/null 2>&1 &
  server=$!
  sleep 0.5
  json="$(iperf3 -c 127.0.0.1 -p "$port" -u -l 8192 -b "${rate}G" -t "$seconds" --json 2>/dev/null || true)"
  wait "$server" 2>/dev/null || true
  python3 - "$rate" <<EOF
import json, sys
d = json.loads('''$json''' or '{}')
s = d.get("end", {}).get("sum", {})
print(f"{float(sys.argv[1]):8.2f} {s.get('bits_per_second', 0) / 1e9:10.2f} {s.get('lost_percent', float('nan')):9.4f}")
EOF
done
