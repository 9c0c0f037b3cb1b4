//! `scandaq calibrate tdc|energy|skew`: derive the calibration tables from raw PETsys `.rawf`
//! acquisitions (docs/physics.md §3, docs/calibration.md "scandaq calibrate").
//!
//! - [`tdc`]: code-density fit of the fine-code response per (channel, TAC, branch).
//! - [`energy`]: photopeaks in the ToT spectra -> per-TAC energy-branch offsets and the
//!   per-channel ToT -> keV curve.
//! - [`skew`]: least-squares per-(channel, TAC) time offsets from point-source coincidences ->
//!   skew table plus refined TAC offsets.
//! - [`report`]: the calibration report printed on stdout and written beside the tables.
//!
//! This module holds what the three share: streaming the raw files in bounded memory (raw
//! hit words for the TDC fit, calibrated time-ordered singles for the others) and reading and
//! writing tables. Each command writes a complete calibration directory (tables it derived,
//! tables it was given, `map_channel.tsv`) usable with `scandaq replay --calib DIR`.

pub mod energy;
pub mod report;
pub mod skew;
pub mod tdc;

use crate::process::calib_load::names;
use crate::process::frame_decode::Processor;
use crate::process::kernel::CompiledCalibration;
use crate::process::read_blocks::read_up_to;
use anyhow::{Context, Result, bail};
use scandaq_core::units::{
    KevWindow, parse_kev_window, parse_legacy_ns, parse_legacy_ps, parse_number_in, parse_time_ps,
    parse_whole,
};
use scandaq_core::{Calibration, ClockModel, EnergyTable, Geometry, HitBatch, TdcTable};
use scandaq_decoders::FrameScanner;
use scandaq_decoders::petsys::HitFields;
use scandaq_decoders::rawf::{RAWF_HEADER_LEN, RawfHeader};
use std::path::{Path, PathBuf};

/// `calibrate energy --min-tot` when not given, ns.
const DEFAULT_MIN_TOT_NS: f64 = 20.0;
/// `calibrate skew --window` when not given, ps.
const DEFAULT_SKEW_WINDOW_PS: i64 = 10_000;

/// Bytes read per chunk (memory stays bounded by a few chunks whatever the file size).
const READ_CHUNK: usize = 8 << 20;

/// Counts of what was streamed from the raw files.
#[derive(Clone, Debug, Default)]
pub struct StreamCounts {
    /// Files read.
    pub files: usize,
    /// Bytes of frames read.
    pub bytes: u64,
    /// Frames scanned.
    pub frames: u64,
    /// Hit words decoded.
    pub hits: u64,
    /// Losses the scanner or kernel named (reason, count), non-zero only.
    pub losses: Vec<(String, u64)>,
    /// Clock period of the (last) file, ps.
    pub period_ps: f64,
}

/// Opens a `.rawf`, checks its header (ToT mode), and returns the file positioned after the
/// header and the clock it declares.
fn open_rawf(path: &Path) -> Result<(std::fs::File, ClockModel)> {
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot open raw file {}", path.display()))?;
    let mut head = [0u8; RAWF_HEADER_LEN];
    let n = read_up_to(&mut file, &mut head)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let header = RawfHeader::parse(&head[..n]).with_context(|| {
        format!(
            "{} is not a usable PETsys .rawf file (calibration reads .rawf files as written by \
             PETsys or fpga-sim)",
            path.display()
        )
    })?;
    if header.qdc_mode || header.mixed_mode {
        bail!(
            "{}: QDC or mixed ToT/QDC mode files are not supported (only ToT mode)",
            path.display()
        );
    }
    Ok((
        file,
        ClockModel {
            frequency_hz: header.frequency_hz,
        },
    ))
}

/// Streams the chunks of one `.rawf` to `f(bytes, eof)`.
fn for_each_chunk(
    path: &Path,
    mut file: std::fs::File,
    counts: &mut StreamCounts,
    mut f: impl FnMut(&[u8], bool) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = read_up_to(&mut file, &mut buf)
            .with_context(|| format!("read error in {}", path.display()))?;
        counts.bytes += n as u64;
        let eof = n < buf.len();
        f(&buf[..n], eof)?;
        if eof {
            return Ok(());
        }
    }
}

fn add_losses(counts: &mut StreamCounts, losses: &scandaq_core::LossCounts) {
    for (k, &v) in &losses.0 {
        if v > 0 {
            match counts.losses.iter_mut().find(|(n, _)| n == k.name()) {
                Some(e) => e.1 += v,
                None => counts.losses.push((k.to_string(), v)),
            }
        }
    }
}

/// Streams every hit word of `files` (decoded, uncalibrated) to `f`. Frames are scanned with
/// the resynchronising [`FrameScanner`]; memory is one read chunk plus a partial frame.
pub fn for_each_raw_hit(
    files: &[PathBuf],
    mut f: impl FnMut(&HitFields),
) -> Result<(StreamCounts, ClockModel)> {
    let mut counts = StreamCounts::default();
    let mut clock = ClockModel::TOFPET2_DEFAULT;
    for path in files {
        let (file, c) = open_rawf(path)?;
        clock = c;
        counts.period_ps = c.period_ps();
        let mut scanner = FrameScanner::new();
        let mut carry: Vec<u8> = Vec::new();
        let mut spans = Vec::new();
        for_each_chunk(path, file, &mut counts, |bytes, eof| {
            carry.extend_from_slice(bytes);
            spans.clear();
            let consumed = scanner.scan(&carry, eof, &mut spans);
            for s in &spans {
                let words = carry
                    .get(s.hits_offset..s.hits_offset + 8 * s.n_hits as usize)
                    .unwrap_or(&[]);
                for w in words.chunks_exact(8) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(w);
                    f(&HitFields::decode(u64::from_le_bytes(b)));
                }
            }
            carry.drain(..consumed);
            Ok(())
        })?;
        counts.files += 1;
        counts.frames += scanner.frames;
        counts.hits += scanner.hits;
        add_losses(&mut counts, &scanner.losses);
    }
    Ok((counts, clock))
}

/// Streams the calibrated, time-ordered singles of `files` through `cal` (the replay kernel:
/// scan, parallel decode+calibrate, watermark merge) to `f(file_index, batch)`. Each file is
/// its own time base (`f` sees a new file index when one starts).
pub fn for_each_calibrated_batch(
    files: &[PathBuf],
    cal: &Calibration,
    mut f: impl FnMut(usize, &HitBatch) -> Result<()>,
) -> Result<StreamCounts> {
    let mut counts = StreamCounts::default();
    for (i, path) in files.iter().enumerate() {
        let (file, clock) = open_rawf(path)?;
        counts.period_ps = clock.period_ps();
        let kernel = CompiledCalibration::new(cal, clock);
        let mut processor = Processor::new(&kernel);
        for_each_chunk(path, file, &mut counts, |bytes, eof| {
            processor.push(bytes, eof, &mut |batch| f(i, &batch))
        })?;
        let c = processor.counts();
        counts.files += 1;
        counts.frames += c.frames;
        counts.hits += c.hits_decoded;
        add_losses(&mut counts, &c.losses);
    }
    Ok(counts)
}

/// Reads a table given as a file or as a calibration directory holding `name`.
pub fn read_table_text(path: &Path, name: &str) -> Result<(PathBuf, String)> {
    let file = if path.is_dir() {
        path.join(name)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read {} (give the table file or the calibration directory holding {name})",
            file.display()
        )
    })?;
    Ok((file, text))
}

/// Loads a TDC table (file or directory).
pub fn load_tdc(path: &Path) -> Result<TdcTable> {
    let (file, text) = read_table_text(path, names::TDC)?;
    let t = TdcTable::parse(&file.display().to_string(), &text)?;
    if t.entries.is_empty() {
        bail!("{}: the TDC table has no entries", file.display());
    }
    Ok(t)
}

/// Loads an energy table (file or directory).
pub fn load_energy(path: &Path) -> Result<EnergyTable> {
    let (file, text) = read_table_text(path, names::ENERGY)?;
    let t = EnergyTable::parse(&file.display().to_string(), &text)?;
    if t.entries.is_empty() {
        bail!("{}: the energy table has no entries", file.display());
    }
    Ok(t)
}

/// Loads a channel map (file or directory).
pub fn load_geometry(path: &Path) -> Result<(Geometry, String)> {
    let (file, text) = read_table_text(path, names::MAP)?;
    let g = Geometry::parse_map_channel(&file.display().to_string(), &text)?;
    if g.crystals.is_empty() {
        bail!("{}: the channel map has no crystals", file.display());
    }
    Ok((g, text))
}

/// Writes `text` to `dir/name` atomically (temporary file, then rename).
pub fn write_table(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Checks that every input exists and is a file before any work starts.
pub fn check_inputs(files: &[PathBuf]) -> Result<()> {
    if files.is_empty() {
        bail!("no raw files given: name one or more .rawf files");
    }
    for f in files {
        if !f.is_file() {
            bail!("{} does not exist or is not a file", f.display());
        }
    }
    Ok(())
}

/// Copies the channel map (given as a file or directory) into `out` as `map_channel.tsv`,
/// after checking it parses.
pub fn copy_map(map: Option<&Path>, out: &Path) -> Result<Option<Geometry>> {
    match map {
        None => Ok(None),
        Some(p) => {
            let (g, text) = load_geometry(p)?;
            write_table(out, names::MAP, &text)?;
            Ok(Some(g))
        }
    }
}

/// Copies the channel map given with `--geometry`, or else the `map_channel.tsv` beside an
/// input table when `table_path` is a directory holding one.
pub fn copy_map_or_from(
    map: Option<&Path>,
    table_path: &Path,
    out: &Path,
) -> Result<Option<Geometry>> {
    if map.is_some() {
        return copy_map(map, out);
    }
    let beside = table_path.join(names::MAP);
    if table_path.is_dir() && beside.is_file() {
        return copy_map(Some(&beside), out);
    }
    Ok(None)
}

/// Median of a slice (sorted copy); `None` when empty or all NaN.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

/// `portID/slaveID/chipID/channelID` of a channel id, as the report names channels.
pub fn channel_name(id: u32) -> String {
    let (p, s, c, ch) = scandaq_core::ChannelId(id).parts();
    format!("{id} ({p}/{s}/{c}/{ch})")
}

/// Parses `X,Y,Z` (mm).
fn parse_xyz(s: &str) -> std::result::Result<[f64; 3], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("expected X,Y,Z in mm (e.g. 0,0,0): {e}"))?;
    match v[..] {
        [x, y, z] if v.iter().all(|c| c.is_finite()) => Ok([x, y, z]),
        _ => Err(format!("expected three numbers X,Y,Z in mm, got {s:?}")),
    }
}

/// The `scandaq calibrate` subcommands (command-line form of the options structs).
#[derive(clap::Subcommand, Debug)]
pub enum CalibrateCommand {
    /// Fine-time (TDC) calibration by code density: writes tdc_calibration.tsv.
    Tdc {
        /// Raw .rawf files (any acquisition with hits uncorrelated to the clock).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output calibration directory (created if missing, its parent must exist).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Channel map (map_channel.tsv or a directory holding it) to copy into --out.
        #[arg(long)]
        geometry: Option<PathBuf>,
        /// Fewest hits a (channel, TAC, branch) needs for a fit.
        #[arg(long, default_value_t = 1000, value_parser = |s: &str| parse_whole(s, 1, u64::MAX))]
        min_hits: u64,
    },
    /// Energy calibration from the 511 keV (and 1274.5 keV) photopeaks: writes energy_calibration.tsv.
    Energy {
        /// Raw .rawf files (a source acquisition, e.g. Na-22).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// TDC table (file or calibration directory).
        #[arg(long)]
        tdc: PathBuf,
        /// Output calibration directory (created if missing, its parent must exist).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Channel map to copy into --out (default: the one beside the TDC table).
        #[arg(long)]
        geometry: Option<PathBuf>,
        /// Second line in keV (1274.5 for Na-22); 0 = the 511 keV line only.
        #[arg(long, default_value_t = 1274.5, value_name = "KEV",
              value_parser = |s: &str| parse_number_in(s, 0.0, 100_000.0, "keV"))]
        second_line_kev: f64,
        /// ToT scale a for channels with one line (e.g. 80ns) [default: median of the
        /// two-line channels, else 80ns].
        #[arg(long, value_name = "DURATION", value_parser = positive_ns)]
        fixed_a: Option<f64>,
        /// Old spelling of --fixed-a, in ns (`--fixed-a-ns 80`).
        #[arg(long, hide = true, conflicts_with = "fixed_a", value_parser = positive_legacy_ns)]
        fixed_a_ns: Option<f64>,
        /// Ignore peaks below this ToT (dark counts), e.g. 20ns [default: 20ns].
        #[arg(long, value_name = "DURATION", value_parser = non_negative_ns)]
        min_tot: Option<f64>,
        /// Old spelling of --min-tot, in ns (`--min-tot-ns 20`).
        #[arg(long, hide = true, conflicts_with = "min_tot", value_parser = parse_legacy_ns)]
        min_tot_ns: Option<f64>,
        /// Fewest hits a channel needs.
        #[arg(long, default_value_t = 500, value_parser = |s: &str| parse_whole(s, 1, u64::MAX))]
        min_hits: u64,
    },
    /// Time-skew calibration from a point source: writes skew.tsv (and refined TAC offsets).
    Skew {
        /// Raw .rawf files of a point-source acquisition.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// TDC table (file or calibration directory).
        #[arg(long)]
        tdc: PathBuf,
        /// Energy table (file or calibration directory).
        #[arg(long)]
        energy: PathBuf,
        /// Channel map (map_channel.tsv or a directory holding it).
        #[arg(long)]
        geometry: PathBuf,
        /// Source position X,Y,Z in mm.
        #[arg(long, value_parser = parse_xyz, allow_hyphen_values = true)]
        source: [f64; 3],
        /// Output calibration directory (created if missing, its parent must exist).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Coincidence window (e.g. 10ns, 10000ps) [default: 10ns].
        #[arg(long, value_name = "DURATION", value_parser = parse_time_ps)]
        window: Option<i64>,
        /// Old spelling of --window, in ps (`--window-ps 10000`).
        #[arg(long, hide = true, conflicts_with = "window", value_parser = parse_legacy_ps)]
        window_ps: Option<i64>,
        /// Energy window MIN:MAX in keV (e.g. 400:650; the old form 400,650 is still read,
        /// with a note).
        #[arg(long, value_name = "MIN:MAX", value_parser = parse_kev_window,
              default_value = "400:650")]
        energy_window: KevWindow,
        /// Fewest coincidences a (channel, TAC) needs.
        #[arg(long, default_value_t = 10, value_parser = |s: &str| parse_whole(s, 1, u64::MAX))]
        min_coincidences: u64,
        /// Most coincidences kept in memory (12 bytes each).
        #[arg(long, default_value_t = 20_000_000,
              value_parser = |s: &str| parse_whole(s, 1, u64::MAX).map(|n| n as usize))]
        max_coincidences: usize,
    },
}

/// A ToT-like time (`80ns`) in ns, more than 0.
fn positive_ns(s: &str) -> std::result::Result<f64, String> {
    match parse_time_ps(s)? {
        0 => Err(format!("invalid time {:?}: must be more than 0", s.trim())),
        ps => Ok(ps as f64 * 1e-3),
    }
}

/// A ToT-like time (`20ns`) in ns, 0 or more.
fn non_negative_ns(s: &str) -> std::result::Result<f64, String> {
    parse_time_ps(s).map(|ps| ps as f64 * 1e-3)
}

/// An old `...-ns` value (plain ns or with a unit), more than 0.
fn positive_legacy_ns(s: &str) -> std::result::Result<f64, String> {
    match parse_legacy_ns(s)? {
        v if v > 0.0 => Ok(v),
        _ => Err(format!("invalid time {:?}: must be more than 0", s.trim())),
    }
}

/// Runs one `scandaq calibrate` subcommand.
pub fn run_cli(cmd: CalibrateCommand) -> Result<report::Report> {
    // The output directory is checked (and made) before any file is read.
    let (CalibrateCommand::Tdc { out, .. }
    | CalibrateCommand::Energy { out, .. }
    | CalibrateCommand::Skew { out, .. }) = &cmd;
    crate::commands::cli::prepare_out_dir(out)?;
    match cmd {
        CalibrateCommand::Tdc {
            files,
            out,
            geometry,
            min_hits,
        } => tdc::run(&tdc::TdcOptions {
            files,
            out,
            geometry,
            min_hits,
        }),
        CalibrateCommand::Energy {
            files,
            tdc,
            out,
            geometry,
            second_line_kev,
            fixed_a,
            fixed_a_ns,
            min_tot,
            min_tot_ns,
            min_hits,
        } => energy::run(&energy::EnergyOptions {
            files,
            tdc,
            out,
            geometry,
            second_line_kev,
            fixed_a_ns: fixed_a.or(fixed_a_ns),
            min_tot_ns: min_tot.or(min_tot_ns).unwrap_or(DEFAULT_MIN_TOT_NS),
            min_hits,
        }),
        CalibrateCommand::Skew {
            files,
            tdc,
            energy,
            geometry,
            source,
            out,
            window,
            window_ps,
            energy_window,
            min_coincidences,
            max_coincidences,
        } => {
            if let Some(note) = energy_window.deprecation_note("--energy-window") {
                eprintln!("note: {note}");
            }
            skew::run(&skew::SkewOptions {
                files,
                tdc,
                energy,
                geometry,
                source_mm: source,
                out,
                window_ps: window.or(window_ps).unwrap_or(DEFAULT_SKEW_WINDOW_PS),
                energy_window_kev: energy_window.kev(),
                min_coincidences,
                max_coincidences,
            })
        }
    }
}
