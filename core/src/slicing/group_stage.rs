//! Grouping over one slice: the public [`Grouper`] from a start hit through the lead-out, and
//! the grouping counters of the body alone (hits by hit time, photons by photon time, groups
//! that gave no photon by the time of their first hit).

use super::error::SliceError;
use crate::coincidence::{
    CrystalLut, GroupLabels, Grouper, GroupingConfig, GroupingStats, PhotonBatch, SinglesRef,
};
use std::ops::Range;

/// Groups `hits[start..]` into photons (in photon time order, exact for photon times before
/// the end of the lead-out minus the grouping window when `start` is a quiet start) and
/// returns the body's counters (`body`: the body's hit rows, `body_ps`: its time range).
pub(crate) fn group_slice(
    cfg: &GroupingConfig,
    lut: &CrystalLut,
    hits: SinglesRef<'_>,
    start: usize,
    body: Range<usize>,
    body_ps: Range<i64>,
) -> Result<(PhotonBatch, GroupingStats), SliceError> {
    let mut grouper = Grouper::new(cfg.clone(), lut)?;
    let mut photons = PhotonBatch::default();
    let mut labels = GroupLabels::default();
    let part = hits.slice(start..hits.len());
    grouper.push_labeled(part, &mut photons, &mut labels)?;
    grouper.finish_labeled(&mut photons, &mut labels);
    let mut stats = GroupingStats {
        hits_in: body.len() as u64,
        unmapped_channel: hits.channel[body.clone()]
            .iter()
            .filter(|&&c| lut.crystal(c).is_none())
            .count() as u64,
        ..GroupingStats::default()
    };
    let p0 = photons.t_ps.partition_point(|&t| t < body_ps.start);
    let p1 = photons.t_ps.partition_point(|&t| t < body_ps.end);
    stats.photons_out = (p1 - p0) as u64;
    stats.multi_hit_photons = photons.multiplicity[p0..p1]
        .iter()
        .filter(|&&m| m > 1)
        .count() as u64;
    if cfg.rejects_photons() {
        let (b0, b1) = (body.start - start, body.end - start);
        count_rejected(cfg, part, &labels.photon_id, b0..b1, &mut stats);
    }
    Ok((photons, stats))
}

/// Counts, by reason, the groups opened by a hit of `body` (rows of `hits`) that give no
/// photon. Groups are rebuilt from the labels (ids are given in opening order, so the body's
/// groups are one id range) and judged by the grouper's documented cuts, in its order
/// (docs/coincidences.md, "Cuts"): more hits than `max_hits`, fewer than `min_hits`, summed
/// energy (f32, in hit order; NaN counts as below) outside `energy_window`.
fn count_rejected(
    cfg: &GroupingConfig,
    hits: SinglesRef<'_>,
    ids: &[u64],
    body: Range<usize>,
    stats: &mut GroupingStats,
) {
    let max_id = |rows: Range<usize>| {
        ids[rows]
            .iter()
            .filter(|&&id| id != GroupLabels::UNGROUPED)
            .max()
            .map_or(0, |&id| id + 1)
    };
    let id_a = max_id(0..body.start);
    let id_b = max_id(0..body.end).max(id_a);
    let mut groups = vec![(0.0f32, 0u32); (id_b - id_a) as usize];
    for (k, &id) in ids.iter().enumerate() {
        if id != GroupLabels::UNGROUPED && (id_a..id_b).contains(&id) {
            let g = &mut groups[(id - id_a) as usize];
            g.0 += hits.energy_kev[k];
            g.1 += 1;
        }
    }
    for (sum, hits_in_group) in groups {
        if cfg.max_hits.is_some_and(|max| hits_in_group > max) {
            stats.rejected_too_many_hits += 1;
        } else if hits_in_group < cfg.min_hits {
            stats.rejected_too_few_hits += 1;
        } else if let Some([lo, hi]) = cfg.energy_window {
            if sum < lo || sum.is_nan() {
                stats.rejected_below_min_energy += 1;
            } else if sum > hi {
                stats.rejected_above_max_energy += 1;
            }
        }
    }
}
