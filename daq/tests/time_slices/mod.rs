//! Time slices on simulated bench data: a real `scandaq replay` of the fpga-sim bench run
//! (grouping, gate10 single-window, a delayed window) is the single process; its singles
//! table routed in memory through `scandaq_core::slicing` to 3 builders gives the run's own
//! prompt and delayed tables back, row for row, and the manifest's counts as the sum of the
//! slices' counters; split over 3 sources by channel ranges it equals the single process on
//! the stream a 3-board system merges.

use super::*;
use scandaq_core::Geometry;
use scandaq_core::coincidence::{
    CoincidenceBatch, CoincidenceConfig, CrystalLut, GroupingConfig, Policy, WindowMode,
    group_hits, sort_coincidences,
};
use scandaq_core::slicing::{
    Routing, SliceAssembler, SliceOutput, SliceRows, SliceSpec, SliceStats, SourceSlicer,
    process_slice,
};

/// The in-memory cluster: `sources` (ids ascending, rows time ordered) in batches of 64
/// rows, earliest source first, to `builders` assemblers; every job processed when ready.
fn run_cluster(
    sources: &[(u32, SliceRows)],
    spec: SliceSpec,
    cfg: (&CoincidenceConfig, &CoincidenceConfig, &GroupingConfig),
    lut: &CrystalLut,
) -> Vec<SliceOutput> {
    let first = sources
        .iter()
        .filter_map(|(_, r)| r.t_ps.first())
        .min()
        .map_or(0, |&t| spec.slice_of(t));
    let ids: Vec<u32> = sources.iter().map(|(id, _)| *id).collect();
    let mut slicers: Vec<SourceSlicer> = ids
        .iter()
        .map(|&id| SourceSlicer::new(spec, id, first).unwrap())
        .collect();
    let mut asm: Vec<SliceAssembler> = (0..spec.builders)
        .map(|b| SliceAssembler::new(spec, b, &ids, first).unwrap())
        .collect();
    let mut pos = vec![0usize; sources.len()];
    let mut finished = vec![false; sources.len()];
    let mut routing = Routing::default();
    let mut outs = Vec::new();
    let mut max_in_flight = 0;
    // As in real time: the source whose next row is earliest delivers its next batch.
    let next_t = |k: usize, pos: &[usize]| sources[k].1.t_ps.get(pos[k]).copied();
    while let Some(k) = (0..sources.len())
        .filter(|&k| !finished[k])
        .min_by_key(|&k| next_t(k, &pos).unwrap_or(i64::MIN))
    {
        let (id, rows) = &sources[k];
        let ended = if pos[k] == rows.len() {
            finished[k] = true;
            slicers[k].finish()
        } else {
            let end = (pos[k] + 64).min(rows.len());
            let batch = rows.view().slice(pos[k]..end);
            slicers[k].push(batch.t_ps, &mut routing).unwrap();
            for p in &routing.pieces {
                asm[p.builder as usize]
                    .push_piece(*id, p.slice, p.role, batch.slice(p.rows.clone()))
                    .unwrap();
            }
            pos[k] = end;
            routing.ended.clone()
        };
        if !ended.is_empty() {
            for a in &mut asm {
                a.end(*id, ended.end - 1).unwrap();
            }
        }
        for a in &mut asm {
            max_in_flight = max_in_flight.max(a.slices_in_flight());
            while let Some(job) = a.pop_job() {
                outs.push(process_slice(&job, cfg.0, cfg.1, Some(cfg.2), lut).unwrap());
            }
        }
    }
    // Memory: slices wait only for the slowest source's next batch.
    assert!(max_in_flight < 64, "{max_in_flight} slices in flight");
    outs.sort_by_key(|o| o.slice);
    outs
}

fn table_pairs(batches: &[RecordBatch]) -> CoincidenceBatch {
    CoincidenceBatch {
        t1_ps: col_i64(batches, "t1_ps"),
        t2_ps: col_i64(batches, "t2_ps"),
        channel1: col_u32(batches, "channel1"),
        channel2: col_u32(batches, "channel2"),
        energy1_kev: col_f32(batches, "energy1_kev"),
        energy2_kev: col_f32(batches, "energy2_kev"),
        tof_ps: col_i64(batches, "tof_ps"),
        flags: col_u16(batches, "flags"),
    }
}

#[test]
fn sliced_bench_replay_equals_the_single_process_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let calib = sim_dir().join("calib");
    let (code, stdout, stderr) = scandaq(&[
        "replay",
        sim_dir().join("bench.rawf").to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
        "--window",
        "4ns",
        "--delay",
        "20ns",
        "--energy-window",
        "300:700",
        "--multiples",
        "takeWinnerOfGoods",
        "--window-mode",
        "single_window_gate10",
        "--group-window",
        "10ns",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run = out.join("run-000001");
    let (singles, _, manifest) = run_files(&run);
    let geometry = Geometry::parse_map_channel(
        "map_channel.tsv",
        &std::fs::read_to_string(calib.join("map_channel.tsv")).unwrap(),
    )
    .unwrap();
    let lut = CrystalLut::from_geometry(&geometry);
    let prompt = CoincidenceConfig {
        energy_window_kev: Some([300.0, 700.0]),
        policy: Policy::TakeWinnerOfGoods,
        mode: WindowMode::SingleWindowGate10,
        ..CoincidenceConfig::prompt(4_000)
    };
    let delayed = prompt.to_delayed(20_000);
    let grouping = GroupingConfig {
        window_ps: 10_000,
        ..GroupingConfig::default()
    };

    let t = col_i64(&singles, "t_ps");
    let ch = col_u32(&singles, "channel");
    let e = col_f32(&singles, "energy_kev");
    let f = col_u16(&singles, "flags");
    assert!(t.len() > 1_000_000, "{} singles", t.len());
    let stream = SliceRows {
        t_ps: t,
        channel: ch,
        energy_kev: e,
        flags: f,
    };
    let cfg = (&prompt, &delayed, &grouping);

    // One board: one source (the run's singles, in the run's order) to 3 builders gives the
    // run's own tables and counts.
    let want_prompts = table_pairs(&read_parquet(&run.join("coincidences-00000.parquet")).0);
    let want_delayed = table_pairs(&read_parquet(&run.join("delayed-00000.parquet")).0);
    assert!(want_prompts.len() > 10_000 && !want_delayed.is_empty());
    let (prompts, delays, sum) = sliced(&[(7, stream.clone())], cfg, &lut);
    assert!(
        prompts == want_prompts,
        "prompts differ from the run's table"
    );
    assert!(
        delays == want_delayed,
        "delayed differ from the run's table"
    );
    let c = &manifest.counts;
    assert_eq!(sum.rows_body, stream.len() as u64);
    assert_eq!(sum.grouping.hits_in, c["grouping.hits_in"]);
    assert_eq!(sum.grouping.photons_out, c["grouping.photons_out"]);
    assert_eq!(
        sum.grouping.multi_hit_photons,
        c["grouping.multi_hit_photons"]
    );
    for (key, s) in [("prompt", &sum.prompt), ("delayed", &sum.delayed)] {
        let n = |what: &str| c[&format!("coincidences.{key}.{what}")];
        assert_eq!(s.pairs_kept, n("pairs"), "{key}");
        assert_eq!(s.singles_in, n("singles_in"), "{key}");
        assert_eq!(s.outside_energy_window, n("outside_energy_window"), "{key}");
        assert_eq!(s.multiples_seen, n("multiples_seen"), "{key}");
        assert_eq!(s.multiples_rejected, n("multiples_rejected"), "{key}");
        assert_eq!(s.one_pair_not_good, n("one_pair_not_good"), "{key}");
    }

    // Three sources by channel ranges (as if the board's channels were three boards): equal
    // to the single process on the stream such a system merges — time order, equal times by
    // ascending source (the run's own stream orders ties within its one board by decode
    // order, so it is re-ordered here with the standard library's stable sort).
    let mut channels = stream.channel.clone();
    channels.sort_unstable();
    channels.dedup();
    let cut = [
        channels[channels.len() / 3],
        channels[2 * channels.len() / 3],
    ];
    let source_of = |c: u32| 1 + cut.iter().filter(|&&x| c >= x).count() as u32;
    let mut order: Vec<usize> = (0..stream.len()).collect();
    order.sort_by_key(|&i| (stream.t_ps[i], source_of(stream.channel[i])));
    let reordered = pick(&stream, order.iter().copied());
    let mut sources = Vec::new();
    for id in 1..=3 {
        let rows = order
            .iter()
            .copied()
            .filter(|&i| source_of(stream.channel[i]) == id);
        sources.push((id, pick(&stream, rows)));
    }
    let (photons, gstats) = group_hits(&grouping, &lut, reordered.view()).unwrap();
    let mut want_prompts = CoincidenceBatch::default();
    let p_stats = sort_coincidences(&prompt, &lut, (&photons).into(), &mut want_prompts).unwrap();
    let mut want_delayed = CoincidenceBatch::default();
    let d_stats = sort_coincidences(&delayed, &lut, (&photons).into(), &mut want_delayed).unwrap();
    let (prompts, delays, sum) = sliced(&sources, cfg, &lut);
    assert!(prompts == want_prompts, "3 sources: prompts differ");
    assert!(delays == want_delayed, "3 sources: delayed differ");
    assert_eq!(
        (sum.grouping, sum.prompt, sum.delayed),
        (gstats, p_stats, d_stats)
    );
}

/// Rows `rows` of `s`, in that order.
fn pick(s: &SliceRows, rows: impl Iterator<Item = usize>) -> SliceRows {
    let mut out = SliceRows::default();
    for i in rows {
        out.t_ps.push(s.t_ps[i]);
        out.channel.push(s.channel[i]);
        out.energy_kev.push(s.energy_kev[i]);
        out.flags.push(s.flags[i]);
    }
    out
}

/// `sources` through 3 builders in 5 µs slices (a million slice edges in the 5 s run): the concatenated prompts and delayed and the
/// summed counters (every slice exact: 1 M singles/s leaves quiet gaps).
fn sliced(
    sources: &[(u32, SliceRows)],
    cfg: (&CoincidenceConfig, &CoincidenceConfig, &GroupingConfig),
    lut: &CrystalLut,
) -> (CoincidenceBatch, CoincidenceBatch, SliceStats) {
    let spec = SliceSpec::for_coincidences(5_000_000, 3, cfg.0, cfg.1, Some(cfg.2)).unwrap();
    let outs = run_cluster(sources, spec, cfg, lut);
    let mut sum = SliceStats::default();
    let (mut prompts, mut delays) = (CoincidenceBatch::default(), CoincidenceBatch::default());
    for o in &outs {
        sum.add(&o.stats);
        prompts.append(&o.prompts);
        delays.append(&o.delayed);
    }
    assert_eq!(sum.inexact_slices, 0, "{sum:?}");
    assert!(outs.len() > 1000, "{} slices", outs.len());
    (prompts, delays, sum)
}
