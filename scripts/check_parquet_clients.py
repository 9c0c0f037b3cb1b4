#!/usr/bin/env python3
"""Real-client check of scandaq run directories.

For every run directory given: pyarrow and DuckDB each read every Parquet file the manifest
lists; row counts must equal the manifest's, the singles must be time ordered, the files must
carry scandaq's key-value metadata, and the manifest's counts must add up
(hits_decoded == singles_written + calibration losses + late hits).

PETLINK list-mode replays (`scandaq replay FILE.l`) write `petlink_events` and
`petlink_singles` instead of singles (the table is named in each file's `scandaq.table`
metadata): their row counts must equal the manifest's events_written / singles_tags, the
word kinds must add up to the word count, prompts and delayeds must match the `prompt`
column, and time_ms must never decrease in the events table. Files of any other table are
skipped with a note.
Exits non-zero with a message on the first disagreement.
"""
import json
import pathlib
import sys

import duckdb
import polars as pl
import pyarrow.parquet as pq

DROPPED = ("no_tdc_calibration", "no_energy_calibration", "no_skew_calibration", "late_hit")
PETLINK_KINDS = ("prompts", "delayeds", "time_tags", "singles_tags", "gantry_tags", "gating_tags", "control_words")
PETLINK_TABLES = ("petlink_events", "petlink_singles")


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
    if "hits_decoded" in counts:
        dropped = sum(losses.get(k, 0) for k in DROPPED)
        if counts["hits_decoded"] != counts["singles_written"] + dropped:
            fail(f"{run_dir}: hits_decoded {counts['hits_decoded']} != singles {counts['singles_written']} + dropped {dropped}")
    con = duckdb.connect()
    total = 0
    singles_files = []
    for f in manifest["files"]:
        path = run_dir / f["path"]
        if path.stat().st_size != f["bytes"]:
            fail(f"{path}: size {path.stat().st_size} != manifest {f['bytes']}")
        table = pq.read_table(path)
        if table.num_rows != f["rows"]:
            fail(f"{path}: pyarrow reads {table.num_rows} rows, manifest says {f['rows']}")
        frame = pl.read_parquet(path)
        if frame.height != f["rows"] or frame.columns != table.column_names:
            fail(f"{path}: polars reads {frame.height} rows {frame.columns}, manifest says {f['rows']}")
        meta = {k.decode(): v.decode() for k, v in (pq.read_metadata(path).metadata or {}).items()}
        for key in ("scandaq.run", "scandaq.software_version", "scandaq.source"):
            if key not in meta:
                fail(f"{path}: key-value metadata {key} missing")
        if int(meta["scandaq.run"]) != manifest["run"]:
            fail(f"{path}: metadata run {meta['scandaq.run']} != manifest run {manifest['run']}")
        kind = meta.get("scandaq.table", "singles")
        if kind in PETLINK_TABLES:
            total += check_petlink_file(con, path, kind, f, manifest)
            continue
        if kind in ("coincidences", "delayed"):
            check_coincidence_file(con, path, kind, f, manifest)
            continue
        if kind != "singles":
            print(f"  skip {path.name}: table {kind!r} has no client check yet (row count and size checked)")
            continue
        if "scandaq.calibration_checksum" not in meta:
            fail(f"{path}: key-value metadata scandaq.calibration_checksum missing")
        n, ordered, t_min, t_max = con.execute(
            "SELECT count(*), bool_and(ordered), min(t_ps), max(t_ps) FROM ("
            " SELECT t_ps, t_ps >= coalesce(lag(t_ps) OVER (), t_ps) AS ordered"
            f" FROM read_parquet('{path}'))"
        ).fetchone()
        if n != f["rows"]:
            fail(f"{path}: DuckDB reads {n} rows, manifest says {f['rows']}")
        if n and not ordered:
            fail(f"{path}: singles are not time ordered")
        if n and (str(t_min), str(t_max)) != (meta.get("first_t_ps"), meta.get("last_t_ps")):
            fail(f"{path}: t_ps range {t_min}..{t_max} != file metadata {meta.get('first_t_ps')}..{meta.get('last_t_ps')}")
        if n and not (manifest["first_t_ps"] <= t_min and t_max <= manifest["last_t_ps"]):
            fail(f"{path}: t_ps range {t_min}..{t_max} outside the run's {manifest['first_t_ps']}..{manifest['last_t_ps']}")
        if manifest["energy_unit"] == "keV":
            peak = con.execute(
                f"SELECT count(*) FILTER (WHERE energy_kev BETWEEN 450 AND 575) FROM read_parquet('{path}')"
            ).fetchone()[0]
            print(f"  {path.name}: {n} rows, {peak} in the 450-575 keV window")
        total += n
        singles_files.append(path)
    if singles_files:
        check_derived_columns(con, run_dir, singles_files, counts)
    if "words" in counts:
        check_petlink_counts(run_dir, counts)
    elif total != counts["singles_written"]:
        fail(f"{run_dir}: files hold {total} rows, manifest singles_written {counts['singles_written']}")
    return total


def check_derived_columns(con, run_dir, paths, counts):
    """Optional singles columns, over all of a run's singles files (a photon may straddle a
    rotation): each photon_id's rows carry its row count as photon_multiplicity; ungrouped
    rows (photon_id = 2^64-1) and NaN positions match the manifest; one position per channel."""
    files = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    columns = set(pq.read_schema(paths[0]).names)
    if "photon_id" in columns:
        bad, photons, ungrouped = con.execute(
            "SELECT count(*) FILTER (WHERE mn != c OR mx != c), count(*) FILTER (WHERE photon_id != 18446744073709551615),"
            " coalesce(sum(c) FILTER (WHERE photon_id = 18446744073709551615), 0) FROM ("
            " SELECT photon_id, min(photon_multiplicity) mn, max(photon_multiplicity) mx, count(*) c"
            f" FROM read_parquet({files}) GROUP BY photon_id)"
        ).fetchone()
        if bad:
            fail(f"{run_dir}: {bad} photons whose photon_multiplicity is not their row count")
        if ungrouped != counts.get("singles.photon_ungrouped", 0):
            fail(f"{run_dir}: {ungrouped} ungrouped singles, manifest {counts.get('singles.photon_ungrouped')}")
        print(f"  photon columns: {photons} photons, multiplicities = row counts")
    if "x_mm" in columns:
        moved, missing = con.execute(
            "SELECT count(*) FILTER (WHERE n > 1), coalesce(sum(nan), 0) FROM ("
            " SELECT channel, count(DISTINCT (x_mm, y_mm, z_mm)) FILTER (WHERE NOT isnan(x_mm)) n,"
            " count(*) FILTER (WHERE isnan(x_mm)) nan"
            f" FROM read_parquet({files}) GROUP BY channel)"
        ).fetchone()
        if moved:
            fail(f"{run_dir}: {moved} channels with more than one crystal position")
        if missing != counts.get("singles.position_missing_from_geometry", 0):
            fail(f"{run_dir}: {missing} singles without a position, manifest {counts.get('singles.position_missing_from_geometry')}")
        print(f"  position columns: one centre per channel, {missing} singles without one")


def check_coincidence_file(con, path, kind, f, manifest):
    """Prompt / delayed coincidences: rows equal the manifest's pair count, tof = t1 - t2, the
    pair lies inside its window, energies inside the configured energy window."""
    meta = {k.decode(): v.decode() for k, v in (pq.read_metadata(path).metadata or {}).items()}
    config = json.loads(meta["scandaq.coincidence_config"])
    key = "prompt" if kind == "coincidences" else "delayed"
    pairs = manifest["counts"][f"coincidences.{key}.pairs"]
    lo = 0 if kind == "coincidences" else config["delay_ps"]
    hi = lo + config["window_ps"]
    n, bad_tof, outside, n_delayed_flag = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE tof_ps != t1_ps - t2_ps),"
        f" count(*) FILTER (WHERE t2_ps - t1_ps < {lo} OR t2_ps - t1_ps > {hi}),"
        " count(*) FILTER (WHERE flags & 1 = 1)"
        f" FROM read_parquet('{path}')"
    ).fetchone()
    if n != pairs or n != f["rows"]:
        fail(f"{path}: DuckDB reads {n} pairs, manifest {pairs} / file record {f['rows']}")
    if bad_tof or outside:
        fail(f"{path}: {bad_tof} rows with tof_ps != t1 - t2, {outside} outside the window [{lo}, {hi}] ps")
    if n_delayed_flag != (n if kind == "delayed" else 0):
        fail(f"{path}: {n_delayed_flag} rows flagged delayed of {n}")
    window = config.get("energy_window_kev")
    if window and manifest["energy_unit"] == "keV":
        out_e = con.execute(
            f"SELECT count(*) FILTER (WHERE energy1_kev NOT BETWEEN {window[0]} AND {window[1]}"
            f" OR energy2_kev NOT BETWEEN {window[0]} AND {window[1]}) FROM read_parquet('{path}')"
        ).fetchone()[0]
        if out_e:
            fail(f"{path}: {out_e} pairs with an energy outside {window} keV")
    print(f"  {path.name}: {n} {kind} pairs inside [{lo}, {hi}] ps, tof = t1 - t2")


def check_petlink_counts(run_dir, counts):
    """Every PETLINK word is of one kind; every byte is in a word or the trailing partial word."""
    kinds = sum(counts[k] for k in PETLINK_KINDS)
    if kinds != counts["words"]:
        fail(f"{run_dir}: word kinds add up to {kinds}, manifest words {counts['words']}")
    if 4 * counts["words"] + counts["trailing_bytes"] != counts["bytes"]:
        fail(f"{run_dir}: 4 * words + trailing_bytes != bytes {counts['bytes']}")
    kept = counts["prompts"] + counts["delayeds"] - counts["address_out_of_range"]
    if counts["events_written"] != kept:
        fail(f"{run_dir}: events_written {counts['events_written']} != prompts + delayeds - out of range {kept}")


def check_petlink_file(con, path, kind, f, manifest):
    """Row counts and columns of a PETLINK table against the manifest; returns its rows."""
    counts = manifest["counts"]
    if kind == "petlink_events":
        n, n_prompt, ordered, t_min, t_max = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE prompt), bool_and(ordered), min(time_ms), max(time_ms) FROM ("
            " SELECT prompt, time_ms, time_ms >= coalesce(lag(time_ms) OVER (), time_ms) AS ordered"
            f" FROM read_parquet('{path}'))"
        ).fetchone()
        if n != f["rows"] or n != counts["events_written"]:
            fail(f"{path}: DuckDB reads {n} rows, manifest says {f['rows']} (events_written {counts['events_written']})")
        if counts["address_out_of_range"] == 0 and (n_prompt, n - n_prompt) != (counts["prompts"], counts["delayeds"]):
            fail(f"{path}: {n_prompt} prompts / {n - n_prompt} delayeds, manifest {counts['prompts']} / {counts['delayeds']}")
        if n and not ordered:
            fail(f"{path}: time_ms decreases (manifest counts {counts['backward_time_jumps']} backward time jumps)")
        if n and "max_time_ms" in counts and t_max > counts["max_time_ms"]:
            fail(f"{path}: time_ms reaches {t_max}, beyond the last time tag {counts['max_time_ms']}")
        print(f"  {path.name}: {n} events ({n_prompt} prompts), time_ms {t_min}..{t_max}")
    else:
        n = con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()[0]
        if n != f["rows"] or n != counts["singles_tags"]:
            fail(f"{path}: DuckDB reads {n} rows, manifest says {f['rows']} (singles_tags {counts['singles_tags']})")
        print(f"  {path.name}: {n} singles-rate rows")
    return n


def main():
    runs = [pathlib.Path(p) for p in sys.argv[1:]]
    if not runs:
        fail("usage: check_parquet_clients.py RUN_DIR...")
    for run in runs:
        rows = check_run(run)
        print(f"ok {run}: {rows} rows read by pyarrow, polars and DuckDB, counts match the manifest")


if __name__ == "__main__":
    main()
