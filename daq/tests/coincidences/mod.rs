//! Coincidences written by a run equal the library sorter applied to the run's own singles
//! (the stage's streaming, threading and flags change nothing), and the counts add up.

use super::*;
use scandaq_core::Geometry;
use scandaq_core::coincidence::{
    CoincidenceBatch, CoincidenceConfig, CrystalLut, Policy, SinglesRef, WindowMode, coinc_flags,
    sort_coincidences,
};

fn table(dir: &Path, name: &str) -> Vec<RecordBatch> {
    read_parquet(&dir.join(name)).0
}

fn check_run(dir: &Path, config: &CoincidenceConfig) -> (usize, usize) {
    let (singles, _, manifest) = run_files(dir);
    let geometry = Geometry::parse_map_channel(
        "map_channel.tsv",
        &std::fs::read_to_string(dir.join("calib/map_channel.tsv")).unwrap(),
    )
    .unwrap();
    let lut = CrystalLut::from_geometry(&geometry);
    let t = col_i64(&singles, "t_ps");
    let ch = col_u32(&singles, "channel");
    let e = col_f32(&singles, "energy_kev");
    let f = col_u16(&singles, "flags");
    let input = SinglesRef {
        t_ps: &t,
        channel: &ch,
        energy_kev: &e,
        flags: &f,
    };
    let mut sizes = vec![];
    for (cfg, file, key) in [
        (config.clone(), "coincidences-00000.parquet", "prompt"),
        (
            config.to_delayed(100_000),
            "delayed-00000.parquet",
            "delayed",
        ),
    ] {
        let mut expected = CoincidenceBatch::default();
        let stats = sort_coincidences(&cfg, &lut, input, &mut expected).unwrap();
        let got = table(dir, file);
        assert_eq!(col_i64(&got, "t1_ps"), expected.t1_ps, "{file}");
        assert_eq!(col_i64(&got, "t2_ps"), expected.t2_ps, "{file}");
        assert_eq!(col_u32(&got, "channel1"), expected.channel1, "{file}");
        assert_eq!(col_u32(&got, "channel2"), expected.channel2, "{file}");
        assert_eq!(col_f32(&got, "energy1_kev"), expected.energy1_kev, "{file}");
        assert_eq!(col_u16(&got, "flags"), expected.flags, "{file}");
        let tof = col_i64(&got, "tof_ps");
        let t1 = col_i64(&got, "t1_ps");
        let t2 = col_i64(&got, "t2_ps");
        assert!(
            tof.iter()
                .zip(t1.iter().zip(&t2))
                .all(|(d, (a, b))| *d == a - b)
        );
        assert_eq!(
            manifest.counts[&format!("coincidences.{key}.pairs")],
            expected.len() as u64
        );
        assert_eq!(
            manifest.counts[&format!("coincidences.{key}.singles_in")],
            stats.singles_in
        );
        let record = manifest.files.iter().find(|r| r.path == file).unwrap();
        assert_eq!(record.rows, expected.len() as u64);
        sizes.push(expected.len());
    }
    let delayed = table(dir, "delayed-00000.parquet");
    assert!(
        col_u16(&delayed, "flags")
            .iter()
            .all(|f| f & coinc_flags::DELAYED != 0)
    );
    (sizes[0], sizes[1])
}

#[cfg(feature = "demo")]
#[test]
fn demo_coincidences_equal_the_library_on_the_same_singles() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let (code, stdout, stderr) = scandaq(&[
        "demo",
        "--duration",
        "1s",
        "--rate",
        "2M",
        "--out",
        out.to_str().unwrap(),
        "--no-tui",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("coincidences:"), "{stdout}");
    let cfg = CoincidenceConfig {
        energy_window_kev: Some([400.0, 650.0]),
        ..CoincidenceConfig::prompt(4_000)
    };
    let (prompts, delayed) = check_run(&out.join("run-000001"), &cfg);
    // A Na-22 bench at 2 M hits/s: many trues, a few randoms in the delayed window.
    assert!(prompts > 10_000, "{prompts}");
    assert!(
        delayed > 0 && delayed < prompts / 10,
        "{delayed} vs {prompts}"
    );
}

#[test]
fn replay_flags_reach_the_sorter() {
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
        "--window",
        "10ns",
        "--energy-window",
        "300:700",
        "--multiples",
        "takeWinnerOfGoods",
        "--single-window",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let cfg = CoincidenceConfig {
        energy_window_kev: Some([300.0, 700.0]),
        policy: Policy::TakeWinnerOfGoods,
        mode: WindowMode::SingleWindow,
        ..CoincidenceConfig::prompt(10_000)
    };
    let (prompts, _) = check_run(&out.join("run-000001"), &cfg);
    assert!(prompts > 0);
}

fn col_u64(batches: &[RecordBatch], name: &str) -> Vec<u64> {
    use arrow_array::types::UInt64Type;
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<UInt64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn col_u8(batches: &[RecordBatch], name: &str) -> Vec<u8> {
    use arrow_array::types::UInt8Type;
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<UInt8Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn col_str(batches: &[RecordBatch], name: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name(name).unwrap().as_string::<i32>();
            (0..arrow_array::Array::len(a))
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Full ring with a centred point source at 3 M hits/s: every true coincidence inside the
/// windows is found (takeAllGoods), and the delayed window's count matches the true randoms
/// among the prompts within statistics.
#[test]
fn ring_prompts_find_the_true_coincidences_and_delayeds_estimate_the_randoms() {
    use scandaq_fpga_sim::ring::RingConfig;
    let tmp = tempfile::tempdir().unwrap();
    let config = RingConfig {
        seed: 11,
        duration_s: 0.25,
        ..RingConfig::default()
    };
    let (sim, dir) = super::replay_ring(tmp.path(), config);
    let (singles, _, manifest) = run_files(&dir);
    assert!(manifest.losses.is_empty(), "{:?}", manifest.losses);
    let (truth, _) = read_parquet(&sim.join("truth.parquet"));
    let t_true = col_i64(&truth, "t_true_ps");
    let ch_true = col_u32(&truth, "channel");
    let decay = col_u64(&truth, "decay_id");
    let photon = col_u8(&truth, "photon_id");
    let kind = col_str(&truth, "kind");
    let t = col_i64(&singles, "t_ps");
    let ch = col_u32(&singles, "channel");
    let e = col_f32(&singles, "energy_kev");
    // Single index -> truth index.
    let mut truth_of = vec![usize::MAX; t.len()];
    for (ti, si) in pair_by_channel(&t_true, &ch_true, &t, &ch) {
        truth_of[si] = ti;
    }
    let index: std::collections::HashMap<(i64, u32), usize> = t
        .iter()
        .zip(&ch)
        .enumerate()
        .map(|(i, (&a, &b))| ((a, b), i))
        .collect();
    let in_window = |i: usize| (400.0..=650.0).contains(&e[i]);

    // Expected trues: both annihilation photons of a decay seen as photopeak singles inside
    // the energy window, on different crystals, within the 4 ns window of each other.
    let mut by_decay: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, &ti) in truth_of.iter().enumerate() {
        if kind[ti] == "true" && (photon[ti] == 1 || photon[ti] == 2) && in_window(i) {
            by_decay.entry(decay[ti]).or_default().push(i);
        }
    }
    let mut expected = std::collections::BTreeSet::new();
    for members in by_decay.values() {
        if let [a, b] = members[..] {
            let (a, b) = if (t[a], a) <= (t[b], b) {
                (a, b)
            } else {
                (b, a)
            };
            if ch[a] != ch[b] && t[b] - t[a] <= 4_000 {
                expected.insert((a, b));
            }
        }
    }
    assert!(expected.len() > 10_000, "{} trues", expected.len());

    let prompts = table(&dir, "coincidences-00000.parquet");
    let (t1, c1) = (col_i64(&prompts, "t1_ps"), col_u32(&prompts, "channel1"));
    let (t2, c2) = (col_i64(&prompts, "t2_ps"), col_u32(&prompts, "channel2"));
    let mut found = 0usize;
    let mut found_set = std::collections::BTreeSet::new();
    let mut randoms = 0u64;
    for k in 0..t1.len() {
        let a = index[&(t1[k], c1[k])];
        let b = index[&(t2[k], c2[k])];
        if expected.contains(&(a, b)) {
            found += 1;
            found_set.insert((a, b));
        }
        if decay[truth_of[a]] != decay[truth_of[b]] {
            randoms += 1;
        }
    }
    let fraction = found as f64 / expected.len() as f64;
    // Every one, not 99 %: the replay sorts with `takeAllGoods` and no good-pair
    // criteria, which keeps every pair of a window (docs/coincidences.md, rules 6-7), and
    // the expected set is exactly the pairs those rules admit (same energy window, other
    // crystal, closed 4 ns window).
    let missing: Vec<_> = expected.difference(&found_set).collect();
    assert!(
        missing.is_empty(),
        "found {found} of {} trues; missing (single index pairs, first 20): {:?}",
        expected.len(),
        &missing[..missing.len().min(20)]
    );
    let delayed = table(&dir, "delayed-00000.parquet")
        .iter()
        .map(|b| b.num_rows())
        .sum::<usize>() as f64;
    let sigma = (randoms as f64 + delayed).sqrt();
    assert!(
        randoms > 100,
        "randoms {randoms}: the ring should have some at 3 M hits/s"
    );
    assert!(
        (delayed - randoms as f64).abs() <= 4.0 * sigma,
        "delayed {delayed} vs true randoms {randoms} (sigma {sigma:.1})"
    );
    eprintln!(
        "ring: {} expected trues, {found} found ({:.4}), {} prompts, {randoms} randoms, {delayed} delayed",
        expected.len(),
        fraction,
        t1.len()
    );
}

#[cfg(feature = "demo")]
#[test]
fn impossible_windows_are_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let (code, stdout, stderr) = scandaq(&[
        "demo",
        "--duration",
        "1s",
        "--out",
        out.to_str().unwrap(),
        "--no-tui",
        "--window",
        "200ns",
        "--delay",
        "100ns",
    ]);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains("delay") && stderr.contains("window_ps"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing may start");
    let (code, _, stderr) = scandaq(&[
        "demo",
        "--out",
        out.to_str().unwrap(),
        "--no-tui",
        "--multiples",
        "takeSomething",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("takeSomething"), "{stderr}");
}

/// A PETsys config.ini in `dir` naming the simulator's tables (absolute paths), with the given
/// `[sw_trigger]` lines and trigger map text.
fn petsys_setup(dir: &Path, sw_trigger: &str, map_trigger: &str) -> PathBuf {
    let calib = sim_dir().join("calib");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("map_trigger.tsv"), map_trigger).unwrap();
    let ini = dir.join("config.ini");
    std::fs::write(
        &ini,
        format!(
            "[main]\ntdc_calibration_table = {}\nchannel_map = {}\ntrigger_map = %CDIR%/map_trigger.tsv\n[sw_trigger]\n{sw_trigger}",
            calib.join("tdc_calibration.tsv").display(),
            calib.join("map_channel.tsv").display(),
        ),
    )
    .unwrap();
    ini
}

/// `scandaq replay` of the bench simulation with the PETsys config `ini` into `out`, with
/// `--no-progress` and `extra` flags: (exit code, stdout, stderr).
fn petsys_replay(ini: &Path, out: &Path, extra: &[&str]) -> (i32, String, String) {
    let rawf = sim_dir().join("bench.rawf");
    let mut args = vec![
        "replay",
        rawf.to_str().unwrap(),
        "--petsys-config",
        ini.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    scandaq(&args)
}

/// The coincidence options a run's prompt table records (`scandaq.coincidence_config`).
fn recorded_options(run: &Path) -> serde_json::Value {
    let (_, kv) = read_parquet(&run.join("coincidences-00000.parquet"));
    serde_json::from_str(&kv["scandaq.coincidence_config"]).unwrap()
}

#[test]
fn petsys_sw_trigger_then_config_keys_then_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let ini = petsys_setup(
        &tmp.path().join("setup"),
        "coincidence_time_window = 1.5\ngroup_time_window = 2\ngroup_max_distance = 30\ngroup_max_hits = 5\n",
        "0\t1\tC\n0\t0\tM\n1\t1\tM\n",
    );
    let rawf = sim_dir().join("bench.rawf");
    let replay = |out: &Path, extra: &[&str]| {
        let args = [&["--coincidences-only"], extra].concat();
        let (code, stdout, stderr) = petsys_replay(&ini, out, &args);
        assert_eq!(code, 0, "{stdout}{stderr}");
        (stdout, stderr)
    };
    // [sw_trigger] alone: windows in 5 ns clock periods, PETsys's regions and cuts.
    let out = tmp.path().join("a");
    let (_, stderr) = replay(&out, &[]);
    assert!(
        stderr.contains("PETsys [sw_trigger]: coincidence window 7500 ps"),
        "{stderr}"
    );
    let o = recorded_options(&out.join("run-000001"));
    assert_eq!(o["window_ps"], 7500);
    assert_eq!(o["energy_window_kev"], serde_json::Value::Null);
    assert_eq!(o["allowed_module_pairs"], serde_json::json!([[0, 1]]));
    assert_eq!(o["grouping"]["window_ps"], 10_000);
    assert_eq!(o["grouping"]["max_distance_mm"], 30.0);
    assert_eq!(o["grouping"]["max_hits"], 5);
    assert_eq!(
        o["grouping"]["multi_hit_module_pairs"],
        serde_json::json!([[0, 0], [1, 1]])
    );
    // A run configuration's [coincidences] keys override them, key by key (nested too) ...
    let toml = tmp.path().join("run.toml");
    std::fs::write(
        &toml,
        "[coincidences]\nwindow_ps = 6000\nmin_transaxial_mm = 10.0\n[coincidences.grouping]\nmax_distance_mm = 40.0\n",
    )
    .unwrap();
    let out = tmp.path().join("b");
    replay(&out, &["--config", toml.to_str().unwrap()]);
    let o = recorded_options(&out.join("run-000001"));
    assert_eq!(o["window_ps"], 6000);
    assert_eq!(o["min_transaxial_mm"], 10.0);
    assert_eq!(o["grouping"]["max_distance_mm"], 40.0);
    assert_eq!(o["grouping"]["window_ps"], 10_000, "kept from [sw_trigger]");
    assert_eq!(o["allowed_module_pairs"], serde_json::json!([[0, 1]]));
    // ... and the flags override both.
    let out = tmp.path().join("c");
    replay(
        &out,
        &[
            "--config",
            toml.to_str().unwrap(),
            "--window",
            "3ns",
            "--group-max-distance",
            "50",
            "--group-hits",
            "1:9",
        ],
    );
    let o = recorded_options(&out.join("run-000001"));
    assert_eq!(o["window_ps"], 3000);
    assert_eq!(o["grouping"]["max_distance_mm"], 50.0);
    assert_eq!(o["grouping"]["max_hits"], 9);
    // An unknown key in [coincidences] is named.
    std::fs::write(&toml, "[coincidences]\nwindow_pss = 6000\n").unwrap();
    let (code, _, stderr) = scandaq(&[
        "replay",
        rawf.to_str().unwrap(),
        "--petsys-config",
        ini.to_str().unwrap(),
        "--config",
        toml.to_str().unwrap(),
        "--out",
        tmp.path().join("d").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("window_pss"), "{stderr}");
}

#[test]
fn coincidences_only_writes_the_same_pairs_and_no_singles_table() {
    let tmp = tempfile::tempdir().unwrap();
    let ini = petsys_setup(
        &tmp.path().join("setup"),
        "coincidence_time_window = 2\n",
        "0\t1\tC\n0\t0\tM\n1\t1\tM\n",
    );
    let run = |out: &Path, extra: &[&str]| {
        let (code, stdout, stderr) = petsys_replay(&ini, out, extra);
        assert_eq!(code, 0, "{stdout}{stderr}");
        no_panic(&stderr);
        let dir = out.join("run-000001");
        (dir.clone(), Manifest::read(&dir).unwrap(), stdout)
    };
    let (full, full_m, _) = run(&tmp.path().join("full"), &[]);
    let (only, only_m, stdout) = run(&tmp.path().join("only"), &["--coincidences-only"]);
    assert!(
        stdout.contains("coincidences only: no singles table"),
        "{stdout}"
    );
    let names: Vec<String> = std::fs::read_dir(&only)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("singles-")),
        "{names:?}"
    );
    assert!(only_m.files.iter().all(|f| !f.path.starts_with("singles-")));
    assert_eq!(only_m.counts["singles_written"], 0);
    assert!(full_m.counts["singles_written"] > 1_000_000);
    assert_eq!(
        only_m.counts["singles_sorted_only"],
        full_m.counts["singles_written"]
    );
    assert!(only_m.losses.is_empty(), "{:?}", only_m.losses);
    for name in ["coincidences-00000.parquet", "delayed-00000.parquet"] {
        let (a, b) = (table(&full, name), table(&only, name));
        for c in ["t1_ps", "t2_ps", "tof_ps"] {
            assert_eq!(col_i64(&a, c), col_i64(&b, c), "{name} {c}");
        }
        assert_eq!(col_u32(&a, "channel1"), col_u32(&b, "channel1"), "{name}");
        assert_eq!(col_u32(&a, "channel2"), col_u32(&b, "channel2"), "{name}");
        assert_eq!(
            col_f32(&a, "energy1_kev"),
            col_f32(&b, "energy1_kev"),
            "{name}"
        );
        assert!(!col_i64(&a, "t1_ps").is_empty(), "{name}");
    }
    assert_eq!(
        full_m.counts["grouping.photons_out"],
        only_m.counts["grouping.photons_out"]
    );
    // Contradictory requests are refused before anything runs.
    for (flags, says) in [
        (
            ["--coincidences-only", "--no-coincidences"],
            "--no-coincidences",
        ),
        (["--coincidences-only", "--positions"], "--positions"),
    ] {
        let out = tmp.path().join("refused");
        let (code, _, stderr) = petsys_replay(&ini, &out, &flags);
        assert_ne!(code, 0);
        assert!(stderr.contains(says), "{stderr}");
        assert!(!out.exists());
    }
}

#[test]
fn good_pair_flags_and_window_mode_reach_the_sorter() {
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
        "--window-mode",
        "single_window_gate10",
        "--min-transaxial",
        "20",
        "--max-axial",
        "8",
        "--min-module-difference",
        "1",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let cfg = CoincidenceConfig {
        energy_window_kev: Some([400.0, 650.0]),
        mode: WindowMode::SingleWindowGate10,
        min_transaxial_mm: Some(20.0),
        max_axial_mm: Some(8.0),
        min_module_difference: Some(scandaq_core::coincidence::ModuleDifference {
            min: 1,
            ring_modules: None,
        }),
        ..CoincidenceConfig::prompt(4_000)
    };
    let (prompts, _) = check_run(&out.join("run-000001"), &cfg);
    assert!(prompts > 0);
    let (code, _, stderr) = scandaq(&[
        "replay",
        sim_dir().join("bench.rawf").to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--window-mode",
        "gate",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("single_window_gate10"), "{stderr}");
}

#[test]
fn broken_petsys_trigger_settings_are_named_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let rawf = sim_dir().join("bench.rawf");
    for (k, (sw_trigger, map, says)) in [
        ("", "0\t1\tC\n0\t1\n", "map_trigger.tsv line 2"),
        ("", "0\t1\tQ\n", "expected C (coincidence) or M"),
        (
            "coincidence_time_window = ten\n",
            "0\t1\tC\n",
            "coincidence_time_window = \"ten\"",
        ),
        (
            "coincidence_time_window = 0\n",
            "0\t1\tC\n",
            "coincidence_time_window must be > 0",
        ),
        ("group_max_hits = 0\n", "0\t1\tC\n", "grouping.max_hits"),
    ]
    .into_iter()
    .enumerate()
    {
        let ini = petsys_setup(&tmp.path().join(format!("setup{k}")), sw_trigger, map);
        let out = tmp.path().join(format!("out{k}"));
        let (code, _, stderr) = scandaq(&[
            "replay",
            rawf.to_str().unwrap(),
            "--petsys-config",
            ini.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_ne!(code, 0, "{sw_trigger}{map}");
        no_panic(&stderr);
        assert!(stderr.contains(says), "{says}: {stderr}");
        assert!(!out.exists(), "nothing may start");
    }
}

#[test]
fn config_check_shows_the_petsys_settings_under_the_files_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let ini = petsys_setup(
        &tmp.path().join("setup"),
        "coincidence_time_window = 3\ngroup_time_window = 4\n",
        "0\t1\tC\n",
    );
    let toml = tmp.path().join("run.toml");
    let write = |coincidences: &str| {
        std::fs::write(
            &toml,
            format!(
                "[run]\nout = \"{}\"\nclock_hz = 250000000\n[calibration]\npetsys_config = \"{}\"\n[[input]]\nudp = \"127.0.0.1:0\"\n{coincidences}",
                tmp.path().join("runs").display(),
                ini.display()
            ),
        )
        .unwrap();
    };
    // 3 and 4 periods of a 250 MHz clock.
    write("");
    let (code, stdout, stderr) = scandaq(&["config", "check", toml.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("coincidences: window 12000 ps"), "{stdout}");
    assert!(stdout.contains("grouping 16000 ps / 100 mm"), "{stdout}");
    write("[coincidences]\nwindow_ps = 5000\n");
    let (code, stdout, stderr) = scandaq(&["config", "check", toml.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("coincidences: window 5000 ps"), "{stdout}");
    assert!(stdout.contains("grouping 16000 ps"), "{stdout}");
}

#[test]
fn a_petsys_singles_only_replay_keeps_the_plain_singles_table() {
    let tmp = tempfile::tempdir().unwrap();
    let ini = petsys_setup(
        &tmp.path().join("setup"),
        "group_time_window = 4\n",
        "0\t1\tC\n0\t0\tM\n",
    );
    let columns = |extra: &[&str]| -> Vec<String> {
        let out = tmp.path().join(format!("out{}", extra.len()));
        let args = [&["--no-coincidences"], extra].concat();
        let (code, stdout, stderr) = petsys_replay(&ini, &out, &args);
        assert_eq!(code, 0, "{stdout}{stderr}");
        let (batches, _) = read_parquet(&out.join("run-000001/singles-00000.parquet"));
        batches[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    };
    // PETsys's grouping only serves its coincidences ...
    let plain = columns(&[]);
    assert!(!plain.iter().any(|c| c.starts_with("photon")), "{plain:?}");
    // ... grouping asked for by a flag still labels the singles.
    let grouped = columns(&["--group-window", "20ns"]);
    assert!(grouped.iter().any(|c| c == "photon_id"), "{grouped:?}");
}

#[test]
fn a_live_run_with_a_petsys_config_sorts_with_its_sw_trigger() {
    let tmp = tempfile::tempdir().unwrap();
    let ini = petsys_setup(
        &tmp.path().join("setup"),
        "coincidence_time_window = 3\ngroup_time_window = 2\n",
        "0\t1\tC\n0\t0\tM\n1\t1\tM\n",
    );
    let out = tmp.path().join("runs");
    let addr = free_port_udp().to_string();
    let run = crate::spawn_live_run(&[
        "run",
        "--udp",
        &addr,
        "--petsys-config",
        ini.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--duration",
        "60s",
    ]);
    let said = &run.said;
    assert!(
        said.contains("PETsys [sw_trigger]: coincidence window 15000 ps"),
        "{said}"
    );
    // The simulator's bench, paced, ending with end-of-stream markers (the run then stops).
    let sim = Command::new(fpga_sim_exe())
        .args([
            "--preset",
            "bench",
            "--seed",
            "11",
            "--duration",
            "0.3s",
            "--rate",
            "1M",
        ])
        .args(["--udp", &addr])
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
    let dir = out.join("run-000001");
    let o = recorded_options(&dir);
    assert_eq!(o["window_ps"], 15_000);
    assert_eq!(o["grouping"]["window_ps"], 10_000);
    assert_eq!(o["allowed_module_pairs"], serde_json::json!([[0, 1]]));
    let m = Manifest::read(&dir).unwrap();
    assert!(
        m.counts["coincidences.prompt.pairs"] > 1000,
        "{:?}",
        m.counts
    );
    assert!(m.counts["grouping.photons_out"] > 0, "{:?}", m.counts);
}
