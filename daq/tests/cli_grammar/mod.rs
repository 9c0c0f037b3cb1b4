//! One grammar for flags and files (docs/cli.md), through the real binary: times with units
//! everywhere (old spellings kept), `MIN:MAX` energy windows, negative values named with the
//! valid range, `--out` the same in every command, stream-only archives and configs, `inspect`
//! on every input kind, index and header errors that say what is wrong, run numbers past
//! 999999, and help that points to sections that exist.

use super::{no_panic, scandaq, skip_unless_ci};
use scandaq_fpga_sim::{BenchConfig, write_bench_files};
use scandaq_sinks::Manifest;
use std::path::{Path, PathBuf};

/// A short bench simulation (`.rawf`, `.idxf`, true tables in `calib/`) in `dir`.
fn small_bench(dir: &Path) -> PathBuf {
    let sim = dir.join("sim");
    write_bench_files(
        BenchConfig {
            seed: 3,
            duration_s: 0.02,
            hit_rate_hz: 1e6,
            ..BenchConfig::default()
        },
        &sim,
    )
    .unwrap();
    sim
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs scandaq, asserts it failed with `needles` in stderr (and no clap "unexpected
/// argument", no panic).
fn fails_saying(args: &[&str], needles: &[&str]) -> String {
    let (code, stdout, stderr) = scandaq(args);
    no_panic(&stderr);
    assert_ne!(code, 0, "{args:?} succeeded: {stdout}");
    assert!(
        !stderr.contains("unexpected argument"),
        "{args:?}: clap's message instead of ours: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: {n:?} not in: {stderr}");
    }
    stderr
}

/// Runs scandaq and asserts success; returns stdout and stderr.
fn succeeds(args: &[&str]) -> (String, String) {
    let (code, stdout, stderr) = scandaq(args);
    no_panic(&stderr);
    assert_eq!(code, 0, "{args:?}: {stdout}\n{stderr}");
    (stdout, stderr)
}

/// The run directory a summary printed (`run N -> DIR`).
fn run_dir_of(stdout: &str) -> PathBuf {
    let line = stdout.lines().find(|l| l.starts_with("run ")).unwrap();
    PathBuf::from(line.split(" -> ").nth(1).unwrap().trim())
}

#[test]
fn negative_values_are_named_with_the_valid_range() {
    let tmp = tempfile::tempdir().unwrap();
    let o = s(tmp.path());
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["calibrate", "tdc", "x.rawf", "--out", o, "--min-hits", "-1"],
            vec!["--min-hits", "-1 is negative", "1 or more"],
        ),
        (
            vec!["replay", "x.rawf", "--out", o, "--window", "-4ns"],
            vec!["--window", "negative", "0 or more"],
        ),
        (
            vec!["replay", "x.rawf", "--out", o, "--max-axial", "-3"],
            vec!["--max-axial", "-3 is negative", "mm, 0 or more"],
        ),
        (
            vec!["run", "--udp", "127.0.0.1:9", "--duration", "-1s"],
            vec!["--duration", "negative", "more than 0"],
        ),
        (
            vec!["run", "--udp", "127.0.0.1:9", "--max-hits", "-5"],
            vec!["--max-hits", "-5 is negative"],
        ),
        (
            vec!["export", "castor", o, "--out", o, "--crystal-depth", "-20"],
            vec!["--crystal-depth", "-20 is negative"],
        ),
        (
            vec!["export", "castor", o, "--out", o, "--tof-fwhm", "-200ps"],
            vec!["--tof-fwhm", "negative"],
        ),
    ];
    for (args, needles) in cases {
        fails_saying(&args, &needles);
    }
}

#[test]
fn a_window_reads_the_same_in_every_unit_and_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = small_bench(tmp.path());
    let rawf = sim.join("bench.rawf");
    let calib = sim.join("calib");
    let out = tmp.path().join("runs");
    let pairs = |window: &str| {
        let (stdout, _) = succeeds(&[
            "replay",
            s(&rawf),
            "--calib",
            s(&calib),
            "--out",
            s(&out),
            "--no-progress",
            "--window",
            window,
        ]);
        Manifest::read(&run_dir_of(&stdout)).unwrap().counts["coincidences.prompt.pairs"]
    };
    let ns = pairs("10ns");
    assert!(ns > 0, "no coincidences in the bench simulation");
    assert_eq!(pairs("10000ps"), ns);
    assert_eq!(pairs("0.01us"), ns);
    assert_ne!(pairs("1ns"), ns, "the window must change the pairs");
    // A plain number is no time: the unit is asked for.
    fails_saying(
        &["replay", s(&rawf), "--calib", s(&calib), "--window", "10"],
        &["give a unit", "10ns"],
    );
}

#[test]
fn old_ps_and_ns_flags_still_work() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = small_bench(tmp.path());
    let rawf = sim.join("bench.rawf");
    let calib = sim.join("calib");
    let skew = |extra: &[&str]| {
        let out = tempfile::tempdir_in(tmp.path()).unwrap();
        let mut args = vec![
            "calibrate",
            "skew",
            s(&rawf),
            "--tdc",
            s(&calib),
            "--energy",
            s(&calib),
            "--geometry",
            s(&calib),
            "--source",
            "0,0,0",
            "--out",
            s(out.path()),
            "--min-coincidences",
            "1",
        ];
        args.extend_from_slice(extra);
        scandaq(&args)
    };
    // The method line of the report names the window in ps: the same for both spellings.
    for spelling in [&["--window", "7ns"][..], &["--window-ps", "7000"][..]] {
        let (code, stdout, stderr) = skew(spelling);
        no_panic(&stderr);
        assert_eq!(code, 0, "{spelling:?}: {stdout}\n{stderr}");
        assert!(stdout.contains("window 7000 ps"), "{spelling:?}: {stdout}");
    }
    let (code, _, stderr) = skew(&["--window", "7ns", "--window-ps", "7000"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    // Hidden from the help, which shows the new spelling.
    let (_, help, _) = scandaq(&["calibrate", "skew", "--help"]);
    assert!(
        help.contains("--window <DURATION>") && !help.contains("--window-ps"),
        "{help}"
    );
    let (_, help, _) = scandaq(&["calibrate", "energy", "--help"]);
    assert!(
        help.contains("--min-tot <DURATION>") && !help.contains("--min-tot-ns"),
        "{help}"
    );
    for spelling in [&["--min-tot", "20ns"][..], &["--min-tot-ns", "20"][..]] {
        let out = tempfile::tempdir_in(tmp.path()).unwrap();
        let mut args = vec![
            "calibrate",
            "energy",
            s(&rawf),
            "--tdc",
            s(&calib),
            "--out",
            s(out.path()),
            "--min-hits",
            "1",
        ];
        args.extend_from_slice(spelling);
        let (code, stdout, stderr) = scandaq(&args);
        no_panic(&stderr);
        assert_eq!(code, 0, "{spelling:?}: {stdout}\n{stderr}");
        assert!(out.path().join("energy_calibration.tsv").is_file());
    }
}

#[test]
fn energy_windows_are_min_colon_max_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = small_bench(tmp.path());
    let rawf = sim.join("bench.rawf");
    let calib = sim.join("calib");
    let out = tmp.path().join("runs");
    let replay = |window: &str| {
        scandaq(&[
            "replay",
            s(&rawf),
            "--calib",
            s(&calib),
            "--out",
            s(&out),
            "--no-progress",
            "--energy-window",
            window,
        ])
    };
    let outside = |stdout: &str| Manifest::read(&run_dir_of(stdout)).unwrap().counts["coincidences.prompt.outside_energy_window"];
    let (code, plain, stderr) = replay("400:650");
    assert_eq!(code, 0, "{stderr}");
    let (code, with_unit, stderr) = replay("400:650keV");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(outside(&plain), outside(&with_unit));
    // The old comma form is read, with a note giving the new one.
    let (code, comma, stderr) = replay("400,650");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(outside(&comma), outside(&plain));
    assert!(
        stderr.contains("comma form is deprecated") && stderr.contains("--energy-window 400:650"),
        "{stderr}"
    );
    fails_saying(
        &[
            "replay",
            s(&rawf),
            "--calib",
            s(&calib),
            "--energy-window",
            "650:400",
        ],
        &["MIN must be below MAX"],
    );
    fails_saying(
        &[
            "replay",
            s(&rawf),
            "--calib",
            s(&calib),
            "--energy-window",
            "-5:650",
        ],
        &["negative"],
    );
    // calibrate skew: the same grammar, the comma form noted.
    let skew_out = tmp.path().join("cal");
    let (code, stdout, stderr) = scandaq(&[
        "calibrate",
        "skew",
        s(&rawf),
        "--tdc",
        s(&calib),
        "--energy",
        s(&calib),
        "--geometry",
        s(&calib),
        "--source",
        "0,0,0",
        "--out",
        s(&skew_out),
        "--min-coincidences",
        "1",
        "--energy-window",
        "425,600",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("energy 425-600 keV"), "{stdout}");
    assert!(stderr.contains("--energy-window 425:600"), "{stderr}");
}

#[test]
fn out_is_a_directory_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = small_bench(tmp.path());
    let rawf = sim.join("bench.rawf");
    let calib = sim.join("calib");
    let missing = tmp.path().join("no/such/dir");
    let file = sim.join("bench.idxf");
    for out in [&missing, &file] {
        let needle = if out == &missing {
            "mkdir -p"
        } else {
            "not a directory"
        };
        fails_saying(
            &["replay", s(&rawf), "--calib", s(&calib), "--out", s(out)],
            &[needle],
        );
        fails_saying(&["calibrate", "tdc", s(&rawf), "--out", s(out)], &[needle]);
    }
    // A missing directory whose parent exists is made; replay's default is scandaq-runs.
    let made = tmp.path().join("cal");
    succeeds(&[
        "calibrate",
        "tdc",
        s(&rawf),
        "--out",
        s(&made),
        "--min-hits",
        "1",
    ]);
    assert!(made.join("tdc_calibration.tsv").is_file());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .current_dir(tmp.path())
        .args(["replay", s(&rawf), "--calib", s(&calib), "--no-progress"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tmp.path()
            .join("scandaq-runs/run-000001/manifest.json")
            .is_file()
    );
}

#[test]
fn run_numbers_past_999999_keep_counting() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = small_bench(tmp.path());
    let out = tmp.path().join("runs");
    std::fs::create_dir_all(out.join("run-999999")).unwrap();
    let (stdout, _) = succeeds(&[
        "replay",
        s(&sim.join("bench.rawf")),
        "--calib",
        s(&sim.join("calib")),
        "--out",
        s(&out),
        "--no-progress",
    ]);
    assert!(stdout.starts_with("run 1000000 -> "), "{stdout}");
    assert!(run_dir_of(&stdout).ends_with("run-x1000000"));
    assert_eq!(Manifest::read(&run_dir_of(&stdout)).unwrap().run, 1_000_000);
    // A plain `ls` (byte order) lists the runs in number order across the boundary.
    let ls = std::process::Command::new("ls")
        .arg(&out)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let listed: Vec<String> = String::from_utf8_lossy(&ls.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(listed, ["run-999999", "run-x1000000"]);
    // `top` and `ctl` attach to the newest live run, run-x1000000, and also pick by number
    // a seven-digit run an older scandaq named without the width mark.
    use scandaq::observe::control::{SOCKET_NAME, find_socket};
    std::fs::create_dir(out.join("run-1000001")).unwrap();
    let _listeners: Vec<_> = ["run-999999", "run-x1000000", "run-1000001"]
        .iter()
        .map(|r| std::os::unix::net::UnixListener::bind(out.join(r).join(SOCKET_NAME)).unwrap())
        .collect();
    let newest = find_socket(None, std::slice::from_ref(&out)).unwrap();
    assert_eq!(newest, out.join("run-1000001").join(SOCKET_NAME));
}

#[test]
fn a_corrupt_index_is_named_with_the_way_on() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = small_bench(tmp.path());
    let rawf = sim.join("bench.rawf");
    let calib = sim.join("calib");
    let out = tmp.path().join("runs");
    for corrupt in [&b"12 not an index\n"[..], &[0xff, 0xfe, 0x00][..]] {
        std::fs::write(sim.join("bench.idxf"), corrupt).unwrap();
        fails_saying(
            &["replay", s(&rawf), "--calib", s(&calib), "--out", s(&out)],
            &["bench.idxf is corrupt", "--no-index"],
        );
    }
    let (stdout, _) = succeeds(&[
        "replay",
        s(&rawf),
        "--calib",
        s(&calib),
        "--out",
        s(&out),
        "--no-progress",
        "--no-index",
    ]);
    assert!(stdout.contains("--no-index"), "{stdout}");
    assert!(Manifest::read(&run_dir_of(&stdout)).unwrap().complete);
}

/// An OPM-MEG raw archive as `fpga-sim --preset opm --archive` writes it, with its channel
/// table in `dir`.
fn opm_archive(dir: &Path) -> PathBuf {
    use scandaq_fpga_sim::opm::{OpmConfig, archive_metadata, run_opm};
    use scandaq_fpga_sim::packet_out::Destination;
    let config = OpmConfig {
        seed: 2,
        duration_s: 1.0,
        sensors: 2,
        ..OpmConfig::default()
    };
    let path = dir.join("opm.sdq");
    run_opm(
        &config,
        Destination::Archive {
            path: path.clone(),
            metadata_json: archive_metadata(&config),
        },
        None,
        Some(dir),
    )
    .unwrap();
    path
}

#[test]
fn a_stream_only_archive_replays_without_no_calib_or_pet_notes() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = opm_archive(tmp.path());
    let out = tmp.path().join("runs");
    let (stdout, stderr) = succeeds(&["replay", s(&archive), "--out", s(&out)]);
    let dir = run_dir_of(&stdout);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("meg_blocks")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("singles")), "{names:?}");
    let all = format!("{stdout}{stderr}");
    for pet in [
        "ToT",
        "PET calibration",
        "crystal map",
        "photopeak",
        "singles",
    ] {
        assert!(!all.contains(pet), "a PET note ({pet}) in: {all}");
    }
    let m = Manifest::read(&dir).unwrap();
    assert!(m.complete && !m.files.iter().any(|f| f.path.starts_with("singles")));
    // `--no-calib` is still accepted, and says nothing more.
    let (stdout, _) = succeeds(&["replay", s(&archive), "--no-calib", "--out", s(&out)]);
    assert!(!stdout.contains("PET calibration"), "{stdout}");
    // A MEG run exports to a FIF named after the run inside the --out directory.
    let fif_dir = tmp.path().join("fif");
    succeeds(&["export", "fif", s(&dir), "--out", s(&fif_dir)]);
    assert!(fif_dir.join("run-000001.fif").is_file());
}

#[test]
fn config_check_accepts_the_readme_stream_only_config() {
    let tmp = tempfile::tempdir().unwrap();
    opm_archive(tmp.path());
    // The README's meg.toml: a [meg] section only (inputs and --no-calib on the command line).
    let toml = tmp.path().join("meg.toml");
    let table = tmp.path().join("opm_channels.tsv");
    assert!(table.is_file());
    std::fs::write(
        &toml,
        format!("[meg]\nchannel_table = {:?}\n", table.to_str().unwrap()),
    )
    .unwrap();
    let (stdout, _) = succeeds(&["config", "check", s(&toml)]);
    assert!(stdout.contains(": ok"), "{stdout}");
    assert!(
        stdout.contains("no [[input]]") && stdout.contains("--udp"),
        "{stdout}"
    );
    assert!(stdout.contains("--no-calib"), "{stdout}");
    assert!(stdout.contains("MEG channel table"), "{stdout}");
    // A real mistake is still one.
    std::fs::write(&toml, "[meg]\nchannel_table = \"/no/such.tsv\"\n").unwrap();
    let (code, _, stderr) = scandaq(&["config", "check", s(&toml)]);
    assert_ne!(code, 0);
    assert!(stderr.contains("/no/such.tsv"), "{stderr}");
}

#[test]
fn inspect_reads_archives_and_petlink_files_and_knows_a_directory_is_no_run() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = opm_archive(tmp.path());
    let (stdout, _) = succeeds(&["inspect", s(&archive)]);
    assert!(stdout.contains("scandaq raw archive (.sdq)"), "{stdout}");
    assert!(!stdout.contains("PETsys .rawf"), "{stdout}");
    assert!(
        stdout.contains("recorded by fpga-sim --preset opm"),
        "{stdout}"
    );
    assert!(
        stdout.contains("packets of OPM-MEG sample blocks"),
        "{stdout}"
    );
    assert!(stdout.contains("holds PET data: no"), "{stdout}");
    fails_saying(
        &["inspect", s(tmp.path())],
        &["not a scandaq run (no manifest.json)"],
    );
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/petlink/small_listmode_file.l");
    if !data.is_file() {
        skip_unless_ci("the PETLINK sample ../shared/data/petlink/ is missing");
        return;
    }
    // The counts are the ones the decoder test of the same file asserts
    // (petlink::replay_of_the_real_mmr_file_matches_the_decoder).
    let (stdout, _) = succeeds(&["inspect", s(&data)]);
    assert!(stdout.contains("PETLINK 32-bit list mode"), "{stdout}");
    assert!(stdout.contains("PET_ACQ_small.l.hdr.STIR"), "{stdout}");
    assert!(stdout.contains("words 254816"), "{stdout}");
    assert!(
        stdout.contains("prompts 218881  delayeds 35320"),
        "{stdout}"
    );
    assert!(stdout.contains("duration 0.612 s"), "{stdout}");
}

#[cfg(feature = "demo")]
#[test]
fn a_demo_longer_than_the_simulators_hour_is_refused_saying_so() {
    fails_saying(
        &["demo", "--duration", "2h", "--no-tui"],
        &["--duration", "limit of 3600 s", "1h or less"],
    );
}

/// `docs/NAME.md "Section title"` references in `help`: each names a heading that exists.
fn referenced_sections_exist(help: &str) -> usize {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut found = 0;
    for (i, _) in help.match_indices("docs/") {
        let rest = &help[i + 5..];
        let Some((file, after)) = rest.split_once(".md") else {
            continue;
        };
        let text = std::fs::read_to_string(docs.join(format!("{file}.md")))
            .unwrap_or_else(|_| panic!("help names docs/{file}.md, which does not exist"));
        if let Some(title) = after.strip_prefix(" \"").and_then(|t| t.split('"').next()) {
            let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                text.lines()
                    .any(|l| l.starts_with('#') && l.contains(&title)),
                "help points to docs/{file}.md \"{title}\", a section that does not exist"
            );
            found += 1;
        }
    }
    found
}

#[test]
fn help_points_to_sections_that_exist() {
    let sim = Path::new(env!("CARGO_BIN_EXE_scandaq")).with_file_name("fpga-sim");
    if !sim.is_file() {
        skip_unless_ci("fpga-sim is not built (cargo build -p scandaq-fpga-sim)");
        return;
    }
    let help = std::process::Command::new(&sim)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(help.contains("--axial-acceptance"), "{help}");
    assert!(
        referenced_sections_exist(&help) >= 1,
        "fpga-sim --help names no docs section: {help}"
    );
    for cmd in [
        &["replay", "--help"][..],
        &["run", "--help"],
        &["calibrate", "skew", "--help"],
        &["demo", "--help"],
    ] {
        let (_, help, _) = scandaq(cmd);
        referenced_sections_exist(&help);
    }
}

#[test]
fn fpga_sim_reads_the_same_time_grammar() {
    let sim = Path::new(env!("CARGO_BIN_EXE_scandaq")).with_file_name("fpga-sim");
    if !sim.is_file() {
        skip_unless_ci("fpga-sim is not built (cargo build -p scandaq-fpga-sim)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ring = |flag: &str, value: &str, dir: &str| {
        std::process::Command::new(&sim)
            .args([
                "--preset",
                "ring",
                "--duration",
                "1ms",
                flag,
                value,
                "--out",
            ])
            .arg(tmp.path().join(dir))
            .output()
            .unwrap()
    };
    // --ctr takes a unit; the old --ctr-ps a plain number of ps: the same resolution.
    for (flag, value, dir) in [("--ctr", "150ps", "new"), ("--ctr-ps", "150", "old")] {
        let out = ring(flag, value, dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary = std::fs::read_to_string(tmp.path().join(dir).join("summary.json")).unwrap();
        assert!(
            summary.contains("\"ctr_fwhm_ps\": 150.0"),
            "{flag}: {summary}"
        );
    }
    let out = ring("--ctr", "-5ps", "neg");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("negative") && !stderr.contains("unexpected argument"),
        "{stderr}"
    );
}

#[test]
fn an_archive_recorded_without_pet_calibration_replays_without_flags() {
    use scandaq_decoders::archive::{ARCHIVE_HEADER_LEN, encode_header, parse_header};
    let tmp = tempfile::tempdir().unwrap();
    let opm = std::fs::read(opm_archive(tmp.path())).unwrap();
    let meta_len = parse_header(&opm).unwrap() as usize;
    let stored: serde_json::Value =
        serde_json::from_slice(&opm[ARCHIVE_HEADER_LEN..ARCHIVE_HEADER_LEN + meta_len]).unwrap();
    let packets = &opm[ARCHIVE_HEADER_LEN + meta_len..];
    // The same packets as `scandaq run --raw-archive` records them: the run's calibration
    // checksum instead of fpga-sim's source line.
    let recorded = |checksum: &str, name: &str| {
        let meta = serde_json::json!({
            "run": 7,
            "inputs": ["udp 127.0.0.1:5600"],
            "calibration_checksum": checksum,
            "streams": stored["streams"],
        })
        .to_string();
        let mut bytes = encode_header(meta.len() as u32).to_vec();
        bytes.extend_from_slice(meta.as_bytes());
        bytes.extend_from_slice(packets);
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let none = scandaq::process::calib_load::LoadedCalibration::none()
        .calibration
        .checksum;
    let out = tmp.path().join("runs");
    let (stdout, _) = succeeds(&[
        "replay",
        s(&recorded(&none, "streams.sdq")),
        "--out",
        s(&out),
    ]);
    assert!(Manifest::read(&run_dir_of(&stdout)).unwrap().complete);
    // Recorded with a PET calibration: the replay asks for one.
    fails_saying(
        &[
            "replay",
            s(&recorded("0123abcd", "pet.sdq")),
            "--out",
            s(&out),
        ],
        &["--calib DIR", "--petsys-config", "--no-calib"],
    );
}
