//! Decoding one board's stream of PETsys frames: [`Processor`] scans the frames, decodes and
//! calibrates them in blocks of about [`BLOCK_HITS`] hits on the rayon pool, and restores time
//! order across blocks (its [`TimeMerger`]); either in the caller's turn ([`Processor::push`])
//! or started now and completed later ([`Processor::submit`], [`Processor::complete`]), so a
//! live run's processing thread merges and hands on earlier singles while the pool decodes.
//! Also [`PipelineCounts`], what a stream's processing counted.

use crate::process::kernel::{CompiledCalibration, KernelLosses};
use crate::process::merge::TimeMerger;
use anyhow::{Result, anyhow};
use crossbeam_channel::{Receiver, bounded};
use rayon::Scope;
use rayon::prelude::*;
use scandaq_core::{HitBatch, LossCounts, LossReason};
use scandaq_decoders::{FrameScanner, FrameSpan};

/// Hits per parallel work unit.
pub const BLOCK_HITS: usize = 16 * 1024;
/// Time held back by the merger (one frame, 5.12 us): far more than any calibration moves a
/// hit, so no hit of a healthy stream is late.
pub const LATENESS_PS: i64 = 1024 * 5000;

/// Counts of one pipeline run.
#[derive(Debug, Default)]
pub struct PipelineCounts {
    /// Input bytes scanned (after any file header).
    pub bytes_scanned: u64,
    /// Data frames accepted.
    pub frames: u64,
    /// Hit words in accepted frames.
    pub hits_decoded: u64,
    /// Singles written.
    pub singles_written: u64,
    /// Singles that went to the sorters only (coincidences-only mode: no singles table).
    pub singles_sorted_only: u64,
    /// Frame-ID wraps seen.
    pub frame_wraps: u64,
    /// Everything not written, by reason.
    pub losses: LossCounts,
}

impl PipelineCounts {
    /// Hits decoded but not written (calibration losses + late hits).
    pub fn hits_dropped(&self) -> u64 {
        self.losses.sum_of(&[
            LossReason::NoTdcCalibration,
            LossReason::NoEnergyCalibration,
            LossReason::NoSkewCalibration,
            LossReason::LateHit,
        ])
    }
}

/// The processing stage of one stream: scanning, parallel decode/calibrate, merging.
pub(crate) struct Processor<'k> {
    kernel: &'k CompiledCalibration,
    scanner: FrameScanner,
    merger: TimeMerger,
    kernel_losses: KernelLosses,
    carry: Vec<u8>,
    spans: Vec<FrameSpan>,
    bytes_scanned: u64,
    /// Fill the batches' raw diagnostic columns (frame, coarse and fine codes, TAC).
    raw: bool,
}

impl<'k> Processor<'k> {
    /// A processor whose batches carry the raw diagnostic columns.
    pub(crate) fn new(kernel: &'k CompiledCalibration) -> Self {
        Self {
            kernel,
            scanner: FrameScanner::new(),
            merger: TimeMerger::new(LATENESS_PS),
            kernel_losses: KernelLosses::default(),
            carry: Vec::new(),
            spans: Vec::new(),
            bytes_scanned: 0,
            raw: true,
        }
    }

    /// Whether the batches carry the raw diagnostic columns; without them (when nothing
    /// reads them: no `--raw-columns`) the hits never pass through them.
    pub(crate) fn raw_columns(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    /// Appends bytes, processes every whole frame, hands final (time-ordered) singles to `emit`.
    pub(crate) fn push(
        &mut self,
        bytes: &[u8],
        eof: bool,
        emit: &mut dyn FnMut(HitBatch) -> Result<()>,
    ) -> Result<()> {
        self.carry.extend_from_slice(bytes);
        self.spans.clear();
        let consumed = self.scanner.scan(&self.carry, eof, &mut self.spans);
        self.bytes_scanned += consumed as u64;
        let decoded = decode_blocks(self.kernel, &self.carry, &self.spans, self.raw);
        self.carry.drain(..consumed);
        self.hand_over(decoded, emit)?;
        if eof {
            let rest = self.merger.finish();
            if !rest.is_empty() {
                emit(rest)?;
            }
        }
        Ok(())
    }

    /// Scans `bytes` (whole frames, or the rest of a frame carried from before) now and
    /// decodes them on the rayon pool through `scope` while the caller goes on; their singles
    /// go to the merger when the caller hands the returned [`PendingDecode`] to
    /// [`Self::complete`]. Pending decodes must be completed in the order they were submitted,
    /// and all of them before the next [`Self::push`].
    pub(crate) fn submit<'s>(&mut self, bytes: Vec<u8>, scope: &Scope<'s>) -> PendingDecode
    where
        'k: 's,
    {
        let buffer = if self.carry.is_empty() {
            bytes
        } else {
            let mut carried = std::mem::take(&mut self.carry);
            carried.extend_from_slice(&bytes);
            carried
        };
        let mut spans = Vec::new();
        let consumed = self.scanner.scan(&buffer, false, &mut spans);
        self.bytes_scanned += consumed as u64;
        self.carry.extend_from_slice(&buffer[consumed..]);
        let (tx, rx) = bounded(1);
        let (kernel, raw) = (self.kernel, self.raw);
        scope.spawn(move |_| {
            // The receiver is gone only when the run has stopped on an error.
            let _ = tx.send(decode_blocks(kernel, &buffer, &spans, raw));
        });
        PendingDecode { decoded: rx }
    }

    /// Hands the singles of a decode [`Self::submit`] started to the merger, and what the
    /// merger releases to `emit`; waits for the decode if it has not finished.
    pub(crate) fn complete(
        &mut self,
        pending: PendingDecode,
        emit: &mut dyn FnMut(HitBatch) -> Result<()>,
    ) -> Result<()> {
        let decoded = pending
            .decoded
            .recv()
            .map_err(|_| anyhow!("a decode job stopped without its result"))?;
        self.hand_over(decoded, emit)
    }

    /// Counts the blocks' kernel losses and merges their singles into time order.
    fn hand_over(
        &mut self,
        decoded: Vec<(HitBatch, KernelLosses)>,
        emit: &mut dyn FnMut(HitBatch) -> Result<()>,
    ) -> Result<()> {
        let mut ready = Vec::new();
        for (batch, losses) in decoded {
            self.kernel_losses.add(&losses);
            self.merger.push_into(batch, &mut ready);
            for batch in ready.drain(..) {
                emit(batch)?;
            }
        }
        Ok(())
    }

    pub(crate) fn counts(&self) -> PipelineCounts {
        let mut losses = self.scanner.losses.clone();
        self.kernel_losses.record(&mut losses);
        losses.add(LossReason::LateHit, self.merger.late_hits());
        PipelineCounts {
            bytes_scanned: self.bytes_scanned,
            frames: self.scanner.frames,
            hits_decoded: self.scanner.hits,
            singles_written: 0,
            singles_sorted_only: 0,
            frame_wraps: self.scanner.wraps(),
            losses,
        }
    }
}

/// A chunk whose blocks are being decoded on the pool ([`Processor::submit`]).
pub(crate) struct PendingDecode {
    decoded: Receiver<Vec<(HitBatch, KernelLosses)>>,
}

impl PendingDecode {
    /// True once the decode has finished ([`Processor::complete`] will not wait).
    pub(crate) fn is_done(&self) -> bool {
        !self.decoded.is_empty()
    }
}

/// Decodes the frames `spans` of `buffer` in blocks of about [`BLOCK_HITS`] hits in parallel;
/// each block's singles come back time-ordered, in block order, with its kernel losses.
fn decode_blocks(
    kernel: &CompiledCalibration,
    buffer: &[u8],
    spans: &[FrameSpan],
    raw: bool,
) -> Vec<(HitBatch, KernelLosses)> {
    let mut blocks: Vec<&[FrameSpan]> = Vec::new();
    let (mut start, mut hits) = (0, 0usize);
    for (i, s) in spans.iter().enumerate() {
        hits += s.n_hits as usize;
        if hits >= BLOCK_HITS {
            blocks.push(&spans[start..=i]);
            (start, hits) = (i + 1, 0);
        }
    }
    if start < spans.len() {
        blocks.push(&spans[start..]);
    }
    blocks
        .par_iter()
        .map(|spans| {
            let n: usize = spans.iter().map(|s| s.n_hits as usize).sum();
            let mut batch = if raw {
                HitBatch::with_capacity(n)
            } else {
                HitBatch {
                    t_ps: Vec::with_capacity(n),
                    channel: Vec::with_capacity(n),
                    energy_kev: Vec::with_capacity(n),
                    flags: Vec::with_capacity(n),
                    ..HitBatch::default()
                }
            };
            let mut losses = KernelLosses::default();
            kernel.decode_block_sorted(buffer, spans, &mut batch, &mut losses, raw);
            (batch, losses)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use scandaq_core::{Calibration, ClockModel};
    use scandaq_fpga_sim::{BenchConfig, BenchSim, TruthBatch};

    /// Simulated frames (0.2 s at 1 M hits/s) and their true calibration.
    fn frames_and_kernel() -> (Vec<u8>, CompiledCalibration) {
        let config = BenchConfig {
            seed: 5,
            duration_s: 0.2,
            hit_rate_hz: 1e6,
            ..BenchConfig::default()
        };
        let mut sim = BenchSim::new(config).expect("valid bench config");
        let (mut bytes, mut truth) = (Vec::new(), TruthBatch::default());
        while sim.next_slice(&mut bytes, &mut truth) {}
        let calibration = Calibration {
            tdc: sim.true_tdc().clone(),
            energy: Some(sim.true_energy().clone()),
            skew: Some(sim.true_skew().clone()),
            ..Calibration::default()
        };
        let kernel = CompiledCalibration::new(&calibration, ClockModel::TOFPET2_DEFAULT);
        (bytes, kernel)
    }

    /// An `emit` that keeps the batches in `out`.
    fn into(out: &mut Vec<HitBatch>) -> impl FnMut(HitBatch) -> Result<()> + '_ {
        move |b| {
            out.push(b);
            Ok(())
        }
    }

    /// Every column of `batches` concatenated, for exact comparison.
    fn columns(batches: &[HitBatch]) -> (Vec<i64>, Vec<u32>, Vec<u32>, Vec<u16>) {
        let mut c = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for b in batches {
            c.0.extend(&b.t_ps);
            c.1.extend(&b.channel);
            c.2.extend(b.energy_kev.iter().map(|e| e.to_bits()));
            c.3.extend(&b.flags);
        }
        c
    }

    /// Decodes started on the pool and completed in order (several in flight, chunks cut
    /// inside frames, so the carried rest of a frame joins the next chunk) give the same
    /// singles, in the same order, and the same counts as decoding each chunk in turn.
    #[test]
    fn decodes_completed_later_equal_decodes_in_turn() {
        let (bytes, kernel) = frames_and_kernel();
        let cuts: Vec<usize> = (1..40).map(|k| k * bytes.len() / 40 + k % 7).collect();
        let chunks: Vec<&[u8]> = std::iter::once(0)
            .chain(cuts.iter().copied())
            .zip(cuts.iter().copied().chain(std::iter::once(bytes.len())))
            .map(|(a, b)| &bytes[a..b])
            .collect();

        let mut in_turn = Vec::new();
        let mut processor = Processor::new(&kernel).raw_columns(false);
        for chunk in &chunks {
            processor
                .push(chunk, false, &mut into(&mut in_turn))
                .unwrap();
        }
        processor.push(&[], true, &mut into(&mut in_turn)).unwrap();
        let counts_in_turn = processor.counts();

        let mut later = Vec::new();
        let mut processor = Processor::new(&kernel).raw_columns(false);
        rayon::in_place_scope(|scope| {
            let mut pending = std::collections::VecDeque::new();
            for chunk in &chunks {
                pending.push_back(processor.submit(chunk.to_vec(), scope));
                while pending.len() > 3 {
                    let decode = pending.pop_front().unwrap();
                    processor.complete(decode, &mut into(&mut later)).unwrap();
                }
            }
            for decode in pending {
                processor.complete(decode, &mut into(&mut later)).unwrap();
            }
        });
        processor.push(&[], true, &mut into(&mut later)).unwrap();
        let counts_later = processor.counts();

        let hits: usize = in_turn.iter().map(HitBatch::len).sum();
        assert!(hits > 150_000, "{hits} singles");
        assert_eq!(columns(&later), columns(&in_turn));
        assert_eq!(counts_later.frames, counts_in_turn.frames);
        assert_eq!(counts_later.hits_decoded, counts_in_turn.hits_decoded);
        assert_eq!(counts_later.bytes_scanned, counts_in_turn.bytes_scanned);
        assert_eq!(counts_later.losses, counts_in_turn.losses);
    }
}
