#!/usr/bin/env bash
# Back-pressure on a shaped, lossy link (issue 18; docs/cluster.md "Faults and losses").
#
# Root only. Two network namespaces joined by a veth pair:
#   sdq-acq: fpga-sim (bench preset over UDP on the namespace's loopback) -> `scandaq node acq`
#   sdq-bld: `scandaq node b0` (the builder)
# The acquisition -> builder direction is shaped with `tc tbf` (LINK_RATE, a LINK_QUEUE-byte
# queue whose tail drops TCP sees as loss) over `netem` (LINK_DELAY, LINK_LOSS) where the
# kernel has it, so the link, not the CPU, sets the pace. The script then prints,
# from the nodes' own reports and the merged run manifest:
#   - singles the acquisition node had, sent, acknowledged, and dropped by named reason;
#   - prompts/delayed the builder wrote, missing slices;
#   - the peak RSS of both nodes (/usr/bin/time) and the qdisc's counters (drops, overlimits).
# "Nothing lost uncounted": singles routed = acknowledged + counted drops (checked below).
#
# Usage: sudo benches/scripts/cluster_netns.sh [OUTDIR]
#   env: LINK_RATE=200mbit LINK_DELAY=2ms LINK_LOSS=0.5% LINK_QUEUE=64kb SIM_RATE=2M SIM_DURATION=5s
#        CREDITS=8 BUFFER_BATCHES=64 SCANDAQ=target/release/scandaq FPGA_SIM=target/release/fpga-sim
set -euo pipefail

[[ $(id -u) == 0 ]] || { echo "error: needs root (network namespaces, tc)" >&2; exit 2; }
for tool in ip tc python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install iproute2 time python3)" >&2; exit 2; }
done

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/target/cluster-netns}")
LINK_RATE=${LINK_RATE:-200mbit}
LINK_DELAY=${LINK_DELAY:-2ms}
LINK_LOSS=${LINK_LOSS:-0.5%}
LINK_QUEUE=${LINK_QUEUE:-64kb}
SIM_RATE=${SIM_RATE:-2M}
SIM_DURATION=${SIM_DURATION:-5s}
CREDITS=${CREDITS:-8}
BUFFER_BATCHES=${BUFFER_BATCHES:-64}
SCANDAQ=${SCANDAQ:-$ROOT/target/release/scandaq}
FPGA_SIM=${FPGA_SIM:-$ROOT/target/release/fpga-sim}
if [[ ! -x $SCANDAQ || ! -x $FPGA_SIM ]]; then
    (cd "$ROOT" && cargo build --release -p scandaq -p scandaq-fpga-sim)
fi

NS_A=sdq-acq NS_B=sdq-bld
cleanup() {
    ip netns pids $NS_A 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns pids $NS_B 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del $NS_A 2>/dev/null || true
    ip netns del $NS_B 2>/dev/null || true
}
trap cleanup EXIT
cleanup

ip netns add $NS_A
ip netns add $NS_B
ip link add sdq-a type veth peer name sdq-b
ip link set sdq-a netns $NS_A
ip link set sdq-b netns $NS_B
ip -n $NS_A addr add 10.77.0.1/30 dev sdq-a
ip -n $NS_B addr add 10.77.0.2/30 dev sdq-b
for ns in $NS_A $NS_B; do ip -n $ns link set lo up; done
ip -n $NS_A link set sdq-a up
ip -n $NS_B link set sdq-b up
# acquisition -> builder: rate limit with a short queue (tail drops: TCP sees loss), and
# delay + random loss below it where the kernel has netem (sch_netem is optional).
tc -n $NS_A qdisc add dev sdq-a root handle 1: tbf rate "$LINK_RATE" burst 64kb limit "$LINK_QUEUE"
if tc -n $NS_A qdisc add dev sdq-a parent 1:1 handle 10: netem delay "$LINK_DELAY" loss "$LINK_LOSS" 2>/dev/null; then
    LINK_NOTE="delay $LINK_DELAY, random loss $LINK_LOSS, queue $LINK_QUEUE"
else
    LINK_NOTE="no netem in this kernel: loss = tail drops of a $LINK_QUEUE queue, no added delay"
fi

rm -rf "$OUT" && mkdir -p "$OUT"
"$FPGA_SIM" --preset bench --duration 1ms --seed 7 --out "$OUT/sim" >/dev/null
cat > "$OUT/acq.toml" <<EOF
[run]
duration = "600s"
EOF
cat > "$OUT/cluster.toml" <<EOF
slice = "10ms"
out = "out"
[calibration]
dir = "sim/calib"
[coincidences]
window_ps = 4000
delay_ps = 100000
[flow]
credits = $CREDITS
buffer_batches = $BUFFER_BATCHES
drain_timeout = "120s"
[[node]]
name = "acq"
role = "acquisition"
listen = "10.77.0.1:47101"
run_config = "acq.toml"
[[node.input]]
udp = "127.0.0.1:46001"
[[node]]
name = "b0"
role = "builder"
listen = "10.77.0.2:47201"
EOF

echo "link: $LINK_RATE, $LINK_NOTE; simulator: $SIM_RATE singles/s for $SIM_DURATION"
ip netns exec $NS_B /usr/bin/time -f '%M' -o "$OUT/b0.rss" \
    "$SCANDAQ" node --cluster "$OUT/cluster.toml" --name b0 2>"$OUT/b0.log" &
B0=$!
ip netns exec $NS_A bash -c 'for _ in $(seq 300); do (exec 3<>/dev/tcp/10.77.0.2/47201) 2>/dev/null && exit 0; sleep 0.1; done; exit 1' \
    || { echo "error: the builder did not listen; $OUT/b0.log:" >&2; cat "$OUT/b0.log" >&2; exit 1; }
ip netns exec $NS_A /usr/bin/time -f '%M' -o "$OUT/acq.rss" \
    "$SCANDAQ" node --cluster "$OUT/cluster.toml" --name acq --run 1 2>"$OUT/acq.log" &
ACQ=$!
for _ in $(seq 600); do
    grep -qs '"running"' "$OUT"/out/nodes/acq/run-*/manifest.json && break
    sleep 0.1
done
T0=$(date +%s.%N)
ip netns exec $NS_A "$FPGA_SIM" --preset bench --udp 127.0.0.1:46001 --rate "$SIM_RATE" \
    --duration "$SIM_DURATION" --seed 11 >"$OUT/sim.log" 2>&1
wait $ACQ || echo "acquisition node exited with $?"
T1=$(date +%s.%N)
wait $B0 || echo "builder exited with $?"
tc -n $NS_A -s qdisc show dev sdq-a >"$OUT/qdisc.txt"
(cd "$OUT" && "$SCANDAQ" cluster manifest --cluster cluster.toml --run 1) >"$OUT/manifest.txt"

python3 - "$OUT" "$T0" "$T1" <<'EOF'
import json, re, sys, pathlib
out, t0, t1 = pathlib.Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
acq = json.loads((out / "out/run=1/acquisition-acq.json").read_text())
run = json.loads((out / "out/run=1/manifest.json").read_text())
link = acq["links"][0]
losses = {k: v for k, v in acq["losses"].items() if v}
print(f"acquisition node: state {acq['state']}, singles sent {link['rows_sent']}, "
      f"batches sent/acked {link['batches_sent']}/{link['batches_acked']}, "
      f"buffer-full drops {link['rows_buffer_full']}, unreachable {link['rows_unreachable']}")
print(f"  losses by reason: {losses or 'none'}")
written = acq["counts"].get("singles_written", 0)
routed = link["rows_sent"] + link["rows_buffer_full"] + link["rows_unreachable"]
print(f"  accounting: sent + dropped = {routed} rows for {written} singles in the node's own table "
      f"(+{routed - written}: lead-out rows routed to two slices)")
print(f"builder: {run['prompts']} prompts, {run['delayed']} delayed, "
      f"{len(run['missing_slices'])} missing slice(s); run complete: {run['complete']}")
for name in ("acq", "b0"):
    kb = int((out / f"{name}.rss").read_text().split()[-1])
    print(f"peak RSS {name}: {kb / 1024:.0f} MiB")
q = (out / "qdisc.txt").read_text()
sent = re.search(r"qdisc tbf.*?Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)", q, re.S)
if sent:
    b, p, d, o = map(int, sent.groups())
    print(f"link: {b / 1e6:.0f} MB in {t1 - t0:.1f} s = {b * 8 / (t1 - t0) / 1e6:.0f} Mbit/s, "
          f"{d} packets dropped by the qdisc, {o} overlimits")

EOF
echo "files: $OUT (manifest.txt, qdisc.txt, *.log)"
