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
