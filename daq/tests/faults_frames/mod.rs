//! Corrupt PETsys frame headers (issue 13, item 3): one flipped bit in one frame header of a
//! bench `.rawf` written by the `fpga-sim` binary must cost at most that frame, be counted
//! under a named reason (`corrupt_frame_id`, `repaired_frame_id`, `bad_frame_header`,
//! `frontend_lost_frames`) and never drag the rest of the file into `late_hit`; `scandaq
//! inspect` names the same scanner losses as the replay's manifest.
//!
//! A few flips go through the real `scandaq replay` / `scandaq inspect` binaries on the whole
//! ~1 M-hit file. The exhaustive sweep (every one of the 128 header bits of five frames: the
//! first, the last and three inside) runs in process through the replay's own decode path
//! (`calibrate_cmd::for_each_calibrated_batch`: the same scanner, calibration kernel and
//! time merger as `scandaq replay`, without the Parquet sink) on the file's first ~200 k hits,
//! so that one lost frame is a larger share of the file than in the full one.

use super::{no_panic, scandaq, simulate};
use scandaq::commands::calibrate::for_each_calibrated_batch;
use scandaq::process::calib_load::load_calibration_dir;
use scandaq_sinks::Manifest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One frame of the generated file, read from its header words (the file is valid).
#[derive(Clone, Copy, Debug)]
struct FrameInfo {
    /// Byte offset of the header in the file.
    off: usize,
    /// Raw 36-bit frame ID.
    id: u64,
    /// Hit words.
    n: u64,
    /// Word-1 lost-data flags set.
    lossy: bool,
}

struct Sim {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    bytes: Vec<u8>,
    frames: Vec<FrameInfo>,
}

/// The bench preset, 1 s at 1 M hits/s, frame IDs crossing the 36-bit wrap mid-file, written
/// once by the `fpga-sim` binary.
fn sim() -> &'static Sim {
    static SIM: OnceLock<Sim> = OnceLock::new();
    SIM.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sim");
        simulate(
            &dir,
            "bench",
            &[
                "--duration",
                "1s",
                "--rate",
                "1M",
                "--seed",
                "13",
                "--near-wrap",
            ],
            |dir| {
                scandaq_fpga_sim::write_bench_files(
                    scandaq_fpga_sim::BenchConfig {
                        seed: 13,
                        duration_s: 1.0,
                        hit_rate_hz: 1e6,
                        ..Default::default()
                    }
                    .near_wrap(),
                    dir,
                )
                .unwrap();
            },
        );
        let bytes = std::fs::read(dir.join("bench.rawf")).unwrap();
        let frames = walk_frames(&bytes);
        Sim {
            _tmp: tmp,
            dir,
            bytes,
            frames,
        }
    })
}

/// Frame table of a valid `.rawf` from the header fields alone (docs/formats.md §2), not
/// through the scanner under test.
fn walk_frames(bytes: &[u8]) -> Vec<FrameInfo> {
    let word = |off: usize| u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap());
    let mut frames = Vec::new();
    let mut off = 64;
    while off < bytes.len() {
        let (w0, w1) = (word(off), word(off + 8));
        let n = w1 & 0x7fff;
        assert_eq!((w0 >> 36) & 0x7fff, n + 2, "the generated file is valid");
        frames.push(FrameInfo {
            off,
            id: w0 & ((1 << 36) - 1),
            n,
            lossy: w1 & 0x18000 != 0,
        });
        off += 16 + 8 * n as usize;
    }
    assert_eq!(off, bytes.len());
    frames
}

/// `bytes` with bit `bit` (0..128) of frame `frame`'s header flipped.
fn flipped(bytes: &[u8], f: &FrameInfo, bit: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[f.off + bit / 8] ^= 1 << (bit % 8);
    b
}

/// Replay counts of interest.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    rows: u64,
    losses: BTreeMap<String, u64>,
}

impl Outcome {
    fn loss(&self, k: &str) -> u64 {
        self.losses.get(k).copied().unwrap_or(0)
    }
}

/// Runs `bytes` (a whole `.rawf`) through the replay's decode path in process.
fn replay_in_process(bytes: &[u8], work: &Path) -> Outcome {
    static CAL: OnceLock<scandaq::process::calib_load::LoadedCalibration> = OnceLock::new();
    let cal = CAL.get_or_init(|| load_calibration_dir(&sim().dir.join("calib")).unwrap());
    let path = work.join("case.rawf");
    std::fs::write(&path, bytes).unwrap();
    let mut rows = 0u64;
    let counts = for_each_calibrated_batch(&[path], &cal.calibration, |_, b| {
        rows += b.len() as u64;
        Ok(())
    })
    .unwrap();
    Outcome {
        rows,
        losses: counts.losses.into_iter().collect(),
    }
}

/// Writes `bytes` to `work/NAME.EXT` and replays it with `scandaq replay` and the simulator's
/// calibration (exit 0, no panic); returns the file and the run's manifest.
fn replay_file(bytes: &[u8], work: &Path, name: &str, ext: &str) -> (PathBuf, Manifest) {
    let file = work.join(format!("{name}.{ext}"));
    std::fs::write(&file, bytes).unwrap();
    let out = work.join(format!("out-{name}"));
    let calib = sim().dir.join("calib");
    let (code, stdout, stderr) = scandaq(&[
        "replay",
        file.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    no_panic(&stderr);
    assert_eq!(code, 0, "{name}: {stdout}{stderr}");
    (file, Manifest::read(&out.join("run-000001")).unwrap())
}

/// Runs `scandaq replay` and `scandaq inspect` on `bytes`; returns the run's outcome and the
/// `losses:` line of `inspect`.
fn replay_binary(bytes: &[u8], work: &Path, name: &str) -> (Outcome, String) {
    let (rawf, m) = replay_file(bytes, work, name, "rawf");
    assert!(m.complete, "{name}");
    let (code, stdout, stderr) = scandaq(&["inspect", rawf.to_str().unwrap()]);
    no_panic(&stderr);
    assert_eq!(code, 0, "{name}: {stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("losses:"))
        .unwrap_or_else(|| panic!("{name}: inspect prints no losses line: {stdout}"))
        .trim()
        .to_string();
    // Repaired frame IDs lose nothing: the manifest has them in `counts`, inspect on a line of
    // their own. Both are compared with the scanner's counters together.
    let mut scanner = parse_losses_line(&line);
    if let Some(r) = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("repaired:"))
    {
        scanner.extend(parse_losses_line(&r.trim().replacen(
            "repaired:",
            "losses:",
            1,
        )));
    }
    let line = format!(
        "losses: {}",
        if scanner.is_empty() {
            "none".to_string()
        } else {
            scanner
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    (
        Outcome {
            rows: m.counts["singles_written"],
            losses: losses_and_repairs(&m),
        },
        line,
    )
}

/// The manifest's losses with its repair counters (kept in `counts`: a repaired frame ID
/// loses nothing) beside them, as the scanner counted them.
fn losses_and_repairs(m: &Manifest) -> BTreeMap<String, u64> {
    let mut losses: BTreeMap<String, u64> = m
        .losses
        .by_name()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    for r in scandaq_core::stats::REPAIRS {
        if let Some(&n) = m.counts.get(r.name()) {
            assert_eq!(m.losses.get(r), 0, "{r} is no loss");
            losses.insert(r.name().to_string(), n);
        }
    }
    losses
}

/// Reasons the frame scanner counts (what `inspect` can see without calibration).
const SCANNER_REASONS: [&str; 8] = [
    "bad_frame_header",
    "corrupt_frame_id",
    "corrupt_frame_id_hits",
    "frontend_lost_frames",
    "repaired_frame_id",
    "resync_skipped_bytes",
    "truncated_bytes",
    "truncated_frame",
];

/// The `reason count` entries of an inspect `losses:` line.
fn parse_losses_line(line: &str) -> BTreeMap<String, u64> {
    let rest = line.trim_start_matches("losses:").trim();
    let rest = rest.split(" (").next().unwrap_or("");
    if rest == "none" {
        return BTreeMap::new();
    }
    rest.split(", ")
        .filter_map(|e| {
            let (k, v) = e.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// What a flip of header bit `bit` of frame `k` must be counted as (None: a flip the frame
/// headers cannot reveal, which must then cost nothing).
fn expected_reason(frames: &[FrameInfo], k: usize, bit: usize) -> Option<&'static str> {
    let f = frames[k];
    match bit {
        0..=35 => {
            let id = f.id ^ (1 << bit);
            let modulus = 1u64 << 36;
            let ahead = |a: u64, b: u64| b.wrapping_sub(a) & (modulus - 1);
            let between = match (k.checked_sub(1).map(|p| frames[p].id), frames.get(k + 1)) {
                (Some(p), Some(n)) => {
                    ahead(p, id) > 0 && ahead(p, id) < ahead(p, n.id) && ahead(p, n.id) < 1 << 35
                }
                // An end frame has one neighbour: a step of up to 2^24 frames from it is
                // believed (docs/formats.md §2).
                (None, Some(n)) => ahead(id, n.id) > 0 && ahead(id, n.id) <= 1 << 24,
                (Some(p), None) => ahead(p, id) > 0 && ahead(p, id) <= 1 << 24,
                (None, None) => true,
            };
            (!between).then_some("corrupt_frame_id or repaired_frame_id")
        }
        79 | 80 => (!f.lossy).then_some("frontend_lost_frames"),
        _ => Some("bad_frame_header"),
    }
}

fn check_case(base: &Outcome, got: &Outcome, frames: &[FrameInfo], k: usize, bit: usize) {
    let what = format!(
        "frame {k} (id {}, {} hits), header bit {bit}: rows {} of {}, losses {:?}",
        frames[k].id, frames[k].n, got.rows, base.rows, got.losses
    );
    // At most the flipped frame and (ambiguous IDs) one neighbour are lost.
    let neighbours: u64 = frames[k.saturating_sub(1)..(k + 2).min(frames.len())]
        .iter()
        .map(|f| f.n)
        .sum();
    assert!(got.rows + neighbours >= base.rows, "{what}");
    assert!(got.rows * 100 >= base.rows * 99, "{what}");
    assert!(
        got.loss("late_hit") <= base.loss("late_hit") + frames[k].n,
        "late_hit inflated: {what}"
    );
    let new = |k: &str| got.loss(k).saturating_sub(base.loss(k));
    match expected_reason(frames, k, bit) {
        Some("bad_frame_header") => assert!(new("bad_frame_header") >= 1, "{what}"),
        Some("frontend_lost_frames") => assert_eq!(new("frontend_lost_frames"), 1, "{what}"),
        Some(_) => assert!(
            new("corrupt_frame_id") + new("repaired_frame_id") >= 1,
            "{what}"
        ),
        None => {
            // Undetectable from the headers: nothing may be lost, and nothing is said.
            assert_eq!(got.rows, base.rows, "{what}");
        }
    }
    // Every hit not written is a counted one: an ID flip loses only dropped frames' hits,
    // a bad header only the flipped frame's.
    let lost = base.rows - got.rows.min(base.rows);
    if bit < 36 {
        assert_eq!(
            lost,
            new("corrupt_frame_id_hits") + new("late_hit"),
            "{what}"
        );
    } else {
        assert!(lost <= frames[k].n, "{what}");
    }
}

#[test]
fn one_flipped_frame_header_bit_through_the_binaries_keeps_the_file() {
    let s = sim();
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = replay_binary(&s.bytes, tmp.path(), "clean");
    assert!(base.rows > 900_000, "{base:?}");
    assert!(base.loss("corrupt_frame_id") + base.loss("repaired_frame_id") == 0);
    let mid = s.frames.len() / 2;
    // (frame, header bit, reason that must appear)
    let cases = [
        (mid, 30, "repaired_frame_id"), // the report: a frame ID far ahead
        (mid + 7, 35, "repaired_frame_id"),
        (s.frames.len() / 3, 5, "repaired_frame_id"),
        (mid + 100, 64 + 20, "bad_frame_header"), // reserved bit of word 1
        (mid + 200, 40, "bad_frame_header"),      // frameSize
        (mid + 300, 64 + 2, "bad_frame_header"),  // nEvents
        (mid + 400, 60, "bad_frame_header"),      // reserved bit of word 0
    ];
    for (k, bit, reason) in cases {
        let name = format!("frame{k}-bit{bit}");
        let (got, line) = replay_binary(&flipped(&s.bytes, &s.frames[k], bit), tmp.path(), &name);
        check_case(&base, &got, &s.frames, k, bit);
        assert!(got.loss(reason) >= 1, "{name}: {got:?}");
        // `inspect` names exactly the scanner's losses of the replay.
        let inspected = parse_losses_line(&line);
        let from_manifest: BTreeMap<String, u64> = got
            .losses
            .iter()
            .filter(|(k, _)| SCANNER_REASONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert_eq!(inspected, from_manifest, "{name}: inspect says {line}");
    }
}

#[test]
fn every_header_bit_of_sampled_frames_keeps_99_percent_of_the_hits() {
    let s = sim();
    let tmp = tempfile::tempdir().unwrap();
    // The first ~200 k hits, cut at a frame boundary.
    let mut hits = 0;
    let cut = s
        .frames
        .iter()
        .position(|f| {
            hits += f.n;
            hits >= 200_000
        })
        .unwrap();
    let frames = &s.frames[..cut];
    let end = frames[cut - 1].off + 16 + 8 * frames[cut - 1].n as usize;
    let bytes = &s.bytes[..end];
    let base = replay_in_process(bytes, tmp.path());
    assert!(
        base.rows > 190_000 && base.loss("corrupt_frame_id") == 0,
        "{base:?}"
    );
    let picks = [0, 1, cut / 2, cut - 2, cut - 1];
    let mut cases = 0;
    for &k in &picks {
        for bit in 0..128 {
            let got = replay_in_process(&flipped(bytes, &frames[k], bit), tmp.path());
            check_case(&base, &got, frames, k, bit);
            cases += 1;
        }
    }
    assert_eq!(cases, picks.len() * 128);
}

/// The same file's frames packed whole into transport packets (payload format 1, no CRC, so a
/// corrupted frame reaches the scanner) in a `.sdq` raw archive: the live path's per-board
/// processing.
fn sdq_of(bytes: &[u8], frames: &[FrameInfo]) -> Vec<u8> {
    use scandaq_decoders::archive::encode_header;
    use scandaq_decoders::transport::{FLAG_END_OF_STREAM, encode_packet, payload_format};
    let mut out = encode_header(0).to_vec();
    let mut seq = 0u64;
    let mut start = frames[0].off;
    for (i, f) in frames.iter().enumerate() {
        let end = f.off + 16 + 8 * f.n as usize;
        if end - start >= 8000 || i + 1 == frames.len() {
            encode_packet(
                &mut out,
                payload_format::PETSYS_TOFPET2,
                0,
                seq,
                0,
                &bytes[start..end],
                false,
            );
            seq += 1;
            start = end;
        }
    }
    encode_packet(
        &mut out,
        payload_format::PETSYS_TOFPET2,
        0,
        seq,
        FLAG_END_OF_STREAM,
        &[],
        false,
    );
    out
}

/// Runs `scandaq replay FILE.sdq`; returns the run's outcome.
fn replay_sdq(sdq: &[u8], work: &Path, name: &str) -> Outcome {
    let (_, m) = replay_file(sdq, work, name, "sdq");
    Outcome {
        rows: m.counts["singles_written"],
        losses: losses_and_repairs(&m),
    }
}

#[test]
fn a_flipped_frame_id_in_a_raw_archive_keeps_the_board_stream() {
    let s = sim();
    let tmp = tempfile::tempdir().unwrap();
    let base = replay_sdq(&sdq_of(&s.bytes, &s.frames), tmp.path(), "clean");
    assert!(base.rows > 900_000, "{base:?}");
    for (k, bit) in [(s.frames.len() / 2, 30), (s.frames.len() / 4, 33)] {
        let name = format!("sdq-frame{k}-bit{bit}");
        let sdq = sdq_of(&flipped(&s.bytes, &s.frames[k], bit), &s.frames);
        let got = replay_sdq(&sdq, tmp.path(), &name);
        check_case(&base, &got, &s.frames, k, bit);
        assert!(
            got.loss("repaired_frame_id") + got.loss("corrupt_frame_id") >= 1,
            "{name}: {got:?}"
        );
    }
}
