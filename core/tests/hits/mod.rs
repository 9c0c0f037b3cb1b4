//! `HitBatch`, the struct-of-arrays batch every stage hands on: its flag bits against the
//! documented table (docs/tables.md, `flags`), and each operation against a plain row-wise
//! model written here (rows as tuples, sorted and merged with the standard library).

use scandaq_core::hits::{HitBatch, hit_flags};

/// One hit as a tuple of every column: (t_ps, channel, energy, flags, frame, tcoarse,
/// ecoarse, tfine, efine, tac).
type Row = (i64, u32, f32, u16, u64, u16, u16, u16, u16, u8);

/// A batch whose every column differs per row, so a column left behind is seen.
fn batch(times: &[i64]) -> HitBatch {
    let mut b = HitBatch::default();
    for (k, &t) in times.iter().enumerate() {
        let k16 = k as u16;
        b.t_ps.push(t);
        b.channel.push(100 + k as u32);
        b.energy_kev.push(511.0 + k as f32);
        b.flags.push(k16 % 7);
        b.frame.push(1000 + k as u64);
        b.tcoarse.push(2000 + k16);
        b.ecoarse.push(3000 + k16);
        b.tfine.push(4000 + k16);
        b.efine.push(5000 + k16);
        b.tac.push((k % 4) as u8);
    }
    b
}

fn rows(b: &HitBatch) -> Vec<Row> {
    (0..b.t_ps.len())
        .map(|i| {
            (
                b.t_ps[i],
                b.channel[i],
                b.energy_kev[i],
                b.flags[i],
                b.frame[i],
                b.tcoarse[i],
                b.ecoarse[i],
                b.tfine[i],
                b.efine[i],
                b.tac[i],
            )
        })
        .collect()
}

#[test]
fn flag_bits_are_the_documented_ones() {
    // docs/tables.md, singles `flags`: bit 0 ToT, 1 no skew, 2 lossy frame, 3 fine code out
    // of range, 5 clock rebased.
    assert_eq!(hit_flags::ENERGY_IS_TOT_NS, 1);
    assert_eq!(hit_flags::NO_SKEW, 2);
    assert_eq!(hit_flags::FROM_LOSSY_FRAME, 4);
    assert_eq!(hit_flags::FINE_OUT_OF_RANGE, 8);
    assert_eq!(hit_flags::CLOCK_REBASED, 32);
}

#[test]
fn capacity_length_clear_and_row_copies_cover_every_column() {
    let b = HitBatch::with_capacity(50);
    assert!(b.is_empty());
    for cap in [
        b.t_ps.capacity(),
        b.channel.capacity(),
        b.energy_kev.capacity(),
        b.flags.capacity(),
        b.frame.capacity(),
        b.tcoarse.capacity(),
        b.ecoarse.capacity(),
        b.tfine.capacity(),
        b.efine.capacity(),
        b.tac.capacity(),
    ] {
        assert!(cap >= 50, "a column without the requested room: {cap}");
    }
    let src = batch(&[7, 8, 9]);
    assert_eq!((src.len(), src.is_empty()), (3, false));
    let mut copy = HitBatch::default();
    copy.push_row_from(&src, 2);
    copy.push_row_from(&src, 0);
    assert_eq!(rows(&copy), vec![rows(&src)[2], rows(&src)[0]]);
    let mut range = HitBatch::default();
    range.extend_from_range(&src, 1..3);
    assert_eq!(rows(&range), rows(&src)[1..3].to_vec());
    range.clear();
    assert!(range.is_empty());
    assert_eq!(rows(&range), Vec::<Row>::new());
    // `from_times`: the given times, channel = row.
    let f = HitBatch::from_times(&[4, 2]);
    assert_eq!(
        (f.t_ps.clone(), f.channel.clone(), f.len()),
        (vec![4, 2], vec![0, 1], 2)
    );
}

#[test]
fn retain_from_keeps_rows_by_their_index_after_start() {
    let mut b = batch(&[10, 11, 12, 13, 14, 15]);
    let before = rows(&b);
    // Index is counted from `start`: keep the first and the fourth row after it.
    b.retain_from(2, |i| i == 0 || i == 3);
    assert_eq!(
        rows(&b),
        vec![before[0], before[1], before[2], before[5]],
        "rows before start untouched, then rows 2 and 5"
    );
}

#[test]
fn time_order_is_checked_with_ties_allowed() {
    assert!(batch(&[1, 1, 2]).is_time_ordered());
    assert!(!batch(&[2, 1]).is_time_ordered());
    assert!(HitBatch::default().is_time_ordered());
}

#[test]
fn sorting_equals_a_stable_row_sort_at_the_packed_key_limit() {
    // A batch spanning exactly 2^40 ps is the first that cannot use packed 40-bit keys.
    for span in [(1i64 << 40) - 1, 1 << 40, (1 << 40) + 1] {
        let times = [span, 0, 5, span, 1, 0];
        let mut b = batch(&times);
        let mut want = rows(&b);
        want.sort_by_key(|r| r.0); // stable
        b.sort_by_time();
        assert_eq!(rows(&b), want, "span {span}");
    }
    let mut sorted = batch(&[1, 2, 3]);
    let before = rows(&sorted);
    sorted.sort_by_time();
    assert_eq!(rows(&sorted), before);
}

#[test]
fn take_before_splits_at_the_limit() {
    let times = [1, 3, 3, 5];
    for limit in [0, 1, 3, 4, 5, 6] {
        let mut b = batch(&times);
        let all = rows(&b);
        let head = b.take_before(limit);
        let split = all.iter().position(|r| r.0 >= limit).unwrap_or(all.len());
        assert_eq!(rows(&head), all[..split].to_vec(), "limit {limit}");
        assert_eq!(rows(&b), all[split..].to_vec(), "limit {limit}");
    }
}

#[test]
fn merging_equals_a_stable_sort_of_both_whichever_ends_first() {
    let cases: [(&[i64], &[i64]); 7] = [
        (&[1, 3, 3, 9], &[0, 3, 4, 10, 11]),
        (&[3, 5], &[1, 3, 3]),
        (&[5, 6, 7], &[1]),
        (&[1], &[5, 6, 7]),
        (&[2, 2, 2], &[2, 2]),
        (&[], &[1, 2]),
        (&[4, 8], &[]),
    ];
    for (ta, tb) in cases {
        let a = batch(ta);
        let mut b = batch(tb);
        // Mark b's rows so ties show which side came first.
        for c in &mut b.channel {
            *c += 1000;
        }
        let mut want: Vec<Row> = rows(&a).into_iter().chain(rows(&b)).collect();
        want.sort_by_key(|r| r.0); // stable: a's rows first on ties
        assert_eq!(
            rows(&HitBatch::merge_sorted(&a, &b)),
            want,
            "{ta:?} + {tb:?}"
        );
    }
}

/// The batch without its raw columns (as a replay without `--raw-columns` carries it).
fn physics_only(b: &HitBatch) -> HitBatch {
    HitBatch {
        t_ps: b.t_ps.clone(),
        channel: b.channel.clone(),
        energy_kev: b.energy_kev.clone(),
        flags: b.flags.clone(),
        ..HitBatch::default()
    }
}

#[test]
fn batches_without_raw_columns_go_through_every_operation_like_the_physics_of_full_ones() {
    let times = [5, 1, 3, 3, 9, 0, 7, 7, 2];
    // Frames as the decoder gives them: contiguous runs (the sort's short path).
    let frames: Vec<u64> = (0..times.len() as u64).map(|k| k / 3).collect();
    let full = batch(&times);
    let mut want = full.clone();
    want.sort_by_time();
    let mut got = physics_only(&full);
    got.sort_by_time_in_frames(&frames);
    assert_eq!(got, physics_only(&want));
    assert!(got.frame.is_empty() && got.tac.is_empty());
    // The same frames in the column: the same permutation as sort_by_time.
    let mut with_frames = full.clone();
    with_frames.frame = frames.clone();
    let mut by_column = with_frames.clone();
    by_column.sort_by_time();
    with_frames.sort_by_time_in_frames(&frames);
    assert_eq!(with_frames, by_column);

    for limit in [0, 3, 6, 10] {
        let (mut a, mut b) = (want.clone(), physics_only(&want));
        let (ha, hb) = (a.take_before(limit), b.take_before(limit));
        assert_eq!(
            (physics_only(&ha), physics_only(&a)),
            (hb, b),
            "limit {limit}"
        );
    }
    let other = batch(&[0, 4, 4, 8]);
    assert_eq!(
        HitBatch::merge_sorted(&physics_only(&want), &physics_only(&other)),
        physics_only(&HitBatch::merge_sorted(&want, &other))
    );
    let mut copy = HitBatch::default();
    copy.extend_from_range(&physics_only(&want), 2..5);
    copy.push_row_from(&physics_only(&want), 0);
    let mut full_copy = HitBatch::default();
    full_copy.extend_from_range(&want, 2..5);
    full_copy.push_row_from(&want, 0);
    assert_eq!(copy, physics_only(&full_copy));
    let mut kept = physics_only(&want);
    kept.retain_from(1, |i| i % 2 == 0);
    let mut kept_full = want.clone();
    kept_full.retain_from(1, |i| i % 2 == 0);
    assert_eq!(kept, physics_only(&kept_full));
}
