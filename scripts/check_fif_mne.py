#!/usr/bin/env python3
"""Checks a FIF file written by `scandaq export fif` with MNE-Python against the run's tables.

Usage: check_fif_mne.py RUN_DIR FILE.fif [--stream ID] [--channel NAME]

Reads the run's meg_channels / meg_blocks / triggers Parquet tables with pyarrow (sharing no
code with scandaq), opens the FIF with mne.io.read_raw_fif and checks: channel names and
types, the sampling rate (the effective rate from the blocks' corrected times), one channel's
values in tesla (raw * cal * range) sample by sample, and the trigger channel's events against
the triggers table. When the FIF's description says the channels were aligned by their
delays (the default of `scandaq export fif`), the expected channel values are computed here
from docs/meg.md §6 (Kaiser-windowed sinc, 32 taps, beta 8, edge replication within each
contiguous segment, shift = delay_ps * 1e-12 * sfreq samples), independently of scandaq's code.
Prints one line per check; exits 1 on the first mismatch.
"""
import argparse
import sys

import mne
import numpy as np
import pyarrow.parquet as pq


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


HALF_TAPS = 16
KAISER_BETA = 8.0


def fractional_taps(mu):
    """Windowed-sinc taps at offsets -(HALF_TAPS-1)..HALF_TAPS for a position mu in [0, 1)."""
    x = np.arange(-HALF_TAPS + 1, HALF_TAPS + 1) - mu
    r = np.clip(x / HALF_TAPS, -1.0, 1.0)
    h = np.sinc(x) * np.i0(KAISER_BETA * np.sqrt(1.0 - r * r)) / np.i0(KAISER_BETA)
    return h / h.sum()


def shifted(x, segments, shift):
    """x (one channel over the zero-filled span) with each contiguous segment read at k + shift."""
    out = np.zeros(len(x), dtype=np.float64)
    whole = int(np.floor(shift))
    mu = shift - whole
    for a, b in segments:
        seg = x[a:b].astype(np.float64)
        k = np.arange(b - a)
        if mu == 0.0:
            out[a:b] = seg[np.clip(k + whole, 0, b - a - 1)]
            continue
        acc = np.zeros(b - a)
        for i, h in zip(range(-HALF_TAPS + 1, HALF_TAPS + 1), fractional_taps(mu)):
            acc += h * seg[np.clip(k + whole + i, 0, b - a - 1)]
        out[a:b] = acc
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("fif")
    ap.add_argument("--stream", type=int, default=0)
    ap.add_argument("--channel", default=None)
    a = ap.parse_args()
    ch = pq.read_table(f"{a.run_dir}/meg_channels-source{a.stream}.parquet").to_pydict()
    blocks = pq.read_table(f"{a.run_dir}/meg_blocks-source{a.stream}.parquet").to_pydict()
    trig = pq.read_table(f"{a.run_dir}/triggers-source{a.stream}.parquet").to_pydict()
    names = ch["name"]
    nch = len(names)

    raw = mne.io.read_raw_fif(a.fif, preload=True, verbose="error")
    if raw.ch_names != names:
        fail(f"channel names {raw.ch_names[:5]}... != {names[:5]}...")
    print(f"ok: {nch} channel names match")
    types = raw.get_channel_types()
    for n, k, t in zip(names, ch["kind"], types):
        want = {"meg_mag": "mag", "meg_grad": "grad", "trigger": "stim"}.get(k, "misc")
        if t != want:
            fail(f"channel {n}: MNE type {t}, expected {want} (kind {k})")
    print("ok: channel types (mag / stim) match")

    firsts = np.array(blocks["first_sample"], dtype=np.int64)
    times = blocks["t_first_ns"]
    valid = [i for i, t in enumerate(times) if t is not None]
    i0, i1 = valid[0], valid[-1]
    sfreq = (firsts[i1] - firsts[i0]) * 1e9 / (times[i1] - times[i0])
    if abs(raw.info["sfreq"] - sfreq) > 1e-3:
        fail(f"sfreq {raw.info['sfreq']} != effective rate {sfreq}")
    print(f"ok: sfreq {raw.info['sfreq']:.6f} Hz == effective rate {sfreq:.6f} Hz")

    # The run's samples, gaps filled with zeros as the export does.
    start = firsts[0]
    total = int(firsts[-1] + blocks["n_samples"][-1] - start)
    data = np.zeros((total, nch), dtype=np.int64)
    for f, n, p in zip(firsts, blocks["n_samples"], blocks["payload"]):
        data[f - start : f - start + n] = np.frombuffer(p, dtype="<i4").reshape(n, nch)
    if raw.n_times != total:
        fail(f"{raw.n_times} samples in the FIF, {total} in meg_blocks")
    name = a.channel or next(n for n, k in zip(names, ch["kind"]) if k == "meg_mag")
    c = names.index(name)
    aligned = "aligned by" in (raw.info["description"] or "")
    got = raw.get_data(picks=[name])[0]
    if aligned:
        segments = []
        for f, n in zip(firsts, blocks["n_samples"]):
            a0, b0 = int(f - start), int(f - start + n)
            if segments and segments[-1][1] == a0:
                segments[-1][1] = b0
            else:
                segments.append([a0, b0])
        shift = ch["delay_ps"][c] * 1e-12 * sfreq
        want = shifted(data[:, c], segments, shift) * (ch["cal"][c] * ch["range"][c])
        # float32 buffers: about 6e-8 of the value, plus the channel's scale.
        tol = 1e-6 * np.max(np.abs(want))
        how = f"raw*cal*range shifted by its delay ({shift:.3f} samples)"
    else:
        want = data[:, c] * (ch["cal"][c] * ch["range"][c])
        tol = 0.0
        how = "raw*cal*range"
    if not np.allclose(got, want, rtol=1e-6, atol=tol):
        k = int(np.argmax(np.abs(got - want)))
        fail(f"{name} sample {k}: {got[k]} T != {want[k]} T ({how})")
    print(f"ok: {name}: {total} samples match {how} (rms {np.sqrt(np.mean(want**2)) * 1e15:.1f} fT)")

    stim = [n for n, k in zip(names, ch["kind"]) if k == "trigger"]
    if stim:
        events = mne.find_events(raw, stim_channel=stim[0], consecutive=False, verbose="error")
        rising = sum(1 for r in trig["rising"] if r)
        if len(events) != rising:
            fail(f"{len(events)} events in {stim[0]}, {rising} rising edges in triggers")
        samples = sorted(s - start for s, r in zip(trig["sample"], trig["rising"]) if r)
        if list(events[:, 0] - raw.first_samp) != samples:
            fail("event samples differ from the triggers table")
        print(f"ok: {len(events)} events on {stim[0]} == rising edges in triggers")
    print("all FIF checks passed")


if __name__ == "__main__":
    main()
