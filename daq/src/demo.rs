//! `scandaq demo`: the bench simulator runs in-process and streams its frames through the
//! same pipeline as a replay, with the simulator's true calibration, into a new run.

use crate::calib_load::LoadedCalibration;
use crate::pipeline::Chunk;
use crate::session::{self, RunDescription, RunSummary};
use anyhow::{Result, anyhow};
use crossbeam_channel::bounded;
use scandaq_core::calib::checksum_of;
use scandaq_core::{Calibration, ClockModel};
use scandaq_fpga_sim::{BenchConfig, BenchSim, TruthBatch};
use std::collections::BTreeMap;
use std::path::Path;

/// Bytes of frames gathered before handing a chunk to the pipeline.
const DEMO_CHUNK: usize = 4 << 20;

/// The simulator's true calibration, as if loaded from its tables.
pub fn true_calibration(sim: &BenchSim) -> LoadedCalibration {
    let texts = vec![
        ("tdc_calibration.tsv".to_string(), sim.true_tdc().to_text()),
        (
            "energy_calibration.tsv".to_string(),
            sim.true_energy().to_text(),
        ),
        ("skew.tsv".to_string(), sim.true_skew().to_text()),
        (
            "map_channel.tsv".to_string(),
            sim.geometry().to_map_channel(),
        ),
    ];
    let parts: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    LoadedCalibration {
        calibration: Calibration {
            tdc: sim.true_tdc().clone(),
            energy: Some(sim.true_energy().clone()),
            skew: Some(sim.true_skew().clone()),
            geometry: Some(sim.geometry().clone()),
            checksum: checksum_of(&parts),
            sources: texts.iter().map(|(n, _)| n.clone()).collect(),
        },
        texts,
        warnings: vec![],
    }
}

/// Runs the demo: `config.duration_s` of the bench preset into a new run under `out_dir`.
pub fn demo(
    config: BenchConfig,
    out_dir: &Path,
    show_progress: bool,
    raw_columns: bool,
    coincidences: crate::coinc_stage::CoincidenceOptions,
) -> Result<RunSummary> {
    let duration_s = config.duration_s;
    let mut sim = BenchSim::new(config).map_err(|e| anyhow!("simulator configuration: {e}"))?;
    let calibration = true_calibration(&sim);
    let (tx, rx) = bounded::<Result<Chunk>>(2);
    let producer = std::thread::Builder::new()
        .name("fpga-sim".into())
        .spawn(move || {
            let mut truth = TruthBatch::default();
            let mut frames = Vec::with_capacity(DEMO_CHUNK + (1 << 20));
            let mut slices = 0u64;
            loop {
                let more = sim.next_slice(&mut frames, &mut truth);
                truth = TruthBatch::default();
                slices += 1;
                if frames.len() >= DEMO_CHUNK || (!more && !frames.is_empty()) {
                    let bytes =
                        std::mem::replace(&mut frames, Vec::with_capacity(DEMO_CHUNK + (1 << 20)));
                    if tx
                        .send(Ok(Chunk {
                            bytes,
                            progress: slices,
                        }))
                        .is_err()
                    {
                        break;
                    }
                    slices = 0;
                }
                if !more {
                    break;
                }
            }
            sim.summary()
        })?;
    let bar = crate::replay::progress_bar(show_progress, (duration_s * 1000.0) as u64);
    let mut extra_counts = BTreeMap::new();
    extra_counts.insert("simulated_ms".into(), (duration_s * 1000.0) as u64);
    let description = RunDescription {
        mode: "demo".into(),
        sources: vec![format!("fpga-sim bench preset, {duration_s} s")],
        clock: ClockModel::TOFPET2_DEFAULT,
        extra_counts,
        warnings: vec![],
        raw_columns,
        coincidences,
    };
    let summary = session::run(out_dir, &calibration, description, rx, |n| bar.inc(n));
    bar.finish_and_clear();
    let _ = producer
        .join()
        .map_err(|_| anyhow!("the simulator thread panicked"))?;
    summary
}
