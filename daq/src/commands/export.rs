//! `scandaq export FORMAT RUN_DIR`: a run in the formats reconstruction and analysis tools
//! read (CASToR list mode, PETSIRD list mode, MNE's raw FIF, a BIDS-MEG recording); the
//! writers are in [`crate::commands::castor`], [`crate::commands::petsird`],
//! [`crate::commands::fif`] and [`crate::commands::bids`].

use crate::commands::{bids, castor, cli, fif, petsird};
use anyhow::Result;
use clap::Subcommand;
use scandaq_core::units::{parse_number_in, parse_whole};
use std::path::PathBuf;
use std::process::ExitCode;

/// The formats `scandaq export` writes.
#[derive(Subcommand)]
pub enum ExportFormat {
    /// CASToR list mode: NAME.cdh + NAME.cdf (prompts), NAME_delayed.* (delayed), scandaq_NAME.hscan + .lut (scanner from the run's map_channel.tsv).
    Castor {
        /// The run directory (OUTDIR/run-NNNNNN).
        run_dir: PathBuf,
        /// Output directory (created if missing, its parent must exist).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Base name of the data files (default: the run directory's name).
        #[arg(long)]
        name: Option<String>,
        /// Coincidence time resolution, FWHM (e.g. 200ps), written as the TOF resolution.
        #[arg(long, value_name = "DURATION", value_parser = scandaq_core::units::parse_time_ps)]
        tof_fwhm: Option<i64>,
        /// Write no TOF field.
        #[arg(long)]
        no_tof: bool,
        /// Do not export the delayed coincidences.
        #[arg(long)]
        no_delayed: bool,
        /// Crystal depth for the scanner description, mm.
        #[arg(long, value_name = "MM", default_value_t = 20.0,
              value_parser = |s: &str| parse_number_in(s, 0.001, 10_000.0, "mm"))]
        crystal_depth: f64,
    },
    /// PETSIRD 0.12 list mode (ETSI PET Scanner Independent Raw Data, yardl binary): prompts and delayeds in time blocks, scanner from the run's map_channel.tsv (docs/petsird.md).
    Petsird(petsird::PetsirdArgs),
    /// Raw FIF (MNE-Python: mne.io.read_raw_fif) of a run's OPM-MEG stream: channels, calibrations, effective sampling rate, data buffers, trigger channel.
    Fif {
        /// The run directory (OUTDIR/run-NNNNNN).
        run_dir: PathBuf,
        /// Output directory (created if missing, its parent must exist; the file is
        /// RUN.fif, e.g. run-000001.fif), or the file to write when the path ends in .fif.
        #[arg(long, value_name = "DIR|FILE.fif")]
        out: PathBuf,
        /// Stream, alignment and split size.
        #[command(flatten)]
        choices: FifChoices,
    },
    /// A BIDS-MEG recording (MNE-BIDS: read_raw_bids): the FIF export plus meg.json, channels.tsv (status from the channel health), events.tsv (from the trigger table), coordsystem.json, scans.tsv, participants.tsv and dataset_description.json (docs/bids.md).
    Bids(BidsArgs),
}

/// What `export fif` and `export bids` choose of the FIF file.
#[derive(clap::Args)]
pub struct FifChoices {
    /// The stream (source id) to export, when the run has several.
    #[arg(long, value_parser = |s: &str| parse_whole(s, 0, u64::from(u32::MAX)).map(|n| n as u32))]
    stream: Option<u32>,
    /// Write the samples as recorded; by default each channel is shifted by its group delay (meg_channels.delay_ps) so all channels refer to the same instants.
    #[arg(long)]
    unaligned: bool,
    /// Largest size of one FIF file (default and at most 2 GiB - 1 MiB); more data continues in linked parts that MNE reads as one (export fif: FILE-1.fif, FILE-2.fif, ...; export bids: ..._split-01_meg.fif, ..._split-02_meg.fif, ...).
    #[arg(long, value_name = "SIZE", value_parser = scandaq_core::units::parse_bytes)]
    split_size: Option<u64>,
}

impl FifChoices {
    /// The FIF export's options, parts named as `naming` says.
    fn options(&self, split_naming: fif::SplitNaming) -> fif::FifOptions {
        fif::FifOptions {
            stream: self.stream,
            unaligned: self.unaligned,
            split_bytes: self.split_size,
            split_naming,
        }
    }
}

/// `scandaq export bids` arguments.
#[derive(clap::Args)]
pub struct BidsArgs {
    /// The run directory (OUTDIR/run-NNNNNN).
    run_dir: PathBuf,
    /// The dataset's root directory (created if missing, its parent must exist; an existing one must be a BIDS root).
    #[arg(long, value_name = "DIR")]
    bids_root: PathBuf,
    /// Subject label (letters and digits): sub-LABEL.
    #[arg(long, value_name = "LABEL")]
    subject: String,
    /// Session label (letters and digits): ses-LABEL.
    #[arg(long, value_name = "LABEL")]
    session: String,
    /// Task label (letters and digits): task-LABEL, also the sidecar's TaskName.
    #[arg(long, value_name = "LABEL")]
    task: String,
    /// Run index (digits, e.g. 1 or 01): run-N.
    #[arg(long, value_name = "INDEX")]
    run: Option<String>,
    /// Replace the recording's files when the dataset already holds them.
    #[arg(long)]
    overwrite: bool,
    /// Stream, alignment and split size.
    #[command(flatten)]
    choices: FifChoices,
    /// PowerLineFrequency, Hz (default: the mains frequency the dashboard's analysis finds in the data).
    #[arg(long, value_name = "HZ", value_parser = |s: &str| parse_number_in(s, 1.0, 1000.0, "Hz"))]
    line_freq: Option<f64>,
    /// Manufacturer of the sensors for meg.json (default n/a: the run does not record it).
    #[arg(long, value_name = "TEXT")]
    manufacturer: Option<String>,
    /// Name of a new dataset (dataset_description.json; an existing one is kept).
    #[arg(long, value_name = "TEXT")]
    dataset_name: Option<String>,
}

/// Carries out `scandaq export bids`.
fn run_bids(a: BidsArgs) -> Result<ExitCode> {
    let options = bids::BidsOptions {
        entities: bids::Entities::new(&a.subject, &a.session, &a.task, a.run.as_deref())?,
        root: a.bids_root,
        fif: a.choices.options(fif::SplitNaming::Bids),
        line_freq_hz: a.line_freq,
        manufacturer: a.manufacturer,
        dataset_name: a.dataset_name,
        overwrite: a.overwrite,
    };
    let x = bids::export_bids(&a.run_dir, &options)?;
    bids::print_summary(&options.root, &x);
    Ok(ExitCode::SUCCESS)
}

/// Carries out `scandaq export FORMAT ...` and prints what was written.
pub fn run(format: ExportFormat) -> Result<ExitCode> {
    match format {
        ExportFormat::Bids(args) => run_bids(args),
        ExportFormat::Castor {
            run_dir,
            out,
            name,
            tof_fwhm,
            no_tof,
            no_delayed,
            crystal_depth,
        } => {
            let e = castor::export_castor(
                &run_dir,
                &castor::CastorOptions {
                    out,
                    name,
                    tof_fwhm_ps: tof_fwhm.map(|t| t as f64),
                    no_tof,
                    no_delayed,
                    crystal_depth_mm: crystal_depth,
                },
            )?;
            castor::print_summary(&e);
            Ok(ExitCode::SUCCESS)
        }
        ExportFormat::Petsird(args) => {
            petsird::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        ExportFormat::Fif {
            run_dir,
            out,
            choices,
        } => {
            let out = cli::out_file(&run_dir, &out, "fif")?;
            let options = choices.options(fif::SplitNaming::Neuromag);
            let e = fif::export_fif_with(&run_dir, &out, &options)?;
            if e.files.len() > 1 {
                println!(
                    "split into {} files: {}",
                    e.files.len(),
                    e.files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            println!(
                "wrote {}: stream {}, {} channels, {} samples at {:.6} Hz, {}{}",
                e.path.display(),
                e.stream,
                e.channels,
                e.samples,
                e.sfreq,
                if e.aligned {
                    format!(
                        "channels aligned by their delays (largest shift {:.3} samples)",
                        e.max_shift_samples
                    )
                } else {
                    "samples as recorded".to_string()
                },
                if e.gap_samples_filled > 0 {
                    format!(
                        " ({} missing samples filled with zeros)",
                        e.gap_samples_filled
                    )
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
