//! The derived singles columns, computed in the singles sink thread right before a batch is
//! written: each single's crystal position (`x_mm`, `y_mm`, `z_mm`) from the run's geometry, and
//! the photon it was grouped into (`photon_id`, `photon_multiplicity`).
//!
//! Grouping runs here, once, with the core [`Grouper`]: the photons it emits are what the
//! coincidence stage sorts, and the per-hit labels of the same call are what the singles table
//! carries, so the two can never disagree. A single's multiplicity is only known once its group
//! has closed (no later hit can join it: at most the grouping window after the group's first
//! hit), so singles whose group is still open are held back until it closes; everything before
//! them is released. Batches stay whole except the one a held single falls in, which is split.

use anyhow::{Result, anyhow};
use scandaq_core::HitBatch;
use scandaq_core::coincidence::{
    CrystalLut, GroupLabels, Grouper, GroupingConfig, GroupingStats, PhotonBatch, SinglesRef,
};
use scandaq_sinks::singles::{DerivedColumns, SinglesColumns, UNGROUPED_PHOTON_ID};
use std::collections::{BTreeMap, VecDeque};

/// Counts of the derived columns (manifest keys `singles.*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DerivedCounts {
    /// Singles written with NaN positions: channel missing from the geometry.
    pub position_missing: u64,
    /// Singles written with no photon (`photon_id` = max, multiplicity 0): channel missing
    /// from the geometry, or a batch the grouper refused.
    pub ungrouped: u64,
    /// Batches the grouper refused (time order broken); their singles are written ungrouped.
    pub refused_batches: u64,
}

impl DerivedCounts {
    /// Manifest counts (only the keys of the columns that are on).
    pub fn counts(&self, columns: SinglesColumns) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        if columns.positions {
            out.insert(
                "singles.position_missing_from_geometry".into(),
                self.position_missing,
            );
        }
        if columns.photons {
            out.insert("singles.photon_ungrouped".into(), self.ungrouped);
            out.insert(
                "singles.photon_refused_batches".into(),
                self.refused_batches,
            );
        }
        out
    }
}

/// Singles held back until their groups close, with their group ids.
#[derive(Default)]
struct Held {
    batch: HitBatch,
    photon_id: Vec<u64>,
}

/// Grouping state: the grouper, the held singles and the multiplicities of closed groups.
struct Grouping<'a> {
    grouper: Grouper<'a>,
    labels: GroupLabels,
    held: VecDeque<Held>,
    /// Multiplicity of group `multiplicity_base + k` at index `k`.
    multiplicity: VecDeque<u32>,
    multiplicity_base: u64,
}

/// Adds the derived columns to time-ordered singles batches (see the module docs).
pub struct SinglesAnnotator<'a> {
    lut: &'a CrystalLut,
    columns: SinglesColumns,
    grouping: Option<Grouping<'a>>,
    counts: DerivedCounts,
}

/// A batch ready to be written, with its derived columns.
pub type Annotated = (HitBatch, DerivedColumns);

impl<'a> SinglesAnnotator<'a> {
    /// Positions when `positions`; photon columns (and grouping) when `grouping` is set.
    pub fn new(
        lut: &'a CrystalLut,
        positions: bool,
        grouping: Option<GroupingConfig>,
        raw: bool,
    ) -> Result<Self> {
        let grouping = match grouping {
            Some(cfg) => Some(Grouping {
                grouper: Grouper::new(cfg, lut).map_err(|e| anyhow!("grouping: {e}"))?,
                labels: GroupLabels::default(),
                held: VecDeque::new(),
                multiplicity: VecDeque::new(),
                multiplicity_base: 0,
            }),
            None => None,
        };
        Ok(Self {
            lut,
            columns: SinglesColumns {
                positions,
                photons: grouping.is_some(),
                raw,
            },
            grouping,
            counts: DerivedCounts::default(),
        })
    }

    /// The singles table's column groups.
    pub fn columns(&self) -> SinglesColumns {
        self.columns
    }

    /// Counts so far.
    pub fn counts(&self) -> DerivedCounts {
        self.counts
    }

    /// The grouper's counters, when grouping runs.
    pub fn grouping_stats(&self) -> Option<GroupingStats> {
        self.grouping.as_ref().map(|g| *g.grouper.stats())
    }

    /// Takes the next time-ordered batch; appends the photons grouping completed to `photons`
    /// and the batches now ready to write (in time order) to `ready`.
    pub fn push(&mut self, batch: HitBatch, photons: &mut PhotonBatch, ready: &mut Vec<Annotated>) {
        let Some(g) = self.grouping.as_mut() else {
            let derived = self.derive(&batch, Vec::new());
            ready.push((batch, derived));
            return;
        };
        g.labels.clear();
        match g
            .grouper
            .push_labeled(SinglesRef::from(&batch), photons, &mut g.labels)
        {
            Ok(()) => {
                g.multiplicity
                    .extend(g.labels.closed_multiplicity.iter().copied());
                let photon_id = std::mem::take(&mut g.labels.photon_id);
                g.held.push_back(Held { batch, photon_id });
                self.release(false, ready);
            }
            Err(_) => {
                // Never drop singles: close what was grouped, then write this batch ungrouped.
                self.counts.refused_batches += 1;
                self.finish(photons, ready);
                let n = batch.len();
                let derived = self.derive(&batch, vec![UNGROUPED_PHOTON_ID; n]);
                ready.push((batch, derived));
            }
        }
    }

    /// Closes every group and releases every held single.
    pub fn finish(&mut self, photons: &mut PhotonBatch, ready: &mut Vec<Annotated>) {
        let Some(g) = self.grouping.as_mut() else {
            return;
        };
        g.labels.clear();
        g.grouper.finish_labeled(photons, &mut g.labels);
        g.multiplicity
            .extend(g.labels.closed_multiplicity.iter().copied());
        self.release(true, ready);
    }

    /// Releases the held singles up to the first one whose group is still open (all of them
    /// when `all`).
    fn release(&mut self, all: bool, ready: &mut Vec<Annotated>) {
        let Some(g) = self.grouping.as_mut() else {
            return;
        };
        let closed = g.grouper.groups_closed();
        let is_open = |id: u64| id != UNGROUPED_PHOTON_ID && id >= closed;
        let mut out: Vec<Held> = Vec::new();
        while let Some(front) = g.held.front_mut() {
            let cut = if all {
                None
            } else {
                front.photon_id.iter().position(|&id| is_open(id))
            };
            match cut {
                None => {
                    if let Some(whole) = g.held.pop_front() {
                        out.push(whole);
                    }
                }
                Some(0) => break,
                Some(n) => {
                    out.push(split_front(front, n));
                    break;
                }
            }
        }
        // Multiplicities still needed: from the smallest id held (or every closed group).
        let keep_from = g
            .held
            .iter()
            .flat_map(|h| h.photon_id.iter().copied())
            .filter(|&id| id != UNGROUPED_PHOTON_ID)
            .min()
            .unwrap_or(closed);
        let mut released = Vec::with_capacity(out.len());
        for h in out {
            let multiplicity = h
                .photon_id
                .iter()
                .map(|&id| {
                    if id == UNGROUPED_PHOTON_ID {
                        0
                    } else {
                        let m = g.multiplicity[(id - g.multiplicity_base) as usize];
                        u16::try_from(m).unwrap_or(u16::MAX)
                    }
                })
                .collect::<Vec<u16>>();
            released.push((h, multiplicity));
        }
        while g.multiplicity_base < keep_from && !g.multiplicity.is_empty() {
            g.multiplicity.pop_front();
            g.multiplicity_base += 1;
        }
        for (h, multiplicity) in released {
            let mut derived = self.derive(&h.batch, h.photon_id);
            derived.photon_multiplicity = multiplicity;
            ready.push((h.batch, derived));
        }
    }

    /// The derived columns of `batch` (positions when on; the given photon ids, counted).
    fn derive(&mut self, batch: &HitBatch, photon_id: Vec<u64>) -> DerivedColumns {
        let mut d = DerivedColumns::default();
        if self.columns.positions {
            let n = batch.len();
            d.x_mm.reserve_exact(n);
            d.y_mm.reserve_exact(n);
            d.z_mm.reserve_exact(n);
            let mut missing = 0u64;
            for &ch in &batch.channel {
                let p = match self.lut.crystal(ch) {
                    Some(c) => self.lut.pos_mm(c),
                    None => {
                        missing += 1;
                        [f32::NAN; 3]
                    }
                };
                d.x_mm.push(p[0]);
                d.y_mm.push(p[1]);
                d.z_mm.push(p[2]);
            }
            self.counts.position_missing += missing;
        }
        if self.columns.photons {
            self.counts.ungrouped += photon_id
                .iter()
                .filter(|&&id| id == UNGROUPED_PHOTON_ID)
                .count() as u64;
            if d.photon_multiplicity.is_empty() {
                d.photon_multiplicity = vec![0; photon_id.len()];
            }
            d.photon_id = photon_id;
        }
        d
    }
}

/// Splits the first `n` rows off `held` (the rest, usually a few hits, is copied and stays).
fn split_front(held: &mut Held, n: usize) -> Held {
    let tail_ids = held.photon_id.split_off(n);
    let head_ids = std::mem::replace(&mut held.photon_id, tail_ids);
    let head = split_batch(&mut held.batch, n);
    Held {
        batch: head,
        photon_id: head_ids,
    }
}

/// Returns rows `..n` of `batch` and leaves rows `n..` in it; columns of another length (e.g.
/// empty raw columns) are moved whole with the head.
fn split_batch(batch: &mut HitBatch, n: usize) -> HitBatch {
    let len = batch.len();
    fn cut<T>(col: &mut Vec<T>, n: usize, len: usize) -> Vec<T> {
        if col.len() == len {
            let tail = col.split_off(n);
            std::mem::replace(col, tail)
        } else {
            std::mem::take(col)
        }
    }
    HitBatch {
        t_ps: cut(&mut batch.t_ps, n, len),
        channel: cut(&mut batch.channel, n, len),
        energy_kev: cut(&mut batch.energy_kev, n, len),
        flags: cut(&mut batch.flags, n, len),
        frame: cut(&mut batch.frame, n, len),
        tcoarse: cut(&mut batch.tcoarse, n, len),
        ecoarse: cut(&mut batch.ecoarse, n, len),
        tfine: cut(&mut batch.tfine, n, len),
        efine: cut(&mut batch.efine, n, len),
        tac: cut(&mut batch.tac, n, len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scandaq_core::coincidence::group_hits;
    use scandaq_core::{Crystal, Geometry};

    fn geometry() -> Geometry {
        let mut g = Geometry::default();
        for ch in 0..8u32 {
            g.crystals.insert(
                ch,
                Crystal {
                    module: ch / 4,
                    xi: ch % 4,
                    yi: 0,
                    pos_mm: [ch as f32 * 30.0, 0.0, 1.5],
                },
            );
        }
        g
    }

    /// Streaming through the annotator in any batch split gives every hit the id and size of
    /// the photon `group_hits` builds, positions from the map, NaN and no photon when unmapped.
    #[test]
    fn labels_match_whole_batch_grouping_for_any_split() {
        let lut = CrystalLut::from_geometry(&geometry());
        let mut all = HitBatch::default();
        let mut rng = 7u64;
        let mut t = 0i64;
        for _ in 0..3000 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            t += ((rng >> 33) % 6000) as i64;
            all.t_ps.push(t);
            all.channel.push(((rng >> 20) % 9) as u32); // 8 = unmapped
            all.energy_kev.push(((rng >> 40) % 600) as f32);
            all.flags.push(0);
        }
        let cfg = GroupingConfig::new(10_000, 70.0);
        let (expected, _) = group_hits(&cfg, &lut, SinglesRef::from(&all)).unwrap();
        for split in [1usize, 7, 100, 5000] {
            let mut a = SinglesAnnotator::new(&lut, true, Some(cfg.clone()), false).unwrap();
            let (mut photons, mut ready) = (PhotonBatch::default(), Vec::new());
            for start in (0..all.len()).step_by(split) {
                let end = (start + split).min(all.len());
                let mut b = HitBatch::default();
                b.t_ps.extend_from_slice(&all.t_ps[start..end]);
                b.channel.extend_from_slice(&all.channel[start..end]);
                b.energy_kev.extend_from_slice(&all.energy_kev[start..end]);
                b.flags.extend_from_slice(&all.flags[start..end]);
                a.push(b, &mut photons, &mut ready);
            }
            a.finish(&mut photons, &mut ready);
            assert_eq!(photons, expected, "split {split}");
            let t: Vec<i64> = ready.iter().flat_map(|(b, _)| b.t_ps.clone()).collect();
            assert_eq!(t, all.t_ps, "split {split}: every single once, in order");
            let ids: Vec<u64> = ready
                .iter()
                .flat_map(|(_, d)| d.photon_id.clone())
                .collect();
            let mult: Vec<u16> = ready
                .iter()
                .flat_map(|(_, d)| d.photon_multiplicity.clone())
                .collect();
            let x: Vec<f32> = ready.iter().flat_map(|(_, d)| d.x_mm.clone()).collect();
            let mut size: BTreeMap<u64, u16> = BTreeMap::new();
            for &id in ids.iter().filter(|&&id| id != UNGROUPED_PHOTON_ID) {
                *size.entry(id).or_default() += 1;
            }
            assert_eq!(size.len(), expected.len(), "one id per photon");
            for i in 0..ids.len() {
                if all.channel[i] == 8 {
                    assert_eq!((ids[i], mult[i]), (UNGROUPED_PHOTON_ID, 0));
                    assert!(x[i].is_nan());
                } else {
                    assert_eq!(mult[i], size[&ids[i]]);
                    assert_eq!(x[i], all.channel[i] as f32 * 30.0);
                }
            }
            let c = a.counts();
            assert_eq!(c.ungrouped, c.position_missing);
            assert!(c.ungrouped > 0);
        }
    }
}
