//! Source side: [`SourceSlicer`] cuts one source's time-sorted batches into [`Piece`]s (slice,
//! builder, row range, [`PieceRole`]) and says which slices the source has finished, so the
//! caller can send end-of-slice markers. Pure bookkeeping on the time column: the caller
//! moves the rows.

use super::error::SliceError;
use super::role::PieceRole;
use super::spec::SliceSpec;
use std::ops::Range;

/// Rows `rows` of the batch just pushed go to `slice` (on `builder`) as its `role`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The slice.
    pub slice: i64,
    /// Its builder.
    pub builder: u32,
    /// Row range in the batch passed to [`SourceSlicer::push`].
    pub rows: Range<usize>,
    /// Lead-in, body or lead-out.
    pub role: PieceRole,
}

/// What one [`SourceSlicer::push`] (or `advance`, `finish`) produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    /// Pieces of the batch, ordered by slice then role (lead-in, body, lead-out), so the
    /// pieces of one slice are in time order. A row may be in up to three kinds of pieces
    /// (and in several lead-outs or lead-ins when slices are shorter than the lead).
    pub pieces: Vec<Piece>,
    /// Slices this source has now finished (every later row is past their lead-out): send
    /// each builder an end-of-slice marker for its slices in this range, after the pieces.
    /// Empty when none; `start..i64::MAX` after [`SourceSlicer::finish`] (the source ended).
    pub ended: Range<i64>,
}

/// One source's slicer. Feed the source's time-sorted batches with [`push`](Self::push);
/// call [`advance`](Self::advance) when the source's time moved on without rows (a quiet
/// board), and [`finish`](Self::finish) at its end.
#[derive(Clone, Debug)]
pub struct SourceSlicer {
    spec: SliceSpec,
    source_id: u32,
    first_slice: i64,
    // Every slice below this has been reported ended.
    next_unended: i64,
    last_t: Option<i64>,
    rows_before_first: u64,
}

impl SourceSlicer {
    /// A slicer for source `source_id` under `spec` (validated here). Slices start at
    /// `first_slice`, the same for every source of a run: earlier slices are not routed
    /// (their rows are counted in [`rows_before_first`](Self::rows_before_first)), and
    /// [`Routing::ended`] starts there.
    pub fn new(spec: SliceSpec, source_id: u32, first_slice: i64) -> Result<Self, SliceError> {
        spec.validate()?;
        Ok(Self {
            spec,
            source_id,
            first_slice,
            next_unended: first_slice,
            last_t: None,
            rows_before_first: 0,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &SliceSpec {
        &self.spec
    }

    /// Rows before `first_slice` (in no routed slice's body): a loss the caller counts. Those
    /// within the first slice's lead-in still go to it as lead-in.
    pub fn rows_before_first(&self) -> u64 {
        self.rows_before_first
    }

    /// Routes the next time-sorted batch (its `t_ps` column) into `out` (cleared first). On
    /// error (rows out of order within the batch or against the previous batch, the first
    /// offending row named) nothing is routed and the slicer is unchanged.
    pub fn push(&mut self, t_ps: &[i64], out: &mut Routing) -> Result<(), SliceError> {
        out.pieces.clear();
        out.ended = self.next_unended..self.next_unended;
        let last_t = self.last_t.unwrap_or(i64::MIN);
        let sorted =
            t_ps.first().is_none_or(|&f| f >= last_t) && t_ps.windows(2).all(|w| w[0] <= w[1]);
        if !sorted {
            let mut prev = last_t;
            for (row, &t) in t_ps.iter().enumerate() {
                if t < prev {
                    return Err(SliceError::NotTimeOrdered {
                        source_id: self.source_id,
                        row,
                        previous_ps: prev,
                        t_ps: t,
                    });
                }
                prev = t;
            }
        }
        let Some(&last) = t_ps.last() else {
            return Ok(());
        };
        let first_start = self.spec.body_ps(self.first_slice).start;
        self.rows_before_first += t_ps.partition_point(|&t| t < first_start) as u64;
        let s = self.spec.slice_ps;
        let roles = [
            (PieceRole::LeadIn, -self.spec.lead_in_ps, 0),
            (PieceRole::Body, 0, s),
            (
                PieceRole::LeadOut,
                s,
                s.saturating_add(self.spec.lead_out_ps),
            ),
        ];
        for (role, from, to) in roles {
            self.route_role(t_ps, role, from, to, &mut out.pieces);
        }
        out.pieces.sort_unstable_by_key(|p| (p.slice, p.role));
        self.last_t = Some(last);
        out.ended = self.end_up_to(last);
        Ok(())
    }

    /// Declares that this source's time reached `t_ps` (no later row will be earlier): ends
    /// the slices whose lead-out lies before it. A time before the last row is ignored.
    pub fn advance(&mut self, t_ps: i64) -> Range<i64> {
        let t = self.last_t.map_or(t_ps, |l| l.max(t_ps));
        self.last_t = Some(t);
        self.end_up_to(t)
    }

    /// Ends the source: every slice from the first unended on is finished
    /// (`..i64::MAX`); later pushes are refused as out of order.
    pub fn finish(&mut self) -> Range<i64> {
        self.last_t = Some(i64::MAX);
        let r = self.next_unended..i64::MAX;
        self.next_unended = i64::MAX;
        r
    }

    /// Marks ended every slice `k` with `(k + 1) * slice_ps + lead_out_ps <= t`.
    fn end_up_to(&mut self, t: i64) -> Range<i64> {
        let upto = self.spec.slice_of(t.saturating_sub(self.spec.lead_out_ps)); // exclusive
        let from = self.next_unended;
        if upto > from {
            self.next_unended = upto;
            from..upto
        } else {
            from..from
        }
    }

    /// Appends the pieces of `role`, whose time range in slice `k` is
    /// `[k * slice_ps + from, k * slice_ps + to)`, for every slice with rows in it.
    fn route_role(&self, t: &[i64], role: PieceRole, from: i64, to: i64, out: &mut Vec<Piece>) {
        if to <= from {
            return;
        }
        let s = self.spec.slice_ps;
        let n = t.len();
        // The first slice whose range ends after t[0].
        let mut k = t[0].saturating_sub(to).div_euclid(s).saturating_add(1);
        let mut r = 0usize;
        loop {
            k = k.max(self.first_slice).max(self.next_unended);
            let base = k.saturating_mul(s);
            let (a, b) = (base.saturating_add(from), base.saturating_add(to));
            let lo = r + t[r..].partition_point(|&x| x < a);
            if lo == n {
                break;
            }
            let hi = lo + t[lo..].partition_point(|&x| x < b);
            if lo < hi {
                out.push(Piece {
                    slice: k,
                    builder: self.spec.builder_of(k),
                    rows: lo..hi,
                    role,
                });
            }
            // Next: the first slice after k whose range holds a row at or after the start
            // of slice k + 1's range.
            let next_a = base.saturating_add(s).saturating_add(from);
            r = lo + t[lo..].partition_point(|&x| x < next_a);
            if r == n || k == i64::MAX {
                break;
            }
            let first_holding = t[r].saturating_sub(to).div_euclid(s).saturating_add(1);
            k = (k + 1).max(first_holding);
        }
    }
}
