//! The acquisition loop of a live run: [`LiveRun`] owns everything one acquisition holds
//! (the run, its inputs, the decoding side, the singles sink, the console) and steps until a
//! stop condition: a failure, the stop flag, a limit, or the end of every stream.

use super::boards::Decoding;
use super::console::Console;
use super::inputs::Inputs;
use super::start::{SinkFeed, Started};
use super::{LiveConfig, LiveHandles};
use crate::observe::disk_watch::DiskWatch;
use crate::observe::live_stats::LiveStats;
use crate::observe::loss_timeline::LossTimeline;
use crate::observe::markers::SharedMarkers;
use crate::observe::stop::StopFlag;
use crate::process::kernel::CompiledCalibration;
use crate::process::run::{RunStart, failure_of};
use rayon::Scope;
use scandaq_core::run_state::{FailureReason, StopReason};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A live acquisition from `running` to its end.
pub(super) struct LiveRun<'a, 'k> {
    pub(super) config: &'a LiveConfig,
    pub(super) start: RunStart,
    pub(super) stats: Arc<LiveStats>,
    pub(super) markers: SharedMarkers,
    stop: StopFlag,
    pub(super) inputs: Inputs,
    pub(super) decoding: Decoding<'k>,
    pub(super) sink: SinkFeed,
    pub(super) console: Console,
    disk: DiskWatch,
    begun: Instant,
    last_data: Instant,
    last_publish: Instant,
    /// When each loss counter grew (the manifest's `loss_times`).
    pub(super) loss_timeline: LossTimeline,
    /// The error that ends the run, if any (the first one wins).
    pub(super) error: Option<String>,
    /// Why it failed, when known where it happened.
    pub(super) failure: Option<FailureReason>,
}

impl<'a, 'k> LiveRun<'a, 'k> {
    /// The acquisition of the started run, decoding with `kernel`.
    pub(super) fn new(
        config: &'a LiveConfig,
        started: Started,
        handles: LiveHandles,
        kernel: &'k CompiledCalibration,
    ) -> Self {
        let Started {
            start,
            inputs,
            streams,
            archive,
            sink,
        } = started;
        Self {
            config,
            disk: DiskWatch::new(start.run.path(), config.disk_warn),
            console: Console::new(config.stats_every, &handles.stats),
            start,
            stats: handles.stats,
            markers: handles.markers,
            stop: handles.stop,
            inputs,
            decoding: Decoding::new(kernel, config.raw_columns, streams, archive),
            sink,
            begun: Instant::now(),
            last_data: Instant::now(),
            last_publish: Instant::now(),
            loss_timeline: LossTimeline::default(),
            error: None,
            failure: None,
        }
    }

    /// Acquires until a stop condition; returns why it stopped.
    pub(super) fn acquire(&mut self) -> StopReason {
        // Frames decode on the rayon pool within this scope while this thread merges and
        // hands on the singles decoded before them.
        rayon::in_place_scope(|scope| {
            loop {
                if let Some(reason) = self.step(scope) {
                    return reason;
                }
            }
        })
    }

    /// One round: drain the rings, release merged singles to the sink, check for failures,
    /// the disk and the stop conditions, publish the statistics.
    fn step<'s>(&mut self, scope: &Scope<'s>) -> Option<StopReason>
    where
        'k: 's,
    {
        match self.decoding.drain(&mut self.inputs.threads, scope) {
            Ok(true) => self.last_data = Instant::now(),
            Ok(false) => {
                // Nothing new: what is still decoding is finished before the wait.
                if let Err(e) = self.decoding.settle(true) {
                    return Some(self.stop_on(e));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Some(self.stop_on(e)),
        }
        let ready = self.decoding.release(&self.inputs.threads);
        if !ready.is_empty()
            && let Err(e) = self.sink.send(ready)
        {
            return Some(self.stop_on(e));
        }
        if self.write_failed() {
            return Some(StopReason::Failure);
        }
        self.watch_disk();
        // The archive's commit interval holds when no packets arrive too.
        self.decoding.archive.tick();
        if let Some(reason) = self.stop_condition() {
            return Some(reason);
        }
        self.publish();
        None
    }

    /// Records `error` as the run's error; the run stops on it.
    fn stop_on(&mut self, error: anyhow::Error) -> StopReason {
        self.error = Some(format!("{error:#}"));
        StopReason::Failure
    }

    /// A failed write (a full disk first of all) stops the run at once: the inputs stop,
    /// what can be committed is committed, and the operator sees it now, not at the end.
    fn write_failed(&mut self) -> bool {
        let sink_failure = self.stats.sink.failure.get().map(|f| {
            let reason = if f.disk_full {
                FailureReason::DiskFull
            } else {
                FailureReason::WriteFailed
            };
            (reason, f.message.clone())
        });
        let failure = sink_failure.or_else(|| {
            self.decoding.archive.error().map(|e| {
                let e = format!("raw archive: {e}");
                (failure_of(&e), e)
            })
        });
        let Some((f, e)) = failure else {
            return false;
        };
        self.console.failure(&self.stats, f, &e);
        self.failure = Some(f);
        self.error = Some(e);
        true
    }

    /// Publishes the free space of the output disk and warns when it runs low.
    fn watch_disk(&mut self) {
        if let Some((reading, warnings)) = self.disk.check() {
            self.stats
                .set_disk(reading.free_bytes, reading.seconds_to_full);
            for w in warnings {
                self.console.warn(&w);
                self.stats.warn(w);
            }
        }
    }

    /// The stop flag, a limit, or the end of every stream (or of every input).
    fn stop_condition(&self) -> Option<StopReason> {
        let limits = &self.config.limits;
        if self.stop.load(Ordering::Relaxed) {
            return Some(StopReason::StopRequested);
        }
        if limits.duration.is_some_and(|d| self.begun.elapsed() >= d) {
            return Some(StopReason::DurationLimit);
        }
        if limits
            .max_bytes
            .is_some_and(|m| self.inputs.bytes_in() >= m)
        {
            return Some(StopReason::ByteLimit);
        }
        if limits.max_hits.is_some_and(|m| self.sink.singles_sent >= m) {
            return Some(StopReason::HitLimit);
        }
        let streams_ended = self.config.stop_at_end_of_stream
            && self.decoding.all_ended()
            && self.inputs.archives_done()
            && self.last_data.elapsed() > Duration::from_millis(200);
        // An input thread that has ended (archive read, TCP stream closed) with its ring
        // drained has nothing more to give.
        if streams_ended || self.inputs.all_done() {
            return Some(StopReason::EndOfStream);
        }
        None
    }

    /// Publishes the statistics (boards' decode counts every 50 ms) and feeds the console.
    fn publish(&mut self) {
        let s = &self.stats;
        s.frame_bytes
            .store(self.inputs.bytes_in(), Ordering::Relaxed);
        s.ring_fill
            .store(self.inputs.ring_fill(), Ordering::Relaxed);
        s.boards
            .store(self.decoding.board_count() as u64, Ordering::Relaxed);
        if self.last_publish.elapsed() >= Duration::from_millis(50) {
            self.last_publish = Instant::now();
            s.board_decode.publish(self.decoding.snapshot());
        }
        let stats = &self.stats;
        self.loss_timeline.sample_if_due(|| stats.snapshot());
        self.console.tick(&self.stats);
    }
}
