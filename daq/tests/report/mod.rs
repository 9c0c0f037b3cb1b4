//! `scandaq report` through the real binary: the numbers in the report's data block equal
//! the run's tables (read here) and manifest, the photopeak sits at 511 keV and the Δt peak
//! has the simulated CTR, a dead MEG channel is named flat, the ultrasound B-mode image's
//! brightest points are the simulator's scatterers, bad run directories give one clear
//! error, and the page renders in headless Chromium without errors with every figure drawn
//! (a screenshot is kept under the target directory).

use super::{
    col_i64, col_u32, fpga_sim_exe, free_port_udp, no_panic, read_parquet, scandaq, simulate,
    skip_unless_ci,
};
use arrow_array::cast::AsArray;
use arrow_array::types::UInt8Type;
use scandaq_fpga_sim::opm::{
    OpmConfig, TRUTH_BLOCKS_FILE, archive_metadata as opm_metadata, run_opm,
};
use scandaq_fpga_sim::packet_out::Destination;
use scandaq_fpga_sim::us::{
    TRUTH_FILE as US_TRUTH_FILE, UsConfig, archive_metadata as us_metadata, read_truth,
    run as run_us,
};
use scandaq_sinks::Manifest;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The bench's coincidence time resolution (fpga-sim's default), ps.
const BENCH_CTR_FWHM_PS: f64 = 200.0;

/// The only run directory under `out`.
fn only_run(out: &Path) -> PathBuf {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.pop().unwrap()
}

fn replay(input: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec!["replay", input.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend(["--out", out.to_str().unwrap(), "--no-progress"]);
    let (code, _, stderr) = scandaq(&args);
    no_panic(&stderr);
    assert_eq!(code, 0, "replay failed: {stderr}");
    only_run(out)
}

/// Writes the report of `run` to `html` through the binary; returns its data block.
pub(crate) fn report(run: &Path, html: &Path) -> Value {
    let (code, stdout, stderr) = scandaq(&[
        "report",
        run.to_str().unwrap(),
        "--out",
        html.to_str().unwrap(),
    ]);
    no_panic(&stderr);
    assert_eq!(code, 0, "report failed: {stderr}");
    assert!(stdout.contains("written to"), "{stdout}");
    data_block(&std::fs::read_to_string(html).unwrap())
}

/// The JSON of `<script type="application/json" id="report-data">`.
fn data_block(page: &str) -> Value {
    let open = "<script type=\"application/json\" id=\"report-data\">";
    let start = page.find(open).expect("the page has its data block") + open.len();
    let end = start + page[start..].find("</script>").unwrap();
    serde_json::from_str(&page[start..end]).unwrap()
}

/// A 1 s bench replayed with its true calibration (coincidences sorted), in a temp dir.
struct Fixture {
    _tmp: tempfile::TempDir,
    run: PathBuf,
    html: PathBuf,
    data: Value,
}

fn pet() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let sim = tmp.path().join("sim");
        let args = ["--duration", "1s", "--rate", "1M", "--seed", "31"];
        let rawf = simulate(&sim, "bench", &args, |dir| {
            let config = scandaq_fpga_sim::BenchConfig {
                seed: 31,
                duration_s: 1.0,
                hit_rate_hz: 1e6,
                ..Default::default()
            };
            scandaq_fpga_sim::write_bench_files(config, dir).unwrap();
        });
        let calib = sim.join("calib");
        let run = replay(
            &rawf,
            &tmp.path().join("runs"),
            &["--calib", calib.to_str().unwrap()],
        );
        let html = tmp.path().join("pet-report.html");
        let data = report(&run, &html);
        Fixture {
            _tmp: tmp,
            run,
            html,
            data,
        }
    })
}

/// An OPM-MEG run (3 sensors = 9 channels + trigger, 8 s) with channel 4 dead, replayed
/// from the simulator's archive.
fn meg() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("opm.sdq");
        let metadata_json = opm_metadata(&meg_config());
        let dest = Destination::Archive {
            path: archive.clone(),
            metadata_json,
        };
        run_opm(&meg_config(), dest, None, None).unwrap();
        let run = replay(&archive, &tmp.path().join("runs"), &["--no-calib"]);
        let html = tmp.path().join("meg-report.html");
        let data = report(&run, &html);
        Fixture {
            _tmp: tmp,
            run,
            html,
            data,
        }
    })
}

/// Also the run `scandaq export bids` is tested on (daq/tests/bids).
pub(crate) fn meg_config() -> OpmConfig {
    OpmConfig {
        seed: 5,
        duration_s: 8.0,
        sensors: 3,
        flat_channels: vec![4],
        ..OpmConfig::default()
    }
}

/// An ultrasound run (3 frames of the default 128-element plane-wave sequence), replayed
/// from the simulator's archive.
fn us() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let config = UsConfig {
            seed: 9,
            frames: 3,
            paced: false,
            ..UsConfig::default()
        };
        let archive = tmp.path().join("us.sdq");
        let dest = Destination::Archive {
            path: archive.clone(),
            metadata_json: us_metadata(&config),
        };
        run_us(&config, dest).unwrap();
        let run = replay(&archive, &tmp.path().join("runs"), &["--no-calib"]);
        let html = tmp.path().join("us-report.html");
        let data = report(&run, &html);
        Fixture {
            _tmp: tmp,
            run,
            html,
            data,
        }
    })
}

fn rows_of(run: &Path, prefix: &str) -> u64 {
    let m = Manifest::read(run).unwrap();
    m.files
        .iter()
        .filter(|f| f.path.starts_with(prefix))
        .map(|f| {
            read_parquet(&run.join(&f.path))
                .0
                .iter()
                .map(|b| b.num_rows() as u64)
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn pet_report_counts_equal_the_tables_and_the_manifest() {
    let f = pet();
    let d = &f.data;
    let m = Manifest::read(&f.run).unwrap();
    let singles = rows_of(&f.run, "singles-");
    let prompts = rows_of(&f.run, "coincidences-");
    let delayed = rows_of(&f.run, "delayed-");
    assert!(
        singles > 100_000 && prompts > 1000 && delayed > 10,
        "{singles} {prompts} {delayed}"
    );
    assert_eq!(d["pet"]["singles"], singles);
    assert_eq!(d["pet"]["prompts"], prompts);
    assert_eq!(d["pet"]["delayed"], delayed);
    assert_eq!(m.counts["singles_written"], singles);
    // Every loss of the manifest, by reason.
    let losses: Value = serde_json::to_value(m.losses.by_name()).unwrap();
    assert_eq!(d["summary"]["losses"], losses);
    assert_eq!(d["summary"]["state"], m.state.name());
    // Singles per module (channel >> 6) and per channel, counted here from the table.
    let (b, _) = read_parquet(&f.run.join("singles-00000.parquet"));
    let channels = col_u32(&b, "channel");
    let modules = d["pet"]["modules"].as_array().unwrap();
    assert_eq!(modules.len(), 2, "the bench has two modules");
    for module in modules {
        let id = module["module"].as_u64().unwrap() as u32;
        let mut want = [0u64; 64];
        for c in channels.iter().filter(|&&c| c >> 6 == id) {
            want[(c & 63) as usize] += 1;
        }
        let got: Vec<u64> = module["channel_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(got, want, "module {id}");
    }
}

/// Channel id -> region of a PETsys `map_channel.tsv` (`portID slaveID chipID channelID
/// region ...`; channel id = port << 17 | slave << 12 | chip << 6 | channel).
fn regions(path: &Path) -> std::collections::HashMap<u32, u32> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<u32> = line
            .split_whitespace()
            .take(5)
            .map(|v| v.parse().unwrap())
            .collect();
        out.insert(f[0] << 17 | f[1] << 12 | f[2] << 6 | f[3], f[4]);
    }
    assert!(!out.is_empty(), "{}", path.display());
    out
}

#[test]
fn pet_report_photopeak_is_at_511_kev_and_dt_is_oriented_with_the_simulated_ctr() {
    let f = pet();
    let d = &f.data["pet"];
    for module in d["modules"].as_array().unwrap() {
        let peak = &module["photopeak"];
        let pos = peak["position"].as_f64().expect("a photopeak");
        let res = peak["resolution_pct"].as_f64().unwrap();
        assert!((pos - 511.0).abs() < 10.0, "photopeak at {pos} keV");
        // The bench simulates 11 % FWHM at 511 keV.
        assert!((7.0..16.0).contains(&res), "resolution {res} %");
    }
    // The Δt histogram equals one computed here from the prompt table with the dashboard's
    // rule: smaller module (the crystal's region in the run's map_channel.tsv, read here)
    // first, then smaller channel; Δt = t_first - t_second; +window in the last bin.
    let region = regions(&f.run.join("calib/map_channel.tsv"));
    let module = |c: u32| region.get(&c).copied().unwrap_or(c / 64);
    let (b, _) = read_parquet(&f.run.join("coincidences-00000.parquet"));
    let (t1, t2) = (col_i64(&b, "t1_ps"), col_i64(&b, "t2_ps"));
    let (c1, c2) = (col_u32(&b, "channel1"), col_u32(&b, "channel2"));
    let lo = d["dt"]["lo_ps"].as_f64().unwrap();
    let bin = d["dt"]["bin_ps"].as_f64().unwrap();
    let counts: Vec<u64> = d["dt"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let mut want = vec![0u64; counts.len()];
    for i in 0..t1.len() {
        let first_is_1 = (module(c1[i]), c1[i]) <= (module(c2[i]), c2[i]);
        let dt = if first_is_1 {
            t1[i] - t2[i]
        } else {
            t2[i] - t1[i]
        };
        let k = ((dt as f64 - lo) / bin).floor();
        let n = want.len();
        if k >= 0.0 && (k as usize) < n {
            want[k as usize] += 1;
        } else if dt as f64 == lo + n as f64 * bin {
            want[n - 1] += 1;
        }
    }
    assert_eq!(counts, want);
    let fwhm = d["dt"]["fwhm_ps"].as_f64().expect("a Δt FWHM");
    assert!(
        (fwhm - BENCH_CTR_FWHM_PS).abs() < 0.25 * BENCH_CTR_FWHM_PS,
        "Δt FWHM {fwhm} ps, simulated CTR {BENCH_CTR_FWHM_PS} ps"
    );
}

#[test]
fn meg_report_names_the_dead_channel_flat_and_counts_every_trigger() {
    let f = meg();
    let s = &f.data["meg"]["streams"][0];
    let channels = s["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 9, "3 sensors x 3 axes");
    for (i, c) in channels.iter().enumerate() {
        let want = if i == 4 { "flat" } else { "ok" };
        assert_eq!(c["health"], want, "channel {i}: {c}");
    }
    // A healthy channel's spectrum is white noise plus mains: finite and positive.
    assert!(channels[0]["asd_10hz"].as_f64().unwrap() > 0.0);
    assert_eq!(s["blocks"], rows_of(&f.run, "meg_blocks-"));
    // Rising edges per bit, counted here from the triggers table.
    let (b, _) = read_parquet(&f.run.join("triggers-source0.parquet"));
    let mut want = std::collections::BTreeMap::<String, u64>::new();
    for batch in &b {
        let bit = batch
            .column_by_name("bit")
            .unwrap()
            .as_primitive::<UInt8Type>();
        let rising = batch.column_by_name("rising").unwrap().as_boolean();
        for i in 0..batch.num_rows() {
            if rising.value(i) {
                *want.entry(bit.value(i).to_string()).or_default() += 1;
            }
        }
    }
    assert!(!want.is_empty(), "the simulator sends triggers");
    assert_eq!(
        s["trigger_rising_edges"],
        serde_json::to_value(&want).unwrap()
    );
}

#[test]
fn meg_report_says_when_samples_were_lost_at_the_truths_gaps() {
    // 15 % of the 48 blocks truncated by the simulator (rejected, their samples missing): each run
    // of such blocks inside the stream is one gap, seen at the first block after it.
    let tmp = tempfile::tempdir().unwrap();
    let mut config = meg_config();
    config.faults.truncate_blocks = 0.15;
    let (archive, sim) = (tmp.path().join("opm.sdq"), tmp.path().join("sim"));
    let dest = Destination::Archive {
        path: archive.clone(),
        metadata_json: opm_metadata(&config),
    };
    run_opm(&config, dest, None, Some(&sim)).unwrap();
    let run = replay(&archive, &tmp.path().join("runs"), &["--no-calib"]);
    let d = report(&run, &tmp.path().join("r.html"));
    let m = Manifest::read(&run).unwrap();
    assert!(m.losses.get("meg_missing_samples") > 0, "{:?}", m.losses);
    let losses: Value = serde_json::to_value(m.losses.by_name()).unwrap();
    assert_eq!(d["summary"]["losses"], losses);
    let truth = scandaq_fpga_sim::opm::read_block_truth(&sim.join(TRUTH_BLOCKS_FILE)).unwrap();
    // The true time of the first block after each run of rejected blocks (not at the ends).
    let gone = |b: &scandaq_fpga_sim::opm::BlockTruth| b.lost || b.truncated;
    let first_kept = truth.iter().position(|b| !gone(b)).unwrap();
    let mut want = Vec::new();
    for w in truth[first_kept..].windows(2) {
        if gone(&w[0]) && !gone(&w[1]) {
            want.push(w[1].t_ref_ns);
        }
    }
    assert!(want.len() >= 2, "the seed loses blocks inside the run");
    let got: Vec<i64> = d["meg"]["streams"][0]["gap_times_ns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len(), "gaps {got:?}, truth {want:?}");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 10_000, "gap at {g} ns, truth {w} ns");
    }
    let when = d["summary"]["loss_times"]["meg_missing_samples"]
        .as_str()
        .unwrap();
    assert!(when.starts_with("gaps at "), "{when}");
}

#[test]
fn us_bmode_brightest_points_are_the_simulated_scatterers() {
    let f = us();
    let s = &f.data["us"]["streams"][0];
    assert_eq!(s["events"], rows_of(&f.run, "rf_events-"));
    let peaks = s["bmode"]["peaks"].as_array().expect("a B-mode image");
    let truth = scandaq_fpga_sim::us::echo::default_scatterers();
    let brightest: Vec<(f64, f64)> = peaks
        .iter()
        .take(truth.len())
        .map(|p| (p["x_mm"].as_f64().unwrap(), p["z_mm"].as_f64().unwrap()))
        .collect();
    // A resolution cell: about a wavelength (0.31 mm) axially and lambda x f-number (1.5)
    // laterally; allow one of each plus the pixel pitch.
    for sc in &truth {
        let (x, z) = (sc.x_m * 1e3, sc.z_m * 1e3);
        assert!(
            brightest
                .iter()
                .any(|&(px, pz)| (px - x).abs() <= 0.6 && (pz - z).abs() <= 0.4),
            "no bright point at the scatterer ({x}, {z}) mm: {brightest:?}"
        );
    }
}

#[test]
fn us_report_names_the_frames_whose_transmits_were_lost() {
    // Truncated chunks make whole events incomplete (never stored): their frames must be the
    // ones the report names, and the losses the manifest's.
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let config = UsConfig {
        seed: 12,
        frames: 12,
        paced: false,
        truncate_chunks: 0.001,
        n_elements: 64,
        n_samples: 1024,
        out_dir: Some(sim.clone()),
        ..UsConfig::default()
    };
    let archive = tmp.path().join("us.sdq");
    let dest = Destination::Archive {
        path: archive.clone(),
        metadata_json: us_metadata(&config),
    };
    run_us(&config, dest).unwrap();
    let run = replay(&archive, &tmp.path().join("runs"), &["--no-calib"]);
    let d = report(&run, &tmp.path().join("r.html"));
    let m = Manifest::read(&run).unwrap();
    let losses: Value = serde_json::to_value(m.losses.by_name()).unwrap();
    assert_eq!(d["summary"]["losses"], losses);
    let truth = read_truth(&sim.join(US_TRUTH_FILE)).unwrap();
    let n_tx = config.angles_deg.len();
    // Frames with some but not all transmits stored, from the truth.
    let mut want = std::collections::BTreeSet::new();
    for frame in truth.iter().map(|t| t.frame_no) {
        let complete = truth
            .iter()
            .filter(|t| t.frame_no == frame && t.complete)
            .count();
        if complete > 0 && complete < n_tx {
            want.insert(frame);
        }
    }
    assert!(!want.is_empty(), "the seed truncates some events");
    let s = &d["us"]["streams"][0];
    assert_eq!(s["frames_missing_transmits"], want.len() as u64, "{want:?}");
    let when = d["summary"]["loss_times"]["us_incomplete_events"]
        .as_str()
        .unwrap();
    let first = want.iter().next().unwrap();
    assert!(when.starts_with(&format!("frame {first} at ")), "{when}");
}

/// The B-mode figure's PNG decoded here (8-bit grey, filter type 0 rows; the test refuses
/// anything else): (width, height, pixels row-major from the top).
fn bmode_pixels(page: &str) -> (usize, usize, Vec<u8>) {
    use base64::Engine;
    let fig = &page[page
        .find("data-figure=\"us-bmode-")
        .expect("a B-mode figure")..];
    let start = fig.find("data:image/png;base64,").unwrap() + "data:image/png;base64,".len();
    let end = start + fig[start..].find('"').unwrap();
    let png = base64::engine::general_purpose::STANDARD
        .decode(&fig[start..end])
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let be32 = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
    let (mut width, mut height, mut idat, mut pos) = (0, 0, Vec::new(), 8);
    while pos + 8 <= png.len() {
        let len = be32(&png[pos..]);
        let data = &png[pos + 8..pos + 8 + len];
        match &png[pos + 4..pos + 8] {
            b"IHDR" => {
                (width, height) = (be32(data), be32(&data[4..]));
                assert_eq!((data[8], data[9], data[12]), (8, 0, 0), "8-bit grey");
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        pos += 12 + len;
    }
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat).unwrap();
    assert_eq!(raw.len(), height * (width + 1));
    let mut pixels = Vec::with_capacity(width * height);
    for row in raw.chunks_exact(width + 1) {
        assert_eq!(row[0], 0, "filter type 0");
        pixels.extend_from_slice(&row[1..]);
    }
    (width, height, pixels)
}

#[test]
fn us_bmode_picture_is_bright_at_the_scatterers_and_nowhere_else() {
    let f = us();
    let g = &f.data["us"]["streams"][0]["bmode"];
    let (w, h, px) = bmode_pixels(&std::fs::read_to_string(&f.html).unwrap());
    assert_eq!(
        (w as u64, h as u64),
        (g["nx"].as_u64().unwrap(), g["nz"].as_u64().unwrap())
    );
    let num = |k: &str| g[k].as_f64().unwrap();
    let (x0, dx, z0, dz) = (num("x0_mm"), num("dx_mm"), num("z0_mm"), num("dz_mm"));
    // The brightest pixels of the picture, at least 2 mm apart (a plain greedy search here).
    let mut order: Vec<usize> = (0..px.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(px[i]));
    let mut found: Vec<(f64, f64, u8)> = Vec::new();
    let truth = scandaq_fpga_sim::us::echo::default_scatterers();
    for i in order {
        let (x, z) = (x0 + (i % w) as f64 * dx, z0 + (i / w) as f64 * dz);
        if found
            .iter()
            .all(|&(fx, fz, _)| (fx - x).hypot(fz - z) >= 2.0)
        {
            found.push((x, z, px[i]));
            if found.len() == truth.len() + 1 {
                break;
            }
        }
    }
    for sc in &truth {
        let (x, z) = (sc.x_m * 1e3, sc.z_m * 1e3);
        assert!(
            found[..truth.len()]
                .iter()
                .any(|&(fx, fz, _)| (fx - x).abs() <= 0.6 && (fz - z).abs() <= 0.4),
            "no bright spot at the scatterer ({x}, {z}) mm: {found:?}"
        );
    }
    // Anything else is well below the weakest scatterer's spot (the grey scale spans 50 dB).
    let weakest = found[..truth.len()].iter().map(|f| f.2).min().unwrap();
    let next = found[truth.len()].2;
    assert!(
        f64::from(next) < f64::from(weakest) - 255.0 * 6.0 / 50.0,
        "a spot of {next} where no scatterer is, the weakest scatterer {weakest}: {found:?}"
    );
}

#[test]
fn bad_run_directories_give_one_clear_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r.html");
    let check = |dir: &Path, says: &str| {
        let (code, _, stderr) = scandaq(&[
            "report",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        no_panic(&stderr);
        assert_ne!(code, 0, "{stderr}");
        let line = stderr.trim();
        assert_eq!(line.lines().count(), 1, "{stderr}");
        assert!(line.starts_with("error: "), "{stderr}");
        assert!(line.contains(says), "{stderr} should say {says}");
        assert!(!out.exists(), "no report is written");
    };
    // Not a directory, and a directory without a manifest.
    let missing = tmp.path().join("nothing-here");
    check(
        &missing,
        &format!("{} is not a run directory", missing.display()),
    );
    check(tmp.path(), "has no manifest.json");
    // A copy of the PET run with the delayed table missing, then with the singles cut short.
    let copy = tmp.path().join("run-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(&pet().run).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
    }
    let delayed = copy.join("delayed-00000.parquet");
    std::fs::remove_file(&delayed).unwrap();
    check(
        &copy,
        &format!(
            "{}: the manifest lists this table but it is missing",
            delayed.display()
        ),
    );
    std::fs::copy(pet().run.join("delayed-00000.parquet"), &delayed).unwrap();
    let singles = copy.join("singles-00000.parquet");
    let bytes = std::fs::read(&singles).unwrap();
    std::fs::write(&singles, &bytes[..bytes.len() / 2]).unwrap();
    check(
        &copy,
        &format!("{} is not a readable Parquet table", singles.display()),
    );
}

#[test]
fn out_is_a_directory_or_the_html_file_as_in_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let run = &pet().run;
    let name = run.file_name().unwrap().to_str().unwrap();
    // A missing directory whose parent exists is made; the file is named after the run.
    let logbook = tmp.path().join("logbook");
    let (code, stdout, stderr) = scandaq(&[
        "report",
        run.to_str().unwrap(),
        "--out",
        logbook.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let file = logbook.join(format!("{name}.html"));
    assert!(
        file.is_file() && stdout.contains(file.to_str().unwrap()),
        "{stdout}"
    );
    // A missing parent is refused with the mkdir to run.
    let missing = tmp.path().join("no/such/dir");
    let (code, _, stderr) = scandaq(&[
        "report",
        run.to_str().unwrap(),
        "--out",
        missing.to_str().unwrap(),
    ]);
    no_panic(&stderr);
    assert_ne!(code, 0);
    assert!(stderr.contains("mkdir -p"), "{stderr}");
}

/// Chromium and Playwright for the render check, or why not.
fn browser() -> Result<PathBuf, String> {
    let chromium = PathBuf::from("/usr/bin/chromium");
    if !chromium.is_file() {
        return Err("no /usr/bin/chromium (apt-get install chromium)".into());
    }
    let ok = std::process::Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return Err("python3 cannot import playwright (pip install playwright)".into());
    }
    Ok(chromium)
}

#[test]
fn reports_render_in_headless_chromium_without_errors_and_every_figure_drawn() {
    let chromium = match browser() {
        Ok(c) => c,
        Err(why) => return skip_unless_ci(&why),
    };
    let reports = [&pet().html, &meg().html, &us().html];
    // Artefact: beside the test binary's target directory, kept after the test.
    let shots = Path::new(env!("CARGO_BIN_EXE_scandaq"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("test-artefacts")
        .join("report");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/report/render_report.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&chromium)
        .arg(&shots)
        .args(reports.iter().map(|p| p.as_os_str()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "render check failed:\n{stderr}\n{stdout}"
    );
    let results: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), reports.len(), "{stdout}");
    for (r, html) in results.iter().zip(reports) {
        let page = std::fs::read_to_string(html).unwrap();
        let in_page = page.matches("<figure class=\"fig\"").count();
        assert!(in_page > 0);
        assert_eq!(r["figures"], in_page, "every figure was measured: {r}");
        assert_eq!(r["errors"], Value::Array(vec![]), "{r}");
        let shot = PathBuf::from(r["screenshot"].as_str().unwrap());
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 10_000,
            "{}",
            shot.display()
        );
        println!("screenshot: {}", shot.display());
    }
    // Section by section, what must be there.
    let figures = |r: &Value| -> Vec<String> {
        r["sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let pet_figs = figures(&results[0]);
    for want in [
        "pet-energy-0",
        "pet-dt",
        "pet-map-0",
        "pet-singles-rate",
        "pet-pair-rates",
    ] {
        assert!(pet_figs.iter().any(|f| f == want), "{want} in {pet_figs:?}");
    }
    assert!(
        figures(&results[1])
            .iter()
            .any(|f| f.starts_with("meg-asd"))
    );
    assert!(
        figures(&results[1])
            .iter()
            .any(|f| f.starts_with("meg-triggers"))
    );
    assert!(
        figures(&results[2])
            .iter()
            .any(|f| f.starts_with("us-bmode"))
    );
}

/// A live run over UDP with corrupt packets all along: the manifest records when the
/// `crc_error` counter grew (from the first to the last corrupt packet, spread over the
/// sender's 2 s, not one instant at the end), and the report shows those times.
#[test]
fn a_live_runs_losses_are_timed_in_the_manifest_and_the_report() {
    use std::process::Command;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let addr = free_port_udp().to_string();
    let run = crate::spawn_live_run(&[
        "run",
        "--udp",
        &addr,
        "--no-calib",
        "--duration",
        "60s",
        "--out",
        out.to_str().unwrap(),
    ]);
    let sim = Command::new(fpga_sim_exe())
        .args(["--preset", "bench", "--seed", "3", "--duration", "2s"])
        .args(["--rate", "100k", "--corrupt", "0.05", "--udp", &addr])
        .output();
    let Ok(sim) = sim else {
        run.kill();
        skip_unless_ci("the fpga-sim binary is not built (cargo build -p scandaq-fpga-sim)");
        return;
    };
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    run.wait_success();
    let dir = only_run(&out);
    let m = Manifest::read(&dir).unwrap();
    let corrupt = m.losses.get("crc_error");
    assert!(corrupt > 10, "{:?}", m.losses);
    let timed: Vec<_> = m
        .loss_times
        .iter()
        .filter(|t| t.reason == "crc_error")
        .collect();
    assert_eq!(timed.len(), 1, "{:?}", m.loss_times);
    let t = timed[0];
    assert_eq!(t.count, corrupt);
    assert!(
        t.first_s >= 0.0 && t.last_s - t.first_s > 1.0,
        "corrupt packets arrived over 2 s, recorded from {} s to {} s",
        t.first_s,
        t.last_s
    );
    let data = report(&dir, &tmp.path().join("r.html"));
    let shown = &data["summary"]["loss_run_times"];
    assert_eq!(
        shown.as_array().map(Vec::len),
        Some(m.loss_times.len()),
        "{shown}"
    );
    let page = std::fs::read_to_string(tmp.path().join("r.html")).unwrap();
    let text = format!(
        "{}: {} from {:.1} s to {:.1} s after the start",
        t.place, t.count, t.first_s, t.last_s
    );
    assert!(page.contains(&text), "the report does not say {text:?}");
}
