#!/usr/bin/env bash
# End-to-end live run over UDP on this machine: two fpga-sim sender processes (one board each,
# source ids 0 and 1, RATE/2 hits/s each, optional faults) -> `scandaq run --udp` -> Parquet.
# Prints, per board, hits sent (fpga-sim summary.json) against hits decoded and packets
# counted missing (scandaq manifest), the losses by reason, and scandaq's resident memory
# sampled every second (peak and curve).
#
# Usage: [PRERENDER=1] benches/scripts/live_udp_run.sh [SECONDS] [TOTAL_RATE] [FAULT_PROBABILITY]
#   e.g. PRERENDER=1 benches/scripts/live_udp_run.sh 60 5M 0.001
# PRERENDER=1: each sender generates its whole run into memory first (fpga-sim --prerender),
# then sends it paced, so the simulators' CPU does not compete with scandaq on 2 cores; the
# run stops at the senders' end-of-stream markers.
# SENDERS=1: one sender process for both boards (one detector clock; two processes that fall
# behind real time by different amounts drift apart, and a board behind the other by more than
# the merger's 0.5 s is late data).
# SCANDAQ_BIN=path: the scandaq binary to run (default: this tree's release build), e.g. an
# earlier commit's build for an A/B with the same senders.
# PERF=1: also samples every CPU (perf record -a, 499 Hz) while the senders send, and prints
# where the machine's CPU went: by thread name (senders, scandaq's threads, kernel softirq)
# and scandaq's top functions.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"
rate="${2:-5M}"
fault="${3:-0}"
half=$(python3 -c "import sys; r=sys.argv[1]; m={'k':1e3,'M':1e6,'G':1e9}; v=float(r[:-1])*m[r[-1]] if r[-1] in m else float(r); print(int(v/2))" "$rate")
cargo build -q --release -p scandaq -p scandaq-fpga-sim
bin=target/release
work="$(mktemp -d)"
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT
port=$((30000 + RANDOM % 20000))
$bin/fpga-sim --preset bench --seed 1 --duration 10ms --out "$work/cal" >/dev/null
prerender=()
limit=$((seconds + 30))
if [ "${PRERENDER:-0}" = 1 ]; then
  prerender=(--prerender)
  limit=$((seconds * 4 + 300))
fi
"${SCANDAQ_BIN:-$bin/scandaq}" run --udp 127.0.0.1:$port --calib "$work/cal/calib" --out "$work/runs" \
  --duration ${limit}s --quiet --no-coincidences &
daq=$!
sleep 1
( while kill -0 $daq 2>/dev/null; do
    ps -o rss= -p $daq 2>/dev/null || true
    sleep 1
  done ) > "$work/rss.txt" &
faults=()
if [ "$fault" != "0" ]; then
  faults=(--lose-packets "$fault" --duplicate "$fault" --reorder "$fault" --corrupt "$fault")
fi
if [ "${PRERENDER:-0}" = 1 ] || [ "${SENDERS:-2}" = 1 ]; then
  # One process for both boards, so their detector clocks start together (two processes
  # finish prerendering at different times, and a board starting late is late data).
  $bin/fpga-sim --preset bench --seed 1 --boards 2 --rate "$rate" --duration "${seconds}s" \
    --udp 127.0.0.1:$port "${faults[@]}" "${prerender[@]}" \
    --out "$work/sender0" > "$work/sender0.txt" 2>&1 &
else
  for b in 0 1; do
    $bin/fpga-sim --preset bench --seed $((b + 1)) --boards 1 --source-id-base $b \
      --rate "$half" --duration "${seconds}s" --udp 127.0.0.1:$port "${faults[@]}" \
      --out "$work/sender$b" > "$work/sender$b.txt" 2>&1 &
  done
fi
perf_pid=
if [ "${PERF:-0}" = 1 ]; then
  # Starts once the senders start sending (a prerendering sender first computes its run).
  ( while [ "${PRERENDER:-0}" = 1 ] && ! grep -q "sending" "$work"/sender*.txt 2>/dev/null; do
      sleep 0.2
    done
    exec perf record -q -a -F 499 -o "$work/perf.data" -- sleep "$seconds" ) > /dev/null 2>&1 &
  perf_pid=$!
fi
wait $(jobs -p | grep -v "^$daq$" | grep -v "^${perf_pid:-x}$" | head -2) 2>/dev/null || true
wait $daq
if [ -n "$perf_pid" ]; then
  wait "$perf_pid" 2>/dev/null || true
  echo "== CPU by thread while sending (% of all samples on all CPUs; idle is swapper):"
  perf report -i "$work/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null \
    | grep '%' | sed 's/  *-  *-  *$//' | head -20 || true
  echo "== top functions by thread (% of all samples):"
  perf report -i "$work/perf.data" --no-children --sort comm,symbol --stdio -g none \
    2>/dev/null | grep '%' | sed 's/  *-  *-  *$//' | head -30 || true
fi
python3 - "$work" <<'EOF'
import glob, json, sys
work = sys.argv[1]
m = json.load(open(glob.glob(f"{work}/runs/run-*/manifest.json")[0]))
c, losses = m["counts"], m["losses"]
print(f"scandaq run: state {m.get('state')}, stop {m.get('stop_reason')}, singles {c['singles_written']}")
ok = True
boards = []
for path in sorted(glob.glob(f"{work}/sender*/summary.json")):
    s = json.load(open(path))
    boards += [(board, s["wall_seconds"]) for board in s["boards"]]
for board, wall in boards:
    b = board["source_id"]
    sent = board["hits_sent"]
    f = board["faults"]
    arrived = sent - f["lost_hits"] - f["corrupted_hits"]
    got = c.get(f"board.{b}.hits_decoded", 0)
    ring_dropped = c.get(f"board.{b}.ring_dropped_hits", 0)
    missing = c.get(f"board.{b}.packets_missing", 0)
    injected = f["lost_packets"] + f["corrupted_packets"]
    print(f"board {b}: sent {sent} hits in {board['packets_sent']} packets at "
          f"{sent / wall / 1e6:.2f} M hits/s; decoded {got}, dropped at a full ring {ring_dropped}; "
          f"packets missing {missing} (injected lost+corrupt {injected}), "
          f"duplicates {c.get(f'board.{b}.duplicates', 0)} (injected {f['duplicated_packets']}), "
          f"out of order {c.get(f'board.{b}.out_of_order', 0)} (injected {f['reordered_packets']})")
    ok &= got + ring_dropped == arrived or losses.get("udp_kernel_drops", 0) > 0
written = c["singles_written"]
decoded = sum(c.get(f"board.{board['source_id']}.hits_decoded", 0) for board, _ in boards)
late = losses.get("late_hit", 0)
print(f"singles written {written} + late {late} == decoded {decoded}: "
      + ("yes" if written + late == decoded else "NO"))
ok &= written + late == decoded
print("losses:", json.dumps(losses))
rss = [int(x) for x in open(f"{work}/rss.txt").read().split()]
if rss:
    print(f"scandaq RSS: peak {max(rss) / 1024:.0f} MiB; every 10 s: "
          + " ".join(f"{r / 1024:.0f}" for r in rss[::10]))
print("hits decoded + dropped at a full ring == hits sent - injected losses, per board:", "yes" if ok else "NO")
EOF
