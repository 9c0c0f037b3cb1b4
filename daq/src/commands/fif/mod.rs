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
//! linked to its neighbours by `FIFFB_REF` blocks as MNE-Python writes split raw files.

pub mod align;

use anyhow::{Context, Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt16Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use scandaq_sinks::meg_tables::{BLOCKS_TABLE, CHANNELS_TABLE};
use std::io::Write;
use std::path::{Path, PathBuf};

mod fiff {
    pub const FILE_ID: i32 = 100;
    pub const DIR_POINTER: i32 = 101;
    pub const BLOCK_ID: i32 = 103;
    pub const BLOCK_START: i32 = 104;
    pub const BLOCK_END: i32 = 105;
    pub const FREE_LIST: i32 = 106;
    pub const NOP: i32 = 108;
    pub const NCHAN: i32 = 200;
    pub const SFREQ: i32 = 201;
    pub const CH_INFO: i32 = 203;
    pub const MEAS_DATE: i32 = 204;
    pub const DESCRIPTION: i32 = 206;
    pub const T_STRING: i32 = 10;
    pub const FIRST_SAMPLE: i32 = 208;
    pub const LOWPASS: i32 = 219;
    pub const HIGHPASS: i32 = 223;
    pub const DATA_BUFFER: i32 = 300;
    pub const REF_ROLE: i32 = 115;
    pub const REF_FILE_ID: i32 = 116;
    pub const REF_FILE_NUM: i32 = 117;
    pub const REF_FILE_NAME: i32 = 118;
    pub const B_REF: i32 = 118;
    pub const ROLE_PREV_FILE: i32 = 1;
    pub const ROLE_NEXT_FILE: i32 = 2;
    pub const B_MEAS: i32 = 100;
    pub const B_MEAS_INFO: i32 = 101;
    pub const B_RAW_DATA: i32 = 102;
    pub const T_VOID: i32 = 0;
    pub const T_INT: i32 = 3;
    pub const T_FLOAT: i32 = 4;
    pub const T_CH_INFO_STRUCT: i32 = 30;
    pub const T_ID_STRUCT: i32 = 31;
    pub const NEXT_SEQ: i32 = 0;
    pub const NEXT_NONE: i32 = -1;
    pub const VERSION: i32 = (1 << 16) | 4;
    pub const MEG_CH: i32 = 1;
    pub const STIM_CH: i32 = 3;
    pub const MISC_CH: i32 = 502;
    pub const COIL_NONE: i32 = 0;
    /// QuSpin zero-field OPM, second generation (a point magnetometer).
    pub const COIL_OPM_MAG: i32 = 8002;
    pub const UNIT_T: i32 = 112;
    pub const UNIT_T_M: i32 = 201;
    pub const UNIT_V: i32 = 107;
    pub const UNIT_NONE: i32 = -1;
}

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
}

struct Channel {
    name: String,
    kind: String,
    cal: f64,
    range: f64,
    delay_ps: i64,
    pos: [f64; 3],
    ori: [f64; 3],
}

fn read_table(path: &Path) -> Result<Vec<RecordBatch>> {
    batches(path, None)?.collect()
}

/// The record batches of a Parquet file, read one at a time (only `columns` when given), so
/// a run of any size is exported in bounded memory.
fn batches(
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

fn col<'a>(b: &'a RecordBatch, name: &str, file: &str) -> Result<&'a arrow_array::ArrayRef> {
    b.column_by_name(name)
        .with_context(|| format!("{file} has no column {name}"))
}

fn read_channels(path: &Path) -> Result<Vec<Channel>> {
    let file = path.display().to_string();
    let mut out = Vec::new();
    for b in read_table(path)? {
        let name = col(&b, "name", &file)?.as_string::<i32>();
        let kind = col(&b, "kind", &file)?.as_string::<i32>();
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

struct Fif<W: Write> {
    w: W,
    /// Bytes written.
    pos: u64,
}

impl<W: Write> Fif<W> {
    fn tag(&mut self, kind: i32, typ: i32, data: &[u8], next: i32) -> Result<()> {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_be_bytes());
        h[4..8].copy_from_slice(&typ.to_be_bytes());
        h[8..12].copy_from_slice(&(data.len() as i32).to_be_bytes());
        h[12..16].copy_from_slice(&next.to_be_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(data)?;
        self.pos += 16 + data.len() as u64;
        Ok(())
    }
    fn int(&mut self, kind: i32, v: &[i32]) -> Result<()> {
        let d: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
        self.tag(kind, fiff::T_INT, &d, fiff::NEXT_SEQ)
    }
    fn float(&mut self, kind: i32, v: f32) -> Result<()> {
        self.tag(kind, fiff::T_FLOAT, &v.to_be_bytes(), fiff::NEXT_SEQ)
    }
    fn id(&mut self, kind: i32, secs: i32, usecs: i32) -> Result<()> {
        let d: Vec<u8> = [fiff::VERSION, 0x5CA9, 0xDA0, secs, usecs]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        self.tag(kind, fiff::T_ID_STRUCT, &d, fiff::NEXT_SEQ)
    }
    fn ch_info(&mut self, index: i32, ch: &Channel) -> Result<()> {
        let (kind, coil, unit) = match ch.kind.as_str() {
            "meg_mag" => (fiff::MEG_CH, fiff::COIL_OPM_MAG, fiff::UNIT_T),
            "meg_grad" => (fiff::MEG_CH, fiff::COIL_NONE, fiff::UNIT_T_M),
            "trigger" => (fiff::STIM_CH, fiff::COIL_NONE, fiff::UNIT_V),
            _ => (fiff::MISC_CH, fiff::COIL_NONE, fiff::UNIT_NONE),
        };
        let mut d = Vec::with_capacity(96);
        for v in [index + 1, index + 1, kind] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        d.extend_from_slice(&(ch.range as f32).to_be_bytes());
        d.extend_from_slice(&(ch.cal as f32).to_be_bytes());
        d.extend_from_slice(&coil.to_be_bytes());
        // loc: r0, ex, ey, ez (ez = the sensitive axis).
        let ez = ch.ori;
        let (ex, ey) = orthonormal_pair(ez);
        for v in ch.pos.iter().chain(&ex).chain(&ey).chain(&ez) {
            d.extend_from_slice(&(*v as f32).to_be_bytes());
        }
        d.extend_from_slice(&unit.to_be_bytes());
        d.extend_from_slice(&0i32.to_be_bytes());
        let mut name = [0u8; 16];
        name[..ch.name.len()].copy_from_slice(ch.name.as_bytes());
        d.extend_from_slice(&name);
        self.tag(fiff::CH_INFO, fiff::T_CH_INFO_STRUCT, &d, fiff::NEXT_SEQ)
    }
}

/// Two unit vectors completing `z` to an orthonormal frame (zeros for a zero `z`).
fn orthonormal_pair(z: [f64; 3]) -> ([f64; 3], [f64; 3]) {
    let n = (z[0] * z[0] + z[1] * z[1] + z[2] * z[2]).sqrt();
    if n == 0.0 {
        return ([0.0; 3], [0.0; 3]);
    }
    let z = [z[0] / n, z[1] / n, z[2] / n];
    let a = if z[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let cross = |u: [f64; 3], v: [f64; 3]| {
        [
            u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0],
        ]
    };
    let x = cross(a, z);
    let xn = (x[0] * x[0] + x[1] * x[1] + x[2] * x[2]).sqrt();
    let x = [x[0] / xn, x[1] / xn, x[2] / xn];
    (x, cross(z, x))
}

/// The name of part `k` of a split set: `X.fif`, `X-1.fif`, `X-2.fif`, ... (MNE's
/// "neuromag" split naming).
pub fn part_path(out: &Path, k: u32) -> PathBuf {
    if k == 0 {
        return out.to_path_buf();
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let part = match name.strip_suffix(".fif") {
        Some(stem) => format!("{stem}-{k}.fif"),
        None => format!("{name}-{k}"),
    };
    out.with_file_name(part)
}

/// The files of a (possibly split) FIF export: each part is a whole FIF file (file id,
/// measurement info, a raw-data block starting at its first sample), linked to its
/// neighbours by `FIFFB_REF` blocks (role, file name, measurement id, part number) as
/// MNE-Python writes and follows them. Parts are written as `NAME.inprogress` and renamed
/// when all are complete.
struct PartWriter {
    out: PathBuf,
    /// File id, directory pointer, free list, measurement block start, its id and the
    /// measurement info: the same at the start of every part.
    head: Vec<u8>,
    id: (i32, i32),
    split_bytes: u64,
    fif: Option<Fif<std::io::BufWriter<std::fs::File>>>,
    part: u32,
    /// (temporary, final) names of the parts written.
    parts: Vec<(PathBuf, PathBuf)>,
}

impl PartWriter {
    fn tmp_path(&self, k: u32) -> PathBuf {
        let p = part_path(&self.out, k);
        let mut name = p.file_name().unwrap_or_default().to_os_string();
        name.push(".inprogress");
        p.with_file_name(name)
    }

    /// Starts part `self.part` whose first sample is `first_sample` (0 = the export's first).
    fn open(&mut self, first_sample: i64) -> Result<()> {
        let tmp = self.tmp_path(self.part);
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut fif = Fif {
            w: std::io::BufWriter::new(f),
            pos: 0,
        };
        fif.w
            .write_all(&self.head)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fif.pos = self.head.len() as u64;
        fif.int(fiff::BLOCK_START, &[fiff::B_RAW_DATA])?;
        let first = i32::try_from(first_sample)
            .context("the export is longer than 2^31 samples (FIF sample numbers are 32-bit)")?;
        fif.int(fiff::FIRST_SAMPLE, &[first])?;
        if self.part > 0 {
            let prev = part_path(&self.out, self.part - 1);
            self.reference(&mut fif, fiff::ROLE_PREV_FILE, &prev, self.part - 1)?;
        }
        self.parts.push((tmp, part_path(&self.out, self.part)));
        self.fif = Some(fif);
        Ok(())
    }

    fn reference(
        &self,
        fif: &mut Fif<std::io::BufWriter<std::fs::File>>,
        role: i32,
        file: &Path,
        num: u32,
    ) -> Result<()> {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        fif.int(fiff::BLOCK_START, &[fiff::B_REF])?;
        fif.int(fiff::REF_ROLE, &[role])?;
        fif.tag(
            fiff::REF_FILE_NAME,
            fiff::T_STRING,
            name.as_bytes(),
            fiff::NEXT_SEQ,
        )?;
        fif.id(fiff::REF_FILE_ID, self.id.0, self.id.1)?;
        fif.int(fiff::REF_FILE_NUM, &[num as i32])?;
        fif.int(fiff::BLOCK_END, &[fiff::B_REF])?;
        Ok(())
    }

    /// Ends the open part (with a reference to the next one when `more`).
    fn close_part(&mut self, more: bool) -> Result<()> {
        let Some(mut fif) = self.fif.take() else {
            return Ok(());
        };
        if more {
            let next = part_path(&self.out, self.part + 1);
            self.reference(&mut fif, fiff::ROLE_NEXT_FILE, &next, self.part + 1)?;
        }
        fif.int(fiff::BLOCK_END, &[fiff::B_RAW_DATA])?;
        fif.int(fiff::BLOCK_END, &[fiff::B_MEAS])?;
        fif.tag(fiff::NOP, fiff::T_VOID, &[], fiff::NEXT_NONE)?;
        let tmp = self.tmp_path(self.part);
        let file = fif
            .w
            .into_inner()
            .map_err(|e| anyhow::anyhow!("writing {}: {}", tmp.display(), e.error()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        Ok(())
    }

    /// Writes one data buffer starting at `first_sample`, in a new part when it would not
    /// fit the current one.
    fn buffer(&mut self, first_sample: i64, typ: i32, bytes: &[u8]) -> Result<()> {
        let need = 16 + bytes.len() as u64 + END_RESERVE;
        match &self.fif {
            None => self.open(first_sample)?,
            Some(f) if f.pos + need > self.split_bytes => {
                self.close_part(true)?;
                self.part += 1;
                self.open(first_sample)?;
            }
            Some(_) => {}
        }
        let fif = self.fif.as_mut().context("no open FIF part")?;
        if fif.pos + need > self.split_bytes {
            bail!(
                "a split size of {} bytes cannot hold the measurement info and one data buffer \
                 plus the end tags: give at least {} bytes",
                self.split_bytes,
                fif.pos + need
            );
        }
        fif.tag(fiff::DATA_BUFFER, typ, bytes, fiff::NEXT_SEQ)
    }

    /// Closes the last part and renames every part to its final name; returns them.
    fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.close_part(false)?;
        let mut out = Vec::new();
        for (tmp, path) in &self.parts {
            std::fs::rename(tmp, path)
                .with_context(|| format!("renaming to {}", path.display()))?;
            out.push(path.clone());
        }
        // Best effort: the renames survive a crash.
        if let Some(dir) = self.out.parent() {
            scandaq_sinks::durable_file::sync_dir(dir);
        }
        Ok(out)
    }
}

/// Writes the raw-data buffers: zero buffers over gaps, then the rows given.
struct DataWriter {
    parts: PartWriter,
    nch: usize,
    /// The export's first sample (FIF sample 0).
    origin: i64,
    next: i64,
    filled: u64,
    float: bool,
    buf: Vec<u8>,
}

impl DataWriter {
    fn fill_to(&mut self, start: i64) -> Result<()> {
        if start < self.next {
            bail!(
                "meg_blocks rows overlap at sample {start}: the table is not a single clean stream"
            );
        }
        while self.next < start {
            let n = (start - self.next).min(1000) as usize;
            let zeros = vec![0u8; n * self.nch * 4];
            let typ = if self.float {
                fiff::T_FLOAT
            } else {
                fiff::T_INT
            };
            self.parts.buffer(self.next - self.origin, typ, &zeros)?;
            self.filled += n as u64;
            self.next += n as i64;
        }
        Ok(())
    }

    /// Rows as stored: little-endian i32, sample-major.
    fn raw_rows(&mut self, start: i64, payload: &[u8]) -> Result<()> {
        self.fill_to(start)?;
        self.buf.clear();
        self.buf.extend(
            payload
                .chunks_exact(4)
                .flat_map(|c| [c[3], c[2], c[1], c[0]]),
        );
        self.parts
            .buffer(start - self.origin, fiff::T_INT, &self.buf)?;
        self.next = start + (payload.len() / (4 * self.nch)) as i64;
        Ok(())
    }

    /// Aligned rows, sample-major.
    fn float_rows(&mut self, start: i64, rows: &[f32]) -> Result<()> {
        self.fill_to(start)?;
        self.buf.clear();
        self.buf.extend(rows.iter().flat_map(|v| v.to_be_bytes()));
        self.parts
            .buffer(start - self.origin, fiff::T_FLOAT, &self.buf)?;
        self.next = start + (rows.len() / self.nch) as i64;
        Ok(())
    }
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
    let stream = options.stream;
    let streams = streams_in(run_dir)?;
    let stream = match (stream, streams.as_slice()) {
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
    };
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
    let blocks_path = run_dir.join(scandaq_sinks::meg_tables::file_name(BLOCKS_TABLE, stream));
    let file = blocks_path.display().to_string();
    let nch = channels.len();
    // First pass, without the payloads: sample range, times, shape, a rate.
    let (mut first, mut last_end) = (None::<i64>, 0i64);
    let (mut t0, mut t_last) = (None::<(i64, i64)>, None::<(i64, i64)>);
    let mut total: u64 = 0;
    let mut some_rate = None::<f64>;
    let columns = [
        "first_sample",
        "n_samples",
        "n_channels",
        "t_first_ns",
        "rate_hz",
    ];
    for b in batches(&blocks_path, Some(&columns))? {
        let b = &b?;
        if some_rate.is_none() {
            let r = col(b, "rate_hz", &file)?.as_primitive::<Float64Type>();
            some_rate = (0..b.num_rows())
                .find(|&i| r.is_valid(i))
                .map(|i| r.value(i));
        }
        let fs = col(b, "first_sample", &file)?.as_primitive::<Int64Type>();
        let ns = col(b, "n_samples", &file)?.as_primitive::<UInt16Type>();
        let nc = col(b, "n_channels", &file)?.as_primitive::<UInt16Type>();
        let t = col(b, "t_first_ns", &file)?.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if nc.value(i) as usize != nch {
                bail!(
                    "block at sample {} has {} channels, meg_channels describes {nch}",
                    fs.value(i),
                    nc.value(i)
                );
            }
            first.get_or_insert(fs.value(i));
            last_end = fs.value(i) + i64::from(ns.value(i));
            total += u64::from(ns.value(i));
            if t.is_valid(i) {
                let p = (fs.value(i), t.value(i));
                t0.get_or_insert(p);
                t_last = Some(p);
            }
        }
    }
    let Some(first) = first else {
        bail!("{} has no blocks", blocks_path.display());
    };
    if last_end - first > i64::from(i32::MAX) {
        bail!(
            "{} samples: FIF numbers samples with 32-bit integers; export a shorter run",
            last_end - first
        );
    }
    let split_bytes = options.split_bytes.unwrap_or(MAX_FIF_BYTES);
    if split_bytes > MAX_FIF_BYTES {
        bail!(
            "a split size of {split_bytes} bytes is beyond FIF's 32-bit file offsets: give at \
             most {MAX_FIF_BYTES} (2 GiB - 1 MiB)"
        );
    }
    let sfreq = match (t0, t_last) {
        (Some((s0, n0)), Some((s1, n1))) if s1 > s0 && n1 > n0 => {
            (s1 - s0) as f64 * 1e9 / (n1 - n0) as f64
        }
        _ => some_rate
            .context("no block has a corrected time or rate: cannot tell the sampling rate")?,
    };
    let meas_ns = t0.map_or(0, |(s, n)| {
        n - ((s - first) as f64 * 1e9 / sfreq).round() as i64
    });
    // Channel shifts in samples of the written rate; trigger bitmasks are never shifted.
    let shifts: Vec<f64> = channels
        .iter()
        .map(|c| c.delay_ps as f64 * 1e-12 * sfreq)
        .collect();
    let interpolate: Vec<bool> = channels.iter().map(|c| c.kind != "trigger").collect();
    let mut aligner = align::DelayAligner::new(&shifts, &interpolate);
    let aligned = !options.unaligned && !aligner.is_identity();
    let max_shift_samples = if aligned {
        shifts
            .iter()
            .zip(&interpolate)
            .filter(|(_, i)| **i)
            .map(|(s, _)| s.abs())
            .fold(0.0, f64::max)
    } else {
        0.0
    };
    let mut fif = Fif {
        w: Vec::new(),
        pos: 0,
    };
    let secs = meas_ns.div_euclid(1_000_000_000);
    let usecs = (meas_ns.rem_euclid(1_000_000_000) / 1000) as i32;
    let secs32 = i32::try_from(secs).unwrap_or(0);
    fif.id(fiff::FILE_ID, secs32, usecs)?;
    fif.int(fiff::DIR_POINTER, &[-1])?;
    fif.int(fiff::FREE_LIST, &[-1])?;
    fif.int(fiff::BLOCK_START, &[fiff::B_MEAS])?;
    fif.id(fiff::BLOCK_ID, secs32, usecs)?;
    fif.int(fiff::BLOCK_START, &[fiff::B_MEAS_INFO])?;
    fif.int(fiff::NCHAN, &[nch as i32])?;
    fif.float(fiff::SFREQ, sfreq as f32)?;
    fif.float(fiff::HIGHPASS, 0.0)?;
    fif.float(fiff::LOWPASS, (sfreq / 2.0) as f32)?;
    fif.int(fiff::MEAS_DATE, &[secs32, usecs])?;
    let description = if aligned {
        format!(
            "scandaq: stream {stream}; channels aligned by meg_channels.delay_ps (Kaiser-windowed \
             sinc, {} taps, beta {}); largest shift {max_shift_samples:.3} samples",
            2 * align::HALF_TAPS,
            align::KAISER_BETA
        )
    } else {
        format!("scandaq: stream {stream}; samples as recorded (channel delays not applied)")
    };
    fif.tag(
        fiff::DESCRIPTION,
        fiff::T_STRING,
        description.as_bytes(),
        fiff::NEXT_SEQ,
    )?;
    for (i, c) in channels.iter().enumerate() {
        fif.ch_info(i as i32, c)?;
    }
    fif.int(fiff::BLOCK_END, &[fiff::B_MEAS_INFO])?;
    let mut data = DataWriter {
        parts: PartWriter {
            out: out.to_path_buf(),
            head: fif.w,
            id: (secs32, usecs),
            split_bytes,
            fif: None,
            part: 0,
            parts: Vec::new(),
        },
        nch,
        origin: first,
        next: first,
        filled: 0,
        float: aligned,
        buf: Vec::new(),
    };
    let mut samples: Vec<i32> = Vec::new();
    let mut failed: Option<anyhow::Error> = None;
    // Second pass: the samples, one record batch at a time.
    for b in batches(&blocks_path, None)? {
        let b = &b?;
        let fs = col(b, "first_sample", &file)?.as_primitive::<Int64Type>();
        let ns = col(b, "n_samples", &file)?.as_primitive::<UInt16Type>();
        let payload = col(b, "payload", &file)?.as_binary::<i32>();
        for i in 0..b.num_rows() {
            let start = fs.value(i);
            let p = payload.value(i);
            if p.len() != ns.value(i) as usize * nch * 4 {
                bail!("block at sample {start}: payload length does not match its shape");
            }
            if !aligned {
                data.raw_rows(start, p)?;
                continue;
            }
            samples.clear();
            samples.extend(
                p.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            aligner.push(start, &samples, &mut |first, rows| {
                if failed.is_none()
                    && let Err(e) = data.float_rows(first, rows)
                {
                    failed = Some(e);
                }
            });
            if let Some(e) = failed.take() {
                return Err(e);
            }
        }
    }
    if aligned {
        aligner.close(&mut |first, rows| {
            if failed.is_none()
                && let Err(e) = data.float_rows(first, rows)
            {
                failed = Some(e);
            }
        });
        if let Some(e) = failed.take() {
            return Err(e);
        }
    }
    let filled = data.filled;
    let files = data.parts.finish()?;
    Ok(FifExport {
        path: out.to_path_buf(),
        stream,
        channels: nch,
        samples: total + filled,
        gap_samples_filled: filled,
        sfreq,
        aligned,
        max_shift_samples,
        files,
    })
}
