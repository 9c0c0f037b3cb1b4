//! Time slices (`scandaq_core::slicing`): the whole cluster path on one thread — 2 sources
//! (channel halves) routed to 2 builders in 1 ms slices, assembled and processed (prompt +
//! delayed, multi-window) — beside the single-process sorters on the same singles, and the
//! routing + assembling alone. Poisson singles, 25 M/s over 2048 channels.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scandaq_core::coincidence::{
    CoincidenceBatch, CoincidenceConfig, CrystalLut, sort_coincidences,
};
use scandaq_core::slicing::{
    Routing, SliceAssembler, SliceJob, SliceRows, SliceSpec, SourceSlicer, process_slice,
};
use scandaq_core::{Crystal, Geometry};
use std::hint::black_box;

const CHANNELS: u32 = 2048;

fn geometry() -> Geometry {
    let mut g = Geometry::default();
    for ch in 0..CHANNELS {
        let module = ch / 64;
        let phi = ch as f32 * std::f32::consts::TAU / CHANNELS as f32;
        g.crystals.insert(
            ch,
            Crystal {
                module,
                xi: ch % 8,
                yi: (ch / 8) % 8,
                pos_mm: [
                    400.0 * phi.cos(),
                    400.0 * phi.sin(),
                    ((ch / 8) % 8) as f32 * 3.2,
                ],
            },
        );
    }
    g
}

/// `n` Poisson singles at 25 M/s (xorshift, fixed seed), photopeak and Compton tail.
fn singles(n: usize) -> SliceRows {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut s = SliceRows::default();
    let mut t = 0i64;
    for _ in 0..n {
        let u = ((next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        t += (-u.ln() * 40_000.0) as i64;
        let r = next();
        let e = if r % 4 == 0 {
            (r >> 32) as f32 / u32::MAX as f32 * 450.0 + 50.0
        } else {
            511.0 + ((r >> 32) as f32 / u32::MAX as f32 - 0.5) * 100.0
        };
        s.t_ps.push(t);
        s.channel.push((r >> 8) as u32 % CHANNELS);
        s.energy_kev.push(e);
        s.flags.push(0);
    }
    s
}

/// Rows of `all` on channels `[lo, hi)`.
fn source(all: &SliceRows, lo: u32, hi: u32) -> SliceRows {
    let mut s = SliceRows::default();
    for i in (0..all.len()).filter(|&i| (lo..hi).contains(&all.channel[i])) {
        s.t_ps.push(all.t_ps[i]);
        s.channel.push(all.channel[i]);
        s.energy_kev.push(all.energy_kev[i]);
        s.flags.push(all.flags[i]);
    }
    s
}

/// Routes `sources` (batches of 65 536 rows, round robin) to every builder and hands each
/// ready job to `job`.
fn route(sources: &[SliceRows], spec: SliceSpec, mut job: impl FnMut(SliceJob)) {
    let ids: Vec<u32> = (0..sources.len() as u32).collect();
    let mut slicers: Vec<SourceSlicer> = ids
        .iter()
        .map(|&id| SourceSlicer::new(spec, id, 0).expect("spec"))
        .collect();
    let mut asm: Vec<SliceAssembler> = (0..spec.builders)
        .map(|b| SliceAssembler::new(spec, b, &ids, 0).expect("spec"))
        .collect();
    let mut pos = vec![0usize; sources.len()];
    let mut routing = Routing::default();
    let mut open = sources.len();
    while open > 0 {
        for (k, rows) in sources.iter().enumerate() {
            if pos[k] > rows.len() {
                continue;
            }
            let ended = if pos[k] == rows.len() {
                pos[k] += 1;
                open -= 1;
                slicers[k].finish()
            } else {
                let end = (pos[k] + 65_536).min(rows.len());
                let batch = rows.view().slice(pos[k]..end);
                slicers[k].push(batch.t_ps, &mut routing).expect("sorted");
                for p in &routing.pieces {
                    asm[p.builder as usize]
                        .push_piece(k as u32, p.slice, p.role, batch.slice(p.rows.clone()))
                        .expect("piece");
                }
                pos[k] = end;
                routing.ended.clone()
            };
            if !ended.is_empty() {
                for a in &mut asm {
                    a.end(k as u32, ended.end - 1).expect("source");
                }
            }
        }
        for a in &mut asm {
            while let Some(j) = a.pop_job() {
                job(j);
            }
        }
    }
}

fn slicing(c: &mut Criterion) {
    let lut = CrystalLut::from_geometry(&geometry());
    let prompt = CoincidenceConfig {
        energy_window_kev: Some([350.0, 650.0]),
        ..CoincidenceConfig::prompt(4_000)
    };
    let delayed = prompt.to_delayed(100_000);
    let all = singles(2_000_000);
    let sources = [source(&all, 0, 1024), source(&all, 1024, CHANNELS)];
    let spec =
        SliceSpec::for_coincidences(1_000_000_000, 2, &prompt, &delayed, None).expect("configs");
    // Same result both ways.
    let (mut p, mut d) = (CoincidenceBatch::default(), CoincidenceBatch::default());
    sort_coincidences(&prompt, &lut, all.view(), &mut p).expect("sorted");
    sort_coincidences(&delayed, &lut, all.view(), &mut d).expect("sorted");
    let mut outs = Vec::new();
    route(&sources, spec, |j| {
        outs.push(process_slice(&j, &prompt, &delayed, None, &lut).expect("slice"))
    });
    outs.sort_by_key(|o| o.slice);
    let n_prompts: usize = outs.iter().map(|o| o.prompts.len()).sum();
    let n_delayed: usize = outs.iter().map(|o| o.delayed.len()).sum();
    assert_eq!(
        (n_prompts, n_delayed),
        (p.len(), d.len()),
        "sliced != single process"
    );
    eprintln!(
        "input: {} singles over {:.1} ms, {} slices, {} prompts, {} delayed",
        all.len(),
        *all.t_ps.last().unwrap_or(&0) as f64 * 1e-9,
        outs.len(),
        p.len(),
        d.len()
    );

    let mut group = c.benchmark_group("slicing");
    group.sample_size(10);
    group.throughput(Throughput::Elements(all.len() as u64));
    group.bench_function("single_process_prompt_delayed", |b| {
        b.iter(|| {
            let (mut p, mut d) = (CoincidenceBatch::default(), CoincidenceBatch::default());
            sort_coincidences(&prompt, &lut, all.view(), &mut p).expect("ok");
            sort_coincidences(&delayed, &lut, all.view(), &mut d).expect("ok");
            black_box(p.len() + d.len())
        })
    });
    group.bench_function("sliced_2_sources_2_builders", |b| {
        b.iter(|| {
            let mut n = 0;
            route(&sources, spec, |j| {
                let o = process_slice(&j, &prompt, &delayed, None, &lut).expect("slice");
                n += o.prompts.len() + o.delayed.len();
            });
            black_box(n)
        })
    });
    group.bench_function("route_and_assemble_only", |b| {
        b.iter(|| {
            let mut n = 0;
            route(&sources, spec, |j| n += j.rows.len());
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(benches, slicing);
criterion_main!(benches);
