//! The end of a live run: inputs stop first (they drain and flush), the rings are drained,
//! every board is flushed and the merger emptied into the sink, the sinks commit their files,
//! and everything is counted into the run's end (files, counts, losses, the error that takes
//! precedence), which [`RunStart::finish`](crate::process::run::RunStart::finish) writes.

use super::inputs::InputsEnd;
use super::run_loop::LiveRun;
use crate::process::pipeline::SinkReport;
use crate::process::run::{RunEnd, RunStart, RunSummary};
use anyhow::Result;
use scandaq_core::LossReason;
use scandaq_core::run_state::{FailureReason, StopReason};
use std::time::Duration;

impl LiveRun<'_, '_> {
    /// Stops the run that stopped for `reason`: drains, closes and finalises it.
    pub(super) fn finish(mut self, reason: StopReason) -> Result<RunSummary> {
        self.adopt_sink_failure();
        self.start.run.set_stopping();
        self.console
            .say(&format!("stopping ({reason}): draining inputs"));
        // Stop: inputs first, then drain, flush boards, close files last.
        self.inputs.stop();
        self.drain_until_inputs_end();
        let inputs = self.inputs.join();
        self.flush_boards();
        let sink = self.sink.close();
        self.loss_timeline.sample(&self.stats.snapshot());
        let loss_times = self.loss_timeline.records();
        let (mut start, end) = self.account(reason, inputs, sink);
        start.run.manifest_mut().loss_times = loss_times;
        start.finish(end)
    }

    /// A sink that failed is the root cause of whatever the loop saw next (a send to the
    /// stopped sink): its error is the one the run reports.
    fn adopt_sink_failure(&mut self) {
        let Some(f) = self.stats.sink.failure.get() else {
            return;
        };
        if self.failure.is_some() {
            return;
        }
        let reason = if f.disk_full {
            FailureReason::DiskFull
        } else {
            FailureReason::WriteFailed
        };
        self.console.failure(&self.stats, reason, &f.message);
        self.failure = Some(reason);
        self.error = Some(f.message.clone());
    }

    /// Keeps draining (and releasing to the sink) while the inputs finish, then until their
    /// rings are empty.
    fn drain_until_inputs_end(&mut self) {
        rayon::in_place_scope(|scope| {
            loop {
                let finished = self.inputs.all_finished();
                let mut got = false;
                if self.error.is_none() {
                    match self.decoding.drain(&mut self.inputs.threads, scope) {
                        Ok(g) => got = g,
                        Err(e) => self.error = Some(format!("{e:#}")),
                    }
                    if !got && let Err(e) = self.decoding.settle(true) {
                        self.error = Some(format!("{e:#}"));
                    }
                    let ready = self.decoding.release(&self.inputs.threads);
                    if !ready.is_empty()
                        && let Err(e) = self.sink.send(ready)
                    {
                        self.error = Some(format!("{e:#}"));
                    }
                }
                if finished && !got {
                    break;
                }
                if !got {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
    }

    /// Flushes every board that did not end its stream and sends what the merger holds.
    fn flush_boards(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.decoding.end_boards()
        {
            self.error = Some(format!("{e:#}"));
        }
        self.stats.board_decode.publish(self.decoding.snapshot());
        let rest = self.decoding.finish_merger();
        if !rest.is_empty()
            && self.error.is_none()
            && let Err(e) = self.sink.send(rest)
        {
            self.error = Some(format!("{e:#}"));
        }
    }

    /// Closes the sinks and counts everything into the run's end; the first error wins
    /// (loop, streams, raw archive, inputs, markers).
    fn account(
        self,
        reason: StopReason,
        inputs: InputsEnd,
        sink: Result<SinkReport>,
    ) -> (RunStart, RunEnd) {
        let Self {
            mut start,
            decoding,
            markers,
            error,
            mut failure,
            ..
        } = self;
        let decoded = decoding.close();
        let mut counts = decoded.counts;
        let mut extra = decoded.extra;
        counts.losses.merge(&inputs.ring_losses);
        let (mut packets_in, mut port_drops) = (0, 0u64);
        let warnings = &mut start.description.warnings;
        for ingest in &inputs.ingests {
            packets_in += ingest.packets_in;
            port_drops += ingest.kernel_drops;
            ingest.account(&mut extra, &mut counts.losses);
            warnings.extend(ingest.warnings().iter().cloned());
        }
        counts.losses.add(LossReason::UdpKernelDrops, port_drops);
        extra.insert("packets_in".into(), packets_in);
        let (stream_report, stream_errors) = decoded.streams;
        let mut extra_files = stream_report.files;
        extra.extend(stream_report.counts);
        counts.losses.merge(&stream_report.losses);
        warnings.extend(stream_report.warnings);
        let mut error = error;
        if !stream_errors.is_empty() {
            error.get_or_insert(stream_errors.join("; "));
        }
        let (archive_file, archive_error) = decoded.archive;
        extra_files.extend(archive_file);
        if let Some(e) = archive_error {
            error.get_or_insert(format!("raw archive: {e}"));
        }
        if !inputs.errors.is_empty() && error.is_none() {
            error = Some(inputs.errors.join("; "));
            failure = Some(FailureReason::InputFailed);
        }
        match markers.commit(start.run.path(), &start.metadata) {
            Ok(Some(f)) => extra_files.push(f),
            Ok(None) => {}
            Err(e) => {
                error.get_or_insert(format!("markers: {e:#}"));
            }
        }
        extra.insert("boards".into(), decoded.boards);
        let end = RunEnd {
            counts,
            sink,
            extra_files,
            extra_counts: extra,
            error,
            failure,
            stop_reason: reason,
        };
        (start, end)
    }
}
