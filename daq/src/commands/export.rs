//! `scandaq export FORMAT RUN_DIR`: a run in the formats reconstruction and analysis tools
//! read (CASToR list mode, PETSIRD list mode, MNE's raw FIF); the writers are in
//! [`crate::commands::castor`], [`crate::commands::petsird`] and [`crate::commands::fif`].

use crate::commands::{castor, cli, fif, petsird};
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
        /// The stream (source id) to export, when the run has several.
        #[arg(long, value_parser = |s: &str| parse_whole(s, 0, u64::from(u32::MAX)).map(|n| n as u32))]
        stream: Option<u32>,
        /// Write the samples as recorded; by default each channel is shifted by its group delay (meg_channels.delay_ps) so all channels refer to the same instants.
        #[arg(long)]
        unaligned: bool,
        /// Largest size of one file (default and at most 2 GiB - 1 MiB); more data continues in FILE-1.fif, FILE-2.fif, ... linked as MNE's split files (mne.io.read_raw_fif(FILE) reads them all).
        #[arg(long, value_name = "SIZE", value_parser = scandaq_core::units::parse_bytes)]
        split_size: Option<u64>,
    },
}

/// Carries out `scandaq export FORMAT ...` and prints what was written.
pub fn run(format: ExportFormat) -> Result<ExitCode> {
    match format {
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
            stream,
            unaligned,
            split_size,
        } => {
            let out = cli::out_file(&run_dir, &out, "fif")?;
            let e = fif::export_fif_with(
                &run_dir,
                &out,
                &fif::FifOptions {
                    stream,
                    unaligned,
                    split_bytes: split_size,
                },
            )?;
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
