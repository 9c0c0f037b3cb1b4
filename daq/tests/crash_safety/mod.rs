use super::{col_i64, col_u32, no_panic, read_parquet, scandaq};
use parquet::file::reader::{FileReader, SerializedFileReader};
use scandaq::commands::recover::RecoverySection;
use scandaq_core::Geometry;
use scandaq_sinks::Manifest;
use scandaq_sinks::castor::{CdhHeader, read_cdf, read_lut, record_size, sha256_file};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn rows_of(path: &Path) -> u64 {
    let r = SerializedFileReader::new(std::fs::File::open(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: not readable Parquet: {e}", path.display()));
    r.metadata().file_metadata().num_rows() as u64
}

/// `scandaq export castor DIR --out OUT ARGS...`, asserting success (and no panic); returns
/// stdout.
fn export_castor_ok(dir: &Path, out: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "export",
        "castor",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = scandaq(&all);
    no_panic(&stderr);
    assert_eq!(code, 0, "{stdout}{stderr}");
    stdout
}

/// Every file the manifest lists exists, is no `.inprogress`, reads with the listed rows
/// (and hash, when `check_sha`).
fn check_listed(dir: &Path, m: &Manifest, check_sha: bool) {
    for f in &m.files {
        assert!(!f.path.contains(".inprogress"), "{f:?}");
        let p = dir.join(&f.path);
        assert!(p.is_file(), "listed but missing: {}", p.display());
        if f.path.ends_with(".parquet") {
            assert_eq!(rows_of(&p), f.rows, "{}", f.path);
        }
        if check_sha {
            let (sha, bytes) = sha256_file(&p).unwrap();
            assert_eq!(
                (sha.as_str(), bytes),
                (f.sha256.as_str(), f.bytes),
                "{}",
                f.path
            );
        }
    }
}

/// A silent 10-minute demo at 1 M hits/s into `out`, rotating its tables at `rotate_size`,
/// for a test to kill. Row groups are cut at 0.2 s of age: an open file a kill interrupts
/// holds complete row groups to salvage whatever the machine's load (with 1 s a loaded
/// machine could kill every file before its first row group).
fn spawn_rotating_demo(out: &Path, rotate_size: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args(["demo", "--duration", "600s", "--rate", "1M", "--no-tui"])
        .args([
            "--rotate-size",
            rotate_size,
            "--commit-interval",
            "200ms",
            "--out",
        ])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn recovery(dir: &Path) -> RecoverySection {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    serde_json::from_value(v["recovery"].clone()).unwrap()
}

/// SIGKILL of a demo (1 M hits/s, singles rotated every 16 MB (~2.2 M singles) so the manifest lists
/// committed files while the run goes on) at seeded points of its progress (3.5 M to 6 M
/// singles acquired, read from its control socket). Before recovery: every file the manifest lists reads with its rows and hash,
/// and once 2.5 M singles had reached the sink one interval before the kill, at least one
/// is listed. The open singles file's complete row groups are salvaged (some kills). After: the run is `recovered`, each interrupted file has a note, the
/// singles recovered are at least those acquired one commit interval before the kill
/// (from the control socket's progress), and a second recovery changes nothing.
#[test]
fn sigkill_at_random_points_then_recover() {
    use crate::faults_durable::{Watcher, kill_now, kill_points, wait_for_socket};
    let tmp = tempfile::tempdir().unwrap();
    let mut salvaged_rows = 0u64;
    let mut listed_checked = 0;
    // Kill points in acquired singles (3.5 M to 6 M, thousands drawn at random), not in
    // time: a loaded machine acquires less per second, and a time-based kill could come
    // before the first rotation every time.
    // A last kill at 9 M singles: even on an idle machine (3.6 M singles/s) the singles
    // acquired one second before it are past the first rotation, so the listed-files check
    // always runs at least once (with kills at 3.5-6 M only, a fast run could skip it).
    let mut points = kill_points(0x5eed_cafe, 5, 3500, 6000);
    points.push(9000);
    for (i, target_k) in points.into_iter().enumerate() {
        let out = tmp.path().join(format!("k{i}"));
        let mut child = spawn_rotating_demo(&out, "16MB");
        let dir = wait_for_socket(&out, &mut child);
        let watcher = Watcher::start(dir.join(scandaq::observe::control::SOCKET_NAME));
        crate::wait_for(
            &format!("kill {i}: the run to acquire {target_k} k singles"),
            Duration::from_secs(300),
            || watcher.singles_before(std::time::Instant::now()) >= target_k * 1000,
        );
        let t_kill = kill_now(&mut child);
        let must = watcher.singles_before(t_kill - Duration::from_secs(1));
        watcher.finish();
        let m = Manifest::read(&dir).unwrap();
        assert!(
            !m.complete
                && matches!(
                    m.state,
                    scandaq_core::run_state::RunState::Configured
                        | scandaq_core::run_state::RunState::Running
                ),
            "{m:?}"
        );
        check_listed(&dir, &m, true);
        let listed: u64 = m
            .files
            .iter()
            .filter(|f| f.path.starts_with("singles-"))
            .map(|f| f.rows)
            .sum();
        if must >= 2_500_000 {
            assert!(
                listed > 0,
                "kill {i}: {must} singles and no committed file listed"
            );
            listed_checked += 1;
        }
        let before = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>();

        let (code, stdout, stderr) = scandaq(&["recover", dir.to_str().unwrap()]);
        no_panic(&stderr);
        assert_eq!(code, 0, "kill {i}: {stdout}{stderr}");
        let r = Manifest::read(&dir).unwrap();
        check_listed(&dir, &r, true);
        assert!(!r.complete);
        assert_eq!(r.state.name(), "recovered");
        let rec = recovery(&dir);
        assert_eq!(rec.previous_state, "running");
        for name in &before {
            if let Some(f) = name.strip_suffix(".inprogress") {
                let note = rec
                    .files
                    .iter()
                    .find(|n| n.file.starts_with(f))
                    .unwrap_or_else(|| panic!("no recovery note for {name}: {rec:?}"));
                assert!(!note.note.is_empty());
                if note.action == "salvaged" {
                    if f.starts_with("singles-") {
                        salvaged_rows += note.rows;
                    }
                    assert!(r.files.iter().any(|x| x.path == f && x.rows == note.rows));
                } else {
                    assert_eq!(note.action, "not salvaged", "{note:?}");
                    assert!(note.note.contains("no footer"), "{note:?}");
                }
            }
        }
        let recovered: u64 = r
            .files
            .iter()
            .filter(|f| f.path.starts_with("singles-"))
            .map(|f| f.rows)
            .sum();
        assert!(
            recovered >= must,
            "kill {i} at {target_k} k singles: {recovered} singles recovered, {must} acquired one interval before the kill"
        );
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".inprogress"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // Idempotent.
        let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
        let (code, stdout, _) = scandaq(&["recover", dir.to_str().unwrap()]);
        assert_eq!(code, 0);
        assert!(stdout.contains("already recovered"), "{stdout}");
        assert_eq!(
            std::fs::read_to_string(dir.join("manifest.json")).unwrap(),
            text
        );
        eprintln!(
            "kill {i} at {target_k} k singles: {listed} singles listed before recovery, {recovered} after, {must} acquired one interval before the kill"
        );
    }
    assert!(
        salvaged_rows > 0,
        "no interrupted singles file was salvaged"
    );
    assert!(
        listed_checked >= 1,
        "only {listed_checked} kills came late enough to check the listed files"
    );
}

/// The committed files of table `name` the manifest lists.
fn listed_of<'m>(m: &'m Manifest, name: &str) -> Vec<&'m scandaq_sinks::FileRecord> {
    m.files
        .iter()
        .filter(|f| scandaq_sinks::table_file_index(&f.path, name).is_some())
        .collect()
}

/// SIGKILL of a demo whose tables rotate every 1 MB: the singles sink and the coincidence
/// thread both add files to the manifest on disk while the run goes on. Killed once two prompt
/// files are listed: every listed file (singles, prompts, delayed) reads with its rows and
/// hash; `recover` then leaves no `.inprogress`, and `export castor` reads the recovered
/// prompt sequence whole (as many events as the listed prompt files hold rows).
#[test]
fn sigkill_while_the_coincidence_tables_rotate_then_recover_and_export() {
    use crate::faults_durable::{kill_now, wait_for_socket};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let mut child = spawn_rotating_demo(&out, "1MB");
    let dir = wait_for_socket(&out, &mut child);
    crate::wait_for(
        "two prompt files listed in the manifest",
        Duration::from_secs(300),
        || Manifest::read(&dir).is_ok_and(|m| listed_of(&m, "coincidences").len() >= 2),
    );
    kill_now(&mut child);
    let m = Manifest::read(&dir).unwrap();
    assert!(!m.complete);
    check_listed(&dir, &m, true);
    assert!(listed_of(&m, "singles").len() >= 2, "{:?}", m.files);
    assert!(listed_of(&m, "coincidences").len() >= 2, "{:?}", m.files);

    let (code, stdout, stderr) = scandaq(&["recover", dir.to_str().unwrap()]);
    no_panic(&stderr);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let r = Manifest::read(&dir).unwrap();
    check_listed(&dir, &r, true);
    let prompts = listed_of(&r, "coincidences");
    for (i, f) in prompts.iter().enumerate() {
        assert_eq!(
            f.path,
            scandaq_sinks::table_file_name("coincidences", i as u32)
        );
    }
    assert!(
        !std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".inprogress"))
    );
    let exp = tmp.path().join("castor");
    export_castor_ok(&dir, &exp, &["--tof-fwhm", "200ps"]);
    let h = CdhHeader::read(&exp.join("run-000001.cdh")).unwrap();
    let rows: u64 = prompts.iter().map(|f| f.rows).sum();
    assert_eq!(h.number_of_events, rows);
    assert!(rows > 100_000, "{rows} prompts");
}

/// A committed singles file cut inside its last row group (footer gone) is salvaged to
/// exactly the complete row groups, value for value.
#[test]
fn a_footerless_file_is_salvaged_to_its_complete_row_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let (code, stdout, stderr) = scandaq(&[
        "demo",
        "--duration",
        "3s",
        "--rate",
        "1M",
        "--no-tui",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let dir = out.join("run-000001");
    let singles = dir.join("singles-00000.parquet");
    let (orig, _) = read_parquet(&singles);
    let orig_t = col_i64(&orig, "t_ps");
    let reader = SerializedFileReader::new(std::fs::File::open(&singles).unwrap()).unwrap();
    let groups = reader.metadata().row_groups().to_vec();
    assert!(groups.len() >= 3, "need 3 row groups, got {}", groups.len());
    let start = |g: &parquet::file::metadata::RowGroupMetaData| {
        g.columns()
            .iter()
            .map(|c| c.dictionary_page_offset().unwrap_or(c.data_page_offset()))
            .min()
            .unwrap() as u64
    };
    let keep = groups.len() - 1;
    let cut = start(&groups[keep]) + 1000; // inside the last row group
    let want_rows: i64 = groups[..keep].iter().map(|g| g.num_rows()).sum();
    drop(reader);
    // Make it look like a killed run.
    let bytes = std::fs::read(&singles).unwrap();
    std::fs::write(
        dir.join("singles-00000.parquet.inprogress"),
        &bytes[..cut as usize],
    )
    .unwrap();
    std::fs::remove_file(&singles).unwrap();
    let mut m = Manifest::read(&dir).unwrap();
    m.complete = false;
    m.state = scandaq_core::run_state::RunState::Running;
    m.stop_reason = None;
    m.files.retain(|f| f.path != "singles-00000.parquet");
    m.write_atomic(&dir).unwrap();

    let (code, stdout, stderr) = scandaq(&["recover", dir.to_str().unwrap()]);
    no_panic(&stderr);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let r = Manifest::read(&dir).unwrap();
    assert_eq!(r.state.name(), "recovered");
    check_listed(&dir, &r, true);
    let rec = recovery(&dir);
    let note = rec
        .files
        .iter()
        .find(|n| n.file == "singles-00000.parquet")
        .unwrap();
    assert_eq!(note.action, "salvaged");
    assert_eq!(note.rows, want_rows as u64);
    assert_eq!(note.bytes_lost, cut - start(&groups[keep]));
    let (back, kv) = read_parquet(&singles);
    assert_eq!(col_i64(&back, "t_ps"), orig_t[..want_rows as usize]);
    assert_eq!(
        col_u32(&back, "channel"),
        col_u32(&orig, "channel")[..want_rows as usize]
    );
    assert!(kv.contains_key("scandaq.recovered"));
    assert!(!dir.join("singles-00000.parquet.inprogress").exists());
    assert!(!dir.join("singles-00000.parquet.footerless").exists());
    eprintln!(
        "salvaged {want_rows} of {} rows ({keep} of {} row groups), {} bytes lost",
        orig_t.len(),
        groups.len(),
        note.bytes_lost
    );
}

fn demo_run(out: &Path, duration: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec!["demo", "--duration", duration, "--no-tui", "--out"];
    args.push(out.to_str().unwrap());
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = scandaq(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    out.join("run-000001")
}

#[test]
fn demo_run_exports_to_castor_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = demo_run(&tmp.path().join("runs"), "500ms", &[]);
    let m = Manifest::read(&dir).unwrap();
    let exp = tmp.path().join("castor");
    export_castor_ok(&dir, &exp, &["--tof-fwhm", "200ps"]);
    let geometry = Geometry::parse_map_channel(
        "map",
        &std::fs::read_to_string(dir.join("calib/map_channel.tsv")).unwrap(),
    )
    .unwrap();
    let lut = read_lut(&exp.join("scandaq_run-000001.lut")).unwrap();
    assert_eq!(
        std::fs::metadata(exp.join("scandaq_run-000001.lut"))
            .unwrap()
            .len(),
        24 * geometry.crystals.len() as u64
    );
    let channels: Vec<u32> = geometry.crystals.keys().copied().collect();
    assert_eq!(lut.len(), channels.len());
    for (e, ch) in lut.iter().zip(&channels) {
        assert_eq!(
            e.pos_mm, geometry.crystals[ch].pos_mm,
            "LUT in crystal-id order"
        );
        let n = e.orientation.iter().map(|v| v * v).sum::<f32>();
        assert!((n - 1.0).abs() < 1e-5);
    }
    let hscan = std::fs::read_to_string(exp.join("scandaq_run-000001.hscan")).unwrap();
    assert!(
        hscan.contains(&format!("number of elements: {}\n", lut.len())),
        "{hscan}"
    );

    for (table, base, shift) in [
        ("coincidences-00000.parquet", "run-000001", 0i64),
        ("delayed-00000.parquet", "run-000001_delayed", 100_000),
    ] {
        let h = CdhHeader::read(&exp.join(format!("{base}.cdh"))).unwrap();
        assert_eq!(h.scanner_name, "scandaq_run-000001");
        assert_eq!(h.data_filename, format!("{base}.cdf"));
        let tof = h.tof.expect("TOF on");
        assert_eq!(
            (tof.resolution_ps, tof.measurement_range_ps),
            (200.0, 8000.0)
        );
        let cdf = exp.join(format!("{base}.cdf"));
        let events = read_cdf(&cdf, true).unwrap();
        let (b, _) = read_parquet(&dir.join(table));
        let (t1, tof_ps) = (col_i64(&b, "t1_ps"), col_i64(&b, "tof_ps"));
        let (c1, c2) = (col_u32(&b, "channel1"), col_u32(&b, "channel2"));
        assert_eq!(events.len(), t1.len());
        assert_eq!(h.number_of_events, events.len() as u64);
        assert_eq!(
            std::fs::metadata(&cdf).unwrap().len(),
            events.len() as u64 * record_size(true) as u64
        );
        if shift == 0 {
            assert_eq!(events.len() as u64, m.counts["coincidences.prompt.pairs"]);
        } else {
            assert_eq!(events.len() as u64, m.counts["coincidences.delayed.pairs"]);
        }
        assert!(events.len() > 100, "{} events", events.len());
        let t0 = m.first_t_ps.unwrap();
        for (k, e) in events.iter().enumerate() {
            assert!((e.id1 as usize) < lut.len() && (e.id2 as usize) < lut.len());
            assert_eq!(
                (channels[e.id1 as usize], channels[e.id2 as usize]),
                (c1[k], c2[k])
            );
            assert_eq!(e.tof_ps, Some((tof_ps[k] + shift) as f32));
            assert_eq!(i64::from(e.time_ms), (t1[k] - t0).div_euclid(1_000_000_000));
        }
    }
    // Without TOF: 12-byte records.
    let exp2 = tmp.path().join("castor-notof");
    export_castor_ok(
        &dir,
        &exp2,
        &["--no-tof", "--no-delayed", "--name", "plain"],
    );
    let h = CdhHeader::read(&exp2.join("plain.cdh")).unwrap();
    assert!(h.tof.is_none());
    assert_eq!(
        std::fs::metadata(exp2.join("plain.cdf")).unwrap().len(),
        h.number_of_events * 12
    );
    assert!(!exp2.join("plain_delayed.cdf").exists());
    // No TOF flag: the demo's manifest carries its bench's CTR, written as the TOF resolution.
    let ctr = scandaq_fpga_sim::BenchConfig::default().ctr_fwhm_ps;
    assert_eq!(m.ctr_fwhm_ps, Some(ctr.round() as i64));
    let exp3 = tmp.path().join("castor-manifest-ctr");
    let stdout = export_castor_ok(&dir, &exp3, &["--no-delayed"]);
    assert!(stdout.contains("from its manifest"), "{stdout}");
    let h = CdhHeader::read(&exp3.join("run-000001.cdh")).unwrap();
    assert_eq!(h.tof.expect("TOF from the manifest").resolution_ps, ctr);
}

#[test]
fn export_refuses_petlink_runs_and_runs_without_coincidences() {
    let tmp = tempfile::tempdir().unwrap();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/petlink/small_listmode_file.l");
    assert!(data.is_file(), "missing fixture {}", data.display());
    let out = tmp.path().join("pl");
    let (code, stdout, stderr) = scandaq(&[
        "replay",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let exp = tmp.path().join("castor");
    let (code, _, stderr) = scandaq(&[
        "export",
        "castor",
        out.join("run-000001").to_str().unwrap(),
        "--out",
        exp.to_str().unwrap(),
    ]);
    no_panic(&stderr);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("this run carries sinogram bin addresses (PETLINK), not crystal pairs; CASToR list-mode export needs crystal pairs"),
        "{stderr}"
    );
    assert!(!exp.exists(), "nothing written");

    let dir = demo_run(&tmp.path().join("nc"), "100ms", &["--no-coincidences"]);
    let (code, _, stderr) = scandaq(&[
        "export",
        "castor",
        dir.to_str().unwrap(),
        "--out",
        exp.to_str().unwrap(),
    ]);
    no_panic(&stderr);
    assert_ne!(code, 0);
    assert!(stderr.contains("no coincidence table"), "{stderr}");
    assert!(!exp.exists(), "nothing written");
    let (code, _, stderr) = scandaq(&[
        "export",
        "castor",
        tmp.path().join("nope").to_str().unwrap(),
        "--out",
        exp.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("is not a run directory"), "{stderr}");
    let (code, _, stderr) = scandaq(&["recover", tmp.path().to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("not a scandaq run directory"), "{stderr}");
}
