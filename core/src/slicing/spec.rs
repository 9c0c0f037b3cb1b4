//! [`SliceSpec`]: how detector time is cut into slices, which builder gets each, and how much
//! lead-in and lead-out every slice carries, derived from the coincidence configuration
//! ([`SliceSpec::for_coincidences`], [`SliceNeeds`]).

use super::error::SliceError;
use super::role::PieceRole;
use crate::coincidence::{CoincidenceConfig, GroupingConfig, WindowMode};
use std::ops::Range;

/// Default slice length: 10 ms.
pub const DEFAULT_SLICE_PS: i64 = 10_000_000_000;

/// The lead-in [`SliceSpec::for_coincidences`] gives is this many quiet gaps long, so that a
/// gap longer than the quiet gap is likely inside it at moderate rates (docs/cluster.md).
pub const LEAD_IN_QUIET_GAPS: i64 = 16;

/// Time slices: slice `k` covers detector time `[k * slice_ps, (k + 1) * slice_ps)` and goes
/// to builder `k mod builders`. Its job also holds the singles of
/// `[k * slice_ps - lead_in_ps, k * slice_ps)` (lead-in, duplicated from the previous slice's
/// tail) and of `[(k + 1) * slice_ps, (k + 1) * slice_ps + lead_out_ps)` (lead-out, duplicated
/// from the next slice's head). Slice indices are `i64` (floor division, so negative times
/// have negative slices).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SliceSpec {
    /// Slice length, ps (> 0).
    pub slice_ps: i64,
    /// Number of builders (>= 1).
    pub builders: u32,
    /// Lead-in length, ps (>= 0).
    pub lead_in_ps: i64,
    /// Lead-out length, ps (>= 0).
    pub lead_out_ps: i64,
}

/// What exact slicing needs from a coincidence configuration (see docs/cluster.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceNeeds {
    /// Shortest lead-out for an exact result: the largest `offset + window` of the two
    /// sorters, plus the grouping window when grouping is on.
    pub lead_out_ps: i64,
    /// A gap between consecutive singles (hits) longer than this is quiet: no group and no
    /// window of a single-window sorter straddles it. 0 when nothing carries state across
    /// singles (multi-window sorters, no grouping): then no lead-in is needed.
    pub quiet_gap_ps: i64,
    /// True when some stage carries state (grouping, or a single-window sorter).
    pub stateful: bool,
}

impl SliceNeeds {
    /// The needs of `prompt`, `delayed` and optional `grouping` (all validated here).
    pub fn of(
        prompt: &CoincidenceConfig,
        delayed: &CoincidenceConfig,
        grouping: Option<&GroupingConfig>,
    ) -> Result<Self, SliceError> {
        Self::of_sorters(&[prompt, delayed], grouping)
    }

    /// The needs of any set of `sorters` (e.g. a prompt sorter alone) and optional
    /// `grouping` (all validated here).
    pub fn of_sorters(
        sorters: &[&CoincidenceConfig],
        grouping: Option<&GroupingConfig>,
    ) -> Result<Self, SliceError> {
        for c in sorters {
            c.validate()?;
        }
        if let Some(g) = grouping {
            g.validate()?;
        }
        let group_ps = grouping.map_or(0, |g| g.window_ps);
        let span = sorters.iter().map(|c| c.span_ps()).max().unwrap_or(0);
        let mut quiet = group_ps;
        let mut stateful = grouping.is_some();
        for c in sorters {
            if c.mode != WindowMode::MultiWindow {
                quiet = quiet.max(c.span_ps());
                stateful = true;
            }
        }
        let lead_out_ps = span.checked_add(group_ps).ok_or(SliceError::BadSpec {
            field: "lead_out_ps",
            problem: format!(
                "offset + window ({span}) plus the grouping window ({group_ps}) overflows i64"
            ),
        })?;
        Ok(Self {
            lead_out_ps,
            quiet_gap_ps: quiet,
            stateful,
        })
    }
}

impl SliceSpec {
    /// A spec of `slice_ps` slices over `builders` builders with the lead-out an exact result
    /// needs ([`SliceNeeds::lead_out_ps`]) and a lead-in of [`LEAD_IN_QUIET_GAPS`] quiet gaps
    /// (0 when no stage carries state).
    pub fn for_coincidences(
        slice_ps: i64,
        builders: u32,
        prompt: &CoincidenceConfig,
        delayed: &CoincidenceConfig,
        grouping: Option<&GroupingConfig>,
    ) -> Result<Self, SliceError> {
        Self::for_needs(
            slice_ps,
            builders,
            &SliceNeeds::of(prompt, delayed, grouping)?,
        )
    }

    /// A spec of `slice_ps` slices over `builders` builders with the lead-out `needs` asks for
    /// and a lead-in of [`LEAD_IN_QUIET_GAPS`] quiet gaps.
    pub fn for_needs(slice_ps: i64, builders: u32, needs: &SliceNeeds) -> Result<Self, SliceError> {
        let spec = Self {
            slice_ps,
            builders,
            lead_in_ps: needs.quiet_gap_ps.saturating_mul(LEAD_IN_QUIET_GAPS),
            lead_out_ps: needs.lead_out_ps,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the fields; the error names the field and how to fix it.
    pub fn validate(&self) -> Result<(), SliceError> {
        let bad = |field, problem: String| Err(SliceError::BadSpec { field, problem });
        if self.slice_ps <= 0 {
            return bad(
                "slice_ps",
                format!(
                    "must be > 0, got {}; about 10 ms ({DEFAULT_SLICE_PS} ps) is typical",
                    self.slice_ps
                ),
            );
        }
        if self.builders == 0 {
            return bad("builders", "must be >= 1 (one per builder node)".into());
        }
        if self.lead_in_ps < 0 {
            return bad(
                "lead_in_ps",
                format!(
                    "must be >= 0, got {}; use SliceSpec::for_coincidences to derive it",
                    self.lead_in_ps
                ),
            );
        }
        if self.lead_out_ps < 0 {
            return bad(
                "lead_out_ps",
                format!(
                    "must be >= 0, got {}; use SliceSpec::for_coincidences to derive it",
                    self.lead_out_ps
                ),
            );
        }
        Ok(())
    }

    /// Checks the spec and that its lead-out covers what `needs` asks for.
    pub fn check_covers(&self, needs: &SliceNeeds) -> Result<(), SliceError> {
        self.validate()?;
        if self.lead_out_ps < needs.lead_out_ps {
            return Err(SliceError::BadSpec {
                field: "lead_out_ps",
                problem: format!(
                    "{} is shorter than the largest coincidence offset + window plus the \
                     grouping window ({}): pairs near a slice's end would be lost; set \
                     lead_out_ps >= {} (SliceSpec::for_coincidences does)",
                    self.lead_out_ps, needs.lead_out_ps, needs.lead_out_ps
                ),
            });
        }
        Ok(())
    }

    /// The slice holding time `t_ps` (floor division).
    pub fn slice_of(&self, t_ps: i64) -> i64 {
        t_ps.div_euclid(self.slice_ps)
    }

    /// The builder of `slice`: `slice mod builders` (in `0..builders`, also for negative
    /// slices).
    pub fn builder_of(&self, slice: i64) -> u32 {
        slice.rem_euclid(i64::from(self.builders)) as u32
    }

    /// The detector time `[start, end)` of `slice`'s body, saturating at the i64 range.
    pub fn body_ps(&self, slice: i64) -> Range<i64> {
        let start = slice.saturating_mul(self.slice_ps);
        start..start.saturating_add(self.slice_ps)
    }

    /// The lead-in time range of `slice`: `[start - lead_in_ps, start)`.
    pub fn lead_in_ps_range(&self, slice: i64) -> Range<i64> {
        let b = self.body_ps(slice);
        b.start.saturating_sub(self.lead_in_ps)..b.start
    }

    /// The lead-out time range of `slice`: `[end, end + lead_out_ps)`.
    pub fn lead_out_ps_range(&self, slice: i64) -> Range<i64> {
        let b = self.body_ps(slice);
        b.end..b.end.saturating_add(self.lead_out_ps)
    }

    /// The time range of `role` in `slice`.
    pub fn role_ps(&self, slice: i64, role: PieceRole) -> Range<i64> {
        match role {
            PieceRole::LeadIn => self.lead_in_ps_range(slice),
            PieceRole::Body => self.body_ps(slice),
            PieceRole::LeadOut => self.lead_out_ps_range(slice),
        }
    }
}
