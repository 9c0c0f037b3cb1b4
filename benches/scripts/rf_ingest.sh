#!/usr/bin/env bash
# Maximum lossless ultrasound RF rate over UDP on this machine (docs/ultrasound.md,
# "Benchmark"): for each frame rate, `fpga-sim --preset us` sends SECONDS of 128-channel x
# 2048-sample events (512 KiB each, 5 plane-wave angles per frame, 8 KiB packets) paced in real
# time to `scandaq run --udp`, which reassembles them and writes rf_events Parquet. A step is
# lossless when every event the simulator sent is stored (us.0.events_complete == events)
# and the manifest counts no loss at all (kernel drops, ring drops, gaps, incomplete events).
# Prints one line per step and the highest lossless RF payload rate (MB/s, 1 MB = 1e6 B; the
# lower of the nominal rate and the one the sender achieved).
#
# PRERENDER=1 makes the simulator generate each step first and then send it paced
# (`fpga-sim --prerender`, SECONDS x rate of RF in memory), so only its sending shares the CPU
# with scandaq, as a front-end board on its own hardware would.
#
# Usage: benches/scripts/rf_ingest.sh [SECONDS] [FRAME_RATES...]
#   e.g. benches/scripts/rf_ingest.sh 5 100 200 300 400 500
# Each frame/s carries 5 x 524 288 B = 2.62 MB/s of RF.  The run directories go to a temporary
# directory (on the same disk as $TMPDIR: the rate includes writing the Parquet files).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-5}"
shift || true
rates=("$@")
if [ ${#rates[@]} -eq 0 ]; then rates=(50 100 150 200 250 300 400); fi
cargo build -q --release -p scandaq -p scandaq-fpga-sim
bin="${CARGO_TARGET_DIR:-target}/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT
best=0
for fr in "${rates[@]}"; do
  port=$((30000 + RANDOM % 20000))
  step="$work/fr$fr"
  mkdir -p "$step"
  cat > "$step/run.toml" <<TOML
[run]
out = "$step/runs"
duration = "$((seconds * 3 + 60))s"
[calibration]
none = true
[[input]]
udp = "127.0.0.1:$port"
[ultrasound]
tick_rate_hz = 100000000
TOML
  "$bin/scandaq" run --config "$step/run.toml" --quiet > "$step/daq.txt" 2>&1 &
  daq=$!
  for _ in $(seq 100); do
    if ls "$step"/runs/run-*/control.sock >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  extra=()
  if [ "${PRERENDER:-0}" = 1 ]; then extra=(--prerender); fi
  "$bin/fpga-sim" --preset us --frame-rate "$fr" --duration "${seconds}s" --seed 1 "${extra[@]}" \
    --udp "127.0.0.1:$port" --out "$step/sim" > "$step/sim.txt" 2>&1 || true
  wait $daq || true
  line=$(python3 - "$step" <<'PY'
import glob, json, sys
step = sys.argv[1]
s = json.load(open(f"{step}/sim/summary.json"))
m = json.load(open(glob.glob(f"{step}/runs/run-*/manifest.json")[0]))
c, losses = m["counts"], {k: v for k, v in m["losses"].items() if v}
stored = c.get("us.0.events_complete", 0)
rate = s["rf_bytes"] / max(s["sim_seconds"], 1e-9) / 1e6
sent = s["rf_mb_per_s"]
ok = stored == s["events"] and not losses and m.get("complete")
# The step's rate is what the sender achieved when it fell short of the nominal rate.
print(f"{'LOSSLESS' if ok else 'LOSSY'} {min(rate, sent):.0f} frame_rate={s['config']['frame_rate_hz']:.0f}/s "
      f"nominal {rate:.0f} MB/s, sender achieved {sent:.0f} MB/s, events sent {s['events']} "
      f"stored {stored}, losses {losses or 'none'}")
PY
)
  echo "$line"
  if [[ "$line" == LOSSLESS* ]]; then
    r=$(echo "$line" | cut -d' ' -f2)
    if [ "$r" -gt "$best" ]; then best=$r; fi
  fi
  rm -rf "$step/runs"
done
echo "maximum lossless RF rate: $best MB/s (${seconds}s steps; machine load: $(cut -d' ' -f1-3 /proc/loadavg))"
