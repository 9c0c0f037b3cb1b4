//! The coincidence stage of a run: its own thread takes the time-ordered singles the singles
//! sink writes (their four physics columns), or the photons the sink grouped them into
//! (grouping runs in the sink thread, `singles_columns`, so the singles table can say which
//! photon each hit went into), sorts prompt and delayed coincidences with
//! `scandaq_core::coincidence`, and writes the prompt and delayed tables
//! (`coincidences-NNNNN.parquet`, `delayed-NNNNN.parquet`, rotated as the singles). Bounded
//! queue, batches only.

use crate::observe::live_stats::{CoincidenceSnapshot, SinkCounters};
use crate::process::rotating_table::{RotatingTable, Rotation};
use anyhow::{Context, Result, anyhow, bail};
use crossbeam_channel::{Sender, bounded};
use scandaq_core::coincidence::{
    CoincidenceBatch, CoincidenceConfig, CoincidenceError, CoincidenceSorter, CoincidenceStats,
    CrystalLut, GroupingConfig, GroupingStats, ModuleDifference, ModulePairs, PhotonBatch, Policy,
    SinglesRef, WindowMode,
};
use scandaq_core::snapshot::{PairSingle, detector_ordered_dt_ps};
use scandaq_core::{Geometry, HitBatch};
use scandaq_sinks::FileMetadata;
use scandaq_sinks::FileRecord;
use scandaq_sinks::coincidences;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Singles batches waiting for the coincidence thread.
const QUEUE: usize = 8;
/// How often the coincidence counters are published for the dashboard.
const LIVE_PUBLISH_EVERY: Duration = Duration::from_millis(50);
/// Coincidences gathered before a write.
const WRITE_ROWS: usize = 64 << 10;
/// Room kept beyond [`WRITE_ROWS`] in the gathering columns: the sorter appends a whole input
/// batch's pairs before the size is checked, and columns grown by doubling were copied on
/// every growth (realloc, 2-3 % of a coincidences-only replay's CPU).
const WRITE_SLACK: usize = 32 << 10;
pub use scandaq_sinks::coincidences::{DELAYED_TABLE, PROMPTS_TABLE};

/// How a run sorts coincidences (the `[coincidences]` table of a run config, or CLI flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoincidenceOptions {
    /// Sort coincidences at all.
    pub enabled: bool,
    /// Prompt window, ps.
    pub window_ps: i64,
    /// Delayed window offset, ps (0 = no delayed table).
    pub delay_ps: i64,
    /// Energy window `[min, max]` keV applied before sorting (ignored, with a warning, when
    /// energies are ToT because no energy table was given).
    pub energy_window_kev: Option<[f32; 2]>,
    /// Multiples policy (GATE names).
    pub policy: Policy,
    /// Single-window mode instead of the default multi-window (`window_mode`, when set,
    /// takes precedence).
    pub single_window: bool,
    /// Which singles open a window: `multi_window`, `single_window` or `single_window_gate10`.
    pub window_mode: Option<WindowMode>,
    /// Minimum transaxial distance of a good pair, mm.
    pub min_transaxial_mm: Option<f64>,
    /// Maximum axial difference of a good pair, mm.
    pub max_axial_mm: Option<f64>,
    /// Minimum module difference of a good pair (`{ min = 2, ring_modules = 24 }`).
    pub min_module_difference: Option<ModuleDifference>,
    /// Module (trigger region) pairs a good pair may join (`[[0, 1], [0, 2]]`); PETsys's `C`
    /// entries of `map_trigger.tsv`.
    pub allowed_module_pairs: Option<ModulePairs>,
    /// Group hits into photons first: `[window_ps, max_distance_mm]`. The singles table then
    /// carries `photon_id` and `photon_multiplicity`.
    pub grouping: Option<GroupingConfig>,
    /// Singles-table option carried here because it needs the same geometry: write each
    /// single's crystal centre (`x_mm`, `y_mm`, `z_mm`). Set by `--positions` or
    /// `[run] positions`, not by `[coincidences]`; not part of the coincidence metadata.
    #[serde(skip)]
    pub positions: bool,
    /// Write no singles table: the singles (or photons) only feed the sorters (PETsys's
    /// `convert_raw_to_coincidence` job). Set by `--coincidences-only` or
    /// `[run] coincidences_only`; not part of the coincidence metadata.
    #[serde(skip)]
    pub coincidences_only: bool,
}

impl Default for CoincidenceOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            window_ps: 4_000,
            delay_ps: scandaq_core::coincidence::DEFAULT_DELAY_PS,
            energy_window_kev: Some([400.0, 650.0]),
            policy: Policy::TakeAllGoods,
            single_window: false,
            window_mode: None,
            min_transaxial_mm: None,
            max_axial_mm: None,
            min_module_difference: None,
            allowed_module_pairs: None,
            grouping: None,
            positions: false,
            coincidences_only: false,
        }
    }
}

impl CoincidenceOptions {
    /// The prompt sorter's configuration (`energy_in_kev` false drops the energy window).
    pub fn prompt_config(&self, energy_in_kev: bool) -> CoincidenceConfig {
        CoincidenceConfig {
            energy_window_kev: if energy_in_kev {
                self.energy_window_kev
            } else {
                None
            },
            min_transaxial_mm: self.min_transaxial_mm,
            max_axial_mm: self.max_axial_mm,
            min_module_difference: self.min_module_difference,
            allowed_module_pairs: self.allowed_module_pairs.clone(),
            policy: self.policy,
            mode: self.window_mode.unwrap_or(if self.single_window {
                WindowMode::SingleWindow
            } else {
                WindowMode::MultiWindow
            }),
            ..CoincidenceConfig::prompt(self.window_ps)
        }
    }

    /// These options with the keys of a run configuration's `[coincidences]` table laid over
    /// them (nested tables such as `grouping` merged key by key); the result is checked like
    /// a whole table (unknown keys and wrong types are named). `source` names the file.
    pub fn overlaid_with(&self, given: &toml::Table, source: &Path) -> Result<Self> {
        fn merge(base: &mut toml::Table, over: &toml::Table) {
            for (k, v) in over {
                match (base.get_mut(k), v) {
                    (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
                    _ => {
                        base.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let mut table =
            toml::Table::try_from(self).map_err(|e| anyhow!("coincidence options as TOML: {e}"))?;
        merge(&mut table, given);
        let mut out: Self = table
            .try_into()
            .map_err(|e| anyhow!("{}: [coincidences]: {e}", source.display()))?;
        out.positions = self.positions;
        out.coincidences_only = self.coincidences_only;
        Ok(out)
    }

    /// Checks the options as the sorters will (a clear message naming the setting).
    pub fn validate(&self) -> Result<()> {
        if let Some(g) = &self.grouping {
            g.validate()
                .map_err(|e| anyhow!("coincidences (grouping): {e}"))?;
        }
        if self.coincidences_only && !self.enabled {
            bail!(
                "coincidences-only mode with coincidences disabled would write nothing: drop one of the two"
            );
        }
        if self.coincidences_only && self.positions {
            bail!(
                "coincidences-only mode writes no singles table, so it has no crystal positions: drop --positions (or [run] positions)"
            );
        }
        if !self.enabled {
            return Ok(());
        }
        let prompt = self.prompt_config(true);
        prompt
            .validate()
            .map_err(|e| anyhow!("coincidences: {e}"))?;
        if self.delay_ps != 0 {
            prompt
                .to_delayed(self.delay_ps)
                .validate()
                .map_err(|e| anyhow!("coincidences (delayed window, delay_ps): {e}"))?;
        }
        Ok(())
    }
}

/// Everything the coincidence thread and the singles table's derived columns (positions,
/// photons) need, fixed at run start. `options.enabled` says whether coincidences are sorted.
#[derive(Clone, Debug)]
pub struct CoincidenceSetup {
    /// Options.
    pub options: CoincidenceOptions,
    /// Energies are in keV (an energy table was given).
    pub energy_in_kev: bool,
    /// Channel -> crystal positions.
    pub lut: Arc<CrystalLut>,
}

impl CoincidenceSetup {
    /// The energy window the prompt sorter applies, keV (none when coincidences are off, the
    /// window is `none`, or energies are ToT): what the dashboard marks on the spectrum.
    pub fn applied_energy_window_kev(&self) -> Option<[f32; 2]> {
        if self.options.enabled && self.energy_in_kev {
            self.options.energy_window_kev
        } else {
            None
        }
    }

    /// The setup for `options` on `geometry`; None when nothing needs the geometry
    /// (coincidences off, no positions, no grouping), or (with the reason) when it is missing.
    pub fn new(
        options: &CoincidenceOptions,
        geometry: Option<&Geometry>,
        energy_in_kev: bool,
    ) -> Result<Option<Self>, String> {
        if !options.enabled && !options.positions && options.grouping.is_none() {
            return Ok(None);
        }
        let Some(geometry) = geometry else {
            let mut missing = vec![];
            if options.enabled {
                missing.push("coincidences are not sorted");
            }
            if options.positions {
                missing.push("the singles have no x_mm/y_mm/z_mm");
            }
            if options.grouping.is_some() {
                missing.push("hits are not grouped into photons");
            }
            return Err(format!(
                "no crystal map (map_channel.tsv) in the calibration: {}; add the map to the calibration directory",
                missing.join(", ")
            ));
        };
        Ok(Some(Self {
            options: options.clone(),
            energy_in_kev,
            lut: Arc::new(CrystalLut::from_geometry(geometry)),
        }))
    }
}

/// What the coincidence thread wrote.
#[derive(Debug, Default)]
pub struct CoincidenceReport {
    /// Committed files (prompts, then delayed).
    pub files: Vec<FileRecord>,
    /// Prompt sorter counters (None when coincidences were not sorted).
    pub prompt: Option<CoincidenceStats>,
    /// Delayed sorter counters.
    pub delayed: Option<CoincidenceStats>,
    /// Grouping counters.
    pub grouping: Option<GroupingStats>,
    /// Batches refused by the sorter (time order broken), by reason.
    pub refused_batches: BTreeMap<String, u64>,
    /// Counts of the singles table's derived columns (`singles.*`).
    pub singles_columns: BTreeMap<String, u64>,
}

impl CoincidenceReport {
    /// Manifest counts (`coincidences.*`).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let mut put = |prefix: &str, s: &CoincidenceStats| {
            out.insert(format!("{prefix}.pairs"), s.pairs_kept);
            out.insert(format!("{prefix}.singles_in"), s.singles_in);
            out.insert(
                format!("{prefix}.outside_energy_window"),
                s.outside_energy_window,
            );
            out.insert(format!("{prefix}.unmapped_channel"), s.unmapped_channel);
            out.insert(format!("{prefix}.multiples_seen"), s.multiples_seen);
            out.insert(format!("{prefix}.multiples_rejected"), s.multiples_rejected);
            out.insert(format!("{prefix}.one_pair_not_good"), s.one_pair_not_good);
        };
        if let Some(p) = &self.prompt {
            put("coincidences.prompt", p);
        }
        if let Some(d) = &self.delayed {
            put("coincidences.delayed", d);
        }
        if let Some(g) = &self.grouping {
            out.insert("grouping.hits_in".into(), g.hits_in);
            out.insert("grouping.photons_out".into(), g.photons_out);
            out.insert("grouping.multi_hit_photons".into(), g.multi_hit_photons);
            out.insert("grouping.unmapped_channel".into(), g.unmapped_channel);
            for (reason, n) in [
                ("too_many_hits", g.rejected_too_many_hits),
                ("too_few_hits", g.rejected_too_few_hits),
                ("below_min_energy", g.rejected_below_min_energy),
                ("above_max_energy", g.rejected_above_max_energy),
            ] {
                out.insert(format!("grouping.photons_rejected.{reason}"), n);
            }
        }
        for (k, v) in &self.refused_batches {
            out.insert(format!("coincidences.refused.{k}"), *v);
        }
        out.extend(self.singles_columns.iter().map(|(k, v)| (k.clone(), *v)));
        out
    }
}

/// One coincidence table being written (a sequence of files, rotated as the run's singles).
struct TableOut {
    table: RotatingTable,
    pending: CoincidenceBatch,
}

impl TableOut {
    /// Table `name`, its first file created at once (an unwritable directory fails before
    /// anything runs).
    fn create(
        dir: &Path,
        name: &'static str,
        metadata: &FileMetadata,
        rotation: Rotation,
    ) -> Result<Self> {
        let mut table = RotatingTable::new(
            dir,
            name,
            coincidences::schema(),
            coincidences::write_options(),
            metadata.clone(),
            rotation,
        );
        table.open()?;
        Ok(Self {
            table,
            pending: gathering_columns(),
        })
    }

    fn write_if_full(&mut self, force: bool) -> Result<()> {
        while self.pending.len() >= WRITE_ROWS || (force && !self.pending.is_empty()) {
            // Exactly WRITE_ROWS rows per write, copied out of the gathering columns (which
            // are kept): every write allocates the same sizes, which the allocator reuses.
            let batch = take_rows(&mut self.pending, WRITE_ROWS);
            // Rows are in opener order: a file's t1 range is its first and last row's.
            let (first, last) = (batch.t1_ps[0], batch.t1_ps[batch.t1_ps.len() - 1]);
            let record = coincidences::to_record_batch(batch)
                .map_err(|e| anyhow!("building a coincidence row group: {e}"))?;
            self.table.write(&record, first, last)?;
        }
        Ok(())
    }

    /// Writes what is gathered and commits the open file; every committed file, in order.
    fn commit(mut self) -> Result<Vec<FileRecord>> {
        self.write_if_full(true)?;
        self.table.finish()
    }
}

/// Bytes the prompt and delayed tables have flushed so far (the dashboard's "written").
fn flushed_bytes(prompts: &TableOut, delayed: Option<&TableOut>) -> u64 {
    prompts.table.bytes() + delayed.map_or(0, |d| d.table.bytes())
}

/// The first `n` rows of `c` (all when fewer), copied into columns of their exact size; the
/// rest moves to the front of `c`.
fn take_rows(c: &mut CoincidenceBatch, n: usize) -> CoincidenceBatch {
    let n = n.min(c.len());
    fn take<T: Copy>(v: &mut Vec<T>, n: usize) -> Vec<T> {
        let head = v[..n].to_vec();
        v.drain(..n);
        head
    }
    CoincidenceBatch {
        t1_ps: take(&mut c.t1_ps, n),
        t2_ps: take(&mut c.t2_ps, n),
        channel1: take(&mut c.channel1, n),
        channel2: take(&mut c.channel2, n),
        energy1_kev: take(&mut c.energy1_kev, n),
        energy2_kev: take(&mut c.energy2_kev, n),
        tof_ps: take(&mut c.tof_ps, n),
        flags: take(&mut c.flags, n),
    }
}

/// Empty coincidence columns with room for a row group and the slack.
fn gathering_columns() -> CoincidenceBatch {
    let mut c = CoincidenceBatch::default();
    c.reserve(WRITE_ROWS + WRITE_SLACK);
    c
}

/// Starts the coincidence thread; send it singles (or grouped photons) in time order, drop the
/// sender to finish. It sorts what it gets as is: grouping is the sender's job.
pub(crate) fn spawn(
    dir: &Path,
    metadata: FileMetadata,
    setup: CoincidenceSetup,
    rotation: Rotation,
    live: Arc<SinkCounters>,
) -> Result<(Sender<SorterInput>, JoinHandle<Result<CoincidenceReport>>)> {
    let prompt_cfg = setup.options.prompt_config(setup.energy_in_kev);
    let window_ps = prompt_cfg.window_ps;
    let delayed_cfg =
        (setup.options.delay_ps != 0).then(|| prompt_cfg.to_delayed(setup.options.delay_ps));
    // The run's metadata, with this table's own name and schema version.
    let table_meta = |table: &str| -> FileMetadata {
        let mut meta: FileMetadata = metadata
            .iter()
            .filter(|(k, _)| k != "scandaq.table" && k != "scandaq.schema_version")
            .cloned()
            .collect();
        meta.push(("scandaq.table".into(), table.into()));
        meta.push((
            "scandaq.schema_version".into(),
            coincidences::COINCIDENCES_SCHEMA_VERSION.into(),
        ));
        meta.push((
            "scandaq.coincidence_config".into(),
            serde_json::to_string(&setup.options).unwrap_or_default(),
        ));
        meta
    };
    let mut prompts = TableOut::create(dir, PROMPTS_TABLE, &table_meta(PROMPTS_TABLE), rotation)?;
    let mut delayed = match &delayed_cfg {
        Some(_) => Some(TableOut::create(
            dir,
            DELAYED_TABLE,
            &table_meta(DELAYED_TABLE),
            rotation,
        )?),
        None => None,
    };
    let (tx, rx) = bounded::<SorterInput>(QUEUE);
    let handle = std::thread::Builder::new()
        .name("coincidences".into())
        .spawn(move || -> Result<CoincidenceReport> {
            let lut = setup.lut.clone();
            let mut prompt_sorter = CoincidenceSorter::new(prompt_cfg, &lut)
                .map_err(|e| anyhow!("coincidences: {e}"))?;
            let mut delayed_sorter = match delayed_cfg {
                Some(c) => Some(
                    CoincidenceSorter::new(c, &lut)
                        .map_err(|e| anyhow!("coincidences (delayed): {e}"))?,
                ),
                None => None,
            };
            let mut report = CoincidenceReport::default();
            // Counters and the prompt time-difference histogram for the dashboard.
            let mut view = CoincidenceSnapshot::new(window_ps, 400);
            let mut last_publish = Instant::now();
            let mut sort = |singles: SinglesRef<'_>,
                            prompts: &mut TableOut,
                            delayed: &mut Option<TableOut>,
                            report: &mut CoincidenceReport|
             -> Result<()> {
                view.singles_sorted += singles.t_ps.len() as u64;
                let before = prompts.pending.len();
                let pushed = prompt_sorter.push(singles, &mut prompts.pending);
                view.prompts += prompts.pending.len().saturating_sub(before) as u64;
                view.add_dt(detector_ordered_dts(&prompts.pending, before, &lut));
                if let Err(e) = pushed {
                    *report
                        .refused_batches
                        .entry(refusal_reason(&e).into())
                        .or_insert(0) += 1;
                    return Ok(());
                }
                prompts.write_if_full(false)?;
                if let (Some(s), Some(d)) = (delayed_sorter.as_mut(), delayed.as_mut()) {
                    let before = d.pending.len();
                    if s.push(singles, &mut d.pending).is_ok() {
                        view.delayeds += d.pending.len().saturating_sub(before) as u64;
                        d.write_if_full(false)?;
                    }
                }
                if last_publish.elapsed() >= LIVE_PUBLISH_EVERY {
                    last_publish = Instant::now();
                    view.bytes_written = flushed_bytes(prompts, delayed.as_ref());
                    live.coincidences.publish(Some(view.clone()));
                }
                Ok(())
            };
            for batch in rx {
                if let Err(e) = sort(batch.singles_ref(), &mut prompts, &mut delayed, &mut report) {
                    // The run stops at once (a full disk, most likely), not at its end.
                    let e = e.context("coincidence sink");
                    let _ = live
                        .failure
                        .set(crate::observe::live_stats::SinkFailure::of(&e));
                    return Err(e);
                }
            }
            let before = prompts.pending.len();
            prompt_sorter.finish(&mut prompts.pending);
            view.prompts += prompts.pending.len().saturating_sub(before) as u64;
            view.add_dt(detector_ordered_dts(&prompts.pending, before, &lut));
            report.prompt = Some(*prompt_sorter.stats());
            report.files.extend(prompts.commit()?);
            if let (Some(mut s), Some(mut d)) = (delayed_sorter, delayed) {
                let before = d.pending.len();
                s.finish(&mut d.pending);
                view.delayeds += d.pending.len().saturating_sub(before) as u64;
                report.delayed = Some(*s.stats());
                report.files.extend(d.commit()?);
            }
            view.bytes_written = report.files.iter().map(|f| f.bytes).sum();
            live.coincidences.publish(Some(view));
            Ok(report)
        })
        .context("cannot start the coincidence thread")?;
    Ok((tx, handle))
}

/// The dashboard's Δt of the pairs of `batch` from row `from` on, oriented by detector
/// ([`detector_ordered_dt_ps`]: smaller module first, then smaller channel), the module being
/// the crystal's region in the run's map (channel id / 64 for a channel it does not map).
fn detector_ordered_dts<'b>(
    batch: &'b CoincidenceBatch,
    from: usize,
    lut: &'b CrystalLut,
) -> impl Iterator<Item = i64> + 'b {
    let module = move |channel: u32| {
        lut.crystal(channel).map_or(
            channel / scandaq_core::snapshot::CHANNELS_PER_MODULE as u32,
            |c| lut.module(c),
        )
    };
    let single = move |t_ps: i64, channel: u32| PairSingle {
        t_ps,
        module: module(channel),
        channel,
    };
    let n = batch.len();
    (from.min(n)..n).map(move |i| {
        detector_ordered_dt_ps(
            single(batch.t1_ps[i], batch.channel1[i]),
            single(batch.t2_ps[i], batch.channel2[i]),
        )
    })
}

/// The manifest name of a refused batch.
fn refusal_reason(e: &CoincidenceError) -> &'static str {
    match e {
        CoincidenceError::NotTimeOrdered { .. } => "not_time_ordered",
        CoincidenceError::ColumnLengths { .. } => "unequal_columns",
        _ => "invalid",
    }
}

/// What the coincidence stage sorts, in time order: singles or grouped photons, as the four
/// columns the sorter reads (all of the same length). Its own type, so a [`HitBatch`] never
/// travels with its raw columns left empty.
#[derive(Debug, Default)]
pub struct SorterInput {
    /// Time, ps.
    pub t_ps: Vec<i64>,
    /// PETsys absolute channel id (a photon's: its highest-energy hit's).
    pub channel: Vec<u32>,
    /// Energy, keV (or ToT ns).
    pub energy_kev: Vec<f32>,
    /// Hit flags (a photon's: OR of its hits').
    pub flags: Vec<u16>,
}

impl SorterInput {
    /// The physics columns of `batch` (copied: the singles sink keeps the batch).
    pub fn of_singles(batch: &HitBatch) -> Self {
        Self {
            t_ps: batch.t_ps.clone(),
            channel: batch.channel.clone(),
            energy_kev: batch.energy_kev.clone(),
            flags: batch.flags.clone(),
        }
    }

    /// The physics columns of `batch`, moved (nothing else needs the batch).
    pub fn from_singles(batch: HitBatch) -> Self {
        Self {
            t_ps: batch.t_ps,
            channel: batch.channel,
            energy_kev: batch.energy_kev,
            flags: batch.flags,
        }
    }

    /// The photons of `batch` (moved; their multiplicities stay with the singles' columns).
    pub fn of_photons(batch: PhotonBatch) -> Self {
        Self {
            t_ps: batch.t_ps,
            channel: batch.channel,
            energy_kev: batch.energy_kev,
            flags: batch.flags,
        }
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.t_ps.len()
    }

    /// True when there is nothing to sort.
    pub fn is_empty(&self) -> bool {
        self.t_ps.is_empty()
    }

    /// The rows as the sorter borrows them.
    pub fn singles_ref(&self) -> SinglesRef<'_> {
        SinglesRef {
            t_ps: &self.t_ps,
            channel: &self.channel,
            energy_kev: &self.energy_kev,
            flags: &self.flags,
        }
    }
}

/// Parses `MIN:MAX` keV (`400:650`, `400:650keV`; the old `400,650` is read too, see
/// [`CoincidenceArgs::notes`]), or `none`.
pub fn parse_energy_window(s: &str) -> Result<Option<[f32; 2]>> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let w = scandaq_core::units::parse_kev_window(s)
        .map_err(|e| anyhow!("--energy-window: {e}, or none"))?;
    Ok(Some(w.kev()))
}

/// A distance flag: a number of mm, 0 or more (`20`, `20mm`).
fn distance_mm(s: &str) -> Result<f64, String> {
    scandaq_core::units::parse_number_in(s, 0.0, f64::INFINITY, "mm")
}

/// A count flag of 1 or more that fits in 32 bits.
fn count_u32(s: &str) -> Result<u32, String> {
    scandaq_core::units::parse_whole(s, 1, u64::from(u32::MAX)).map(|n| n as u32)
}

/// Coincidence flags shared by `scandaq demo`, `replay` and `run` (each overrides the run
/// config's `[coincidences]` table, or the defaults).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CoincidenceArgs {
    /// Do not sort coincidences (singles only).
    #[arg(long)]
    pub no_coincidences: bool,
    /// Prompt coincidence window (e.g. 4ns; closed interval on integer ps).
    #[arg(long, value_name = "DURATION", value_parser = scandaq_core::units::parse_time_ps)]
    pub window: Option<i64>,
    /// Delayed window offset (e.g. 100ns; 0 = no delayed table).
    #[arg(long, value_name = "DURATION", value_parser = scandaq_core::units::parse_time_ps)]
    pub delay: Option<i64>,
    /// Energy window applied before sorting, MIN:MAX keV (e.g. 400:650 or 400:650keV) or
    /// `none`.
    #[arg(long, value_name = "MIN:MAX", allow_hyphen_values = true)]
    pub energy_window: Option<String>,
    /// Multiples policy: takeAllGoods, takeWinnerOfGoods, takeWinnerIfIsGood,
    /// takeWinnerIfAllAreGoods, takeIfOnlyOneGood, removeMultiples.
    #[arg(long, value_name = "POLICY")]
    pub multiples: Option<String>,
    /// Single-window mode (a kept pair's second single opens no window) instead of multi-window.
    #[arg(long)]
    pub single_window: bool,
    /// Group hits into photons first, within this window (e.g. 10ns) and 100 mm; the singles
    /// table then says which photon each hit went into (photon_id, photon_multiplicity).
    #[arg(long, value_name = "DURATION", value_parser = scandaq_core::units::parse_time_ps)]
    pub group_window: Option<i64>,
    /// Write each single's crystal centre (x_mm, y_mm, z_mm, from the crystal map) into the
    /// singles table.
    #[arg(long)]
    pub positions: bool,
    /// Write only the coincidence tables, no singles table (the singles, or photons, only
    /// feed the sorters).
    #[arg(long, conflicts_with_all = ["no_coincidences", "positions"])]
    pub coincidences_only: bool,
    /// Which singles open a window: multi_window (default), single_window or
    /// single_window_gate10 (docs/coincidences.md).
    #[arg(long, value_name = "MODE")]
    pub window_mode: Option<String>,
    /// Good pair: transaxial distance between the crystals at least this, mm.
    #[arg(long, value_name = "MM", value_parser = distance_mm)]
    pub min_transaxial: Option<f64>,
    /// Good pair: axial distance |z1 - z2| at most this, mm.
    #[arg(long, value_name = "MM", value_parser = distance_mm)]
    pub max_axial: Option<f64>,
    /// Good pair: module difference at least this (with --ring-modules it wraps around the ring).
    #[arg(long, value_name = "N", value_parser = count_u32)]
    pub min_module_difference: Option<u32>,
    /// Modules around the ring, for --min-module-difference.
    #[arg(long, value_name = "N", requires = "min_module_difference", value_parser = count_u32)]
    pub ring_modules: Option<u32>,
    /// A PETsys map_trigger.tsv: `C` region pairs may coincide, `M` region pairs may share a
    /// photon (replaces the one --petsys-config names).
    #[arg(long, value_name = "FILE")]
    pub trigger_map: Option<std::path::PathBuf>,
    /// Grouping: largest distance from a photon's first hit, mm [default: 100].
    #[arg(long, value_name = "MM", value_parser = distance_mm)]
    pub group_max_distance: Option<f64>,
    /// Grouping: photons with a hit count outside MIN:MAX are dropped (counted), e.g. 1:64.
    #[arg(long, value_name = "MIN:MAX", allow_hyphen_values = true)]
    pub group_hits: Option<String>,
    /// Grouping: photons whose summed energy is outside MIN:MAX (the energy column's unit:
    /// keV, or ToT ns without an energy table) are dropped (counted).
    #[arg(long, value_name = "MIN:MAX", allow_hyphen_values = true)]
    pub group_energy: Option<String>,
}

impl CoincidenceArgs {
    /// Notes for the operator about how the flags were written (an energy window in the old
    /// comma form).
    pub fn notes(&self) -> Vec<String> {
        self.energy_window
            .as_deref()
            .and_then(|e| scandaq_core::units::parse_kev_window(e).ok())
            .and_then(|w| w.deprecation_note("--energy-window"))
            .into_iter()
            .collect()
    }

    /// `base` with every flag given applied, validated.
    pub fn apply(&self, mut base: CoincidenceOptions) -> Result<CoincidenceOptions> {
        if self.no_coincidences {
            base.enabled = false;
        }
        if let Some(w) = self.window {
            base.window_ps = w;
        }
        if let Some(d) = self.delay {
            base.delay_ps = d;
        }
        if let Some(e) = &self.energy_window {
            base.energy_window_kev = parse_energy_window(e)?;
        }
        if let Some(p) = &self.multiples {
            base.policy = p.parse().map_err(|e| anyhow!("--multiples {p}: {e}"))?;
        }
        if self.single_window {
            base.single_window = true;
        }
        if self.positions {
            base.positions = true;
        }
        if self.coincidences_only {
            base.coincidences_only = true;
        }
        if let Some(m) = &self.window_mode {
            base.window_mode = Some(parse_window_mode(m)?);
        }
        if self.min_transaxial.is_some() {
            base.min_transaxial_mm = self.min_transaxial;
        }
        if self.max_axial.is_some() {
            base.max_axial_mm = self.max_axial;
        }
        if let Some(min) = self.min_module_difference {
            base.min_module_difference = Some(ModuleDifference {
                min,
                ring_modules: self.ring_modules,
            });
        }
        let mut multi_hit = None;
        if let Some(path) = &self.trigger_map {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--trigger-map: cannot read {}", path.display()))?;
            let (c, m) = crate::process::trigger_map::parse_trigger_map(path, &text)?;
            base.allowed_module_pairs = Some(c);
            multi_hit = Some(m);
        }
        self.apply_grouping(&mut base, multi_hit)?;
        base.validate()?;
        Ok(base)
    }

    /// True when a grouping flag is given.
    pub fn sets_grouping(&self) -> bool {
        self.group_window.is_some()
            || self.group_max_distance.is_some()
            || self.group_hits.is_some()
            || self.group_energy.is_some()
    }

    /// The grouping flags: any of them turns grouping on (defaults for the others).
    fn apply_grouping(
        &self,
        base: &mut CoincidenceOptions,
        multi_hit: Option<ModulePairs>,
    ) -> Result<()> {
        if !self.sets_grouping() && (multi_hit.is_none() || base.grouping.is_none()) {
            return Ok(());
        }
        let mut g = base.grouping.take().unwrap_or_default();
        if let Some(w) = self.group_window {
            g.window_ps = w;
        }
        if let Some(d) = self.group_max_distance {
            g.max_distance_mm = d;
        }
        if let Some(text) = &self.group_hits {
            let [lo, hi] = parse_range::<u32>("--group-hits", text, "hits, e.g. 1:64")?;
            (g.min_hits, g.max_hits) = (lo, Some(hi));
        }
        if let Some(text) = &self.group_energy {
            g.energy_window = Some(parse_range::<f32>(
                "--group-energy",
                text,
                "the energy column's unit, e.g. 400:650",
            )?);
        }
        if multi_hit.is_some() {
            g.multi_hit_module_pairs = multi_hit;
        }
        base.grouping = Some(g);
        Ok(())
    }
}

/// Parses a window mode name (`multi_window`, `single_window`, `single_window_gate10`).
fn parse_window_mode(text: &str) -> Result<WindowMode> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        anyhow!(
            "--window-mode {text}: expected multi_window, single_window or single_window_gate10"
        )
    })
}

/// Parses `MIN:MAX` for `flag` (`what` says the unit and gives an example).
fn parse_range<T: std::str::FromStr>(flag: &str, text: &str, what: &str) -> Result<[T; 2]> {
    let parsed = text
        .split_once(':')
        .and_then(|(a, b)| Some([a.trim().parse().ok()?, b.trim().parse().ok()?]));
    parsed.with_context(|| format!("{flag} {text:?}: expected MIN:MAX ({what})"))
}
