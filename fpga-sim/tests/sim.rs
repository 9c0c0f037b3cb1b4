//! Integration tests of the simulator: bench preset (determinism, frame structure against the
//! truth, inversion with the true calibration, physics mix, files on disk, the command line,
//! streaming) and ring preset (module `ring` at the end).

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

/// Time residuals (decoded with the true tables minus the truth) against the simulator's
/// noise model, with bounds from the sample size. Per hit the model gives the variance
/// `sigma_t^2` (jitter) `+ P^2 (noise^2 + 1/12) / (dcode/dq)^2` (TDC noise and the rounding
/// of the fine code, through the slope `a1 + 2 a2 q` of the true TDC curve at the hit's
/// phase) `+ 1/12 ps^2` (truth rounded to whole ps). Checked: the residual variance equals the
/// mean model variance within 6 standard errors of a sample variance (from the sample's own
/// fourth moment and n); the global mean and every channel's mean are 0 within 6 standard
/// errors (a chance exceedance has probability 2e-9 per channel).
#[test]
fn true_tables_recover_time_and_energy() {
    let config = cfg(0.1);
    let sigma_t = config.ctr_fwhm_ps / (2.355 * 2f64.sqrt());
    let noise = config.tdc_noise_codes;
    let (sim, frames, truth) = run(config);
    let (_, _, hits) = decode(&frames);
    let skew = &sim.true_skew().offsets_ps;
    let energy = &sim.true_energy().entries;
    let mut resid = Vec::with_capacity(hits.len());
    let mut model_var = 0.0;
    let mut per_channel: std::collections::BTreeMap<u32, (f64, f64, f64)> = Default::default();
    let mut peak = Vec::new();
    for (k, (frame, h)) in hits.iter().enumerate() {
        let (t_ps, tot_ns) = invert(&sim, *frame, h, 0);
        let r = t_ps - skew[&h.channel] - truth.t_true_ps[k] as f64;
        resid.push(r);
        let tt = sim.true_tdc().get(h.channel, h.tac, Branch::T).unwrap();
        let slope = tt.a1 + 2.0 * tt.a2 * tt.phase(f64::from(h.tfine));
        model_var += sigma_t * sigma_t
            + PERIOD_PS * PERIOD_PS * (noise * noise + 1.0 / 12.0) / (slope * slope)
            + 1.0 / 12.0;
        let c = per_channel.entry(h.channel).or_default();
        c.0 += 1.0;
        c.1 += r;
        c.2 += r * r;
        if truth.kind[k] == HitKind::True && truth.e_true_kev[k] == 511.0 {
            peak.push(energy[&h.channel].energy_kev(tot_ns));
        }
    }
    let n = resid.len() as f64;
    assert!(n > 100_000.0, "{n} hits");
    let mean = resid.iter().sum::<f64>() / n;
    let var = resid.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let m4 = resid.iter().map(|r| (r - mean).powi(4)).sum::<f64>() / n;
    let model_var = model_var / n;
    // Standard error of a sample variance: sqrt((m4 - var^2) / n).
    let se_var = ((m4 - var * var) / n).sqrt();
    eprintln!(
        "residual mean {mean:.3} ps (se {:.3}), rms {:.3} ps, model {:.3} ps, var - model = {:.1} ps^2 (se {se_var:.1}), {} channels",
        (var / n).sqrt(),
        var.sqrt(),
        model_var.sqrt(),
        var - model_var,
        per_channel.len()
    );
    assert!(
        mean.abs() < 6.0 * (var / n).sqrt(),
        "mean residual {mean} ps, {} standard errors",
        mean / (var / n).sqrt()
    );
    assert!(
        (var - model_var).abs() < 6.0 * se_var,
        "residual variance {var} ps^2 (rms {}) vs model {model_var} (rms {}): {} standard errors",
        var.sqrt(),
        model_var.sqrt(),
        (var - model_var) / se_var
    );
    for (ch, &(nc, s1, s2)) in &per_channel {
        assert!(nc >= 100.0, "channel {ch:#x}: only {nc} hits");
        let m = s1 / nc;
        let v = (s2 - nc * m * m) / (nc - 1.0);
        let se = (v / nc).sqrt();
        assert!(
            m.abs() < 6.0 * se,
            "channel {ch:#x}: mean residual {m} ps over {nc} hits, {} standard errors",
            m / se
        );
    }
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
            HitKind::Scatter | HitKind::InterCrystal => unreachable!(),
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
    assert!(ini.contains("time_offset_calibration_table = %CDIR%/skew.tsv"));
    assert!(!ini.contains("group_max_interval"));
    let sw_trigger = ini
        .split("[sw_trigger]\n")
        .nth(1)
        .expect("a [sw_trigger] section");
    assert_eq!(
        sw_trigger.lines().collect::<Vec<_>>(),
        [
            "group_time_window = 20",
            "group_max_distance = 100.0",
            "group_min_hits = 1",
            "group_max_hits = 64",
            "group_min_energy = -1e6",
            "group_max_energy = +1e6",
            "coincidence_time_window = 2",
        ]
    );
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
    bad(&["--preset", "cube"], "available presets: bench, ring");
    bad(&["--phantom"], "only apply to --preset ring");
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

// ---------------------------------------------------------------------------------------------
// Streaming: packets per board, faults as a receiver sees them, UDP and TCP transports.

mod streaming {
    use super::*;
    use scandaq_decoders::transport::{
        FLAG_END_OF_STREAM, HEADER_LEN, TransportError, decode_packet, payload_format,
    };
    use scandaq_fpga_sim::{
        FaultCounts, Faults, StreamConfig, StreamSummary, Transport, generate_packets, stream,
    };
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::io::Read;
    use std::net::{SocketAddr, TcpStream, UdpSocket};
    use std::time::Duration;

    fn config(duration_s: f64, boards: u32, faults: Faults) -> StreamConfig {
        StreamConfig {
            boards,
            faults,
            paced: false,
            ..StreamConfig::new(
                BenchConfig {
                    duration_s,
                    hit_rate_hz: 1e6,
                    ..BenchConfig::default()
                },
                Transport::Udp {
                    target: "127.0.0.1:9".parse().unwrap(),
                },
            )
        }
    }

    fn packets(config: &StreamConfig) -> (StreamSummary, Vec<(u32, Vec<u8>)>) {
        let mut out = Vec::new();
        let summary = generate_packets(config, |source, p| {
            out.push((source, p.to_vec()));
            true
        })
        .unwrap();
        (summary, out)
    }

    /// Hit words of a packet's payload (whole frames), with each frame's (id, lossy).
    fn payload_hits(payload: &[u8]) -> (Vec<u64>, Vec<(u64, bool)>) {
        let mut scanner = FrameScanner::new();
        let mut spans = Vec::new();
        assert_eq!(scanner.scan(payload, true, &mut spans), payload.len());
        assert!(scanner.losses.is_empty() || scanner.losses.get("frontend_lost_frames") > 0);
        let mut words = Vec::new();
        for s in &spans {
            for k in 0..s.n_hits as usize {
                let off = s.hits_offset + 8 * k;
                words.push(u64::from_le_bytes(
                    payload[off..off + 8].try_into().unwrap(),
                ));
            }
        }
        (words, spans.iter().map(|s| (s.frame, s.lossy)).collect())
    }

    /// Hits per (source, seq) of a clean run.
    fn hits_by_seq(packets: &[(u32, Vec<u8>)]) -> HashMap<(u32, u64), u64> {
        packets
            .iter()
            .map(|(_, p)| {
                let (h, payload) = decode_packet(p).unwrap();
                ((h.source_id, h.seq), payload_hits(payload).0.len() as u64)
            })
            .collect()
    }

    /// What a receiver sees of one source.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Seen {
        received: BTreeSet<u64>,
        duplicates: u64,
        out_of_order: u64,
        crc_failures: u64,
        crc_failed_seqs: Vec<u64>,
        hits: u64,
        end_seq: Option<u64>,
    }

    /// Receiver-side accounting: valid packets by seq; CRC failures rejected without their seq
    /// being trusted; a seq below the highest valid one seen counts as out of order.
    fn receive(packets: &[(u32, Vec<u8>)]) -> BTreeMap<u32, Seen> {
        let mut seen: BTreeMap<u32, Seen> = BTreeMap::new();
        let mut max_seen: HashMap<u32, u64> = HashMap::new();
        for (source, p) in packets {
            match decode_packet(p) {
                Ok((h, payload)) => {
                    assert_eq!(h.source_id, *source);
                    assert_eq!(h.payload_format, payload_format::PETSYS_TOFPET2);
                    let s = seen.entry(h.source_id).or_default();
                    if h.flags & FLAG_END_OF_STREAM != 0 {
                        assert!(payload.is_empty());
                        s.end_seq = Some(h.seq);
                        continue;
                    }
                    if !s.received.insert(h.seq) {
                        s.duplicates += 1;
                        continue;
                    }
                    let max = max_seen.entry(h.source_id).or_insert(0);
                    if h.seq < *max {
                        s.out_of_order += 1;
                    }
                    *max = (*max).max(h.seq);
                    s.hits += payload_hits(payload).0.len() as u64;
                }
                Err(TransportError::Crc { .. }) => {
                    let h = scandaq_decoders::TransportHeader::parse(p).unwrap();
                    let s = seen.entry(h.source_id).or_default();
                    s.crc_failures += 1;
                    s.crc_failed_seqs.push(h.seq);
                }
                Err(e) => panic!("packet does not parse: {e}"),
            }
        }
        seen
    }

    #[test]
    fn packets_split_by_board_and_carry_every_hit() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c2 = config(0.05, 2, Faults::default());
        c2.out_dir = Some(tmp.path().join("two"));
        let (s2, p2) = packets(&c2);
        let (s1, p1) = packets(&config(0.05, 1, Faults::default()));
        let (_, frames, truth) = run(cfg(0.05));
        let (_, sim_spans, sim_hits) = decode(&frames);

        for (summary, pk, boards) in [(&s2, &p2, 2u32), (&s1, &p1, 1)] {
            assert_eq!(summary.boards.len(), boards as usize);
            assert_eq!(summary.hits_sent, truth.len() as u64);
            assert_eq!(summary.sim.hits_emitted, truth.len() as u64);
            assert_eq!(summary.packets_sent, pk.len() as u64);
            assert_eq!(summary.faults, FaultCounts::default());
            for b in &summary.boards {
                let mine: Vec<&Vec<u8>> = pk
                    .iter()
                    .filter(|(s, _)| *s == b.source_id)
                    .map(|(_, p)| p)
                    .collect();
                assert_eq!(mine.len() as u64, b.packets_sent);
                let (mut hits, mut frames_n) = (0u64, 0u64);
                for (k, p) in mine.iter().enumerate() {
                    assert!(p.len() <= 8192);
                    let (h, payload) = decode_packet(p).unwrap();
                    assert_eq!(h.seq, k as u64, "board {} seq contiguous", b.source_id);
                    assert_eq!(h.flags & 1, 1, "CRC flag");
                    let last = k + 1 == mine.len();
                    assert_eq!(h.flags & FLAG_END_OF_STREAM != 0, last);
                    if last {
                        assert!(payload.is_empty());
                    }
                    let (words, frames) = payload_hits(payload);
                    if !last {
                        assert!(!frames.is_empty());
                    }
                    for w in &words {
                        let chip = (HitFields::decode(*w).channel >> 6) & 0x3f;
                        if boards == 2 {
                            assert_eq!(chip, b.source_id);
                        }
                    }
                    hits += words.len() as u64;
                    frames_n += frames.len() as u64;
                }
                assert_eq!(hits, b.hits_sent);
                assert_eq!(frames_n, b.frames_sent);
            }
        }
        // One board: exactly the simulator's frames, in order.
        let one: Vec<u8> = p1
            .iter()
            .flat_map(|(_, p)| decode_packet(p).unwrap().1.to_vec())
            .collect();
        assert_eq!(one, frames);
        // Two boards: the same hit words and frameIDs, split by chip.
        let mut words2: Vec<u64> = p2
            .iter()
            .flat_map(|(_, p)| payload_hits(decode_packet(p).unwrap().1).0)
            .collect();
        let mut words1: Vec<u64> = sim_hits.iter().map(|(_, h)| h.encode()).collect();
        words1.sort_unstable();
        words2.sort_unstable();
        assert_eq!(words1, words2);
        let ids2: BTreeSet<u64> = p2
            .iter()
            .flat_map(|(_, p)| payload_hits(decode_packet(p).unwrap().1).1)
            .map(|(f, _)| f)
            .collect();
        let ids1: BTreeSet<u64> = sim_spans.iter().map(|s| s.frame).collect();
        assert_eq!(ids1, ids2);

        // Files beside the stream.
        let dir = tmp.path().join("two");
        assert!(dir.join("calib/tdc_calibration.tsv").is_file());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(json["hits_sent"], s2.hits_sent);
        assert_eq!(json["boards"][1]["source_id"], 1);
        let file = std::fs::File::open(dir.join("truth.parquet")).unwrap();
        let rows: usize =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap().num_rows())
                .sum();
        assert_eq!(rows, truth.len());
    }

    #[test]
    fn lost_flags_survive_the_split_and_big_frames_go_alone() {
        let mut c = config(0.01, 2, Faults::default());
        c.bench.max_hits_per_frame = 3;
        c.bench.hit_rate_hz = 2e6;
        let (s, p) = packets(&c);
        assert!(s.sim.lossy_frames > 0);
        let lossy_ids: BTreeSet<u64> = p
            .iter()
            .flat_map(|(_, p)| payload_hits(decode_packet(p).unwrap().1).1)
            .filter(|(_, lossy)| *lossy)
            .map(|(f, _)| f)
            .collect();
        assert_eq!(lossy_ids.len() as u64, s.sim.lossy_frames);

        // Tiny packets: a packet over the limit holds exactly one frame.
        let mut c = config(0.01, 1, Faults::default());
        c.max_packet_bytes = 96;
        let (s, p) = packets(&c);
        let mut alone = 0;
        for (_, p) in &p {
            let frames = payload_hits(decode_packet(p).unwrap().1).1.len();
            assert!(
                p.len() <= 96 || frames == 1,
                "{} bytes, {frames} frames",
                p.len()
            );
            alone += usize::from(p.len() > 96);
        }
        assert!(alone > 0);
        assert_eq!(s.hits_sent, s.sim.hits_emitted);
    }

    /// Runs `faults` on a small 2-board stream and checks every count against the receiver.
    fn check_faults(faults: Faults) -> FaultCounts {
        let mut clean = config(0.05, 2, Faults::default());
        clean.max_packet_bytes = 1024;
        let (_, clean_packets) = packets(&clean);
        let hits_of = hits_by_seq(&clean_packets);
        let c = StreamConfig {
            faults,
            ..clean.clone()
        };
        let (s, p) = packets(&c);
        let (s_again, p_again) = packets(&c);
        assert_eq!(p, p_again, "faults are deterministic in the seed");
        assert_eq!(s.faults, s_again.faults);
        let seen = receive(&p);
        let mut total = FaultCounts::default();
        for b in &s.boards {
            let r = &seen[&b.source_id];
            let f = &b.faults;
            let end = r.end_seq.expect("end of stream");
            assert_eq!(end + 1, b.packets_sent);
            let missing: Vec<u64> = (0..end).filter(|q| !r.received.contains(q)).collect();
            let missing_hits: u64 = missing.iter().map(|q| hits_of[&(b.source_id, *q)]).sum();
            let crc_hits: u64 = r
                .crc_failed_seqs
                .iter()
                .map(|q| hits_of[&(b.source_id, *q)])
                .sum();
            assert_eq!(
                missing.len() as u64,
                f.lost_packets + f.corrupted_packets,
                "board {}: {f:?}",
                b.source_id
            );
            assert_eq!(missing_hits, f.lost_hits + f.corrupted_hits);
            assert_eq!(r.crc_failures, f.corrupted_packets);
            assert_eq!(crc_hits, f.corrupted_hits);
            assert_eq!(r.duplicates, f.duplicated_packets);
            assert_eq!(r.out_of_order, f.reordered_packets);
            assert_eq!(r.hits, b.hits_sent - f.lost_hits - f.corrupted_hits);
            total.add(f);
        }
        assert_eq!(total, s.faults);
        s.faults
    }

    #[test]
    fn each_fault_is_counted_as_a_receiver_sees_it() {
        let f = check_faults(Faults {
            lose_packets: 0.05,
            ..Faults::default()
        });
        assert!(f.lost_packets > 5 && f.lost_hits > 0, "{f:?}");
        assert_eq!(f.packets_missing(), f.lost_packets);
        let f = check_faults(Faults {
            duplicate: 0.05,
            ..Faults::default()
        });
        assert!(
            f.duplicated_packets > 5 && f.packets_missing() == 0,
            "{f:?}"
        );
        let f = check_faults(Faults {
            reorder: 0.05,
            ..Faults::default()
        });
        assert!(f.reordered_packets > 5 && f.packets_missing() == 0, "{f:?}");
        let f = check_faults(Faults {
            corrupt: 0.05,
            ..Faults::default()
        });
        assert!(f.corrupted_packets > 5 && f.corrupted_hits > 0, "{f:?}");
        assert_eq!(f.packets_missing(), f.corrupted_packets);
        // All at once: the counts still match what arrives.
        let f = check_faults(Faults {
            lose_packets: 0.1,
            duplicate: 0.1,
            reorder: 0.2,
            corrupt: 0.1,
            disconnect_after: None,
            restart_at_s: None,
        });
        assert!(f.lost_packets > 0 && f.duplicated_packets > 0, "{f:?}");
        assert!(f.reordered_packets > 0 && f.corrupted_packets > 0, "{f:?}");
        // Reordering almost always: held packets wait behind lost ones, and one held at the
        // end goes out in order and is not counted.
        let f = check_faults(Faults {
            lose_packets: 0.3,
            reorder: 0.65,
            ..Faults::default()
        });
        assert!(f.reordered_packets > 20, "{f:?}");
    }

    #[test]
    fn bad_stream_configs_are_clear_errors() {
        let err = |c: StreamConfig| generate_packets(&c, |_, _| true).unwrap_err().to_string();
        let e = err(config(0.01, 3, Faults::default()));
        assert!(e.contains("boards = 3") && e.contains("2 modules"), "{e}");
        let e = err(config(
            0.01,
            1,
            Faults {
                corrupt: 1.0,
                ..Faults::default()
            },
        ));
        assert!(e.contains("corrupt") && e.contains("[0, 1)"), "{e}");
        let e = err(config(
            0.01,
            1,
            Faults {
                disconnect_after: Some(3),
                ..Faults::default()
            },
        ));
        assert!(e.contains("TCP"), "{e}");
        let e = err(StreamConfig {
            max_packet_bytes: 50,
            ..config(0.01, 1, Faults::default())
        });
        assert!(e.contains("max_packet_bytes"), "{e}");
        // Stopping early is not an error.
        let mut n = 0;
        let s = generate_packets(&config(0.05, 1, Faults::default()), |_, _| {
            n += 1;
            n < 3
        })
        .unwrap();
        assert_eq!(n, 3);
        assert!(s.packets_sent < 10);
    }

    #[test]
    fn udp_loopback_delivers_every_packet() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let target = rx.local_addr().unwrap();
        let receiver = std::thread::spawn(move || {
            let mut got: Vec<(u32, Vec<u8>)> = Vec::new();
            let mut ends = BTreeSet::new();
            let mut buf = vec![0u8; 65536];
            while ends.len() < 2 {
                let n = rx.recv(&mut buf).expect("datagram before the timeout");
                let (h, _) = decode_packet(&buf[..n]).unwrap();
                if h.flags & FLAG_END_OF_STREAM != 0 {
                    ends.insert(h.source_id);
                }
                got.push((h.source_id, buf[..n].to_vec()));
            }
            got
        });
        // Paced (1 MHz for 10 ms): an unpaced burst can overflow the default socket buffer of
        // a receiver that is starved of CPU on a busy machine.
        let c = StreamConfig {
            transport: Transport::Udp { target },
            paced: true,
            ..config(0.01, 2, Faults::default())
        };
        let s = stream(c.clone()).unwrap();
        let got = receiver.join().unwrap();
        let (_, want) = packets(&c);
        // Everything up to the first end marker of the last board, in order per board.
        let data: Vec<_> = got
            .iter()
            .filter(|(_, p)| p.len() > HEADER_LEN)
            .cloned()
            .collect();
        let want_data: Vec<_> = want
            .iter()
            .filter(|(_, p)| p.len() > HEADER_LEN)
            .cloned()
            .collect();
        assert_eq!(data, want_data);
        assert_eq!(data.len() as u64 + 2, s.packets_sent);
        let seen = receive(&got);
        assert_eq!(seen.values().map(|r| r.hits).sum::<u64>(), s.hits_sent);
        assert!(s.wall_seconds > 0.0);
    }

    fn free_tcp_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        for _ in 0..500 {
            if let Ok(s) = TcpStream::connect(addr) {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("cannot connect to {addr}");
    }

    /// Splits a TCP byte stream into whole packets and the trailing partial bytes.
    fn split_packets(bytes: &[u8]) -> (Vec<(u32, Vec<u8>)>, &[u8]) {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            match decode_packet(&bytes[at..]) {
                Ok((h, _)) => {
                    out.push((h.source_id, bytes[at..at + h.packet_len()].to_vec()));
                    at += h.packet_len();
                }
                Err(TransportError::Truncated { .. } | TransportError::Short(_)) => break,
                Err(e) => panic!("bad packet at {at}: {e}"),
            }
        }
        (out, &bytes[at..])
    }

    #[test]
    fn tcp_disconnect_cuts_one_packet_and_the_client_reconnects() {
        let addr = free_tcp_addr();
        let c = StreamConfig {
            transport: Transport::Tcp { listen: addr },
            max_packet_bytes: 1024,
            faults: Faults {
                disconnect_after: Some(10),
                ..Faults::default()
            },
            ..config(0.01, 2, Faults::default())
        };
        let (_, clean) = packets(&StreamConfig {
            faults: Faults::default(),
            ..c.clone()
        });
        let hits_of = hits_by_seq(&clean);
        let server = std::thread::spawn({
            let c = c.clone();
            move || stream(c).unwrap()
        });
        let mut first = Vec::new();
        connect(addr).read_to_end(&mut first).unwrap();
        let (before, half) = split_packets(&first);
        assert_eq!(before.len(), 10);
        assert!(!half.is_empty());
        let cut = scandaq_decoders::TransportHeader::parse(half).unwrap();
        assert_eq!(half.len(), cut.packet_len() / 2);

        let mut second = Vec::new();
        connect(addr).read_to_end(&mut second).unwrap();
        let s = server.join().unwrap();
        let (after, rest) = split_packets(&second);
        assert!(rest.is_empty());
        let all: Vec<_> = before.into_iter().chain(after).collect();
        assert_eq!(all.len() as u64, s.packets_sent - 1);
        let seen = receive(&all);
        let missing: Vec<(u32, u64)> = seen
            .iter()
            .flat_map(|(src, r)| {
                let end = r.end_seq.expect("end of stream");
                (0..end)
                    .filter(|q| !r.received.contains(q))
                    .map(|q| (*src, q))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(missing, [(cut.source_id, cut.seq)], "one seq gap of 1");
        let f = &s.faults;
        assert_eq!((f.disconnects, f.disconnect_lost_packets), (1, 1), "{f:?}");
        assert_eq!(f.disconnect_lost_hits, hits_of[&(cut.source_id, cut.seq)]);
        let b = s
            .boards
            .iter()
            .find(|b| b.source_id == cut.source_id)
            .unwrap();
        assert_eq!(b.faults.disconnects, 1);
        assert_eq!(
            seen.values().map(|r| r.hits).sum::<u64>(),
            s.hits_sent - f.disconnect_lost_hits
        );
        assert_eq!(s.client_disconnects, 0);
    }

    #[test]
    fn command_line_streams() {
        let exe = env!("CARGO_BIN_EXE_fpga-sim");
        let tmp = tempfile::tempdir().unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rx.local_addr().unwrap().to_string();
        let out = tmp.path().join("s");
        let o = std::process::Command::new(exe)
            .args(["--duration", "5ms", "--boards", "2", "--unpaced"])
            .args(["--lose-packets", "0.1", "--udp", &port, "--out"])
            .arg(&out)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            stdout.contains("Streamed") && stdout.contains("faults: lost"),
            "{stdout}"
        );
        assert!(
            stdout.contains("board 1:") && stdout.contains("truth.parquet"),
            "{stdout}"
        );
        assert!(out.join("summary.json").is_file() && out.join("calib/skew.tsv").is_file());

        let bad = |args: &[&str], want: &str| {
            let o = std::process::Command::new(exe)
                .args(["--duration", "1ms"])
                .args(args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{args:?} should fail");
            assert!(err.contains(want), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        };
        let dir = tmp.path().join("f");
        let dir = dir.to_str().unwrap();
        bad(&["--corrupt", "0.1", "--out", dir], "need --udp");
        bad(&["--boards", "2", "--out", dir], "need --udp");
        bad(&["--udp", &port, "--disconnect-after", "3"], "needs --tcp");
        bad(&["--udp", &port, "--boards", "3"], "2 modules");
        bad(&["--udp", &port, "--reorder", "1"], "[0, 1)");
        bad(&["--udp", &port, "--max-packet-bytes", "64"], "packet size");
        bad(&["--udp", &port, "--tcp", &port], "cannot be used with");
        bad(
            &["--udp", &port, "--lose-packets", "0.6", "--corrupt", "0.5"],
            "less than 1",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Ring preset: determinism, truth accounting, geometry, physics, files and command line.

mod ring {
    use super::*;
    use scandaq_fpga_sim::ring::{
        Phantom, RingConfig, RingGeometry, RingSim, RingSummary, Source, write_ring_files,
    };
    use std::collections::HashMap;

    fn ring_cfg(duration_s: f64) -> RingConfig {
        RingConfig {
            duration_s,
            ..RingConfig::default()
        }
    }

    fn run_ring(config: RingConfig) -> (RingSim, Vec<u8>, TruthBatch) {
        let mut sim = RingSim::new(config).expect("valid ring config");
        let mut frames = Vec::new();
        let mut truth = TruthBatch::new();
        let mut slice = TruthBatch::new();
        while sim.next_slice(&mut frames, &mut slice) {
            truth.extend_from(&slice);
            slice.clear();
        }
        assert!(!sim.next_slice(&mut Vec::new(), &mut slice));
        (sim, frames, truth)
    }

    /// Rows of each photon `(decay_id, photon_id)` of source decays.
    fn photons(truth: &TruthBatch) -> HashMap<(u64, u8), Vec<usize>> {
        let mut m: HashMap<(u64, u8), Vec<usize>> = HashMap::new();
        for i in 0..truth.len() {
            if matches!(
                truth.kind[i],
                HitKind::True | HitKind::Scatter | HitKind::InterCrystal
            ) {
                m.entry((truth.decay_id[i], truth.photon_id[i]))
                    .or_default()
                    .push(i);
            }
        }
        m
    }

    fn transaxial(a: [f32; 3], b: [f32; 3]) -> f64 {
        f64::from(a[0] - b[0]).hypot(f64::from(a[1] - b[1]))
    }

    #[test]
    fn ring_same_seed_same_bytes_other_seed_differs() {
        let (_, fa, ta) = run_ring(ring_cfg(0.005));
        let (_, fb, tb) = run_ring(ring_cfg(0.005));
        assert!(ta.len() > 5000, "{}", ta.len());
        assert_eq!(fa, fb);
        assert_eq!(ta, tb);
        let (_, fc, tc) = run_ring(RingConfig {
            seed: 2,
            ..ring_cfg(0.005)
        });
        assert_ne!(fa, fc);
        assert_ne!(ta, tc);
    }

    #[test]
    fn ring_frames_decode_to_exactly_the_truth_rows() {
        let (sim, frames, truth) = run_ring(RingConfig {
            phantom: Some(Phantom::default()),
            ..ring_cfg(0.01)
        });
        let (scanner, spans, hits) = decode(&frames);
        assert!(scanner.losses.is_empty(), "{:?}", scanner.losses);
        assert_eq!(hits.len(), truth.len());
        let s = sim.summary();
        assert_eq!(s.hits_emitted as usize, truth.len());
        assert_eq!(s.frames_emitted as usize, spans.len());
        assert!(spans.windows(2).all(|w| w[0].frame < w[1].frame));
        for (k, (frame, h)) in hits.iter().enumerate() {
            assert_eq!(h.channel, truth.channel[k], "row {k}");
            let f_true = truth.t_true_ps[k].div_euclid(FRAME_PS);
            assert!((*frame as i64 - f_true).abs() <= 1, "row {k}");
        }
        // Every column has one value per row, and the kinds add up to the summary.
        for n in [
            truth.interaction.len(),
            truth.n_scatter.len(),
            truth.e_photon_kev.len(),
            truth.photon_dep_kev.len(),
            truth.src_x_mm.len(),
        ] {
            assert_eq!(n, truth.len());
        }
        for kind in HitKind::ALL {
            let n = truth.kind.iter().filter(|k| **k == kind).count() as u64;
            assert_eq!(s.hits_by_kind.get(kind.name()).copied().unwrap_or(0), n);
        }
        assert_eq!(s.dark_hits, s.hits_by_kind["dark"]);
        // Ids: dark and background flagged, source photons 1 and 2.
        for i in 0..truth.len() {
            let id = truth.decay_id[i];
            match truth.kind[i] {
                HitKind::Dark => assert!(id & (1 << 62) != 0 && truth.photon_id[i] == 0),
                HitKind::Background => assert!(id & (1 << 63) != 0 && truth.photon_id[i] == 0),
                HitKind::PromptGamma => panic!("no prompt gamma in the ring"),
                _ => assert!(id < 1 << 62 && (1..=2).contains(&truth.photon_id[i])),
            }
            assert!(f64::from(truth.e_true_kev[i]) >= RingConfig::default().threshold_kev);
        }
        // The true tables invert the words to the true time (skew and jitter aside).
        let (mut n, mut s2) = (0.0, 0.0);
        for (k, (frame, h)) in hits.iter().enumerate() {
            let tt = sim.true_tdc().get(h.channel, h.tac, Branch::T).unwrap();
            let t = ((*frame * 1024) as f64 + f64::from(h.tcoarse)
                - tt.phase(f64::from(h.tfine))
                - tt.t0)
                * PERIOD_PS;
            let r = t - sim.true_skew().offsets_ps[&h.channel] - truth.t_true_ps[k] as f64;
            n += 1.0;
            s2 += r * r;
        }
        let sigma = 200.0 / (2.355 * 2f64.sqrt());
        let rms = (s2 / n).sqrt();
        assert!((rms - sigma).abs() < 10.0, "rms {rms} vs {sigma}");
    }

    #[test]
    fn ring_geometry_channels_and_map() {
        for radius in [400.0, 300.0] {
            let config = RingConfig {
                ring_radius_mm: radius,
                duration_s: 0.001,
                ..RingConfig::default()
            };
            let sim = RingSim::new(config.clone()).unwrap();
            let text = sim.geometry().to_map_channel();
            let g = scandaq_core::Geometry::parse_map_channel("map", &text).unwrap();
            assert_eq!(g.crystals.len(), 2048);
            assert_eq!(&g, sim.geometry());
            let ids: std::collections::BTreeSet<u32> = g.crystals.keys().copied().collect();
            assert_eq!(ids.len(), 2048);
            for (&id, c) in &g.crystals {
                let (port, slave, chip, ch) = scandaq_core::ChannelId(id).parts();
                assert_eq!((port, slave), (0, 0));
                assert_eq!(chip, c.module);
                assert_eq!(ch, c.yi * 8 + c.xi);
                let r = f64::from(c.pos_mm[0]).hypot(f64::from(c.pos_mm[1]));
                assert!(
                    r >= radius && r <= radius + config.crystal_length_mm,
                    "channel {id} at radius {r}"
                );
                assert!(f64::from(c.pos_mm[2]).abs() < 16.0);
                // The crystal's azimuth is its module's, within half a module face.
                let phi = f64::from(c.pos_mm[1]).atan2(f64::from(c.pos_mm[0]));
                let want = f64::from(c.module) * std::f64::consts::TAU / 32.0;
                let d = (phi - want + std::f64::consts::PI).rem_euclid(std::f64::consts::TAU)
                    - std::f64::consts::PI;
                assert!(d.abs() < (16.0 / radius), "channel {id}: {d}");
            }
            // Ray from the centre to each crystal centre enters that crystal.
            let geo = sim.ring_geometry();
            for ch in (0..2048).step_by(37) {
                let c = geo.crystal_centre(ch);
                let n = (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt();
                let hit = geo.face_hit([0.0; 3], [c[0] / n, c[1] / n, c[2] / n]);
                assert_eq!(hit.map(|h| h.ch), Some(ch));
                assert_eq!(
                    RingGeometry::channel_id(ch),
                    *g.crystals.keys().nth(ch).unwrap()
                );
            }
        }
    }

    #[test]
    fn centred_point_source_pairs_are_opposite_and_photopeaks_sum_to_511() {
        let config = ring_cfg(0.02);
        let r = config.ring_radius_mm;
        let l = config.crystal_length_mm;
        let (sim, _, truth) = run_ring(config);
        let map = sim.geometry();
        let s = sim.summary();
        assert_eq!(
            s.hits_by_kind["scatter"], 0,
            "no phantom, no object scatter"
        );
        assert!(truth.n_scatter.iter().all(|&n| n == 0));
        let ph = photons(&truth);
        // Opposite crystals: earliest interaction emitted of each photon of a decay.
        let mut first: HashMap<u64, [Option<usize>; 2]> = HashMap::new();
        for (&(id, p), rows) in &ph {
            let i = *rows.iter().min_by_key(|&&i| truth.interaction[i]).unwrap();
            first.entry(id).or_default()[usize::from(p - 1)] = Some(i);
        }
        let (mut pairs, mut opposite) = (0, 0);
        for v in first.values() {
            if let [Some(a), Some(b)] = *v {
                pairs += 1;
                let ca = map.crystal(truth.channel[a]).unwrap();
                let cb = map.crystal(truth.channel[b]).unwrap();
                let d = transaxial(ca.pos_mm, cb.pos_mm);
                assert!(d > 2.0 * r - 1.0 && d < 2.0 * r + 2.0 * l, "distance {d}");
                opposite += u32::from((ca.module + 32 - cb.module) % 32 == 16);
                // Same annihilation point, photons arrive together (centred source).
                assert!((truth.t_true_ps[a] - truth.t_true_ps[b]).abs() < 100);
            }
        }
        assert!(pairs > 1000, "{pairs} pairs");
        assert_eq!(opposite, pairs, "every pair lands on opposite modules");
        assert_eq!(s.true_pairs_emitted, pairs as u64);
        assert_eq!(s.true_coincidences_in_window, pairs as u64);
        assert_eq!(s.photons_emitted, ph.len() as u64);
        assert!(s.decays > s.true_pairs_emitted && s.photons_detected >= s.photons_emitted);

        // Multi-hit photons: same decay and photon id, same module, distinct crystals, the
        // secondaries later by the crystal distance over c; sums never exceed the photon.
        let (mut multi, mut full, mut complete) = (0, 0, 0);
        for rows in ph.values() {
            let dep = truth.photon_dep_kev[rows[0]];
            let sum: f32 = rows.iter().map(|&i| truth.e_true_kev[i]).sum();
            assert!(sum <= dep + 0.01, "{sum} > {dep}");
            assert!(rows.iter().all(|&i| truth.photon_dep_kev[i] == dep));
            assert!(rows.iter().all(|&i| truth.e_photon_kev[i] == 511.0));
            if rows.len() > 1 {
                multi += 1;
                let mods: Vec<u32> = rows
                    .iter()
                    .map(|&i| map.crystal(truth.channel[i]).unwrap().module)
                    .collect();
                assert!(mods.iter().all(|&m| m == mods[0]));
                let mut chans: Vec<u32> = rows.iter().map(|&i| truth.channel[i]).collect();
                chans.sort_unstable();
                chans.dedup();
                assert_eq!(chans.len(), rows.len());
                let t0 = rows.iter().map(|&i| truth.t_true_ps[i]).min().unwrap();
                assert!(rows.iter().all(|&i| truth.t_true_ps[i] - t0 <= 100));
                for &i in rows {
                    assert_eq!(
                        truth.kind[i] == HitKind::InterCrystal,
                        truth.interaction[i] > 0
                    );
                }
            }
            if dep == 511.0 {
                full += 1;
                complete += u32::from((sum - 511.0).abs() < 0.05);
            }
        }
        assert!(multi > 200, "{multi} multi-hit photons");
        assert!(s.hits_by_kind["inter_crystal"] > 0);
        assert!(
            f64::from(complete) > 0.85 * f64::from(full),
            "{complete} of {full} photopeak photons sum to 511 keV"
        );
        // Point source at the centre: the annihilation point is the origin.
        for i in 0..truth.len() {
            if truth.photon_id[i] > 0 {
                assert_eq!(
                    [truth.src_x_mm[i], truth.src_y_mm[i], truth.src_z_mm[i]],
                    [0.0; 3]
                );
            }
        }
    }

    #[test]
    fn object_scatter_only_with_the_phantom() {
        let (sim, _, truth) = run_ring(RingConfig {
            phantom: Some(Phantom::default()),
            ..ring_cfg(0.02)
        });
        let s = sim.summary();
        assert!(s.hits_by_kind["scatter"] > 100, "{:?}", s.hits_by_kind);
        assert!(s.photons_object_scattered > 0 && s.scattered_coincidences_in_window > 0);
        let mut scattered_full = 0;
        for i in 0..truth.len() {
            let sc = truth.n_scatter[i] > 0;
            if truth.interaction[i] == 0 && truth.photon_id[i] > 0 {
                assert_eq!(truth.kind[i] == HitKind::Scatter, sc, "row {i}");
            }
            if sc {
                assert!(truth.e_photon_kev[i] < 511.0);
                assert!(truth.e_true_kev[i] <= truth.e_photon_kev[i] + 0.01);
                scattered_full += u32::from(truth.photon_dep_kev[i] == truth.e_photon_kev[i]);
            } else if truth.photon_id[i] > 0 {
                assert_eq!(truth.e_photon_kev[i], 511.0);
            }
        }
        assert!(scattered_full > 0);
        // Without the phantom (same seed): no object scatter at all.
        let (sim, _, truth) = run_ring(ring_cfg(0.005));
        assert_eq!(sim.summary().hits_by_kind["scatter"], 0);
        assert_eq!(sim.summary().photons_object_scattered, 0);
        assert!(truth.kind.iter().all(|k| *k != HitKind::Scatter));
    }

    #[test]
    fn line_and_cylinder_sources_place_annihilations() {
        let (_, _, truth) = run_ring(RingConfig {
            source: Source::Line {
                from_mm: [50.0, 0.0, -10.0],
                to_mm: [50.0, 0.0, 10.0],
            },
            ..ring_cfg(0.005)
        });
        let src: Vec<usize> = (0..truth.len())
            .filter(|&i| truth.photon_id[i] > 0)
            .collect();
        assert!(src.len() > 1000);
        let zs: Vec<f32> = src.iter().map(|&i| truth.src_z_mm[i]).collect();
        for &i in &src {
            assert!((truth.src_x_mm[i] - 50.0).abs() < 1e-3 && truth.src_y_mm[i] == 0.0);
            assert!(truth.src_z_mm[i].abs() <= 10.0);
        }
        assert!(zs.iter().any(|&z| z > 5.0) && zs.iter().any(|&z| z < -5.0));
        let (_, _, truth) = run_ring(RingConfig {
            source: Source::Cylinder {
                centre_mm: [0.0; 3],
                radius_mm: 80.0,
                length_mm: 30.0,
            },
            positron_range_mm: 0.5,
            ..ring_cfg(0.005)
        });
        let mut outer = 0;
        for i in (0..truth.len()).filter(|&i| truth.photon_id[i] > 0) {
            let r = truth.src_x_mm[i].hypot(truth.src_y_mm[i]);
            assert!(r < 80.0 + 20.0 && truth.src_z_mm[i].abs() < 15.0 + 20.0);
            outer += u32::from(r > 40.0);
        }
        assert!(outer > 100);
    }

    #[test]
    fn ring_files_on_disk_and_activity() {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ring");
        let config = RingConfig {
            activity_bq: Some(50e6),
            ..ring_cfg(0.01)
        };
        let summary: RingSummary = write_ring_files(config.clone(), &dir).unwrap();
        for f in scandaq_fpga_sim::ring::ring_file_list() {
            assert!(dir.join(&f).is_file(), "{f} missing");
        }
        assert!((summary.activity_total_bq - 50e6).abs() < 1.0);
        let raw = std::fs::read(dir.join("ring.rawf")).unwrap();
        RawfHeader::parse(&raw).unwrap();
        let (scanner, spans, _) = decode(&raw[64..]);
        assert_eq!(scanner.hits, summary.hits_emitted);
        let idx =
            scandaq_decoders::idxf::parse(&std::fs::read_to_string(dir.join("ring.idxf")).unwrap())
                .unwrap();
        assert_eq!(
            (
                idx[0].start_offset,
                idx[0].end_offset,
                idx[0].first_frame_id
            ),
            (64, raw.len() as u64, spans[0].frame)
        );
        let file = std::fs::File::open(dir.join("truth.parquet")).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
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
                "kind",
                "interaction",
                "n_scatter",
                "e_photon_kev",
                "photon_dep_kev",
                "src_x_mm",
                "src_y_mm",
                "src_z_mm"
            ]
        );
        let rows: usize = builder
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum();
        assert_eq!(rows as u64, summary.hits_emitted);
        let sim = RingSim::new(config).unwrap();
        let calib = dir.join("calib");
        let read = |f: &str| std::fs::read_to_string(calib.join(f)).unwrap();
        assert_eq!(
            &scandaq_core::TdcTable::parse("tdc", &read("tdc_calibration.tsv")).unwrap(),
            sim.true_tdc()
        );
        assert_eq!(sim.true_tdc().entries.len(), 2048 * 8);
        assert_eq!(
            &scandaq_core::EnergyTable::parse("e", &read("energy_calibration.tsv")).unwrap(),
            sim.true_energy()
        );
        assert_eq!(
            &scandaq_core::SkewTable::parse("s", &read("skew.tsv")).unwrap(),
            sim.true_skew()
        );
        let skews: Vec<f64> = sim.true_skew().offsets_ps.values().copied().collect();
        assert!(skews.iter().all(|s| s.abs() <= 500.0));
        assert!(skews.iter().any(|s| s.abs() > 400.0));
        assert_eq!(
            &scandaq_core::Geometry::parse_map_channel("m", &read("map_channel.tsv")).unwrap(),
            sim.geometry()
        );
        let trig = read("map_trigger.tsv");
        assert_eq!(
            trig.lines().filter(|l| l.ends_with('C')).count(),
            32 * 31 / 2
        );
        assert!(read("config.ini").contains("channel_map = %CDIR%/map_channel.tsv"));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(json["preset"], "ring");
        for key in [
            "decays",
            "photons_detected",
            "true_coincidences_in_window",
            "randoms_rate_estimate_hz",
        ] {
            assert!(json[key].is_number(), "{key}");
        }
        assert_eq!(json["hits_emitted"], summary.hits_emitted);
    }

    #[test]
    fn ring_default_rate_randoms_and_multiples_matter() {
        let (sim, _, truth) = run_ring(ring_cfg(0.02));
        let s = sim.summary();
        let rate = s.hits_emitted as f64 / 0.02;
        assert!(rate > 2.5e6 && rate < 3.2e6, "rate {rate}");
        // Randoms at a 4 ns window are a visible fraction of the trues.
        let trues_rate = s.true_coincidences_in_window as f64 / 0.02;
        assert!(
            s.randoms_rate_estimate_hz > 0.02 * trues_rate,
            "{} vs {trues_rate}",
            s.randoms_rate_estimate_hz
        );
        // Singles whose 4 ns window (true time) holds a hit of another decay: randoms and
        // multiples occur, but stay a minority.
        let mut t: Vec<(i64, u64)> = truth
            .t_true_ps
            .iter()
            .copied()
            .zip(truth.decay_id.iter().copied())
            .collect();
        t.sort_unstable();
        let mixed = (0..t.len())
            .filter(|&i| {
                t[i + 1..]
                    .iter()
                    .take_while(|x| x.0 - t[i].0 <= 4000)
                    .any(|x| x.1 != t[i].1)
            })
            .count();
        let f = mixed as f64 / t.len() as f64;
        assert!(f > 0.005 && f < 0.05, "{mixed} of {}", t.len());
    }

    #[test]
    fn ring_bad_config_and_command_line() {
        let err = RingSim::new(RingConfig {
            ring_radius_mm: 50.0,
            ..RingConfig::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("ring_radius_mm"), "{err}");

        let exe = env!("CARGO_BIN_EXE_fpga-sim");
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("cli");
        let ok = std::process::Command::new(exe)
            .args([
                "--preset",
                "ring",
                "--duration",
                "5ms",
                "--rate",
                "1M",
                "--source",
                "point:0,0,0",
                "--source",
                "point:100,0,0",
                "--phantom",
                "--ring-radius",
                "380",
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
            stdout.contains("preset ring") && stdout.contains("ring.rawf"),
            "{stdout}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(json["config"]["ring_radius_mm"], 380.0);
        assert_eq!(json["config"]["phantom"]["radius_mm"], 100.0);
        assert_eq!(
            json["config"]["source"]["positions_mm"][1],
            serde_json::json!([100.0, 0.0, 0.0])
        );
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
        bad(
            &["--preset", "ring", "--source", "sphere:3"],
            "invalid source",
        );
        bad(
            &["--preset", "ring", "--source", "point:500,0,0"],
            "inside the ring",
        );
        bad(
            &[
                "--preset",
                "ring",
                "--source",
                "point:0,0,0",
                "--source",
                "cylinder:10,10",
            ],
            "must all be points",
        );
        bad(
            &["--preset", "ring", "--udp", "127.0.0.1:9"],
            "only implemented for the bench",
        );
    }

    /// Ring generation speed (run with `--ignored --nocapture`).
    #[test]
    #[ignore]
    fn ring_generation_speed() {
        for phantom in [None, Some(Phantom::default())] {
            let config = RingConfig {
                duration_s: 2.0,
                phantom,
                ..RingConfig::default()
            };
            let start = std::time::Instant::now();
            let mut sim = RingSim::new(config).unwrap();
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
                "phantom {}: {hits} hits in {dt:.3} s: {:.2} M hits/s",
                sim.config().phantom.is_some(),
                hits as f64 / dt / 1e6
            );
        }
    }
}
