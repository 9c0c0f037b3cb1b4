//! `scandaq export bids` through the real binary on a simulated OPM-MEG run (3 sensors = 9
//! channels + trigger, 8 s, channel 4 dead, replayed from fpga-sim's archive): the dataset's
//! layout and sidecars against the simulator's truth (the dead channel is the only bad one,
//! the events are the true trigger pulses, the mains frequency and rate are the simulated
//! ones), read back with MNE-BIDS `read_raw_bids` (scripts/check_bids_mne.py: the same samples
//! as the plain FIF export, the same bad channel, events equal to the trigger table) and
//! checked by the official BIDS validator (bids-validator-deno); split parts named as BIDS
//! wants, an existing recording replaced only with --overwrite, and clear refusals that write
//! nothing.

use super::{no_panic, python_has, python_script, read_parquet, scandaq, skip_unless_ci};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt8Type};
use scandaq_fpga_sim::opm::{
    TRUTH_TRIGGERS_FILE, archive_metadata, channel_table, read_trigger_truth, run_opm,
};
use scandaq_fpga_sim::packet_out::Destination;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

// The simulated run: 8 s, 3 sensors, MEG channel 4 dead (the report test's run).
use super::report::meg_config as config;

/// A replayed simulated run and the simulator's truth directory.
struct Fixture {
    tmp: tempfile::TempDir,
    run: PathBuf,
    sim: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("opm.sdq");
    let sim = tmp.path().join("sim");
    let dest = Destination::Archive {
        path: archive.clone(),
        metadata_json: archive_metadata(&config()),
    };
    run_opm(&config(), dest, None, Some(&sim)).unwrap();
    let runs = tmp.path().join("runs");
    let (code, _, stderr) = scandaq(&[
        "replay",
        archive.to_str().unwrap(),
        "--no-calib",
        "--no-progress",
        "--out",
        runs.to_str().unwrap(),
    ]);
    no_panic(&stderr);
    assert_eq!(code, 0, "replay failed: {stderr}");
    Fixture {
        run: runs.join("run-000001"),
        sim,
        tmp,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `scandaq export bids RUN --bids-root ROOT --subject 01 --session 1 --task aef EXTRA...`:
/// (exit code, stdout, stderr).
fn export_bids(run: &Path, root: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "export",
        "bids",
        s(run),
        "--bids-root",
        s(root),
        "--subject",
        "01",
        "--session",
        "1",
        "--task",
        "aef",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = scandaq(&args);
    no_panic(&stderr);
    (code, stdout, stderr)
}

fn exported(run: &Path, root: &Path, extra: &[&str]) -> String {
    let (code, stdout, stderr) = export_bids(run, root, extra);
    assert_eq!(code, 0, "export bids failed: {stderr}");
    stdout
}

/// The rows of a TSV file as maps from column to value.
fn tsv(path: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split('\t'))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The plain FIF export of `run` (the samples BIDS must hold).
fn reference_fif(run: &Path, fif: &Path) {
    let (code, _, stderr) = scandaq(&["export", "fif", s(run), "--out", s(fif)]);
    no_panic(&stderr);
    assert_eq!(code, 0, "export fif failed: {stderr}");
}

/// scripts/check_bids_mne.py (MNE-BIDS): without python3 + mne-bids, fails under CI and says
/// SKIPPED elsewhere.
fn mne_bids_check(root: &Path, run: &Path, fif: &Path, extra: &[&str]) {
    if !python_has("mne, mne_bids, pyarrow") {
        skip_unless_ci(
            "python3 cannot import mne, mne_bids and pyarrow (pip install mne-bids pyarrow): the MNE-BIDS read-back of the BIDS export",
        );
        return;
    }
    let bad = channel_table(&config())[4].name.clone();
    let mut args = vec![s(root), s(run), s(fif), "--subject", "01", "--session", "1"];
    args.extend(["--task", "aef", "--bad", &bad]);
    args.extend_from_slice(extra);
    let text = python_script("check_bids_mne.py", &args);
    assert!(text.contains("all BIDS checks passed"), "{text}");
    eprintln!("{text}");
}

/// The official BIDS validator (PyPI bids-validator-deno) finds no error in `root`.
fn validate(root: &Path) {
    let Ok(out) = Command::new("bids-validator-deno")
        .args(["--format", "json", s(root)])
        .output()
    else {
        skip_unless_ci(
            "bids-validator-deno is not installed (pip install bids-validator-deno): the BIDS validation of the export",
        );
        return;
    };
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the validator's output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let issues = report["issues"]["issues"].as_array().unwrap();
    let errors: Vec<&Value> = issues.iter().filter(|i| i["severity"] == "error").collect();
    assert!(errors.is_empty(), "BIDS validator errors: {errors:#?}");
    eprintln!(
        "bids-validator: no errors, {} warnings (recommended keys scandaq cannot know)",
        issues.len()
    );
}

#[test]
fn bids_export_reads_back_in_mne_bids_with_the_fif_samples_the_dead_channel_bad_and_the_trigger_events()
 {
    let f = fixture();
    let root = f.tmp.path().join("bids");
    let stdout = exported(&f.run, &root, &["--run", "1"]);
    let truth = channel_table(&config());
    let dead = &truth[4].name;
    assert!(stdout.contains(&format!("1 bad ({dead})")), "{stdout}");
    let meg = root.join("sub-01/ses-1/meg");
    let p = |name: &str| meg.join(format!("sub-01_ses-1_task-aef_run-1_{name}"));
    for f in [
        "meg.fif",
        "meg.json",
        "channels.tsv",
        "events.tsv",
        "events.json",
    ] {
        assert!(p(f).is_file(), "{f}");
    }
    for f in [
        "dataset_description.json",
        "participants.tsv",
        "participants.json",
        "README",
        "sub-01/ses-1/sub-01_ses-1_scans.tsv",
        "sub-01/ses-1/meg/sub-01_ses-1_coordsystem.json",
    ] {
        assert!(root.join(f).is_file(), "{f}");
    }
    // channels.tsv: every channel of the table, bad exactly for the simulated dead channel.
    let channels = tsv(&p("channels.tsv"));
    assert_eq!(channels.len(), truth.len());
    for (row, t) in channels.iter().zip(&truth) {
        assert_eq!(row["name"], t.name);
        let want = match (t.kind, &t.name == dead) {
            (scandaq_decoders::meg::ChannelKind::Trigger, _) => ("TRIG", "n/a"),
            (_, true) => ("MEGMAG", "bad"),
            (_, false) => ("MEGMAG", "good"),
        };
        assert_eq!(
            (row["type"].as_str(), row["status"].as_str()),
            want,
            "{row:?}"
        );
    }
    assert!(channels[4]["status_description"].starts_with("flat"));
    // events.tsv: one event per true trigger pulse, with its bitmask, on the triggers
    // table's samples counted from the first block.
    let events = tsv(&p("events.tsv"));
    let pulses = read_trigger_truth(&f.sim.join(TRUTH_TRIGGERS_FILE)).unwrap();
    let values: Vec<String> = events.iter().map(|e| e["value"].clone()).collect();
    let want: Vec<String> = pulses.iter().map(|(_, bits)| bits.to_string()).collect();
    assert_eq!(values, want, "event values are the true pulses' bitmasks");
    let (blocks, _) = read_parquet(&f.run.join("meg_blocks-source0.parquet"));
    let first = blocks[0]
        .column_by_name("first_sample")
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(0);
    let (triggers, _) = read_parquet(&f.run.join("triggers-source0.parquet"));
    let mut rises = Vec::new();
    for b in &triggers {
        let sample = b
            .column_by_name("sample")
            .unwrap()
            .as_primitive::<Int64Type>();
        let bit = b.column_by_name("bit").unwrap().as_primitive::<UInt8Type>();
        let rising = b.column_by_name("rising").unwrap().as_boolean();
        for i in 0..b.num_rows() {
            if rising.value(i) {
                rises.push((sample.value(i) - first, bit.value(i)));
            }
        }
    }
    let sidecar = json(&p("meg.json"));
    let sfreq = sidecar["SamplingFrequency"].as_f64().unwrap();
    assert_eq!(events.len(), rises.len());
    for (e, (sample, bit)) in events.iter().zip(&rises) {
        assert_eq!(e["sample"], sample.to_string());
        assert_eq!(e["trial_type"], format!("bit{bit}"));
        let onset: f64 = e["onset"].parse().unwrap();
        assert!((onset - *sample as f64 / sfreq).abs() < 1e-6, "{e:?}");
        let duration: f64 = e["duration"].parse().unwrap();
        let width = scandaq_fpga_sim::opm::signal::TRIGGER_WIDTH_S;
        assert!((duration - width).abs() < 1.5 / sfreq, "{e:?}");
    }
    // meg.json: the simulated rate (1200.5 Hz + a few ppm), mains, channel counts, duration.
    assert!((sfreq / 1200.5 - 1.0).abs() < 1e-5, "{sfreq}");
    assert_eq!(sidecar["PowerLineFrequency"], config().mains_hz);
    assert_eq!(sidecar["MEGChannelCount"], 9);
    assert_eq!(sidecar["TriggerChannelCount"], 1);
    assert_eq!(sidecar["TaskName"], "aef");
    assert_eq!(sidecar["DewarPosition"], "n/a");
    let duration = sidecar["RecordingDuration"].as_f64().unwrap();
    assert!((duration - config().duration_s).abs() < 0.01, "{duration}");
    let description = json(&root.join("dataset_description.json"));
    assert_eq!(description["DatasetType"], "raw");
    assert_eq!(description["GeneratedBy"][0]["Name"], "scandaq");
    let cs = json(&meg.join("sub-01_ses-1_coordsystem.json"));
    assert_eq!(cs["MEGCoordinateSystem"], "Other");
    let scans = tsv(&root.join("sub-01/ses-1/sub-01_ses-1_scans.tsv"));
    assert_eq!(
        scans[0]["filename"],
        "meg/sub-01_ses-1_task-aef_run-1_meg.fif"
    );
    assert!(scans[0]["acq_time"].starts_with("20"), "{scans:?}");
    let fif = f.tmp.path().join("plain.fif");
    reference_fif(&f.run, &fif);
    mne_bids_check(&root, &f.run, &fif, &["--run", "1"]);
    validate(&root);
}

#[test]
fn bids_export_splits_with_bids_names_and_replaces_a_recording_only_with_overwrite() {
    let f = fixture();
    let root = f.tmp.path().join("bids");
    exported(&f.run, &root, &["--run", "1"]);
    let meg = root.join("sub-01/ses-1/meg");
    let single = meg.join("sub-01_ses-1_task-aef_run-1_meg.fif");
    assert!(single.is_file());
    // The same entities again: refused, nothing touched.
    let before = std::fs::read(&single).unwrap();
    let (code, _, stderr) = export_bids(&f.run, &root, &["--run", "1", "--split-size", "100kB"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("already holds this recording") && stderr.contains("--overwrite"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&single).unwrap(), before);
    // Another run of the same task is another recording: no refusal, both listed. A
    // recording of the task without a run is refused (its sidecars would apply to the runs).
    exported(&f.run, &root, &["--run", "2"]);
    let (code, _, stderr) = export_bids(&f.run, &root, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("give --run"), "{stderr}");
    // A stage left by a killed export is cleared by the next export of the recording.
    let stale = meg.join(".scandaq-sub-01_ses-1_task-aef_run-1.inprogress");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("sub-01_ses-1_task-aef_run-1_meg.fif"), b"half").unwrap();
    let stdout = exported(
        &f.run,
        &root,
        &["--run", "1", "--split-size", "100kB", "--overwrite"],
    );
    assert!(
        stdout.contains("split") && stdout.contains("replaced"),
        "{stdout}"
    );
    assert!(!stale.exists(), "the stale stage is removed");
    assert!(
        !single.exists(),
        "the unsplit file of the earlier export is gone"
    );
    let parts: Vec<PathBuf> = (1..)
        .map(|k| meg.join(format!("sub-01_ses-1_task-aef_run-1_split-{k:02}_meg.fif")))
        .take_while(|p| p.exists())
        .collect();
    assert!(parts.len() >= 3, "{parts:?}");
    let scans = tsv(&root.join("sub-01/ses-1/sub-01_ses-1_scans.tsv"));
    let listed: Vec<&str> = scans.iter().map(|r| r["filename"].as_str()).collect();
    let mut want: Vec<String> = parts
        .iter()
        .map(|p| format!("meg/{}", p.file_name().unwrap().to_str().unwrap()))
        .collect();
    want.push("meg/sub-01_ses-1_task-aef_run-2_meg.fif".into());
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(tsv(&root.join("participants.tsv")).len(), 1);
    let fif = f.tmp.path().join("plain.fif");
    reference_fif(&f.run, &fif);
    mne_bids_check(&root, &f.run, &fif, &["--run", "1", "--split"]);
    mne_bids_check(&root, &f.run, &fif, &["--run", "2"]);
    validate(&root);
}

#[test]
fn bids_export_refuses_bad_labels_paths_runs_without_meg_or_triggers_and_writes_nothing() {
    let f = fixture();
    let root = f.tmp.path().join("bids");
    let fails = |run: &Path, root: &Path, extra: &[&str], needles: &[&str]| {
        let (code, _, stderr) = export_bids(run, root, extra);
        assert_ne!(code, 0, "{extra:?}");
        for n in needles {
            assert!(stderr.contains(n), "{extra:?}: {stderr}");
        }
    };
    // Labels: letters and digits only; runs are indices.
    for (flag, value) in [
        ("--subject", "0_1"),
        ("--task", "a-b"),
        ("--session", "x y"),
    ] {
        let mut args = vec!["export", "bids", s(&f.run), "--bids-root", s(&root)];
        for (name, default) in [("--subject", "01"), ("--session", "1"), ("--task", "aef")] {
            args.extend([name, if name == flag { value } else { default }]);
        }
        let (code, _, stderr) = scandaq(&args);
        assert_ne!(code, 0);
        assert!(
            stderr.contains(flag) && stderr.contains("letters and digits"),
            "{stderr}"
        );
    }
    fails(&f.run, &root, &["--run", "1a"], &["--run", "index"]);
    // Paths: no run directory, a root whose parent is missing, a root that is not BIDS.
    fails(&f.tmp.path().join("nope"), &root, &[], &["not a directory"]);
    fails(
        &f.run,
        &f.tmp.path().join("a/b"),
        &[],
        &["--bids-root", "mkdir -p"],
    );
    let other = f.tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    fails(&f.run, &other, &[], &["not a BIDS dataset"]);
    // A run without an MEG stream (the simulator's truth directory), and one without its
    // trigger table.
    fails(&f.sim, &root, &[], &["no meg_blocks", "OPM-MEG"]);
    let cut = f.tmp.path().join("cut");
    std::fs::create_dir(&cut).unwrap();
    for e in std::fs::read_dir(&f.run).unwrap() {
        let p = e.unwrap().path();
        if p.is_file()
            && !p
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("triggers")
        {
            std::fs::copy(&p, cut.join(p.file_name().unwrap())).unwrap();
        }
    }
    fails(&cut, &root, &[], &["triggers-source0.parquet", "missing"]);
    assert!(!root.exists(), "nothing was written for a refused export");
    // A failure in the middle of the export (a split size too small for one buffer) leaves
    // no recording file and, for a new dataset, no dataset_description.json.
    fails(&f.run, &root, &["--split-size", "1kB"], &["split size"]);
    let meg = root.join("sub-01/ses-1/meg");
    let left: Vec<_> = std::fs::read_dir(&meg)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert!(!root.join("dataset_description.json").exists());
    // ... and the next export of the same recording goes through.
    exported(&f.run, &root, &[]);
}
