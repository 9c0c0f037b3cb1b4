//! The PETsys pipeline shared by `replay` and `demo`: byte chunks of frames in, time-ordered
//! calibrated singles out to Parquet, with every frame, hit and byte accounted for.
//!
//! ```text
//! input thread --(bounded chunks)--> scan frames --> rayon: decode+calibrate+sort per block
//!   --> watermark merge (stream order restored) --(bounded batches)--> Parquet sink thread
//!   --> [derived columns: positions, photon grouping] --> singles files
//!                                                     \--> coincidence thread
//! ```

use crate::observe::live_stats::SinkCounters;
use crate::observe::live_stats::SinkFailure;
use crate::process::coinc_stage::{self, CoincidenceReport, CoincidenceSetup, SorterInput};
use crate::process::kernel::CompiledCalibration;
use crate::process::rotating_table::RotatingTable;
use crate::process::singles_columns::{Annotated, SinglesAnnotator};
use anyhow::{Context, Result, anyhow};
use arrow_array::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use scandaq_core::HitBatch;
use scandaq_core::coincidence::{Grouper, PhotonBatch};
use scandaq_sinks::singles::{self, SinglesColumns};
use scandaq_sinks::{FileMetadata, FileRecord};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use super::frame_decode::Processor;
pub use super::frame_decode::{BLOCK_HITS, LATENESS_PS, PipelineCounts};

/// Batches in flight between the merger and the sink.
const SINK_QUEUE: usize = 8;

/// A chunk of raw frame bytes from an input, with how far it advances the progress bar.
pub struct Chunk {
    /// Frame bytes (frames may straddle chunks).
    pub bytes: Vec<u8>,
    /// Progress units (bytes for files, simulated milliseconds for the simulator).
    pub progress: u64,
}

/// Energy histogram of the singles, 1 keV (or 1 ns of ToT) bins from 0 to 2047.
#[derive(Clone, Debug)]
pub struct EnergyHistogram {
    /// Counts per bin.
    pub bins: Vec<u64>,
}

impl Default for EnergyHistogram {
    fn default() -> Self {
        Self {
            bins: vec![0; 2048],
        }
    }
}

impl EnergyHistogram {
    fn fill(&mut self, energies: &[f32]) {
        for &e in energies {
            if e >= 0.0 && e < self.bins.len() as f32 {
                self.bins[e as usize] += 1;
            }
        }
    }

    /// Photopeak position: the centroid of ±15 bins around the highest bin in `[lo, hi)`.
    pub fn peak_in(&self, lo: usize, hi: usize) -> Option<f64> {
        let hi = hi.min(self.bins.len());
        let (imax, &max) = self.bins[lo..hi]
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| **c)?;
        if max == 0 {
            return None;
        }
        let centre = lo + imax;
        let (a, b) = (
            centre.saturating_sub(15),
            (centre + 16).min(self.bins.len()),
        );
        let (mut s, mut w) = (0.0, 0.0);
        for (i, &c) in self.bins[a..b].iter().enumerate() {
            s += (a + i) as f64 * c as f64;
            w += c as f64;
        }
        Some(s / w + 0.5)
    }
}

/// What the sink thread reports when it has stopped.
#[derive(Debug)]
pub struct SinkReport {
    /// The committed singles files, in order.
    pub files: Vec<FileRecord>,
    /// First and last `t_ps` written.
    pub t_range: Option<(i64, i64)>,
    /// Energy spectrum of what was written.
    pub histogram: EnergyHistogram,
    /// The coincidence stage's report, when it ran.
    pub coincidences: Option<Result<CoincidenceReport>>,
    /// Singles that went to the sorters only (coincidences-only mode: no singles table).
    pub sorted_only: u64,
    /// The error that stopped the sink early (disk full, unwritable directory, ...); every
    /// file committed before it is still in `files`.
    pub error: Option<String>,
    /// The same error, typed (also published in [`SinkCounters::failure`] the moment it
    /// happened).
    pub failure: Option<SinkFailure>,
}

impl SinkReport {
    /// Singles rows in the committed files.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

pub use super::rotating_table::{DEFAULT_ROTATE_BYTES, Rotation, parse_commit_interval};

/// The singles table of one run (a sequence of files) and its derived columns.
struct SinglesFiles {
    /// False in coincidences-only mode: no file is ever opened.
    store: bool,
    columns: SinglesColumns,
    table: RotatingTable,
}

impl SinglesFiles {
    fn open(&mut self) -> Result<()> {
        self.table.open().map(|_| ())
    }

    fn write(&mut self, record: &RecordBatch, first: i64, last: i64) -> Result<()> {
        if !self.store {
            return Ok(());
        }
        self.table.write(record, first, last)
    }

    fn tick(&mut self) -> Result<()> {
        self.table.tick()
    }

    fn bytes(&self) -> u64 {
        self.table.bytes()
    }

    fn rows(&self) -> u64 {
        self.table.rows()
    }
}

/// Sink settings of a run.
#[derive(Clone, Debug, Default)]
pub struct SinkSettings {
    /// Keep the raw diagnostic columns.
    pub raw_columns: bool,
    /// File rotation of the singles and coincidence tables.
    pub rotation: Rotation,
    /// Coincidence sorting.
    pub coincidences: Option<CoincidenceSetup>,
    /// Live counters.
    pub counters: Arc<SinkCounters>,
    /// Write a singles table (false for a run without PET calibration, where no hit can
    /// become a single: no empty table is written).
    pub singles_table: bool,
}

/// Starts the singles sink thread (and, when configured, the coincidence thread it feeds).
/// The first singles file is created before it returns, so an unwritable directory fails
/// before anything runs.
pub(crate) fn spawn_singles_sink(
    dir: &Path,
    metadata: FileMetadata,
    settings: SinkSettings,
) -> Result<(Sender<HitBatch>, JoinHandle<Result<SinkReport>>)> {
    let SinkSettings {
        raw_columns,
        rotation,
        coincidences,
        counters,
        singles_table,
    } = settings;
    let (tx, rx) = bounded::<HitBatch>(SINK_QUEUE);
    // The sink wakes this often when no rows arrive, so the open row group is cut and synced
    // within the commit interval even when the stream goes quiet.
    let tick_every = (rotation.commit_interval() / 10)
        .clamp(Duration::from_millis(5), Duration::from_millis(100));
    let coincidence_stage = match &coincidences {
        Some(setup) if setup.options.enabled => Some(coinc_stage::spawn(
            dir,
            metadata.clone(),
            setup.clone(),
            rotation,
            counters.clone(),
        )?),
        _ => None,
    };
    let mut files =
        SinglesFiles::for_run(dir, metadata, rotation, coincidences.as_ref(), raw_columns);
    files.store &= singles_table;
    if files.store {
        files.open()?;
    }
    let handle = std::thread::Builder::new()
        .name("singles-sink".into())
        .spawn(move || -> Result<SinkReport> {
            let columns = files.columns;
            let (coinc_tx, coinc_thread) = coincidence_stage.unzip();
            let lut = coincidences.as_ref().map(|c| c.lut.clone());
            // Coincidences only: no singles table to annotate, so a plain grouper feeds the
            // sorter (no per-hit labels, nothing held back).
            let plain_grouper = match (&coincidences, &lut) {
                (Some(c), Some(lut)) if !files.store => c
                    .options
                    .grouping
                    .clone()
                    .map(|g| Grouper::new(g, lut))
                    .transpose()
                    .map_err(|e| anyhow!("coincidences (grouping): {e}"))?,
                _ => None,
            };
            let annotator = match (&coincidences, &lut) {
                (Some(c), Some(lut)) if files.store && (columns.positions || columns.photons) => {
                    Some(SinglesAnnotator::new(
                        lut,
                        columns.positions,
                        c.options.grouping.clone(),
                        raw_columns,
                    )?)
                }
                _ => None,
            };
            let mut sink = SinglesSink {
                files,
                counters,
                annotator,
                plain_grouper,
                refused_batches: 0,
                coinc_tx,
                photons: PhotonBatch::default(),
                ready: Vec::new(),
                sorted_only: 0,
                t_range: None,
                histogram: EnergyHistogram::default(),
                error: None,
                failure: None,
            };
            sink.run(&rx, tick_every);
            drop(rx);
            Ok(sink.finish(coinc_thread))
        })
        .context("cannot start the sink thread")?;
    Ok((tx, handle))
}

impl SinglesFiles {
    /// The singles files of a run in `dir`, with the derived columns (docs/tables.md) the
    /// coincidence setup asks for: positions with `--positions`, photon ids whenever hits are
    /// grouped (the coincidences are then sorted from those photons). No file is open yet.
    fn for_run(
        dir: &Path,
        mut metadata: FileMetadata,
        rotation: Rotation,
        coincidences: Option<&CoincidenceSetup>,
        raw_columns: bool,
    ) -> Self {
        let grouping = coincidences.and_then(|c| c.options.grouping.as_ref());
        let columns = SinglesColumns {
            positions: coincidences.is_some_and(|c| c.options.positions),
            photons: grouping.is_some(),
            raw: raw_columns,
        };
        if let Some(g) = grouping {
            metadata.push((
                "scandaq.photon_grouping".into(),
                serde_json::to_string(g).unwrap_or_default(),
            ));
        }
        Self {
            store: !coincidences.is_some_and(|c| c.options.coincidences_only),
            columns,
            table: RotatingTable::new(
                dir,
                singles::SINGLES_TABLE,
                singles::schema_with(columns),
                singles::write_options(),
                metadata,
                rotation,
            ),
        }
    }
}

/// The singles sink thread's state: the files, what was written so far, the derived-column
/// annotator and the coincidence thread's input.
struct SinglesSink<'a> {
    files: SinglesFiles,
    counters: Arc<SinkCounters>,
    annotator: Option<SinglesAnnotator<'a>>,
    /// Coincidences-only runs with grouping: the grouper, without labels.
    plain_grouper: Option<Grouper<'a>>,
    /// Batches the plain grouper refused (time order broken): not sorted, counted.
    refused_batches: u64,
    /// None when there is no coincidence stage, or it stopped on an error (its report says
    /// why).
    coinc_tx: Option<Sender<SorterInput>>,
    photons: PhotonBatch,
    ready: Vec<Annotated>,
    /// Singles that went to the sorters only (coincidences-only mode).
    sorted_only: u64,
    t_range: Option<(i64, i64)>,
    histogram: EnergyHistogram,
    error: Option<String>,
    failure: Option<SinkFailure>,
}

impl SinglesSink<'_> {
    /// Takes batches until the merger hangs up or a write fails, keeping the commit interval
    /// while none arrive.
    fn run(&mut self, rx: &Receiver<HitBatch>, tick_every: Duration) {
        loop {
            let batch = match rx.recv_timeout(tick_every) {
                Ok(b) => Some(b),
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.files.tick() {
                        self.fail(e);
                        return;
                    }
                    // What the tick flushed counts as written (the dashboard's figure).
                    self.publish_counters();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => None,
            };
            let end = batch.is_none();
            self.route(batch);
            if let Err(e) = self.write_ready() {
                // Stop taking data (senders see the sink gone and stop cleanly); what was
                // committed stays committed.
                self.fail(e);
                return;
            }
            if end {
                return;
            }
        }
    }

    /// Sends a batch (`None`: the end of the stream) through the annotator, when there is
    /// one, into the batches ready to write, and what the coincidence thread sorts to it.
    fn route(&mut self, batch: Option<HitBatch>) {
        let grouping = self.files.columns.photons;
        if let Some(g) = self.plain_grouper.as_mut() {
            self.photons.clear();
            match &batch {
                Some(b) => {
                    // At most one photon per hit, plus the few groups held open before.
                    self.photons.reserve(b.len() + 64);
                    if g.push(b.into(), &mut self.photons).is_err() {
                        self.refused_batches += 1;
                    }
                }
                None => g.finish(&mut self.photons),
            }
            if let Some(b) = &batch {
                self.note_sorted_only(b);
            }
            let p = std::mem::take(&mut self.photons);
            Self::to_sorter(&mut self.coinc_tx, SorterInput::of_photons(p));
            return;
        }
        let Some(a) = &mut self.annotator else {
            if let Some(batch) = batch.filter(|b| !b.is_empty()) {
                if !self.files.store {
                    // Coincidences only: the columns move to the sorter, nothing is written.
                    self.note_sorted_only(&batch);
                    Self::to_sorter(&mut self.coinc_tx, SorterInput::from_singles(batch));
                    return;
                }
                if self.coinc_tx.is_some() {
                    Self::to_sorter(&mut self.coinc_tx, SorterInput::of_singles(&batch));
                }
                self.ready.push((batch, singles::DerivedColumns::default()));
            }
            return;
        };
        if batch.as_ref().is_some_and(|b| b.is_empty()) {
            return;
        }
        self.photons.clear();
        match batch {
            Some(batch) => {
                if !grouping && self.coinc_tx.is_some() {
                    Self::to_sorter(&mut self.coinc_tx, SorterInput::of_singles(&batch));
                }
                a.push(batch, &mut self.photons, &mut self.ready);
            }
            None => a.finish(&mut self.photons, &mut self.ready),
        }
        if grouping {
            let p = std::mem::take(&mut self.photons);
            Self::to_sorter(&mut self.coinc_tx, SorterInput::of_photons(p));
        }
    }

    /// Sends what the coincidence thread sorts: the photons when grouping, else the singles'
    /// physics columns.
    fn to_sorter(coinc_tx: &mut Option<Sender<SorterInput>>, batch: SorterInput) {
        if batch.is_empty() {
            return;
        }
        if let Some(tx) = coinc_tx.as_ref()
            && tx.send(batch).is_err()
        {
            // The coincidence thread stopped on an error: its report says why.
            *coinc_tx = None;
        }
    }

    /// Writes the batches ready (the rest are dropped after a failed write).
    fn write_ready(&mut self) -> Result<()> {
        let mut ready = std::mem::take(&mut self.ready);
        for (batch, derived) in ready.drain(..) {
            self.write(batch, derived)?;
        }
        self.ready = ready;
        Ok(())
    }

    /// Counts a batch that goes to the sorters only (coincidences-only mode): its spectrum
    /// and time range still describe the run.
    fn note_sorted_only(&mut self, batch: &HitBatch) {
        let Some((&first, &last)) = batch.t_ps.first().zip(batch.t_ps.last()) else {
            return;
        };
        self.histogram.fill(&batch.energy_kev);
        self.t_range = Some(self.t_range.map_or((first, last), |(a, _)| (a, last)));
        self.sorted_only += batch.len() as u64;
    }

    /// Writes one batch with its derived columns and publishes the counters.
    fn write(&mut self, batch: HitBatch, derived: singles::DerivedColumns) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if !self.files.store {
            self.note_sorted_only(&batch);
            return Ok(());
        }
        let (first, last) = (batch.t_ps[0], batch.t_ps[batch.len() - 1]);
        self.histogram.fill(&batch.energy_kev);
        singles::to_record_batch_with(batch, derived, self.files.columns)
            .map_err(|e| anyhow!("building a singles row group: {e}"))
            .and_then(|record| self.files.write(&record, first, last))?;
        self.t_range = Some(self.t_range.map_or((first, last), |(a, _)| (a, last)));
        self.publish_counters();
        Ok(())
    }

    /// Publishes the rows and bytes written so far (flushed, or committed).
    fn publish_counters(&self) {
        self.counters
            .rows
            .store(self.files.rows(), Ordering::Relaxed);
        self.counters
            .bytes
            .store(self.files.bytes(), Ordering::Relaxed);
    }

    /// Records the error that stops the sink, published at once: the run stops on it without
    /// waiting for the sink's end.
    fn fail(&mut self, e: anyhow::Error) {
        let f = SinkFailure::of(&e);
        let _ = self.counters.failure.set(f.clone());
        self.failure = Some(f);
        self.error = Some(format!("{e:#}"));
    }

    /// Waits for the coincidence thread, commits the open file and reports.
    fn finish(mut self, coinc_thread: Option<JoinHandle<Result<CoincidenceReport>>>) -> SinkReport {
        drop(self.coinc_tx.take());
        let mut coincidences = coinc_thread.map(|h| {
            h.join()
                .map_err(|_| anyhow!("the coincidence thread panicked"))
                .and_then(|r| r)
        });
        if let Some(g) = &self.plain_grouper
            && let Some(Ok(r)) = coincidences.as_mut()
        {
            r.grouping = Some(*g.stats());
            r.singles_columns.insert(
                "singles.photon_refused_batches".into(),
                self.refused_batches,
            );
        }
        if let Some(a) = &self.annotator {
            // Grouping and derived-column counts go with the coincidence counts (a report of
            // their own when coincidences were not sorted).
            let report = coincidences.get_or_insert_with(|| Ok(CoincidenceReport::default()));
            if let Ok(r) = report {
                r.grouping = a.grouping_stats();
                r.singles_columns = a.counts().counts(self.files.columns);
            }
        }
        if self.error.is_none()
            && let Err(e) = self.files.table.commit(false)
        {
            self.fail(e);
        }
        // The final figures: what the committed files hold (the dashboard keeps showing them
        // after the run ends; the last write may have left only the flushed part counted).
        self.publish_counters();
        SinkReport {
            files: self.files.table.into_committed(),
            t_range: self.t_range,
            histogram: self.histogram,
            coincidences,
            sorted_only: self.sorted_only,
            error: self.error,
            failure: self.failure,
        }
    }
}

/// An `emit` callback that forwards batches to the sink.
pub(crate) fn send_to(tx: &Sender<HitBatch>) -> impl FnMut(HitBatch) -> Result<()> + '_ {
    move |batch| {
        tx.send(batch)
            .map_err(|_| anyhow!("the Parquet sink stopped"))
    }
}

/// Result of [`run`].
#[derive(Debug)]
pub struct PipelineOutcome {
    /// Counts and losses.
    pub counts: PipelineCounts,
    /// The sink's report, if the sink committed its file.
    pub sink: Result<SinkReport>,
    /// An input error that ended the stream early (what was read before it is written).
    pub input_error: Option<anyhow::Error>,
}

/// Runs chunks from `input` through decode/calibrate/merge into `dir/singles-00000.parquet`.
/// `on_progress` is called with each chunk's progress units. An input error ends the stream
/// early but everything decoded before it is still written and committed.
pub fn run(
    input: Receiver<Result<Chunk>>,
    kernel: &CompiledCalibration,
    dir: &Path,
    metadata: FileMetadata,
    settings: SinkSettings,
    on_progress: impl FnMut(u64),
) -> Result<PipelineOutcome> {
    run_observed(
        input,
        kernel,
        dir,
        metadata,
        settings,
        &mut |_| {},
        on_progress,
    )
}

/// [`run`], with the sink's row and byte counters in `sink_counters` and every batch of
/// singles shown to `observe` (on this thread) just before it goes to the sink: how the demo
/// feeds its live statistics and markers.
pub fn run_observed(
    input: Receiver<Result<Chunk>>,
    kernel: &CompiledCalibration,
    dir: &Path,
    metadata: FileMetadata,
    settings: SinkSettings,
    observe: &mut dyn FnMut(&HitBatch),
    mut on_progress: impl FnMut(u64),
) -> Result<PipelineOutcome> {
    let raw = settings.raw_columns;
    let (tx, sink) = spawn_singles_sink(dir, metadata, settings)?;
    let mut send = send_to(&tx);
    let mut emit = |batch: HitBatch| {
        observe(&batch);
        send(batch)
    };
    let mut processor = Processor::new(kernel).raw_columns(raw);
    let mut input_error = None;
    let mut sink_gone = false;
    for chunk in input.iter() {
        match chunk {
            Ok(chunk) => {
                if processor.push(&chunk.bytes, false, &mut emit).is_err() {
                    sink_gone = true;
                    break;
                }
                on_progress(chunk.progress);
            }
            Err(e) => {
                input_error = Some(e);
                break;
            }
        }
    }
    drop(input);
    if !sink_gone {
        let _ = processor.push(&[], true, &mut emit);
    }
    drop(send);
    drop(tx);
    let sink = sink
        .join()
        .map_err(|_| anyhow!("the Parquet sink thread panicked"))
        .and_then(|r| r);
    let mut counts = processor.counts();
    if let Ok(report) = &sink {
        counts.singles_written = report.rows();
        counts.singles_sorted_only = report.sorted_only;
    }
    Ok(PipelineOutcome {
        counts,
        sink,
        input_error,
    })
}
