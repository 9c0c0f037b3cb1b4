//! One sorter over one slice: run the public [`CoincidenceSorter`] from a start row through
//! the lead-out and keep the pairs whose opener lies in the body, with the counters of the
//! body alone (openers: the sorter's own counters, cut at the body edges by a sentinel single
//! just past the last window that matters; singles: counted while the body is pushed).

use super::error::SliceError;
use super::quiet::quiet_start;
use crate::coincidence::{
    CoincidenceBatch, CoincidenceConfig, CoincidenceSorter, CoincidenceStats, CrystalLut,
    SinglesRef, WindowMode,
};
use std::ops::Range;

/// Pairs and counters of one sorter for one slice (the default: no sorter, nothing, exact).
pub(crate) struct BodySort {
    pub pairs: CoincidenceBatch,
    pub stats: CoincidenceStats,
    /// False when a single-window sorter found no quiet start in the lead-in.
    pub exact: bool,
}

impl Default for BodySort {
    fn default() -> Self {
        Self {
            pairs: CoincidenceBatch::default(),
            stats: CoincidenceStats::default(),
            exact: true,
        }
    }
}

/// Sorts `input` (time ordered: lead-in, body, lead-out of slice `slice`) with `cfg`.
///
/// Multi-window: starts at the body (windows are independent). Single-window modes: start at
/// the latest quiet start (gap > `offset + window`, [`quiet_start`]) before the body, where
/// `before_ps` bounds every single before `input`; without one, start at `input`'s first row
/// and report `exact = false`.
pub(crate) fn sort_body(
    cfg: &CoincidenceConfig,
    lut: &CrystalLut,
    input: SinglesRef<'_>,
    body_ps: Range<i64>,
    before_ps: i64,
    slice: i64,
) -> Result<BodySort, SliceError> {
    let t = input.t_ps;
    let span = cfg.span_ps();
    let overflow = SliceError::TimeOverflow { slice };
    let end_t = body_ps.end.checked_add(span).ok_or(overflow.clone())?;
    let b0 = t.partition_point(|&x| x < body_ps.start);
    let b1 = t.partition_point(|&x| x < body_ps.end);
    let e = t.partition_point(|&x| x < end_t);
    let (start, exact) = match cfg.mode {
        WindowMode::MultiWindow => (b0, true),
        _ => match quiet_start(t, b0, before_ps, span) {
            Some(p) => (p, true),
            None => (0, false),
        },
    };
    let mut sorter = CoincidenceSorter::new(cfg.clone(), lut)?;
    let mut pairs = CoincidenceBatch::default();
    sorter.push(input.slice(start..b0), &mut pairs)?;
    let before_body = *sorter.stats();
    sorter.push(input.slice(b0..b1), &mut pairs)?;
    let after_body = *sorter.stats();
    sorter.push(input.slice(b1..e), &mut pairs)?;
    close_before(
        &mut sorter,
        cfg,
        lut,
        input.slice(start..e),
        end_t,
        &mut pairs,
    )?;
    let mut stats = *sorter.stats();
    if start < b0 {
        // The lead-in's openers, processed exactly as above, to subtract.
        let lead_end = body_ps.start.checked_add(span).ok_or(overflow)?;
        let le = t.partition_point(|&x| x < lead_end);
        let mut lead = CoincidenceSorter::new(cfg.clone(), lut)?;
        let mut scratch = CoincidenceBatch::default();
        lead.push(input.slice(start..le), &mut scratch)?;
        close_before(
            &mut lead,
            cfg,
            lut,
            input.slice(start..le),
            lead_end,
            &mut scratch,
        )?;
        subtract_openers(&mut stats, lead.stats());
    }
    stats.singles_in = after_body.singles_in - before_body.singles_in;
    stats.outside_energy_window =
        after_body.outside_energy_window - before_body.outside_energy_window;
    stats.unmapped_channel = after_body.unmapped_channel - before_body.unmapped_channel;
    let lead_rows = pairs.t1_ps.partition_point(|&x| x < body_ps.start);
    drop_front(&mut pairs, lead_rows);
    debug_assert_eq!(stats.pairs_kept, pairs.len() as u64);
    Ok(BodySort {
        pairs,
        stats,
        exact,
    })
}

/// Completes every window of the openers before `at - span` and none after: pushes one
/// sentinel single at `at` (a copy of a single the sorter keeps, so it passes the energy cut
/// and the channel map). The sentinel lies more than `offset + window` after every opener
/// before `at - span`, so it is a candidate of none of their windows; openers at or after
/// `at - span` stay incomplete. The sorter must not be used further.
fn close_before(
    sorter: &mut CoincidenceSorter<'_>,
    cfg: &CoincidenceConfig,
    lut: &CrystalLut,
    pushed: SinglesRef<'_>,
    at: i64,
    out: &mut CoincidenceBatch,
) -> Result<(), SliceError> {
    let kept = (0..pushed.len()).find(|&i| {
        let e = pushed.energy_kev[i];
        let inside = cfg
            .energy_window_kev
            .is_none_or(|[lo, hi]| e >= lo && e <= hi);
        inside && lut.crystal(pushed.channel[i]).is_some()
    });
    // No kept single: no opener either, nothing to complete.
    let Some(i) = kept else {
        return Ok(());
    };
    let sentinel = SinglesRef {
        t_ps: &[at],
        channel: &pushed.channel[i..=i],
        energy_kev: &pushed.energy_kev[i..=i],
        flags: &pushed.flags[i..=i],
    };
    sorter.push(sentinel, out)?;
    Ok(())
}

/// `stats -= lead` on the per-opener counters.
fn subtract_openers(stats: &mut CoincidenceStats, lead: &CoincidenceStats) {
    let sub = |a: &mut u64, b: u64| *a = a.saturating_sub(b);
    sub(&mut stats.windows_opened, lead.windows_opened);
    sub(&mut stats.openers_suppressed, lead.openers_suppressed);
    sub(&mut stats.one_pair_windows, lead.one_pair_windows);
    sub(&mut stats.one_pair_not_good, lead.one_pair_not_good);
    sub(&mut stats.multiples_seen, lead.multiples_seen);
    sub(&mut stats.multiples_rejected, lead.multiples_rejected);
    sub(&mut stats.pairs_kept, lead.pairs_kept);
}

/// Removes the first `n` rows of every column.
fn drop_front(b: &mut CoincidenceBatch, n: usize) {
    if n == 0 {
        return;
    }
    b.t1_ps.drain(..n);
    b.t2_ps.drain(..n);
    b.channel1.drain(..n);
    b.channel2.drain(..n);
    b.energy1_kev.drain(..n);
    b.energy2_kev.drain(..n);
    b.tof_ps.drain(..n);
    b.flags.drain(..n);
}
