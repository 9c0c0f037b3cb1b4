#!/usr/bin/env python3
"""Checks a BIDS recording written by `scandaq export bids` with MNE-BIDS against the run.

Usage: check_bids_mne.py BIDS_ROOT RUN_DIR REFERENCE.fif --subject S --session X --task T
       [--run N] [--bad NAME ...] [--split]

Opens the recording with mne_bids.read_raw_bids (sharing no code with scandaq) and checks:
the samples equal those of REFERENCE.fif (the run's plain `scandaq export fif`, read with
mne.io.read_raw_fif) exactly; the bad channels are exactly the --bad names; the events
(annotations and the event dictionary) equal the rising edges of the run's triggers table,
read here with pyarrow: onset = (sample - first sample of meg_blocks) / sfreq, description
bitB, value 2^B; the sidecars MNE-BIDS does not apply (coordsystem.json, scans.tsv) are there
and say what scandaq documents. With --split the data file must be split into
..._split-NN_meg.fif parts. Prints one line per check; exits 1 on the first mismatch.
"""
import argparse
import json
import sys
from pathlib import Path

import mne
import mne_bids
import numpy as np
import pyarrow.parquet as pq


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def triggers(run_dir):
    """(sample from the first block, bit) of every rising edge, in order."""
    first = min(pq.read_table(run_dir / "meg_blocks-source0.parquet", columns=["first_sample"])
                .column("first_sample").to_pylist())
    t = pq.read_table(run_dir / "triggers-source0.parquet").to_pydict()
    rises = [(s - first, b) for s, b, r in zip(t["sample"], t["bit"], t["rising"]) if r]
    return sorted(rises)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("run_dir")
    ap.add_argument("reference")
    ap.add_argument("--subject", required=True)
    ap.add_argument("--session", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--run")
    ap.add_argument("--bad", action="append", default=[])
    ap.add_argument("--split", action="store_true")
    a = ap.parse_args()
    root, run_dir = Path(a.root), Path(a.run_dir)
    path = mne_bids.BIDSPath(root=root, subject=a.subject, session=a.session, task=a.task,
                             run=a.run, datatype="meg", suffix="meg", extension=".fif")
    meg_dir = root / f"sub-{a.subject}" / f"ses-{a.session}" / "meg"
    prefix = f"sub-{a.subject}_ses-{a.session}_task-{a.task}" + (f"_run-{a.run}" if a.run else "")
    splits = sorted(meg_dir.glob(f"{prefix}_split-*_meg.fif"))
    if a.split:
        if len(splits) < 2 or (meg_dir / f"{prefix}_meg.fif").exists():
            fail(f"expected split parts only, found {sorted(meg_dir.iterdir())}")
        print(f"data file split into {len(splits)} parts named as BIDS wants: {[p.name for p in splits]}")
        # MNE-BIDS opens the first part; MNE follows the parts' links to the rest.
        path.update(split="01")
    elif splits:
        fail(f"unexpected split parts {splits}")
    raw, event_id = mne_bids.read_raw_bids(path, return_event_dict=True, verbose="error")
    ref = mne.io.read_raw_fif(a.reference, verbose="error")
    if raw.ch_names != ref.ch_names:
        fail(f"channels {raw.ch_names} != {ref.ch_names}")
    x, y = raw.get_data(), ref.get_data()
    if x.shape != y.shape or not np.array_equal(x, y):
        fail(f"samples differ from the FIF export: shapes {x.shape} {y.shape}")
    print(f"samples: {x.shape[0]} channels x {x.shape[1]} samples equal the FIF export exactly")
    if sorted(raw.info["bads"]) != sorted(a.bad):
        fail(f"bad channels {raw.info['bads']} != {a.bad}")
    print(f"bad channels: {raw.info['bads']}")
    sfreq = raw.info["sfreq"]
    want = triggers(run_dir)
    ann = raw.annotations
    onsets = ann.onset - (raw.first_samp / sfreq if ann.orig_time is not None else 0.0)
    got = [(int(round(o * sfreq)), d) for o, d in zip(onsets, ann.description)]
    if got != [(s, f"bit{b}") for s, b in want]:
        fail(f"events {got[:5]}... != triggers {want[:5]}...")
    worst = max((abs(o - s / sfreq) for o, (s, _) in zip(onsets, want)), default=0.0)
    if worst > 2e-6:
        fail(f"event onsets off by up to {worst} s")
    for b in {b for _, b in want}:
        if event_id.get(f"bit{b}") != 1 << b:
            fail(f"event_id {event_id}: bit{b} should be {1 << b}")
    print(f"events: {len(got)} equal the triggers table (worst onset error {worst:.2e} s), event_id {event_id}")
    cs = json.loads((meg_dir / f"sub-{a.subject}_ses-{a.session}_coordsystem.json").read_text())
    if cs.get("MEGCoordinateSystem") != "Other" or cs.get("MEGCoordinateUnits") != "m" \
            or not cs.get("MEGCoordinateSystemDescription"):
        fail(f"coordsystem.json {cs}")
    print("coordsystem.json: MEGCoordinateSystem Other (described), units m")
    sidecar = json.loads((meg_dir / f"{prefix}_meg.json").read_text())
    if abs(sidecar["SamplingFrequency"] - sfreq) > 1e-3 or sidecar["TaskName"] != a.task:
        fail(f"meg.json {sidecar}")
    scans = (root / f"sub-{a.subject}" / f"ses-{a.session}"
             / f"sub-{a.subject}_ses-{a.session}_scans.tsv").read_text().splitlines()
    listed = {line.split("\t")[0] for line in scans[1:]}
    files = {f"meg/{p.name}" for p in (splits or [meg_dir / f"{prefix}_meg.fif"])}
    if not files <= listed:
        fail(f"scans.tsv lists {listed}, not {files}")
    print(f"scans.tsv lists {sorted(files)}")
    print("all BIDS checks passed")


if __name__ == "__main__":
    main()
