//! The PET part of the report, accumulated batch by batch from the singles, prompt and
//! delayed tables: per-module energy spectra and channel count maps, singles / prompt /
//! delayed rates over detector time, and the oriented coincidence Δt histogram.
//!
//! Spectra and count maps are per chip (`channel >> 6`, 64 channels), as the dashboard's.
//! **Orientation** of a pair: the dashboard's rule and code
//! ([`detector_ordered_dt_ps`]): the single with the smaller module id comes first, ties
//! broken by the smaller channel id, and Δt = t_first − t_second, the module being the
//! crystal's `region` in the run's `calib/map_channel.tsv` (channel id / 64 for a channel the
//! map lacks). So a source off centre shows as a shifted peak whatever order the sorter
//! stored the pair in.

use super::histogram::{Gaussian, Histogram};
use super::tables::{RunTables, for_each_batch, key_values};
use anyhow::{Context, Result};
use arrow_array::types::{Float32Type, Int64Type, UInt16Type, UInt32Type};
use scandaq_core::Geometry;
use scandaq_core::hit_flags;
use scandaq_core::run_state::EnergyUnit;
use scandaq_core::snapshot::{CHANNELS_PER_MODULE, PairSingle, detector_ordered_dt_ps};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Rows decoded per batch.
const BATCH_ROWS: usize = 65_536;
/// Energy bins per module spectrum.
const ENERGY_BINS: usize = 500;
/// Upper edge of the keV spectra (LYSO background and 1274.5 keV prompt gammas included).
const KEV_HI: f64 = 1500.0;
/// Time bins across the run (rates over time).
const TIME_BINS: usize = 200;
/// Bins of the Δt histogram across the coincidence window.
const DT_BINS: usize = 400;

/// The accumulations of one module.
pub(super) struct ModuleFigures {
    /// Module id (`channel >> 6`).
    pub module: u32,
    /// Energy spectrum of its singles.
    pub energy: Histogram,
    /// Singles per channel (`channel & 63`).
    pub channel_counts: [u64; CHANNELS_PER_MODULE],
    /// The photopeak fit, when there is a peak.
    pub photopeak: Option<Gaussian>,
}

/// Everything the PET part shows.
pub(super) struct PetFigures {
    /// Unit of the energies.
    pub energy_unit: EnergyUnit,
    /// Modules in id order.
    pub modules: Vec<ModuleFigures>,
    /// Rows read from the singles tables.
    pub singles: u64,
    /// Singles whose front-end frame was flagged lossy: (count, first and last t_ps).
    pub lossy_frames: (u64, i64, i64),
    /// Time origin of the rate histograms, ps.
    pub t0_ps: i64,
    /// Detector time from the first to the last single, s.
    pub duration_s: f64,
    /// Singles per time bin (x in s since `t0_ps`).
    pub singles_rate: Histogram,
    /// Prompts per time bin (opener time).
    pub prompts_rate: Histogram,
    /// Delayed pairs per time bin.
    pub delayed_rate: Histogram,
    /// Rows of the prompt tables.
    pub prompts: u64,
    /// Rows of the delayed tables.
    pub delayed: u64,
    /// Oriented Δt of the prompts, ps.
    pub dt: Histogram,
    /// (peak, FWHM) of `dt`, ps.
    pub dt_fwhm: Option<(f64, f64)>,
    /// The prompt tables' coincidence window, ps, when recorded.
    pub window_ps: Option<i64>,
    /// Photopeak search range in the energy unit.
    pub peak_range: (f64, f64),
}

/// The PET tables of a run, or None when it has none.
pub(super) fn pet_figures(run: &RunTables) -> Result<Option<PetFigures>> {
    let singles = run.tables("singles-")?;
    let prompts = run.tables("coincidences-")?;
    let delayed = run.tables("delayed-")?;
    // A stream-only run has an empty singles table: no PET part.
    let rows = |prefix: &str| -> u64 {
        let files = run.manifest.files.iter();
        files
            .filter(|f| f.path.starts_with(prefix))
            .map(|f| f.rows)
            .sum()
    };
    if rows("singles-") + rows("coincidences-") == 0 {
        return Ok(None);
    }
    let m = &run.manifest;
    let energy_unit = m.energy_unit;
    let energy_hi = match energy_unit {
        EnergyUnit::TotNs => tot_upper_edge(&singles)?,
        _ => KEV_HI,
    };
    let peak_range = match energy_unit {
        EnergyUnit::TotNs => (0.2 * energy_hi, energy_hi),
        _ => (400.0, 650.0),
    };
    let (t0_ps, t1_ps) = time_span(m.first_t_ps, m.last_t_ps, &singles, &prompts)?;
    let bin_s = nice_bin(t1_ps.saturating_sub(t0_ps) as f64 * 1e-12 / TIME_BINS as f64);
    let n_time = ((t1_ps.saturating_sub(t0_ps) as f64 * 1e-12 / bin_s).floor() as usize + 1)
        .min(4 * TIME_BINS);
    let rate = || Histogram::new(0.0, bin_s, n_time);
    let mut acc = SinglesAcc {
        chips: HashMap::new(),
        modules: Vec::new(),
        energy: Histogram::new(0.0, energy_hi / ENERGY_BINS as f64, ENERGY_BINS),
        rate: rate(),
        t0_ps,
        rows: 0,
        lossy: (0, i64::MAX, i64::MIN),
    };
    for path in &singles {
        acc.read(path)?;
    }
    let window_ps = prompts
        .first()
        .map(|p| coincidence_window_ps(p))
        .transpose()?
        .flatten();
    let w = window_ps.unwrap_or(5_000).max(1) as f64;
    let mut dt = Histogram::new(-w, 2.0 * w / DT_BINS as f64, DT_BINS);
    let modules = ModuleMap::read(&run.dir)?;
    let mut prompts_rate = rate();
    let mut n_prompts = 0;
    for path in &prompts {
        let oriented = Some((&mut dt, &modules));
        n_prompts += read_pairs(path, t0_ps, &mut prompts_rate, oriented)?;
    }
    let mut delayed_rate = rate();
    let mut n_delayed = 0;
    for path in &delayed {
        n_delayed += read_pairs(path, t0_ps, &mut delayed_rate, None)?;
    }
    let mut modules = acc.modules;
    modules.sort_by_key(|m| m.module);
    for module in &mut modules {
        module.photopeak = module.energy.gaussian_peak(peak_range.0, peak_range.1);
    }
    let dt_fwhm = dt.fwhm(dt.lo, dt.hi());
    Ok(Some(PetFigures {
        energy_unit,
        modules,
        singles: acc.rows,
        lossy_frames: acc.lossy,
        t0_ps,
        duration_s: t1_ps.saturating_sub(t0_ps) as f64 * 1e-12,
        singles_rate: acc.rate,
        prompts_rate,
        delayed_rate,
        prompts: n_prompts,
        delayed: n_delayed,
        dt,
        dt_fwhm,
        window_ps,
        peak_range,
    }))
}

/// The singles accumulators: one slot per module, found through the chip id.
struct SinglesAcc {
    chips: HashMap<u32, usize>,
    modules: Vec<ModuleFigures>,
    energy: Histogram,
    rate: Histogram,
    t0_ps: i64,
    rows: u64,
    lossy: (u64, i64, i64),
}

impl SinglesAcc {
    fn read(&mut self, path: &Path) -> Result<()> {
        let columns = ["t_ps", "channel", "energy_kev", "flags"];
        for_each_batch(path, &columns, BATCH_ROWS, |b| {
            let t = b.primitive::<Int64Type>("t_ps")?.values();
            let ch = b.primitive::<UInt32Type>("channel")?.values();
            let e = b.primitive::<Float32Type>("energy_kev")?.values();
            let flags = b.primitive::<UInt16Type>("flags")?.values();
            let mut last = (u32::MAX, 0usize);
            for i in 0..b.rows() {
                let module = ch[i] / CHANNELS_PER_MODULE as u32;
                if module != last.0 {
                    last = (module, self.slot(module));
                }
                let m = &mut self.modules[last.1];
                m.energy.add(f64::from(e[i]));
                m.channel_counts[ch[i] as usize % CHANNELS_PER_MODULE] += 1;
                self.rate
                    .add(t[i].saturating_sub(self.t0_ps) as f64 * 1e-12);
                if flags[i] & hit_flags::FROM_LOSSY_FRAME != 0 {
                    let l = &mut self.lossy;
                    *l = (l.0 + 1, l.1.min(t[i]), l.2.max(t[i]));
                }
            }
            self.rows += b.rows() as u64;
            Ok(true)
        })
    }

    fn slot(&mut self, module: u32) -> usize {
        let next = self.modules.len();
        *self.chips.entry(module).or_insert_with(|| {
            self.modules.push(ModuleFigures {
                module,
                energy: self.energy.clone(),
                channel_counts: [0; CHANNELS_PER_MODULE],
                photopeak: None,
            });
            next
        })
    }
}

/// The module of a channel for the Δt orientation: the crystal's `region` in the run's
/// `calib/map_channel.tsv`, channel id / 64 without it.
pub(super) struct ModuleMap(Option<Geometry>);

impl ModuleMap {
    fn read(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join("calib").join("map_channel.tsv");
        if !path.is_file() {
            return Ok(Self(None));
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the crystal map {}", path.display()))?;
        let g = Geometry::parse_map_channel(&path.display().to_string(), &text)
            .with_context(|| format!("{}: not a crystal map", path.display()))?;
        Ok(Self(Some(g)))
    }

    fn single(&self, t_ps: i64, channel: u32) -> PairSingle {
        let module = self
            .0
            .as_ref()
            .and_then(|g| g.crystal(channel))
            .map_or(channel / CHANNELS_PER_MODULE as u32, |c| c.module);
        PairSingle {
            t_ps,
            module,
            channel,
        }
    }
}

/// Reads a prompt or delayed table: pairs per time bin of the opener, and, for prompts, the
/// oriented Δt. Returns the rows read.
fn read_pairs(
    path: &Path,
    t0_ps: i64,
    rate: &mut Histogram,
    mut dt: Option<(&mut Histogram, &ModuleMap)>,
) -> Result<u64> {
    let mut rows = 0u64;
    let columns = ["t1_ps", "t2_ps", "channel1", "channel2"];
    for_each_batch(path, &columns, BATCH_ROWS, |b| {
        let t1 = b.primitive::<Int64Type>("t1_ps")?.values();
        let t2 = b.primitive::<Int64Type>("t2_ps")?.values();
        let c1 = b.primitive::<UInt32Type>("channel1")?.values();
        let c2 = b.primitive::<UInt32Type>("channel2")?.values();
        for i in 0..b.rows() {
            rate.add(t1[i].saturating_sub(t0_ps) as f64 * 1e-12);
            if let Some((h, map)) = dt.as_mut() {
                let (a, b) = (map.single(t1[i], c1[i]), map.single(t2[i], c2[i]));
                // A pair exactly one window apart lands on the top edge: the last bin, as
                // on the dashboard.
                h.add_top_closed(detector_ordered_dt_ps(a, b) as f64);
            }
        }
        rows += b.rows() as u64;
        Ok(true)
    })?;
    Ok(rows)
}

/// The coincidence window recorded in a coincidence table's `scandaq.coincidence_config`.
fn coincidence_window_ps(path: &Path) -> Result<Option<i64>> {
    let kv = key_values(path)?;
    Ok(kv
        .get("scandaq.coincidence_config")
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v.get("window_ps").and_then(|w| w.as_i64()))
        .filter(|&w| w > 0))
}

/// First and last detector time of the run: the manifest's, else the tables' metadata.
fn time_span(
    first: Option<i64>,
    last: Option<i64>,
    singles: &[PathBuf],
    prompts: &[PathBuf],
) -> Result<(i64, i64)> {
    if let (Some(a), Some(b)) = (first, last)
        && b >= a
    {
        return Ok((a, b));
    }
    let (mut a, mut b) = (i64::MAX, i64::MIN);
    for p in singles.iter().chain(prompts) {
        let kv = key_values(p)?;
        let get = |k: &str| kv.get(k).and_then(|v| v.parse::<i64>().ok());
        if let (Some(x), Some(y)) = (get("first_t_ps"), get("last_t_ps")) {
            (a, b) = (a.min(x), b.max(y));
        }
    }
    Ok(if a <= b { (a, b) } else { (0, 0) })
}

/// Upper edge of ToT spectra: the largest `energy_kev` in the row-group statistics, else
/// 500 ns.
fn tot_upper_edge(singles: &[PathBuf]) -> Result<f64> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::statistics::Statistics;
    let mut hi = 0.0f64;
    for path in singles {
        let file = std::fs::File::open(path)?;
        let Ok(reader) = SerializedFileReader::new(file) else {
            continue; // the batch reader names the damage
        };
        for rg in reader.metadata().row_groups() {
            for c in rg.columns() {
                if c.column_path().string() == "energy_kev"
                    && let Some(Statistics::Float(s)) = c.statistics()
                    && let Some(&max) = s.max_opt()
                {
                    hi = hi.max(f64::from(max));
                }
            }
        }
    }
    Ok(if hi > 0.0 && hi.is_finite() {
        hi * 1.02
    } else {
        500.0
    })
}

/// The smallest of 1, 2, 5 × 10^k at or above `x` (x > 0), else 1.
pub(super) fn nice_bin(x: f64) -> f64 {
    if !(x > 0.0 && x.is_finite()) {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&v| v >= x * (1.0 - 1e-12))
        .unwrap_or(10.0 * p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bins() {
        assert_eq!(nice_bin(0.03), 0.05);
        assert_eq!(nice_bin(1.0), 1.0);
        assert_eq!(nice_bin(1.2), 2.0);
        assert_eq!(nice_bin(7.0), 10.0);
        assert_eq!(nice_bin(0.0), 1.0);
    }
}
