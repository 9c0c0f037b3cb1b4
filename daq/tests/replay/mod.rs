//! `scandaq replay` and `scandaq demo` end to end: replays against the simulator's truth,
//! PETsys config.ini replays, missing calibration entries, bad inputs, the demo and inspect.

use super::*;

#[test]
fn replay_with_true_tables_reproduces_the_truth() {
    let config = bench_config();
    let truth = truth();
    assert!(
        truth.t.len() > 4_000_000,
        "a 5 s bench at 1 MHz emits millions of hits, got {}",
        truth.t.len()
    );
    let out = tempfile::tempdir().unwrap();
    let cal = load_calibration_dir(&sim_dir().join("calib")).unwrap();
    let s = replay(
        &sim_dir().join("bench.rawf"),
        &cal,
        out.path(),
        ReplayOptions::default(),
    )
    .unwrap();
    assert!(s.error.is_none(), "{:?}", s.error);

    // Exact accounting: every emitted hit is a single or a named loss (none with true tables).
    let c = &s.counts;
    assert_eq!(c.hits_decoded, truth.t.len() as u64);
    assert_eq!(c.singles_written + c.hits_dropped(), c.hits_decoded);
    assert_eq!(
        c.singles_written,
        truth.t.len() as u64,
        "losses: {:?}",
        c.losses
    );
    assert_eq!(
        c.frame_wraps, 1,
        "the simulation starts near the 36-bit wrap"
    );

    let (batches, kv, manifest) = run_files(&s.dir);
    assert!(manifest.complete);
    assert_eq!(manifest.counts["singles_written"], c.singles_written);
    assert_eq!(kv["scandaq.energy_unit"], "keV");
    assert_eq!(kv["scandaq.calibration_checksum"], cal.calibration.checksum);
    let t = col_i64(&batches, "t_ps");
    let ch = col_u32(&batches, "channel");
    let e = col_f32(&batches, "energy_kev");
    assert!(
        t.windows(2).all(|w| w[0] <= w[1]),
        "singles must be time ordered"
    );
    assert_eq!(
        (manifest.first_t_ps, manifest.last_t_ps),
        (t.first().copied(), t.last().copied())
    );

    // Times: residual against truth, centred on zero, with the variance the simulator puts
    // in: its Gaussian jitter, the truth's rounding to whole ps (1/12 ps^2) and the TDC's
    // (Gaussian code noise + rounding to a whole code, `noise^2 + 1/12` codes^2), turned into
    // ps by the true response's slope `a1 + 2 a2 q` (codes per 5 ns period) averaged over the
    // uniform phase q and the channel's 4 round-robin TACs. Checked per channel and overall,
    // each within 5 standard errors: mean (sd sqrt(V / n)) and rms (sd sqrt(V / 2n)).
    let pairs = pair_by_channel(&truth.t, &truth.channel, &t, &ch);
    let true_tdc = scandaq_core::TdcTable::parse(
        "true tdc",
        &std::fs::read_to_string(sim_dir().join("calib/tdc_calibration.tsv")).unwrap(),
    )
    .unwrap();
    let sigma = jitter_sigma_ps(&config);
    let code_var = config.tdc_noise_codes.powi(2) + 1.0 / 12.0;
    let expected_var = |c: u32| {
        let tdc_var = (0..4u8)
            .map(|tac| {
                let e = true_tdc
                    .get(c, tac, scandaq_core::calib::Branch::T)
                    .unwrap();
                (0..1000)
                    .map(|i| {
                        let q = (f64::from(i) + 0.5) / 1000.0;
                        (5000.0 / (e.a1 + 2.0 * e.a2 * q)).powi(2)
                    })
                    .sum::<f64>()
                    / 1000.0
            })
            .sum::<f64>()
            / 4.0
            * code_var;
        sigma * sigma + 1.0 / 12.0 + tdc_var
    };
    // (sum, sum of squares, n) of the residuals per channel.
    let mut per_channel: BTreeMap<u32, (f64, f64, f64)> = BTreeMap::new();
    for &(i, j) in &pairs {
        let r = (t[j] - truth.t[i]) as f64;
        let a = per_channel.entry(ch[j]).or_default();
        *a = (a.0 + r, a.1 + r * r, a.2 + 1.0);
    }
    let (mut sum, mut sum2, mut n, mut var_sum) = (0.0, 0.0, 0.0, 0.0);
    for (&c, &(s1, s2, k)) in &per_channel {
        let v = expected_var(c);
        let (mean_c, rms_c) = (s1 / k, (s2 / k - (s1 / k).powi(2)).sqrt());
        assert!(
            mean_c.abs() < 5.0 * (v / k).sqrt(),
            "channel {c}: time bias {mean_c:.2} ps over {k} hits (5 sd = {:.2} ps)",
            5.0 * (v / k).sqrt()
        );
        assert!(
            (rms_c - v.sqrt()).abs() < 5.0 * (v / (2.0 * k)).sqrt(),
            "channel {c}: time residual rms {rms_c:.2} ps, expected {:.2} ps +- {:.2} over {k} hits",
            v.sqrt(),
            5.0 * (v / (2.0 * k)).sqrt()
        );
        (sum, sum2, n, var_sum) = (sum + s1, sum2 + s2, n + k, var_sum + v * k);
    }
    assert_eq!(n as usize, pairs.len());
    let (mean, v) = (sum / n, var_sum / n);
    let rms = (sum2 / n - mean * mean).sqrt();
    eprintln!(
        "time residual: mean {mean:.3} ps, rms {rms:.3} ps, expected {:.3} ps (jitter {sigma:.2} ps) over {n} hits",
        v.sqrt()
    );
    assert!(
        mean.abs() < 5.0 * (v / n).sqrt(),
        "time bias {mean:.3} ps (5 sd = {:.3} ps)",
        5.0 * (v / n).sqrt()
    );
    assert!(
        (rms - v.sqrt()).abs() < 5.0 * (v / (2.0 * n)).sqrt(),
        "time residual rms {rms:.3} ps, expected {:.3} +- {:.3} ps",
        v.sqrt(),
        5.0 * (v / (2.0 * n)).sqrt()
    );

    // Energies: within the simulated resolution of the true deposit.
    let res_fwhm = config.energy_resolution_fwhm;
    let mut z = Vec::new();
    for &(i, j) in &pairs {
        let et = f64::from(truth.energy[i]);
        let sigma_e = res_fwhm / 2.355 * (511.0 * et).sqrt(); // sigma_E = (R/2.355) sqrt(511 E)
        z.push((f64::from(e[j]) - et) / sigma_e);
    }
    let zrms = (z.iter().map(|v| v * v).sum::<f64>() / n).sqrt();
    assert!(
        (0.9..1.1).contains(&zrms),
        "energy pulls rms {zrms:.3} (1 = simulated resolution)"
    );
    eprintln!("energy pulls rms {zrms:.3}");
    let outliers = z.iter().filter(|v| v.abs() > 5.0).count();
    assert!(
        outliers as f64 / n < 1e-4,
        "{outliers} energies more than 5 sigma off"
    );

    // Photopeak at 511 keV within 1 %.
    let peak = s.histogram.peak_in(400, 650).unwrap();
    eprintln!("photopeak at {peak:.2} keV");
    assert!((peak - 511.0).abs() < 5.11, "photopeak at {peak:.1} keV");
    // And the kinds the simulator promised are present.
    for k in ["true", "dark", "prompt_gamma"] {
        assert!(truth.kind.iter().any(|x| x == k), "no {k} hits in truth");
    }
}

#[test]
fn petsys_config_replay_keeps_tot_and_says_so() {
    let out = tempfile::tempdir().unwrap();
    let cal = load_petsys_config(&sim_dir().join("calib/config.ini")).unwrap();
    assert!(cal.calibration.energy.is_none());
    let s = replay(
        &sim_dir().join("bench.rawf"),
        &cal,
        out.path(),
        ReplayOptions::default(),
    )
    .unwrap();
    assert_eq!(s.counts.singles_written, truth().t.len() as u64);
    let (batches, kv, manifest) = run_files(&s.dir);
    assert_eq!(kv["scandaq.energy_unit"], "ToT_ns");
    assert_eq!(manifest.energy_unit, "ToT_ns");
    // The config names the skew table as PETsys's time_offset_calibration_table: skew applied.
    let flags = col_u16(&batches, "flags");
    assert!(
        flags
            .iter()
            .all(|f| f & hit_flags::ENERGY_IS_TOT_NS != 0 && f & hit_flags::NO_SKEW == 0)
    );
    // ToT of 511 keV hits is ~a ln(1 + 511/b): tens to a few hundred ns.
    let e = col_f32(&batches, "energy_kev");
    let median = {
        let mut v = e.clone();
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    };
    assert!((20.0..400.0).contains(&median), "median ToT {median} ns");
}

#[test]
fn missing_channel_in_calibration_is_counted_not_guessed() {
    let tmp = tempfile::tempdir().unwrap();
    let calib = tmp.path().join("calib");
    std::fs::create_dir(&calib).unwrap();
    for f in std::fs::read_dir(sim_dir().join("calib")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), calib.join(f.file_name())).unwrap();
    }
    // Remove channel 5 (port 0 slave 0 chip 0 channel 5) from the TDC table.
    let tdc = std::fs::read_to_string(calib.join("tdc_calibration.tsv")).unwrap();
    let kept: String = tdc
        .lines()
        .filter(|l| !l.starts_with("0\t0\t0\t5\t"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(kept.len() < tdc.len());
    std::fs::write(calib.join("tdc_calibration.tsv"), kept).unwrap();
    let s = replay(
        &sim_dir().join("bench.rawf"),
        &load_calibration_dir(&calib).unwrap(),
        &tmp.path().join("out"),
        ReplayOptions::default(),
    )
    .unwrap();
    let on_channel_5 = truth().channel.iter().filter(|&&c| c == 5).count() as u64;
    assert!(on_channel_5 > 0);
    assert_eq!(s.counts.losses.get("no_tdc_calibration"), on_channel_5);
    assert_eq!(
        s.counts.singles_written,
        truth().t.len() as u64 - on_channel_5
    );
}

#[test]
fn bad_inputs_give_one_clear_error_and_no_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let calib = sim_dir().join("calib");
    let calib = calib.to_str().unwrap();
    let out = tmp.path().join("out");
    let out = out.to_str().unwrap();

    // Random bytes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let random: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = tmp.path().join("random.rawf");
    std::fs::write(&path, &random).unwrap();
    let (code, _, stderr) = scandaq(&[
        "replay",
        path.to_str().unwrap(),
        "--calib",
        calib,
        "--out",
        out,
    ]);
    no_panic(&stderr);
    assert_ne!(code, 0);
    assert!(stderr.contains("not a usable PETsys .rawf"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one-line error: {stderr}");

    // A valid header followed by random bytes: decoded as far as possible, losses counted.
    let mut garbage = std::fs::read(sim_dir().join("bench.rawf")).unwrap()[..64].to_vec();
    garbage.extend_from_slice(&random);
    let path = tmp.path().join("garbage.rawf");
    std::fs::write(&path, &garbage).unwrap();
    let (code, stdout, stderr) = scandaq(&[
        "replay",
        path.to_str().unwrap(),
        "--calib",
        calib,
        "--out",
        out,
    ]);
    no_panic(&stderr);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("bad_frame_header"), "{stdout}");

    // A wrong header (clock of 0 Hz).
    let mut wrong = std::fs::read(sim_dir().join("bench.rawf")).unwrap();
    wrong[..8].copy_from_slice(&0u64.to_le_bytes());
    let path = tmp.path().join("wrong.rawf");
    std::fs::write(&path, &wrong).unwrap();
    let (code, _, stderr) = scandaq(&[
        "replay",
        path.to_str().unwrap(),
        "--calib",
        calib,
        "--out",
        out,
    ]);
    no_panic(&stderr);
    assert_ne!(code, 0);
    assert!(stderr.contains("0 Hz"), "{stderr}");

    // A non-existent output directory (parent missing too).
    let rawf = sim_dir().join("bench.rawf");
    let missing = tmp.path().join("no/such/dir");
    let (code, _, stderr) = scandaq(&[
        "replay",
        rawf.to_str().unwrap(),
        "--calib",
        calib,
        "--out",
        missing.to_str().unwrap(),
    ]);
    no_panic(&stderr);
    assert_ne!(code, 0);
    assert!(stderr.contains("does not exist"), "{stderr}");

    // A calibration directory without the TDC table; a table with a bad row.
    let empty = tmp.path().join("emptycal");
    std::fs::create_dir(&empty).unwrap();
    let (code, _, stderr) = scandaq(&[
        "replay",
        rawf.to_str().unwrap(),
        "--calib",
        empty.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("tdc_calibration.tsv is missing"),
        "{stderr}"
    );
    std::fs::write(
        empty.join("tdc_calibration.tsv"),
        "0 0 0 1 0 T 0.1 90 300\n",
    )
    .unwrap();
    let (code, _, stderr) = scandaq(&[
        "replay",
        rawf.to_str().unwrap(),
        "--calib",
        empty.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("line 1") && stderr.contains("expected 10 columns"),
        "{stderr}"
    );

    // No calibration at all; a file that does not exist.
    let (code, _, stderr) = scandaq(&["replay", rawf.to_str().unwrap(), "--out", out]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--calib"), "{stderr}");
    let (code, _, stderr) = scandaq(&["inspect", tmp.path().join("nope.rawf").to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot open"), "{stderr}");
}

#[cfg(feature = "demo")]
#[test]
fn demo_runs_end_to_end_and_inspect_summarises_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let (code, stdout, stderr) = scandaq(&[
        "demo",
        "--duration",
        "300ms",
        "--out",
        out.to_str().unwrap(),
        "--no-tui",
        "--raw-columns",
    ]);
    no_panic(&stderr);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("photopeak at"), "{stdout}");
    let m = Manifest::read(&out.join("run-000001")).unwrap();
    assert!(m.complete && m.counts["singles_written"] > 100_000, "{m:?}");
    assert_eq!(m.counts["hits_decoded"], m.counts["singles_written"]);

    let (code, stdout, _) = scandaq(&["inspect", out.join("run-000001").to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("complete") && stdout.contains("singles_written"),
        "{stdout}"
    );
    let (code, stdout, _) = scandaq(&[
        "inspect",
        out.join("run-000001/singles-00000.parquet")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("{} rows", m.counts["singles_written"])),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "columns: t_ps, channel, energy_kev, flags, frame, tcoarse, ecoarse, tfine, efine, tac"
        ),
        "--raw-columns adds the diagnostics: {stdout}"
    );
    let (code, stdout, _) = scandaq(&["inspect", sim_dir().join("bench.rawf").to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("hits {}", truth().t.len())) && stdout.contains("1 wraps"),
        "{stdout}"
    );
}

/// The codec of every column chunk of a Parquet file.
fn codecs(path: &Path) -> Vec<parquet::basic::Compression> {
    let f = std::fs::File::open(path).unwrap();
    let r = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    r.metadata()
        .row_groups()
        .iter()
        .flat_map(|g| g.columns().iter().map(|c| c.compression()))
        .collect()
}

#[test]
fn compression_lz4_none_and_zstd_levels_reach_the_tables_and_bad_codecs_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let calib = sim_dir().join("calib");
    // `codec` "" is the default: no --compression flag.
    let replay = |codec: &str| {
        let out = tmp.path().join(format!("out-{}", codec.replace(':', "_")));
        let rawf = sim_dir().join("bench.rawf");
        let mut args = vec![
            "replay",
            rawf.to_str().unwrap(),
            "--calib",
            calib.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ];
        if !codec.is_empty() {
            args.extend(["--compression", codec]);
        }
        let (code, stdout, stderr) = scandaq(&args);
        (code, stdout, stderr, out.join("run-000001"))
    };
    let (code, stdout, stderr, plain) = replay("none");
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr, zstd) = replay("zstd:3");
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr, lz4) = replay("lz4");
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr, default) = replay("");
    assert_eq!(code, 0, "{stdout}{stderr}");
    use parquet::basic::Compression as C;
    for table in [
        "singles-00000.parquet",
        "coincidences-00000.parquet",
        "delayed-00000.parquet",
    ] {
        let none = codecs(&plain.join(table));
        assert!(
            !none.is_empty() && none.iter().all(|c| *c == C::UNCOMPRESSED),
            "{table}: {none:?}"
        );
        let z = codecs(&zstd.join(table));
        assert!(z.iter().all(|c| matches!(c, C::ZSTD(_))), "{table}: {z:?}");
        let l = codecs(&lz4.join(table));
        assert!(l.iter().all(|c| *c == C::LZ4_RAW), "{table}: {l:?}");
        assert_eq!(
            codecs(&default.join(table)),
            l,
            "{table}: the default is lz4"
        );
        // Same rows either way; the uncompressed file is larger.
        let (a, _) = read_parquet(&plain.join(table));
        let (b, _) = read_parquet(&zstd.join(table));
        let time = if table.starts_with("singles") {
            "t_ps"
        } else {
            "t1_ps"
        };
        let (c, _) = read_parquet(&lz4.join(table));
        assert_eq!(col_i64(&a, time), col_i64(&b, time), "{table}");
        assert_eq!(col_i64(&a, time), col_i64(&c, time), "{table}");
        let size = |d: &Path| std::fs::metadata(d.join(table)).unwrap().len();
        assert!(size(&plain) > size(&lz4), "{table}");
        assert!(size(&lz4) > size(&zstd), "{table}");
    }
    let (code, _, stderr, out) = replay("zstd:30");
    assert_ne!(code, 0);
    no_panic(&stderr);
    assert!(stderr.contains("zstd:N (N from 1 to 22)"), "{stderr}");
    assert!(!out.exists());
}
