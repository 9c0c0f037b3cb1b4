//! Coincidence sorting (multi-window, takeAllGoods, prompt, 4 ns): scandaq's sorter on one
//! core and on 2 cores (cut at gaps, rayon) beside the plain quadratic reference of the core
//! tests (`core/tests/core.rs`, included here), on Poisson singles over 2048 channels; and
//! photon grouping ([`Grouper`]) as a PETsys `--petsys-config` replay runs it.

#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../../core/tests/core.rs"]
mod core_tests;

use core_tests::reference;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scandaq_core::coincidence::{
    CoincidenceBatch, CoincidenceConfig, CrystalLut, Grouper, GroupingConfig, ModulePairs,
    PhotonBatch, SinglesRef, sort_coincidences, sort_coincidences_parallel,
    sort_coincidences_sliced,
};
use scandaq_core::{Crystal, Geometry, HitBatch};
use std::hint::black_box;

const CHANNELS: u32 = 2048;
const WINDOW_PS: i64 = 4_000;
/// Singles rate: mean window occupancy = rate x window = 0.1.
const RATE_HZ: f64 = 25e6;

/// 2048 crystals: 32 modules of 8 x 8 around a ring of radius 400 mm.
fn geometry() -> Geometry {
    let mut g = Geometry::default();
    for ch in 0..CHANNELS {
        let module = ch / 64;
        let (xi, yi) = (ch % 8, (ch / 8) % 8);
        let phi = (module as f32 + (xi as f32 + 0.5) / 8.0) * std::f32::consts::TAU / 32.0;
        g.crystals.insert(
            ch,
            Crystal {
                module,
                xi,
                yi,
                pos_mm: [400.0 * phi.cos(), 400.0 * phi.sin(), yi as f32 * 3.2],
            },
        );
    }
    g
}

/// `n` singles with Poisson times (xorshift, fixed seed), uniform channels, energies around
/// a 511 keV photopeak with a Compton tail.
fn singles(n: usize) -> HitBatch {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mean_gap_ps = 1e12 / RATE_HZ;
    let mut b = HitBatch::with_capacity(n);
    let mut t = 0i64;
    for _ in 0..n {
        let u = ((next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        t += (-u.ln() * mean_gap_ps) as i64;
        let r = next();
        let e = if r % 4 == 0 {
            (r >> 32) as f32 / u32::MAX as f32 * 450.0 + 50.0
        } else {
            511.0 + ((r >> 32) as f32 / u32::MAX as f32 - 0.5) * 100.0
        };
        b.t_ps.push(t);
        b.channel.push((r >> 8) as u32 % CHANNELS);
        b.energy_kev.push(e);
        b.flags.push(0);
    }
    b
}

fn config() -> CoincidenceConfig {
    let mut cfg = CoincidenceConfig::prompt(WINDOW_PS);
    cfg.energy_window_kev = Some([350.0, 650.0]);
    cfg
}

fn coincidence(c: &mut Criterion) {
    let geo = geometry();
    let lut = CrystalLut::from_geometry(&geo);
    let cfg = config();
    let big = singles(4_000_000);
    let small = singles(10_000);
    let small_ref: Vec<reference::Single> = (0..small.t_ps.len())
        .map(|k| reference::Single {
            t: small.t_ps[k],
            ch: small.channel[k],
            e: small.energy_kev[k],
            flags: 0,
        })
        .collect();
    let ref_cfg = reference::Config {
        window: WINDOW_PS,
        offset: 0,
        delayed: false,
        energy: Some((350.0, 650.0)),
        min_transaxial: None,
        max_axial: None,
        min_module: None,
        allowed_modules: None,
        policy: reference::Policy::TakeAllGoods,
        single_window: false,
    };
    // Same physics on the small input.
    let mut out = CoincidenceBatch::default();
    sort_coincidences(&cfg, &lut, SinglesRef::from(&small), &mut out).unwrap();
    let (want, _) = reference::sort(&ref_cfg, &geo, &small_ref);
    assert_eq!(out.len(), want.len(), "library and reference disagree");
    out.clear();
    let stats = sort_coincidences(&cfg, &lut, SinglesRef::from(&big), &mut out).unwrap();
    eprintln!(
        "input: {} singles over {:.3} ms, {} pass the energy window, {} pairs, {} multiples",
        big.len(),
        *big.t_ps.last().unwrap() as f64 * 1e-9,
        stats.windows_opened,
        stats.pairs_kept,
        stats.multiples_seen
    );

    let mut group = c.benchmark_group("coincidence");
    group.sample_size(20);
    group.throughput(Throughput::Elements(big.len() as u64));
    group.bench_function("scandaq_1thread", |b| {
        let mut out = CoincidenceBatch::default();
        b.iter(|| {
            out.clear();
            sort_coincidences(&cfg, &lut, SinglesRef::from(&big), &mut out).unwrap();
            black_box(out.len())
        })
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("thread pool");
    group.bench_function("scandaq_2threads", |b| {
        let mut out = CoincidenceBatch::default();
        b.iter(|| {
            out.clear();
            pool.install(|| {
                sort_coincidences_parallel(&cfg, &lut, SinglesRef::from(&big), &mut out).unwrap()
            });
            black_box(out.len())
        })
    });
    // The parallel path's own overhead (cuts, per-slice output, concatenation) on one thread.
    let pool1 = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("thread pool");
    group.bench_function("scandaq_sliced_on_1thread", |b| {
        let mut out = CoincidenceBatch::default();
        b.iter(|| {
            out.clear();
            pool1.install(|| {
                sort_coincidences_sliced(&cfg, &lut, SinglesRef::from(&big), 8, &mut out).unwrap()
            });
            black_box(out.len())
        })
    });
    group.throughput(Throughput::Elements(small.len() as u64));
    group.bench_function("scandaq_1thread_small", |b| {
        let mut out = CoincidenceBatch::default();
        b.iter(|| {
            out.clear();
            sort_coincidences(&cfg, &lut, SinglesRef::from(&small), &mut out).unwrap();
            black_box(out.len())
        })
    });
    group.bench_function("reference_small", |b| {
        b.iter(|| black_box(reference::sort(&ref_cfg, &geo, &small_ref).0.len()))
    });
    group.finish();
}

/// Hits per batch as the pipeline hands them to the grouper.
const GROUPING_BATCH: usize = 16 << 10;

/// Photon grouping as fpga-sim's ring `config.ini` sets it (20 clocks = 100 ns, 100 mm,
/// multi-hit only within a module, PETsys's `M` entries), fed in pipeline-sized batches.
fn grouping(c: &mut Criterion) {
    let lut = CrystalLut::from_geometry(&geometry());
    let hits = singles(4_000_000);
    let mut cfg = GroupingConfig::new(100_000, 100.0);
    cfg.multi_hit_module_pairs = Some(ModulePairs((0..CHANNELS / 64).map(|m| [m, m]).collect()));
    cfg.max_hits = Some(64);
    let group_all = |out: &mut PhotonBatch| {
        let mut grouper = Grouper::new(cfg.clone(), &lut).unwrap();
        out.clear();
        let mut start = 0;
        while start < hits.len() {
            let end = (start + GROUPING_BATCH).min(hits.len());
            grouper
                .push(SinglesRef::from(&hits).slice(start..end), out)
                .unwrap();
            start = end;
        }
        grouper.finish(out);
        out.t_ps.len()
    };
    let mut out = PhotonBatch::default();
    eprintln!(
        "grouping: {} hits -> {} photons",
        hits.len(),
        group_all(&mut out)
    );
    let mut group = c.benchmark_group("grouping");
    group.sample_size(20);
    group.throughput(Throughput::Elements(hits.len() as u64));
    group.bench_function("scandaq_1thread", |b| {
        b.iter(|| black_box(group_all(&mut out)))
    });
    group.finish();
}

criterion_group!(benches, coincidence, grouping);
criterion_main!(benches);
