#!/usr/bin/env python3
"""Parquet singles sink beside pyarrow, same table, same codec and encodings, same script.

Usage: benches/scripts/sink_vs_pyarrow.py SINGLES.parquet [REPEATS]

SINGLES.parquet is a singles table a scandaq run wrote (t_ps, channel, energy_kev, flags).
Both writers get the whole table in memory and write it with zstd level 1, DELTA_BINARY_PACKED
for t_ps, BYTE_STREAM_SPLIT for energy_kev, dictionaries for channel and flags, plain for the
rest, 1 Mi-row row groups. Reports median rows/s over REPEATS runs and the file sizes.
Needs: pip install pyarrow; cargo (builds benches' sink_bench in release).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq

src = sys.argv[1]
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
table = pq.read_table(src, columns=["t_ps", "channel", "energy_kev", "flags"])
times = []
size = 0
with tempfile.TemporaryDirectory() as d:
    for i in range(repeats):
        out = os.path.join(d, f"pa-{i}.parquet")
        t0 = time.perf_counter()
        pq.write_table(
            table,
            out,
            compression="zstd",
            compression_level=1,
            use_dictionary=["channel", "flags"],
            column_encoding={"t_ps": "DELTA_BINARY_PACKED", "energy_kev": "BYTE_STREAM_SPLIT"},
            row_group_size=1 << 20,
        )
        times.append(time.perf_counter() - t0)
        size = os.path.getsize(out)
pa_med = statistics.median(times)
pa = {"writer": "pyarrow", "rows": table.num_rows, "median_s": pa_med,
      "rows_per_s": table.num_rows / pa_med, "bytes": size}
subprocess.run(["cargo", "build", "-q", "--release", "-p", "scandaq-benches", "--bin", "sink_bench"],
               cwd=root, check=True)
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
out = subprocess.run([os.path.join(target, "release", "sink_bench"), src, str(repeats)],
                     capture_output=True, text=True, check=True).stdout
rows = [json.loads(l) for l in out.strip().splitlines() if l.startswith("{")]
print(json.dumps(pa))
for sd in rows:
    print(json.dumps(sd))
    print(f"{sd['writer']} / pyarrow: {sd['rows_per_s'] / pa['rows_per_s']:.2f}x rows/s, "
          f"{sd['bytes'] / pa['bytes']:.3f}x file size ({table.num_rows} rows)")
