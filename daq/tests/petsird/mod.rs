//! `scandaq export petsird`: the file is read back by PETSIRD's reference reader (python3 +
//! `petsird==0.12.0`, through scripts/check_petsird.py), which checks the scanner geometry
//! against the run's crystal map, the prompt and delayed counts per time block against the
//! coincidence tables (pyarrow) and every event's crystals, TOF bin and energy bin against its
//! table row; a truncated file is refused by that reader; runs the export cannot describe are
//! refused with errors naming what to do, leaving no file. Without python3/petsird/pyarrow the
//! read-back tests fail under CI and print `SKIPPED (not under CI)` elsewhere.

use super::{no_panic, python_has, python_script, scandaq, skip_unless_ci};
use std::path::Path;

/// True when python3 cannot import the reference reader, pyarrow and numpy (then, under CI,
/// the test fails here; elsewhere it is reported SKIPPED and the caller returns).
pub(crate) fn reader_missing() -> bool {
    let have = python_has("petsird, pyarrow, numpy");
    if !have {
        skip_unless_ci(
            "python3 cannot import petsird, pyarrow and numpy (pip install petsird==0.12.0 pyarrow): the reference-reader check of the PETSIRD export",
        );
    }
    !have
}

/// Runs the reference-reader check (scripts/check_petsird.py); returns its JSON line (panics
/// with its message).
pub(crate) fn check(run_dir: &Path, file: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![run_dir.as_os_str(), file.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let text = python_script("check_petsird.py", &args);
    let json = text.lines().find(|l| l.trim_start().starts_with('{'));
    serde_json::from_str(
        json.unwrap_or_else(|| panic!("no JSON line:\n{text}"))
            .trim(),
    )
    .unwrap()
}

/// `scandaq export petsird RUN ARGS`; returns stdout (asserting success).
fn export(run_dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["export", "petsird", run_dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = scandaq(&all);
    no_panic(&stderr);
    assert_eq!(code, 0, "{stdout}{stderr}");
    stdout
}

/// A 500 ms demo run (the simulated bench, calibrated, with prompts and delayeds).
#[cfg(feature = "demo")]
fn demo_run(out: &Path) -> std::path::PathBuf {
    let (code, stdout, stderr) = scandaq(&[
        "demo",
        "--duration",
        "500ms",
        "--no-tui",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    out.join("run-000001")
}

/// Rows of a Parquet table (its footer).
fn rows(path: &Path) -> u64 {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let r = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    r.metadata().file_metadata().num_rows() as u64
}

#[cfg(feature = "demo")] // runs `scandaq demo`
#[test]
fn petsird_export_of_a_demo_run_reads_back_with_the_reference_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let run = demo_run(&tmp.path().join("runs"));
    let file = tmp.path().join("demo.petsird");
    let stdout = export(&run, &["--out", file.to_str().unwrap()]);
    let (prompts, delayed) = (
        rows(&run.join("coincidences-00000.parquet")),
        rows(&run.join("delayed-00000.parquet")),
    );
    assert!(
        prompts > 1000 && delayed > 10,
        "{prompts} prompts, {delayed} delayed"
    );
    assert!(
        stdout.contains(&format!(
            "{prompts} prompts, {delayed} delayed in 500 time blocks"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("2 replicated modules"), "{stdout}");
    assert!(!tmp.path().join("demo.petsird.inprogress").exists());
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..9], b"yardl\x01\x00\x00\x00");
    // A directory --out gets RUN.petsird; energy and TOF bins and block length as asked.
    let out_dir = tmp.path().join("exports");
    export(
        &run,
        &[
            "--out",
            out_dir.to_str().unwrap(),
            "--energy-bins",
            "5",
            "--block",
            "10ms",
            "--tof-bin",
            "37ps",
        ],
    );
    let binned = out_dir.join("run-000001.petsird");
    assert!(binned.is_file());

    if reader_missing() {
        return;
    }
    let v = check(&run, &file, &[]);
    eprintln!("reference reader: {v}");
    assert_eq!(v["elements"], 128);
    assert_eq!(v["blocks"], 500);
    assert_eq!(
        (v["prompts"].as_u64(), v["delayed"].as_u64()),
        (Some(prompts), Some(delayed))
    );
    // The run's CTR (200 ps, manifest) in mm, binned by a quarter of it over +-4 ns.
    assert_eq!(v["tof_bins"], 160);
    assert!((v["tof_resolution_mm"].as_f64().unwrap() - 200.0 * 0.149_896_229).abs() < 1e-3);
    let v = check(&run, &binned, &["--block-ms", "10"]);
    assert_eq!(
        (
            v["blocks"].as_u64(),
            v["energy_bins"].as_u64(),
            v["tof_bins"].as_u64()
        ),
        (Some(50), Some(5), Some(217))
    );

    // Truncated anywhere (inside the schema, the header, a block, before the end marker), the
    // reference reader refuses the file.
    for cut in [20, bytes.len() / 3, bytes.len() / 2 + 7, bytes.len() - 1] {
        let t = tmp.path().join(format!("cut-{cut}.petsird"));
        std::fs::write(&t, &bytes[..cut]).unwrap();
        let v = check(&run, &t, &["--expect-refused"]);
        eprintln!("cut at {cut} of {}: {v}", bytes.len());
    }
}

#[test]
fn petsird_export_of_a_ring_replay_has_replicated_modules_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let config = scandaq_fpga_sim::ring::RingConfig {
        seed: 5,
        duration_s: 0.1,
        ..Default::default()
    };
    let (_, run) = super::replay_ring(tmp.path(), config);
    let file = tmp.path().join("ring.petsird");
    let stdout = export(
        &run,
        &["--out", file.to_str().unwrap(), "--tof-fwhm", "250ps"],
    );
    assert!(
        stdout.contains("2048 detecting elements (32 replicated modules)"),
        "{stdout}"
    );
    let flat = tmp.path().join("ring-notof.petsird");
    export(
        &run,
        &["--out", flat.to_str().unwrap(), "--no-tof", "--no-delayed"],
    );
    if reader_missing() {
        return;
    }
    let v = check(&run, &file, &[]);
    eprintln!("reference reader: {v}");
    assert_eq!(v["elements"], 2048);
    assert_eq!(
        v["prompts"].as_u64(),
        Some(rows(&run.join("coincidences-00000.parquet")))
    );
    assert!(v["prompts"].as_u64().unwrap() > 5000, "{v}");
    let v = check(&run, &flat, &[]);
    assert_eq!(
        (v["tof_bins"].as_u64(), v["delayed"].as_u64()),
        (Some(1), Some(0))
    );
}

#[cfg(feature = "demo")]
/// Runs `export petsird` expecting a refusal that mentions every one of `says`, and no file.
fn refused(run_dir: &Path, out: &Path, extra: &[&str], says: &[&str]) {
    let mut args = vec![
        "export",
        "petsird",
        run_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = scandaq(&args);
    no_panic(&stderr);
    assert_ne!(code, 0, "{stdout}{stderr}");
    for s in says {
        assert!(stderr.contains(s), "expected {s:?} in: {stderr}");
    }
    assert!(!out.exists(), "{} written", out.display());
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".inprogress");
    assert!(!Path::new(&tmp).exists(), "{tmp:?} left behind");
}

#[cfg(feature = "demo")]
/// Copies a run directory (files and calib/).
fn copy_run(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("calib")).unwrap();
    for e in std::fs::read_dir(from)
        .unwrap()
        .chain(std::fs::read_dir(from.join("calib")).unwrap())
    {
        let p = e.unwrap().path();
        if p.is_file() {
            let rel = p.strip_prefix(from).unwrap();
            std::fs::copy(&p, to.join(rel)).unwrap();
        }
    }
}

#[cfg(feature = "demo")] // changes copies of a `scandaq demo` run
#[test]
fn petsird_export_refuses_what_it_cannot_describe_and_leaves_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let run = demo_run(&tmp.path().join("runs"));
    let out = tmp.path().join("x.petsird");
    // A copy of the run, changed: what it lacks, and what the refusal must say.
    let cut = |keep: fn(usize) -> usize| {
        move |p: &Path| {
            let b = std::fs::read(p).unwrap();
            std::fs::write(p, &b[..keep(b.len())]).unwrap();
        }
    };
    let remove = |p: &Path| std::fs::remove_file(p).unwrap();
    type Change = Box<dyn Fn(&Path)>;
    let interrupt = |p: &Path| {
        let mut to = p.as_os_str().to_owned();
        to.push(".inprogress");
        std::fs::rename(p, to).unwrap();
    };
    let cases: [(&str, Change, &[&str]); 6] = [
        (
            "coincidences-00000.parquet",
            Box::new(interrupt),
            &[
                "interrupted before its coincidence table was committed",
                "scandaq recover",
            ],
        ),
        (
            "coincidences-00000.parquet",
            Box::new(remove),
            &[
                "no coincidence table",
                "--no-coincidences",
                "map_channel.tsv",
            ],
        ),
        (
            "calib/map_channel.tsv",
            Box::new(remove),
            &[
                "map_channel.tsv",
                "PETSIRD's scanner geometry",
                "copy the map_channel.tsv",
            ],
        ),
        (
            "manifest.json",
            Box::new(remove),
            &["not a scandaq run directory", "manifest.json"],
        ),
        (
            "coincidences-00000.parquet",
            Box::new(cut(|n| n / 2)),
            &[
                "coincidences-00000.parquet",
                "not a readable Parquet file",
                "scandaq recover",
            ],
        ),
        (
            "delayed-00000.parquet",
            Box::new(cut(|n| n - 10)),
            &["delayed-00000.parquet", "not a readable Parquet file"],
        ),
    ];
    for (i, (file, change, says)) in cases.iter().enumerate() {
        let d = tmp.path().join(format!("variant-{i}"));
        copy_run(&run, &d);
        change(&d.join(file));
        refused(&d, &out, &[], says);
    }
    // Output path problems.
    refused(
        &run,
        &tmp.path().join("missing/dir/x.petsird"),
        &[],
        &["does not exist", "create it first"],
    );
    std::fs::create_dir(tmp.path().join("adir.petsird")).unwrap();
    let (code, _, stderr) = scandaq(&[
        "export",
        "petsird",
        run.to_str().unwrap(),
        "--out",
        tmp.path().join("adir.petsird").to_str().unwrap(),
    ]);
    assert!(code != 0 && stderr.contains("is a directory"), "{stderr}");
    refused(&run, &out, &["--block", "1500us"], &["whole milliseconds"]);
    refused(&run.join("nowhere"), &out, &[], &["is not a run directory"]);
    // What is refused on one run exports on the original.
    export(&run, &["--out", out.to_str().unwrap()]);
    assert!(out.is_file());
}
