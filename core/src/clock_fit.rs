//! Device-counter unwrapping and the piecewise-linear fit of a device clock against a
//! reference clock (docs/meg.md "Clock model").
//!
//! [`CounterUnwrapper`] turns a wrapping N-bit counter (32-bit sample counters, 64-bit tick
//! counters) into monotone `i64` ticks. A step backwards further than the tolerated reorder
//! window, or forwards further than the largest plausible advance, is a *jump* (a counter reset
//! or glitch): it starts a new counter segment, reported to the caller, whose ticks continue
//! right after the highest tick seen so far, so ticks never go backwards.
//!
//! [`ClockFit`] fits reference time (ns) against unwrapped device ticks from sync points (a
//! device counter latched at a reference-clock edge). Each fit segment is a least-squares line
//! (offset + ns per tick); a segment grows while every one of its points stays within
//! `max_residual_ns` of its line, and a point that does not fit closes it: the next segment
//! starts at the closed segment's last point (the two lines meet there), so a clock whose rate
//! drifts slowly is followed by short lines. A point far off the line (`jump_residual_ns`) or a
//! new counter segment starts a fresh, unconnected segment (a clock reset). [`ClockFit::time`]
//! interpolates inside a segment and extrapolates (flagged) outside every segment. Time is never
//! derived from an assumed integer period.

/// Kind of counter jump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JumpKind {
    /// The counter went backwards further than the reorder window (a reset, usually).
    Backward,
    /// The counter advanced further than the largest plausible advance.
    Forward,
}

/// A counter jump: the counter left its expected range, a new counter segment starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterJump {
    /// Backwards or forwards.
    pub kind: JumpKind,
    /// Raw counter value of the highest tick seen before the jump.
    pub raw_before: u64,
    /// Raw counter value that jumped.
    pub raw_after: u64,
    /// Number of the counter segment it starts (the first segment is 0).
    pub new_segment: u32,
    /// Unwrapped tick given to `raw_after` (the highest tick seen so far + 1).
    pub restart_tick: i64,
}

/// One unwrapped counter value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unwrapped {
    /// Monotone-unwrapped tick.
    pub tick: i64,
    /// Counter segment the tick belongs to.
    pub segment: u32,
    /// Set when this value started a new segment.
    pub jump: Option<CounterJump>,
}

/// Unwraps an N-bit wrapping counter into monotone `i64` ticks with jump detection.
#[derive(Clone, Debug)]
pub struct CounterUnwrapper {
    mask: u64,
    half: u64,
    max_forward: u64,
    max_backward: u64,
    /// (raw, tick) of the highest tick seen.
    high_water: Option<(u64, i64)>,
    segment: u32,
}

impl CounterUnwrapper {
    /// An unwrapper for a `bits`-wide counter (1..=64, clamped). `max_forward`: the largest
    /// advance between consecutive values that is not a jump (cover the longest gap you want
    /// counted as missing data); `max_backward`: how far a value may lie behind the highest
    /// tick seen without being a reset (reordering, a sync point latched inside a block
    /// already delivered, a duplicate).
    pub fn new(bits: u32, max_forward: u64, max_backward: u64) -> Self {
        let bits = bits.clamp(1, 64);
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let half = 1u64 << (bits - 1);
        Self {
            mask,
            half,
            max_forward: max_forward.min(half - 1),
            max_backward: max_backward.min(half),
            high_water: None,
            segment: 0,
        }
    }

    /// A 32-bit counter.
    pub fn u32_counter(max_forward: u64, max_backward: u64) -> Self {
        Self::new(32, max_forward, max_backward)
    }

    /// A 64-bit counter.
    pub fn u64_counter(max_forward: u64, max_backward: u64) -> Self {
        Self::new(64, max_forward, max_backward)
    }

    /// Current counter segment.
    pub fn segment(&self) -> u32 {
        self.segment
    }

    /// Highest tick seen so far.
    pub fn high_water(&self) -> Option<i64> {
        self.high_water.map(|(_, t)| t)
    }

    /// Unwraps one counter value.
    pub fn push(&mut self, raw: u64) -> Unwrapped {
        self.push_span(raw, 1)
    }

    /// Unwraps the first value of a span of `len` consecutive counts (a block of samples):
    /// the high-water mark moves to the span's last count. `len` 0 counts as 1.
    pub fn push_span(&mut self, raw: u64, len: u64) -> Unwrapped {
        let raw = raw & self.mask;
        let extra = len.max(1) - 1;
        let Some((hw_raw, hw_tick)) = self.high_water else {
            let tick = (raw & (i64::MAX as u64 >> 1)) as i64;
            self.set_high_water(raw, tick, extra);
            return Unwrapped {
                tick,
                segment: self.segment,
                jump: None,
            };
        };
        let d = raw.wrapping_sub(hw_raw) & self.mask;
        let (tick, jump) = if d < self.half && d <= self.max_forward {
            (hw_tick.saturating_add(d as i64), None)
        } else if d >= self.half && (self.mask - d).saturating_add(1) <= self.max_backward {
            (hw_tick - ((self.mask - d) as i64 + 1), None)
        } else {
            self.segment += 1;
            let tick = hw_tick.saturating_add(1);
            let kind = if d < self.half {
                JumpKind::Forward
            } else {
                JumpKind::Backward
            };
            let jump = CounterJump {
                kind,
                raw_before: hw_raw,
                raw_after: raw,
                new_segment: self.segment,
                restart_tick: tick,
            };
            self.high_water = Some((raw, tick));
            (tick, Some(jump))
        };
        if tick.saturating_add(extra as i64) > self.high_water.map_or(i64::MIN, |(_, t)| t) {
            self.set_high_water(raw, tick, extra);
        }
        Unwrapped {
            tick,
            segment: self.segment,
            jump,
        }
    }

    fn set_high_water(&mut self, raw: u64, tick: i64, extra: u64) {
        self.high_water = Some((
            raw.wrapping_add(extra) & self.mask,
            tick.saturating_add(extra as i64),
        ));
    }
}

/// Options of the clock fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockFitConfig {
    /// Largest residual (ns) a point may have from its segment's line; a point that would
    /// push a segment beyond it closes the segment (the clock drifted).
    pub max_residual_ns: f64,
    /// A point further than this (ns) from the line extrapolated from the open segment is a
    /// clock jump/reset: it starts a fresh segment not joined to the previous one.
    pub jump_residual_ns: f64,
    /// Largest number of points in one segment (bounds memory and refit cost).
    pub max_points_per_segment: usize,
    /// Nominal ns per tick, used only while a segment has a single point and no earlier
    /// segment gives a rate.
    pub nominal_ns_per_tick: Option<f64>,
}

impl Default for ClockFitConfig {
    fn default() -> Self {
        Self {
            max_residual_ns: 200.0,
            jump_residual_ns: 100_000.0,
            max_points_per_segment: 600,
            nominal_ns_per_tick: None,
        }
    }
}

/// Why a fit segment started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentStart {
    /// The first sync point of the stream.
    First,
    /// The previous segment's residual would have exceeded the threshold (rate drift); this
    /// segment starts at the previous one's last point.
    Drift,
    /// The previous segment reached its point limit; starts at its last point.
    Length,
    /// A point far off the previous line: a clock jump or reset.
    ClockJump,
    /// The device counter jumped (a new counter segment).
    CounterJump,
}

impl SegmentStart {
    /// Name used in tables and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentStart::First => "first",
            SegmentStart::Drift => "drift",
            SegmentStart::Length => "length",
            SegmentStart::ClockJump => "clock_jump",
            SegmentStart::CounterJump => "counter_jump",
        }
    }
}

/// A sync point: device tick (unwrapped, with its sub-tick fraction) at a reference time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyncPoint {
    /// Unwrapped device tick at the reference edge.
    pub tick: i64,
    /// Fraction of a tick at the edge, in [0, 1).
    pub frac: f64,
    /// Reference time of the edge, ns.
    pub reference_ns: i64,
}

/// One fitted segment, as reported (a row of a `clock_segments` table).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockSegment {
    /// Counter segment of its points.
    pub counter_segment: u32,
    /// Tick of its first point.
    pub first_tick: i64,
    /// Tick of its last point.
    pub last_tick: i64,
    /// Fitted reference time at `first_tick`, ns.
    pub offset_ns: i64,
    /// Fitted rate, ns per tick.
    pub ns_per_tick: f64,
    /// RMS residual of its points, ns.
    pub rms_residual_ns: f64,
    /// Largest absolute residual of its points, ns.
    pub max_residual_ns: f64,
    /// Number of sync points fitted.
    pub n_points: u32,
    /// Why it started.
    pub start: SegmentStart,
}

/// A corrected time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockTime {
    /// Reference time, ns (rounded to the nearest ns).
    pub ns: i64,
    /// Sub-ns remainder of the fitted value (ns - 0.5 ..= ns + 0.5).
    pub frac_ns: f64,
    /// True when the tick lies outside every segment (the value is extrapolated).
    pub extrapolated: bool,
    /// Index of the segment used.
    pub segment: usize,
}

#[derive(Clone, Debug)]
struct Segment {
    counter_segment: u32,
    start: SegmentStart,
    /// Base of the coordinates: x = ticks since base, y = ns since base.
    base_tick: i64,
    base_frac: f64,
    base_ns: i64,
    /// Points (x, y) relative to the base.
    points: Vec<(f64, f64)>,
    /// y = intercept + slope * x.
    intercept: f64,
    slope: f64,
    last_tick: i64,
    rms: f64,
    max_abs: f64,
}

impl Segment {
    fn new(p: SyncPoint, counter_segment: u32, start: SegmentStart, slope: f64) -> Self {
        Self {
            counter_segment,
            start,
            base_tick: p.tick,
            base_frac: p.frac,
            base_ns: p.reference_ns,
            points: vec![(0.0, 0.0)],
            intercept: 0.0,
            slope,
            last_tick: p.tick,
            rms: 0.0,
            max_abs: 0.0,
        }
    }

    fn x_of(&self, tick: i64, frac: f64) -> f64 {
        (tick.wrapping_sub(self.base_tick)) as f64 + (frac - self.base_frac)
    }

    fn xy(&self, p: SyncPoint) -> (f64, f64) {
        (
            self.x_of(p.tick, p.frac),
            (p.reference_ns.wrapping_sub(self.base_ns)) as f64,
        )
    }

    fn predict(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }

    /// Least-squares line through `points`; returns (intercept, slope, rms, max |residual|).
    fn fit(points: &[(f64, f64)], fallback_slope: f64) -> (f64, f64, f64, f64) {
        let n = points.len() as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        let (mut sxx, mut sxy) = (0.0, 0.0);
        for &(x, y) in points {
            sxx += (x - mx) * (x - mx);
            sxy += (x - mx) * (y - my);
        }
        let slope = if points.len() >= 2 && sxx > 0.0 {
            sxy / sxx
        } else {
            fallback_slope
        };
        let intercept = my - slope * mx;
        let (mut ss, mut max_abs) = (0.0f64, 0.0f64);
        for &(x, y) in points {
            let r = y - (intercept + slope * x);
            ss += r * r;
            max_abs = max_abs.max(r.abs());
        }
        (intercept, slope, (ss / n).sqrt(), max_abs)
    }

    fn refit(&mut self) {
        let (i, s, rms, max_abs) = Self::fit(&self.points, self.slope);
        self.intercept = i;
        self.slope = s;
        self.rms = rms;
        self.max_abs = max_abs;
    }

    fn report(&self) -> ClockSegment {
        ClockSegment {
            counter_segment: self.counter_segment,
            first_tick: self.base_tick,
            last_tick: self.last_tick,
            offset_ns: self
                .base_ns
                .saturating_add(self.predict(0.0).round() as i64),
            ns_per_tick: self.slope,
            rms_residual_ns: self.rms,
            max_residual_ns: self.max_abs,
            n_points: self.points.len() as u32,
            start: self.start,
        }
    }
}

/// Piecewise-linear fit of reference time against device ticks (see the module docs).
#[derive(Clone, Debug)]
pub struct ClockFit {
    config: ClockFitConfig,
    segments: Vec<Segment>,
    last_point: Option<SyncPoint>,
    rejected: u64,
}

/// What adding a sync point did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointOutcome {
    /// Added to the open segment.
    Added,
    /// Started a new segment for the given reason.
    NewSegment(SegmentStart),
    /// Rejected: its tick does not advance past the previous point's.
    NotAdvancing,
}

impl ClockFit {
    /// An empty fit.
    pub fn new(config: ClockFitConfig) -> Self {
        Self {
            config,
            segments: Vec::new(),
            last_point: None,
            rejected: 0,
        }
    }

    /// Sync points rejected because their tick did not advance.
    pub fn rejected_points(&self) -> u64 {
        self.rejected
    }

    /// Number of segments so far.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Tick of the last accepted sync point.
    pub fn last_tick(&self) -> Option<i64> {
        self.last_point.map(|p| p.tick)
    }

    /// Counter segment of the last accepted sync point.
    pub fn last_counter_segment(&self) -> Option<u32> {
        self.segments.last().map(|s| s.counter_segment)
    }

    /// Adds a sync point from counter segment `counter_segment` (see [`CounterUnwrapper`]).
    pub fn add(&mut self, p: SyncPoint, counter_segment: u32) -> PointOutcome {
        let fallback = self.fallback_slope();
        let Some(open) = self.segments.last_mut() else {
            self.segments.push(Segment::new(
                p,
                counter_segment,
                SegmentStart::First,
                fallback,
            ));
            self.last_point = Some(p);
            return PointOutcome::NewSegment(SegmentStart::First);
        };
        if open.counter_segment != counter_segment {
            return self.start_fresh(p, counter_segment, SegmentStart::CounterJump);
        }
        let (x, y) = open.xy(p);
        let last_x = open.points.last().map_or(0.0, |q| q.0);
        if x <= last_x {
            self.rejected += 1;
            return PointOutcome::NotAdvancing;
        }
        let known_rate = open.points.len() >= 2 || fallback.is_finite();
        if known_rate && (y - open.predict(x)).abs() > self.config.jump_residual_ns {
            return self.start_fresh(p, counter_segment, SegmentStart::ClockJump);
        }
        if open.points.len() >= self.config.max_points_per_segment.max(2) {
            return self.start_joined(p, counter_segment, SegmentStart::Length);
        }
        open.points.push((x, y));
        let (i, s, rms, max_abs) = Segment::fit(&open.points, open.slope);
        if open.points.len() >= 3 && max_abs > self.config.max_residual_ns {
            open.points.pop();
            return self.start_joined(p, counter_segment, SegmentStart::Drift);
        }
        open.intercept = i;
        open.slope = s;
        open.rms = rms;
        open.max_abs = max_abs;
        open.last_tick = p.tick;
        self.last_point = Some(p);
        PointOutcome::Added
    }

    fn fallback_slope(&self) -> f64 {
        self.segments
            .iter()
            .rev()
            .find(|s| s.points.len() >= 2)
            .map(|s| s.slope)
            .or(self.config.nominal_ns_per_tick)
            .unwrap_or(f64::NAN)
    }

    fn start_fresh(
        &mut self,
        p: SyncPoint,
        counter_segment: u32,
        why: SegmentStart,
    ) -> PointOutcome {
        let slope = self.fallback_slope();
        self.segments
            .push(Segment::new(p, counter_segment, why, slope));
        self.last_point = Some(p);
        PointOutcome::NewSegment(why)
    }

    fn start_joined(
        &mut self,
        p: SyncPoint,
        counter_segment: u32,
        why: SegmentStart,
    ) -> PointOutcome {
        let Some(prev) = self.last_point else {
            return self.start_fresh(p, counter_segment, why);
        };
        let slope = self.fallback_slope();
        let mut seg = Segment::new(prev, counter_segment, why, slope);
        let xy = seg.xy(p);
        seg.points.push(xy);
        seg.refit();
        seg.last_tick = p.tick;
        self.segments.push(seg);
        self.last_point = Some(p);
        PointOutcome::NewSegment(why)
    }

    /// Corrected time of device tick `tick + frac`, or `None` before any usable fit (no
    /// point, or a single point with no known rate).
    pub fn time(&self, tick: i64, frac: f64) -> Option<ClockTime> {
        if self.segments.is_empty() {
            return None;
        }
        // Last segment whose first tick is <= tick (segments are in tick order).
        let idx = self
            .segments
            .partition_point(|s| s.base_tick < tick || (s.base_tick == tick && s.base_frac <= frac))
            .saturating_sub(1);
        let seg = &self.segments[idx];
        if !seg.slope.is_finite() {
            return None;
        }
        let x = seg.x_of(tick, frac);
        let last_x = seg.points.last().map_or(0.0, |q| q.0);
        let extrapolated = x < 0.0 || x > last_x;
        let y = seg.predict(x);
        let whole = y.round();
        Some(ClockTime {
            ns: seg.base_ns.saturating_add(whole as i64),
            frac_ns: y - whole,
            extrapolated,
            segment: idx,
        })
    }

    /// Fitted rate of segment `idx` (as in [`ClockTime::segment`]), ns per tick.
    pub fn ns_per_tick(&self, idx: usize) -> Option<f64> {
        self.segments
            .get(idx)
            .map(|s| s.slope)
            .filter(|s| s.is_finite())
    }

    /// Every segment so far (the last one still open).
    pub fn segments(&self) -> Vec<ClockSegment> {
        self.segments.iter().map(Segment::report).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwraps_a_u32_counter_across_the_wrap() {
        let mut u = CounterUnwrapper::u32_counter(10_000, 1_000);
        let a = u.push_span(u32::MAX as u64 - 99, 100);
        let b = u.push_span(0, 100);
        assert_eq!(b.tick - a.tick, 100);
        assert_eq!(b.jump, None);
        let back = u.push(50);
        assert_eq!(back.tick, b.tick + 50);
        let reset = u.push_span(u32::MAX as u64 - 5000, 100);
        assert_eq!(reset.jump.map(|j| j.kind), Some(JumpKind::Backward));
        assert_eq!(reset.tick, b.tick + 100);
        assert_eq!(reset.segment, 1);
        let fwd = u.push(1_000_000);
        assert_eq!(fwd.jump.map(|j| j.kind), Some(JumpKind::Forward));
    }

    #[test]
    fn fits_a_linear_clock_exactly() {
        let mut f = ClockFit::new(ClockFitConfig::default());
        for k in 0..10i64 {
            f.add(
                SyncPoint {
                    tick: 1000 + 1200 * k,
                    frac: 0.25,
                    reference_ns: 1_000_000_000 * k,
                },
                0,
            );
        }
        assert_eq!(f.segment_count(), 1);
        let t = f.time(1000 + 600, 0.25).unwrap();
        assert!((t.ns as f64 + t.frac_ns - 5e8).abs() < 1e-3, "{t:?}");
        assert!(!t.extrapolated);
        assert!(f.time(1000 + 12_000, 0.25).unwrap().extrapolated);
    }
}
