//! The decode + calibrate kernel: PETsys hit words of a block of frames -> a [`HitBatch`] in
//! picoseconds and keV. Calibration tables are compiled once into a dense, cache-friendly
//! layout ([`CompiledCalibration`]); the kernel then does no map look-ups and no allocation
//! per hit.

use scandaq_core::{Calibration, ClockModel, HitBatch, hit_flags};
use scandaq_decoders::petsys::{FrameSpan, decode_fine};

const NO_SLOT: u32 = u32::MAX;
const CHIPS: usize = 1 << 16;

/// One TAC branch, with the constants of the phase inversion precomputed.
#[derive(Clone, Copy, Debug, Default)]
struct TacBranch {
    t0: f64,
    a0: f64,
    a1: f64,
    a1_sq: f64,
    four_a2: f64,
    valid: bool,
}

impl TacBranch {
    /// Phase `q` of a fine code: the stable root of `a0 + a1 q + a2 q^2 = fine`.
    #[inline(always)]
    fn phase(&self, fine: f64) -> f64 {
        let d = fine - self.a0;
        let disc = (self.a1_sq + self.four_a2 * d).max(0.0);
        2.0 * d / (self.a1 + disc.sqrt())
    }
}

/// Everything the kernel needs about one channel.
#[derive(Clone, Copy, Debug, Default)]
struct ChannelCal {
    /// `[tac][branch]`.
    tac: [[TacBranch; 2]; 4],
    inv_a_ns: f64,
    b_kev: f64,
    has_energy: bool,
    skew_ps: f64,
    has_skew: bool,
}

/// Calibration compiled for the kernel: chip -> slot of 64 channels -> constants.
#[derive(Clone, Debug)]
pub struct CompiledCalibration {
    chip_slot: Vec<u32>,
    channels: Vec<ChannelCal>,
    period_ps: f64,
    /// Integral clock period in ps (exact integer time arithmetic), if the clock has one.
    period_ps_int: Option<i64>,
    energy_table: bool,
    skew_table: bool,
}

/// Per-block counts of hits the kernel could not calibrate, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLosses {
    /// No TDC entry for the hit's (channel, TAC, branch).
    pub no_tdc_calibration: u64,
    /// An energy table is loaded but has no entry for the channel.
    pub no_energy_calibration: u64,
    /// A skew table is loaded but has no entry for the channel.
    pub no_skew_calibration: u64,
}

impl KernelLosses {
    /// Adds another block's counts.
    pub fn add(&mut self, o: &KernelLosses) {
        self.no_tdc_calibration += o.no_tdc_calibration;
        self.no_energy_calibration += o.no_energy_calibration;
        self.no_skew_calibration += o.no_skew_calibration;
    }

    /// Adds the counts to named loss counters.
    pub fn record(&self, losses: &mut scandaq_core::LossCounts) {
        losses.add("no_tdc_calibration", self.no_tdc_calibration);
        losses.add("no_energy_calibration", self.no_energy_calibration);
        losses.add("no_skew_calibration", self.no_skew_calibration);
    }

    /// Total hits dropped.
    pub fn total(&self) -> u64 {
        self.no_tdc_calibration + self.no_energy_calibration + self.no_skew_calibration
    }
}

impl CompiledCalibration {
    /// Compiles `cal` for a clock.
    pub fn new(cal: &Calibration, clock: ClockModel) -> Self {
        let mut chip_slot = vec![NO_SLOT; CHIPS];
        let mut channels: Vec<ChannelCal> = Vec::new();
        let mut slot_of = |channel: u32, channels: &mut Vec<ChannelCal>| -> usize {
            let chip = (channel >> 6) as usize;
            if chip_slot[chip] == NO_SLOT {
                chip_slot[chip] = (channels.len() / 64) as u32;
                channels.resize(channels.len() + 64, ChannelCal::default());
            }
            chip_slot[chip] as usize * 64 + (channel & 63) as usize
        };
        for (&(channel, tac, branch), e) in &cal.tdc.entries {
            let i = slot_of(channel, &mut channels);
            channels[i].tac[usize::from(tac & 3)][branch as usize] = TacBranch {
                t0: e.t0,
                a0: e.a0,
                a1: e.a1,
                a1_sq: e.a1 * e.a1,
                four_a2: 4.0 * e.a2,
                valid: true,
            };
        }
        if let Some(energy) = &cal.energy {
            for (&channel, e) in &energy.entries {
                let i = slot_of(channel, &mut channels);
                channels[i].inv_a_ns = 1.0 / e.a_ns;
                channels[i].b_kev = e.b_kev;
                channels[i].has_energy = true;
            }
        }
        if let Some(skew) = &cal.skew {
            for (&channel, &t) in &skew.offsets_ps {
                let i = slot_of(channel, &mut channels);
                channels[i].skew_ps = t;
                channels[i].has_skew = true;
            }
        }
        let period_ps = clock.period_ps();
        let rounded = period_ps.round();
        Self {
            chip_slot,
            channels,
            period_ps,
            period_ps_int: ((period_ps - rounded).abs() < 1e-9).then_some(rounded as i64),
            energy_table: cal.energy.is_some(),
            skew_table: cal.skew.is_some(),
        }
    }

    /// True when energies come out in keV (an energy table is loaded), false for ToT ns.
    pub fn energy_in_kev(&self) -> bool {
        self.energy_table
    }

    /// Picoseconds of `ticks` whole clock periods, exact.
    #[inline(always)]
    fn ticks_to_ps(&self, ticks: i64) -> i64 {
        match self.period_ps_int {
            Some(p) => ticks * p,
            None => {
                (i128::from(ticks) * 1_000_000_000_000
                    / i128::from((1e12 / self.period_ps).round() as i64)) as i64
            }
        }
    }

    /// Decodes and calibrates the hit words of `spans` (offsets into `buf`), appending to
    /// `out` in frame order. Hits that cannot be calibrated are counted in `losses`.
    pub fn decode_block(
        &self,
        buf: &[u8],
        spans: &[FrameSpan],
        out: &mut HitBatch,
        losses: &mut KernelLosses,
    ) {
        let period_ns = self.period_ps / 1000.0;
        let base_flags = if self.energy_table {
            0
        } else {
            hit_flags::ENERGY_IS_TOT_NS
        } | if self.skew_table {
            0
        } else {
            hit_flags::NO_SKEW
        };
        for span in spans {
            let start = span.hits_offset;
            let end = start + 8 * span.n_hits as usize;
            let Some(words) = buf.get(start..end) else {
                continue;
            };
            let frame_ticks = (span.frame as i64) << 10;
            let frame_flags = base_flags
                | if span.lossy {
                    hit_flags::FROM_LOSSY_FRAME
                } else {
                    0
                };
            for word in words.chunks_exact(8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(word);
                let w = u64::from_le_bytes(b);
                let channel = (w >> 42) as u32;
                let slot = self.chip_slot[(channel >> 6) as usize];
                if slot == NO_SLOT {
                    losses.no_tdc_calibration += 1;
                    continue;
                }
                let cc = &self.channels[slot as usize * 64 + (channel & 63) as usize];
                let tac = ((w >> 40) & 3) as usize;
                let [tb, eb] = &cc.tac[tac];
                if !(tb.valid && eb.valid) {
                    losses.no_tdc_calibration += 1;
                    continue;
                }
                if self.energy_table && !cc.has_energy {
                    losses.no_energy_calibration += 1;
                    continue;
                }
                if self.skew_table && !cc.has_skew {
                    losses.no_skew_calibration += 1;
                    continue;
                }
                let efine = decode_fine(w);
                let tfine = decode_fine(w >> 10);
                let ecoarse = ((w >> 20) & 0x3ff) as u16;
                let tcoarse = ((w >> 30) & 0x3ff) as u16;
                let q_t = tb.phase(f64::from(tfine));
                let q_e = eb.phase(f64::from(efine));
                let mut flags = frame_flags;
                if !(-0.5..=1.5).contains(&q_t) || !(-0.5..=1.5).contains(&q_e) {
                    flags |= hit_flags::FINE_OUT_OF_RANGE;
                }
                // Leading edge: whole ticks exactly in integers, the fraction in f64.
                let t_frac = -q_t - tb.t0;
                let t_ps = self.ticks_to_ps(frame_ticks + i64::from(tcoarse))
                    + (t_frac * self.period_ps - cc.skew_ps).round() as i64;
                // Trailing edge: ecoarse wraps within the frame.
                let mut e_ticks = i64::from(ecoarse);
                if e_ticks < i64::from(tcoarse) - 256 {
                    e_ticks += 1024;
                }
                let tot_periods = (e_ticks - i64::from(tcoarse)) as f64 + (-q_e - eb.t0) - t_frac;
                let tot_ns = tot_periods * period_ns;
                let energy = if self.energy_table {
                    cc.b_kev * ((tot_ns * cc.inv_a_ns).exp() - 1.0)
                } else {
                    tot_ns
                };
                out.t_ps.push(t_ps);
                out.channel.push(channel);
                out.energy_kev.push(energy as f32);
                out.flags.push(flags);
                out.frame.push(span.frame);
                out.tcoarse.push(tcoarse);
                out.ecoarse.push(ecoarse);
                out.tfine.push(tfine);
                out.efine.push(efine);
                out.tac.push(tac as u8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scandaq_core::calib::{Branch, EnergyEntry, TdcEntry};
    use scandaq_core::{EnergyTable, SkewTable, TdcTable};
    use scandaq_decoders::FrameScanner;
    use scandaq_decoders::petsys::{HitFields, encode_frame};

    /// Builds one hit from a known edge time and checks the kernel recovers it exactly.
    #[test]
    fn recovers_edge_time_energy_and_counts_missing_channels() {
        let t_e = TdcEntry {
            t0: 0.2,
            a0: 90.0,
            a1: 330.0,
            a2: -12.0,
        };
        let e_e = TdcEntry {
            t0: -0.1,
            a0: 70.0,
            a1: 320.0,
            a2: -8.0,
        };
        let mut tdc = TdcTable::default();
        for tac in 0..4 {
            tdc.entries.insert((5, tac, Branch::T), t_e);
            tdc.entries.insert((5, tac, Branch::E), e_e);
        }
        let mut energy = EnergyTable::default();
        energy.entries.insert(
            5,
            EnergyEntry {
                a_ns: 80.0,
                b_kev: 150.0,
            },
        );
        let mut skew = SkewTable::default();
        skew.offsets_ps.insert(5, 123.0);
        let cal = Calibration {
            tdc,
            energy: Some(energy),
            skew: Some(skew),
            ..Default::default()
        };
        let k = CompiledCalibration::new(&cal, ClockModel::TOFPET2_DEFAULT);

        // Edge at absolute tick 1000*1024 + 517.35 (after t0), ToT for 511 keV.
        let frame = 1000u64;
        let q = 0.65; // tick 518, q = 518 - 517.35
        let fine_t = t_e.a0 + t_e.a1 * q + t_e.a2 * q * q;
        let tot_ns = 80.0 * (1.0f64 + 511.0 / 150.0).ln();
        let end = 517.35 - t_e.t0 + tot_ns / 5.0 + e_e.t0; // measured trailing edge, ticks in frame
        let e_tick = end.floor() + 1.0;
        let q_e = e_tick - end;
        let fine_e = e_e.a0 + e_e.a1 * q_e + e_e.a2 * q_e * q_e;
        let hit = HitFields {
            channel: 5,
            tac: 2,
            tcoarse: 518,
            ecoarse: (e_tick as u16) % 1024,
            tfine: fine_t.round() as u16,
            efine: fine_e.round() as u16,
        };
        let stranger = HitFields {
            channel: 999,
            ..hit
        };
        let mut buf = Vec::new();
        encode_frame(&mut buf, frame, false, &[hit.encode(), stranger.encode()]);
        let mut spans = Vec::new();
        FrameScanner::new().scan(&buf, true, &mut spans);
        let mut out = HitBatch::default();
        let mut losses = KernelLosses::default();
        k.decode_block(&buf, &spans, &mut out, &mut losses);
        assert_eq!(out.len(), 1);
        assert_eq!(losses.no_tdc_calibration, 1);
        let expected_ps = ((frame * 1024) as f64 + 517.35 - t_e.t0) * 5000.0 - 123.0;
        // fine codes are rounded to integers: 1 code ~ 15 ps.
        assert!(
            (out.t_ps[0] as f64 - expected_ps).abs() < 10.0,
            "{} vs {expected_ps}",
            out.t_ps[0]
        );
        assert!(
            (out.energy_kev[0] - 511.0).abs() < 1.0,
            "{}",
            out.energy_kev[0]
        );
        assert_eq!(out.flags[0], 0);
    }
}
