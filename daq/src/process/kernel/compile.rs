//! Compiling calibration tables into the kernel's dense layout: per (channel, TAC) an entry
//! with both TDC branches, the channel's energy constants and skew and a drop status, found
//! from the channel with two array look-ups; and, within a memory budget, a phase table per
//! calibrated (channel, TAC) giving each fine code's edge fraction directly. No imports from
//! the rest of the kernel.

use scandaq_core::Calibration;
use scandaq_core::calib::Branch;

/// Fine codes are 10 bits.
pub(super) const FINE_CODES: usize = 1024;

/// Bytes of one (channel, TAC)'s phase table (both branches, every fine code, f32).
pub(super) const PHASE_TABLE_BYTES: usize = std::mem::size_of::<PhaseTable>();

/// One (channel, TAC)'s phase table: the phase `q(code)` in clock periods for every fine code,
/// branch T at `code`, branch E at `FINE_CODES + code`, as f32 (within 1.2e-7 periods, 0.0006
/// ps at 5 ns, for |q| < 2: f64 tables were twice the cache footprint and slower than computing).
/// The values are [`TacBranch::phase32`] itself, so a hit gets the same bits through the table
/// as without it.
pub(super) type PhaseTable = [f32; 2 * FINE_CODES];

/// [`TacEntry::table`] of an entry whose hits go through the computed path.
pub(super) const NO_TABLE: u32 = u32::MAX;

const CHIPS: usize = 1 << 16;
/// Entries per chip slot: 64 channels x 4 TACs.
const SLOT: usize = 256;

/// The responses of a (channel, TAC)'s two branches with the constants of the phase
/// inversion precomputed, lane 0 = branch T, lane 1 = branch E (its `t0`s are in the
/// [`TacEntry`]). Stored as pairs so that both phases of a hit take one two-lane square root
/// and one two-lane division (`sqrtpd`, `divpd` on baseline x86-64).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ResponsePair {
    a0: [f64; 2],
    a1: [f64; 2],
    a1_sq: [f64; 2],
    four_a2: [f64; 2],
}

impl ResponsePair {
    /// Harmless constants for entries whose hits are dropped (keeps the loop branch-free).
    const INERT: Self = Self {
        a0: [0.0; 2],
        a1: [1.0; 2],
        a1_sq: [1.0; 2],
        four_a2: [0.0; 2],
    };

    /// Phases `q` of the fine codes of both branches: per lane the stable root of
    /// `a0 + a1 q + a2 q^2 = fine`, `q = 2d / (a1 + sqrt(a1^2 + 4 a2 d))` with `d = fine - a0`
    /// (a negative discriminant clamped to 0). The same operations lane by lane as the
    /// scalar root, so the bits are the same.
    #[inline(always)]
    pub(super) fn phases(&self, fine: [f64; 2]) -> [f64; 2] {
        let mut q = [0.0; 2];
        for lane in 0..2 {
            let d = fine[lane] - self.a0[lane];
            let disc = self.a1_sq[lane] + self.four_a2[lane] * d;
            // `max(disc, 0)` written as a select, which vectorises to `maxpd`.
            let disc = if disc > 0.0 { disc } else { 0.0 };
            q[lane] = 2.0 * d / (self.a1[lane] + disc.sqrt());
        }
        q
    }

    /// True when a phase is in the valid range (outside it a hit is flagged).
    #[inline(always)]
    pub(super) fn phase_in_range(q: f64) -> bool {
        (-0.5..=1.5).contains(&q)
    }
}

/// Fine codes `lo .. lo + width` (the codes whose phase is in range; an interval because
/// the phase rises with the code).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct CodeRange {
    lo: u16,
    width: u16,
}

impl CodeRange {
    #[inline(always)]
    pub(super) fn contains(self, code: u16) -> bool {
        code.wrapping_sub(self.lo) < self.width
    }
}

/// Why an entry's hits are dropped (0 = calibrated).
pub(super) mod status {
    pub const OK: u8 = 0;
    pub const NO_TDC: u8 = 1;
    pub const NO_ENERGY: u8 = 2;
    pub const NO_SKEW: u8 = 3;
}

/// Everything the kernel needs for hits of one (channel, TAC) besides the responses (in
/// [`Layout::responses`], read only without tables): both branches' `t0`, the channel's energy
/// constants and skew, its phase table (and the fine codes in range) if it has one, and
/// whether its hits can be calibrated at all. 56 bytes: the bench's 512 fit in L1.
#[derive(Clone, Copy, Debug)]
pub(super) struct TacEntry {
    pub(super) t0_t: f64,
    pub(super) t0_e: f64,
    pub(super) skew_ps: f64,
    pub(super) inv_a_ns: f64,
    pub(super) b_kev: f64,
    /// Index into [`Layout::tables`]; table 0 (all zeros) for dropped entries, [`NO_TABLE`]
    /// for calibrated entries beyond the budget.
    pub(super) table: u32,
    pub(super) t_codes_in_range: CodeRange,
    pub(super) e_codes_in_range: CodeRange,
    pub(super) status: u8,
}

impl TacEntry {
    const MISSING: Self = Self {
        t0_t: 0.0,
        t0_e: 0.0,
        skew_ps: 0.0,
        inv_a_ns: 0.0,
        b_kev: 0.0,
        table: 0,
        t_codes_in_range: CodeRange { lo: 0, width: 0 },
        e_codes_in_range: CodeRange { lo: 0, width: 0 },
        status: status::NO_TDC,
    };
}

/// The compiled layout. Entry `chip_base[channel >> 6] + 4 (channel & 63) + tac` holds the
/// constants of (channel, TAC); chips without calibration point at slot 0, whose 256 entries
/// are all "no calibration", so finding the entry has no branch.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    pub(super) chip_base: Vec<u32>,
    pub(super) entries: Vec<TacEntry>,
    /// Branch T and E responses, by entry index.
    pub(super) responses: Vec<ResponsePair>,
    /// Table 0 is all zeros (for dropped hits); then one per tabled entry.
    pub(super) tables: Vec<PhaseTable>,
}

impl Layout {
    /// Index of the entry of (channel, tac).
    #[inline(always)]
    pub(super) fn entry_index(&self, channel: u32, tac: u8) -> u32 {
        self.chip_base[(channel >> 6) as usize] + (channel & 63) * 4 + u32::from(tac & 3)
    }

    /// Compiles `cal`, with phase tables for at most `table_budget_bytes` of calibrated
    /// (channel, TAC)s, in channel order.
    pub(super) fn compile(cal: &Calibration, table_budget_bytes: usize) -> Self {
        let mut layout = Self {
            chip_base: vec![0; CHIPS],
            entries: vec![TacEntry::MISSING; SLOT],
            responses: vec![ResponsePair::INERT; SLOT],
            tables: vec![[0.0; 2 * FINE_CODES]],
        };
        layout.add_tdc(cal);
        layout.add_energy(cal);
        layout.add_skew(cal);
        layout.add_phase_tables(table_budget_bytes / PHASE_TABLE_BYTES);
        layout
    }

    /// TDC constants; an entry is calibrated when it has both branches.
    fn add_tdc(&mut self, cal: &Calibration) {
        let mut have: Vec<[bool; 2]> = vec![[false; 2]; SLOT];
        for (&(channel, tac, branch), e) in &cal.tdc.entries {
            let chip = (channel >> 6) as usize;
            if self.chip_base[chip] == 0 {
                self.chip_base[chip] = self.entries.len() as u32;
                self.entries
                    .resize(self.entries.len() + SLOT, TacEntry::MISSING);
                self.responses
                    .resize(self.responses.len() + SLOT, ResponsePair::INERT);
                have.resize(have.len() + SLOT, [false; 2]);
            }
            let i = self.entry_index(channel, tac) as usize;
            let lane = branch as usize;
            let r = &mut self.responses[i];
            r.a0[lane] = e.a0;
            r.a1[lane] = e.a1;
            r.a1_sq[lane] = e.a1 * e.a1;
            r.four_a2[lane] = 4.0 * e.a2;
            match branch {
                Branch::T => self.entries[i].t0_t = e.t0,
                Branch::E => self.entries[i].t0_e = e.t0,
            }
            have[i][branch as usize] = true;
        }
        let rows = self.entries.iter_mut().zip(&mut self.responses).zip(have);
        for ((entry, response), [has_t, has_e]) in rows {
            if has_t && has_e {
                entry.status = status::OK;
            } else {
                *entry = TacEntry::MISSING;
                *response = ResponsePair::INERT;
            }
        }
    }

    /// The entries of a channel's 4 TACs, if its chip has any calibration.
    fn tac_entries(&mut self, channel: u32) -> &mut [TacEntry] {
        let base = self.chip_base[(channel >> 6) as usize];
        if base == 0 {
            return &mut [];
        }
        let first = self.entry_index(channel, 0) as usize;
        &mut self.entries[first..first + 4]
    }

    /// Energy constants into each of the channel's TAC entries (`inv_a_ns` = 1 without an
    /// energy table, so the kernel's exponent is then the ToT in ns).
    fn add_energy(&mut self, cal: &Calibration) {
        let Some(energy) = &cal.energy else {
            for entry in &mut self.entries {
                entry.inv_a_ns = 1.0;
            }
            return;
        };
        for entry in self.entries.iter_mut().filter(|e| e.status == status::OK) {
            entry.status = status::NO_ENERGY;
        }
        for (&channel, e) in &energy.entries {
            for entry in self.tac_entries(channel) {
                if entry.status == status::NO_ENERGY {
                    entry.inv_a_ns = 1.0 / e.a_ns;
                    entry.b_kev = e.b_kev;
                    entry.status = status::OK;
                }
            }
        }
    }

    /// Skew into each of the channel's TAC entries.
    fn add_skew(&mut self, cal: &Calibration) {
        let Some(skew) = &cal.skew else { return };
        let mut has_skew = vec![false; self.entries.len()];
        for (&channel, &t) in &skew.offsets_ps {
            if self.chip_base[(channel >> 6) as usize] == 0 {
                continue;
            }
            let first = self.entry_index(channel, 0) as usize;
            for entry in &mut self.entries[first..first + 4] {
                entry.skew_ps = t;
            }
            has_skew[first..first + 4].fill(true);
        }
        for (entry, has) in self.entries.iter_mut().zip(has_skew) {
            if entry.status == status::OK && !has {
                entry.status = status::NO_SKEW;
            }
        }
    }

    /// Phase tables for the first `max_tables` calibrated entries; the rest keep
    /// [`NO_TABLE`] (computed path). An entry whose in-range codes are not one interval
    /// (impossible for a valid response, but the table format allows anything finite) keeps
    /// the computed path too.
    fn add_phase_tables(&mut self, max_tables: usize) {
        for (entry, response) in self.entries.iter_mut().zip(&self.responses) {
            if entry.status != status::OK {
                continue;
            }
            entry.table = NO_TABLE;
            if self.tables.len() > max_tables {
                continue;
            }
            let mut table = [0.0; 2 * FINE_CODES];
            for code in 0..FINE_CODES {
                let [q_t, q_e] = response.phases([code as f64; 2]);
                table[code] = q_t as f32;
                table[FINE_CODES + code] = q_e as f32;
            }
            let ranges = [0, FINE_CODES].map(|at| codes_in_range(&table[at..at + FINE_CODES]));
            if let [Some(t), Some(e)] = ranges {
                entry.t_codes_in_range = t;
                entry.e_codes_in_range = e;
                entry.table = self.tables.len() as u32;
                self.tables.push(table);
            }
        }
    }
}

/// The fine codes whose phase (`phases[code]`) is in range, if they form one interval.
fn codes_in_range(phases: &[f32]) -> Option<CodeRange> {
    let inside: Vec<bool> = phases
        .iter()
        .map(|&q| ResponsePair::phase_in_range(f64::from(q)))
        .collect();
    let Some(lo) = inside.iter().position(|&i| i) else {
        return Some(CodeRange::default());
    };
    let width = inside[lo..].iter().take_while(|&&i| i).count();
    let rest_outside = inside[lo + width..].iter().all(|&i| !i);
    rest_outside.then_some(CodeRange {
        lo: lo as u16,
        width: width as u16,
    })
}
