//! Parallel sorting of one large time-ordered batch: cut at time gaps longer than
//! `offset + window` (no window can straddle such a gap), sort the slices on rayon's pool,
//! concatenate in order. Identical to [`sort_coincidences`](super::sort_coincidences).

use super::batch::{CoincidenceBatch, CoincidenceStats, SinglesRef};
use super::config::{CoincidenceConfig, CoincidenceError};
use super::lut::CrystalLut;
use super::sorter::CoincidenceSorter;
use rayon::prelude::*;

/// Smallest slice worth a task.
const MIN_SLICE: usize = 1 << 16;

/// Cut points `0 = c0 < c1 < ... < ck = n` (just `[0, 0]` for no input) such that each inner cut `c` has
/// `t[c] - t[c-1] > span_ps` (a gap no window can straddle), aiming at `pieces` slices of
/// similar size. Slices are larger where no such gap is found near the nominal cut.
pub fn gap_cuts(t_ps: &[i64], span_ps: i64, pieces: usize) -> Vec<usize> {
    let n = t_ps.len();
    let pieces = pieces.max(1);
    let mut cuts = vec![0];
    for k in 1..pieces {
        let nominal = k * n / pieces;
        let start = nominal.max(cuts[cuts.len() - 1] + 1);
        let found = (start.max(1)..n).find(|&p| t_ps[p].saturating_sub(t_ps[p - 1]) > span_ps);
        match found {
            Some(p) => cuts.push(p),
            None => break,
        }
    }
    cuts.push(n);
    cuts
}

/// Sorts one whole time-ordered batch on rayon's current pool: slices cut at gaps longer than
/// `offset + window` ([`gap_cuts`]) are sorted independently and their coincidences appended
/// to `out` in order. The output and the counters are identical to
/// [`sort_coincidences`](super::sort_coincidences) in every window mode: no window, hence no
/// kept pair and no single-window suppression, crosses such a gap.
pub fn sort_coincidences_parallel(
    config: &CoincidenceConfig,
    lut: &CrystalLut,
    singles: SinglesRef<'_>,
    out: &mut CoincidenceBatch,
) -> Result<CoincidenceStats, CoincidenceError> {
    let pieces = (singles.len() / MIN_SLICE).clamp(1, rayon::current_num_threads() * 4);
    sort_coincidences_sliced(config, lut, singles, pieces, out)
}

/// [`sort_coincidences_parallel`] aiming at `pieces` slices (fewer when the batch has too
/// few long gaps): for tests and tuning.
pub fn sort_coincidences_sliced(
    config: &CoincidenceConfig,
    lut: &CrystalLut,
    singles: SinglesRef<'_>,
    pieces: usize,
    out: &mut CoincidenceBatch,
) -> Result<CoincidenceStats, CoincidenceError> {
    config.validate()?;
    singles.check_lengths()?;
    let cuts = gap_cuts(singles.t_ps, config.span_ps(), pieces);
    let results: Vec<Result<(CoincidenceBatch, CoincidenceStats), CoincidenceError>> = cuts
        .par_windows(2)
        .map(|w| {
            let mut sorter = CoincidenceSorter::new(config.clone(), lut)?;
            let mut part = CoincidenceBatch::default();
            sorter
                .push(singles.slice(w[0]..w[1]), &mut part)
                .map_err(|e| match e {
                    CoincidenceError::NotTimeOrdered {
                        index,
                        previous_ps,
                        t_ps,
                    } => CoincidenceError::NotTimeOrdered {
                        index: index + w[0],
                        previous_ps,
                        t_ps,
                    },
                    e => e,
                })?;
            sorter.finish(&mut part);
            Ok((part, sorter.take_stats()))
        })
        .collect();
    let mut stats = CoincidenceStats::default();
    let mut parts = Vec::with_capacity(results.len());
    for r in results {
        let (part, s) = r?;
        stats.add(&s);
        parts.push(part);
    }
    let total: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(total);
    for p in &parts {
        out.append(p);
    }
    Ok(stats)
}
