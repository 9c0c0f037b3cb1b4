#!/usr/bin/env python3
"""Reads a `scandaq export petsird` file with PETSIRD's reference reader (pip install
petsird==0.12.0) and checks it against the run it came from, using only the run's own files
(manifest.json, calib/map_channel.tsv, the coincidence Parquet tables read with pyarrow, every
file of each table's sequence in order):

- the file opens (magic bytes, version, schema compared byte for byte) and every time block
  reads to the stream's end marker;
- the scanner geometry: as many detecting elements as crystals in the map, and the element
  centres (module transform after element transform applied to the box centre) are the map's
  crystal positions;
- prompt and delayed counts per time block equal those of the tables, binned by
  floor((t1_ps - first_t_ps) / block);
- event by event (events in table order inside a block): the two detection bins are the two
  crystals of the table row (in PETSIRD order, detectionBin1 >= detectionBin2), the TOF bin
  holds the row's time difference in mm with the sign of that order, the energy bins hold the
  row's energies.

Usage: check_petsird.py RUN_DIR FILE.petsird [--block-ms N] [--expect-refused]
With --expect-refused the file must NOT read (a truncated file): exit 0 when the reader raises.
Prints one JSON line with what was checked; exits 1 with the first mismatch.
"""

import argparse
import json
import math
import os
import re
import sys

import numpy as np
import petsird
import petsird.helpers as helpers
import pyarrow as pa
import pyarrow.parquet as pq

HALF_C_MM_PER_PS = 0.299792458 / 2.0


def fail(msg):
    print(f"MISMATCH: {msg}", file=sys.stderr)
    sys.exit(1)


def read_all(path):
    """Header and every time block, through the reference reader."""
    with petsird.BinaryPETSIRDReader(path) as reader:
        header = reader.read_header()
        blocks = [tb.value for tb in reader.read_time_blocks()
                  if isinstance(tb, petsird.TimeBlock.EventTimeBlock)]
    return header, blocks


def crystal_map(run_dir):
    """PETsys absolute channel id -> (x, y, z) mm, from calib/map_channel.tsv."""
    out = {}
    with open(os.path.join(run_dir, "calib", "map_channel.tsv")) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            p = line.split()
            port, slave, chip, ch = (int(v) for v in p[:4])
            out[(port << 17) | (slave << 12) | (chip << 6) | ch] = tuple(float(v) for v in p[7:10])
    return out


def element_centres(scanner):
    """Centre of every detecting element, indexed by module * elements + element."""
    rep = scanner.scanner_geometry.replicated_modules[0]
    corners = np.array([c.c for c in rep.object.detecting_elements.object.shape.corners])
    centre = np.append(corners.mean(axis=0), 1.0)
    elements = rep.object.detecting_elements.transforms
    out = []
    for m in rep.transforms:
        mm = np.vstack([m.matrix, [0, 0, 0, 1]])
        for e in elements:
            em = np.vstack([e.matrix, [0, 0, 0, 1]])
            out.append((mm @ em @ centre)[:3])
    return np.array(out)


def check_geometry(scanner, positions):
    centres = element_centres(scanner)
    if len(centres) != len(positions):
        fail(f"{len(centres)} detecting elements, the map has {len(positions)} crystals")
    want = np.array(sorted(positions.values()))
    got = np.array(sorted(map(tuple, np.round(centres, 3))))
    if not np.allclose(want, got, atol=2e-3):
        fail("element centres differ from the map's crystal positions")
    return centres


def table_files(run_dir, name):
    """The committed files of table `name` (`coincidences`, `delayed`), in file-number order."""
    pattern = re.compile(re.escape(name) + r"-(\d{5,})\.parquet$")
    found = sorted((int(m.group(1)), f) for f in os.listdir(run_dir)
                   if (m := pattern.match(f)))
    return [os.path.join(run_dir, f) for _, f in found]


def table(run_dir, name):
    """A coincidence table's rows, every file of its sequence in order (None: no table)."""
    files = table_files(run_dir, name)
    if not files:
        return None
    columns = ["t1_ps", "channel1", "channel2", "energy1_kev", "energy2_kev", "tof_ps"]
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files]).to_pydict()


def coincidence_config(run_dir):
    md = pq.ParquetFile(table_files(run_dir, "coincidences")[0]).metadata.metadata
    return json.loads(md[b"scandaq.coincidence_config"])


def check_counts(blocks, t, t0, block_ms, which):
    got = [len(b.prompt_events[0][0]) if which == "prompt" else
           (len(b.delayed_events[0][0]) if b.delayed_events else 0) for b in blocks]
    block_ps = block_ms * 1_000_000_000
    want = [0] * len(blocks)
    for t1 in t["t1_ps"] if t else []:
        k = (t1 - t0) // block_ps
        if k >= len(blocks):
            fail(f"a {which} at t1_ps {t1} falls in block {k}, the file has {len(blocks)} blocks")
        want[k] += 1
    if got != want:
        bad = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
        fail(f"{which} counts differ in block {bad}: file {got[bad]}, table {want[bad]}")
    return sum(want)


def check_events(scanner, blocks, t, which, positions, centres, shift_ps):
    """Every event against its table row (same order)."""
    tof_edges = scanner.tof_bin_edges[0][0].edges
    energy_edges = scanner.event_energy_bin_edges[0].edges
    n_energy = len(energy_edges) - 1
    events = [e for b in blocks for e in
              (b.prompt_events[0][0] if which == "prompt" else
               (b.delayed_events[0][0] if b.delayed_events else []))]
    n = len(t["t1_ps"]) if t else 0
    if len(events) != n:
        fail(f"{len(events)} {which} events, the table has {n}")
    for i, ev in enumerate(events):
        b1, b2 = ev.detection_bins
        if not helpers.are_detections_ordered([0, 0], b1, b2):
            fail(f"{which} event {i}: detection bins {b1} < {b2} (PETSIRD requires >=)")
        p1 = np.array(positions[t["channel1"][i]])
        p2 = np.array(positions[t["channel2"][i]])
        q1, q2 = centres[b1 // n_energy], centres[b2 // n_energy]
        dt = t["tof_ps"][i] + shift_ps
        e1, e2 = t["energy1_kev"][i], t["energy2_kev"][i]
        if np.allclose(q1, p1, atol=2e-3) and np.allclose(q2, p2, atol=2e-3):
            pass
        elif np.allclose(q1, p2, atol=2e-3) and np.allclose(q2, p1, atol=2e-3):
            dt, e1, e2 = -dt, e2, e1
        else:
            fail(f"{which} event {i}: elements at {q1}, {q2}, the table's crystals at {p1}, {p2}")
        dt_mm = dt * HALF_C_MM_PER_PS
        k = ev.tof_idx
        eps = 1e-3 * max(1.0, abs(dt_mm))
        if not (tof_edges[k] - eps <= dt_mm <= tof_edges[k + 1] + eps):
            fail(f"{which} event {i}: TOF bin {k} [{tof_edges[k]}, {tof_edges[k + 1]}] mm "
                 f"does not hold {dt_mm} mm (tof_ps {t['tof_ps'][i]})")
        for e, b in ((e1, b1), (e2, b2)):
            j = b % n_energy
            if not (energy_edges[j] <= e <= energy_edges[j + 1]):
                fail(f"{which} event {i}: energy bin {j} does not hold {e} keV")
    return len(events)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("file")
    ap.add_argument("--block-ms", type=int, default=1)
    ap.add_argument("--expect-refused", action="store_true")
    a = ap.parse_args()
    if a.expect_refused:
        try:
            read_all(a.file)
        except Exception as e:  # the reader's refusal: EOFError, RuntimeError, ...
            print(json.dumps({"refused": type(e).__name__, "why": str(e)}))
            return
        fail(f"{a.file} was read without error")
    header, blocks = read_all(a.file)
    scanner = header.scanner
    positions = crystal_map(a.run_dir)
    centres = check_geometry(scanner, positions)
    with open(os.path.join(a.run_dir, "manifest.json")) as f:
        manifest = json.load(f)
    prompts = table(a.run_dir, "coincidences")
    delayed = table(a.run_dir, "delayed")
    t0 = manifest.get("first_t_ps")
    if t0 is None:
        t0 = min(t["t1_ps"][0] for t in (prompts, delayed) if t and t["t1_ps"])
    for i, b in enumerate(blocks):
        iv = b.time_interval
        if (iv.start, iv.stop) != (i * a.block_ms, (i + 1) * a.block_ms):
            fail(f"block {i} covers [{iv.start}, {iv.stop}) ms")
    n_p = check_counts(blocks, prompts, t0, a.block_ms, "prompt")
    has_delayed = any(b.delayed_events for b in blocks)
    n_d = check_counts(blocks, delayed, t0, a.block_ms, "delayed") if has_delayed else 0
    check_events(scanner, blocks, prompts, "prompt", positions, centres, 0)
    if has_delayed:
        delay = coincidence_config(a.run_dir).get("delay_ps") or 0
        check_events(scanner, blocks, delayed, "delayed", positions, centres, delay)
    print(json.dumps({
        "elements": len(centres), "blocks": len(blocks), "prompts": n_p, "delayed": n_d,
        "tof_bins": len(scanner.tof_bin_edges[0][0].edges) - 1,
        "energy_bins": len(scanner.event_energy_bin_edges[0].edges) - 1,
        "tof_resolution_mm": float(scanner.tof_resolution[0][0]),
    }))


if __name__ == "__main__":
    main()
