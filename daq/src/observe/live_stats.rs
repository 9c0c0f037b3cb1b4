//! The live statistics model: lock-free counters and histograms that the acquisition updates
//! once per batch and anything else (the stderr stats line, the dashboard, a control socket)
//! reads as a consistent-enough [`StatsSnapshot`] at ~10 Hz, without ever blocking the
//! acquisition.

use arc_swap::ArcSwap;
use scandaq_core::HitBatch;
use scandaq_core::run_state::FailureReason;
pub use scandaq_core::snapshot::{
    BoardDecodeSnapshot, BoardTransportSnapshot, CHANNELS_PER_MODULE, CoincidenceSnapshot,
    ENERGY_BINS, InputSnapshot, MODULE_ENERGY_BIN, MODULE_ENERGY_BINS, RunHealth, RunInfo,
    RunState, StatsSnapshot, StreamSnapshot, TRACKED_CHANNELS,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A value one thread publishes and others copy, lock-free (`arc_swap::ArcSwap`): a
/// publication swaps in a new `Arc` and never waits for readers, and no publication is skipped;
/// a reader takes the current `Arc` and clones the value out of it.
#[derive(Debug, Default)]
pub struct LatestCell<T> {
    slot: ArcSwap<T>,
}

impl<T: Clone> LatestCell<T> {
    /// Replaces the value (never waits).
    pub fn publish(&self, value: T) {
        self.slot.store(Arc::new(value));
    }

    /// A copy of the latest value.
    pub fn get(&self) -> T {
        T::clone(&self.slot.load())
    }
}

/// Rows and bytes a table sink has written so far.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Rows handed to the Parquet writer.
    pub rows: AtomicU64,
    /// Bytes the Parquet writer has flushed to the file.
    pub bytes: AtomicU64,
    /// Coincidence counters and histogram, published by the coincidence stage.
    pub coincidences: LatestCell<Option<CoincidenceSnapshot>>,
    /// Set the moment the singles sink fails (a full disk, ...): the run stops on it.
    pub failure: std::sync::OnceLock<SinkFailure>,
}

/// Shared, lock-free statistics of one acquisition.
pub struct LiveStats {
    started: Instant,
    state: AtomicU8,
    inputs: Mutex<Vec<Arc<LatestCell<InputSnapshot>>>>,
    /// What the run is (set at start).
    pub info: LatestCell<RunInfo>,
    /// Per-board decode counts, published by the processing thread.
    pub board_decode: LatestCell<Vec<BoardDecodeSnapshot>>,
    /// Figures of the sampled streams (MEG, ultrasound), published by the processing
    /// thread's stream stage.
    pub streams: Arc<LatestCell<Vec<StreamSnapshot>>>,
    /// Singles sink counters, updated by the sink thread.
    pub sink: Arc<SinkCounters>,
    /// Singles handed to the sink.
    pub singles: AtomicU64,
    /// Frame bytes taken off the input rings.
    pub frame_bytes: AtomicU64,
    /// Chunks waiting in the input rings (gauge).
    pub ring_fill: AtomicU64,
    /// Boards seen.
    pub boards: AtomicU64,
    energy: Box<[AtomicU64]>,
    channels: Box<[AtomicU64]>,
    other_channel_hits: AtomicU64,
    /// Per-module energy spectra, `[module * MODULE_ENERGY_BINS + bin]` (allocated on the
    /// first singles).
    module_energy: Mutex<Vec<u64>>,
    /// [`Self::record_singles`]'s working counts (one writer: the lock is never contended).
    scratch: Mutex<RecordScratch>,
    /// Failure, warnings and disk space (rarely written: a plain lock).
    health: Mutex<RunHealth>,
}

/// 1 keV energy bins per bin of a module's spectrum.
const KEV_BINS_PER_MODULE_BIN: usize = MODULE_ENERGY_BIN as usize;
// The module spectra cover the same range as the 1 keV one, in whole 1 keV bins.
const _: () = assert!(
    KEV_BINS_PER_MODULE_BIN as f32 == MODULE_ENERGY_BIN
        && KEV_BINS_PER_MODULE_BIN * MODULE_ENERGY_BINS == ENERGY_BINS
);

/// Hits per tracked channel and per 1 keV bin of the batch being recorded, and the channels
/// with any.
#[derive(Default)]
struct RecordScratch {
    counts: Vec<u32>,
    touched: Vec<u32>,
    energy: Vec<u32>,
}

impl Default for LiveStats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            state: AtomicU8::new(0),
            inputs: Mutex::new(Vec::new()),
            info: LatestCell::default(),
            board_decode: LatestCell::default(),
            streams: Arc::default(),
            sink: Arc::default(),
            singles: AtomicU64::new(0),
            frame_bytes: AtomicU64::new(0),
            ring_fill: AtomicU64::new(0),
            boards: AtomicU64::new(0),
            energy: (0..ENERGY_BINS).map(|_| AtomicU64::new(0)).collect(),
            channels: (0..TRACKED_CHANNELS).map(|_| AtomicU64::new(0)).collect(),
            other_channel_hits: AtomicU64::new(0),
            module_energy: Mutex::new(Vec::new()),
            scratch: Mutex::default(),
            health: Mutex::new(RunHealth::default()),
        }
    }
}

impl LiveStats {
    /// Moves the run to `state`. Called only by the run's `process::run::Run`, so this state
    /// and the manifest's move together (checked by the `run_lifecycle` tests).
    pub fn set_state(&self, state: RunState) {
        let i = RunState::ALL.iter().position(|&s| s == state).unwrap_or(0);
        self.state.store(i as u8, Ordering::Relaxed);
    }

    /// The run's state now.
    pub fn state(&self) -> RunState {
        RunState::ALL
            .get(self.state.load(Ordering::Relaxed) as usize)
            .copied()
            .unwrap_or(RunState::Idle)
    }

    /// Records the failure that ends the run (the first one wins) and moves it to
    /// `stopping`: the dashboard and the stats line show it at once.
    pub fn set_failure(&self, reason: FailureReason, error: &str) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if h.failure.is_none() {
            h.failure = Some(reason);
            h.error = Some(error.to_string());
        }
    }

    /// The failure recorded so far.
    pub fn failure(&self) -> Option<(FailureReason, String)> {
        let h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.failure.map(|f| (f, h.error.clone().unwrap_or_default()))
    }

    /// Adds an operator warning (kept in the snapshot, the oldest dropped beyond
    /// [`RunHealth::MAX_WARNINGS`]).
    pub fn warn(&self, text: String) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if h.warnings.len() >= RunHealth::MAX_WARNINGS {
            h.warnings.remove(0);
        }
        h.warnings.push(text);
    }

    /// Records the output disk's free space and time to full.
    pub fn set_disk(&self, free_bytes: u64, seconds_to_full: Option<f64>) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.disk_free_bytes = Some(free_bytes);
        h.disk_seconds_to_full = seconds_to_full;
    }

    /// Adds an input; it publishes into the returned cell.
    pub fn register_input(&self, label: &str) -> Arc<LatestCell<InputSnapshot>> {
        let cell = Arc::new(LatestCell::default());
        cell.publish(InputSnapshot {
            label: label.to_string(),
            ..Default::default()
        });
        self.inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cell.clone());
        cell
    }

    /// A copy of every input's latest snapshot (cheaper than [`Self::snapshot`]).
    pub fn inputs_snapshot(&self) -> Vec<InputSnapshot> {
        self.inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|c| c.get())
            .collect()
    }

    /// Accounts for a batch of singles on its way to the sink: histogrammed locally first,
    /// then one atomic add per touched bin (not per hit).
    pub fn record_singles(&self, batch: &HitBatch) {
        self.singles
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let n_modules = TRACKED_CHANNELS / CHANNELS_PER_MODULE;
        // One writer (the processing thread); a snapshot holds the module lock only to copy.
        let mut modules = self.module_energy.lock().unwrap_or_else(|p| p.into_inner());
        if modules.is_empty() {
            modules.resize(n_modules * MODULE_ENERGY_BINS, 0);
        }
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let RecordScratch {
            counts,
            touched,
            energy,
        } = &mut *scratch;
        if counts.is_empty() {
            counts.resize(TRACKED_CHANNELS, 0);
            energy.resize(ENERGY_BINS, 0);
        }
        // One pass: the 1 keV bin of each hit gives its module bin too (a whole number of
        // 1 keV bins per module bin, checked at compile time below), so there is no division
        // per hit; channels are counted in a kept array and added once per channel hit. Plain
        // slices, so the loop does not reload the vectors through their guards per hit.
        let (counts_of, energy_of, modules_of) =
            (&mut counts[..], &mut energy[..], &mut modules[..]);
        let mut other = 0u64;
        for (&c, &e) in batch.channel.iter().zip(&batch.energy_kev) {
            let bin = (e >= 0.0 && e < ENERGY_BINS as f32).then_some(e as usize);
            if let Some(n) = counts_of.get_mut(c as usize) {
                if *n == 0 {
                    touched.push(c);
                }
                *n += 1;
                if let Some(bin) = bin {
                    let module = c as usize / CHANNELS_PER_MODULE;
                    let at = module * MODULE_ENERGY_BINS + bin / KEV_BINS_PER_MODULE_BIN;
                    if let Some(m) = modules_of.get_mut(at) {
                        *m += 1;
                    }
                }
            } else {
                other += 1;
            }
            if let Some(n) = bin.and_then(|b| energy_of.get_mut(b)) {
                *n += 1;
            }
        }
        drop(modules);
        for (total, n) in self.energy.iter().zip(energy.iter_mut()) {
            if *n > 0 {
                total.fetch_add(u64::from(std::mem::take(n)), Ordering::Relaxed);
            }
        }
        for &c in touched.iter() {
            let n = std::mem::take(&mut counts[c as usize]);
            if let Some(total) = self.channels.get(c as usize) {
                total.fetch_add(u64::from(n), Ordering::Relaxed);
            }
        }
        touched.clear();
        if other > 0 {
            self.other_channel_hits.fetch_add(other, Ordering::Relaxed);
        }
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let inputs: Vec<InputSnapshot> = self
            .inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|c| c.get())
            .collect();
        StatsSnapshot {
            info: self.info.get(),
            state: self.state(),
            elapsed_s: self.started.elapsed().as_secs_f64(),
            inputs,
            boards_decoded: self.board_decode.get(),
            sink_rows: self.sink.rows.load(Ordering::Relaxed),
            sink_bytes: self.sink.bytes.load(Ordering::Relaxed),
            singles: self.singles.load(Ordering::Relaxed),
            frame_bytes: self.frame_bytes.load(Ordering::Relaxed),
            ring_fill: self.ring_fill.load(Ordering::Relaxed),
            boards: self.boards.load(Ordering::Relaxed),
            energy_bins: self
                .energy
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            channel_hits: self
                .channels
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let n = c.load(Ordering::Relaxed);
                    (n > 0).then_some((i as u32, n))
                })
                .collect(),
            other_channel_hits: self.other_channel_hits.load(Ordering::Relaxed),
            module_energy_bins: {
                let modules = self.module_energy.lock().unwrap_or_else(|p| p.into_inner());
                modules
                    .chunks(MODULE_ENERGY_BINS)
                    .enumerate()
                    .filter(|(_, bins)| bins.iter().any(|&n| n > 0))
                    .map(|(m, bins)| (m as u32, bins.to_vec()))
                    .collect()
            },
            coincidences: self.sink.coincidences.get(),
            streams: self.streams.get(),
            health: self
                .health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Why a table sink stopped early: published in [`SinkCounters::failure`] the moment it
/// happens, so the run can stop at once (a full disk: reason `disk_full`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkFailure {
    /// The file system is full (ENOSPC, EDQUOT).
    pub disk_full: bool,
    /// The file being written, when known.
    pub path: Option<PathBuf>,
    /// One line for the operator (names the path and what to do).
    pub message: String,
}

impl SinkFailure {
    /// Classifies an error of the sink ([`scandaq_sinks::SinkError`] anywhere in its chain).
    pub fn of(e: &anyhow::Error) -> Self {
        let sink = e
            .chain()
            .find_map(|c| c.downcast_ref::<scandaq_sinks::SinkError>());
        Self {
            disk_full: sink.is_some_and(scandaq_sinks::SinkError::is_disk_full),
            path: sink.and_then(|s| s.path().map(Path::to_path_buf)),
            message: format!("{e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fill_counters_and_histograms() {
        let stats = LiveStats::default();
        let mut b = HitBatch::from_times(&[1, 2, 3, 4]);
        b.channel = vec![5, 5, 70_000, 9];
        b.energy_kev = vec![511.2, 511.9, 3000.0, -1.0];
        stats.record_singles(&b);
        let s = stats.snapshot();
        assert_eq!(s.singles, 4);
        assert_eq!(s.energy_bins[511], 2);
        assert_eq!(s.energy_bins.iter().sum::<u64>(), 2);
        assert_eq!(s.channel_hits, vec![(5, 2), (9, 1)]);
        assert_eq!(s.other_channel_hits, 1);
        // Channel 5 is in module 0; channel 9's energy is out of range.
        assert_eq!(s.module_energy_bins.len(), 1);
        let (module, bins) = &s.module_energy_bins[0];
        assert_eq!(*module, 0);
        assert_eq!(bins[(511.2 / MODULE_ENERGY_BIN) as usize], 2);
        assert_eq!(bins.iter().sum::<u64>(), 2);
        let later = stats.snapshot();
        assert_eq!(later.singles_rate_since(&s), 0.0);
    }

    /// Per-channel counts, the energy spectrum and the module spectra over several batches
    /// equal a plain count (channels beyond the tracked ones counted apart; energies out of
    /// range, NaN and bin edges included).
    #[test]
    fn counts_and_spectra_over_batches_equal_a_plain_count() {
        let stats = LiveStats::default();
        let mut want = std::collections::BTreeMap::<u32, u64>::new();
        let mut want_energy = vec![0u64; ENERGY_BINS];
        let mut want_modules = std::collections::BTreeMap::<u32, Vec<u64>>::new();
        let mut other = 0u64;
        let mut x = 12_345u64;
        let mut next = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            x >> 33
        };
        let edges = [-0.5, 0.0, 7.999, 8.0, 511.0, 2047.99, 2048.0, 1e9, f32::NAN];
        for len in [1000, 1, 0, 5000] {
            let mut b = HitBatch::from_times(&vec![0; len]);
            for i in 0..len {
                let c = next() as u32 % (TRACKED_CHANNELS as u32 + 200);
                let e = if i % 7 == 0 {
                    edges[next() as usize % edges.len()]
                } else {
                    (next() % 2_100_000) as f32 / 1000.0
                };
                b.channel[i] = c;
                b.energy_kev[i] = e;
                if (c as usize) < TRACKED_CHANNELS {
                    *want.entry(c).or_default() += 1;
                } else {
                    other += 1;
                }
                if (0.0..ENERGY_BINS as f32).contains(&e) {
                    want_energy[e.floor() as usize] += 1;
                    if (c as usize) < TRACKED_CHANNELS {
                        let module = c / CHANNELS_PER_MODULE as u32;
                        let bins = want_modules
                            .entry(module)
                            .or_insert_with(|| vec![0; MODULE_ENERGY_BINS]);
                        bins[(e / MODULE_ENERGY_BIN).floor() as usize] += 1;
                    }
                }
            }
            stats.record_singles(&b);
        }
        let s = stats.snapshot();
        let got: std::collections::BTreeMap<u32, u64> = s.channel_hits.into_iter().collect();
        assert_eq!(got, want);
        assert_eq!(s.other_channel_hits, other);
        assert_eq!(s.energy_bins, want_energy);
        let got_modules: std::collections::BTreeMap<u32, Vec<u64>> =
            s.module_energy_bins.into_iter().collect();
        assert_eq!(got_modules, want_modules);
    }
}
