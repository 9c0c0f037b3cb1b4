//! Decode + calibrate PETsys hit words: scandaq's kernel (one core, and the parallel block
//! path on every core) beside the obvious per-hit scalar decoder, on the same simulated words.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use scandaq::process::kernel::{CompiledCalibration, KernelLosses};
use scandaq_benches::{ScalarHit, fixture, scalar_peer};
use scandaq_core::{ClockModel, HitBatch};
use std::hint::black_box;

fn decode_calibrate(c: &mut Criterion) {
    // 0.5 s of the bench at 2 MHz: ~1 M hit words.
    let f = fixture(0.5, 2e6);
    let kernel = CompiledCalibration::new(&f.calibration, ClockModel::TOFPET2_DEFAULT);
    let mut group = c.benchmark_group("decode_calibrate");
    group.throughput(Throughput::Elements(f.hits));
    group.sample_size(20);

    // Blocks of ~16 Ki hits, as the pipeline cuts them (frames average ~5 hits here).
    let blocks: Vec<_> = f.spans.chunks(3200).collect();
    group.bench_function("scandaq_kernel_1core", |b| {
        let mut batch = HitBatch::with_capacity(32 * 1024);
        b.iter(|| {
            let mut n = 0;
            for spans in &blocks {
                batch.clear();
                kernel.decode_block(&f.bytes, spans, &mut batch, &mut KernelLosses::default());
                n += batch.len();
            }
            black_box(n)
        })
    });

    // The same without the six raw diagnostic columns (a replay without --raw-columns).
    group.bench_function("scandaq_kernel_1core_physics_only", |b| {
        let mut batch = HitBatch::with_capacity(32 * 1024);
        b.iter(|| {
            let mut n = 0;
            for spans in &blocks {
                batch.clear();
                kernel.decode_block_physics(
                    &f.bytes,
                    spans,
                    &mut batch,
                    &mut KernelLosses::default(),
                );
                n += batch.len();
            }
            black_box(n)
        })
    });

    group.bench_function("scalar_peer_1core", |b| {
        let mut out: Vec<ScalarHit> = Vec::with_capacity(f.hits as usize);
        b.iter(|| {
            out.clear();
            scalar_peer(&f.bytes, &f.spans, &f.calibration, 5000.0, &mut out);
            black_box(out.len())
        })
    });

    group.bench_function("scandaq_kernel_all_cores", |b| {
        b.iter(|| {
            let n: usize = blocks
                .par_iter()
                .map(|spans| {
                    let mut batch = HitBatch::with_capacity(16 * 1024);
                    kernel.decode_block(&f.bytes, spans, &mut batch, &mut KernelLosses::default());
                    batch.len()
                })
                .sum();
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(benches, decode_calibrate);
criterion_main!(benches);
