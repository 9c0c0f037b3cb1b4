//! Peers and fixtures for scandaq's benchmarks.
//!
//! [`scalar_peer`] is the "obvious" decoder a physicist would write first: one hit at a time,
//! fields split into a struct, tables looked up in maps per hit, the textbook quadratic root,
//! one array-of-structs row per hit. The criterion benches run it beside scandaq's kernel on
//! the same words; a test checks both give the same physics so the comparison is fair.

use scandaq_core::calib::Branch;
use scandaq_core::{Calibration, HitBatch};
use scandaq_decoders::FrameScanner;
use scandaq_decoders::petsys::{FrameSpan, HitFields};
use scandaq_fpga_sim::{BenchConfig, BenchSim, TruthBatch};

/// One decoded hit, array-of-structs style.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalarHit {
    /// Corrected time, ps.
    pub t_ps: i64,
    /// Channel id.
    pub channel: u32,
    /// Energy, keV.
    pub energy_kev: f32,
}

/// Frames of a simulated bench, scanned, with the simulator's true calibration.
pub struct Fixture {
    /// Frame bytes.
    pub bytes: Vec<u8>,
    /// Frames found by the scanner.
    pub spans: Vec<FrameSpan>,
    /// Hit words in the fixture.
    pub hits: u64,
    /// True calibration.
    pub calibration: Calibration,
}

/// Simulates `duration_s` of the bench at `rate_hz` and scans it.
pub fn fixture(duration_s: f64, rate_hz: f64) -> Fixture {
    let config = BenchConfig {
        seed: 3,
        duration_s,
        hit_rate_hz: rate_hz,
        ..BenchConfig::default()
    };
    let mut sim = BenchSim::new(config).expect("valid bench config");
    let mut bytes = Vec::new();
    let mut truth = TruthBatch::default();
    while sim.next_slice(&mut bytes, &mut truth) {}
    let mut scanner = FrameScanner::new();
    let mut spans = Vec::new();
    scanner.scan(&bytes, true, &mut spans);
    let calibration = Calibration {
        tdc: sim.true_tdc().clone(),
        energy: Some(sim.true_energy().clone()),
        skew: Some(sim.true_skew().clone()),
        ..Calibration::default()
    };
    Fixture {
        hits: scanner.hits,
        bytes,
        spans,
        calibration,
    }
}

/// The obvious per-hit decoder (the peer).
pub fn scalar_peer(
    bytes: &[u8],
    spans: &[FrameSpan],
    cal: &Calibration,
    period_ps: f64,
    out: &mut Vec<ScalarHit>,
) {
    let energy = cal.energy.as_ref();
    let skew = cal.skew.as_ref();
    for span in spans {
        for k in 0..span.n_hits as usize {
            let off = span.hits_offset + 8 * k;
            let word = u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap());
            let h = HitFields::decode(word);
            let (Some(tt), Some(te)) = (
                cal.tdc.get(h.channel, h.tac, Branch::T),
                cal.tdc.get(h.channel, h.tac, Branch::E),
            ) else {
                continue;
            };
            let solve = |a0: f64, a1: f64, a2: f64, f: f64| {
                if a2 == 0.0 {
                    (f - a0) / a1
                } else {
                    (-a1 + (a1 * a1 - 4.0 * a2 * (a0 - f)).max(0.0).sqrt()) / (2.0 * a2)
                }
            };
            let qt = solve(tt.a0, tt.a1, tt.a2, f64::from(h.tfine));
            let qe = solve(te.a0, te.a1, te.a2, f64::from(h.efine));
            let t_start = (span.frame * 1024 + u64::from(h.tcoarse)) as f64 - qt - tt.t0;
            let mut ecoarse = i64::from(h.ecoarse);
            if ecoarse < i64::from(h.tcoarse) - 256 {
                ecoarse += 1024;
            }
            let t_end = (span.frame * 1024) as f64 + ecoarse as f64 - qe - te.t0;
            let tot_ns = (t_end - t_start) * period_ps / 1000.0;
            let e = energy
                .and_then(|e| e.entries.get(&h.channel))
                .map_or(tot_ns, |e| e.energy_kev(tot_ns));
            let s = skew
                .and_then(|s| s.offsets_ps.get(&h.channel))
                .copied()
                .unwrap_or(0.0);
            out.push(ScalarHit {
                t_ps: (t_start * period_ps - s).round() as i64,
                channel: h.channel,
                energy_kev: e as f32,
            });
        }
    }
}

/// Converts scandaq's batch to rows, for comparisons.
pub fn rows(batch: &HitBatch) -> Vec<ScalarHit> {
    (0..batch.len())
        .map(|i| ScalarHit {
            t_ps: batch.t_ps[i],
            channel: batch.channel[i],
            energy_kev: batch.energy_kev[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use scandaq::process::kernel::{CompiledCalibration, KernelLosses};
    use scandaq_core::ClockModel;

    #[test]
    fn peer_and_kernel_agree() {
        let f = fixture(0.02, 1e6);
        let mut peer = Vec::new();
        scalar_peer(&f.bytes, &f.spans, &f.calibration, 5000.0, &mut peer);
        let kernel = CompiledCalibration::new(&f.calibration, ClockModel::TOFPET2_DEFAULT);
        let mut batch = HitBatch::default();
        kernel.decode_block(&f.bytes, &f.spans, &mut batch, &mut KernelLosses::default());
        let ours = rows(&batch);
        assert_eq!(ours.len(), peer.len());
        assert!(ours.len() as u64 == f.hits && f.hits > 1000);
        for (a, b) in ours.iter().zip(&peer) {
            assert_eq!(a.channel, b.channel);
            // Absolute times ~1e14 ps: the peer's all-f64 arithmetic loses ~0.02 ps.
            assert!((a.t_ps - b.t_ps).abs() <= 1, "{a:?} {b:?}");
            assert!(
                (a.energy_kev - b.energy_kev).abs() < 0.01 * a.energy_kev.abs().max(1.0),
                "{a:?} {b:?}"
            );
        }
    }
}
