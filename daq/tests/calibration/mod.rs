//! `scandaq calibrate tdc|energy|skew` on a simulated bench, blind to the true tables, then a
//! replay with the derived tables compared with the truth.

use super::*;
use scandaq_core::calib::{Branch, SkewTable};
use scandaq_core::{Geometry, TdcTable};

fn run_ok(args: &[&str]) -> String {
    let (code, stdout, stderr) = scandaq(args);
    no_panic(&stderr);
    assert_eq!(code, 0, "scandaq {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// Gaussian centre of the highest peak of `values` within `[lo, hi)`: parabola through the
/// log counts of 1-unit bins within the half maximum.
fn peak(values: &[f64], lo: f64, hi: f64) -> f64 {
    let n = (hi - lo) as usize;
    let mut h = vec![0.0f64; n];
    for &v in values {
        if v >= lo && v < hi {
            h[(v - lo) as usize] += 1.0;
        }
    }
    let s: Vec<f64> = (0..n)
        .map(|i| h[i.saturating_sub(4)..(i + 5).min(n)].iter().sum::<f64>())
        .collect();
    let top = (0..n).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
    let (mut l, mut r) = (top, top);
    while l > 0 && s[l] > s[top] / 2.0 {
        l -= 1;
    }
    while r + 1 < n && s[r] > s[top] / 2.0 {
        r += 1;
    }
    let hw = (top - l).min(r - top).max(3);
    let (mut m, mut v) = ([[0.0f64; 3]; 3], [0.0f64; 3]);
    for (i, &c) in h
        .iter()
        .enumerate()
        .take((top + hw).min(n - 1) + 1)
        .skip(top - hw.min(top))
    {
        if c > 0.0 {
            let x = i as f64 - top as f64;
            let b = [1.0, x, x * x];
            for p in 0..3 {
                for q in 0..3 {
                    m[p][q] += c * b[p] * b[q];
                }
                v[p] += c * b[p] * c.ln();
            }
        }
    }
    // Solve by elimination.
    for col in 0..3 {
        for row in col + 1..3 {
            let f = m[row][col] / m[col][col];
            let pivot_row = m[col];
            for (x, p) in m[row].iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
            v[row] -= f * v[col];
        }
    }
    let c2 = v[2] / m[2][2];
    let c1 = (v[1] - m[1][2] * c2) / m[1][1];
    lo + top as f64 + 0.5 - c1 / (2.0 * c2)
}

fn fwhm(values: &[f64]) -> f64 {
    let bin = 5.0;
    let n = 2000usize;
    let mut h = vec![0.0f64; n];
    for &v in values {
        let i = ((v + 5000.0) / bin).floor();
        if i >= 0.0 && (i as usize) < n {
            h[i as usize] += 1.0;
        }
    }
    let s: Vec<f64> = (0..n)
        .map(|i| h[i.saturating_sub(1)..(i + 2).min(n)].iter().sum::<f64>() / 3.0)
        .collect();
    let top = (0..n).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
    let half = s[top] / 2.0;
    let (mut l, mut r) = (top, top);
    while s[l] > half {
        l -= 1;
    }
    while s[r] > half {
        r += 1;
    }
    let left = l as f64 + (half - s[l]) / (s[l + 1] - s[l]);
    let right = r as f64 - (half - s[r]) / (s[r - 1] - s[r]);
    (right - left) * bin
}

#[test]
fn derived_tables_recover_tdc_energy_and_ctr() {
    let config = BenchConfig {
        seed: 23,
        duration_s: 2.0,
        hit_rate_hz: 5e6,
        ..BenchConfig::default()
    };
    let ctr = config.ctr_fwhm_ps;
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    write_bench_files(config, &sim).unwrap();
    let rawf = sim.join("bench.rawf");
    let rawf = rawf.to_str().unwrap();
    let map = sim.join("calib/map_channel.tsv");
    let (d1, d2) = (tmp.path().join("tdc"), tmp.path().join("derived"));
    let (d1s, d2s) = (d1.to_str().unwrap(), d2.to_str().unwrap());

    // 1. TDC by code density (the map is copied along).
    let out = run_ok(&[
        "calibrate",
        "tdc",
        rawf,
        "--out",
        d1s,
        "--geometry",
        map.to_str().unwrap(),
    ]);
    assert!(out.contains("outliers: none"), "{out}");
    assert!(d1.join("map_channel.tsv").is_file() && d1.join("report-tdc.json").is_file());
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    let truth_tdc = TdcTable::parse("t", &read(sim.join("calib/tdc_calibration.tsv"))).unwrap();
    let got_tdc = TdcTable::parse("d", &read(d1.join("tdc_calibration.tsv"))).unwrap();
    assert_eq!(got_tdc.entries.len(), truth_tdc.entries.len());
    let (mut s2, mut n, mut worst) = (0.0, 0, 0.0f64);
    for (k, t) in &truth_tdc.entries {
        let g = &got_tdc.entries[k];
        for i in 0..=100 {
            let q = f64::from(i) / 100.0;
            let d = (g.phase(t.a0 + t.a1 * q + t.a2 * q * q) - q) * 5000.0;
            s2 += d * d;
            n += 1;
            worst = worst.max(d.abs());
        }
    }
    let tdc_rms = (s2 / f64::from(n)).sqrt();
    eprintln!("TDC phase residual vs truth: {tdc_rms:.1} ps rms, {worst:.1} ps max");
    assert!(tdc_rms < 20.0, "TDC residual {tdc_rms} ps rms");

    // 2. Energy (TDC + map from d1), then 3. skew in place in d2.
    let out = run_ok(&["calibrate", "energy", rawf, "--tdc", d1s, "--out", d2s]);
    assert!(
        out.contains("128 of 128 channels calibrated (128 with two lines"),
        "{out}"
    );
    let out = run_ok(&[
        "calibrate",
        "skew",
        rawf,
        "--tdc",
        d2s,
        "--energy",
        d2s,
        "--geometry",
        d2s,
        "--source",
        "0,0,0",
        "--out",
        d2s,
    ]);
    assert!(out.contains("128 of 128 channels calibrated"), "{out}");
    for f in [
        "tdc_calibration.tsv",
        "energy_calibration.tsv",
        "skew.tsv",
        "map_channel.tsv",
    ] {
        assert!(d2.join(f).is_file(), "{f}");
    }
    // The skew table against the simulator's truth. What a channel's skew must absorb is
    // its total timing offset averaged over its 4 TACs: the true skew, plus each TAC's true
    // T-branch `t0` (the derived TDC tables write 0), minus the derived TDC response's mean
    // phase error over q in [0, 1) (step 1's table against the true response), in ps.
    // Only differences are observable (the gauge), so both sides lose their mean over the
    // 128 channels. What remains is printed; step 6 asserts the differences that the
    // point-source data determine.
    let truth_skew = SkewTable::parse("t", &read(sim.join("calib/skew.tsv"))).unwrap();
    let got_skew = SkewTable::parse("d", &read(d2.join("skew.tsv"))).unwrap();
    assert_eq!(got_skew.offsets_ps.len(), 128);
    let expected_skew: BTreeMap<u32, f64> = truth_skew
        .offsets_ps
        .iter()
        .map(|(&c, &skew)| {
            let per_tac = (0..4u8).map(|tac| {
                let t = truth_tdc.get(c, tac, Branch::T).unwrap();
                let g = got_tdc.get(c, tac, Branch::T).unwrap();
                let phase_error = (0..1000)
                    .map(|i| {
                        let q = (f64::from(i) + 0.5) / 1000.0;
                        g.phase(t.a0 + t.a1 * q + t.a2 * q * q) - q
                    })
                    .sum::<f64>()
                    / 1000.0;
                (t.t0 - g.t0 - phase_error) * 5000.0
            });
            (c, skew + per_tac.sum::<f64>() / 4.0)
        })
        .collect();
    let mean_of = |m: &BTreeMap<u32, f64>| m.values().sum::<f64>() / m.len() as f64;
    let (mean_expected, mean_got) = (mean_of(&expected_skew), mean_of(&got_skew.offsets_ps));
    let skew_errors: Vec<(u32, f64)> = expected_skew
        .iter()
        .map(|(c, e)| {
            (
                *c,
                (got_skew.offsets_ps[c] - mean_got) - (e - mean_expected),
            )
        })
        .collect();
    let skew_rms =
        (skew_errors.iter().map(|e| e.1 * e.1).sum::<f64>() / skew_errors.len() as f64).sqrt();
    let skew_worst = skew_errors.iter().map(|e| e.1.abs()).fold(0.0, f64::max);
    eprintln!(
        "skew vs truth after removing the means, per channel: {skew_rms:.2} ps rms, \
         {skew_worst:.2} ps max"
    );

    // 4. Replay with the derived directory.
    let runs = tmp.path().join("runs");
    run_ok(&[
        "replay",
        rawf,
        "--calib",
        d2s,
        "--out",
        runs.to_str().unwrap(),
        "--no-progress",
    ]);
    let run = runs.join("run-000001");
    let m = Manifest::read(&run).unwrap();
    assert!(m.losses.get("no_tdc_calibration") == 0, "{:?}", m.losses);
    let (singles, kv, _) = run_files(&run);
    assert_eq!(kv["scandaq.energy_unit"], "keV");
    let ch = col_u32(&singles, "channel");
    let e = col_f32(&singles, "energy_kev");
    let mut by_channel: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for (c, e) in ch.iter().zip(&e) {
        by_channel.entry(*c).or_default().push(f64::from(*e));
    }
    assert_eq!(by_channel.len(), 128);
    let peaks: Vec<(u32, f64)> = by_channel
        .iter()
        .map(|(c, v)| (*c, peak(v, 420.0, 620.0)))
        .collect();
    let worst_peak = peaks
        .iter()
        .map(|p| (p.1 - 511.0).abs())
        .fold(0.0, f64::max);
    let mean_peak = peaks.iter().map(|p| p.1).sum::<f64>() / peaks.len() as f64;
    eprintln!("photopeaks: mean {mean_peak:.2} keV, worst |peak - 511| {worst_peak:.2} keV");
    for (c, p) in &peaks {
        assert!(
            (p - 511.0).abs() < 5.11,
            "channel {c}: photopeak at {p:.2} keV"
        );
    }

    // 5. Coincidence time resolution, corrected for the geometric TOF of the source at 0.
    let geometry = Geometry::parse_map_channel("m", &read(d2.join("map_channel.tsv"))).unwrap();
    let coinc = read_parquet(&run.join("coincidences-00000.parquet")).0;
    let tof = col_i64(&coinc, "tof_ps");
    let (c1, c2) = (col_u32(&coinc, "channel1"), col_u32(&coinc, "channel2"));
    let dist = |c: u32| {
        let p = geometry.crystal(c).unwrap().pos_mm;
        p.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
    };
    let corrected: Vec<f64> = tof
        .iter()
        .zip(c1.iter().zip(&c2))
        .map(|(t, (a, b))| {
            // tof = t1 - t2 with t1 <= t2 (opener first): orient every pair from the lower
            // to the higher channel id so the spectrum is not folded.
            let d = *t as f64 - (dist(*a) - dist(*b)) / 0.299_792_458;
            if a < b { d } else { -d }
        })
        .collect();
    assert!(corrected.len() > 10_000, "{} coincidences", corrected.len());
    let f = fwhm(&corrected);
    eprintln!(
        "CTR after calibration: {f:.1} ps FWHM (simulated {ctr} ps), {} coincidences",
        corrected.len()
    );
    assert!(
        (f - ctr).abs() < 0.1 * ctr,
        "CTR {f} ps vs simulated {ctr} ps"
    );
    // 6. The skew table against the truth, after removing the means (above): what a
    // coincidence can observe is a difference of two channels' offsets, and a point source
    // at the centre of two facing modules pairs each crystal almost only with its mirror
    // image, so the per-channel values are not determined (the rms printed above, hundreds
    // of ps) while the differences along the lines of response that carry the data are.
    // For every LOR with at least 100 prompts within 1 ns of the geometric TOF (randoms
    // spread over the 4 ns window), the derived difference of the two channels' offsets
    // equals the true one within 5 standard errors of its direct estimate,
    // sigma_y / sqrt(n), sigma_y = CTR / 2.355 the spread of one pair's time difference
    // (least squares is at least that precise); those LORs carry >= 90 % of the prompts.
    let skew_error: BTreeMap<u32, f64> = expected_skew
        .iter()
        .map(|(c, e)| (*c, got_skew.offsets_ps[c] - e))
        .collect();
    let mut lors: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for (k, d) in corrected.iter().enumerate() {
        if d.abs() < 1000.0 {
            *lors
                .entry((c1[k].min(c2[k]), c1[k].max(c2[k])))
                .or_default() += 1;
        }
    }
    let sigma_y = ctr / 2.355;
    let (mut checked, mut worst_z) = (0u64, 0.0f64);
    for (&(a, b), &n) in lors.iter().filter(|l| *l.1 >= 100) {
        let d = skew_error[&a] - skew_error[&b];
        let se = sigma_y / (n as f64).sqrt();
        assert!(
            d.abs() < 5.0 * se,
            "LOR ({a}, {b}), {n} prompts: derived skew difference off the truth by {d:.2} ps \
             (5 sd = {:.2} ps)",
            5.0 * se
        );
        checked += n;
        worst_z = worst_z.max(d.abs() / se);
    }
    let near: u64 = lors.values().sum();
    eprintln!(
        "skew differences on {} LORs with >= 100 prompts ({checked} of {near} prompts within \
         1 ns): worst {worst_z:.2} sd",
        lors.values().filter(|&&n| n >= 100).count()
    );
    assert!(
        checked as f64 >= 0.9 * near as f64,
        "the checked LORs carry {checked} of {near} prompts"
    );
}

#[test]
fn bad_inputs_are_clear_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.rawf");
    std::fs::write(
        &junk,
        b"this is not a PETsys raw file at all, just text......................",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let (j, o) = (junk.to_str().unwrap(), out.to_str().unwrap());
    let (code, _, err) = scandaq(&["calibrate", "tdc", j, "--out", o]);
    no_panic(&err);
    assert_ne!(code, 0);
    assert!(err.contains("not a usable PETsys .rawf"), "{err}");
    let (code, _, err) = scandaq(&["calibrate", "tdc", "/nonexistent/x.rawf", "--out", o]);
    no_panic(&err);
    assert_ne!(code, 0);
    assert!(err.contains("does not exist"), "{err}");
    // A valid header with no frames: no hits.
    let empty = tmp.path().join("empty.rawf");
    std::fs::write(
        &empty,
        scandaq_decoders::rawf::RawfHeader::tot_200mhz(0.0).encode(),
    )
    .unwrap();
    let (code, _, err) = scandaq(&["calibrate", "tdc", empty.to_str().unwrap(), "--out", o]);
    no_panic(&err);
    assert_ne!(code, 0);
    assert!(err.contains("no hits"), "{err}");
    let (code, _, err) = scandaq(&[
        "calibrate",
        "energy",
        empty.to_str().unwrap(),
        "--tdc",
        "/nonexistent",
        "--out",
        o,
    ]);
    no_panic(&err);
    assert_ne!(code, 0);
    assert!(err.contains("cannot read"), "{err}");
    let (code, _, err) = scandaq(&[
        "calibrate",
        "skew",
        j,
        "--tdc",
        o,
        "--energy",
        o,
        "--geometry",
        o,
        "--source",
        "1,2",
        "--out",
        o,
    ]);
    no_panic(&err);
    assert_ne!(code, 0);
    assert!(err.contains("X,Y,Z"), "{err}");
}
