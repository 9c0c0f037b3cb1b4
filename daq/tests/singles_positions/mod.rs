//! Issue 4's singles columns: crystal positions (`--positions`) and the photon each single was
//! grouped into (`photon_id`, `photon_multiplicity` whenever hits are grouped), on a ring
//! simulation, against its crystal map and a deliberately plain reference grouping.

use super::*;
use arrow_array::types::UInt64Type;
use scandaq_core::Geometry;
use scandaq_core::coincidence::{
    CoincidenceBatch, CoincidenceConfig, CrystalLut, PhotonBatch, SinglesRef, sort_coincidences,
};

/// A short ring run (point source, randoms, scatter, inter-crystal multi-hit photons),
/// written once per test binary.
fn ring_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        use scandaq_fpga_sim::ring::{RingConfig, write_ring_files};
        let dir = per_process_dir("ring");
        write_ring_files(
            RingConfig {
                seed: 23,
                duration_s: 0.08,
                ..RingConfig::default()
            },
            &dir,
        )
        .unwrap();
        dir
    })
}

fn ring_geometry(calib: &Path) -> Geometry {
    Geometry::parse_map_channel(
        "map_channel.tsv",
        &std::fs::read_to_string(calib.join("map_channel.tsv")).unwrap(),
    )
    .unwrap()
}

fn col_u64(batches: &[RecordBatch], name: &str) -> Vec<u64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name}"))
                .as_primitive::<UInt64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// Replays the ring run with `extra` flags into a fresh output directory; returns the run
/// directory.
fn replay_ring(out: &Path, calib: &Path, extra: &[&str]) -> PathBuf {
    let rawf = ring_dir().join("ring.rawf");
    let mut args = vec![
        "replay",
        rawf.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = scandaq(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    no_panic(&stderr);
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .max()
        .unwrap()
}

/// Every column of `file` as (name, values as bits): equal means equal values, row by
/// row.
fn table_values(dir: &Path, file: &str) -> Vec<(String, Vec<u64>)> {
    use arrow_array::types::{Float32Type, Int64Type, UInt16Type, UInt32Type};
    use arrow_schema::DataType;
    let (batches, _) = read_parquet(&dir.join(file));
    let Some(first) = batches.first() else {
        return vec![];
    };
    first
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let mut bits = Vec::new();
            for b in &batches {
                let c = b.column_by_name(f.name()).unwrap();
                match f.data_type() {
                    DataType::Int64 => bits.extend(
                        c.as_primitive::<Int64Type>()
                            .values()
                            .iter()
                            .map(|&v| v as u64),
                    ),
                    DataType::UInt32 => bits.extend(
                        c.as_primitive::<UInt32Type>()
                            .values()
                            .iter()
                            .map(|&v| v as u64),
                    ),
                    DataType::UInt16 => bits.extend(
                        c.as_primitive::<UInt16Type>()
                            .values()
                            .iter()
                            .map(|&v| v as u64),
                    ),
                    DataType::Float32 => bits.extend(
                        c.as_primitive::<Float32Type>()
                            .values()
                            .iter()
                            .map(|&v| v.to_bits() as u64),
                    ),
                    DataType::UInt64 => {
                        bits.extend(c.as_primitive::<UInt64Type>().values().iter().copied())
                    }
                    other => panic!("{file}: column {} of type {other}", f.name()),
                }
            }
            (f.name().clone(), bits)
        })
        .collect()
}

fn has_column(batches: &[RecordBatch], name: &str) -> bool {
    batches[0].schema().column_with_name(name).is_some()
}

/// Positions equal the crystal map's centres for every single; a channel missing from
/// the map gets NaN and is counted; the coincidence tables and the physics columns are
/// the same with and without `--positions`.
#[test]
fn positions_are_the_crystal_centres_and_change_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let sim_calib = ring_dir().join("calib");
    let geometry = ring_geometry(&sim_calib);
    let plain = replay_ring(&tmp.path().join("plain"), &sim_calib, &[]);
    let with = replay_ring(&tmp.path().join("pos"), &sim_calib, &["--positions"]);

    let (singles, _, manifest) = run_files(&with);
    assert!(
        !has_column(&singles, "photon_id"),
        "no grouping, no photons"
    );
    let ch = col_u32(&singles, "channel");
    let (x, y, z) = (
        col_f32(&singles, "x_mm"),
        col_f32(&singles, "y_mm"),
        col_f32(&singles, "z_mm"),
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..ch.len() {
        let c = geometry
            .crystal(ch[i])
            .expect("ring singles are all mapped");
        assert_eq!([x[i], y[i], z[i]], c.pos_mm, "row {i} channel {}", ch[i]);
        seen.insert(ch[i]);
    }
    assert!(
        seen.len() * 2 > geometry.crystals.len(),
        "{} of {} crystals seen",
        seen.len(),
        geometry.crystals.len()
    );
    assert_eq!(manifest.counts["singles.position_missing_from_geometry"], 0);

    // Positions are an addition: the physics columns, the prompt and delayed tables are
    // exactly those of the plain run.
    let (plain_singles, _, plain_manifest) = run_files(&plain);
    assert!(
        !has_column(&plain_singles, "x_mm"),
        "positions are off by default"
    );
    let with_values = table_values(&with, &manifest.files[0].path);
    for (name, values) in table_values(&plain, &plain_manifest.files[0].path) {
        let other = with_values.iter().find(|(n, _)| *n == name).unwrap();
        assert!(other.1 == values, "singles column {name} differs");
    }
    for file in ["coincidences-00000.parquet", "delayed-00000.parquet"] {
        let a = table_values(&plain, file);
        assert!(!a.is_empty(), "{file} has rows");
        assert!(a == table_values(&with, file), "{file} differs");
    }
    for (k, v) in &plain_manifest.counts {
        if k.starts_with("coincidences.") {
            assert_eq!(manifest.counts.get(k), Some(v), "{k}");
        }
    }

    // A crystal map missing module 0: its singles get NaN, counted in the manifest, and
    // the sorter drops those inside its energy window as unmapped (counted there too).
    let calib = tmp.path().join("calib-no-module0");
    std::fs::create_dir(&calib).unwrap();
    for e in std::fs::read_dir(&sim_calib).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, calib.join(p.file_name().unwrap())).unwrap();
    }
    let mut partial = geometry.clone();
    partial.crystals.retain(|_, c| c.module != 0);
    std::fs::write(calib.join("map_channel.tsv"), partial.to_map_channel()).unwrap();
    let run = replay_ring(&tmp.path().join("partial"), &calib, &["--positions"]);
    let (singles, _, manifest) = run_files(&run);
    let ch = col_u32(&singles, "channel");
    let x = col_f32(&singles, "x_mm");
    let e = col_f32(&singles, "energy_kev");
    let (mut missing, mut missing_in_energy_window) = (0u64, 0u64);
    for i in 0..ch.len() {
        match partial.crystal(ch[i]) {
            Some(c) => assert_eq!(x[i], c.pos_mm[0]),
            None => {
                assert!(x[i].is_nan(), "row {i}: unmapped channel must be NaN");
                missing += 1;
                // The sorter applies its energy cut before the crystal lookup.
                if (400.0..=650.0).contains(&e[i]) {
                    missing_in_energy_window += 1;
                }
            }
        }
    }
    assert!(missing > 0, "module 0 had singles");
    assert_eq!(
        manifest.counts["singles.position_missing_from_geometry"],
        missing
    );
    assert_eq!(
        manifest.counts["coincidences.prompt.unmapped_channel"],
        missing_in_energy_window
    );
    check_with_python_clients(&[&plain, &with, &run]);
}

/// The plain reference grouping (docs/coincidences.md): in time order, the earliest
/// ungrouped single starts a group and claims every later ungrouped single within the
/// window of it and within the distance of its crystal. Unmapped singles are not grouped.
/// Returns each single's group number (in order of the starting singles) or None.
fn reference_groups(
    t: &[i64],
    ch: &[u32],
    geometry: &Geometry,
    window_ps: i64,
    max_mm: f64,
) -> Vec<Option<u64>> {
    let pos = |i: usize| geometry.crystal(ch[i]).map(|c| c.pos_mm);
    let mut group = vec![None; t.len()];
    let mut next = 0u64;
    for i in 0..t.len() {
        let Some(a) = pos(i) else { continue };
        if group[i].is_some() {
            continue;
        }
        group[i] = Some(next);
        let mut j = i + 1;
        while j < t.len() && t[j] - t[i] <= window_ps {
            if group[j].is_none()
                && let Some(b) = pos(j)
            {
                let d: f64 = (0..3)
                    .map(|k| (a[k] as f64 - b[k] as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                if d <= max_mm {
                    group[j] = Some(next);
                }
            }
            j += 1;
        }
        next += 1;
    }
    group
}

/// Stored photon ids and multiplicities equal the reference grouping of the stored
/// singles, and the prompt table equals the library sorter run on the photons built from
/// those reference groups: the coincidences were sorted from exactly the photons the
/// singles table describes.
#[test]
fn photon_columns_equal_a_plain_reference_grouping() {
    let tmp = tempfile::tempdir().unwrap();
    let sim_calib = ring_dir().join("calib");
    let geometry = ring_geometry(&sim_calib);
    let run = replay_ring(
        &tmp.path().join("runs"),
        &sim_calib,
        &["--positions", "--group-window", "10ns"],
    );
    let (singles, kv, manifest) = run_files(&run);
    assert!(kv["scandaq.photon_grouping"].contains("10000"), "{kv:?}");
    let t = col_i64(&singles, "t_ps");
    let ch = col_u32(&singles, "channel");
    let e = col_f32(&singles, "energy_kev");
    let f = col_u16(&singles, "flags");
    let id = col_u64(&singles, "photon_id");
    let mult = col_u16(&singles, "photon_multiplicity");
    let groups = reference_groups(&t, &ch, &geometry, 10_000, 100.0);
    let n_groups = groups.iter().flatten().max().map_or(0, |g| g + 1);
    let mut size = vec![0u16; n_groups as usize];
    for g in groups.iter().flatten() {
        size[*g as usize] += 1;
    }
    for i in 0..t.len() {
        let g = groups[i].expect("ring singles are all mapped");
        assert_eq!(id[i], g, "row {i}: photon id");
        assert_eq!(mult[i], size[g as usize], "row {i}: multiplicity");
    }
    let multi = size.iter().filter(|&&s| s > 1).count() as u64;
    assert!(multi > 100, "the ring has multi-hit photons: {multi}");
    assert_eq!(manifest.counts["grouping.photons_out"], n_groups);
    assert_eq!(manifest.counts["grouping.multi_hit_photons"], multi);
    assert_eq!(manifest.counts["singles.photon_ungrouped"], 0);

    // Reference photons: summed energy (f32, hit order), time/channel of the first
    // highest-energy hit, flags ORed; in (time, group) order.
    let mut best: Vec<(f32, usize)> = vec![(f32::NEG_INFINITY, 0); n_groups as usize];
    let mut sum = vec![0f32; n_groups as usize];
    let mut flags = vec![0u16; n_groups as usize];
    for i in 0..t.len() {
        let g = groups[i].unwrap() as usize;
        sum[g] += e[i];
        flags[g] |= f[i];
        if e[i] > best[g].0 {
            best[g] = (e[i], i);
        }
    }
    let mut order: Vec<usize> = (0..n_groups as usize).collect();
    order.sort_by_key(|&g| (t[best[g].1], g));
    let mut photons = PhotonBatch::default();
    for g in order {
        photons.t_ps.push(t[best[g].1]);
        photons.channel.push(ch[best[g].1]);
        photons.energy_kev.push(sum[g]);
        photons.flags.push(flags[g]);
        photons.multiplicity.push(size[g] as u32);
    }
    let lut = CrystalLut::from_geometry(&geometry);
    let cfg = CoincidenceConfig {
        energy_window_kev: Some([400.0, 650.0]),
        ..CoincidenceConfig::prompt(4_000)
    };
    for (cfg, file) in [
        (cfg.clone(), "coincidences-00000.parquet"),
        (cfg.to_delayed(100_000), "delayed-00000.parquet"),
    ] {
        let mut expected = CoincidenceBatch::default();
        sort_coincidences(&cfg, &lut, SinglesRef::from(&photons), &mut expected).unwrap();
        let (got, _) = read_parquet(&run.join(file));
        assert!(!expected.is_empty(), "{file}");
        assert_eq!(col_i64(&got, "t1_ps"), expected.t1_ps, "{file}");
        assert_eq!(col_i64(&got, "t2_ps"), expected.t2_ps, "{file}");
        assert_eq!(col_u32(&got, "channel1"), expected.channel1, "{file}");
        assert_eq!(col_u32(&got, "channel2"), expected.channel2, "{file}");
        assert_eq!(col_f32(&got, "energy1_kev"), expected.energy1_kev, "{file}");
        assert_eq!(col_f32(&got, "energy2_kev"), expected.energy2_kev, "{file}");
    }

    // Turning positions on with grouping changes no coincidence either.
    let grouped = replay_ring(
        &tmp.path().join("runs2"),
        &sim_calib,
        &["--group-window", "10ns"],
    );
    for file in ["coincidences-00000.parquet", "delayed-00000.parquet"] {
        let a = table_values(&grouped, file);
        assert!(
            !a.is_empty() && a == table_values(&run, file),
            "{file} differs"
        );
    }
    check_with_python_clients(&[&run, &grouped]);
}

#[cfg(feature = "demo")]
/// `scandaq demo --positions --group-window` writes both column groups, readable by the
/// Python clients; `[run] positions = true` in a run config turns positions on for
/// `scandaq run`.
#[test]
fn demo_flags_and_the_run_config_key_turn_the_columns_on() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let (code, stdout, stderr) = scandaq(&[
        "demo",
        "--duration",
        "300ms",
        "--out",
        out.to_str().unwrap(),
        "--no-tui",
        "--positions",
        "--group-window",
        "10ns",
    ]);
    no_panic(&stderr);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run = out.join("run-000001");
    let (singles, _, manifest) = run_files(&run);
    for name in ["x_mm", "y_mm", "z_mm", "photon_id", "photon_multiplicity"] {
        assert!(has_column(&singles, name), "{name}");
    }
    assert!(manifest.counts["grouping.photons_out"] > 0);
    check_with_python_clients(&[&run]);

    let cfg = tmp.path().join("run.toml");
    let text = format!(
        "[run]\nout = {:?}\npositions = true\n[calibration]\ndir = {:?}\n[[input]]\nudp = \"127.0.0.1:0\"\n",
        out.to_str().unwrap(),
        ring_dir().join("calib").to_str().unwrap()
    );
    std::fs::write(&cfg, &text).unwrap();
    let parsed = scandaq::acquire::run_config::parse(&cfg, &text).unwrap();
    assert!(parsed.validate().unwrap().live.coincidences.positions);
    let off = text.replace("positions = true\n", "");
    let parsed = scandaq::acquire::run_config::parse(&cfg, &off).unwrap();
    assert!(!parsed.validate().unwrap().live.coincidences.positions);
}

/// pyarrow, polars and DuckDB read the new columns (scripts/check_parquet_clients.py checks
/// multiplicities against photon_id group sizes and one position per channel). Without
/// the Python clients this fails under CI (which installs them) and says SKIPPED elsewhere.
fn check_with_python_clients(runs: &[&Path]) {
    if !crate::python_has("pyarrow, polars, duckdb") {
        crate::skip_unless_ci(
            "python3 with pyarrow, polars and duckdb not found: the Parquet client check",
        );
        return;
    }
    crate::python_script("check_parquet_clients.py", runs);
}
