#!/usr/bin/env python3
"""Makes a longer run out of a short one for the PETSIRD export benchmark: the run's prompt and
delayed tables repeated N times back to back in time (each copy's t1_ps/t2_ps shifted by the
run's span), streamed batch by batch with pyarrow (row groups of 256 Ki rows, zstd, the
table's own key-value metadata, so `scandaq export petsird` reads it as a scandaq run); the
manifest's time span stretched to match; calib/ copied.

Usage: petsird_tile_run.py RUN_DIR OUT_RUN_DIR N
"""

import json
import os
import shutil
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def tile(src, dst, n, span_ps):
    f = pq.ParquetFile(src)
    meta = {k: v for k, v in (f.metadata.metadata or {}).items() if k != b"ARROW:schema"}
    schema = f.schema_arrow.with_metadata(meta)
    with pq.ParquetWriter(dst, schema, compression="zstd") as w:
        for k in range(n):
            for b in f.iter_batches(batch_size=256 << 10):
                cols = []
                for name in schema.names:
                    c = b.column(name)
                    if name in ("t1_ps", "t2_ps"):
                        c = pc.add(c, pa.scalar(k * span_ps, pa.int64()))
                    cols.append(c)
                w.write_batch(pa.record_batch(cols, schema=schema), row_group_size=256 << 10)
    return pq.ParquetFile(dst).metadata.num_rows


def main():
    run, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.makedirs(out, exist_ok=True)
    shutil.copytree(os.path.join(run, "calib"), os.path.join(out, "calib"), dirs_exist_ok=True)
    with open(os.path.join(run, "manifest.json")) as f:
        m = json.load(f)
    span = m["last_t_ps"] - m["first_t_ps"] + 1
    rows = {}
    for table in ("coincidences-00000.parquet", "delayed-00000.parquet"):
        if os.path.exists(os.path.join(run, table)):
            rows[table] = tile(os.path.join(run, table), os.path.join(out, table), n, span)
    m["last_t_ps"] = m["first_t_ps"] + n * span - 1
    m["files"] = []
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(m, f, indent=2)
    print(json.dumps({"rows": rows, "span_s": n * span / 1e12}))


if __name__ == "__main__":
    main()
