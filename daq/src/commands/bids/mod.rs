//! `scandaq export bids RUN_DIR --bids-root DIR --subject S --session X --task T [--run N]`:
//! a run's OPM-MEG stream as one recording of a BIDS dataset (BIDS 1.10, MEG; docs/bids.md),
//! which MNE-BIDS reads with `read_raw_bids`.
//!
//! The data file is the FIF export ([`crate::commands::fif`], split parts named as BIDS
//! wants); `channels.tsv` takes each channel's status from the dashboard's channel health over
//! the run (the report's pass, [`crate::commands::report::stream_health`]); `events.tsv`
//! comes from the run's trigger table; `meg.json` and `coordsystem.json` say what the run
//! knows and `n/a` where it does not. The dataset's `dataset_description.json`, README,
//! `participants.tsv` and the session's `scans.tsv` are created or updated.
//!
//! Everything is read and checked before anything is written; the recording's files are
//! written into a staging directory and moved in together ([`stage`]), and a recording that
//! exists is replaced only with `--overwrite`.
//!
//! By job: [`entities`] (labels, file names), [`events`] (trigger table -> events),
//! [`sidecars`] (JSON and channels.tsv), [`listing`] (participants.tsv, scans.tsv), [`stage`]
//! (atomic placement).

mod entities;
mod events;
mod listing;
mod sidecars;
mod stage;

pub use entities::Entities;

use crate::commands::{cli, fif, report};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// What `export bids` is asked to do.
#[derive(Clone, Debug)]
pub struct BidsOptions {
    /// The dataset's root directory (created when missing, its parent must exist).
    pub root: PathBuf,
    /// The recording's entities.
    pub entities: Entities,
    /// The FIF export's choices (stream, alignment, split size; parts are always named as
    /// BIDS wants).
    pub fif: fif::FifOptions,
    /// Mains frequency for `PowerLineFrequency`, Hz (default: the one the dashboard found).
    pub line_freq_hz: Option<f64>,
    /// `Manufacturer` of the sensors (default `n/a`: the run does not record it).
    pub manufacturer: Option<String>,
    /// `Name` of a new dataset.
    pub dataset_name: Option<String>,
    /// Replace the recording's files when they exist.
    pub overwrite: bool,
}

/// What the export wrote.
#[derive(Clone, Debug)]
pub struct BidsExport {
    /// The FIF export (rate, samples, parts).
    pub fif: fif::FifExport,
    /// The recording's files, in the meg directory.
    pub files: Vec<PathBuf>,
    /// Channels written with status `bad`.
    pub bad_channels: Vec<String>,
    /// Events written.
    pub events: usize,
    /// Files of an earlier export of the same recording that were replaced or removed.
    pub replaced: Vec<PathBuf>,
}

/// Default `Name` of a new dataset.
const DEFAULT_NAME: &str = "scandaq OPM-MEG recordings";

/// Checks that `root` can hold the dataset: created when missing; an existing directory must
/// be a BIDS root (a `dataset_description.json` with a `BIDSVersion`) or hold only what this
/// export writes (left by an interrupted first export).
fn prepare_root(root: &Path) -> Result<()> {
    cli::prepare_dir("--bids-root", root)?;
    let description = root.join("dataset_description.json");
    if description.exists() {
        let text = std::fs::read_to_string(&description)
            .with_context(|| format!("reading {}", description.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not valid JSON: fix or remove it",
                description.display()
            )
        })?;
        if v.get("BIDSVersion").is_none() {
            bail!(
                "{} has no BIDSVersion: not a BIDS dataset description; fix it or give another \
                 --bids-root",
                description.display()
            );
        }
        return Ok(());
    }
    let ours = |n: &str| {
        n.starts_with("sub-")
            || n.starts_with("participants.")
            || n == "README"
            || n.starts_with('.')
    };
    for e in std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if !ours(&name) {
            bail!(
                "--bids-root {} holds {name} but no dataset_description.json: not a BIDS \
                 dataset; give an empty or new directory, or an existing BIDS root",
                root.display()
            );
        }
    }
    Ok(())
}

/// Exports the MEG stream of `run_dir` as the recording `options.entities` of the dataset at
/// `options.root`.
pub fn export_bids(run_dir: &Path, options: &BidsOptions) -> Result<BidsExport> {
    if !run_dir.is_dir() {
        bail!(
            "{}: not a directory: give a run directory (OUTDIR/run-NNNNNN)",
            run_dir.display()
        );
    }
    // Read and check everything first: nothing is written for a run that cannot be exported.
    let stream = fif::choose_stream(run_dir, options.fif.stream)?;
    let channels = fif::read_channel_table(run_dir, stream)?;
    let events = events::read_events(run_dir, stream)?;
    let health = report::stream_health(run_dir, stream)?;
    let manifest = scandaq_sinks::Manifest::read(run_dir).ok();
    let (root, e) = (&options.root, &options.entities);
    prepare_root(root)?;
    e.check_runs_consistent(root)?;
    let replaced = e.existing_files(root)?;
    if !replaced.is_empty() && !options.overwrite {
        let names: Vec<String> = replaced
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        bail!(
            "{} already holds this recording ({}): give --overwrite to replace it, or another \
             --run / --task",
            e.meg_dir(root).display(),
            names.join(", ")
        );
    }
    let mut stage = stage::Stage::open(&e.meg_dir(root), &e.prefix())?;
    let staged = Staged {
        run_dir,
        stream,
        channels: &channels,
        events: &events,
        health: &health,
        recorded_by: manifest.as_ref().map(|m| m.software_version.as_str()),
    };
    let (fif, channels_tsv) = match staged.write(&mut stage, options) {
        Ok(done) => done,
        Err(err) => {
            stage.abandon();
            return Err(err);
        }
    };
    // Files of an earlier export the new one does not replace by name (e.g. split parts).
    let new_names: Vec<String> = stage.names().cloned().collect();
    for old in &replaced {
        let name = old.file_name().map(|n| n.to_string_lossy().into_owned());
        if !name.is_some_and(|n| new_names.contains(&n)) {
            std::fs::remove_file(old).with_context(|| format!("removing {}", old.display()))?;
        }
    }
    let files = stage.commit()?;
    update_lists(root, e, &fif, options)?;
    Ok(BidsExport {
        bad_channels: channels_tsv
            .lines()
            .filter(|l| l.split('\t').nth(5) == Some("bad"))
            .filter_map(|l| l.split('\t').next().map(str::to_string))
            .collect(),
        events: events.len(),
        fif,
        files,
        replaced,
    })
}

/// What the recording's files are made of, all read before anything is written.
struct Staged<'a> {
    run_dir: &'a Path,
    stream: u32,
    channels: &'a [fif::Channel],
    events: &'a [events::Event],
    health: &'a report::StreamHealth,
    /// The scandaq version that recorded the run.
    recorded_by: Option<&'a str>,
}

impl Staged<'_> {
    /// Writes the recording's files into `stage`: the FIF export, then its sidecars (the
    /// session's coordsystem.json too); returns the export and the channels.tsv text.
    fn write(
        &self,
        stage: &mut stage::Stage,
        options: &BidsOptions,
    ) -> Result<(fif::FifExport, String)> {
        let e = &options.entities;
        let prefix = e.prefix();
        let fif = fif::export_fif_with(
            self.run_dir,
            &stage.path(&format!("{prefix}_meg.fif")),
            &fif::FifOptions {
                stream: Some(self.stream),
                split_naming: fif::SplitNaming::Bids,
                ..options.fif.clone()
            },
        )?;
        stage.add_data(&fif.files);
        let mains = self.health.mains_hz;
        let sidecar = sidecars::MegSidecar {
            task: &e.task,
            line_freq_hz: options.line_freq_hz.or((mains > 0.0).then_some(mains)),
            manufacturer: options.manufacturer.as_deref(),
            recorded_by: self.recorded_by,
        };
        let channels_tsv = sidecars::channels_tsv(self.channels, fif.sfreq, self.health);
        let json = |v: serde_json::Value| format!("{v:#}\n").into_bytes();
        stage.write(&format!("{prefix}_channels.tsv"), channels_tsv.as_bytes())?;
        let events_tsv = events::events_tsv(self.events, fif.first_sample, fif.sfreq);
        stage.write(&format!("{prefix}_events.tsv"), events_tsv.as_bytes())?;
        stage.write(
            &format!("{prefix}_events.json"),
            &json(events::events_json(self.events, self.stream)),
        )?;
        stage.write(
            &format!("{}_coordsystem.json", e.session_prefix()),
            &json(sidecars::coordsystem_json()),
        )?;
        stage.write(
            &format!("{prefix}_meg.json"),
            &json(sidecars::meg_json(&sidecar, &fif, self.channels)),
        )?;
        Ok((fif, channels_tsv))
    }
}

/// After the recording is in place: its rows in the session's `scans.tsv` and in
/// `participants.tsv`, then (for a new dataset) README and `dataset_description.json`, last.
fn update_lists(
    root: &Path,
    e: &Entities,
    fif: &fif::FifExport,
    options: &BidsOptions,
) -> Result<()> {
    let write = |path: &Path, bytes: &[u8]| -> Result<()> {
        Ok(scandaq_sinks::durable_file::write_atomic(path, bytes)?)
    };
    let scans = e
        .session_dir(root)
        .join(format!("{}_scans.tsv", e.session_prefix()));
    let acq_time = listing::acq_time(fif.meas_ns);
    let rows: Vec<Vec<(&str, String)>> = fif
        .files
        .iter()
        .filter_map(|f| f.file_name())
        .map(|n| {
            vec![
                ("filename", format!("meg/{}", n.to_string_lossy())),
                ("acq_time", acq_time.clone()),
            ]
        })
        .collect();
    let owned = |f: &str| f.strip_prefix("meg/").is_some_and(|n| e.owns(n));
    write(
        &scans,
        listing::merged(&scans, "filename", owned, &rows)?.as_bytes(),
    )?;
    let participants = root.join("participants.tsv");
    let id = format!("sub-{}", e.subject);
    let row = vec![vec![("participant_id", id.clone())]];
    let text = listing::merged(&participants, "participant_id", |p| p == id, &row)?;
    write(&participants, text.as_bytes())?;
    let pj = root.join("participants.json");
    if !pj.exists() {
        write(
            &pj,
            format!("{:#}\n", sidecars::participants_json()).as_bytes(),
        )?;
    }
    let name = options.dataset_name.as_deref().unwrap_or(DEFAULT_NAME);
    let readme = root.join("README");
    if !readme.exists() {
        write(&readme, sidecars::readme(name).as_bytes())?;
    }
    let description = root.join("dataset_description.json");
    if !description.exists() {
        let v = sidecars::dataset_description(name);
        write(&description, format!("{v:#}\n").as_bytes())?;
    }
    Ok(())
}

/// Prints what `export bids` wrote.
pub fn print_summary(root: &Path, x: &BidsExport) {
    let data: Vec<String> = x
        .fif
        .files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    println!(
        "wrote BIDS recording {} in {}: {} ({} channels, {} samples at {:.6} Hz), {} files in all",
        data.join(", "),
        root.display(),
        if x.fif.files.len() > 1 {
            "split"
        } else {
            "one file"
        },
        x.fif.channels,
        x.fif.samples,
        x.fif.sfreq,
        x.files.len()
    );
    println!(
        "channels.tsv: {} bad ({}); events.tsv: {} events{}",
        x.bad_channels.len(),
        if x.bad_channels.is_empty() {
            "none".to_string()
        } else {
            x.bad_channels.join(", ")
        },
        x.events,
        if x.replaced.is_empty() {
            String::new()
        } else {
            format!(
                "; replaced {} files of the earlier export",
                x.replaced.len()
            )
        }
    );
}
