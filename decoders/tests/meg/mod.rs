//! OPM sample blocks (payload format 3): encode/decode round trips and arbitrary bytes never
//! panic; every rejected payload has a named loss reason.

use proptest::prelude::*;
use scandaq_decoders::meg::{BLOCK_HEADER_LEN, BlockHeader, decode_block, encode_block};

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        match decode_block(&bytes) {
            Ok(b) => {
                prop_assert_eq!(b.data.len(), b.header.data_len());
                prop_assert_eq!(bytes.len(), BLOCK_HEADER_LEN + b.data.len());
            }
            Err(e) => prop_assert!(e.reason().name().starts_with("meg_")),
        }
    }

    #[test]
    fn round_trip(counter in any::<u32>(), nc in 1u16..8, ns in 1u16..8, rate in any::<u32>(), flags in 0u32..4, seed in any::<i32>()) {
        let samples: Vec<i32> = (0..nc as i32 * ns as i32).map(|i| seed.wrapping_mul(i + 1)).collect();
        let h = BlockHeader { sample_counter: counter, n_channels: nc, n_samples: ns, sample_rate_mhz: rate, flags };
        let bytes = encode_block(&h, &samples);
        let b = decode_block(&bytes).unwrap();
        prop_assert_eq!(b.header, h);
        for s in 0..ns as usize {
            for c in 0..nc as usize {
                prop_assert_eq!(b.sample(s, c), Some(samples[s * nc as usize + c]));
            }
        }
        // Any shorter or longer payload is rejected, never decoded.
        prop_assert!(decode_block(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert_eq!(decode_block(&longer).unwrap_err().reason(), "meg_oversized_blocks");
    }
}

#[test]
fn zero_shapes_are_rejected() {
    for (nc, ns) in [(0u16, 4u16), (4, 0)] {
        let h = BlockHeader {
            sample_counter: 0,
            n_channels: nc,
            n_samples: ns,
            sample_rate_mhz: 1,
            flags: 0,
        };
        let e = decode_block(&encode_block(&h, &[])).unwrap_err();
        assert_eq!(e.reason(), "meg_empty_blocks", "{e}");
    }
}

/// The block header test vector of docs/meg.md §1, read from the document (hex bytes), decodes
/// to the fields the table gives; and handwritten headers with every field non-trivial decode
/// field by field (bytes placed by the offset table, not by `encode_block`).
#[test]
fn block_header_matches_the_doc_test_vector_and_literal_layouts() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/meg.md")).unwrap();
    let at = doc
        .find("Test vector: counter 0xFFFFFFFE")
        .expect("test vector paragraph in docs/meg.md");
    let para = &doc[at..at + 400];
    let hex = para
        .split('`')
        .nth(3)
        .expect("the header bytes in backticks");
    let header: Vec<u8> = hex
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    assert_eq!(header.len(), 16, "docs/meg.md header bytes {hex:?}");
    let mut bytes = header.clone();
    for s in [1i32, -1, 7, 4] {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    let b = decode_block(&bytes).unwrap();
    assert_eq!(
        b.header,
        BlockHeader {
            sample_counter: 0xFFFF_FFFE,
            n_channels: 2,
            n_samples: 2,
            sample_rate_mhz: 1_200_500,
            flags: 1,
        }
    );
    assert_eq!(
        (0..2)
            .flat_map(|s| (0..2).map(move |c| (s, c)))
            .map(|(s, c)| b.sample(s, c).unwrap())
            .collect::<Vec<_>>(),
        vec![1, -1, 7, 4]
    );
    assert_eq!(
        encode_block(&b.header, &[1, -1, 7, 4]),
        bytes,
        "encoder vs doc"
    );

    // (bytes, counter, channels, samples, rate mHz, flags): literal, every field distinct.
    let cases: [([u8; 16], u32, u16, u16, u32, u32); 3] = [
        (
            [
                0x78, 0x56, 0x34, 0x12, 0x03, 0x00, 0x01, 0x00, 0x40, 0x42, 0x0F, 0x00, 0x02, 0x00,
                0x00, 0x00,
            ],
            0x1234_5678,
            3,
            1,
            1_000_000,
            2,
        ),
        (
            [
                0x01, 0x00, 0x00, 0x80, 0x01, 0x00, 0x05, 0x00, 0xA0, 0x90, 0x5B, 0x00, 0x03, 0x00,
                0x00, 0x00,
            ],
            0x8000_0001,
            1,
            5,
            6_000_800,
            3,
        ),
        (
            [
                0x00, 0x00, 0x00, 0x00, 0x02, 0x01, 0x01, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00,
                0x00, 0x80,
            ],
            0,
            0x0102,
            0x0201,
            u32::MAX,
            0x8000_0000,
        ),
    ];
    for (hdr, counter, nc, ns, rate, flags) in cases {
        let n = usize::from(nc) * usize::from(ns);
        let mut bytes = hdr.to_vec();
        for k in 0..n {
            bytes.extend_from_slice(&(k as i32 * 1000 - 7).to_le_bytes());
        }
        let b = decode_block(&bytes).unwrap();
        assert_eq!(
            (
                b.header.sample_counter,
                b.header.n_channels,
                b.header.n_samples,
                b.header.sample_rate_mhz,
                b.header.flags
            ),
            (counter, nc, ns, rate, flags),
            "{hdr:02x?}"
        );
        // Sample-major: sample s, channel c is value number s * nc + c.
        let last = (usize::from(ns) - 1, usize::from(nc) - 1);
        assert_eq!(b.sample(last.0, last.1), Some((n as i32 - 1) * 1000 - 7));
        assert_eq!(b.sample(0, 0), Some(-7));
        assert_eq!(encode_block(&b.header, &[]).get(..16), Some(&hdr[..]));
    }
}

/// Counter unwrapping of OPM sample blocks with a forced wrap and a forced counter jump: every
/// generated stream starts just below 2^32 so its counter wraps, and has a reset (a jump
/// backwards or forwards beyond the tolerated windows) at a generated block. Blocks are
/// decoded from bytes and their counters unwrapped with `CounterUnwrapper` (as the MEG
/// processor does); the expected tick of every block is computed here from the generated
/// truth (sample index, reset position) and docs/meg.md §3: ticks continue across the wrap,
/// and after a jump a new segment starts right after the highest tick seen.
mod unwrap_and_fit {
    use super::*;
    use scandaq_core::clock_fit::{
        ClockFit, ClockFitConfig, CounterUnwrapper, JumpKind, SegmentStart, SyncPoint,
    };

    /// Defaults of docs/meg.md §5.
    const MAX_GAP: u64 = 1_000_000;
    const MAX_BACK: u64 = 20_000;
    const WRAP: u64 = 1 << 32;

    /// A generated stream: block lengths, gaps before each block (missing samples), where the
    /// wrap falls, where the counter is reset and to what.
    #[derive(Clone, Debug)]
    struct Stream {
        lens: Vec<u16>,
        gaps: Vec<u64>,
        /// Samples of segment 0 before the counter reaches 2^32 (so the start is 2^32 - this).
        before_wrap: u64,
        /// Block index at which the counter is reset (>= 1).
        reset_block: usize,
        /// Counter value of that block, as an offset from the expected (unreset) counter:
        /// outside `(-MAX_BACK, MAX_GAP]` modulo 2^32, so a jump by the format's rules.
        reset_delta: u64,
    }

    fn stream() -> impl Strategy<Value = Stream> {
        (
            proptest::collection::vec(1u16..200, 4..60),
            proptest::collection::vec(prop_oneof![8 => Just(0u64), 1 => 1u64..5000], 60),
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            prop_oneof![
                // Backwards beyond the tolerated window (a reset, the usual case).
                // (Margins: the gap before the block, up to 5000 samples, adds to the step.)
                ((MAX_BACK + 10_000)..(WRAP / 2 - 10_000)).prop_map(|d| (d, true)),
                // Forwards beyond the largest gap.
                ((MAX_GAP + 1)..(WRAP / 2 - 10_000)).prop_map(|d| (d, false)),
            ],
        )
            .prop_map(|(lens, gaps, wrap_at, reset_at, (d, back))| {
                let n = lens.len();
                // The counter reaches 2^32 after the first sample of block 0 and at or before
                // the first sample of block reset_block - 1, so a block before the reset
                // starts past the wrap.
                let reset_block = 2 + reset_at.index(n - 2);
                let first_of_last_before_reset: u64 = (0..reset_block - 1)
                    .map(|i| u64::from(lens[i]) + gaps[i + 1])
                    .sum();
                let before_wrap = 1 + wrap_at.index(first_of_last_before_reset as usize) as u64;
                let reset_delta = if back { WRAP - d } else { d };
                Stream {
                    lens,
                    gaps: gaps[..n].to_vec(),
                    before_wrap,
                    reset_block,
                    reset_delta,
                }
            })
    }

    /// A block's bytes, placed by the docs/meg.md §1 offset table.
    fn block_bytes(counter: u32, n_samples: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&counter.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&n_samples.to_le_bytes());
        b.extend_from_slice(&1_200_500u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for s in 0..n_samples {
            b.extend_from_slice(&i32::from(s).to_le_bytes());
        }
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn block_counters_unwrap_across_a_forced_wrap_and_reset(s in stream()) {
            let start = WRAP - s.before_wrap;
            let mut u = CounterUnwrapper::u32_counter(MAX_GAP, MAX_BACK);
            // Truth: the sample index of each block's first sample (gaps included), the
            // counter the device sends, and the expected tick and segment.
            let mut index = 0u64;
            let mut wrapped = false;
            let mut seg1_base: Option<(u64, i64)> = None; // (true index, tick) of the reset block
            let mut highest_tick: i64 = 0;
            let mut prev_counter: Option<u32> = None;
            for (i, &len) in s.lens.iter().enumerate() {
                if i > 0 {
                    index += s.gaps[i];
                }
                let in_seg1 = i >= s.reset_block;
                let counter = if in_seg1 {
                    ((start + index + s.reset_delta) % WRAP) as u32
                } else {
                    ((start + index) % WRAP) as u32
                };
                if !in_seg1 && prev_counter.is_some_and(|p| counter < p) {
                    wrapped = true;
                }
                prev_counter = Some(counter);
                let bytes = block_bytes(counter, len);
                let b = decode_block(&bytes).unwrap();
                prop_assert_eq!(b.header.sample_counter, counter);
                let got = u.push_span(u64::from(b.header.sample_counter), u64::from(b.header.n_samples));
                let (want_tick, want_seg) = if !in_seg1 {
                    // The first tick is the first counter value; then ticks follow the samples.
                    ((start + index) as i64, 0)
                } else {
                    let base = *seg1_base.get_or_insert((index, highest_tick + 1));
                    (base.1 + (index - base.0) as i64, 1)
                };
                prop_assert_eq!(got.tick, want_tick, "block {} counter {:#x}", i, counter);
                prop_assert_eq!(got.segment, want_seg, "block {}", i);
                if i == s.reset_block {
                    let j = got.jump.expect("the reset is reported as a jump");
                    let back = s.reset_delta > WRAP / 2;
                    prop_assert_eq!(j.kind, if back { JumpKind::Backward } else { JumpKind::Forward });
                    prop_assert_eq!(j.new_segment, 1);
                    prop_assert_eq!(j.raw_after, u64::from(counter));
                } else {
                    prop_assert!(got.jump.is_none(), "block {}: {:?}", i, got.jump);
                }
                highest_tick = highest_tick.max(want_tick + i64::from(len) - 1);
                index += u64::from(len);
            }
            // The generator really forced both.
            prop_assert!(wrapped, "no wrap: start {:#x}", start);
            prop_assert_eq!(u.segment(), 1);
        }
    }

    /// A drifting device clock: ticks elapsed at reference time `t` seconds.
    fn ticks_at(f0: f64, ppm: f64, swing_ppm: f64, period_s: f64, t: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI / period_s;
        f0 * (t + 1e-6 * (ppm * t - swing_ppm / w * ((w * t).cos() - 1.0)))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// The claim of docs/meg.md §3 with the wrap and the reset forced in every case: sync
        /// points once per reference second from a clock drifting by up to ±8 ppm (swing up
        /// to 2 ppm, periods 2-15 min, 0.9-6 kHz) whose 32-bit counter wraps at a generated
        /// second and is reset at a later one; corrected times at 7 points per second (away
        /// from the reset second) are within 1 µs of the truth and never extrapolated.
        #[test]
        fn clock_fit_within_one_microsecond_across_a_forced_wrap_and_reset(
            ppm in -8.0f64..8.0,
            swing in 0.0f64..2.0,
            period in 120.0f64..900.0,
            f0 in 900.0f64..6000.0,
            wrap_s in 5u32..100,
            reset_s in 110u32..230,
            reset_to in any::<u32>(),
        ) {
            let seconds = 240u32;
            let tick = |t: f64| ticks_at(f0, ppm, swing, period, t);
            // The counter reaches 2^32 between seconds wrap_s - 1 and wrap_s.
            let start = WRAP - tick(wrap_s as f64 - 0.5).floor() as u64;
            let mut u = CounterUnwrapper::u32_counter(100_000, 2_000);
            let mut fit = ClockFit::new(ClockFitConfig::default());
            let t0_ns: i64 = 1_790_000_000_000_000_000;
            let reset_whole = tick(reset_s as f64).floor() as u64;
            // The reset counter: `reset_to`, moved out of the tolerated windows if needed.
            let unreset = (start + reset_whole) % WRAP;
            let d = u64::from(reset_to).wrapping_sub(unreset) % WRAP;
            let reset_counter = if d <= 200_000 || d >= WRAP - 20_000 { (unreset + WRAP / 2) % WRAP } else { u64::from(reset_to) };
            let mut offset1: Option<i64> = None; // unwrapped tick - true tick in segment 1
            let mut last_tick0 = 0i64;
            let mut saw_wrap = false;
            for k in 0..=seconds {
                let n = tick(k as f64);
                let whole = n.floor() as u64;
                let counter = if k >= reset_s {
                    (reset_counter + whole - reset_whole) % WRAP
                } else {
                    (start + whole) % WRAP
                };
                saw_wrap |= k < reset_s && start + whole >= WRAP;
                let got = u.push(counter);
                // Expected from the truth: segment 0 counts from the start value; segment 1
                // starts one tick after the last tick of segment 0.
                let want = if k < reset_s {
                    (start + whole) as i64
                } else {
                    let o = *offset1.get_or_insert(last_tick0 + 1 - whole as i64);
                    whole as i64 + o
                };
                prop_assert_eq!(got.tick, want, "second {}", k);
                prop_assert_eq!(got.segment, u32::from(k >= reset_s));
                if k < reset_s {
                    last_tick0 = want;
                }
                fit.add(SyncPoint { tick: got.tick, frac: n - n.floor(), reference_ns: t0_ns + i64::from(k) * 1_000_000_000 }, got.segment);
            }
            prop_assert!(saw_wrap);
            let offset1 = offset1.unwrap();
            prop_assert!(fit.segments().iter().any(|s| s.start == SegmentStart::CounterJump));
            let mut worst = 0.0f64;
            for j in 0..(seconds as usize * 7) {
                let t = j as f64 / 7.0 + 0.0123;
                if (t - reset_s as f64).abs() < 1.0 {
                    continue;
                }
                let n = tick(t);
                let whole = n.floor() as i64;
                let unwrapped = if t > reset_s as f64 { whole + offset1 } else { start as i64 + whole };
                let got = fit.time(unwrapped, n - n.floor()).expect("a fit");
                prop_assert!(!got.extrapolated, "t = {}: extrapolated inside the synced range", t);
                let err = ((got.ns - t0_ns) as f64 + got.frac_ns - t * 1e9).abs();
                worst = worst.max(err);
            }
            prop_assert!(worst < 1000.0, "worst {} ns", worst);
        }
    }
}
