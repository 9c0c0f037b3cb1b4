//! Reading the run's MEG tables for the FIF export: choosing the stream, its channel table
//! (names, calibrations, delays, positions), and a first pass over its blocks without their
//! payloads (sample range, corrected times, a rate) that fixes the file's sampling rate and
//! measurement date.

use anyhow::{Context, Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt16Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use scandaq_sinks::meg_tables::{BLOCKS_TABLE, CHANNELS_TABLE};
use std::path::Path;

/// One row of `meg_channels`.
#[derive(Clone, Debug, PartialEq)]
pub struct Channel {
    /// Channel name (at most 15 ASCII characters in FIF).
    pub name: String,
    /// `meg_mag`, `meg_grad`, `trigger`, ...
    pub kind: String,
    /// Physical unit of `raw * cal * range` (`T`, `T/m`, `bitmask`, ...).
    pub unit: String,
    /// Calibration: unit per raw count (times `range`).
    pub cal: f64,
    /// Range factor.
    pub range: f64,
    /// Group delay, ps (0 when unknown).
    pub delay_ps: i64,
    /// Position, m, in the channel table's frame.
    pub pos: [f64; 3],
    /// Sensitive axis.
    pub ori: [f64; 3],
}

/// All record batches of a Parquet file.
fn read_table(path: &Path) -> Result<Vec<RecordBatch>> {
    batches(path, None)?.collect()
}

/// The record batches of a Parquet file, read one at a time (only `columns` when given), so
/// a run of any size is exported in bounded memory.
pub fn batches(
    path: &Path,
    columns: Option<&[&str]>,
) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading {}", path.display()))?;
    if let Some(columns) = columns {
        let mask = parquet::arrow::ProjectionMask::columns(
            builder.parquet_schema(),
            columns.iter().copied(),
        );
        builder = builder.with_projection(mask);
    }
    let reader = builder
        .build()
        .with_context(|| format!("reading {}", path.display()))?;
    let shown = path.display().to_string();
    Ok(reader.map(move |b| b.with_context(|| format!("reading {shown}"))))
}

/// The streams whose `meg_blocks` files the run directory holds.
fn streams_in(run_dir: &Path) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    let prefix = format!("{BLOCKS_TABLE}-source");
    for e in std::fs::read_dir(run_dir).with_context(|| format!("listing {}", run_dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(id) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".parquet"))
            .and_then(|r| r.parse::<u32>().ok())
        {
            out.push(id);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Column `name` of a batch of `file`.
pub(super) fn col<'a>(
    b: &'a RecordBatch,
    name: &str,
    file: &str,
) -> Result<&'a arrow_array::ArrayRef> {
    b.column_by_name(name)
        .with_context(|| format!("{file} has no column {name}"))
}

/// The rows of a `meg_channels` table.
fn read_channels(path: &Path) -> Result<Vec<Channel>> {
    let file = path.display().to_string();
    let mut out = Vec::new();
    for b in read_table(path)? {
        let name = col(&b, "name", &file)?.as_string::<i32>();
        let kind = col(&b, "kind", &file)?.as_string::<i32>();
        let unit = col(&b, "unit", &file)?.as_string::<i32>();
        let f = |n: &str| -> Result<Vec<f64>> {
            Ok(col(&b, n, &file)?
                .as_primitive::<Float64Type>()
                .values()
                .to_vec())
        };
        let (cal, range) = (f("cal")?, f("range")?);
        let (x, y, z) = (f("x_m")?, f("y_m")?, f("z_m")?);
        let (ox, oy, oz) = (f("ox")?, f("oy")?, f("oz")?);
        let delay = col(&b, "delay_ps", &file)?.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.push(Channel {
                name: name.value(i).to_string(),
                kind: kind.value(i).to_string(),
                unit: unit.value(i).to_string(),
                cal: cal[i],
                range: range[i],
                delay_ps: if delay.is_valid(i) { delay.value(i) } else { 0 },
                pos: [x[i], y[i], z[i]],
                ori: [ox[i], oy[i], oz[i]],
            });
        }
    }
    Ok(out)
}

/// The stream to export: `requested` when the run has it, else the run's only MEG stream.
pub fn choose_stream(run_dir: &Path, requested: Option<u32>) -> Result<u32> {
    let streams = streams_in(run_dir)?;
    Ok(match (requested, streams.as_slice()) {
        (Some(s), _) if streams.contains(&s) => s,
        (Some(s), _) => bail!(
            "{} has no meg_blocks of stream {s} (streams: {streams:?})",
            run_dir.display()
        ),
        (None, [one]) => *one,
        (None, []) => bail!(
            "{} has no meg_blocks-source*.parquet: not a run with an OPM-MEG stream",
            run_dir.display()
        ),
        (None, many) => {
            bail!("the run has several MEG streams {many:?}: choose one with --stream ID")
        }
    })
}

/// The channels of `stream`, checked to fit FIF's channel names.
pub fn read_channel_table(run_dir: &Path, stream: u32) -> Result<Vec<Channel>> {
    let ch_path = run_dir.join(scandaq_sinks::meg_tables::file_name(CHANNELS_TABLE, stream));
    if !ch_path.exists() {
        bail!(
            "{} is missing: the run had no [meg] channel_table, so channel names and calibrations are unknown",
            ch_path.display()
        );
    }
    let channels = read_channels(&ch_path)?;
    for c in &channels {
        if c.name.is_empty() || c.name.len() > 15 || !c.name.is_ascii() {
            bail!(
                "channel name {:?} does not fit FIF's 15-character ASCII channel names",
                c.name
            );
        }
    }
    Ok(channels)
}

/// What the first pass over `meg_blocks` (without the payloads) found.
#[derive(Debug, Default)]
pub(super) struct BlockSurvey {
    /// First sample of the first block.
    pub(super) first: Option<i64>,
    /// End (exclusive) of the last block.
    pub(super) last_end: i64,
    /// (sample, corrected time ns) of the first and last blocks with a corrected time.
    t0: Option<(i64, i64)>,
    t_last: Option<(i64, i64)>,
    /// Samples in all blocks.
    pub(super) total: u64,
    /// The first rate given, Hz.
    some_rate: Option<f64>,
}

impl BlockSurvey {
    /// Reads the blocks' shapes and times from `blocks_path`; every block must have `nch`
    /// channels.
    pub(super) fn read(blocks_path: &Path, nch: usize) -> Result<Self> {
        let file = blocks_path.display().to_string();
        let mut survey = Self::default();
        let columns = [
            "first_sample",
            "n_samples",
            "n_channels",
            "t_first_ns",
            "rate_hz",
        ];
        for b in batches(blocks_path, Some(&columns))? {
            survey.add_batch(&b?, nch, &file)?;
        }
        Ok(survey)
    }

    fn add_batch(&mut self, b: &RecordBatch, nch: usize, file: &str) -> Result<()> {
        if self.some_rate.is_none() {
            let r = col(b, "rate_hz", file)?.as_primitive::<Float64Type>();
            self.some_rate = (0..b.num_rows())
                .find(|&i| r.is_valid(i))
                .map(|i| r.value(i));
        }
        let fs = col(b, "first_sample", file)?.as_primitive::<Int64Type>();
        let ns = col(b, "n_samples", file)?.as_primitive::<UInt16Type>();
        let nc = col(b, "n_channels", file)?.as_primitive::<UInt16Type>();
        let t = col(b, "t_first_ns", file)?.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if nc.value(i) as usize != nch {
                bail!(
                    "block at sample {} has {} channels, meg_channels describes {nch}",
                    fs.value(i),
                    nc.value(i)
                );
            }
            self.first.get_or_insert(fs.value(i));
            self.last_end = fs.value(i) + i64::from(ns.value(i));
            self.total += u64::from(ns.value(i));
            if t.is_valid(i) {
                let p = (fs.value(i), t.value(i));
                self.t0.get_or_insert(p);
                self.t_last = Some(p);
            }
        }
        Ok(())
    }

    /// The stream's effective rate from its corrected times (the first rate given when fewer
    /// than two blocks have one), Hz.
    pub(super) fn sampling_rate(&self) -> Result<f64> {
        Ok(match (self.t0, self.t_last) {
            (Some((s0, n0)), Some((s1, n1))) if s1 > s0 && n1 > n0 => {
                (s1 - s0) as f64 * 1e9 / (n1 - n0) as f64
            }
            _ => self
                .some_rate
                .context("no block has a corrected time or rate: cannot tell the sampling rate")?,
        })
    }

    /// The corrected time of sample `first` at rate `sfreq`, ns (0 when no block has a time).
    pub(super) fn measurement_ns(&self, first: i64, sfreq: f64) -> i64 {
        self.t0.map_or(0, |(s, n)| {
            n - ((s - first) as f64 * 1e9 / sfreq).round() as i64
        })
    }
}
