//! The decode + calibrate kernel: PETsys hit words of a block of frames -> a [`HitBatch`] in
//! picoseconds and keV. Calibration tables are compiled once into a dense, cache-friendly
//! layout ([`CompiledCalibration`]); the kernel then does no map look-ups and no allocation
//! per hit.

mod compile;
mod math;

use compile::{FINE_CODES, Layout, NO_TABLE, PHASE_TABLE_BYTES, ResponsePair, TacEntry, status};
use math::{FastExp, round_to_i64};
use scandaq_core::LossReason;
use scandaq_core::{Calibration, ClockModel, HitBatch, hit_flags};
use scandaq_decoders::petsys::{FrameSpan, decode_fine};

/// Per-thread working columns of the kernel, reused from block to block (allocating them per
/// block cost page faults on every block).
#[derive(Default)]
struct Scratch {
    words: Vec<u64>,
    entry_of: Vec<u32>,
    t_frac_ps: Vec<f64>,
    energy_x: Vec<f64>,
    energy_b: Vec<f64>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Default memory for phase tables: 64 MiB, 4096 calibrated (channel, TAC)s (1024 channels
/// with all four TACs; the bench has 128 channels, a full ring tens of thousands).
pub const DEFAULT_PHASE_TABLE_BUDGET_BYTES: usize = 64 << 20;

/// Calibration compiled for the kernel: chip (`channel >> 6`) -> slot of 64 channels x 4 TACs
/// of entries (slot 0 is "no calibration", where unknown chips point), and per calibrated
/// (channel, TAC), within a memory budget, a phase table of every fine code.
#[derive(Clone, Debug)]
pub struct CompiledCalibration {
    layout: Layout,
    fast_exp: FastExp,
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
        losses.add(LossReason::NoTdcCalibration, self.no_tdc_calibration);
        losses.add(LossReason::NoEnergyCalibration, self.no_energy_calibration);
        losses.add(LossReason::NoSkewCalibration, self.no_skew_calibration);
    }

    /// Total hits dropped.
    pub fn total(&self) -> u64 {
        self.no_tdc_calibration + self.no_energy_calibration + self.no_skew_calibration
    }
}

impl CompiledCalibration {
    /// Compiles `cal` for a clock, with phase tables within
    /// [`DEFAULT_PHASE_TABLE_BUDGET_BYTES`].
    pub fn new(cal: &Calibration, clock: ClockModel) -> Self {
        Self::with_phase_table_budget(cal, clock, DEFAULT_PHASE_TABLE_BUDGET_BYTES)
    }

    /// Compiles `cal` for a clock, with phase tables for as many calibrated (channel, TAC)s
    /// as fit in `budget_bytes` (16 KiB each: both branches x 1024 fine codes x f64), in
    /// channel order. A block whose hits all have tables looks their edge fractions up; any
    /// other block computes them (two square roots and divisions per hit). Both give the
    /// same bits: the tables hold what the computation gives. 0 = no tables.
    pub fn with_phase_table_budget(
        cal: &Calibration,
        clock: ClockModel,
        budget_bytes: usize,
    ) -> Self {
        let period_ps = clock.period_ps();
        let rounded = period_ps.round();
        Self {
            layout: Layout::compile(cal, budget_bytes),
            fast_exp: FastExp::new(),
            period_ps,
            period_ps_int: ((period_ps - rounded).abs() < 1e-9).then_some(rounded as i64),
            energy_table: cal.energy.is_some(),
            skew_table: cal.skew.is_some(),
        }
    }

    /// Memory held by phase tables, bytes (the all-zero table of dropped hits not counted).
    pub fn phase_table_bytes(&self) -> usize {
        (self.layout.tables.len() - 1) * PHASE_TABLE_BYTES
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
    ///
    /// Three column passes: gather the hit words of the block into one run (with their frame
    /// and flags), split the raw fields (pure bit operations over contiguous words), then the
    /// physics per hit with the compiled constants. Hits to drop are compacted away at the
    /// end, only when there are any.
    pub fn decode_block(
        &self,
        buf: &[u8],
        spans: &[FrameSpan],
        out: &mut HitBatch,
        losses: &mut KernelLosses,
    ) {
        SCRATCH.with_borrow_mut(|scratch| {
            let start = out.len();
            BlockDecode {
                cal: self,
                out,
                start,
                scratch,
            }
            .run(buf, spans, losses)
        });
    }
}

/// One block going through the kernel: the compiled constants, the batch it appends to (from
/// row `start`) and the thread's scratch columns. Each method is one column pass.
struct BlockDecode<'a> {
    cal: &'a CompiledCalibration,
    out: &'a mut HitBatch,
    start: usize,
    scratch: &'a mut Scratch,
}

impl BlockDecode<'_> {
    /// Runs the passes in order; hits that cannot be calibrated are counted in `losses` and
    /// compacted away.
    fn run(mut self, buf: &[u8], spans: &[FrameSpan], losses: &mut KernelLosses) {
        self.gather_words(buf, spans);
        self.split_fields();
        let (any_dropped, all_tabled) = self.resolve_entries();
        if all_tabled {
            self.edge_terms_from_tables();
        } else {
            self.edge_terms_computed();
        }
        self.leading_edge_times();
        self.energies();
        if any_dropped {
            self.drop_uncalibrated(losses);
        }
    }

    /// Flags every hit of the block carries: energy in ToT ns without an energy table, no
    /// skew without a skew table.
    fn base_flags(&self) -> u16 {
        (if self.cal.energy_table {
            0
        } else {
            hit_flags::ENERGY_IS_TOT_NS
        }) | if self.cal.skew_table {
            0
        } else {
            hit_flags::NO_SKEW
        }
    }

    /// Gathers the hit words of the block into one run, with each hit's frame and flags.
    fn gather_words(&mut self, buf: &[u8], spans: &[FrameSpan]) {
        let base_flags = self.base_flags();
        let n_hint: usize = spans.iter().map(|s| s.n_hits as usize).sum();
        let words = &mut self.scratch.words;
        let out = &mut *self.out;
        words.clear();
        words.reserve(n_hint);
        for span in spans {
            let bytes = buf
                .get(span.hits_offset..span.hits_offset + 8 * span.n_hits as usize)
                .unwrap_or(&[]);
            let k = bytes.len() / 8;
            words.extend(bytes.chunks_exact(8).map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            }));
            let frame_flags = base_flags
                | if span.lossy {
                    hit_flags::FROM_LOSSY_FRAME
                } else {
                    0
                };
            out.frame.extend(std::iter::repeat_n(span.frame, k));
            out.flags.extend(std::iter::repeat_n(frame_flags, k));
        }
    }

    /// Splits the raw fields (pure bit operations over contiguous words) and sizes the
    /// calibrated columns.
    fn split_fields(&mut self) {
        let words = &self.scratch.words;
        let out = &mut *self.out;
        let n = words.len();
        out.channel.extend(words.iter().map(|&w| (w >> 42) as u32));
        out.tac.extend(words.iter().map(|&w| ((w >> 40) & 3) as u8));
        out.tcoarse
            .extend(words.iter().map(|&w| ((w >> 30) & 0x3ff) as u16));
        out.ecoarse
            .extend(words.iter().map(|&w| ((w >> 20) & 0x3ff) as u16));
        out.tfine
            .extend(words.iter().map(|&w| decode_fine(w >> 10)));
        out.efine.extend(words.iter().map(|&w| decode_fine(w)));
        out.t_ps.resize(self.start + n, 0);
        out.energy_kev.resize(self.start + n, 0.0);
    }

    /// Which entry each hit uses (no branch: unknown chips point at the "no calibration"
    /// slot); whether any hit is dropped and whether every hit's entry has a phase table.
    fn resolve_entries(&mut self) -> (bool, bool) {
        let layout = &self.cal.layout;
        let start = self.start;
        let entry_of = &mut self.scratch.entry_of;
        entry_of.clear();
        let mut any_dropped = false;
        let mut all_tabled = true;
        for (&channel, &tac) in self.out.channel[start..].iter().zip(&self.out.tac[start..]) {
            let i = layout.entry_index(channel, tac);
            let entry = &layout.entries[i as usize];
            any_dropped |= entry.status != status::OK;
            all_tabled &= entry.table != NO_TABLE;
            entry_of.push(i);
        }
        (any_dropped, all_tabled)
    }

    /// Loop 1 with the phase tables: each fine code's phase is one load.
    fn edge_terms_from_tables(&mut self) {
        let layout = &self.cal.layout;
        self.edge_terms(|_, entry, tfine, efine| {
            let table = &layout.tables[entry.table as usize];
            let q_t = table[usize::from(tfine) % FINE_CODES];
            let q_e = table[FINE_CODES + usize::from(efine) % FINE_CODES];
            let in_range =
                entry.t_codes_in_range.contains(tfine) & entry.e_codes_in_range.contains(efine);
            (q_t, q_e, !in_range)
        });
    }

    /// Loop 1 computing the phases: the stable quadratic root per branch.
    fn edge_terms_computed(&mut self) {
        let responses = &self.cal.layout.responses;
        self.edge_terms(|ei, _, tfine, efine| {
            let [q_t, q_e] = responses[ei as usize].phases([f64::from(tfine), f64::from(efine)]);
            let (q_t, q_e) = (q_t as f32, q_e as f32);
            let in_range = ResponsePair::phase_in_range(f64::from(q_t))
                & ResponsePair::phase_in_range(f64::from(q_e));
            (q_t, q_e, !in_range)
        });
    }

    /// The physics comes in three short branch-free loops so that many hits are in flight
    /// at once (one long loop body serialised on its square-root/division/exp latency chain).
    /// Loop 1: both branches' phases (clock periods, f32) and whether one is out of range,
    /// from `phases` (entry index, entry, tfine, efine), -> leading-edge fraction (ps, skew
    /// applied) and the exponent of the energy model (or ToT ns), per hit.
    #[inline(always)]
    fn edge_terms(&mut self, phases: impl Fn(u32, &TacEntry, u16, u16) -> (f32, f32, bool)) {
        let entries = &self.cal.layout.entries;
        let start = self.start;
        let period_ps = self.cal.period_ps;
        let period_ns = period_ps / 1000.0;
        let Scratch {
            words,
            entry_of,
            t_frac_ps,
            energy_x,
            energy_b,
        } = &mut *self.scratch;
        let n = words.len();
        let out = &mut *self.out;
        t_frac_ps.resize(n, 0.0);
        energy_x.resize(n, 0.0);
        energy_b.resize(n, 0.0);
        let scratch_out = t_frac_ps
            .iter_mut()
            .zip(energy_x.iter_mut())
            .zip(energy_b.iter_mut());
        let rows = entry_of
            .iter()
            .zip(&out.tcoarse[start..])
            .zip(&out.ecoarse[start..])
            .zip(&out.tfine[start..])
            .zip(&out.efine[start..])
            .zip(&mut out.flags[start..])
            .zip(scratch_out);
        for (
            (((((&ei, &tcoarse), &ecoarse), &tfine), &efine), flags),
            ((frac_out, x_out), b_out),
        ) in rows
        {
            let entry = &entries[ei as usize];
            let (q_t, q_e, out_of_range) = phases(ei, entry, tfine, efine);
            let t_frac = -f64::from(q_t) - entry.t0_t;
            let e_frac = -f64::from(q_e) - entry.t0_e;
            *flags |= u16::from(out_of_range) * hit_flags::FINE_OUT_OF_RANGE;
            *frac_out = t_frac * period_ps - entry.skew_ps;
            // Trailing edge: ecoarse wraps within the frame.
            let wrapped = i32::from(ecoarse) < i32::from(tcoarse) - 256;
            let e_ticks = i32::from(ecoarse) + 1024 * i32::from(wrapped) - i32::from(tcoarse);
            let tot_ns = (f64::from(e_ticks) + e_frac - t_frac) * period_ns;
            // inv_a_ns is 1 without an energy table, so x is then the ToT in ns.
            *x_out = tot_ns * entry.inv_a_ns;
            *b_out = entry.b_kev;
        }
    }

    /// Loop 2: leading-edge time, whole ticks exactly in integers plus the rounded fraction.
    fn leading_edge_times(&mut self) {
        let cal = self.cal;
        let start = self.start;
        let out = &mut *self.out;
        let times = out.t_ps[start..]
            .iter_mut()
            .zip(&out.frame[start..])
            .zip(&out.tcoarse[start..])
            .zip(self.scratch.t_frac_ps.iter());
        for (((t, &frame), &tcoarse), &frac) in times {
            *t = cal.ticks_to_ps(((frame as i64) << 10) + i64::from(tcoarse)) + round_to_i64(frac);
        }
    }

    /// Loop 3: energy, E = b (exp(ToT / a) - 1), or ToT ns without an energy table.
    fn energies(&mut self) {
        let energies = self.out.energy_kev[self.start..]
            .iter_mut()
            .zip(self.scratch.energy_x.iter())
            .zip(self.scratch.energy_b.iter());
        if self.cal.energy_table {
            let fast_exp = &self.cal.fast_exp;
            for ((e, &x), &b) in energies {
                *e = (b * (fast_exp.exp(x) - 1.0)) as f32;
            }
        } else {
            for ((e, &x), _) in energies {
                *e = x as f32;
            }
        }
    }

    /// Counts the hits that cannot be calibrated by reason and compacts them away.
    fn drop_uncalibrated(&mut self, losses: &mut KernelLosses) {
        let entry_of = &self.scratch.entry_of;
        let mut drop = vec![0u8; entry_of.len()];
        for (d, &ei) in drop.iter_mut().zip(entry_of.iter()) {
            *d = self.cal.layout.entries[ei as usize].status;
        }
        for &r in &drop {
            match r {
                status::NO_TDC => losses.no_tdc_calibration += 1,
                status::NO_ENERGY => losses.no_energy_calibration += 1,
                status::NO_SKEW => losses.no_skew_calibration += 1,
                _ => {}
            }
        }
        self.out.retain_from(self.start, |i| drop[i] == 0);
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

#[cfg(test)]
mod table_tests {
    use super::*;
    use scandaq_core::calib::{Branch, EnergyEntry, TdcEntry};
    use scandaq_core::{EnergyTable, SkewTable, TdcTable};
    use scandaq_decoders::FrameScanner;
    use scandaq_decoders::petsys::{HitFields, encode_frame};

    /// Channels 0..6 on chip 0 and 64..70 on chip 1, with curved responses of both signs,
    /// a linear one and one TAC without a branch-E entry (dropped).
    fn calibration() -> Calibration {
        let mut tdc = TdcTable::default();
        let mut energy = EnergyTable::default();
        let mut skew = SkewTable::default();
        for channel in (0..6).chain(64..70) {
            for tac in 0..4u8 {
                let k = f64::from(channel % 7) + f64::from(tac) * 0.3;
                let a2 = [-12.0, 9.0, 0.0][(channel as usize + usize::from(tac)) % 3];
                let entry = |t0: f64, a0: f64| TdcEntry {
                    t0,
                    a0,
                    a1: 300.0 + 7.0 * k,
                    a2,
                };
                tdc.entries
                    .insert((channel, tac, Branch::T), entry(0.1 * k - 0.3, 80.0 + k));
                if (channel, tac) != (3, 2) {
                    tdc.entries
                        .insert((channel, tac, Branch::E), entry(0.25 - 0.05 * k, 60.0 + k));
                }
            }
            let a_ns = 70.0 + f64::from(channel % 5);
            energy
                .entries
                .insert(channel, EnergyEntry { a_ns, b_kev: 140.0 });
            skew.offsets_ps
                .insert(channel, 37.5 * f64::from(channel) - 300.0);
        }
        Calibration {
            tdc,
            energy: Some(energy),
            skew: Some(skew),
            ..Default::default()
        }
    }

    /// Frames of hits over every fine code of both branches, on the calibrated channels (and
    /// some uncalibrated ones), as blocks of spans.
    fn frames(channels: &[u32]) -> (Vec<u8>, Vec<FrameSpan>) {
        let mut state = 12345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let mut buf = Vec::new();
        for frame in 0..512u64 {
            let words: Vec<u64> = (0..8u32)
                .map(|k| {
                    let code = (frame as u32 * 8 + k) % 1024;
                    let tcoarse = (next() % 1024) as u16;
                    HitFields {
                        channel: channels[next() as usize % channels.len()],
                        tac: (next() % 4) as u8,
                        tcoarse,
                        ecoarse: (tcoarse + 3 + (next() % 40) as u16) % 1024,
                        tfine: code as u16,
                        efine: (1023 - code) as u16,
                    }
                    .encode()
                })
                .collect();
            encode_frame(&mut buf, 7_000_000 + frame, false, &words);
        }
        let mut spans = Vec::new();
        FrameScanner::new().scan(&buf, true, &mut spans);
        (buf, spans)
    }

    fn decode(
        k: &CompiledCalibration,
        buf: &[u8],
        spans: &[FrameSpan],
    ) -> (HitBatch, KernelLosses) {
        let mut out = HitBatch::default();
        let mut losses = KernelLosses::default();
        for block in spans.chunks(64) {
            k.decode_block(buf, block, &mut out, &mut losses);
        }
        (out, losses)
    }

    #[test]
    fn phase_tables_and_the_computed_path_give_the_same_bits() {
        let cal = calibration();
        let clock = ClockModel::TOFPET2_DEFAULT;
        let all = CompiledCalibration::new(&cal, clock);
        let none = CompiledCalibration::with_phase_table_budget(&cal, clock, 0);
        // Tables for the first 10 (channel, TAC)s only: channels 0 and 1, two TACs of channel 2.
        let some =
            CompiledCalibration::with_phase_table_budget(&cal, clock, 10 * PHASE_TABLE_BYTES);
        // 47 entries with both branches (one lacks E).
        assert_eq!(all.phase_table_bytes(), 47 * PHASE_TABLE_BYTES);
        assert_eq!(none.phase_table_bytes(), 0);
        assert_eq!(some.phase_table_bytes(), 10 * PHASE_TABLE_BYTES);

        let channels: Vec<u32> = (0..6).chain(64..70).chain([6, 200, 1 << 20]).collect();
        for channels in [&channels[..], &[0, 1], &[0, 1, 2]] {
            let (buf, spans) = frames(channels);
            let (reference, reference_losses) = decode(&none, &buf, &spans);
            assert!(reference.len() > 2000, "{}", reference.len());
            let out_of_range = reference
                .flags
                .iter()
                .filter(|&&f| f & hit_flags::FINE_OUT_OF_RANGE != 0)
                .count();
            // Both kinds of hits are there (phase in range and not).
            assert!(
                out_of_range > 100 && out_of_range + 100 < reference.len(),
                "{out_of_range} of {}",
                reference.len()
            );
            for k in [&all, &some] {
                let (out, losses) = decode(k, &buf, &spans);
                assert_eq!(losses, reference_losses);
                assert_eq!(out.t_ps, reference.t_ps);
                assert_eq!(out.flags, reference.flags);
                assert_eq!(out.channel, reference.channel);
                let bits =
                    |b: &HitBatch| b.energy_kev.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&out), bits(&reference));
            }
        }
    }
}
