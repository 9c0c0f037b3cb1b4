#!/usr/bin/env bash
# scandaq replay side by side with PETsys's own offline converters (convert_raw_to_singles,
# convert_raw_to_coincidence; built as in ../shared/peers/PETSYS.md, outside this repository).
#
# fpga-sim writes each data set (.rawf + .idxf + calib/config.ini); every job then runs RUNS
# times, the jobs alternating run by run, page cache warm (one untimed read of the file first).
# Each run is timed by /usr/bin/time (wall, user + sys CPU, peak RSS); the tables give medians.
# PETsys runs twice: stock, and "tuned" with GLIBC_TUNABLES (its page-fault storm removed).
# A PETsys run that aborts with rc 134 (`pure virtual method called`, about one in 30-60) is
# rerun, up to 3 times.
#
# Usage: benches/scripts/vs_petsys.sh PETSYS_BIN_DIR
# Environment:
#   RUNS=5                  runs per job (median reported)
#   SIZES="10M 50M"         hits per data set (50 M-hit runs take minutes)
#   RATES="1M 20M"          hit rates; 1M uses the bench preset, 20M (> 5M) the ring preset
#   DATASETS="bench:1M:10M" explicit preset:rate:hits list (overrides SIZES and RATES)
#   SEED=5                  fpga-sim seed
#   ROWS=1                  also compare the coincidence rows (vs_petsys_rows.py; 0 = skip)
#   COMPRESSION=CODEC       scandaq's --compression for every job (default: its own, lz4;
#                           COMPRESSION=zstd gives the issue's "singles to zstd Parquet" job)
#   WORK=DIR                scratch directory (default: mktemp -d; removed at exit)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
    usage >&2
    exit 2
fi
petsys_dir=$(cd "$1" && pwd)
for tool in convert_raw_to_singles convert_raw_to_coincidence; do
    [[ -x $petsys_dir/$tool ]] || { echo "no $tool in $petsys_dir" >&2; exit 2; }
done
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time is missing (apt-get install time)" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
runs=${RUNS:-5}
seed=${SEED:-5}
codec=()
[[ -n ${COMPRESSION:-} ]] && codec=(--compression "$COMPRESSION")
tuned_env='glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=33554432'

cargo build --release -q -p scandaq -p scandaq-fpga-sim
bin=${CARGO_TARGET_DIR:-target}/release
scandaq=$(cd "$bin" && pwd)/scandaq
fpga_sim=$(cd "$bin" && pwd)/fpga-sim

if [[ -n ${WORK:-} ]]; then
    mkdir -p "$WORK"
    work=$(mktemp -d "$WORK/vs_petsys.XXXXXX")
else
    work=$(mktemp -d)
fi
trap 'rm -rf "$work"' EXIT

# Coincidences only: the --coincidences-only flag when this scandaq has it.
if "$scandaq" replay --help | grep -q -- '--coincidences-only'; then
    coinc_only=(--coincidences-only --delay 0)
    coinc_note="scandaq --coincidences-only --delay 0"
else
    coinc_only=(--delay 0)
    coinc_note="NOTE: this scandaq has no --coincidences-only: the coincidence job is the default replay with --delay 0 (it also writes all singles)"
    echo "$coinc_note" >&2
fi

# 10M -> 10000000, 2.5k -> 2500, 5e5 -> 500000
count() {
    awk -v s="$1" 'BEGIN {
        m = 1; u = toupper(substr(s, length(s)))
        if (u == "K") m = 1e3; else if (u == "M") m = 1e6; else if (u == "G") m = 1e9
        if (m > 1) s = substr(s, 1, length(s) - 1)
        printf "%.0f\n", s * m }'
}

median() { sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]; else print "nan"}'; }

# Runs one timed job: run_timed RESULTS OUTDIR ENV cmd... ; appends "wall cpu rss_kB" to
# RESULTS. OUTDIR is emptied first. rc 134 is retried (PETsys's sporadic abort).
run_timed() {
    local results=$1 outdir=$2 envs=$3
    shift 3
    local attempt rc t
    t=$(mktemp "$work/time.XXXXXX")
    for attempt in 1 2 3 4; do
        rm -rf "$outdir"
        mkdir -p "$outdir"
        rc=0
        env "$envs" /usr/bin/time -f '%e %U %S %M' -o "$t" "$@" >"$work/last.log" 2>&1 || rc=$?
        if [[ $rc -eq 134 && $attempt -le 3 ]]; then
            echo "  rc 134 (attempt $attempt): $(basename "$1") rerun" >&2
            continue
        fi
        break
    done
    if [[ $rc -ne 0 ]]; then
        echo "FAILED (rc $rc): $*" >&2
        tail -5 "$work/last.log" >&2
        exit 1
    fi
    awk 'END {printf "%s %.2f %s\n", $1, $2 + $3, $4}' "$t" >>"$results"
    rm -f "$t"
}

col() { awk -v c="$2" '{print $c}' "$1" | median; }
# Median wall / cpu / RSS (MB) of a results file.
wall() { col "$1" 1; }
cpu() { col "$1" 2; }
rss_mb() { col "$1" 3 | awk '{printf "%.0f", $1 / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2fx", a / b; else print "-"}'; }
cell() { printf '%.2f s (cpu %.2f s)' "$(wall "$1")" "$(cpu "$1")"; }
# Total bytes of the files DIR/PATTERN (0 when none).
bytes_of() {
    if [[ -d $1 ]]; then find "$1" -maxdepth 1 -name "$2" -printf '%s\n'; fi | awk '{s += $1} END {print s + 0}'
}

if [[ -n ${DATASETS:-} ]]; then
    read -r -a datasets <<<"$DATASETS"
else
    datasets=()
    for hits in ${SIZES:-10M 50M}; do
        for rate in ${RATES:-1M 20M}; do
            if [[ $(count "$rate") -gt 5000000 ]]; then preset=ring; else preset=bench; fi
            datasets+=("$preset:$rate:$hits")
        done
    done
fi

echo "# scandaq vs PETsys: $(date -u +%F), $(nproc) cores, median of $runs runs, page cache warm"
echo "# PETsys: $petsys_dir; scandaq: $("$scandaq" --version 2>/dev/null || echo "$scandaq")"
echo "# times: wall (user + sys CPU) from /usr/bin/time; RSS = peak resident set (MB)"
echo "# PETsys tuned: GLIBC_TUNABLES=$tuned_env"
echo "# coincidence job: $coinc_note"
echo "# scandaq page compression: ${COMPRESSION:-its default (lz4)}"

for ds in "${datasets[@]}"; do
    IFS=: read -r preset rate hits <<<"$ds"
    duration=$(awk -v h="$(count "$hits")" -v r="$(count "$rate")" 'BEGIN {printf "%.6f", h / r}')
    sim=$work/sim-$preset-$rate-$hits
    "$fpga_sim" --preset "$preset" --duration "$duration" --rate "$rate" --seed "$seed" \
        --out "$sim" >"$work/sim.log"
    rm -f "$sim/truth.parquet"
    rawf=$sim/$preset.rawf
    prefix=${rawf%.rawf}
    config=$sim/calib/config.ini
    emitted=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['hits_emitted'])" "$sim/summary.json")
    cat "$rawf" >/dev/null   # page cache warm

    res=$work/res-$preset-$rate-$hits
    mkdir -p "$res"
    out=$work/out
    for ((i = 1; i <= runs; i++)); do
        echo "  $preset $rate $hits: run $i/$runs" >&2
        run_timed "$res/ps_singles_stock" "$out/ps_s" "X=1" \
            "$petsys_dir/convert_raw_to_singles" --config "$config" -i "$prefix" -o "$out/ps_s/s" --writeBinary
        run_timed "$res/ps_singles_tuned" "$out/ps_s" "GLIBC_TUNABLES=$tuned_env" \
            "$petsys_dir/convert_raw_to_singles" --config "$config" -i "$prefix" -o "$out/ps_s/s" --writeBinary
        run_timed "$res/ps_coinc_stock" "$out/ps_c" "X=1" \
            "$petsys_dir/convert_raw_to_coincidence" --config "$config" -i "$prefix" -o "$out/ps_c/c" --writeBinary
        run_timed "$res/ps_coinc_tuned" "$out/ps_c" "GLIBC_TUNABLES=$tuned_env" \
            "$petsys_dir/convert_raw_to_coincidence" --config "$config" -i "$prefix" -o "$out/ps_c/c" --writeBinary
        run_timed "$res/sd_singles" "$out/sd_s" "X=1" \
            "$scandaq" replay "$rawf" --petsys-config "$config" --out "$out/sd_s" --no-progress --no-coincidences "${codec[@]}"
        run_timed "$res/sd_coinc" "$out/sd_c" "X=1" \
            "$scandaq" replay "$rawf" --petsys-config "$config" --out "$out/sd_c" --no-progress "${coinc_only[@]}" "${codec[@]}"
        run_timed "$res/sd_all" "$out/sd_all" "X=1" \
            "$scandaq" replay "$rawf" --petsys-config "$config" --out "$out/sd_all" --no-progress "${codec[@]}"
    done
    # PETsys's one-pass equivalent: its two converters one after the other (run i + run i).
    for v in stock tuned; do
        paste -d' ' "$res/ps_singles_$v" "$res/ps_coinc_$v" |
            awk '{printf "%.2f %.2f %d\n", $1 + $4, $2 + $5, ($3 > $6 ? $3 : $6)}' >"$res/ps_both_$v"
    done

    run_dir() { find "$1" -maxdepth 1 -name 'run-*' -type d | sort | tail -1; }
    s_run=$(run_dir "$out/sd_s")
    c_run=$(run_dir "$out/sd_c")
    a_run=$(run_dir "$out/sd_all")
    ps_s_bytes=$(bytes_of "$out/ps_s" s.ldat)
    ps_c_bytes=$(bytes_of "$out/ps_c" c.ldat)
    sd_s_bytes=$(bytes_of "$s_run" "singles-*.parquet")
    sd_c_bytes=$(bytes_of "$c_run" "coincidences-*.parquet")
    sd_a_bytes=$(( $(bytes_of "$a_run" "singles-*.parquet") + $(bytes_of "$a_run" "coincidences-*.parquet") + $(bytes_of "$a_run" "delayed-*.parquet") ))
    counts=$(python3 - "$a_run/manifest.json" "$c_run/manifest.json" <<'EOF'
import json, sys
a = json.load(open(sys.argv[1]))["counts"]
c = json.load(open(sys.argv[2]))["counts"]
print(a.get("singles_written", 0), c.get("coincidences.prompt.pairs", 0),
      a.get("coincidences.prompt.pairs", 0), a.get("coincidences.delayed.pairs", 0))
EOF
)
    read -r sd_singles sd_pairs_c sd_pairs_a sd_delayed <<<"$counts"

    echo
    echo "## $preset preset, $rate, $hits hits ($emitted emitted; .rawf $(stat -c %s "$rawf") B)"
    echo
    echo "| job | PETsys stock | PETsys tuned | scandaq | ratio (tuned / scandaq wall) | peak RSS MB (stock / tuned / scandaq) |"
    echo "|---|---|---|---|---|---|"
    for row in "singles|ps_singles|sd_singles" "coincidences|ps_coinc|sd_coinc" \
        "singles + prompts + delayed (PETsys: both converters)|ps_both|sd_all"; do
        IFS='|' read -r name ps sd <<<"$row"
        echo "| $name | $(cell "$res/${ps}_stock") | $(cell "$res/${ps}_tuned") | $(cell "$res/$sd") |" \
            "$(ratio "$(wall "$res/${ps}_tuned")" "$(wall "$res/$sd")") |" \
            "$(rss_mb "$res/${ps}_stock") / $(rss_mb "$res/${ps}_tuned") / $(rss_mb "$res/$sd") |"
    done
    echo
    echo "| output | PETsys (.ldat) | scandaq (Parquet) | scandaq / PETsys bytes |"
    echo "|---|---|---|---|"
    echo "| singles | $ps_s_bytes B, $((ps_s_bytes / 16)) rows | $sd_s_bytes B, $sd_singles rows | $(ratio "$sd_s_bytes" "$ps_s_bytes") |"
    echo "| coincidences | $ps_c_bytes B, $((ps_c_bytes / 36)) pairs | $sd_c_bytes B, $sd_pairs_c pairs | $(ratio "$sd_c_bytes" "$ps_c_bytes") |"
    echo "| one pass (singles + prompts + delayed) | $((ps_s_bytes + ps_c_bytes)) B | $sd_a_bytes B ($sd_pairs_a prompts, $sd_delayed delayed) | $(ratio "$sd_a_bytes" "$((ps_s_bytes + ps_c_bytes))") |"
    if [[ ${ROWS:-1} != 0 ]]; then
        echo
        if python3 -c 'import pyarrow, numpy' 2>/dev/null; then
            python3 "$here/vs_petsys_rows.py" "$out/ps_c/c.ldat" "$c_run" || echo "(row comparison failed)"
        else
            echo "(row comparison skipped: python3 needs pyarrow and numpy; pip install pyarrow)"
        fi
    fi
    rm -rf "$sim" "$out"
done
