//! SPSC hand-off of 8-byte words between two threads: scandaq's ring (rtrb underneath, moving
//! batches of 1024 words with the Block policy and its accounting) beside rtrb's own chunk API
//! and crossbeam's ArrayQueue (one word per operation), all moving the same 4 Mi words.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use scandaq::acquire::ring::{OverflowPolicy, RingItem, ring};
use std::hint::black_box;
use std::sync::Arc;

const WORDS: u64 = 4 << 20;
const BATCH: usize = 1024;

struct Words(Vec<u64>);
impl RingItem for Words {
    fn packets(&self) -> u64 {
        1
    }
    fn bytes(&self) -> u64 {
        8 * self.0.len() as u64
    }
}

fn scandaq_ring() -> u64 {
    let (mut p, mut c) = ring::<Words>(64, OverflowPolicy::Block);
    let producer = std::thread::spawn(move || {
        let mut next = 0u64;
        while next < WORDS {
            let batch: Vec<u64> = (next..next + BATCH as u64).collect();
            next += BATCH as u64;
            p.push(Words(batch)).unwrap();
        }
    });
    let mut sum = 0u64;
    let mut n = 0u64;
    while n < WORDS {
        if let Some(Words(b)) = c.pop() {
            n += b.len() as u64;
            sum = sum.wrapping_add(b.iter().sum::<u64>());
        } else {
            std::hint::spin_loop();
        }
    }
    producer.join().unwrap();
    sum
}

fn rtrb_chunks() -> u64 {
    let (mut p, mut c) = rtrb::RingBuffer::<u64>::new(64 * BATCH);
    let producer = std::thread::spawn(move || {
        let mut next = 0u64;
        while next < WORDS {
            if let Ok(chunk) = p.write_chunk_uninit(BATCH) {
                let filled = chunk.fill_from_iter(next..next + BATCH as u64);
                next += filled as u64;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    let mut sum = 0u64;
    let mut n = 0u64;
    while n < WORDS {
        let available = c.slots().min(BATCH);
        if available == 0 {
            std::hint::spin_loop();
            continue;
        }
        if let Ok(chunk) = c.read_chunk(available) {
            let (a, b) = chunk.as_slices();
            sum = sum.wrapping_add(a.iter().sum::<u64>() + b.iter().sum::<u64>());
            n += available as u64;
            chunk.commit_all();
        }
    }
    producer.join().unwrap();
    sum
}

fn array_queue() -> u64 {
    let q = Arc::new(ArrayQueue::<u64>::new(64 * BATCH));
    let qp = q.clone();
    let producer = std::thread::spawn(move || {
        for w in 0..WORDS {
            let mut v = w;
            while let Err(back) = qp.push(v) {
                v = back;
                std::hint::spin_loop();
            }
        }
    });
    let mut sum = 0u64;
    let mut n = 0u64;
    while n < WORDS {
        if let Some(w) = q.pop() {
            sum = sum.wrapping_add(w);
            n += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    producer.join().unwrap();
    sum
}

fn rings(c: &mut Criterion) {
    let expected = WORDS * (WORDS - 1) / 2;
    assert_eq!(scandaq_ring(), expected);
    assert_eq!(rtrb_chunks(), expected);
    assert_eq!(array_queue(), expected);
    let mut g = c.benchmark_group("spsc_words");
    g.throughput(Throughput::Elements(WORDS));
    g.sample_size(10);
    g.bench_function("scandaq_ring_batches", |b| {
        b.iter(|| black_box(scandaq_ring()))
    });
    g.bench_function("rtrb_chunk_api", |b| b.iter(|| black_box(rtrb_chunks())));
    g.bench_function("crossbeam_array_queue", |b| {
        b.iter(|| black_box(array_queue()))
    });
    g.finish();
}

criterion_group!(benches, rings);
criterion_main!(benches);
