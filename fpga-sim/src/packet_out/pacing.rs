//! Holding packets back: to a rate ([`Pacing`]), to a simulator's own clock
//! ([`PacketOut::pace_to`]), and prerendering (generate everything first, send it later with
//! the same pacing).

use super::PacketOut;
use super::packetizer::Batch;
use crate::config::SimError;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Output rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Pacing {
    /// As fast as the destination takes it.
    #[default]
    Unpaced,
    /// Wire bytes (headers included) per second.
    BytesPerSecond(f64),
    /// Packets per second.
    PacketsPerSecond(f64),
}

/// Packets generated ahead of sending ([`super::PacketOutOptions::prerender`]).
#[derive(Debug, Default)]
pub(crate) struct Prerendered {
    batches: Vec<PrerenderedBatch>,
    /// The pacing time the next batch gets.
    not_before: Duration,
}

/// One batch generated ahead of sending.
#[derive(Debug)]
struct PrerenderedBatch {
    /// Not sent before this time after the start of sending ([`PacketOut::pace_to`]).
    not_before: Duration,
    batch: Batch,
}

/// What a prerendering emitter holds so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrerenderedTotals {
    /// Packets (an end marker once, whatever its copies).
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The callers' hits in them ([`PacketOut::send_counted`]), duplicates counted twice.
    pub hits: u64,
}

impl PacketOut<'_> {
    /// Waits until `t` has passed since the first packet (a simulator pacing on its own clock,
    /// e.g. frame times); batched packets are written first so they are not held back.
    pub fn pace_to(&mut self, t: Duration) -> Result<(), SimError> {
        if self.prerendered.is_some() {
            self.flush()?;
            if let Some(p) = &mut self.prerendered {
                p.not_before = t;
            }
            return Ok(());
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        let elapsed = started.elapsed();
        if t > elapsed {
            self.flush()?;
            let elapsed = started.elapsed();
            if t > elapsed {
                std::thread::sleep(t - elapsed);
            }
        }
        Ok(())
    }

    /// Holds the next batch back until the configured rate allows it.
    pub(super) fn pace_batch(&self) {
        let Some(started) = self.started else { return };
        let due = match self.options.pacing {
            Pacing::Unpaced => return,
            Pacing::BytesPerSecond(r) => self.wire_bytes as f64 / r,
            Pacing::PacketsPerSecond(r) => self.wire_packets as f64 / r,
        };
        let due = Duration::from_secs_f64(due);
        let elapsed = started.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }

    /// Moves the current batch to the prerendered ones.
    pub(super) fn keep_prerendered(&mut self) {
        if let Some(p) = &mut self.prerendered {
            let capacity = self.batch.bytes.capacity();
            p.batches.push(PrerenderedBatch {
                not_before: p.not_before,
                batch: std::mem::replace(&mut self.batch, Batch::with_capacity(capacity)),
            });
        }
    }

    /// Packets, bytes and hits prerendered so far (`None` when not prerendering); batched
    /// packets count once flushed.
    pub fn prerendered_totals(&self) -> Option<PrerenderedTotals> {
        let p = self.prerendered.as_ref()?;
        let mut t = PrerenderedTotals::default();
        for span in p.batches.iter().flat_map(|b| &b.batch.spans) {
            t.packets += 1;
            t.bytes += span.len as u64;
            t.hits += span.hits;
        }
        Some(t)
    }

    /// Sends the prerendered batches, each no earlier than its pacing time after the first.
    pub(super) fn send_prerendered(&mut self) -> Result<(), SimError> {
        let Some(p) = self.prerendered.take() else {
            return Ok(());
        };
        let started = Instant::now();
        self.started = Some(started);
        for b in p.batches {
            let elapsed = started.elapsed();
            if b.not_before > elapsed {
                std::thread::sleep(b.not_before - elapsed);
            }
            self.batch = b.batch;
            self.write_batch()?;
            if self.stopped {
                break;
            }
        }
        Ok(())
    }
}
