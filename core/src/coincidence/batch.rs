//! Column batches of the coincidence stage: the input view ([`SinglesRef`]), grouped photons
//! ([`PhotonBatch`]), sorted pairs ([`CoincidenceBatch`] with its [`coinc_flags`]) and the
//! outcome counters ([`CoincidenceStats`], [`GroupingStats`]).

use super::config::CoincidenceError;
use crate::HitBatch;
use serde::{Deserialize, Serialize};

/// Bit flags of a coincidence (`flags` column of [`CoincidenceBatch`]).
pub mod coinc_flags {
    /// Found by a delayed sorter (offset > 0): a randoms estimate, not a prompt.
    pub const DELAYED: u16 = 1 << 0;
    /// Kept from a window holding more than one pair (a multiple).
    pub const MULTIPLE: u16 = 1 << 1;
}

/// Borrowed singles as columns (all the same length, time ordered). Built from a
/// [`HitBatch`] or a [`PhotonBatch`] with `From`, or from plain slices.
#[derive(Clone, Copy, Debug)]
pub struct SinglesRef<'a> {
    /// Time, ps.
    pub t_ps: &'a [i64],
    /// PETsys absolute channel id.
    pub channel: &'a [u32],
    /// Energy, keV.
    pub energy_kev: &'a [f32],
    /// Hit flags (grouping ORs them into the photon; the sorter ignores them).
    pub flags: &'a [u16],
}

impl<'a> SinglesRef<'a> {
    /// Number of rows (of `t_ps`).
    pub fn len(&self) -> usize {
        self.t_ps.len()
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.t_ps.is_empty()
    }

    /// Rows `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> SinglesRef<'a> {
        SinglesRef {
            t_ps: &self.t_ps[range.clone()],
            channel: &self.channel[range.clone()],
            energy_kev: &self.energy_kev[range.clone()],
            flags: &self.flags[range],
        }
    }

    /// Errors unless every column has the same length.
    pub fn check_lengths(&self) -> Result<(), CoincidenceError> {
        let n = self.t_ps.len();
        if self.channel.len() != n || self.energy_kev.len() != n || self.flags.len() != n {
            return Err(CoincidenceError::ColumnLengths {
                t_ps: n,
                channel: self.channel.len(),
                energy_kev: self.energy_kev.len(),
                flags: self.flags.len(),
            });
        }
        Ok(())
    }
}

impl<'a> From<&'a HitBatch> for SinglesRef<'a> {
    fn from(b: &'a HitBatch) -> Self {
        Self {
            t_ps: &b.t_ps,
            channel: &b.channel,
            energy_kev: &b.energy_kev,
            flags: &b.flags,
        }
    }
}

impl<'a> From<&'a PhotonBatch> for SinglesRef<'a> {
    fn from(b: &'a PhotonBatch) -> Self {
        Self {
            t_ps: &b.t_ps,
            channel: &b.channel,
            energy_kev: &b.energy_kev,
            flags: &b.flags,
        }
    }
}

/// Grouped photons as columns, time ordered: the hit columns plus `multiplicity`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhotonBatch {
    /// Time of the group's highest-energy hit, ps.
    pub t_ps: Vec<i64>,
    /// Channel of the group's highest-energy hit.
    pub channel: Vec<u32>,
    /// Sum of the group's hit energies, keV (f32, added in hit order).
    pub energy_kev: Vec<f32>,
    /// OR of the group's hit flags.
    pub flags: Vec<u16>,
    /// Number of hits in the group (>= 1).
    pub multiplicity: Vec<u32>,
}

impl PhotonBatch {
    /// Number of photons.
    pub fn len(&self) -> usize {
        self.t_ps.len()
    }

    /// True when there is no photon.
    pub fn is_empty(&self) -> bool {
        self.t_ps.is_empty()
    }

    /// Room for `n` more photons in every column.
    pub fn reserve(&mut self, n: usize) {
        self.t_ps.reserve(n);
        self.channel.reserve(n);
        self.energy_kev.reserve(n);
        self.flags.reserve(n);
        self.multiplicity.reserve(n);
    }

    /// Removes every photon, keeping the allocations.
    pub fn clear(&mut self) {
        self.t_ps.clear();
        self.channel.clear();
        self.energy_kev.clear();
        self.flags.clear();
        self.multiplicity.clear();
    }
}

/// Coincidences as columns. Row order: by opener (first single) in input order, then by
/// partner in input order. Member 1 is always the opener, so `t1_ps <= t2_ps`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CoincidenceBatch {
    /// Opener time, ps.
    pub t1_ps: Vec<i64>,
    /// Partner time, ps.
    pub t2_ps: Vec<i64>,
    /// Opener channel (crystal).
    pub channel1: Vec<u32>,
    /// Partner channel (crystal).
    pub channel2: Vec<u32>,
    /// Opener energy, keV.
    pub energy1_kev: Vec<f32>,
    /// Partner energy, keV.
    pub energy2_kev: Vec<f32>,
    /// `t1_ps - t2_ps`, ps (so `<= 0`: in `[-(offset + window), -offset]`).
    pub tof_ps: Vec<i64>,
    /// [`coinc_flags`] bits.
    pub flags: Vec<u16>,
}

impl CoincidenceBatch {
    /// Drops the spare capacity of every column (before a batch is kept for a while).
    pub fn shrink_to_fit(&mut self) {
        self.t1_ps.shrink_to_fit();
        self.t2_ps.shrink_to_fit();
        self.channel1.shrink_to_fit();
        self.channel2.shrink_to_fit();
        self.energy1_kev.shrink_to_fit();
        self.energy2_kev.shrink_to_fit();
        self.tof_ps.shrink_to_fit();
        self.flags.shrink_to_fit();
    }

    /// Number of coincidences.
    pub fn len(&self) -> usize {
        self.t1_ps.len()
    }

    /// True when there is no coincidence.
    pub fn is_empty(&self) -> bool {
        self.t1_ps.is_empty()
    }

    /// Room for `n` more coincidences in every column.
    pub fn reserve(&mut self, n: usize) {
        self.t1_ps.reserve(n);
        self.t2_ps.reserve(n);
        self.channel1.reserve(n);
        self.channel2.reserve(n);
        self.energy1_kev.reserve(n);
        self.energy2_kev.reserve(n);
        self.tof_ps.reserve(n);
        self.flags.reserve(n);
    }

    /// Removes every coincidence, keeping the allocations.
    pub fn clear(&mut self) {
        self.t1_ps.clear();
        self.t2_ps.clear();
        self.channel1.clear();
        self.channel2.clear();
        self.energy1_kev.clear();
        self.energy2_kev.clear();
        self.tof_ps.clear();
        self.flags.clear();
    }

    /// Appends every coincidence of `other`.
    pub fn append(&mut self, other: &CoincidenceBatch) {
        self.t1_ps.extend_from_slice(&other.t1_ps);
        self.t2_ps.extend_from_slice(&other.t2_ps);
        self.channel1.extend_from_slice(&other.channel1);
        self.channel2.extend_from_slice(&other.channel2);
        self.energy1_kev.extend_from_slice(&other.energy1_kev);
        self.energy2_kev.extend_from_slice(&other.energy2_kev);
        self.tof_ps.extend_from_slice(&other.tof_ps);
        self.flags.extend_from_slice(&other.flags);
    }
}

/// What the sorter saw, per single and per window.
///
/// Every single offered is counted once in `singles_in` and at most once in
/// `outside_energy_window` (checked first) or `unmapped_channel`; the rest open windows
/// (`windows_opened`) or, in single-window mode, are `openers_suppressed`. A window with one
/// pair counts in `one_pair_windows` (and in `one_pair_not_good` when it is dropped); a window
/// with two or more pairs counts in `multiples_seen` (and in `multiples_rejected` when the
/// policy kept nothing from it). `pairs_kept` is the number of output rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoincidenceStats {
    /// Singles offered.
    pub singles_in: u64,
    /// Singles dropped by the energy window before sorting.
    pub outside_energy_window: u64,
    /// Singles dropped because their channel is not in the geometry.
    pub unmapped_channel: u64,
    /// Singles that opened a window.
    pub windows_opened: u64,
    /// Singles that opened no window: in [`SingleWindow`](super::WindowMode::SingleWindow)
    /// mode the partners of kept pairs, in
    /// [`SingleWindowGate10`](super::WindowMode::SingleWindowGate10) mode the candidates of an
    /// earlier single's window (0 in multi-window mode).
    pub openers_suppressed: u64,
    /// Windows holding exactly one pair.
    pub one_pair_windows: u64,
    /// One-pair windows whose pair is not good.
    pub one_pair_not_good: u64,
    /// Windows holding more than one pair.
    pub multiples_seen: u64,
    /// Multiples from which the policy kept nothing.
    pub multiples_rejected: u64,
    /// Coincidences written.
    pub pairs_kept: u64,
}

impl CoincidenceStats {
    /// Adds every counter of `other`.
    pub fn add(&mut self, other: &CoincidenceStats) {
        self.singles_in += other.singles_in;
        self.outside_energy_window += other.outside_energy_window;
        self.unmapped_channel += other.unmapped_channel;
        self.windows_opened += other.windows_opened;
        self.openers_suppressed += other.openers_suppressed;
        self.one_pair_windows += other.one_pair_windows;
        self.one_pair_not_good += other.one_pair_not_good;
        self.multiples_seen += other.multiples_seen;
        self.multiples_rejected += other.multiples_rejected;
        self.pairs_kept += other.pairs_kept;
    }
}

/// What grouping saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupingStats {
    /// Hits offered.
    pub hits_in: u64,
    /// Hits dropped because their channel is not in the geometry.
    pub unmapped_channel: u64,
    /// Photons written.
    pub photons_out: u64,
    /// Photons written that are made of more than one hit.
    pub multi_hit_photons: u64,
    /// Groups that gave no photon: more hits than `max_hits`.
    #[serde(default)]
    pub rejected_too_many_hits: u64,
    /// ... fewer hits than `min_hits` (checked after `max_hits`).
    #[serde(default)]
    pub rejected_too_few_hits: u64,
    /// ... summed energy below the energy window (checked after the hit counts).
    #[serde(default)]
    pub rejected_below_min_energy: u64,
    /// ... summed energy above the energy window.
    #[serde(default)]
    pub rejected_above_max_energy: u64,
}

impl GroupingStats {
    /// Groups that gave no photon, whatever the reason.
    pub fn rejected(&self) -> u64 {
        self.rejected_too_many_hits
            + self.rejected_too_few_hits
            + self.rejected_below_min_energy
            + self.rejected_above_max_energy
    }
}
