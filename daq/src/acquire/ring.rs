//! Bounded single-producer/single-consumer hand-off of packet batches between threads, with an
//! explicit overflow policy. Built on `rtrb` (a proven lock-free SPSC ring) rather than our own
//! unsafe code; what this module adds is the policy and its accounting.
//!
//! - [`OverflowPolicy::Block`] (file replay): the producer waits for room; nothing is dropped.
//! - [`OverflowPolicy::Drop`] (live sources): a batch that finds the ring full is dropped and
//!   counted (batches, packets and bytes) under `ring_overflow`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a producer does when the ring is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverflowPolicy {
    /// Wait for room (never drop).
    Block,
    /// Drop the batch and count it.
    Drop,
}

impl std::fmt::Display for OverflowPolicy {
    /// `block` or `drop`, as in the run config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OverflowPolicy::Block => "block",
            OverflowPolicy::Drop => "drop",
        })
    }
}

/// Something the ring can account for when it has to drop it.
pub trait RingItem {
    /// Packets in the item.
    fn packets(&self) -> u64;
    /// Bytes in the item.
    fn bytes(&self) -> u64;
}

/// Counters shared by both ends of a ring.
#[derive(Debug, Default)]
pub struct RingStats {
    /// Items pushed.
    pub pushed: AtomicU64,
    /// Bytes in items pushed.
    pub pushed_bytes: AtomicU64,
    /// Items dropped because the ring was full (Drop policy).
    pub dropped_items: AtomicU64,
    /// Packets in dropped items.
    pub dropped_packets: AtomicU64,
    /// Bytes in dropped items.
    pub dropped_bytes: AtomicU64,
    /// Nanoseconds producers spent waiting for room (Block policy).
    pub blocked_ns: AtomicU64,
}

/// Producer end.
pub struct RingProducer<T> {
    inner: rtrb::Producer<T>,
    policy: OverflowPolicy,
    stats: Arc<RingStats>,
}

/// Consumer end.
pub struct RingConsumer<T> {
    inner: rtrb::Consumer<T>,
    stats: Arc<RingStats>,
}

/// The consumer went away; nothing more can be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingClosed;

/// A ring of `capacity` items with `policy`.
pub fn ring<T>(capacity: usize, policy: OverflowPolicy) -> (RingProducer<T>, RingConsumer<T>) {
    let (p, c) = rtrb::RingBuffer::new(capacity.max(1));
    let stats = Arc::new(RingStats::default());
    (
        RingProducer {
            inner: p,
            policy,
            stats: stats.clone(),
        },
        RingConsumer { inner: c, stats },
    )
}

impl<T: RingItem> RingProducer<T> {
    /// Hands `item` to the consumer according to the policy. `Ok(false)` = dropped (counted).
    pub fn push(&mut self, item: T) -> Result<bool, RingClosed> {
        self.push_or_return(item).map(|back| back.is_none())
    }

    /// [`push`](Self::push), giving a dropped item back (already counted as dropped) so the
    /// caller can account for what was in it.
    pub fn push_or_return(&mut self, item: T) -> Result<Option<T>, RingClosed> {
        self.push_with(item, self.policy)
    }

    /// Hands `item` over waiting for room whatever the policy (end-of-stream markers, which
    /// must not be lost with the data around them).
    pub fn push_blocking(&mut self, item: T) -> Result<(), RingClosed> {
        self.push_with(item, OverflowPolicy::Block).map(|_| ())
    }

    fn push_with(&mut self, item: T, policy: OverflowPolicy) -> Result<Option<T>, RingClosed> {
        let mut item = item;
        let mut waited = Duration::ZERO;
        let mut backoff = Duration::from_micros(20);
        loop {
            if self.inner.is_abandoned() {
                return Err(RingClosed);
            }
            let bytes = item.bytes();
            match self.inner.push(item) {
                Ok(()) => {
                    self.stats.pushed.fetch_add(1, Ordering::Relaxed);
                    self.stats.pushed_bytes.fetch_add(bytes, Ordering::Relaxed);
                    if !waited.is_zero() {
                        self.stats
                            .blocked_ns
                            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
                    }
                    return Ok(None);
                }
                Err(rtrb::PushError::Full(back)) => match policy {
                    OverflowPolicy::Drop => {
                        self.stats.dropped_items.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .dropped_packets
                            .fetch_add(back.packets(), Ordering::Relaxed);
                        self.stats
                            .dropped_bytes
                            .fetch_add(back.bytes(), Ordering::Relaxed);
                        return Ok(Some(back));
                    }
                    OverflowPolicy::Block => {
                        item = back;
                        std::thread::sleep(backoff);
                        waited += backoff;
                        backoff = (backoff * 2).min(Duration::from_millis(1));
                    }
                },
            }
        }
    }

    /// Shared counters.
    pub fn stats(&self) -> Arc<RingStats> {
        self.stats.clone()
    }

    /// Items waiting for the consumer.
    pub fn fill(&self) -> usize {
        self.capacity() - self.inner.slots()
    }

    /// Capacity in items.
    pub fn capacity(&self) -> usize {
        self.inner.buffer().capacity()
    }
}

impl<T> RingConsumer<T> {
    /// Next item, if any.
    pub fn pop(&mut self) -> Option<T> {
        self.inner.pop().ok()
    }

    /// True when the producer is gone and the ring is empty.
    pub fn is_finished(&self) -> bool {
        self.inner.is_abandoned() && self.inner.is_empty()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Items waiting.
    pub fn fill(&self) -> usize {
        self.inner.slots()
    }

    /// Shared counters.
    pub fn stats(&self) -> Arc<RingStats> {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item(u64);
    impl RingItem for Item {
        fn packets(&self) -> u64 {
            1
        }
        fn bytes(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn drop_policy_counts_what_it_drops() {
        let (mut p, mut c) = ring::<Item>(2, OverflowPolicy::Drop);
        assert_eq!(p.push(Item(10)), Ok(true));
        assert_eq!(p.push(Item(20)), Ok(true));
        assert_eq!(p.push(Item(30)), Ok(false));
        let s = p.stats();
        assert_eq!(s.dropped_items.load(Ordering::Relaxed), 1);
        assert_eq!(s.dropped_bytes.load(Ordering::Relaxed), 30);
        assert_eq!(c.fill(), 2);
        assert_eq!(c.pop().map(|i| i.0), Some(10));
        assert_eq!(c.pop().map(|i| i.0), Some(20));
        assert!(c.pop().is_none());
    }

    #[test]
    fn block_policy_delivers_everything_in_order() {
        let (mut p, mut c) = ring::<Item>(4, OverflowPolicy::Block);
        let producer = std::thread::spawn(move || {
            for i in 0..10_000 {
                p.push(Item(i)).unwrap();
            }
        });
        let mut next = 0;
        while next < 10_000 {
            if let Some(i) = c.pop() {
                assert_eq!(i.0, next);
                next += 1;
            }
        }
        producer.join().unwrap();
        assert!(c.is_finished());
    }

    #[test]
    fn producer_sees_a_closed_consumer() {
        let (mut p, c) = ring::<Item>(1, OverflowPolicy::Block);
        p.push(Item(1)).unwrap();
        drop(c);
        assert_eq!(p.push(Item(2)), Err(RingClosed));
    }
}
