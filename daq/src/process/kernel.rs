//! The decode + calibrate kernel: PETsys hit words of a block of frames -> a [`HitBatch`] in
//! picoseconds and keV. Calibration tables are compiled once into a dense, cache-friendly
//! layout ([`CompiledCalibration`]); the kernel then does no map look-ups and no allocation
//! per hit.

use scandaq_core::LossReason;
use scandaq_core::calib::Branch;
use scandaq_core::{Calibration, ClockModel, HitBatch, hit_flags};
use scandaq_decoders::petsys::{FrameSpan, decode_fine};

const NO_SLOT: u32 = u32::MAX;
const CHIPS: usize = 1 << 16;

/// Rounds half away from zero with a truncating cast: `f64::round` is a libm call on
/// baseline x86-64 (no SSE4.1), this is two instructions.
#[inline(always)]
fn round_to_i64(x: f64) -> i64 {
    (x + f64::copysign(0.5, x)) as i64
}

/// `exp(x)` inlined for the kernel (glibc's `exp` was a third of the kernel's time as a call):
/// `2^k * exp(r)` with `k = round(x / ln 2)`, `|r| <= ln 2 / 2` and a degree-8 Taylor polynomial
/// for `exp(r)`; relative error below 3e-10, far below the f32 the energy is stored in.
/// Inputs are clamped to [-700, 700].
#[inline(always)]
fn exp_inline(x: f64) -> f64 {
    const LN2: f64 = std::f64::consts::LN_2;
    let x = x.clamp(-700.0, 700.0);
    let k = round_to_i64(x * std::f64::consts::LOG2_E);
    let r = x - k as f64 * LN2;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0
                            + r * (1.0 / 720.0 + r * (1.0 / 5040.0 + r * (1.0 / 40320.0))))))));
    p * f64::from_bits(((k + 1023) as u64) << 52)
}

/// One TAC branch, with the constants of the phase inversion precomputed.
#[derive(Clone, Copy, Debug, Default)]
struct TacBranch {
    t0: f64,
    a0: f64,
    a1: f64,
    a1_sq: f64,
    four_a2: f64,
}

impl TacBranch {
    /// Harmless constants for entries whose hits are dropped (keeps the loop branch-free).
    const INERT: Self = Self {
        t0: 0.0,
        a0: 0.0,
        a1: 1.0,
        a1_sq: 1.0,
        four_a2: 0.0,
    };

    /// Phase `q` of a fine code: the stable root of `a0 + a1 q + a2 q^2 = fine`.
    #[inline(always)]
    fn phase(&self, fine: f64) -> f64 {
        let d = fine - self.a0;
        let disc = (self.a1_sq + self.four_a2 * d).max(0.0);
        2.0 * d / (self.a1 + disc.sqrt())
    }
}

/// Why an entry's hits are dropped (0 = calibrated).
mod status {
    pub const OK: u8 = 0;
    pub const NO_TDC: u8 = 1;
    pub const NO_ENERGY: u8 = 2;
    pub const NO_SKEW: u8 = 3;
}

/// Everything the kernel needs for hits of one (channel, TAC): both branches, the channel's
/// energy constants and skew, and whether its hits can be calibrated at all.
#[derive(Clone, Copy, Debug)]
struct TacEntry {
    t: TacBranch,
    e: TacBranch,
    skew_ps: f64,
    inv_a_ns: f64,
    b_kev: f64,
    status: u8,
}

impl TacEntry {
    const MISSING: Self = Self {
        t: TacBranch::INERT,
        e: TacBranch::INERT,
        skew_ps: 0.0,
        inv_a_ns: 0.0,
        b_kev: 0.0,
        status: status::NO_TDC,
    };
}

/// Per-thread working columns of the kernel, reused from block to block (allocating them per
/// block cost page faults on every block).
#[derive(Default)]
struct Scratch {
    words: Vec<u64>,
    // The block's raw fields; copied into the batch only when its raw columns are asked for.
    raw: RawFields,
    entry_of: Vec<u32>,
    t_frac_ps: Vec<f64>,
    energy_x: Vec<f64>,
    energy_b: Vec<f64>,
}

/// The raw fields of a block's hits, one column each (the `HitBatch` raw columns).
#[derive(Default)]
struct RawFields {
    frame: Vec<u64>,
    tcoarse: Vec<u16>,
    ecoarse: Vec<u16>,
    tfine: Vec<u16>,
    efine: Vec<u16>,
    tac: Vec<u8>,
}

impl RawFields {
    fn clear(&mut self) {
        self.frame.clear();
        self.tcoarse.clear();
        self.ecoarse.clear();
        self.tfine.clear();
        self.efine.clear();
        self.tac.clear();
    }

    /// Appends every column to the batch's raw columns.
    fn append_to(&self, out: &mut HitBatch) {
        out.frame.extend_from_slice(&self.frame);
        out.tcoarse.extend_from_slice(&self.tcoarse);
        out.ecoarse.extend_from_slice(&self.ecoarse);
        out.tfine.extend_from_slice(&self.tfine);
        out.efine.extend_from_slice(&self.efine);
        out.tac.extend_from_slice(&self.tac);
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Calibration compiled for the kernel: chip (`channel >> 6`) -> slot of 64 channels x 4 TACs
/// of [`TacEntry`]. Entry 0 is the "no calibration" entry that unknown chips point at.
#[derive(Clone, Debug)]
pub struct CompiledCalibration {
    chip_slot: Vec<u32>,
    entries: Vec<TacEntry>,
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
    /// Compiles `cal` for a clock.
    pub fn new(cal: &Calibration, clock: ClockModel) -> Self {
        let mut chip_slot = vec![NO_SLOT; CHIPS];
        let mut entries: Vec<TacEntry> = vec![TacEntry::MISSING];
        // Per entry: which branches have TDC constants.
        let mut have: Vec<[bool; 2]> = vec![[false; 2]];
        let mut index_of = |channel: u32,
                            tac: u8,
                            entries: &mut Vec<TacEntry>,
                            have: &mut Vec<[bool; 2]>|
         -> usize {
            let chip = (channel >> 6) as usize;
            if chip_slot[chip] == NO_SLOT {
                chip_slot[chip] = ((entries.len() - 1) / 256) as u32;
                entries.resize(entries.len() + 256, TacEntry::MISSING);
                have.resize(have.len() + 256, [false; 2]);
            }
            1 + (chip_slot[chip] as usize * 64 + (channel & 63) as usize) * 4 + usize::from(tac & 3)
        };
        for (&(channel, tac, branch), e) in &cal.tdc.entries {
            let i = index_of(channel, tac, &mut entries, &mut have);
            let b = TacBranch {
                t0: e.t0,
                a0: e.a0,
                a1: e.a1,
                a1_sq: e.a1 * e.a1,
                four_a2: 4.0 * e.a2,
            };
            match branch {
                Branch::T => entries[i].t = b,
                Branch::E => entries[i].e = b,
            }
            have[i][branch as usize] = true;
        }
        for (i, entry) in entries.iter_mut().enumerate().skip(1) {
            let [has_t, has_e] = have[i];
            if !(has_t && has_e) {
                *entry = TacEntry::MISSING;
            } else {
                entry.status = status::OK;
            }
        }
        // Channel-level constants go into each of the channel's TAC entries.
        let tac_entries = |channel: u32| -> Option<std::ops::Range<usize>> {
            let slot = *chip_slot
                .get((channel >> 6) as usize)
                .filter(|s| **s != NO_SLOT)?;
            let first = 1 + (slot as usize * 64 + (channel & 63) as usize) * 4;
            Some(first..first + 4)
        };
        if cal.energy.is_none() {
            for entry in entries.iter_mut() {
                entry.inv_a_ns = 1.0;
            }
        }
        if let Some(energy) = &cal.energy {
            for entry in entries
                .iter_mut()
                .skip(1)
                .filter(|e| e.status == status::OK)
            {
                entry.status = status::NO_ENERGY;
            }
            for (&channel, e) in &energy.entries {
                for entry in tac_entries(channel).map_or(&mut [][..], |r| &mut entries[r]) {
                    if entry.status == status::NO_ENERGY {
                        entry.inv_a_ns = 1.0 / e.a_ns;
                        entry.b_kev = e.b_kev;
                        entry.status = status::OK;
                    }
                }
            }
        }
        if let Some(skew) = &cal.skew {
            let mut has_skew = vec![false; entries.len()];
            for (&channel, &t) in &skew.offsets_ps {
                if let Some(range) = tac_entries(channel) {
                    for i in range {
                        entries[i].skew_ps = t;
                        has_skew[i] = true;
                    }
                }
            }
            for (entry, has) in entries.iter_mut().zip(has_skew) {
                if entry.status == status::OK && !has {
                    entry.status = status::NO_SKEW;
                }
            }
        }
        let period_ps = clock.period_ps();
        let rounded = period_ps.round();
        Self {
            chip_slot,
            entries,
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
        self.decode_block_into(buf, spans, out, losses, true);
    }

    /// [`CompiledCalibration::decode_block`] without the raw columns (left as they are in
    /// `out`): the physics columns only, as a replay without `--raw-columns` decodes.
    pub fn decode_block_physics(
        &self,
        buf: &[u8],
        spans: &[FrameSpan],
        out: &mut HitBatch,
        losses: &mut KernelLosses,
    ) {
        self.decode_block_into(buf, spans, out, losses, false);
    }

    /// The decode of both: with or without the `raw` columns.
    fn decode_block_into(
        &self,
        buf: &[u8],
        spans: &[FrameSpan],
        out: &mut HitBatch,
        losses: &mut KernelLosses,
        raw: bool,
    ) {
        self.decode_block_then(buf, spans, out, losses, raw, |_, _| {});
    }

    /// Decodes the block into `out` with the thread's scratch columns, then hands `then` the
    /// batch and the scratch (still borrowed: its frame column is the decoded hits' frames).
    fn decode_block_then(
        &self,
        buf: &[u8],
        spans: &[FrameSpan],
        out: &mut HitBatch,
        losses: &mut KernelLosses,
        raw: bool,
        then: impl FnOnce(&mut HitBatch, &Scratch),
    ) {
        SCRATCH.with_borrow_mut(|scratch| {
            let start = out.len();
            BlockDecode {
                cal: self,
                out: &mut *out,
                start,
                raw,
                scratch: &mut *scratch,
            }
            .run(buf, spans, losses);
            then(out, scratch);
        });
    }

    /// [`CompiledCalibration::decode_block`] into an empty `out`, then sorted by time
    /// ([`HitBatch::sort_by_time`]); the raw columns are filled only when `raw` (otherwise
    /// they stay empty and the hits never pass through them: 17 of a hit's 35 bytes).
    pub fn decode_block_sorted(
        &self,
        buf: &[u8],
        spans: &[FrameSpan],
        out: &mut HitBatch,
        losses: &mut KernelLosses,
        raw: bool,
    ) {
        // The frames (kept in the scratch, compacted like the batch) make the sort short.
        self.decode_block_then(buf, spans, out, losses, raw, |out, scratch| {
            out.sort_by_time_in_frames(&scratch.raw.frame)
        });
    }
}

/// One block going through the kernel: the compiled constants, the batch it appends to (from
/// row `start`) and the thread's scratch columns. Each method is one column pass.
struct BlockDecode<'a> {
    cal: &'a CompiledCalibration,
    out: &'a mut HitBatch,
    start: usize,
    /// Copy the raw fields into the batch's raw columns.
    raw: bool,
    scratch: &'a mut Scratch,
}

impl BlockDecode<'_> {
    /// Runs the passes in order; hits that cannot be calibrated are counted in `losses` and
    /// compacted away.
    fn run(mut self, buf: &[u8], spans: &[FrameSpan], losses: &mut KernelLosses) {
        self.gather_words(buf, spans);
        self.split_fields();
        let any_dropped = self.resolve_entries();
        self.edge_terms();
        self.leading_edge_times();
        self.energies();
        if self.raw {
            self.scratch.raw.append_to(self.out);
        }
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
        let raw = &mut self.scratch.raw;
        let out = &mut *self.out;
        words.clear();
        raw.clear();
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
            raw.frame.extend(std::iter::repeat_n(span.frame, k));
            out.flags.extend(std::iter::repeat_n(frame_flags, k));
        }
    }

    /// Splits the raw fields (pure bit operations over contiguous words) and sizes the
    /// calibrated columns.
    fn split_fields(&mut self) {
        let words = &self.scratch.words;
        let raw = &mut self.scratch.raw;
        let out = &mut *self.out;
        let n = words.len();
        out.channel.extend(words.iter().map(|&w| (w >> 42) as u32));
        raw.tac.extend(words.iter().map(|&w| ((w >> 40) & 3) as u8));
        raw.tcoarse
            .extend(words.iter().map(|&w| ((w >> 30) & 0x3ff) as u16));
        raw.ecoarse
            .extend(words.iter().map(|&w| ((w >> 20) & 0x3ff) as u16));
        raw.tfine
            .extend(words.iter().map(|&w| decode_fine(w >> 10)));
        raw.efine.extend(words.iter().map(|&w| decode_fine(w)));
        out.t_ps.resize(self.start + n, 0);
        out.energy_kev.resize(self.start + n, 0.0);
    }

    /// Which entry each hit uses (entry 0 = no calibration); true when any hit is dropped.
    fn resolve_entries(&mut self) -> bool {
        let cal = self.cal;
        let start = self.start;
        let entry_of = &mut self.scratch.entry_of;
        entry_of.clear();
        let mut any_dropped = false;
        for (&channel, &tac) in self.out.channel[start..].iter().zip(&self.scratch.raw.tac) {
            let slot = cal.chip_slot[(channel >> 6) as usize];
            let i = if slot == NO_SLOT {
                0
            } else {
                1 + (slot * 64 + (channel & 63)) * 4 + u32::from(tac)
            };
            any_dropped |= cal.entries[i as usize].status != status::OK;
            entry_of.push(i);
        }
        any_dropped
    }

    /// The physics comes in three short branch-free loops so that many hits are in flight
    /// at once (one long loop body serialised on its square-root/division/exp latency chain).
    /// Loop 1: TDC phases -> leading-edge fraction (ps, skew applied) and the exponent of the
    /// energy model (or ToT ns), per hit.
    fn edge_terms(&mut self) {
        let cal = self.cal;
        let start = self.start;
        let period_ps = cal.period_ps;
        let period_ns = period_ps / 1000.0;
        let Scratch {
            words,
            raw,
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
            .zip(&raw.tcoarse)
            .zip(&raw.ecoarse)
            .zip(&raw.tfine)
            .zip(&raw.efine)
            .zip(&mut out.flags[start..])
            .zip(scratch_out);
        for (
            (((((&ei, &tcoarse), &ecoarse), &tfine), &efine), flags),
            ((frac_out, x_out), b_out),
        ) in rows
        {
            let entry = &cal.entries[ei as usize];
            let q_t = entry.t.phase(f64::from(tfine));
            let q_e = entry.e.phase(f64::from(efine));
            let out_of_range = !(-0.5..=1.5).contains(&q_t) | !(-0.5..=1.5).contains(&q_e);
            *flags |= u16::from(out_of_range) * hit_flags::FINE_OUT_OF_RANGE;
            let t_frac = -q_t - entry.t.t0;
            *frac_out = t_frac * period_ps - entry.skew_ps;
            // Trailing edge: ecoarse wraps within the frame.
            let wrapped = i32::from(ecoarse) < i32::from(tcoarse) - 256;
            let e_ticks = i32::from(ecoarse) + 1024 * i32::from(wrapped) - i32::from(tcoarse);
            let tot_ns = (f64::from(e_ticks) + (-q_e - entry.e.t0) - t_frac) * period_ns;
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
            .zip(&self.scratch.raw.frame)
            .zip(&self.scratch.raw.tcoarse)
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
            for ((e, &x), &b) in energies {
                *e = (b * (exp_inline(x) - 1.0)) as f32;
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
            *d = self.cal.entries[ei as usize].status;
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
        // The scratch frames go on to order the batch (decode_block_sorted).
        let mut k = 0;
        self.scratch.raw.frame.retain(|_| {
            k += 1;
            drop[k - 1] == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scandaq_core::calib::{EnergyEntry, TdcEntry};
    use scandaq_core::{EnergyTable, SkewTable, TdcTable};
    use scandaq_decoders::FrameScanner;
    use scandaq_decoders::petsys::{HitFields, encode_frame};

    #[test]
    fn inline_exp_matches_std() {
        let mut x = -50.0;
        while x < 50.0 {
            let (a, b) = (exp_inline(x), x.exp());
            assert!(((a - b) / b).abs() < 3e-10, "x={x}: {a} vs {b}");
            x += 0.00731;
        }
        assert_eq!(exp_inline(0.0), 1.0);
    }

    /// `batch` sorted by time, keeping its raw columns only when `raw` (what
    /// `decode_block_sorted` gives).
    fn sorted_as_decoded(mut batch: HitBatch, raw: bool) -> HitBatch {
        batch.sort_by_time();
        if raw {
            return batch;
        }
        HitBatch {
            t_ps: batch.t_ps,
            channel: batch.channel,
            energy_kev: batch.energy_kev,
            flags: batch.flags,
            ..HitBatch::default()
        }
    }

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
        // Without the raw columns, and sorted: the same physics columns as decode_block and
        // sort_by_time, on many frames of hits in random order, some dropped (channel 999).
        let mut many = Vec::new();
        let mut r = 3u64;
        for f in 0..60u64 {
            let words: Vec<u64> = (0..9)
                .map(|_| {
                    r = r
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    HitFields {
                        channel: if (r >> 60) < 3 { 999 } else { 5 },
                        tac: ((r >> 50) % 4) as u8,
                        tcoarse: ((r >> 20) % 1024) as u16,
                        ecoarse: ((r >> 30) % 1024) as u16,
                        tfine: 100 + ((r >> 40) % 300) as u16,
                        ..hit
                    }
                    .encode()
                })
                .collect();
            encode_frame(&mut many, frame + f, f % 7 == 3, &words);
        }
        let mut many_spans = Vec::new();
        FrameScanner::new().scan(&many, true, &mut many_spans);
        let (mut plain, mut plain_losses) = (HitBatch::default(), KernelLosses::default());
        k.decode_block(&many, &many_spans, &mut plain, &mut plain_losses);
        assert!(plain_losses.no_tdc_calibration > 0 && !plain.is_time_ordered());
        for raw in [false, true] {
            let (mut sorted, mut losses) = (HitBatch::default(), KernelLosses::default());
            k.decode_block_sorted(&many, &many_spans, &mut sorted, &mut losses, raw);
            assert_eq!(losses.no_tdc_calibration, plain_losses.no_tdc_calibration);
            assert_eq!(sorted, sorted_as_decoded(plain.clone(), raw), "raw {raw}");
        }
        for raw in [false, true] {
            let mut sorted = HitBatch::default();
            k.decode_block_sorted(&buf, &spans, &mut sorted, &mut KernelLosses::default(), raw);
            assert_eq!(sorted, sorted_as_decoded(out.clone(), raw), "raw {raw}");
        }
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
