//! PETLINK 32-bit list-mode replay of the real Siemens mMR excerpt
//! (`../shared/data/petlink/`, provided by CI; never copied into the repository).

use super::{no_panic, read_parquet, scandaq};
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int16Type, UInt16Type, UInt32Type};
use scandaq_decoders::interfile::PetlinkHeader;
use scandaq_decoders::petlink::{EventBatch, PetlinkCounts, PetlinkDecoder, SinglesRateBatch};
use scandaq_sinks::Manifest;
use std::path::{Path, PathBuf};

const DATA: &str = "small_listmode_file.l";
const HEADER: &str = "PET_ACQ_small.l.hdr.STIR";

fn fixture(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/petlink")
        .join(name);
    assert!(
        p.is_file(),
        "PETLINK test fixture {} is missing: the real mMR sample must sit at \
         ../shared/data/petlink/ beside the workspace (CI provides it)",
        p.display()
    );
    p
}

fn decode(bytes: &[u8]) -> (PetlinkCounts, EventBatch, SinglesRateBatch) {
    let text = std::fs::read_to_string(fixture(HEADER)).unwrap();
    let h = PetlinkHeader::parse(&text, HEADER).unwrap();
    let mut d = PetlinkDecoder::from_header(&h);
    let (mut ev, mut si) = (EventBatch::default(), SinglesRateBatch::default());
    d.decode(bytes, &mut ev, &mut si);
    (d.finish().clone(), ev, si)
}

/// The run directory a successful replay printed (`run N -> DIR`).
fn run_dir(stdout: &str) -> PathBuf {
    let line = stdout.lines().find(|l| l.starts_with("run ")).unwrap();
    PathBuf::from(line.split(" -> ").nth(1).unwrap())
}

fn u32s(b: &[RecordBatch], name: &str) -> Vec<u32> {
    b.iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<UInt32Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn one_line_error(code: i32, stderr: &str) {
    no_panic(stderr);
    assert_ne!(code, 0);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
}

/// A data file (bytes) with a header naming it, in a fresh folder.
fn staged(dir: &Path, name: &str, bytes: &[u8], header_name: &str, names: &str) -> PathBuf {
    let data = dir.join(name);
    std::fs::write(&data, bytes).unwrap();
    let text = std::fs::read_to_string(fixture(HEADER)).unwrap().replace(
        "name of data file := small_listmode_file.l",
        &format!("name of data file := {names}"),
    );
    std::fs::write(dir.join(header_name), text).unwrap();
    data
}

fn counts_add_up(m: &Manifest) {
    let c = &m.counts;
    let kinds: u64 = [
        "prompts",
        "delayeds",
        "time_tags",
        "singles_tags",
        "gantry_tags",
        "gating_tags",
        "control_words",
    ]
    .iter()
    .map(|k| c[*k])
    .sum();
    assert_eq!(kinds, c["words"]);
    assert_eq!(4 * c["words"] + c["trailing_bytes"], c["bytes"]);
    assert_eq!(
        c["events_written"],
        c["prompts"] + c["delayeds"] - c["address_out_of_range"]
    );
}

#[test]
fn replay_of_the_real_mmr_file_matches_the_decoder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let data = fixture(DATA);
    // The header is found by scanning the folder: its name does not follow FILE.l.hdr.
    let (code, stdout, stderr) = scandaq(&[
        "replay",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    no_panic(&stderr);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("PETLINK words 254816"), "{stdout}");
    assert!(
        stdout.contains("prompts 218881") && stdout.contains("delayeds 35320"),
        "{stdout}"
    );
    assert!(stdout.contains("duration 0.612 s"), "{stdout}");
    assert!(stdout.contains(HEADER), "{stdout}");
    let dir = run_dir(&stdout);
    assert!(
        dir.join(HEADER).is_file(),
        "the header is kept in the run directory"
    );

    let bytes = std::fs::read(&data).unwrap();
    let (c, ev, si) = decode(&bytes);
    let m = Manifest::read(&dir).unwrap();
    assert!(m.complete);
    assert_eq!(m.state.name(), "stopped");
    counts_add_up(&m);
    for (k, v) in c.named() {
        assert_eq!(m.counts[k], v, "manifest count {k}");
    }
    assert_eq!(m.counts["words"], bytes.len() as u64 / 4);
    assert_eq!(
        (m.counts["prompts"], m.counts["delayeds"]),
        (218_881, 35_320)
    );
    assert_eq!((m.counts["time_tags"], m.counts["duration_ms"]), (613, 612));
    assert_eq!(
        (m.first_t_ps, m.last_t_ps),
        (Some(0), Some(612_000_000_000))
    );
    assert!(m.losses.is_empty(), "{:?}", m.losses);
    assert_eq!(m.files.len(), 2);

    // petlink_events: rows = manifest = decoder, and the columns are the decoder's.
    let events = &m.files[0];
    assert_eq!(events.path, "petlink_events-00000.parquet");
    let (b, kv) = read_parquet(&dir.join(&events.path));
    let rows: usize = b.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows as u64, events.rows);
    assert_eq!(events.rows, m.counts["events_written"]);
    assert_eq!(events.rows, c.prompts + c.delayeds);
    let prompts: usize = b
        .iter()
        .map(|b| {
            b.column_by_name("prompt")
                .unwrap()
                .as_boolean()
                .true_count()
        })
        .sum();
    assert_eq!(prompts as u64, c.prompts);
    let t = u32s(&b, "time_ms");
    assert_eq!(t, ev.time_ms);
    assert!(t.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(u32s(&b, "bin_address"), ev.bin_address);
    assert_eq!(u32s(&b, "sinogram"), ev.sinogram);
    let views: Vec<u16> = b
        .iter()
        .flat_map(|b| {
            b.column_by_name("view")
                .unwrap()
                .as_primitive::<UInt16Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(views, ev.view);
    let segs: Vec<i16> = b
        .iter()
        .flat_map(|b| {
            b.column_by_name("segment")
                .unwrap()
                .as_primitive::<Int16Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(segs, ev.segment);
    assert_eq!(kv["scandaq.table"], "petlink_events");
    assert_eq!(kv["scandaq.run"], m.run.to_string());
    assert_eq!(kv["petlink.energy_window_kev"], "430-610");
    assert_eq!(kv["petlink.projections"], "344");
    assert_eq!(kv["petlink.views"], "252");
    assert!(kv["petlink.scanner"].contains("mMR"));
    assert_eq!(kv["last_time_ms"], "612");

    // petlink_singles: the one singles tag.
    let singles = &m.files[1];
    let (b, kv) = read_parquet(&dir.join(&singles.path));
    assert_eq!(singles.rows, 1);
    assert_eq!(singles.rows, si.len() as u64);
    assert_eq!(u32s(&b, "raw_rate"), si.raw_rate);
    let scaled: Vec<f64> = b
        .iter()
        .flat_map(|b| {
            b.column_by_name("scaled_rate_hz")
                .unwrap()
                .as_primitive::<Float64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(scaled, si.scaled_rate_hz);
    assert_eq!(kv["scandaq.table"], "petlink_singles");
    assert_eq!(kv["petlink.singles_scale_factor"], "8");

    // --header given explicitly gives the same counts.
    let (code, stdout2, stderr) = scandaq(&[
        "replay",
        data.to_str().unwrap(),
        "--header",
        fixture(HEADER).to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    no_panic(&stderr);
    assert_eq!(code, 0, "{stderr}");
    let m2 = Manifest::read(&run_dir(&stdout2)).unwrap();
    assert_eq!(m2.counts, m.counts);
    assert_eq!(m2.run, m.run + 1);
}

#[test]
fn bad_petlink_inputs_give_one_clear_error_or_a_counted_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let out = out.to_str().unwrap();
    let bytes = std::fs::read(fixture(DATA)).unwrap();

    // No header anywhere near the file.
    let alone = tmp.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::write(alone.join("scan.l"), &bytes[..4096]).unwrap();
    let (code, _, stderr) = scandaq(&[
        "replay",
        alone.join("scan.l").to_str().unwrap(),
        "--out",
        out,
    ]);
    one_line_error(code, &stderr);
    assert!(
        stderr.contains("no Interfile header found") && stderr.contains("--header"),
        "{stderr}"
    );

    // A header beside the file that names another data file.
    let wrong = tmp.path().join("wrong");
    std::fs::create_dir(&wrong).unwrap();
    let data = staged(
        &wrong,
        "scan.l",
        &bytes[..4096],
        "scan.l.hdr",
        "other_scan.l",
    );
    let (code, _, stderr) = scandaq(&["replay", data.to_str().unwrap(), "--out", out]);
    one_line_error(code, &stderr);
    assert!(
        stderr.contains("other_scan.l") && stderr.contains("--header"),
        "{stderr}"
    );
    // ... and the same given with --header.
    let (code, _, stderr) = scandaq(&[
        "replay",
        data.to_str().unwrap(),
        "--header",
        fixture(HEADER).to_str().unwrap(),
        "--out",
        out,
    ]);
    one_line_error(code, &stderr);
    assert!(
        stderr.contains("names data file `small_listmode_file.l`, not scan.l"),
        "{stderr}"
    );

    // A header with a bad number: the key, the line and the value are named.
    let badnum = tmp.path().join("badnum");
    std::fs::create_dir(&badnum).unwrap();
    let data = staged(&badnum, "scan.l", &bytes[..4096], "scan.l.hdr", "scan.l");
    let hdr = badnum.join("scan.l.hdr");
    let text = std::fs::read_to_string(&hdr)
        .unwrap()
        .replace("%number of views:=252", "%number of views:=25two");
    std::fs::write(&hdr, text).unwrap();
    let (code, _, stderr) = scandaq(&["replay", data.to_str().unwrap(), "--out", out]);
    one_line_error(code, &stderr);
    assert!(
        stderr.contains("number of views")
            && stderr.contains("25two")
            && stderr.contains("line 64"),
        "{stderr}"
    );

    // A missing data file.
    let (code, _, stderr) = scandaq(&[
        "replay",
        tmp.path().join("nope.l").to_str().unwrap(),
        "--out",
        out,
    ]);
    one_line_error(code, &stderr);
    assert!(stderr.contains("nope.l"), "{stderr}");

    // Odd byte length: the partial word is counted, everything before it is kept.
    let odd = tmp.path().join("odd");
    std::fs::create_dir(&odd).unwrap();
    let cut = bytes.len() - 3;
    let data = staged(&odd, "odd.l", &bytes[..cut], "odd.l.hdr", "odd.l");
    let (code, stdout, stderr) = scandaq(&["replay", data.to_str().unwrap(), "--out", out]);
    no_panic(&stderr);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("partial word"), "{stdout}");
    let m = Manifest::read(&run_dir(&stdout)).unwrap();
    assert!(m.complete);
    counts_add_up(&m);
    assert_eq!(m.losses.get("trailing_bytes"), 1);
    assert_eq!(m.counts["words"], cut as u64 / 4);
    let (c, _, _) = decode(&bytes[..cut]);
    assert_eq!(m.files[0].rows, c.prompts + c.delayeds);

    // Truncated to a whole number of words: shorter than the header says, noted.
    let short = tmp.path().join("short");
    std::fs::create_dir(&short).unwrap();
    let data = staged(&short, "short.l", &bytes[..40_000], "short.hdr", "short.l");
    let (code, stdout, stderr) = scandaq(&["replay", data.to_str().unwrap(), "--out", out]);
    no_panic(&stderr);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("10000 words but the header counts 331257106"),
        "{stdout}"
    );
    let m = Manifest::read(&run_dir(&stdout)).unwrap();
    counts_add_up(&m);
    assert_eq!(m.counts["words"], 10_000);
    assert!(m.losses.is_empty());

    // An empty file: a complete run with empty tables.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let data = staged(&empty, "empty.l", &[], "empty.l.hdr.STIR", "empty.l");
    let (code, stdout, stderr) = scandaq(&["replay", data.to_str().unwrap(), "--out", out]);
    no_panic(&stderr);
    assert_eq!(code, 0, "{stderr}");
    let m = Manifest::read(&run_dir(&stdout)).unwrap();
    assert!(m.complete);
    assert_eq!(
        (m.files[0].rows, m.files[1].rows, m.counts["words"]),
        (0, 0, 0)
    );
    assert!(stdout.contains("no time tags"), "{stdout}");
}

#[test]
fn a_found_header_with_a_bad_value_names_the_value() {
    // The header's name follows no convention, so it is found by its `name of data file`;
    // one of its values is broken. The error is that value, as with --header, not "no
    // Interfile header found".
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture(DATA)).unwrap();
    let data = staged(tmp.path(), DATA, &bytes[..4096], HEADER, DATA);
    let header = tmp.path().join(HEADER);
    let text = std::fs::read_to_string(&header).unwrap();
    assert!(text.contains("%number of projections:=344"));
    std::fs::write(
        &header,
        text.replace(
            "%number of projections:=344",
            "%number of projections:=lots",
        ),
    )
    .unwrap();
    let out = tmp.path().join("runs");
    for cmd in [
        vec![
            "replay",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        vec!["inspect", data.to_str().unwrap()],
    ] {
        let (code, _, stderr) = scandaq(&cmd);
        one_line_error(code, &stderr);
        assert!(!stderr.contains("no Interfile header found"), "{stderr}");
        for needle in [
            HEADER,
            "number of projections",
            "`lots`",
            "line 63",
            "--header",
        ] {
            assert!(
                stderr.contains(needle),
                "{cmd:?}: {needle:?} not in {stderr}"
            );
        }
    }
    // The same header passed with --header says the same.
    let (code, _, stderr) = scandaq(&[
        "replay",
        data.to_str().unwrap(),
        "--header",
        header.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    one_line_error(code, &stderr);
    assert!(
        stderr.contains("`lots`") && stderr.contains("line 63"),
        "{stderr}"
    );
}
