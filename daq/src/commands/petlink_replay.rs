//! `scandaq replay FILE.l`: replays a PETLINK 32-bit list-mode file (Siemens mMR and other
//! PETLINK scanners) with its Interfile header into a run directory holding the
//! `petlink_events` and `petlink_singles` tables and a manifest that counts every word kind.
//!
//! The header is `--header PATH`, or found beside the file: `FILE.l.hdr`, `FILE.l.hdr.STIR`,
//! `FILE.hdr`, then any `*.hdr*` in the same directory whose `name of data file` names FILE.
//! A header that names another data file is refused. No calibration is involved: the words
//! are already coincidences.
//!
//! The file is read in 4 MiB pieces; each piece becomes one batch of events (struct of arrays
//! moved into Arrow without copying) written as it comes, so memory stays flat for files of
//! any size.

use crate::process::read_blocks::read_up_to;
use crate::process::run::{Run, SOFTWARE_VERSION, failure_of};
use anyhow::{Context, Result, bail};
use scandaq_core::LossCounts;
use scandaq_core::LossReason;
use scandaq_core::run_state::{RunMode, StopReason};
use scandaq_decoders::interfile::PetlinkHeader;
use scandaq_decoders::petlink::{EventBatch, PetlinkCounts, PetlinkDecoder, SinglesRateBatch};
use scandaq_sinks::petlink_tables::{self as tables, PETLINK_SCHEMA_VERSION};
use scandaq_sinks::{FileRecord, Manifest, ParquetTableWriter};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes read (and decoded into one batch) at a time.
pub const READ_CHUNK: usize = 4 << 20;
/// Singles-rate rows gathered before a write.
const SINGLES_BATCH_ROWS: usize = 64 * 1024;
/// Largest file looked at when searching a directory for headers.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// True when `file` should be replayed as PETLINK list mode: a header was given, or the file
/// name ends in `.l`.
pub fn is_petlink(file: &Path, header: Option<&Path>) -> bool {
    header.is_some()
        || file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("l"))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn names_file(h: &PetlinkHeader, data: &Path) -> bool {
    let want = file_name(data);
    let named = h.data_file_name();
    named == want || named.eq_ignore_ascii_case(&want)
}

/// True when the Interfile text at `path` has a `name of data file` naming `data`, whether or
/// not the rest of it is a usable PETLINK header.
fn text_names_file(path: &Path, data: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let text = String::from_utf8_lossy(&bytes);
    let Ok(h) = scandaq_decoders::interfile::InterfileHeader::parse(&text, "") else {
        return false;
    };
    let want = file_name(data);
    h.get("name of data file").is_some_and(|named| {
        let named = named.rsplit(['/', '\\']).next().unwrap_or(named);
        named.eq_ignore_ascii_case(&want)
    })
}

/// Reads and parses a header file.
pub fn read_header(path: &Path) -> Result<PetlinkHeader> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read Interfile header {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(PetlinkHeader::parse(&text, &path.display().to_string())?)
}

/// Finds (or checks the given) Interfile header of `data`; returns its path and contents.
pub fn find_header(data: &Path, explicit: Option<&Path>) -> Result<(PathBuf, PetlinkHeader)> {
    if let Some(path) = explicit {
        let h = read_header(path)?;
        if !names_file(&h, data) {
            bail!(
                "header {} names data file `{}`, not {}: pass the header of this file with --header, or replay the file it names",
                path.display(),
                h.data_file,
                file_name(data)
            );
        }
        return Ok((path.to_path_buf(), h));
    }
    let name = file_name(data);
    let dir = data
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let conventional = [
        dir.join(format!("{name}.hdr")),
        dir.join(format!("{name}.hdr.STIR")),
        data.with_extension("hdr"),
    ];
    let mut mismatches = Vec::new();
    for path in &conventional {
        if !path.is_file() {
            continue;
        }
        let h = read_header(path)?;
        if names_file(&h, data) {
            return Ok((path.clone(), h));
        }
        mismatches.push(format!("{} names `{}`", path.display(), h.data_file));
    }
    let mut others: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            file_name(p).to_ascii_lowercase().contains(".hdr")
                && !conventional.contains(p)
                && std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() <= MAX_HEADER_BYTES)
        })
        .collect();
    others.sort();
    for path in &others {
        // Other headers in the folder may be of other kinds: unreadable ones are skipped,
        // unless they name this file (then what is wrong in them is the error).
        match read_header(path) {
            Ok(h) if names_file(&h, data) => return Ok((path.clone(), h)),
            Ok(h) => mismatches.push(format!("{} names `{}`", path.display(), h.data_file)),
            Err(e) if text_names_file(path, data) => {
                return Err(e.context(format!(
                    "the Interfile header of {} ({}) cannot be used: fix the value it names, \
                     or pass another header with --header PATH",
                    data.display(),
                    path.display()
                )));
            }
            Err(_) => {}
        }
    }
    let mut msg = format!(
        "no Interfile header found for {}: looked for {}, {}, {} and any *.hdr* in {} whose `name of data file` is {name}",
        data.display(),
        file_name(&conventional[0]),
        file_name(&conventional[1]),
        file_name(&conventional[2]),
        dir.display()
    );
    if !mismatches.is_empty() {
        msg.push_str(&format!(" (found {})", mismatches.join("; ")));
    }
    msg.push_str("; pass the header with --header PATH");
    bail!(msg)
}

/// What a PETLINK replay reports.
#[derive(Debug)]
pub struct PetlinkReplaySummary {
    /// Run number.
    pub run: u64,
    /// Run directory.
    pub dir: PathBuf,
    /// The manifest as written.
    pub manifest: Manifest,
    /// Decoder counts.
    pub counts: PetlinkCounts,
    /// The header used.
    pub header_path: PathBuf,
    /// Its contents.
    pub header: PetlinkHeader,
    /// Wall time.
    pub elapsed: Duration,
    /// Notes for the user.
    pub warnings: Vec<String>,
}

/// Replays the PETLINK list-mode `file` (header from `header` or found beside it) into a new
/// run under `out_dir`.
pub fn replay_petlink(
    file: &Path,
    header: Option<&Path>,
    out_dir: &Path,
) -> Result<PetlinkReplaySummary> {
    let started = Instant::now();
    let mut input = std::fs::File::open(file)
        .with_context(|| format!("cannot open list-mode file {}", file.display()))?;
    let file_len = input
        .metadata()
        .with_context(|| format!("cannot stat {}", file.display()))?
        .len();
    let (header_path, h) = find_header(file, header)?;
    if h.data_offset_bytes > file_len {
        bail!(
            "{}: `data offset in bytes` is {} but {} has only {file_len} bytes: wrong header, or the data file is truncated",
            header_path.display(),
            h.data_offset_bytes,
            file.display()
        );
    }
    let data_len = file_len - h.data_offset_bytes;
    let mut warnings = Vec::new();
    if data_len % 4 != 0 {
        warnings.push(format!(
            "{} ends in a partial word ({} byte(s) after the last whole 32-bit word, counted as trailing_bytes): the file is truncated",
            file.display(),
            data_len % 4
        ));
    }
    if let Some(total) = h.total_listmode_words {
        let words = data_len / 4;
        if words != total {
            warnings.push(format!(
                "{} holds {words} words but the header counts {total} for the acquisition: {}",
                file.display(),
                if words < total {
                    "an excerpt, or a truncated file"
                } else {
                    "the header belongs to a shorter acquisition"
                }
            ));
        }
    }

    let sources = vec![
        file.display().to_string(),
        header_path.display().to_string(),
    ];
    let mut run = Run::open(out_dir, RunMode::Replay, &sources, None)?;
    run.set_running()?;
    let tables = write_tables(&run, file, &mut input, &h, &header_path, &sources);
    let (counts, events_file, singles_file, sinograms) = match tables {
        Ok(t) => t,
        Err(e) => {
            // The manifest says what went wrong; `complete` stays false.
            let reason = failure_of(&format!("{e:#}"));
            return Err(run.fail(reason, e));
        }
    };
    let manifest = run.manifest_mut();
    record_counts(manifest, &counts, &h, file_len);
    manifest
        .counts
        .insert("events_written".into(), events_file.rows);
    manifest
        .counts
        .insert("singles_rows_written".into(), singles_file.rows);
    manifest.files = vec![events_file, singles_file];
    let (run_dir, manifest) = run.stop(StopReason::EndOfInput)?;
    if counts.backward_time_jumps > 0 {
        warnings.push(format!(
            "{} time tags went backwards (counted as backward_time_jumps)",
            counts.backward_time_jumps
        ));
    }
    if counts.time_steps_not_interval > 0 {
        warnings.push(format!(
            "{} time-tag steps differ from the header's {} ms interval (counted as time_steps_not_interval)",
            counts.time_steps_not_interval, h.tag_interval_ms
        ));
    }
    if counts.address_out_of_range > 0 {
        warnings.push(format!(
            "{} events address sinograms beyond the {} of the span-1 layout (counted, not written): does the header match the scanner?",
            counts.address_out_of_range, sinograms
        ));
    }
    Ok(PetlinkReplaySummary {
        run: run_dir.run,
        dir: run_dir.path,
        manifest,
        counts,
        header_path,
        header: h,
        elapsed: started.elapsed(),
        warnings,
    })
}

/// Records the decoder's counts, losses and time range in `manifest`.
fn record_counts(
    manifest: &mut Manifest,
    counts: &PetlinkCounts,
    h: &PetlinkHeader,
    file_len: u64,
) {
    for (k, v) in counts.named() {
        manifest.counts.insert(k.to_string(), v);
    }
    manifest.counts.insert("file_bytes".into(), file_len);
    if let Some(t) = h.total_listmode_words {
        manifest
            .counts
            .insert("header_total_listmode_words".into(), t);
    }
    let mut losses = LossCounts::default();
    losses.add(LossReason::TrailingBytes, counts.trailing_bytes);
    losses.add(LossReason::AddressOutOfRange, counts.address_out_of_range);
    manifest.losses = losses;
    manifest.first_t_ps = counts.first_time_ms.map(|t| i64::from(t) * 1_000_000_000);
    manifest.last_t_ps = counts.max_time_ms.map(|t| i64::from(t) * 1_000_000_000);
}

/// Decodes `input` into the two tables of `run`; returns the counts, both file records and
/// the number of sinograms of the layout.
fn write_tables(
    run: &Run,
    file: &Path,
    input: &mut std::fs::File,
    h: &PetlinkHeader,
    header_path: &Path,
    sources: &[String],
) -> Result<(PetlinkCounts, FileRecord, FileRecord, u32)> {
    // Keep the header beside the tables: it is the acquisition's description.
    let header_copy = run.path().join(file_name(header_path));
    std::fs::copy(header_path, &header_copy).with_context(|| {
        format!(
            "cannot copy {} to {}",
            header_path.display(),
            header_copy.display()
        )
    })?;

    let metadata = |table: &str| {
        let mut kv = vec![
            ("scandaq.run".to_string(), run.number().to_string()),
            ("scandaq.table".to_string(), table.to_string()),
            (
                "scandaq.schema_version".to_string(),
                PETLINK_SCHEMA_VERSION.to_string(),
            ),
            (
                "scandaq.software_version".to_string(),
                SOFTWARE_VERSION.to_string(),
            ),
            (
                "scandaq.mode".to_string(),
                RunMode::Replay.name().to_string(),
            ),
            ("scandaq.source".to_string(), sources.join(";")),
            ("scandaq.time_unit".to_string(), "ms".to_string()),
        ];
        kv.extend(tables::header_metadata(h));
        kv
    };
    let mut events_w = ParquetTableWriter::create(
        run.path(),
        tables::EVENTS_FILE,
        tables::events_schema(),
        &tables::events_write_options(),
        metadata(tables::EVENTS_TABLE),
    )?;
    let mut singles_w = ParquetTableWriter::create(
        run.path(),
        tables::SINGLES_FILE,
        tables::singles_schema(),
        &tables::singles_write_options(),
        metadata(tables::SINGLES_TABLE),
    )?;

    input
        .seek(SeekFrom::Start(h.data_offset_bytes))
        .with_context(|| format!("cannot seek in {}", file.display()))?;
    let mut decoder = PetlinkDecoder::from_header(h);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut singles = SinglesRateBatch::default();
    loop {
        let n = read_up_to(input, &mut buf)
            .with_context(|| format!("read error in {}", file.display()))?;
        if n == 0 {
            break;
        }
        let mut events = EventBatch::with_capacity(n / 4);
        decoder.decode(&buf[..n], &mut events, &mut singles);
        if !events.is_empty() {
            events_w.write(&tables::events_record_batch(events)?)?;
        }
        if singles.len() >= SINGLES_BATCH_ROWS {
            singles_w.write(&tables::singles_record_batch(std::mem::take(&mut singles))?)?;
        }
    }
    let counts = decoder.finish().clone();
    if !singles.is_empty() {
        singles_w.write(&tables::singles_record_batch(singles)?)?;
    }
    for w in [&mut events_w, &mut singles_w] {
        for (k, v) in [
            ("first_time_ms", counts.first_time_ms),
            ("last_time_ms", counts.last_time_ms),
        ] {
            if let Some(v) = v {
                w.add_metadata(k, v.to_string());
            }
        }
    }
    let events_file = events_w.commit()?;
    let singles_file = singles_w.commit()?;
    Ok((
        counts,
        events_file,
        singles_file,
        decoder.layout().sinograms(),
    ))
}

/// The decoder's word counts on one line: `words N: prompts N  delayeds N ...`.
pub fn word_counts_line(c: &PetlinkCounts) -> String {
    format!(
        "words {}: prompts {}  delayeds {}  time tags {}  singles tags {}  gantry {}  \
         gating {}  control {}  (+{} trailing bytes)",
        c.words,
        c.prompts,
        c.delayeds,
        c.time_tags,
        c.singles_tags,
        c.gantry_tags,
        c.gating_tags,
        c.control_words,
        c.trailing_bytes
    )
}

/// Prints the human summary of a PETLINK replay on stdout.
pub fn print_summary(s: &PetlinkReplaySummary) {
    let c = &s.counts;
    println!("run {} -> {}", s.run, s.dir.display());
    println!(
        "  PETLINK {}  in {:.2} s wall time",
        word_counts_line(c),
        s.elapsed.as_secs_f64()
    );
    let secs = c.duration_ms() as f64 / 1e3;
    match (c.first_time_ms, c.max_time_ms) {
        (Some(a), Some(b)) => println!(
            "  duration {secs:.3} s (time tags {a}..{b} ms), prompt rate {:.0} /s, delayed rate {:.0} /s",
            c.prompts as f64 / secs.max(1e-3),
            c.delayeds as f64 / secs.max(1e-3)
        ),
        _ => println!("  no time tags: no time axis"),
    }
    println!("  losses: {}", s.manifest.losses.summary());
    for f in &s.manifest.files {
        println!(
            "  wrote {} ({} rows, {} bytes)",
            s.dir.join(&f.path).display(),
            f.rows,
            f.bytes
        );
    }
    println!(
        "  header {}  manifest {}",
        s.header_path.display(),
        s.dir.join("manifest.json").display()
    );
    for w in &s.warnings {
        println!("  note: {w}");
    }
}
