//! Quiet starts: where in a slice's lead-in processing may begin so that the result from the
//! body on equals the whole stream's — a gap between consecutive singles longer than any
//! group or window (docs/cluster.md, "Time slices and exactness").

/// The latest index `p` in `0..=limit` at which `t[p]` follows its predecessor by more than
/// `gap_ps`; the predecessor of `t[0]` is `before_ps`, a time no earlier single (outside
/// `t`) exceeds. `Some(limit)` when `limit == t.len()` (nothing to process from there).
/// `None` when there is no such gap: starting anywhere before `limit` may differ from the
/// whole stream.
pub fn quiet_start(t: &[i64], limit: usize, before_ps: i64, gap_ps: i64) -> Option<usize> {
    if limit >= t.len() {
        return Some(t.len());
    }
    (0..=limit).rev().find(|&p| {
        let prev = if p == 0 { before_ps } else { t[p - 1] };
        t[p].saturating_sub(prev) > gap_ps
    })
}

/// Like [`quiet_start`] but the earliest such index: grouping starts there, so that the
/// photons give the sorters the longest lead-in in which to find their own quiet start.
pub fn first_quiet_start(t: &[i64], limit: usize, before_ps: i64, gap_ps: i64) -> Option<usize> {
    let limit = limit.min(t.len());
    (0..=limit).find(|&p| {
        if p == t.len() {
            return true;
        }
        let prev = if p == 0 { before_ps } else { t[p - 1] };
        t[p].saturating_sub(prev) > gap_ps
    })
}

#[cfg(test)]
mod tests {
    use super::{first_quiet_start, quiet_start};

    #[test]
    fn finds_the_latest_gap_longer_than_asked() {
        let t = [0, 5, 20, 21, 40];
        // Gaps: before->0 (10), 0->5 (5), 5->20 (15), 20->21 (1), 21->40 (19).
        assert_eq!(quiet_start(&t, 4, -10, 10), Some(4));
        assert_eq!(quiet_start(&t, 3, -10, 10), Some(2));
        assert_eq!(
            quiet_start(&t, 3, -10, 15),
            None,
            "a gap of exactly 15 is not > 15"
        );
        assert_eq!(quiet_start(&t, 1, -11, 10), Some(0));
        assert_eq!(quiet_start(&t, 5, 0, 1000), Some(5));
        assert_eq!(quiet_start(&[], 0, 0, 1000), Some(0));
        assert_eq!(first_quiet_start(&t, 4, -10, 10), Some(2));
        assert_eq!(first_quiet_start(&t, 4, -11, 10), Some(0));
        assert_eq!(first_quiet_start(&t, 3, -10, 15), None);
        assert_eq!(first_quiet_start(&t, 5, -10, 1000), Some(5));
    }
}
