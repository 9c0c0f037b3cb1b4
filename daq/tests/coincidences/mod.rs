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
    use scandaq_fpga_sim::ring::{RingConfig, write_ring_files};
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("ring");
    write_ring_files(
        RingConfig {
            seed: 11,
            duration_s: 0.25,
            ..RingConfig::default()
        },
        &sim,
    )
    .unwrap();
    let out = tmp.path().join("runs");
    let (code, stdout, stderr) = scandaq(&[
        "replay",
        sim.join("ring.rawf").to_str().unwrap(),
        "--calib",
        sim.join("calib").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let dir = out.join("run-000001");
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
