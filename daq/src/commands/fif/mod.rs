//! `scandaq export fif RUN_DIR --out FILE.fif`: writes one MEG stream of a run as a raw FIF
//! file that MNE-Python opens with `mne.io.read_raw_fif` (docs/meg.md "FIF export").
//!
//! FIF is a tagged big-endian format: each tag is `kind, type, size, next` (four i32) and its
//! data. The file holds the compulsory header tags (file id, directory pointer -1, free list
//! -1), a measurement block with the measurement info (channel count, sampling rate = the
//! stream's effective rate from the clock fit, filter band, measurement date = corrected time of
//! the first sample, one channel-info record per channel) and a raw-data block whose data
//! buffers are the stored blocks' samples as 32-bit integers, so MNE's values are
//! `raw * cal * range` (tesla for the OPM channels, the bitmask for the trigger channel). Tag
//! and block numbers are the public FIFF constants (as in MNE-Python's `constants.py`).
//!
//! Sample gaps (missing samples counted by the run) are filled with zeros so the time axis
//! stays uniform; the report says how many.
//!
//! By default every channel is shifted by its group delay (`meg_channels.delay_ps`,
//! fractional-sample windowed-sinc interpolation, [`align`]) so all channels refer to the same
//! instants; the buffers are then 32-bit floats (raw counts, MNE still applies cal · range).
//! `--unaligned` writes the samples as recorded (32-bit integers).
//!
//! A file holds at most [`MAX_FIF_BYTES`] (FIF offsets are 32-bit): beyond it, or beyond
//! `--split-size`, the export continues in `X-1.fif`, `X-2.fif`, ..., each a whole FIF file
//! linked to its neighbours by `FIFFB_REF` blocks as MNE-Python writes split raw files
//! ([`SplitNaming::Bids`]: `X_split-01_meg.fif`, `X_split-02_meg.fif`, ... for `export bids`).
//!
//! By job: [`tables`] reads the run's MEG tables, [`tags`] writes FIF tags and the measurement
//! header ([`fiff`] holds the constants), [`parts`] writes the (split) files and [`data`] the
//! data buffers; [`align`] shifts the channels.

pub mod align;
mod data;
mod fiff;
mod parts;
mod tables;
mod tags;

use anyhow::{Result, bail};
use data::BlockWriter;
use parts::PartWriter;
use scandaq_sinks::meg_tables::BLOCKS_TABLE;
use std::path::{Path, PathBuf};
use tables::BlockSurvey;
use tags::MeasurementInfo;

pub use parts::{SplitNaming, part_path, split_part_path};
pub use tables::{Channel, batches, choose_stream, read_channel_table};

/// FIF addresses tags with 32-bit offsets: the default (and largest) size of one file of a
/// split set (`X.fif`, `X-1.fif`, ...).
pub const MAX_FIF_BYTES: u64 = (1 << 31) - (1 << 20);
/// Room kept at the end of each split file for the next-file reference and the end tags.
const END_RESERVE: u64 = 4096;

/// What the export wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct FifExport {
    /// The file written.
    pub path: PathBuf,
    /// Stream exported.
    pub stream: u32,
    /// Channels.
    pub channels: usize,
    /// Samples per channel (gaps filled included).
    pub samples: u64,
    /// Zero samples inserted for gaps.
    pub gap_samples_filled: u64,
    /// Sampling rate written, Hz.
    pub sfreq: f64,
    /// Channels were shifted by their delays (float buffers); false: as recorded.
    pub aligned: bool,
    /// Largest channel shift applied, samples (0 when not aligned).
    pub max_shift_samples: f64,
    /// The files written, in order (one unless the data exceeded the split size).
    pub files: Vec<PathBuf>,
    /// The stream's sample index (`meg_blocks.first_sample`, `triggers.sample`) of FIF
    /// sample 0.
    pub first_sample: i64,
    /// Measurement date: the corrected time of FIF sample 0, ns since the Unix epoch (0 when
    /// no block has a corrected time).
    pub meas_ns: i64,
}

/// Choices of the export.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FifOptions {
    /// The stream (source id) to export; `None`: the run's only MEG stream.
    pub stream: Option<u32>,
    /// Write the samples as recorded instead of shifting each channel by its delay.
    pub unaligned: bool,
    /// Largest size of one file, bytes (default and at most [`MAX_FIF_BYTES`]); beyond it
    /// the export continues in `X-1.fif`, `X-2.fif`, ... linked as MNE links split files.
    pub split_bytes: Option<u64>,
    /// How split parts are named (MNE's neuromag naming by default; BIDS for `export bids`).
    pub split_naming: SplitNaming,
}

/// Exports stream `stream` (the only one when `None`) of `run_dir` to `out`, each channel
/// shifted by its delay.
pub fn export_fif(run_dir: &Path, out: &Path, stream: Option<u32>) -> Result<FifExport> {
    export_fif_with(
        run_dir,
        out,
        &FifOptions {
            stream,
            ..FifOptions::default()
        },
    )
}

/// Exports a MEG stream of `run_dir` to `out` as `options` say.
pub fn export_fif_with(run_dir: &Path, out: &Path, options: &FifOptions) -> Result<FifExport> {
    let stream = choose_stream(run_dir, options.stream)?;
    let channels = read_channel_table(run_dir, stream)?;
    let blocks_path = run_dir.join(scandaq_sinks::meg_tables::file_name(BLOCKS_TABLE, stream));
    let nch = channels.len();
    // First pass, without the payloads: sample range, times, shape, a rate.
    let survey = BlockSurvey::read(&blocks_path, nch)?;
    let Some(first) = survey.first else {
        bail!("{} has no blocks", blocks_path.display());
    };
    if survey.last_end - first > i64::from(i32::MAX) {
        bail!(
            "{} samples: FIF numbers samples with 32-bit integers; export a shorter run",
            survey.last_end - first
        );
    }
    let split_bytes = options.split_bytes.unwrap_or(MAX_FIF_BYTES);
    if split_bytes > MAX_FIF_BYTES {
        bail!(
            "a split size of {split_bytes} bytes is beyond FIF's 32-bit file offsets: give at \
             most {MAX_FIF_BYTES} (2 GiB - 1 MiB)"
        );
    }
    let sfreq = survey.sampling_rate()?;
    let alignment = Alignment::new(&channels, sfreq, options.unaligned);
    let meas_ns = survey.measurement_ns(first, sfreq);
    let info = MeasurementInfo {
        stream,
        channels: &channels,
        sfreq,
        meas_ns,
        aligned_shift_samples: alignment
            .aligner
            .is_some()
            .then_some(alignment.max_shift_samples),
    };
    let parts = PartWriter::new(
        out,
        info.header()?,
        info.id(),
        split_bytes,
        options.split_naming,
    );
    let aligned = alignment.aligner.is_some();
    let mut blocks = BlockWriter::new(parts, nch, first, alignment.aligner);
    blocks.write_blocks(&blocks_path)?;
    let (filled, files) = blocks.finish()?;
    Ok(FifExport {
        path: out.to_path_buf(),
        stream,
        channels: nch,
        samples: survey.total + filled,
        gap_samples_filled: filled,
        sfreq,
        aligned,
        max_shift_samples: alignment.max_shift_samples,
        files,
        first_sample: first,
        meas_ns,
    })
}

/// How the channels are shifted: by their delays in samples of the written rate (trigger
/// bitmasks never), unless `--unaligned` or no channel has a delay.
struct Alignment {
    /// `Some` when the channels are shifted.
    aligner: Option<align::DelayAligner>,
    /// Largest shift, samples (0 when not aligned).
    max_shift_samples: f64,
}

impl Alignment {
    fn new(channels: &[Channel], sfreq: f64, unaligned: bool) -> Self {
        let shifts: Vec<f64> = channels
            .iter()
            .map(|c| c.delay_ps as f64 * 1e-12 * sfreq)
            .collect();
        let interpolate: Vec<bool> = channels.iter().map(|c| c.kind != "trigger").collect();
        let aligner = align::DelayAligner::new(&shifts, &interpolate);
        if unaligned || aligner.is_identity() {
            return Self {
                aligner: None,
                max_shift_samples: 0.0,
            };
        }
        Self {
            aligner: Some(aligner),
            max_shift_samples: shifts
                .iter()
                .zip(&interpolate)
                .filter(|(_, i)| **i)
                .map(|(s, _)| s.abs())
                .fold(0.0, f64::max),
        }
    }
}
