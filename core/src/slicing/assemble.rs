//! Builder side: [`SliceAssembler`] collects the pieces of its slices from a known set of
//! sources plus their end-of-slice markers, and yields a [`SliceJob`] (lead-in, body and
//! lead-out merged in time order) once every source has ended the slice; a slice given up on
//! is [`abandon`](SliceAssembler::abandon)ed and reported as a [`MissingSlice`].

use super::error::SliceError;
use super::role::PieceRole;
use super::rows::{SliceRows, merge_runs};
use super::spec::SliceSpec;
use crate::coincidence::SinglesRef;
use std::collections::BTreeMap;
use std::ops::Range;

/// One slice's singles, ready for [`process_slice`](super::process_slice).
#[derive(Clone, Debug, PartialEq)]
pub struct SliceJob {
    /// The slice.
    pub slice: i64,
    /// The spec it was cut with.
    pub spec: SliceSpec,
    /// Lead-in, body and lead-out of every source, merged in time order (equal times: by
    /// ascending source id, then each source's own order — the single-process merge order).
    pub rows: SliceRows,
    /// The body's rows in `rows` (times in `spec.body_ps(slice)`).
    pub body: Range<usize>,
}

impl SliceJob {
    /// A job made directly from merged rows (for a single process or tests): `rows` holds
    /// the time-ordered singles of the slice's lead-in, body and lead-out (others are
    /// ignored: rows outside `[start - lead_in_ps, end + lead_out_ps)` are cut off).
    pub fn from_rows(spec: SliceSpec, slice: i64, rows: SinglesRef<'_>) -> Self {
        let lo = rows
            .t_ps
            .partition_point(|&t| t < spec.lead_in_ps_range(slice).start);
        let hi = rows
            .t_ps
            .partition_point(|&t| t < spec.lead_out_ps_range(slice).end);
        let mut own = SliceRows::default();
        own.extend_from(rows.slice(lo..hi.max(lo)));
        Self::new(spec, slice, own)
    }

    fn new(spec: SliceSpec, slice: i64, rows: SliceRows) -> Self {
        let b = spec.body_ps(slice);
        let body =
            rows.t_ps.partition_point(|&t| t < b.start)..rows.t_ps.partition_point(|&t| t < b.end);
        Self {
            slice,
            spec,
            rows,
            body,
        }
    }
}

/// A slice abandoned before every source ended it: listed as missing with its time range.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MissingSlice {
    /// The slice.
    pub slice: i64,
    /// Its body's start, ps.
    pub start_ps: i64,
    /// Its body's end (exclusive), ps.
    pub end_ps: i64,
    /// Sources that had not ended it.
    pub sources_not_ended: Vec<u32>,
    /// Rows received for it and dropped (lead-in and lead-out included).
    pub rows_dropped: u64,
}

/// Pieces received for one slice: per source (in the assembler's source order), its rows so
/// far, time ordered.
#[derive(Debug, Default)]
struct InFlight {
    per_source: Vec<SliceRows>,
}

/// The builder side of slicing for builder `builder`: pieces come in per (source, slice),
/// ends per source; jobs go out in slice order.
///
/// Memory: the rows of the slices in flight (received, not yet yielded or abandoned).
/// A source ends its slices in order, so an end marker for slice `k` also ends every earlier
/// slice of that source.
#[derive(Debug)]
pub struct SliceAssembler {
    spec: SliceSpec,
    builder: u32,
    sources: Vec<u32>,
    // Per source (same order): every slice below this is ended by it.
    ended_before: Vec<i64>,
    // Lowest slice of this builder not yet yielded or abandoned.
    next: i64,
    in_flight: BTreeMap<i64, InFlight>,
    abandoned: std::collections::BTreeSet<i64>,
}

impl SliceAssembler {
    /// An assembler for `builder` of `spec` (validated here) expecting every slice from
    /// `first_slice` on (the first owned by `builder`) from each of `sources` (ids; order
    /// does not matter, duplicates are merged).
    pub fn new(
        spec: SliceSpec,
        builder: u32,
        sources: &[u32],
        first_slice: i64,
    ) -> Result<Self, SliceError> {
        spec.validate()?;
        if builder >= spec.builders {
            return Err(SliceError::BadSpec {
                field: "builders",
                problem: format!(
                    "builder {builder} does not exist: builders are 0..{}",
                    spec.builders
                ),
            });
        }
        let mut ids = sources.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let n = i64::from(spec.builders);
        let offset = (i64::from(builder) - first_slice).rem_euclid(n);
        Ok(Self {
            spec,
            builder,
            ended_before: vec![first_slice; ids.len()],
            sources: ids,
            next: first_slice.saturating_add(offset),
            in_flight: BTreeMap::new(),
            abandoned: Default::default(),
        })
    }

    /// The sources, ascending (the tie order of the merge).
    pub fn sources(&self) -> &[u32] {
        &self.sources
    }

    /// Slices holding rows, not yet yielded or abandoned.
    pub fn slices_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Rows held, over every slice in flight.
    pub fn rows_held(&self) -> usize {
        self.in_flight
            .values()
            .flat_map(|f| f.per_source.iter())
            .map(SliceRows::len)
            .sum()
    }

    /// Adds a piece of `source_id`'s rows for `slice` as `role`. Its rows must lie in the
    /// role's time range and come after the source's earlier rows for this slice (pieces of
    /// one slice arrive lead-in, body, lead-out, as [`SourceSlicer`](super::SourceSlicer)
    /// emits them). On error nothing is added.
    pub fn push_piece(
        &mut self,
        source_id: u32,
        slice: i64,
        role: PieceRole,
        rows: SinglesRef<'_>,
    ) -> Result<(), SliceError> {
        let src = self.source_index(source_id)?;
        self.check_open(source_id, slice)?;
        if slice < self.ended_before[src] {
            return Err(SliceError::PieceAfterEnd { source_id, slice });
        }
        rows.check_lengths()?;
        let range = self.spec.role_ps(slice, role);
        let flight = self.in_flight.get(&slice);
        let prev = flight
            .and_then(|f| f.per_source[src].t_ps.last().copied())
            .unwrap_or(i64::MIN);
        let t = rows.t_ps;
        // Fast path: sorted, after `prev`, first and last inside the range.
        let fine = t.first().is_none_or(|&f| f >= prev && range.contains(&f))
            && t.last().is_none_or(|l| range.contains(l))
            && t.windows(2).all(|w| w[0] <= w[1]);
        if !fine {
            return Err(first_bad_row(source_id, slice, role, t, prev, range));
        }
        if rows.is_empty() {
            return Ok(());
        }
        let m = self.sources.len();
        let f = self.in_flight.entry(slice).or_insert_with(|| InFlight {
            per_source: (0..m).map(|_| SliceRows::default()).collect(),
        });
        f.per_source[src].extend_from(rows);
        Ok(())
    }

    /// `source_id` has ended `slice` (and, sources ending slices in order, every earlier
    /// one). Markers for slices of other builders are accepted too (a source may send one
    /// marker "ended everything below k").
    pub fn end(&mut self, source_id: u32, slice: i64) -> Result<(), SliceError> {
        let src = self.source_index(source_id)?;
        let e = &mut self.ended_before[src];
        *e = (*e).max(slice.saturating_add(1));
        Ok(())
    }

    /// `source_id` has ended (no more pieces): later slices no longer wait for it.
    pub fn end_source(&mut self, source_id: u32) -> Result<(), SliceError> {
        self.end(source_id, i64::MAX)
    }

    /// The next slice every source has ended, in slice order, with its pieces merged; empty
    /// slices are yielded too (an empty job), so every slice is either yielded or abandoned.
    /// When every source has ended for good, slices after the last one holding rows are not
    /// yielded.
    pub fn pop_job(&mut self) -> Option<SliceJob> {
        let n = i64::from(self.spec.builders);
        loop {
            let ready_before = self.ended_before.iter().copied().min().unwrap_or(i64::MAX);
            let limit = if ready_before == i64::MAX {
                // Every source finished: only slices holding rows remain.
                self.in_flight
                    .keys()
                    .next_back()
                    .map_or(self.next, |&k| k + 1)
            } else {
                ready_before
            };
            if self.next >= limit {
                return None;
            }
            let k = self.next;
            self.next = k.saturating_add(n);
            if self.abandoned.remove(&k) {
                continue;
            }
            let flight = self.in_flight.remove(&k).unwrap_or_default();
            let views: Vec<SinglesRef<'_>> = flight.per_source.iter().map(|r| r.view()).collect();
            let rows = match flight.per_source.len() {
                0 => SliceRows::default(),
                _ => merge_runs(&views),
            };
            return Some(SliceJob::new(self.spec, k, rows));
        }
    }

    /// A source that ended (given up: a restarted acquisition node comes back) is held to
    /// again from `slice` on, or from the first slice not yet given out if that is later;
    /// the slices before count as finished by it. Returns the slice it rejoins at.
    pub fn rejoin(&mut self, source_id: u32, slice: i64) -> Result<i64, SliceError> {
        let src = self.source_index(source_id)?;
        let at = slice.max(self.next);
        self.ended_before[src] = at;
        Ok(at)
    }

    /// Gives up on `slice` (some source never ended it): drops its rows and reports it
    /// missing. Later pieces for it are refused ([`SliceError::SliceClosed`]).
    pub fn abandon(&mut self, slice: i64) -> Result<MissingSlice, SliceError> {
        self.check_open(u32::MAX, slice)?;
        let rows_dropped = self
            .in_flight
            .remove(&slice)
            .map_or(0, |f| f.per_source.iter().map(|r| r.len() as u64).sum());
        self.abandoned.insert(slice);
        let body = self.spec.body_ps(slice);
        Ok(MissingSlice {
            slice,
            start_ps: body.start,
            end_ps: body.end,
            sources_not_ended: self
                .sources
                .iter()
                .zip(&self.ended_before)
                .filter(|(_, e)| **e <= slice)
                .map(|(s, _)| *s)
                .collect(),
            rows_dropped,
        })
    }

    fn source_index(&self, source_id: u32) -> Result<usize, SliceError> {
        self.sources
            .binary_search(&source_id)
            .map_err(|_| SliceError::UnknownSource {
                source_id,
                known: self.sources.clone(),
            })
    }

    /// Errors unless `slice` is this builder's and still open.
    fn check_open(&self, source_id: u32, slice: i64) -> Result<(), SliceError> {
        let owner = self.spec.builder_of(slice);
        if owner != self.builder {
            return Err(SliceError::WrongBuilder {
                slice,
                owner,
                builder: self.builder,
            });
        }
        if slice < self.next || self.abandoned.contains(&slice) {
            return Err(SliceError::SliceClosed { source_id, slice });
        }
        Ok(())
    }
}

/// The error for the first row of `t` outside `range` or before its predecessor (`prev` for
/// the first row).
fn first_bad_row(
    source_id: u32,
    slice: i64,
    role: PieceRole,
    t: &[i64],
    mut prev: i64,
    range: Range<i64>,
) -> SliceError {
    for (row, &t_ps) in t.iter().enumerate() {
        if !range.contains(&t_ps) {
            return SliceError::RowOutsidePiece {
                source_id,
                slice,
                role,
                row,
                t_ps,
                start_ps: range.start,
                end_ps: range.end,
            };
        }
        if t_ps < prev {
            return SliceError::NotTimeOrdered {
                source_id,
                row,
                previous_ps: prev,
                t_ps,
            };
        }
        prev = t_ps;
    }
    // Not reached: the caller found a bad row.
    SliceError::NotTimeOrdered {
        source_id,
        row: 0,
        previous_ps: prev,
        t_ps: prev,
    }
}
