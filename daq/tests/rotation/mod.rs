//! Singles file rotation: a replay cut into files by size keeps every single, in order, each
//! file committed and listed.

use super::*;

#[test]
fn replay_rotates_singles_files_by_size_without_losing_a_row() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let calib = sim_dir().join("calib");
    let (code, stdout, stderr) = scandaq(&[
        "replay",
        sim_dir().join("bench.rawf").to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
        "--no-coincidences",
        "--rotate-size",
        "8MB",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let dir = out.join("run-000001");
    let m = Manifest::read(&dir).unwrap();
    assert!(m.complete);
    let singles: Vec<_> = m
        .files
        .iter()
        .filter(|f| f.path.starts_with("singles-"))
        .collect();
    assert!(singles.len() >= 3, "{} files", singles.len());
    let mut all_t = Vec::new();
    for (i, f) in singles.iter().enumerate() {
        assert_eq!(f.path, format!("singles-{i:05}.parquet"));
        let (b, kv) = read_parquet(&dir.join(&f.path));
        let t = col_i64(&b, "t_ps");
        assert_eq!(t.len() as u64, f.rows);
        assert_eq!(kv["first_t_ps"], t[0].to_string());
        assert_eq!(kv["last_t_ps"], t[t.len() - 1].to_string());
        all_t.extend(t);
    }
    assert_eq!(all_t.len() as u64, m.counts["singles_written"]);
    assert_eq!(all_t.len(), truth().t.len());
    assert!(all_t.windows(2).all(|w| w[0] <= w[1]));
    assert!(!dir.read_dir().unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".inprogress")
    }));
}

/// `scandaq replay` of the bench simulation into `out` (one pass: singles, prompts, delayed)
/// with `extra` flags; returns the run directory.
fn replay_bench(out: &Path, extra: &[&str]) -> PathBuf {
    let calib = sim_dir().join("calib");
    let mut args = vec![
        "replay".to_string(),
        sim_dir().join("bench.rawf").to_str().unwrap().to_string(),
        "--calib".into(),
        calib.to_str().unwrap().into(),
        "--out".into(),
        out.to_str().unwrap().into(),
        "--no-progress".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = scandaq(&args);
    no_panic(&stderr);
    assert_eq!(code, 0, "{stdout}{stderr}");
    out.join("run-000001")
}

/// The committed files of table `name` the manifest lists, in order (asserting they are
/// numbered 0, 1, 2, ...).
fn listed(m: &Manifest, name: &str) -> Vec<scandaq_sinks::FileRecord> {
    let files: Vec<_> = m
        .files
        .iter()
        .filter(|f| scandaq_sinks::table_file_index(&f.path, name).is_some())
        .cloned()
        .collect();
    for (i, f) in files.iter().enumerate() {
        assert_eq!(f.path, scandaq_sinks::table_file_name(name, i as u32));
    }
    files
}

/// `scandaq export FORMAT RUN --out OUT --tof-fwhm 200ps`: (exit code, stdout, stderr), the
/// stderr checked for panics.
fn export(format: &str, run: &Path, out: &Path) -> (i32, String, String) {
    let (code, stdout, stderr) = scandaq(&[
        "export",
        format,
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--tof-fwhm",
        "200ps",
    ]);
    no_panic(&stderr);
    (code, stdout, stderr)
}

/// [`export`], asserting success; returns stdout.
fn export_ok(format: &str, run: &Path, out: &Path) -> String {
    let (code, stdout, stderr) = export(format, run, out);
    assert_eq!(code, 0, "{stdout}{stderr}");
    stdout
}

/// Rotated at 1 MB, the prompt and delayed tables become sequences of files (the delayed one
/// has too few rows for a second file here; it goes through the same code), each committed,
/// listed in the manifest and stamped with its own t1 range; read in order they hold exactly
/// the rows of the same replay unrotated, and `export castor`, `export petsird` (read back by
/// PETSIRD's reference reader) and `report` of the sequence give what the single file gives.
/// A file missing from the middle of the sequence, or one left `.inprogress`, is refused by
/// the exports, naming it.
#[test]
fn rotated_coincidence_tables_hold_every_pair_and_export_as_one() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = replay_bench(&tmp.path().join("whole"), &[]);
    let rotated = replay_bench(&tmp.path().join("rotated"), &["--rotate-size", "1MB"]);
    let (mw, mr) = (
        Manifest::read(&whole).unwrap(),
        Manifest::read(&rotated).unwrap(),
    );
    assert!(mr.complete);
    assert_eq!(mw.counts, mr.counts, "rotation changes no count");
    for name in ["coincidences", "delayed"] {
        let one = listed(&mw, name);
        assert_eq!(one.len(), 1, "{name}: one file unrotated");
        let files = listed(&mr, name);
        // The bench's ~2 000 delayed pairs are one write (64 Ki rows), so one file; the
        // ~350 000 prompts make several.
        let least = if name == "coincidences" { 3 } else { 1 };
        assert!(files.len() >= least, "{name}: {} files", files.len());
        let (want, _) = read_parquet(&whole.join(&one[0].path));
        let mut got: Vec<RecordBatch> = Vec::new();
        for f in &files {
            let (b, kv) = read_parquet(&rotated.join(&f.path));
            let t1 = col_i64(&b, "t1_ps");
            assert_eq!(t1.len() as u64, f.rows, "{}", f.path);
            assert!(!t1.is_empty(), "{}: an empty file", f.path);
            assert_eq!(kv["first_t_ps"], t1[0].to_string(), "{}", f.path);
            assert_eq!(kv["last_t_ps"], t1[t1.len() - 1].to_string(), "{}", f.path);
            assert_eq!(kv["scandaq.table"], name);
            got.extend(b);
        }
        for column in ["t1_ps", "t2_ps", "tof_ps"] {
            assert_eq!(
                col_i64(&got, column),
                col_i64(&want, column),
                "{name} {column}"
            );
        }
        for column in ["channel1", "channel2"] {
            assert_eq!(
                col_u32(&got, column),
                col_u32(&want, column),
                "{name} {column}"
            );
        }
        for column in ["energy1_kev", "energy2_kev"] {
            assert_eq!(
                col_f32(&got, column),
                col_f32(&want, column),
                "{name} {column}"
            );
        }
        assert_eq!(col_u16(&got, "flags"), col_u16(&want, "flags"), "{name}");
    }

    // The exports of the sequence and of the single file are the same bytes.
    export_ok("castor", &whole, &tmp.path().join("castor-whole"));
    let said = export_ok("castor", &rotated, &tmp.path().join("castor-rotated"));
    assert!(said.contains("prompts:"), "{said}");
    for file in ["run-000001.cdf", "run-000001_delayed.cdf"] {
        let a = std::fs::read(tmp.path().join("castor-whole").join(file)).unwrap();
        let b = std::fs::read(tmp.path().join("castor-rotated").join(file)).unwrap();
        assert!(!a.is_empty());
        assert!(a == b, "{file}: the rotated run's export differs");
    }
    let cdh = std::fs::read_to_string(tmp.path().join("castor-rotated/run-000001.cdh")).unwrap();
    assert!(
        cdh.contains("files)"),
        "the header names the sequence:\n{cdh}"
    );

    // The report reads every file of the sequence.
    let prompts = |run: &Path, html: &str| {
        let data = crate::report::report(run, &tmp.path().join(html));
        (
            data["pet"]["prompts"].clone(),
            data["pet"]["delayed"].clone(),
        )
    };
    let (p, d) = prompts(&rotated, "rotated.html");
    assert_eq!((p.clone(), d.clone()), prompts(&whole, "whole.html"));
    assert_eq!(p.as_u64(), Some(mr.counts["coincidences.prompt.pairs"]));
    assert!(
        p.as_u64().unwrap() > 1000 && d.as_u64().unwrap() > 10,
        "{p} {d}"
    );

    // PETSIRD: the sequence exports to the same bytes as the single file, and PETSIRD's
    // reference reader finds every pair of every file in it.
    let petsird = |run: &Path, file: &str| {
        let path = tmp.path().join(file);
        export_ok("petsird", run, &path);
        path
    };
    let (pw, pr) = (
        petsird(&whole, "whole.petsird"),
        petsird(&rotated, "rotated.petsird"),
    );
    assert!(
        std::fs::read(&pw).unwrap() == std::fs::read(&pr).unwrap(),
        "the rotated run's PETSIRD export differs"
    );
    if !crate::petsird::reader_missing() {
        let v = crate::petsird::check(&rotated, &pr, &[]);
        assert_eq!(
            (v["prompts"].as_u64(), v["delayed"].as_u64()),
            (
                Some(mr.counts["coincidences.prompt.pairs"]),
                Some(mr.counts["coincidences.delayed.pairs"])
            )
        );
    }

    // A leftover `.inprogress` beside its committed file (`recover` leaves one in place,
    // saying so) is not an interrupted table: the export goes ahead.
    let leftover = rotated.join("coincidences-00000.parquet.inprogress");
    std::fs::copy(rotated.join("coincidences-00000.parquet"), &leftover).unwrap();
    export_ok("castor", &rotated, &tmp.path().join("castor-leftover"));
    std::fs::remove_file(&leftover).unwrap();

    // A file missing from the middle: refused, named, nothing written.
    std::fs::remove_file(rotated.join("coincidences-00001.parquet")).unwrap();
    let out = tmp.path().join("castor-gap");
    let (code, stdout, stderr) = export("castor", &rotated, &out);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains("coincidences-00001.parquet is missing"),
        "{stderr}"
    );
    assert!(!out.join("run-000001.cdf").exists());

    // A file of the sequence left `.inprogress` (a killed run): refused, saying to recover.
    let last = listed(&mr, "coincidences").pop().unwrap().path;
    std::fs::rename(
        rotated.join(&last),
        rotated.join(format!("{last}.inprogress")),
    )
    .unwrap();
    let (code, stdout, stderr) = export("petsird", &rotated, &tmp.path().join("gap.petsird"));
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains(&format!("{last}.inprogress")) && stderr.contains("scandaq recover"),
        "{stderr}"
    );
    assert!(!tmp.path().join("gap.petsird").exists());
}
