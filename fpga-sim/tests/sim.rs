//! Integration tests of the bench simulator: determinism, frame structure against the truth,
//! inversion with the true calibration, physics mix, files on disk and the command line.

use scandaq_core::calib::Branch;
use scandaq_decoders::{FrameScanner, FrameSpan, HitFields, RawfHeader};
use scandaq_fpga_sim::{BenchConfig, BenchSim, HitKind, SimSummary, TruthBatch, write_bench_files};

const PERIOD_PS: f64 = 5000.0;
const FRAME_PS: i64 = 1024 * 5000;

fn run(config: BenchConfig) -> (BenchSim, Vec<u8>, TruthBatch) {
    let mut sim = BenchSim::new(config).expect("valid config");
    let mut frames = Vec::new();
    let mut truth = TruthBatch::new();
    let mut slice = TruthBatch::new();
    while sim.next_slice(&mut frames, &mut slice) {
        truth.extend_from(&slice);
        slice.clear();
    }
    let mut f2 = Vec::new();
    assert!(
        !sim.next_slice(&mut f2, &mut slice),
        "exhausted sim keeps returning false"
    );
    assert!(f2.is_empty() && slice.is_empty());
    (sim, frames, truth)
}

fn cfg(duration_s: f64) -> BenchConfig {
    BenchConfig {
        duration_s,
        ..BenchConfig::default()
    }
}

/// Decoded hits with their unwrapped frame, in stream order, plus the scanner and spans.
fn decode(frames: &[u8]) -> (FrameScanner, Vec<FrameSpan>, Vec<(u64, HitFields)>) {
    let mut scanner = FrameScanner::new();
    let mut spans = Vec::new();
    assert_eq!(scanner.scan(frames, true, &mut spans), frames.len());
    let mut hits = Vec::new();
    for s in &spans {
        for k in 0..s.n_hits as usize {
            let off = s.hits_offset + 8 * k;
            let w = u64::from_le_bytes(frames[off..off + 8].try_into().unwrap());
            hits.push((s.frame, HitFields::decode(w)));
        }
    }
    (scanner, spans, hits)
}

/// Leading-edge time (ps, relative to `ref_frame`) and ToT (ns) of a hit, from the true tables,
/// before skew correction.
fn invert(sim: &BenchSim, frame: u64, h: &HitFields, ref_frame: u64) -> (f64, f64) {
    let tt = sim.true_tdc().get(h.channel, h.tac, Branch::T).unwrap();
    let te = sim.true_tdc().get(h.channel, h.tac, Branch::E).unwrap();
    let base = ((frame - ref_frame) * 1024) as f64;
    let t = base + f64::from(h.tcoarse) - tt.phase(f64::from(h.tfine)) - tt.t0;
    let mut ecoarse = f64::from(h.ecoarse);
    if ecoarse < f64::from(h.tcoarse) - 256.0 {
        ecoarse += 1024.0;
    }
    let te_time = base + ecoarse - te.phase(f64::from(h.efine)) - te.t0;
    (t * PERIOD_PS, (te_time - t) * 5.0)
}

#[test]
fn same_seed_same_bytes_and_truth_other_seed_differs() {
    let (_, fa, ta) = run(cfg(0.05));
    let (_, fb, tb) = run(cfg(0.05));
    assert!(!fa.is_empty());
    assert_eq!(fa, fb);
    assert_eq!(ta, tb);
    let (_, fc, tc) = run(BenchConfig {
        seed: 2,
        ..cfg(0.05)
    });
    assert_ne!(fa, fc);
    assert_ne!(ta, tc);
}

#[test]
fn frames_match_the_truth_row_for_row() {
    let (sim, frames, truth) = run(cfg(0.1));
    let (scanner, spans, hits) = decode(&frames);
    assert!(scanner.losses.is_empty(), "{:?}", scanner.losses);
    assert_eq!(hits.len(), truth.len());
    assert_eq!(scanner.hits as usize, truth.len());
    let s = sim.summary();
    assert_eq!(s.hits_emitted as usize, truth.len());
    assert_eq!(s.frames_emitted as usize, spans.len());
    assert!(
        spans.windows(2).all(|w| w[0].frame < w[1].frame),
        "frame ids increase"
    );
    assert!(spans.iter().all(|s| s.n_hits > 0));
    for (k, (frame, h)) in hits.iter().enumerate() {
        assert_eq!(h.channel, truth.channel[k], "row {k}");
        let f_true = truth.t_true_ps[k].div_euclid(FRAME_PS);
        assert!(
            (*frame as i64 - f_true).abs() <= 1,
            "row {k}: frame {frame} vs truth {f_true}"
        );
    }
    // Within a frame: sorted by (tcoarse, channel).
    for s in &spans {
        let start = hits.iter().position(|(f, _)| *f == s.frame).unwrap();
        let fr = &hits[start..start + s.n_hits as usize];
        assert!(
            fr.windows(2)
                .all(|w| (w[0].1.tcoarse, w[0].1.channel) <= (w[1].1.tcoarse, w[1].1.channel))
        );
    }
    assert_eq!(s.first_frame_id, Some(spans[0].frame));
    assert_eq!(s.wraps, 0);
}

#[test]
fn near_wrap_gives_exactly_one_wrap_and_unwrapped_frames_cover_truth() {
    let config = cfg(0.05).near_wrap();
    let start = config.start_frame_id;
    let (sim, frames, truth) = run(config);
    let (scanner, spans, hits) = decode(&frames);
    assert_eq!(scanner.wraps(), 1);
    assert_eq!(sim.summary().wraps, 1);
    assert_eq!(spans[0].frame, start);
    assert!(spans.last().unwrap().frame >= 1 << 36);
    assert!(spans.windows(2).all(|w| w[0].frame < w[1].frame));
    assert_eq!(hits.len(), truth.len());
    for (k, (frame, _)) in hits.iter().enumerate() {
        let f_true = truth.t_true_ps[k] / FRAME_PS;
        assert!((*frame as i64 - f_true).abs() <= 1, "row {k}");
    }
    assert!(
        truth.t_true_ps.last().copied().unwrap() > (1i64 << 36) * FRAME_PS,
        "truth times never wrap"
    );
}

#[test]
fn true_tables_recover_time_and_energy() {
    let config = cfg(0.1);
    let sigma_t = config.ctr_fwhm_ps / (2.355 * 2f64.sqrt());
    let (sim, frames, truth) = run(config);
    let (_, _, hits) = decode(&frames);
    let skew = &sim.true_skew().offsets_ps;
    let energy = &sim.true_energy().entries;
    let (mut n, mut s1, mut s2) = (0.0, 0.0, 0.0);
    let mut peak = Vec::new();
    for (k, (frame, h)) in hits.iter().enumerate() {
        let (t_ps, tot_ns) = invert(&sim, *frame, h, 0);
        let resid = t_ps - skew[&h.channel] - truth.t_true_ps[k] as f64;
        n += 1.0;
        s1 += resid;
        s2 += resid * resid;
        if truth.kind[k] == HitKind::True && truth.e_true_kev[k] == 511.0 {
            peak.push(energy[&h.channel].energy_kev(tot_ns));
        }
    }
    let mean = s1 / n;
    let rms = (s2 / n).sqrt();
    assert!(mean.abs() < 2.0, "mean residual {mean} ps");
    assert!(
        rms < sigma_t + 10.0 && rms > sigma_t - 5.0,
        "rms {rms} ps vs sigma {sigma_t}"
    );
    assert!(peak.len() > 5000, "{}", peak.len());
    let m = peak.iter().sum::<f64>() / peak.len() as f64;
    let sd = (peak.iter().map(|e| (e - m) * (e - m)).sum::<f64>() / peak.len() as f64).sqrt();
    assert!((m - 511.0).abs() < 0.01 * 511.0, "photopeak at {m}");
    let want = 0.11 / 2.355 * 511.0;
    assert!(
        (sd - want).abs() < 0.1 * want,
        "photopeak sigma {sd} vs {want}"
    );
}

#[test]
fn kind_mix_threshold_and_rate() {
    let config = cfg(0.2);
    let (sim, _, truth) = run(config.clone());
    let s = sim.summary();
    for kind in ["true", "dark", "prompt_gamma", "background"] {
        assert!(
            s.hits_by_kind[kind] > 0,
            "no {kind} hits: {:?}",
            s.hits_by_kind
        );
    }
    assert_eq!(s.hits_by_kind["scatter"], 0);
    assert!(
        truth
            .e_true_kev
            .iter()
            .all(|&e| f64::from(e) >= config.threshold_kev)
    );
    for (k, kind) in truth.kind.iter().enumerate() {
        let id = truth.decay_id[k];
        match kind {
            HitKind::Dark => assert!(id & (1 << 62) != 0 && truth.photon_id[k] == 0),
            HitKind::Background => assert!(id & (1 << 63) != 0 && truth.photon_id[k] == 0),
            HitKind::True => {
                assert!(id < 1 << 62 && (truth.photon_id[k] == 1 || truth.photon_id[k] == 2))
            }
            HitKind::PromptGamma => assert!(id < 1 << 62 && truth.photon_id[k] == 3),
            HitKind::Scatter => unreachable!(),
        }
    }
    // Emitted rate close to the request (dead time removes ~0.3%).
    let rate = s.hits_emitted as f64 / config.duration_s;
    assert!(
        (rate / config.hit_rate_hz - 1.0).abs() < 0.03,
        "rate {rate}"
    );
    assert_eq!(s.dark_hits, s.hits_by_kind["dark"]);
    assert!(s.dead_time_lost > 0);
    assert_eq!(s.overflow_lost, 0);
    // Pairs: both photons of some decays are emitted, with the same decay id.
    let mut ids: Vec<u64> = truth
        .kind
        .iter()
        .zip(&truth.decay_id)
        .filter(|(k, _)| **k == HitKind::True)
        .map(|(_, id)| *id)
        .collect();
    ids.sort_unstable();
    assert!(ids.windows(2).filter(|w| w[0] == w[1]).count() > 1000);
}

#[test]
fn dead_time_holds_on_every_channel() {
    let config = BenchConfig {
        hit_rate_hz: 5e6,
        ..cfg(0.02)
    };
    let dead_ps = config.dead_time_ns * 1000.0;
    let (sim, frames, _) = run(config);
    let (_, _, hits) = decode(&frames);
    let mut last = std::collections::HashMap::new();
    let mut times: Vec<(u32, f64)> = hits
        .iter()
        .map(|(f, h)| (h.channel, invert(&sim, *f, h, 0).0))
        .collect();
    times.sort_by(|a, b| a.1.total_cmp(&b.1));
    for (ch, t) in times {
        if let Some(prev) = last.insert(ch, t) {
            assert!(
                t - prev >= dead_ps - 20.0,
                "channel {ch}: {} ps apart",
                t - prev
            );
        }
    }
    assert!(sim.summary().dead_time_lost > 0);
}

#[test]
fn overflowing_frames_are_flagged_and_cut() {
    let config = BenchConfig {
        max_hits_per_frame: 3,
        hit_rate_hz: 2e6,
        ..cfg(0.01)
    };
    let (sim, frames, truth) = run(config);
    let (scanner, spans, hits) = decode(&frames);
    let s = sim.summary();
    assert!(s.overflow_lost > 0 && s.lossy_frames > 0);
    assert_eq!(scanner.losses.get("frontend_lost_frames"), s.lossy_frames);
    assert!(spans.iter().all(|f| f.n_hits <= 3));
    assert_eq!(
        spans.iter().filter(|f| f.lossy).count() as u64,
        s.lossy_frames
    );
    assert!(spans.iter().filter(|f| f.lossy).all(|f| f.n_hits == 3));
    assert_eq!(hits.len(), truth.len());
    assert!(
        hits.iter()
            .zip(&truth.channel)
            .all(|((_, h), c)| h.channel == *c)
    );
}

#[test]
fn summary_counts_add_up() {
    let (sim, _, truth) = run(BenchConfig {
        hit_rate_hz: 3e5,
        ..cfg(0.05)
    });
    let s: SimSummary = sim.summary();
    assert!(s.finished);
    assert_eq!(s.hits_by_kind.values().sum::<u64>(), truth.len() as u64);
    assert_eq!(s.decays, s.decays_in_cone + s.decays_prompt_only);
    assert!((s.simulated_s - 0.05).abs() < 1e-12);
    assert!(
        s.cone_half_angle_deg > 8.0 && s.cone_half_angle_deg < 8.5,
        "{}",
        s.cone_half_angle_deg
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["config"]["seed"], 1);
    assert_eq!(
        json["hits_by_kind"]["prompt_gamma"],
        s.hits_by_kind["prompt_gamma"]
    );
}

#[test]
fn bench_files_on_disk() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let summary = write_bench_files(cfg(0.05), &dir).unwrap();
    for f in scandaq_fpga_sim::files::bench_file_list() {
        assert!(dir.join(&f).is_file(), "{f} missing");
    }
    let raw = std::fs::read(dir.join("bench.rawf")).unwrap();
    let header = RawfHeader::parse(&raw).unwrap();
    assert_eq!((header.frequency_hz, header.qdc_mode), (200_000_000, false));
    let (scanner, spans, _) = decode(&raw[64..]);
    assert_eq!(scanner.hits, summary.hits_emitted);
    let idx =
        scandaq_decoders::idxf::parse(&std::fs::read_to_string(dir.join("bench.idxf")).unwrap())
            .unwrap();
    assert_eq!(idx.len(), 1);
    assert_eq!(
        (idx[0].start_offset, idx[0].end_offset),
        (64, raw.len() as u64)
    );
    assert_eq!(
        (idx[0].first_frame_id, idx[0].last_frame_id),
        (spans[0].frame, spans.last().unwrap().frame)
    );

    let file = std::fs::File::open(dir.join("truth.parquet")).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    assert!(
        kv.iter()
            .any(|k| k.key == "seed" && k.value.as_deref() == Some("1"))
    );
    assert!(kv.iter().any(|k| {
        k.key == "config"
            && k.value
                .as_deref()
                .is_some_and(|v| v.contains("\"hit_rate_hz\""))
    }));
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "t_true_ps",
            "channel",
            "e_true_kev",
            "decay_id",
            "photon_id",
            "kind"
        ]
    );
    let rows: usize = builder
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows as u64, summary.hits_emitted);

    // The calibration folder parses with scandaq-core's readers and holds the true tables.
    let sim = BenchSim::new(cfg(0.05)).unwrap();
    let calib = dir.join("calib");
    let read = |f: &str| std::fs::read_to_string(calib.join(f)).unwrap();
    assert_eq!(
        &scandaq_core::TdcTable::parse("tdc", &read("tdc_calibration.tsv")).unwrap(),
        sim.true_tdc()
    );
    assert_eq!(
        &scandaq_core::EnergyTable::parse("e", &read("energy_calibration.tsv")).unwrap(),
        sim.true_energy()
    );
    assert_eq!(
        &scandaq_core::SkewTable::parse("s", &read("skew.tsv")).unwrap(),
        sim.true_skew()
    );
    assert_eq!(
        scandaq_core::Geometry::parse_map_channel("m", &read("map_channel.tsv"))
            .unwrap()
            .crystals
            .len(),
        sim.geometry().crystals.len()
    );
    let ini = read("config.ini");
    assert!(ini.contains("tdc_calibration_table = %CDIR%/tdc_calibration.tsv"));
    assert!(ini.contains("[sw_trigger]\ngroup_max_interval = 20\ncoincidence_time_window = 3"));
    let trig: Vec<Vec<String>> = read("map_trigger.tsv")
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert_eq!(trig, [["0", "1", "C"], ["0", "0", "M"], ["1", "1", "M"]]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["hits_emitted"], summary.hits_emitted);

    // A missing parent is an error, not a panic.
    let err = write_bench_files(cfg(0.01), &tmp.path().join("no/such/dir")).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn bad_config_is_a_clear_error() {
    let err = BenchSim::new(BenchConfig {
        hit_rate_hz: -5.0,
        ..BenchConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("hit_rate_hz"), "{err}");
}

#[test]
fn command_line() {
    let exe = env!("CARGO_BIN_EXE_fpga-sim");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cli");
    let ok = std::process::Command::new(exe)
        .args([
            "--preset",
            "bench",
            "--duration",
            "20ms",
            "--rate",
            "250k",
            "--seed",
            "4",
            "--near-wrap",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("hits") && stdout.contains("1 wrap(s)") && stdout.contains("truth.parquet"),
        "{stdout}"
    );
    assert!(out.join("calib/config.ini").is_file());

    let bad = |args: &[&str], want: &str| {
        let o = std::process::Command::new(exe)
            .args(args)
            .arg("--out")
            .arg(tmp.path().join("x"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    bad(&["--preset", "ring"], "available presets: bench");
    bad(&["--duration", "5 parsecs"], "invalid duration");
    bad(&["--rate", "fast"], "invalid rate");
    bad(&["--duration", "2h"], "duration_s");
    bad(&["--start-frame", "99999999999999"], "start_frame_id");
    let o = std::process::Command::new(exe)
        .args(["--duration", "1ms", "--out"])
        .arg(tmp.path().join("missing/deeper"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
}

/// Generation speed (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn generation_speed() {
    let config = BenchConfig {
        duration_s: 5.0,
        ..BenchConfig::default()
    };
    let start = std::time::Instant::now();
    let mut sim = BenchSim::new(config).unwrap();
    let mut frames = Vec::new();
    let mut truth = TruthBatch::new();
    let mut hits = 0usize;
    while sim.next_slice(&mut frames, &mut truth) {
        hits += truth.len();
        truth.clear();
        frames.clear();
    }
    let dt = start.elapsed().as_secs_f64();
    println!(
        "{hits} hits in {dt:.3} s: {:.2} M hits/s",
        hits as f64 / dt / 1e6
    );
}
