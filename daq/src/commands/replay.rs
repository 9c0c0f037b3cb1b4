//! `scandaq replay FILE.rawf`: reads a PETsys raw file set (`.rawf` + `.idxf`) and runs it
//! through the pipeline with the calibration from `--calib DIR` or `--petsys-config FILE`.

use crate::acquire::live::{InputConfig, InputSpec, LiveConfig, LiveHandles, RunLimits, run_live};
use crate::acquire::ring::OverflowPolicy;
use crate::commands::outcome::finish_run;
use crate::commands::petlink_replay;
use crate::observe::progress::progress_bar;
use crate::process::calib_load::{CalibrationArgs, LoadedCalibration};
use crate::process::coinc_stage::{CoincidenceArgs, CoincidenceOptions};
use crate::process::pipeline::{self, Chunk};
use crate::process::read_blocks::{read_chunk, read_up_to};
use crate::process::run::{RunDescription, RunEnd, RunStart, RunSummary};
use anyhow::{Context, Result, bail};
use crossbeam_channel::{Receiver, bounded};
use scandaq_core::ClockModel;
use scandaq_core::run_state::{RunMode, StopReason};
use scandaq_decoders::idxf;
use scandaq_decoders::rawf::{RAWF_HEADER_LEN, RawfHeader};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Bytes read per chunk. 1 MiB: 8 MiB chunks (four alive, plus a 16 MiB carry) cost ~40 MB
/// and, freed on another thread, raised glibc's dynamic mmap threshold to 8 MiB, so the sinks'
/// MiB-sized buffers stayed in thread arenas instead of going back to the system.
const READ_CHUNK: usize = 1 << 20;
/// Chunks in flight between the reader thread and the pipeline.
const READ_QUEUE: usize = 2;

/// Checks the `.idxf` beside `rawf` against the file; returns counts and warnings. A
/// missing index is a note (it only lists acquisition steps); an unreadable or corrupt one is
/// an error naming it, with the way to go on without it (`ignore` = `--no-index`: not read).
fn check_index(
    rawf: &Path,
    file_len: u64,
    ignore: bool,
) -> Result<(BTreeMap<String, u64>, Vec<String>)> {
    let idx_path = rawf.with_extension("idxf");
    let mut counts = BTreeMap::new();
    let mut warnings = Vec::new();
    if ignore {
        warnings.push(format!(
            "--no-index: {} not read; replaying the whole .rawf as one step",
            idx_path.display()
        ));
        return Ok((counts, warnings));
    }
    let go_on = "the index only lists acquisition steps: replay without it with --no-index, or \
                 move it away";
    let text = match std::fs::read(&idx_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(format!(
                "{} not found: replaying the whole .rawf as one step (the index only lists \
                 acquisition steps)",
                idx_path.display()
            ));
            return Ok((counts, warnings));
        }
        Err(e) => bail!(
            "cannot read the index {}: {e} ({go_on})",
            idx_path.display()
        ),
        Ok(bytes) => String::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!(
                "the index {} is corrupt: not text (byte {} is not UTF-8) ({go_on})",
                idx_path.display(),
                e.utf8_error().valid_up_to()
            )
        })?,
    };
    let steps = idxf::parse(&text).map_err(|e| {
        anyhow::anyhow!("the index {} is corrupt: {e} ({go_on})", idx_path.display())
    })?;
    counts.insert("idxf_steps".to_string(), steps.len() as u64);
    if let Some(last) = steps.iter().map(|s| s.end_offset).max()
        && last > file_len
    {
        warnings.push(format!(
            "{} says the data ends at byte {last} but the file has {file_len} bytes: the .rawf \
             is truncated",
            idx_path.display()
        ));
    }
    Ok((counts, warnings))
}

/// Choices of a replay.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// Show a progress bar (on a terminal only).
    pub progress: bool,
    /// Keep the raw diagnostic columns in the singles table.
    pub raw_columns: bool,
    /// Coincidence sorting.
    pub coincidences: crate::process::coinc_stage::CoincidenceOptions,
    /// Singles file rotation.
    pub rotation: crate::process::pipeline::Rotation,
    /// Do not read the `.idxf` beside the file (`--no-index`: a corrupt index).
    pub ignore_index: bool,
}

/// Replays `rawf` into a new run under `out_dir`.
pub fn replay(
    rawf: &Path,
    calibration: &LoadedCalibration,
    out_dir: &Path,
    options: ReplayOptions,
) -> Result<RunSummary> {
    let mut file =
        std::fs::File::open(rawf).with_context(|| format!("cannot open {}", rawf.display()))?;
    let file_len = file
        .metadata()
        .with_context(|| format!("cannot stat {}", rawf.display()))?
        .len();
    let mut head = [0u8; RAWF_HEADER_LEN];
    let n = read_up_to(&mut file, &mut head)
        .with_context(|| format!("cannot read {}", rawf.display()))?;
    let header = RawfHeader::parse(&head[..n])
        .with_context(|| format!("{} is not a usable PETsys .rawf file", rawf.display()))?;
    if header.qdc_mode || header.mixed_mode {
        bail!(
            "{}: QDC or mixed ToT/QDC mode files are not supported yet (only ToT mode); \
             acquire in ToT mode or convert with PETsys tools",
            rawf.display()
        );
    }
    let (extra_counts, mut warnings) = check_index(rawf, file_len, options.ignore_index)?;
    if file_len > RAWF_HEADER_LEN as u64 && !(file_len - RAWF_HEADER_LEN as u64).is_multiple_of(8) {
        warnings.push(format!(
            "{} is not a whole number of 64-bit words: the file is truncated",
            rawf.display()
        ));
    }

    let (tx, rx) = bounded::<Result<Chunk>>(READ_QUEUE);
    let path: PathBuf = rawf.to_path_buf();
    let reader = std::thread::Builder::new()
        .name("rawf-reader".into())
        .spawn(move || {
            loop {
                match read_chunk(&mut file, READ_CHUNK) {
                    Ok(buf) if buf.is_empty() => break,
                    Ok(buf) => {
                        let n = buf.len();
                        if tx
                            .send(Ok(Chunk {
                                bytes: buf,
                                progress: n as u64,
                            }))
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::Error::new(e)
                            .context(format!("read error in {}", path.display()))));
                        break;
                    }
                }
            }
        })?;

    let bar = progress_bar(options.progress, file_len);
    let description = RunDescription {
        mode: RunMode::Replay,
        sources: vec![rawf.display().to_string()],
        clock: ClockModel {
            frequency_hz: header.frequency_hz,
        },
        extra_counts,
        warnings,
        raw_columns: options.raw_columns,
        rotation: options.rotation,
        coincidences: options.coincidences.clone(),
    };
    let summary = run_pipeline(out_dir, calibration, description, rx, |n| bar.inc(n));
    bar.finish_and_clear();
    let _ = reader.join();
    summary
}

/// Runs `input` through the pipeline into a new run under `out_dir`.
fn run_pipeline(
    out_dir: &Path,
    calibration: &LoadedCalibration,
    description: RunDescription,
    input: Receiver<Result<Chunk>>,
    on_progress: impl FnMut(u64),
) -> Result<RunSummary> {
    let mut start = RunStart::begin(out_dir, calibration, description, None)?;
    start.set_running()?;
    let outcome = pipeline::run(
        input,
        &start.kernel,
        start.run.path(),
        start.metadata.clone(),
        start.sink_settings(Default::default()),
        on_progress,
    )?;
    start.finish(RunEnd {
        counts: outcome.counts,
        sink: outcome.sink,
        extra_files: vec![],
        extra_counts: BTreeMap::new(),
        error: outcome.input_error.map(|e| format!("{e:#}")),
        failure: None,
        stop_reason: StopReason::EndOfInput,
    })
}

/// The metadata JSON of the raw archive `archive` (`.sdq`: 64-byte header, JSON, packets).
pub fn archive_metadata(archive: &Path) -> Result<serde_json::Value> {
    use scandaq_decoders::archive::{ARCHIVE_HEADER_LEN, parse_header};
    let mut file = std::fs::File::open(archive)
        .with_context(|| format!("cannot open {}", archive.display()))?;
    let mut head = [0u8; ARCHIVE_HEADER_LEN];
    file.read_exact(&mut head)
        .with_context(|| format!("{}: too short for a raw archive", archive.display()))?;
    let len = parse_header(&head).with_context(|| format!("{}", archive.display()))?;
    let mut meta = vec![0u8; len as usize];
    file.read_exact(&mut meta)
        .with_context(|| format!("{}: metadata truncated", archive.display()))?;
    if meta.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&meta)
        .with_context(|| format!("{}: the archive's metadata is not JSON", archive.display()))
}

/// True when the metadata of a raw archive says it holds no PET data: written by fpga-sim's
/// OPM-MEG or ultrasound preset, or recorded by a run without PET calibration (`--no-calib`,
/// whose PETsys hits, had there been any, were counted as `no_tdc_calibration` then too).
pub fn archive_holds_streams_only(meta: &serde_json::Value) -> bool {
    let source = meta.get("source").and_then(|s| s.as_str()).unwrap_or("");
    if ["fpga-sim --preset opm", "fpga-sim --preset us"]
        .iter()
        .any(|p| source.starts_with(p))
    {
        return true;
    }
    let none = LoadedCalibration::none().calibration.checksum;
    meta.get("calibration_checksum")
        .and_then(|c| c.as_str())
        .is_some_and(|c| c == none)
}

/// Stream settings for replaying the raw archive `archive`: the `[meg]` / `[ultrasound]`
/// settings the recording run (or fpga-sim) stored in the archive's metadata (key
/// [`crate::process::streams::ARCHIVE_METADATA_KEY`], the channel table's and sequence's text
/// included), with every key of the `[meg]` / `[ultrasound]` sections of the run
/// configuration `config` laid over them (a `channel_table` / `sequence_file` given there
/// replaces the stored text). Returns the resolved settings and notes for the operator.
pub fn archive_stream_settings(
    archive: &Path,
    config: Option<&Path>,
) -> Result<(crate::process::streams::StreamSettings, Vec<String>)> {
    use crate::process::streams::{ARCHIVE_METADATA_KEY, StreamSettings};
    let meta = archive_metadata(archive)?;
    let mut notes = Vec::new();
    let mut base = match meta.get(ARCHIVE_METADATA_KEY) {
        Some(v) => v.clone(),
        None => {
            notes.push(format!(
                "{} stores no stream settings (written before scandaq recorded them): defaults \
                 unless --config FILE gives [meg] / [ultrasound]",
                archive.display()
            ));
            serde_json::json!({})
        }
    };
    if let Some(path) = config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read run configuration {}", path.display()))?;
        // The whole file must be a valid run configuration (typos are named) ...
        crate::acquire::run_config::parse(path, &text)?;
        // ... and the keys it gives in [meg] / [ultrasound] override the archive's.
        let given: toml::Table =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for (section, path_key, text_key) in [
            ("meg", "channel_table", "channel_table_tsv"),
            ("ultrasound", "sequence_file", "sequence_json"),
        ] {
            let Some(toml::Value::Table(keys)) = given.get(section) else {
                continue;
            };
            if !base.is_object() {
                base = serde_json::json!({});
            }
            let target = base
                .as_object_mut()
                .map(|o| o.entry(section).or_insert_with(|| serde_json::json!({})));
            let Some(serde_json::Value::Object(target)) = target else {
                bail!(
                    "{}: stored [{section}] settings are not an object",
                    archive.display()
                );
            };
            if keys.contains_key(path_key) {
                target.remove(text_key);
            }
            for (k, v) in keys {
                target.insert(k.clone(), serde_json::to_value(v)?);
            }
            notes.push(format!(
                "[{section}] keys from {} override the archive's: {}",
                path.display(),
                keys.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let settings: StreamSettings = serde_json::from_value(base).with_context(|| {
        format!(
            "{}: the stream settings stored in the archive are not usable by this scandaq; \
             give them with --config FILE ([meg] / [ultrasound])",
            archive.display()
        )
    })?;
    let settings = settings
        .resolve()
        .with_context(|| format!("stream settings for replaying {}", archive.display()))?;
    if let Some(ch) = settings.meg.channels()? {
        notes.push(format!(
            "MEG channel table: {} channels ({})",
            ch.len(),
            match &settings.meg.channel_table {
                Some(p) => format!("channel_table {}", p.display()),
                None => "stored in the archive".into(),
            }
        ));
    }
    Ok((settings, notes))
}

/// `scandaq replay`: reprocess a .rawf, a raw archive or a PETLINK file.
#[derive(clap::Args)]
#[command(
    mut_arg("calib", |a| a.help("scandaq calibration directory (tdc_calibration.tsv, energy_calibration.tsv, skew.tsv, map_channel.tsv)")),
    mut_arg("petsys_config", |a| a.help("A PETsys config.ini naming the setup's calibration tables")),
    mut_arg("no_calib", |a| a.help("Replay a .sdq archive without PET calibration (PETsys hits are then counted as no_tdc_calibration); an archive whose metadata says it holds OPM-MEG / ultrasound streams only needs no flag")),
)]
pub struct ReplayArgs {
    /// The .rawf file (its .idxf is looked for beside it), a .sdq raw archive, or a PETLINK .l file.
    pub file: PathBuf,
    /// Further `.sdq` raw archives replayed with FILE as one run, each as one input, merged
    /// into one time order as a live run with these inputs would (e.g. the archives the
    /// acquisition nodes of a cluster recorded: docs/cluster.md).
    #[arg(value_name = "MORE_SDQ")]
    pub more: Vec<PathBuf>,
    /// Interfile header of a PETLINK .l file (default: FILE.l.hdr, FILE.l.hdr.STIR, FILE.hdr or a *.hdr* naming FILE).
    #[arg(long)]
    pub header: Option<PathBuf>,
    /// Calibration: `--calib DIR`, `--petsys-config FILE`, or for a .sdq archive `--no-calib`
    /// (none needed when the archive says it holds streams only).
    #[command(flatten)]
    pub calibration: CalibrationArgs,
    /// Run configuration: its [coincidences] keys set the coincidence sorting (over the
    /// PETsys [sw_trigger] settings with --petsys-config; flags override both), and for a .sdq
    /// archive its [meg] / [ultrasound] keys override the stream settings stored in the archive.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output directory; each replay makes a new run-NNNNNN inside it (created if missing, its
    /// parent must exist).
    #[arg(long, value_name = "DIR", default_value = "scandaq-runs")]
    pub out: PathBuf,
    /// Do not read the .idxf beside a .rawf (it only lists acquisition steps): for a corrupt
    /// index.
    #[arg(long)]
    pub no_index: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Also write the raw diagnostic columns (frame, coarse/fine counters, TAC).
    #[arg(long)]
    pub raw_columns: bool,
    /// Start a new singles or coincidence file at this size (e.g. 2GB, 512MiB) [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = scandaq_core::units::parse_bytes)]
    pub rotate_size: Option<u64>,
    /// Page compression of the singles and coincidence tables: lz4 (LZ4_RAW), zstd (level 1),
    /// zstd:N, or none. zstd makes files 6-8 % smaller for about 16 % more encoding CPU
    /// (BENCHMARKS.md).
    #[arg(long, value_name = "CODEC", default_value = "lz4")]
    pub compression: scandaq_sinks::Compression,
    /// Coincidence settings (window, delay, energy window, policy, grouping).
    #[command(flatten)]
    pub coincidences: CoincidenceArgs,
}

/// `scandaq replay`: a PETLINK file into its tables, a raw archive through the live pipeline,
/// or a `.rawf` through the replay pipeline.
pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let ReplayArgs {
        file,
        more,
        header,
        calibration: calib,
        config,
        out,
        no_index,
        no_progress,
        raw_columns,
        rotate_size,
        compression,
        coincidences,
    } = args;
    let rotation = crate::process::pipeline::Rotation {
        max_bytes: rotate_size,
        max_seconds: None,
        commit_interval_s: None,
        compression,
    };
    if let Some(other) = std::iter::once(&file)
        .chain(&more)
        .find(|f| !is_raw_archive(f))
        .filter(|_| !more.is_empty())
    {
        bail!(
            "{}: several files replay as one run only when every one is a .sdq raw archive",
            other.display()
        );
    }
    if petlink_replay::is_petlink(&file, header.as_deref()) {
        let summary = petlink_replay::replay_petlink(&file, header.as_deref(), &out)?;
        petlink_replay::print_summary(&summary);
        return Ok(ExitCode::SUCCESS);
    }
    let archive = is_raw_archive(&file);
    // An archive whose metadata says it holds OPM-MEG / ultrasound streams only needs no
    // PET calibration, and gets no notes about one.
    let streams_only = archive && archive_holds_streams_only(&archive_metadata(&file)?);
    let calibration = match calib.load()? {
        Some(c) if calib.no_calib && streams_only => LoadedCalibration {
            warnings: vec![],
            ..c
        },
        Some(c) if !calib.no_calib || archive => c,
        None if streams_only => LoadedCalibration {
            warnings: vec![],
            ..LoadedCalibration::none()
        },
        _ if archive => bail!(
            "{} holds PETsys data (or does not say it holds streams only): give its calibration \
             with --calib DIR or --petsys-config config.ini (--no-calib replays it without one: \
             PETsys hits are then counted as no_tdc_calibration)",
            file.display()
        ),
        _ => bail!(
            "replay needs a calibration: --calib DIR (scandaq tables) or --petsys-config \
             config.ini (a PETsys setup)"
        ),
    };
    let coincidences = replay_coincidences(&file, &calib, config.as_deref(), &coincidences)?;
    if archive {
        let (streams, notes) = archive_stream_settings(&file, config.as_deref())?;
        for n in notes {
            eprintln!("replay: {n}");
        }
        let live = LiveConfig {
            inputs: std::iter::once(&file)
                .chain(&more)
                .map(|f| InputConfig {
                    spec: InputSpec::Archive(f.clone()),
                    allow: vec![],
                    policy: OverflowPolicy::Block,
                    ring_chunks: 64,
                    ingest: Default::default(),
                })
                .collect(),
            out_dir: out,
            limits: RunLimits::default(),
            raw_columns,
            raw_archive: false,
            stop_at_end_of_stream: false,
            coincidences,
            rotation,
            streams,
            ..LiveConfig::default()
        };
        let summary = run_live(&live, &calibration, LiveHandles::new(RunMode::Replay))?;
        return Ok(finish_run(summary, None));
    }
    let summary = replay(
        &file,
        &calibration,
        &out,
        ReplayOptions {
            progress: !no_progress,
            raw_columns,
            coincidences,
            rotation,
            ignore_index: no_index,
        },
    )?;
    Ok(finish_run(summary, None))
}

/// The coincidence options of a replay of `file`: defaults, PETsys's `[sw_trigger]` with
/// `--petsys-config` (windows at the file's clock), the `[coincidences]` keys of `--config`,
/// then the flags. Prints the notes.
fn replay_coincidences(
    file: &Path,
    calib: &CalibrationArgs,
    config: Option<&Path>,
    flags: &CoincidenceArgs,
) -> Result<CoincidenceOptions> {
    let given = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read run configuration {}", path.display()))?;
            Some((
                crate::acquire::run_config::parse(path, &text)?.coincidence_keys,
                path,
            ))
        }
        None => None,
    };
    let clock_hz = if calib.petsys_config.is_some() && !is_raw_archive(file) {
        rawf_clock_hz(file)?
    } else {
        ClockModel::TOFPET2_DEFAULT.frequency_hz
    };
    let mut notes = Vec::new();
    let options = crate::process::petsys_trigger::resolve_coincidence_options(
        CoincidenceOptions::default(),
        calib.petsys_config.as_deref(),
        f64::from(clock_hz),
        given.as_ref().map(|(t, p)| (t, *p)),
        flags,
        &mut notes,
    )?;
    for n in notes {
        eprintln!("replay: {n}");
    }
    Ok(options)
}

/// The clock frequency a `.rawf` header gives.
fn rawf_clock_hz(rawf: &Path) -> Result<u32> {
    let mut head = [0u8; RAWF_HEADER_LEN];
    let n = std::fs::File::open(rawf)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .with_context(|| format!("cannot read {}", rawf.display()))?;
    let header = RawfHeader::parse(&head[..n])
        .with_context(|| format!("{} is not a usable PETsys .rawf file", rawf.display()))?;
    Ok(header.frequency_hz)
}

fn is_raw_archive(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == scandaq_decoders::archive::ARCHIVE_MAGIC
}
