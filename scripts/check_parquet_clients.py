#!/usr/bin/env python3
"""Real-client check of scandaq run directories.

For every run directory given: pyarrow and DuckDB each read every Parquet file the manifest
lists; row counts must equal the manifest's, the singles must be time ordered, the files must
carry scandaq's key-value metadata, and the manifest's counts must add up
(hits_decoded == singles_written + calibration losses + late hits).
Exits non-zero with a message on the first disagreement.
"""
import json
import pathlib
import sys

import duckdb
import pyarrow.parquet as pq

DROPPED = ("no_tdc_calibration", "no_energy_calibration", "no_skew_calibration", "late_hit")


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def check_run(run_dir: pathlib.Path) -> int:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    if not manifest["complete"]:
        fail(f"{run_dir}: manifest says the run is incomplete")
    if not manifest["files"]:
        fail(f"{run_dir}: manifest lists no files")
    counts, losses = manifest["counts"], manifest["losses"]
    dropped = sum(losses.get(k, 0) for k in DROPPED)
    if counts["hits_decoded"] != counts["singles_written"] + dropped:
        fail(f"{run_dir}: hits_decoded {counts['hits_decoded']} != singles {counts['singles_written']} + dropped {dropped}")
    con = duckdb.connect()
    total = 0
    for f in manifest["files"]:
        path = run_dir / f["path"]
        if path.stat().st_size != f["bytes"]:
            fail(f"{path}: size {path.stat().st_size} != manifest {f['bytes']}")
        table = pq.read_table(path)
        if table.num_rows != f["rows"]:
            fail(f"{path}: pyarrow reads {table.num_rows} rows, manifest says {f['rows']}")
        meta = {k.decode(): v.decode() for k, v in (pq.read_metadata(path).metadata or {}).items()}
        for key in ("scandaq.run", "scandaq.software_version", "scandaq.calibration_checksum", "scandaq.source"):
            if key not in meta:
                fail(f"{path}: key-value metadata {key} missing")
        if int(meta["scandaq.run"]) != manifest["run"]:
            fail(f"{path}: metadata run {meta['scandaq.run']} != manifest run {manifest['run']}")
        n, ordered, t_min, t_max = con.execute(
            "SELECT count(*), bool_and(ordered), min(t_ps), max(t_ps) FROM ("
            " SELECT t_ps, t_ps >= coalesce(lag(t_ps) OVER (), t_ps) AS ordered"
            f" FROM read_parquet('{path}'))"
        ).fetchone()
        if n != f["rows"]:
            fail(f"{path}: DuckDB reads {n} rows, manifest says {f['rows']}")
        if n and not ordered:
            fail(f"{path}: singles are not time ordered")
        if n and (t_min != manifest["first_t_ps"] or t_max != manifest["last_t_ps"]):
            fail(f"{path}: t_ps range {t_min}..{t_max} != manifest {manifest['first_t_ps']}..{manifest['last_t_ps']}")
        if manifest["energy_unit"] == "keV":
            peak = con.execute(
                f"SELECT count(*) FILTER (WHERE energy_kev BETWEEN 450 AND 575) FROM read_parquet('{path}')"
            ).fetchone()[0]
            print(f"  {path.name}: {n} rows, {peak} in the 450-575 keV window")
        total += n
    if total != counts["singles_written"]:
        fail(f"{run_dir}: files hold {total} rows, manifest singles_written {counts['singles_written']}")
    return total


def main():
    runs = [pathlib.Path(p) for p in sys.argv[1:]]
    if not runs:
        fail("usage: check_parquet_clients.py RUN_DIR...")
    for run in runs:
        rows = check_run(run)
        print(f"ok {run}: {rows} singles read by pyarrow and DuckDB, counts match the manifest")


if __name__ == "__main__":
    main()
