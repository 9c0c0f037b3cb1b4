//! Counter unwrapping and the piecewise-linear clock fit against a known drifting clock: a
//! 1200.5 Hz sample clock whose rate drifts by a few ppm (slowly varying), a 32-bit counter
//! starting just below its wrap, a counter reset, and sync points once per reference second.

use proptest::prelude::*;
use scandaq_core::clock_fit::{
    ClockFit, ClockFitConfig, CounterUnwrapper, JumpKind, PointOutcome, SegmentStart, SyncPoint,
};

/// A drifting device clock: ticks elapsed at reference time `t` seconds.
struct DriftingClock {
    f0: f64,
    ppm: f64,
    swing_ppm: f64,
    period_s: f64,
}

impl DriftingClock {
    fn ticks_at(&self, t: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI / self.period_s;
        self.f0 * (t + 1e-6 * (self.ppm * t - self.swing_ppm / w * ((w * t).cos() - 1.0)))
    }
}

/// Runs `seconds` of sync points, with an optional counter reset at `reset_at` seconds, and
/// checks corrected times at many points against the truth. Returns the worst error (ns) and
/// the fit.
fn run(
    clock: &DriftingClock,
    start_counter: u64,
    seconds: u32,
    reset_at: Option<u32>,
) -> (f64, ClockFit) {
    let mut unwrap = CounterUnwrapper::u32_counter(100_000, 2_000);
    let mut fit = ClockFit::new(ClockFitConfig::default());
    let t0_ns: i64 = 1_790_000_000_000_000_000; // an epoch-like reference time
    // Per counter segment: unwrapped tick - true (unwrapped, unreset) tick.
    let mut seg_offset: Vec<i64> = Vec::new();
    let mut reset_ticks = 0i64; // true ticks at the reset: the counter restarts from 0 there
    for k in 0..=seconds {
        let n = clock.ticks_at(k as f64);
        if Some(k) == reset_at {
            reset_ticks = n.floor() as i64 - 5;
        }
        let whole = n.floor() as i64;
        let counter = if reset_at.is_some_and(|r| k >= r) {
            (whole - reset_ticks) as u64
        } else {
            start_counter + whole as u64
        };
        let u = unwrap.push(counter & 0xFFFF_FFFF);
        if u.segment as usize >= seg_offset.len() {
            seg_offset.push(u.tick - whole);
        }
        fit.add(
            SyncPoint {
                tick: u.tick,
                frac: n - n.floor(),
                reference_ns: t0_ns + k as i64 * 1_000_000_000,
            },
            u.segment,
        );
    }
    // Check at 7 points per second, inside the synced range, away from the reset second.
    let mut worst = 0.0f64;
    for j in 0..(seconds as usize * 7) {
        let t = j as f64 / 7.0 + 0.0123;
        if reset_at.is_some_and(|r| (t - r as f64).abs() < 1.0) {
            continue;
        }
        let seg = if reset_at.is_some_and(|r| t > r as f64) {
            1
        } else {
            0
        };
        let n = clock.ticks_at(t);
        let tick = n.floor() as i64 + seg_offset[seg];
        let got = fit.time(tick, n - n.floor()).expect("a fit");
        assert!(
            !got.extrapolated,
            "t = {t}: extrapolated inside the synced range"
        );
        let err = ((got.ns - t0_ns) as f64 + got.frac_ns - t * 1e9).abs();
        worst = worst.max(err);
    }
    (worst, fit)
}

#[test]
fn drifting_clock_with_wrap_and_reset_within_one_microsecond() {
    let clock = DriftingClock {
        f0: 1200.5,
        ppm: 3.0,
        swing_ppm: 1.5,
        period_s: 200.0,
    };
    let (worst, fit) = run(&clock, u32::MAX as u64 - 50_000, 600, Some(400));
    assert!(worst < 1000.0, "worst error {worst} ns");
    let segs = fit.segments();
    assert!(
        segs.iter().any(|s| s.start == SegmentStart::CounterJump),
        "{segs:?}"
    );
    assert!(
        segs.iter()
            .filter(|s| s.start == SegmentStart::Drift)
            .count()
            >= 2,
        "drift is followed: {segs:?}"
    );
    for s in &segs {
        assert!(s.max_residual_ns <= ClockFitConfig::default().max_residual_ns);
        assert!(
            (s.ns_per_tick / (1e9 / 1200.5) - 1.0).abs() < 10e-6,
            "{s:?}"
        );
    }
    assert_eq!(fit.rejected_points(), 0);
}

#[test]
fn a_clock_step_starts_an_unjoined_segment_and_extrapolation_is_flagged() {
    let mut fit = ClockFit::new(ClockFitConfig::default());
    for k in 0..20i64 {
        let step = if k >= 10 { 5_000_000 } else { 0 };
        fit.add(
            SyncPoint {
                tick: 1000 * k,
                frac: 0.0,
                reference_ns: 1_000_000_000 * k + step,
            },
            0,
        );
    }
    let segs = fit.segments();
    assert_eq!(segs.len(), 2, "{segs:?}");
    assert_eq!(segs[1].start, SegmentStart::ClockJump);
    assert_eq!(segs[1].first_tick, 10_000);
    assert!(fit.time(25_000, 0.0).unwrap().extrapolated);
    assert!(fit.time(-5, 0.0).unwrap().extrapolated);
    // Between the two segments (after segment 0's last point): extrapolated from segment 0.
    assert!(fit.time(9_500, 0.0).unwrap().extrapolated);
    assert_eq!(fit.time(12_000, 0.0).unwrap().ns, 12_005_000_000);
}

#[test]
fn non_advancing_sync_points_are_rejected() {
    let mut fit = ClockFit::new(ClockFitConfig::default());
    let p = |tick, ns| SyncPoint {
        tick,
        frac: 0.0,
        reference_ns: ns,
    };
    fit.add(p(100, 0), 0);
    fit.add(p(200, 1000), 0);
    fit.add(p(200, 1000), 0);
    fit.add(p(150, 500), 0);
    assert_eq!(fit.rejected_points(), 2);
    assert!(
        ClockFit::new(ClockFitConfig::default())
            .time(0, 0.0)
            .is_none()
    );
}

#[test]
fn u64_counter_jumps() {
    let mut u = CounterUnwrapper::u64_counter(1 << 20, 10);
    let a = u.push(u64::MAX - 3);
    let b = u.push(4);
    assert_eq!(b.tick - a.tick, 8);
    let j = u.push(1 << 40);
    assert_eq!(j.jump.map(|j| j.kind), Some(JumpKind::Forward));
    assert_eq!(j.tick, b.tick + 1);
    let back = u.push(1 << 30);
    assert_eq!(back.jump.map(|j| j.kind), Some(JumpKind::Backward));
    assert_eq!(back.segment, 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn any_slow_drift_within_one_microsecond(
        ppm in -8.0f64..8.0,
        swing in 0.0f64..2.0,
        period in 120.0f64..900.0,
        f0 in 900.0f64..6000.0,
        start in 0u64..(1u64 << 32),
    ) {
        let clock = DriftingClock { f0, ppm, swing_ppm: swing, period_s: period };
        let (worst, _) = run(&clock, start, 240, None);
        prop_assert!(worst < 1000.0, "worst {} ns", worst);
    }

    #[test]
    fn unwrapped_ticks_follow_true_counts(steps in proptest::collection::vec(0u64..5000, 1..200), start in 0u64..(1u64 << 32)) {
        let mut u = CounterUnwrapper::u32_counter(5000, 0);
        let mut truth = start;
        let first = u.push(start & 0xFFFF_FFFF).tick;
        for s in steps {
            truth += s;
            let got = u.push(truth & 0xFFFF_FFFF);
            prop_assert!(got.jump.is_none());
            prop_assert_eq!(got.tick - first, (truth - start) as i64);
        }
    }
}

fn point(tick: i64, reference_ns: i64) -> SyncPoint {
    SyncPoint {
        tick,
        frac: 0.0,
        reference_ns,
    }
}

#[test]
fn unwrapper_reports_its_segment_and_high_water_and_masks_raw_values() {
    // A 16-bit counter (half range 0x8000), forward window 100, backward window 10.
    let mut u = CounterUnwrapper::new(16, 100, 10);
    assert_eq!((u.segment(), u.high_water()), (0, None));
    // Bits above the counter width are not part of the count.
    assert_eq!(u.push(0x1_0005).tick, 5);
    assert_eq!(u.high_water(), Some(5));
    // A span of 4 counts starting at 10 moves the high-water mark to its last count, 13.
    assert_eq!(u.push_span(10, 4).tick, 10);
    assert_eq!(u.high_water(), Some(13));
    // Behind the high-water mark within the window: no new segment, the mark stays.
    assert_eq!(u.push(8).tick, 8);
    assert_eq!((u.segment(), u.high_water()), (0, Some(13)));
    // 0x8000 + 13 is exactly half the range ahead of the last count: a backward jump by the
    // half-range rule (it is not an advance), restarting right after the high-water mark.
    let j = u.push(0x8000 + 13);
    assert_eq!(j.jump.map(|j| j.kind), Some(JumpKind::Backward));
    assert_eq!((j.tick, j.segment), (14, 1));
    assert_eq!((u.segment(), u.high_water()), (1, Some(14)));
}

#[test]
fn segment_start_names_are_the_documented_table_strings() {
    // docs/meg.md, clock_segments.start.
    let names: Vec<&str> = [
        SegmentStart::First,
        SegmentStart::Drift,
        SegmentStart::Length,
        SegmentStart::ClockJump,
        SegmentStart::CounterJump,
    ]
    .into_iter()
    .map(SegmentStart::as_str)
    .collect();
    assert_eq!(
        names,
        ["first", "drift", "length", "clock_jump", "counter_jump"]
    );
}

#[test]
fn residuals_of_a_three_point_fit_match_the_hand_computed_least_squares() {
    // x = 0, 1000, 2000 ticks; y = 0, 1090, 2000 ns. By hand: mean x 1000, mean y 1030,
    // Sxx = 2e6, Sxy = 1000 * 1030 + 1000 * 970 = 2e6, so slope 1 ns/tick, intercept 30 ns;
    // residuals -30, +60, -30: rms sqrt(5400 / 3) = sqrt(1800), max 60.
    let mut fit = ClockFit::new(ClockFitConfig::default());
    fit.add(point(0, 0), 0);
    fit.add(point(1000, 1090), 0);
    fit.add(point(2000, 2000), 0);
    let s = fit.segments();
    assert_eq!(s.len(), 1);
    assert!((s[0].ns_per_tick - 1.0).abs() < 1e-12, "{s:?}");
    assert_eq!(s[0].offset_ns, 30);
    assert!(
        (s[0].rms_residual_ns - 1800f64.sqrt()).abs() < 1e-9,
        "{s:?}"
    );
    assert!((s[0].max_residual_ns - 60.0).abs() < 1e-9, "{s:?}");
    assert_eq!(s[0].n_points, 3);
    assert_eq!(fit.last_tick(), Some(2000));
}

#[test]
fn a_drift_split_joins_the_new_line_at_the_last_point_with_its_own_rate() {
    // 1 ns/tick for three points, then a point 1000 ns late: the least-squares line through
    // all four (slope 1.3, intercept -200) leaves the third point 400 ns off, over the 200 ns
    // limit (and the point is under the 100 us jump limit). So a new segment starts at the
    // third point, its line through both points: (4000 - 2000) / 1000 = 2 ns/tick.
    let mut fit = ClockFit::new(ClockFitConfig::default());
    for k in 0..3 {
        assert!(matches!(
            fit.add(point(1000 * k, 1000 * k), 7),
            PointOutcome::Added | PointOutcome::NewSegment(SegmentStart::First)
        ));
    }
    assert_eq!(
        fit.add(point(3000, 4000), 7),
        PointOutcome::NewSegment(SegmentStart::Drift)
    );
    assert_eq!(fit.segment_count(), 2);
    assert_eq!(fit.last_tick(), Some(3000));
    assert_eq!(fit.last_counter_segment(), Some(7));
    let s = fit.segments();
    assert_eq!(
        (s[1].first_tick, s[1].last_tick, s[1].n_points),
        (2000, 3000, 2)
    );
    assert!((s[1].ns_per_tick - 2.0).abs() < 1e-12, "{s:?}");
    assert_eq!(s[1].offset_ns, 2000);
    // Halfway along the new line: 2000 + 2 * 500 = 3000 ns.
    let t = fit.time(2500, 0.0).expect("a fitted time");
    assert_eq!((t.ns, t.segment, t.extrapolated), (3000, 1, false));
    // A point of another counter segment starts an unjoined segment and is reported as such.
    fit.add(point(5000, 9000), 8);
    assert_eq!(fit.last_counter_segment(), Some(8));
    assert_eq!(fit.segment_count(), 3);
}

#[test]
fn a_residual_of_exactly_the_limit_keeps_the_segment() {
    // x = 0, 1024, 2048 ticks; y = 0, 1024, 2648 ns (all exact in binary). By hand: slope
    // 2648 / 2048, intercept -100, residuals +100, -200, +100: exactly the 200 ns limit, which
    // a segment may reach (only beyond it does the segment close).
    let mut fit = ClockFit::new(ClockFitConfig::default());
    fit.add(point(0, 0), 0);
    fit.add(point(1024, 1024), 0);
    assert_eq!(fit.add(point(2048, 2648), 0), PointOutcome::Added);
    let s = fit.segments();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].max_residual_ns, 200.0);
}

#[test]
fn the_jump_limit_is_exclusive_and_applies_from_the_second_point_or_a_nominal_rate() {
    // Two points give the rate (1 ns/tick); a third exactly 100 us off the line is not a jump
    // (the limit is exclusive), so it closes the segment as drift instead.
    let mut fit = ClockFit::new(ClockFitConfig::default());
    fit.add(point(0, 0), 0);
    fit.add(point(1000, 1000), 0);
    assert_eq!(
        fit.add(point(2000, 2000 + 100_000), 0),
        PointOutcome::NewSegment(SegmentStart::Drift)
    );
    // One ns more is a jump.
    let mut fit = ClockFit::new(ClockFitConfig::default());
    fit.add(point(0, 0), 0);
    fit.add(point(1000, 1000), 0);
    assert_eq!(
        fit.add(point(2000, 2000 + 100_001), 0),
        PointOutcome::NewSegment(SegmentStart::ClockJump)
    );
    // With a nominal rate, the second point is already checked against it.
    let nominal = ClockFitConfig {
        nominal_ns_per_tick: Some(1.0),
        ..ClockFitConfig::default()
    };
    let mut fit = ClockFit::new(nominal);
    fit.add(point(0, 0), 0);
    assert_eq!(
        fit.add(point(1000, 1_000_000), 0),
        PointOutcome::NewSegment(SegmentStart::ClockJump)
    );
    // Without one, a second point cannot be judged: it is added.
    let mut fit = ClockFit::new(ClockFitConfig::default());
    fit.add(point(0, 0), 0);
    assert_eq!(fit.add(point(1000, 1_000_000), 0), PointOutcome::Added);
}

#[test]
fn after_a_clock_jump_the_single_point_segment_uses_the_last_fitted_rate() {
    let mut fit = ClockFit::new(ClockFitConfig::default());
    for k in 0..3 {
        fit.add(point(1000 * k, 2000 * k), 0); // 2 ns per tick
    }
    assert_eq!(fit.ns_per_tick(0), Some(2.0));
    assert_eq!(
        fit.add(point(3000, 10_000_000), 0),
        PointOutcome::NewSegment(SegmentStart::ClockJump)
    );
    // The new segment has one point: its rate is the previous segment's.
    assert_eq!(fit.ns_per_tick(1), Some(2.0));
    let t = fit.time(3100, 0.0).expect("a rate is known");
    assert_eq!((t.ns, t.segment, t.extrapolated), (10_000_200, 1, true));
    assert_eq!(fit.ns_per_tick(2), None);
    // A fit with one point and no nominal rate has no rate at all.
    let mut lone = ClockFit::new(ClockFitConfig::default());
    lone.add(point(0, 0), 0);
    assert_eq!(lone.ns_per_tick(0), None);
    assert_eq!(lone.time(10, 0.0), None);
}

#[test]
fn segment_choice_and_extrapolation_at_exact_boundaries() {
    // Segment 0: ticks 0..=2000 (1 ns/tick). Segment 1 starts after a clock jump at tick
    // 3000 + 0.5 with its own points.
    let mut fit = ClockFit::new(ClockFitConfig::default());
    for k in 0..3 {
        fit.add(point(1000 * k, 1000 * k), 0);
    }
    let jump = SyncPoint {
        tick: 3000,
        frac: 0.5,
        reference_ns: 5_000_000,
    };
    assert_eq!(
        fit.add(jump, 0),
        PointOutcome::NewSegment(SegmentStart::ClockJump)
    );
    // At the first and at the last point of a segment the time is interpolated, not
    // extrapolated.
    let first = fit.time(0, 0.0).expect("fitted");
    assert_eq!((first.ns, first.segment, first.extrapolated), (0, 0, false));
    let last = fit.time(2000, 0.0).expect("fitted");
    assert_eq!((last.ns, last.segment, last.extrapolated), (2000, 0, false));
    // On the jump's tick: before its fraction the old segment applies, from it the new one.
    assert_eq!(fit.time(3000, 0.25).map(|t| t.segment), Some(0));
    let at = fit.time(3000, 0.5).expect("fitted");
    assert_eq!((at.ns, at.segment), (5_000_000, 1));
}
