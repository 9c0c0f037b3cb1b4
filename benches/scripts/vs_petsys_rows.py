#!/usr/bin/env python3
"""Compares PETsys coincidences (convert_raw_to_coincidence --writeBinary) with scandaq's.

Usage: vs_petsys_rows.py COINCIDENCES.ldat RUN_DIR

COINCIDENCES.ldat: 36 B packed little-endian records, per photon u8 n, u8 j, i64 time ps,
f32 energy, i32 channel id, photon 1 then photon 2. RUN_DIR: a scandaq run directory holding
coincidences-*.parquet (t1_ps, t2_ps, channel1, channel2, ...).

A pair is the unordered set {(time, channel), (time, channel)}; times may differ by 1 ps
between the two (PETsys truncates to integer ps, scandaq rounds). Pairs are compared by a
64-bit hash of (channels, times): exact but for hash collisions (about 1e-4 expected at 36 M
pairs); a pair present twice on one side counts as one. Prints counts: both, only PETsys,
only scandaq.
"""

import glob
import os
import sys

import numpy as np
import pyarrow.parquet as pq

LDAT = np.dtype(
    [
        ("n1", "u1"), ("j1", "u1"), ("t1", "<i8"), ("e1", "<f4"), ("id1", "<i4"),
        ("n2", "u1"), ("j2", "u1"), ("t2", "<i8"), ("e2", "<f4"), ("id2", "<i4"),
    ]
)
assert LDAT.itemsize == 36


def canonical(t1, c1, t2, c2):
    """Photon order fixed by (channel, time): returns (c_lo, t_lo, c_hi, t_hi)."""
    t1, t2 = t1.astype(np.int64), t2.astype(np.int64)
    c1, c2 = c1.astype(np.int64), c2.astype(np.int64)
    swap = (c1 > c2) | ((c1 == c2) & (t1 > t2))
    return (np.where(swap, c2, c1), np.where(swap, t2, t1),
            np.where(swap, c1, c2), np.where(swap, t1, t2))


def mix(x):
    """splitmix64 finaliser on uint64 arrays."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def key(c_lo, t_lo, c_hi, t_hi):
    with np.errstate(over="ignore"):
        h = mix((c_lo.astype(np.uint64) << np.uint64(32)) | c_hi.astype(np.uint64))
        h = mix(h ^ t_lo.astype(np.uint64))
        return mix(h ^ t_hi.astype(np.uint64))


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    ldat, run_dir = sys.argv[1], sys.argv[2]
    p = np.fromfile(ldat, dtype=LDAT)
    files = sorted(glob.glob(os.path.join(run_dir, "coincidences-*.parquet")))
    if not files:
        sys.exit(f"no coincidences-*.parquet in {run_dir}")
    cols = ["t1_ps", "t2_ps", "channel1", "channel2"]
    tables = [pq.read_table(f, columns=cols) for f in files]
    s = {c: np.concatenate([t.column(c).to_numpy() for t in tables]) for c in cols}

    pc = canonical(p["t1"], p["id1"], p["t2"], p["id2"])
    sc = canonical(s["t1_ps"], s["channel1"], s["t2_ps"], s["channel2"])
    del p, s
    p_left = np.ones(len(pc[0]), bool)
    s_left = np.ones(len(sc[0]), bool)
    hp = key(*pc)
    # Exact first, then PETsys one ps below scandaq (truncated vs rounded) on either photon,
    # then any other 1 ps difference.
    shifts = [(0, 0), (-1, 0), (0, -1), (-1, -1), (1, 0), (0, 1), (1, 1), (-1, 1), (1, -1)]
    for d_lo, d_hi in shifts:
        if not p_left.any() or not s_left.any():
            break
        hs = key(sc[0], sc[1] + d_lo, sc[2], sc[3] + d_hi)
        hs_left = hs[s_left]
        hp_left = hp[p_left]
        s_hit = np.isin(hs_left, hp_left)
        p_hit = np.isin(hp_left, hs_left[s_hit])
        s_left[np.flatnonzero(s_left)[s_hit]] = False
        p_left[np.flatnonzero(p_left)[p_hit]] = False
    n_p, n_s = len(hp), len(sc[0])
    both = min(n_p - int(p_left.sum()), n_s - int(s_left.sum()))
    print(f"coincidence rows: PETsys {n_p}, scandaq {n_s}; both {both} "
          f"(times within 1 ps), only PETsys {int(p_left.sum())}, only scandaq {int(s_left.sum())}")


if __name__ == "__main__":
    main()
