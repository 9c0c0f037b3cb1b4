//! Structure-aware fuzzing of the decoders: generators build VALID inputs (PETsys frame
//! streams, `.rawf` headers, `.idxf` indexes, transport packets) and apply one targeted
//! mutation (a flipped header bit, a truncation, a duplicated, swapped or removed frame,
//! garbage words). The expected outcome is derived from the generator's ground truth and the
//! layout in docs/formats.md, written out here independently of the decoders' own encoders.
//! Random bytes (the other proptests) almost never form a valid header; these inputs do, so
//! they exercise the frame-ID plausibility rules, resynchronisation and truncation.
//!
//! Cases per property: `SCANDAQ_FUZZ_CASES` (default 256, what CI runs). Every case is also
//! bounded in time (`CASE_TIME_LIMIT`). One case is 136 decoder inputs across the five
//! generated properties (1 stream, 128 header-bit flips, 3 `.rawf` parses, 2 `.idxf` parses, 2
//! packet decodes). Long run:
//! `SCANDAQ_FUZZ_CASES=1000000 cargo test -p scandaq-decoders --test decoders structured -- --test-threads=1`
//! (1 M cases per property, 136 M inputs: 7 min 48 s, 238 s CPU, 5.4 MB RSS, no failure, on a
//! shared 2-core machine).

use proptest::prelude::*;
use proptest::test_runner::Config;
use scandaq_decoders::idxf::{self, IdxfStep};
use scandaq_decoders::petsys::FrameScanner;
use scandaq_decoders::rawf::{RAWF_HEADER_LEN, RawfHeader, RawfHeaderError};
use scandaq_decoders::transport::{decode_packet, encode_packet};
use std::time::{Duration, Instant};

/// Frame IDs are 36 bits.
const ID_MASK: u64 = (1 << 36) - 1;
/// Wall-time bound of one generated input (generous: a loaded CI machine).
const CASE_TIME_LIMIT: Duration = Duration::from_secs(2);

/// Cases per property from `SCANDAQ_FUZZ_CASES`.
fn config() -> Config {
    let cases = std::env::var("SCANDAQ_FUZZ_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// One generated frame.
#[derive(Clone, Debug, PartialEq)]
struct GenFrame {
    id: u64,
    hits: Vec<u64>,
    lossy: bool,
}

/// A valid frame stream and how its hit words were made.
#[derive(Clone, Debug)]
struct GenStream {
    frames: Vec<GenFrame>,
    /// Every hit word has bit 63 set, so no hit word can pass as a header's first word (the
    /// format requires bits 51-63 of word 0 to be zero).
    clean: bool,
}

/// Encodes one frame straight from the table in docs/formats.md §2.
fn put_frame(out: &mut Vec<u8>, f: &GenFrame) {
    let n = f.hits.len() as u64;
    let w0 = (f.id & ID_MASK) | ((n + 2) << 36);
    let w1 = n | (u64::from(f.lossy) << 15);
    out.extend_from_slice(&w0.to_le_bytes());
    out.extend_from_slice(&w1.to_le_bytes());
    for h in &f.hits {
        out.extend_from_slice(&h.to_le_bytes());
    }
}

fn encode_stream(frames: &[GenFrame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        put_frame(&mut out, f);
    }
    out
}

/// Byte offset of each frame's header and the end of the stream.
fn offsets(frames: &[GenFrame]) -> Vec<usize> {
    let mut v = Vec::with_capacity(frames.len() + 1);
    let mut off = 0;
    for f in frames {
        v.push(off);
        off += 16 + 8 * f.hits.len();
    }
    v.push(off);
    v
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn gen_stream() -> impl Strategy<Value = GenStream> {
    let start = prop_oneof![
        0u64..1000,
        (ID_MASK - 40)..=ID_MASK,
        any::<u64>().prop_map(|v| v & ID_MASK)
    ];
    // Steps between frame IDs: mostly 1, gaps where frames had no hits.
    let step = prop_oneof![6 => Just(1u64), 3 => 2u64..6, 1 => 6u64..100_000];
    let frame = (step, 0usize..7, prop::bool::weighted(0.1));
    (
        start,
        prop::collection::vec(frame, 1..20),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(start, specs, clean, mut seed)| {
            let mut id = start;
            let mut frames = Vec::with_capacity(specs.len());
            for (k, (step, n, lossy)) in specs.into_iter().enumerate() {
                if k > 0 {
                    id = (id + step) & ID_MASK;
                }
                let hits = (0..n)
                    .map(|_| {
                        let w = splitmix(&mut seed);
                        if clean { w | 1 << 63 } else { w }
                    })
                    .collect();
                frames.push(GenFrame { id, hits, lossy });
            }
            GenStream { frames, clean }
        })
}

/// A frame the scanner produced, with its hit words copied out.
#[derive(Clone, Debug, PartialEq)]
struct OutFrame {
    id: u64,
    frame: u64,
    hits: Vec<u64>,
    lossy: bool,
}

/// Feeds `bytes` to a scanner in pieces cut at `cuts` (keeping unconsumed bytes, as the
/// pipeline does); returns the scanner and the frames it produced.
fn scan_pieces(bytes: &[u8], cuts: &[usize]) -> (FrameScanner, Vec<OutFrame>) {
    let t0 = Instant::now();
    let mut s = FrameScanner::new();
    let mut out = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    let mut spans = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
    cuts.sort_unstable();
    let mut prev = 0;
    let n_cuts = cuts.len();
    for (i, c) in cuts.into_iter().chain([bytes.len()]).enumerate() {
        let eof = i == n_cuts;
        carry.extend_from_slice(&bytes[prev..c]);
        prev = c;
        spans.clear();
        let used = s.scan(&carry, eof, &mut spans);
        assert!(used <= carry.len());
        for sp in &spans {
            let words = &carry[sp.hits_offset..sp.hits_offset + 8 * sp.n_hits as usize];
            out.push(OutFrame {
                id: sp.frame & ID_MASK,
                frame: sp.frame,
                hits: words
                    .chunks_exact(8)
                    .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
                    .collect(),
                lossy: sp.lossy,
            });
        }
        carry.drain(..used);
    }
    assert!(carry.is_empty(), "everything is consumed at the end");
    assert!(
        t0.elapsed() < CASE_TIME_LIMIT,
        "scan took {:?}",
        t0.elapsed()
    );
    (s, out)
}

fn as_out(frames: &[GenFrame]) -> Vec<(u64, Vec<u64>, bool)> {
    frames
        .iter()
        .map(|f| (f.id, f.hits.clone(), f.lossy))
        .collect()
}

fn got(out: &[OutFrame]) -> Vec<(u64, Vec<u64>, bool)> {
    out.iter()
        .map(|f| (f.id, f.hits.clone(), f.lossy))
        .collect()
}

fn total_hits(frames: &[GenFrame]) -> u64 {
    frames.iter().map(|f| f.hits.len() as u64).sum()
}

/// Every byte is a frame, skipped, or truncated.
fn bytes_accounted(s: &FrameScanner, len: usize) -> bool {
    s.frame_bytes + s.losses.get("resync_skipped_bytes") + s.losses.get("truncated_bytes")
        == len as u64
}

fn ahead(from: u64, to: u64) -> u64 {
    to.wrapping_sub(from) & ID_MASK
}

/// One targeted change to a valid stream.
#[derive(Clone, Debug)]
enum Mutation {
    None,
    FlipHeaderBit(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    Duplicate(prop::sample::Index),
    Swap(prop::sample::Index),
    Remove(prop::sample::Index),
    Garbage(prop::sample::Index, Vec<u64>, bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => Just(Mutation::None),
        6 => (any::<prop::sample::Index>(), 0usize..128).prop_map(|(i, b)| Mutation::FlipHeaderBit(i, b)),
        2 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Duplicate),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Swap),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        1 => (any::<prop::sample::Index>(), prop::collection::vec(any::<u64>(), 1..6), any::<bool>())
            .prop_map(|(i, w, c)| Mutation::Garbage(i, w, c)),
    ]
}

/// Checks the scanner's output for `stream` changed by `m`, fed in pieces at `cuts`.
fn check_stream(stream: &GenStream, m: &Mutation, cuts: &[usize]) -> Result<(), TestCaseError> {
    let frames = &stream.frames;
    let total = total_hits(frames);
    let lossy_count = frames.iter().filter(|f| f.lossy).count() as u64;
    match m {
        Mutation::None => {
            let bytes = encode_stream(frames);
            let (s, out) = scan_pieces(&bytes, cuts);
            prop_assert!(bytes_accounted(&s, bytes.len()));
            prop_assert_eq!(got(&out), as_out(frames));
            prop_assert_eq!(s.losses.get("frontend_lost_frames"), lossy_count);
            prop_assert_eq!(s.losses.0.len() as u64, u64::from(lossy_count > 0));
            // Unwrapped numbers advance by the generated steps, across the 36-bit wrap.
            for (w, f) in out.windows(2).zip(frames.windows(2)) {
                prop_assert_eq!(w[1].frame - w[0].frame, ahead(f[0].id, f[1].id));
            }
        }
        Mutation::Remove(i) => {
            let k = i.index(frames.len());
            let mut rest = frames.clone();
            rest.remove(k);
            let bytes = encode_stream(&rest);
            let (s, out) = scan_pieces(&bytes, cuts);
            prop_assert!(bytes_accounted(&s, bytes.len()));
            // A missing frame looks like a frame without hits: nothing to count.
            prop_assert_eq!(got(&out), as_out(&rest));
        }
        Mutation::Truncate(i) => {
            let full = encode_stream(frames);
            let t = i.index(full.len() + 1);
            let offs = offsets(frames);
            let whole = offs.iter().skip(1).filter(|&&e| e <= t).count();
            let end_whole = offs[whole];
            let (s, out) = scan_pieces(&full[..t], cuts);
            prop_assert!(bytes_accounted(&s, t));
            prop_assert_eq!(got(&out), as_out(&frames[..whole]));
            prop_assert_eq!(s.losses.get("truncated_bytes"), (t - end_whole) as u64);
            prop_assert_eq!(s.losses.get("truncated_frame"), u64::from(t > end_whole));
        }
        Mutation::Garbage(i, words, clean_garbage) => {
            let k = i.index(frames.len());
            let offs = offsets(frames);
            let mut bytes = encode_stream(frames);
            let words: Vec<u64> = words
                .iter()
                .map(|&w| if *clean_garbage { w | 1 << 63 } else { w })
                .collect();
            let ins: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            bytes.splice(offs[k + 1]..offs[k + 1], ins);
            let (s, out) = scan_pieces(&bytes, cuts);
            prop_assert!(bytes_accounted(&s, bytes.len()));
            // Frames before the one the garbage follows are untouched.
            prop_assert_eq!(
                &got(&out)[..k.min(out.len())],
                &as_out(frames)[..k.min(out.len())]
            );
            prop_assert!(out.len() >= k);
            if *clean_garbage && stream.clean {
                prop_assert_eq!(got(&out), as_out(frames));
                // (One trailing word is too short to be judged a header: truncated.)
                let one_trailing_word = k + 1 == frames.len() && words.len() == 1;
                prop_assert_eq!(
                    s.losses.get("bad_frame_header"),
                    u64::from(!one_trailing_word)
                );
                // Trailing garbage ends as a truncated piece rather than a skip.
                prop_assert_eq!(
                    s.losses.get("resync_skipped_bytes") + s.losses.get("truncated_bytes"),
                    8 * words.len() as u64
                );
            }
        }
        Mutation::Duplicate(i) => {
            let k = i.index(frames.len());
            let mut dup = frames.clone();
            dup.insert(k + 1, frames[k].clone());
            let bytes = encode_stream(&dup);
            let (s, out) = scan_pieces(&bytes, cuts);
            prop_assert!(bytes_accounted(&s, bytes.len()));
            let dropped = s.losses.get("corrupt_frame_id_hits");
            let out_hits: u64 = out.iter().map(|f| f.hits.len() as u64).sum();
            prop_assert_eq!(out_hits + dropped, total + frames[k].hits.len() as u64);
            // One copy is dropped or moved to a free ID; every frame is there with its ID.
            prop_assert_eq!(
                s.losses.get("corrupt_frame_id") + s.losses.get("repaired_frame_id"),
                1
            );
            let mut out_ids = got(&out);
            let want = as_out(frames);
            if out_ids.len() == want.len() + 1 {
                let extra = out_ids
                    .iter()
                    .zip(&want)
                    .position(|(a, b)| a != b)
                    .unwrap_or(want.len());
                prop_assert_eq!(&out_ids[extra].1, &frames[k].hits);
                out_ids.remove(extra);
            }
            prop_assert_eq!(out_ids, want);
        }
        Mutation::Swap(i) => {
            if frames.len() < 2 {
                return Ok(());
            }
            let k = i.index(frames.len() - 1);
            let mut sw = frames.clone();
            sw.swap(k, k + 1);
            let bytes = encode_stream(&sw);
            let (s, out) = scan_pieces(&bytes, cuts);
            prop_assert!(bytes_accounted(&s, bytes.len()));
            let out_hits: u64 = out.iter().map(|f| f.hits.len() as u64).sum();
            prop_assert_eq!(out_hits + s.losses.get("corrupt_frame_id_hits"), total);
            prop_assert!(s.losses.get("corrupt_frame_id") <= 2);
            // Frames away from the swap keep their IDs.
            for f in &out {
                if let Some(g) = frames
                    .iter()
                    .position(|g| g.hits == f.hits && !g.hits.is_empty())
                    && (g + 1 < k || g > k + 2)
                {
                    prop_assert_eq!(f.id, frames[g].id);
                }
            }
        }
        Mutation::FlipHeaderBit(i, bit) => check_flip(stream, i.index(frames.len()), *bit, cuts)?,
    }
    Ok(())
}

/// One flipped bit in frame `k`'s header (`bit` 0-63 word 0, 64-127 word 1).
fn check_flip(
    stream: &GenStream,
    k: usize,
    bit: usize,
    cuts: &[usize],
) -> Result<(), TestCaseError> {
    let frames = &stream.frames;
    let total = total_hits(frames);
    let offs = offsets(frames);
    let mut bytes = encode_stream(frames);
    bytes[offs[k] + bit / 8] ^= 1 << (bit % 8);
    let (s, out) = scan_pieces(&bytes, cuts);
    prop_assert!(bytes_accounted(&s, bytes.len()));
    let out_hits: u64 = out.iter().map(|f| f.hits.len() as u64).sum();
    let f = &frames[k];
    let n = f.hits.len() as u64;
    match bit {
        0..=35 => {
            // Frame ID. Hits are kept unless a frame is dropped, and then counted.
            prop_assert_eq!(out_hits + s.losses.get("corrupt_frame_id_hits"), total);
            prop_assert!(s.losses.get("corrupt_frame_id") <= 1);
            let flipped = f.id ^ (1 << bit);
            let out_frames: Vec<u64> = out.iter().map(|o| o.frame).collect();
            // Never a time base dragged: the frames that come out are in order, and every
            // one of them holds the hits of a generated frame.
            prop_assert!(
                out_frames.windows(2).all(|w| w[0] < w[1]),
                "{:?}",
                out_frames
            );
            for o in &out {
                prop_assert!(frames.iter().any(|g| g.hits == o.hits));
            }
            // Frames two or more away from the flipped one keep their IDs.
            for o in &out {
                if let Some(g) = frames
                    .iter()
                    .position(|g| g.hits == o.hits && !g.hits.is_empty())
                    && (g + 2 <= k || g >= k + 2)
                {
                    prop_assert_eq!(o.id, frames[g].id);
                }
            }
            if k >= 1 && k + 1 < frames.len() {
                let (p, nx) = (frames[k - 1].id, frames[k + 1].id);
                let between = ahead(p, flipped) > 0 && ahead(p, flipped) < ahead(p, nx);
                let counted = s.losses.get("corrupt_frame_id") + s.losses.get("repaired_frame_id");
                if between {
                    // Indistinguishable from a gap: kept as it is, nothing counted.
                    let mut want = as_out(frames);
                    want[k].0 = flipped;
                    prop_assert_eq!(got(&out), want);
                    prop_assert_eq!(counted, 0);
                } else {
                    prop_assert!(counted >= 1, "{}", s.losses.summary());
                    if ahead(p, nx) == 2 && k >= 2 && ahead(frames[k - 2].id, p) == 1 {
                        // One slot between agreeing neighbours: restored exactly.
                        prop_assert_eq!(got(&out), as_out(frames));
                        prop_assert_eq!(s.losses.get("repaired_frame_id"), 1);
                    }
                }
            }
        }
        79 | 80 => {
            // A lost-data flag: the hits stay, the flag changes (or, on a frame without hits,
            // bit 16 alone makes it a synthetic lost-frame header).
            let mut want = as_out(frames);
            if bit == 80 && n == 0 && !f.lossy {
                want.remove(k);
            } else if bit == 80 {
                want[k].2 = true;
            } else {
                want[k].2 = !f.lossy;
            }
            prop_assert_eq!(got(&out), want);
        }
        _ if stream.clean => {
            // frameSize, nEvents, reserved bits: a bad header; only this frame is lost.
            prop_assert_eq!(s.losses.get("bad_frame_header"), 1);
            let mut want = as_out(frames);
            want.remove(k);
            prop_assert_eq!(got(&out), want);
            prop_assert_eq!(out_hits, total - n);
        }
        _ => {
            // Hit words may look like headers: everything is still accounted for.
            prop_assert!(s.losses.get("bad_frame_header") >= 1);
        }
    }
    Ok(())
}

fn gen_rawf_header() -> impl Strategy<Value = RawfHeader> {
    (
        1_000_000u32..=2_000_000_000,
        any::<bool>(),
        any::<u64>(),
        prop::option::of(0u16..0x8000),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(f, qdc, epoch, trig, mixed, ticks)| RawfHeader {
            frequency_hz: f,
            qdc_mode: qdc,
            daq_sync_epoch_s: f64::from_bits(epoch),
            trigger_id: trig,
            mixed_mode: mixed,
            creation_ticks: ticks,
        })
}

fn same_header(a: &RawfHeader, b: &RawfHeader) -> bool {
    a.encode() == b.encode()
}

fn gen_idxf() -> impl Strategy<Value = Vec<IdxfStep>> {
    prop::collection::vec(
        (
            any::<u64>(),
            0u64..1 << 40,
            0u64..1 << 36,
            0u64..1 << 36,
            prop_oneof![
                Just(0.0),
                -1e6f64..1e6,
                any::<f64>().prop_filter("finite", |v| v.is_finite())
            ],
            -100.0f64..100.0,
        )
            .prop_map(|(start, len, a, b, s1, s2)| IdxfStep {
                start_offset: start >> 1,
                end_offset: (start >> 1) + len,
                first_frame_id: a,
                last_frame_id: b,
                step1: s1,
                step2: s2,
            }),
        0..8,
    )
}

/// Text mutations of an index file.
#[derive(Clone, Debug)]
enum TextMutation {
    Delete(prop::sample::Index),
    Insert(prop::sample::Index, char),
    Truncate(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
}

proptest! {
    #![proptest_config(config())]

    /// Valid PETsys frame streams with one targeted mutation, fed in pieces.
    #[test]
    fn structured_petsys_streams(
        stream in gen_stream(),
        m in mutation(),
        cuts in prop::collection::vec(0usize..4096, 0..3),
    ) {
        check_stream(&stream, &m, &cuts)?;
    }

    /// Every header bit of every frame of one stream, one at a time (the dense version of the
    /// flip mutation above).
    #[test]
    fn structured_petsys_every_header_bit(stream in gen_stream(), k in any::<prop::sample::Index>()) {
        let k = k.index(stream.frames.len());
        for bit in 0..128 {
            check_flip(&stream, k, bit, &[])?;
        }
    }

    /// Valid `.rawf` headers round-trip; one flipped bit is rejected where the format says the
    /// bit must be zero, and otherwise decodes to the header those bytes describe; every
    /// truncation is `Short`.
    #[test]
    fn structured_rawf_header(h in gen_rawf_header(), bit in 0usize..512, cut in 0usize..64) {
        let bytes = h.encode();
        prop_assert!(same_header(&RawfHeader::parse(&bytes).unwrap(), &h));
        prop_assert!(matches!(RawfHeader::parse(&bytes[..cut]), Err(RawfHeaderError::Short(c)) if c == cut));
        let mut m = bytes;
        m[bit / 8] ^= 1 << (bit % 8);
        let word = bit / 64;
        let wbit = bit % 64;
        // Accepted exactly when the docs/formats.md §2 rules (applied by the test) accept
        // the flipped bytes: e.g. a clock pushed above 2 GHz by bit 31 is refused.
        prop_assert_eq!(
            RawfHeader::parse(&m).is_ok(),
            super::doc_valid_rawf_header(&m),
            "word {} bit {}", word, wbit
        );
        match RawfHeader::parse(&m) {
            Ok(h2) => {
                // Only bits the format gives a meaning can change a header that still parses.
                prop_assert!(word <= 4 && !(word == 0 && wbit >= 33));
                if word != 3 {
                    prop_assert_eq!(&h2.encode()[..], &m[..], "the flipped bytes decode faithfully");
                } else {
                    prop_assert_eq!(h2.mixed_mode, m[24..32].iter().any(|&b| b != 0));
                }
            }
            Err(_) => {
                prop_assert!(word >= 5 || word == 0 || word == 2, "word {} bit {}", word, wbit);
            }
        }
        let _ = RAWF_HEADER_LEN;
    }

    /// Valid `.idxf` indexes round-trip; mutated text never panics and an error names a line
    /// that exists.
    #[test]
    fn structured_idxf(steps in gen_idxf(), mutations in prop::collection::vec(
        prop_oneof![
            any::<prop::sample::Index>().prop_map(TextMutation::Delete),
            (any::<prop::sample::Index>(), any::<char>()).prop_map(|(i, c)| TextMutation::Insert(i, c)),
            any::<prop::sample::Index>().prop_map(TextMutation::Truncate),
            any::<prop::sample::Index>().prop_map(TextMutation::DuplicateLine),
        ], 0..3)) {
        let text = idxf::format(&steps);
        prop_assert_eq!(idxf::parse(&text).unwrap(), steps.clone());
        let mut chars: Vec<char> = text.chars().collect();
        for m in &mutations {
            match m {
                TextMutation::Delete(i) if !chars.is_empty() => { chars.remove(i.index(chars.len())); }
                TextMutation::Insert(i, c) => { let at = i.index(chars.len() + 1); chars.insert(at, *c); }
                TextMutation::Truncate(i) => { let at = i.index(chars.len() + 1); chars.truncate(at); }
                TextMutation::DuplicateLine(i) => {
                    let s: String = chars.iter().collect();
                    let mut lines: Vec<&str> = s.lines().collect();
                    if !lines.is_empty() {
                        let l = i.index(lines.len());
                        lines.insert(l, lines[l]);
                    }
                    chars = lines.join("\n").chars().collect();
                }
                _ => {}
            }
        }
        let mutated: String = chars.iter().collect();
        match idxf::parse(&mutated) {
            Ok(parsed) => prop_assert!(parsed.len() <= mutated.lines().count()),
            Err(e) => prop_assert!(e.line >= 1 && e.line <= mutated.lines().count()),
        }
    }

    /// Valid transport packets with one flipped bit: a payload or CRC bit is always a CRC
    /// error (CRC-32C detects every single-bit error); any other bit gives an error or the
    /// original payload; a truncation is never accepted.
    #[test]
    fn structured_transport_packet(
        fmt in any::<u16>(), src in any::<u32>(), seq in any::<u64>(),
        payload in prop::collection::vec(any::<u8>(), 0..200),
        bit in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>(),
    ) {
        let mut pkt = Vec::new();
        encode_packet(&mut pkt, fmt, src, seq, 0, &payload, true);
        let bit = bit.index(pkt.len() * 8);
        let mut m = pkt.clone();
        m[bit / 8] ^= 1 << (bit % 8);
        let byte = bit / 8;
        // The outcome each header field's flip must have (docs/formats.md §1).
        let got = decode_packet(&m);
        match byte {
            // Magic: never accepted.
            0..=3 => prop_assert_eq!(got.unwrap_err().reason(), "bad_header"),
            // header_len 32 flipped: below 32 is a bad header; above, the payload would start
            // later and no longer fits.
            4 | 5 => {
                let hl = u16::from_le_bytes([m[4], m[5]]);
                let want = if hl < 32 { "bad_header" } else { "truncated_packet" };
                prop_assert_eq!(got.unwrap_err().reason(), want);
            }
            // payload_format, source_id, flags, seq: accepted with the flipped field and the
            // same payload (a cleared CRC flag skips the check).
            6..=23 => {
                let (h, p) = got.unwrap();
                prop_assert_eq!(p, &payload[..]);
                let field = |b: &[u8], o: usize, n: usize| b[o..o + n].iter().rev().fold(0u64, |a, &x| a << 8 | u64::from(x));
                prop_assert_eq!(u64::from(h.payload_format), field(&m, 6, 2));
                prop_assert_eq!(u64::from(h.source_id), field(&m, 8, 4));
                prop_assert_eq!(u64::from(h.flags), field(&m, 12, 4));
                prop_assert_eq!(h.seq, field(&m, 16, 8));
            }
            // payload_len: longer than the bytes is truncated; shorter fails the CRC.
            24..=27 => {
                let pl = u32::from_le_bytes([m[24], m[25], m[26], m[27]]) as usize;
                let want = if pl > payload.len() { "truncated_packet" } else { "crc_error" };
                prop_assert_eq!(got.unwrap_err().reason(), want);
            }
            // CRC or payload.
            _ => prop_assert_eq!(got.unwrap_err().reason(), "crc_error"),
        }
        let cut = cut.index(pkt.len());
        prop_assert!(decode_packet(&pkt[..cut]).is_err());
    }
}

/// The third-party PETsys raw file (`../shared/data/petsys-peer/`, written by a generator
/// independent of scandaq, with gaps where frames had no hits): the plausibility rules take
/// every frame as it is, and one flipped bit in a sample of its frame headers costs at most
/// that frame, counted.
mod third_party {
    use super::*;

    fn peer_rawf() -> Vec<u8> {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/petsys-peer/run.rawf");
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "third-party fixture {} is missing ({e}): it must sit at ../shared/data/petsys-peer/ \
                 beside the workspace (CI provides it)",
                path.display()
            )
        })
    }

    /// (offset, frame ID, hits) of each frame, from the header fields alone.
    fn walk(frames: &[u8]) -> Vec<(usize, u64, u64)> {
        let word = |o: usize| u64::from_le_bytes(frames[o..o + 8].try_into().unwrap());
        let mut v = Vec::new();
        let mut off = 0;
        while off < frames.len() {
            let n = word(off + 8) & 0x7fff;
            v.push((off, word(off) & ID_MASK, n));
            off += 16 + 8 * n as usize;
        }
        assert_eq!(off, frames.len());
        v
    }

    #[test]
    fn peer_file_passes_the_frame_id_rules_untouched() {
        let bytes = peer_rawf();
        let frames = &bytes[RAWF_HEADER_LEN..];
        let table = walk(frames);
        let (s, out) = scan_pieces(frames, &[frames.len() / 3]);
        assert!(s.losses.is_empty(), "{}", s.losses.summary());
        assert_eq!((s.frames, s.hits), (3901, 20_000));
        let gaps = table.windows(2).filter(|w| w[1].1 != w[0].1 + 1).count();
        assert!(gaps > 0, "the file has gaps between frame IDs");
        let ids: Vec<u64> = out.iter().map(|f| f.id).collect();
        assert_eq!(ids, table.iter().map(|t| t.1).collect::<Vec<_>>());
        // `run.idxf` says frames 1000..4906.
        assert_eq!(s.frame_range, Some((1000, 4906)));
    }

    #[test]
    fn one_flipped_bit_in_peer_frame_headers_costs_at_most_that_frame() {
        let bytes = peer_rawf();
        let frames = &bytes[RAWF_HEADER_LEN..];
        let table = walk(frames);
        let mut seed = 7u64;
        for _ in 0..24 {
            let k = (splitmix(&mut seed) % table.len() as u64) as usize;
            let (off, id, n) = table[k];
            for bit in 0..128 {
                let mut m = frames.to_vec();
                m[off + bit / 8] ^= 1 << (bit % 8);
                let (s, out) = scan_pieces(&m, &[]);
                let what = format!("frame {k} (id {id}) bit {bit}: {}", s.losses.summary());
                let hits: u64 = out.iter().map(|f| f.hits.len() as u64).sum();
                assert!(hits + n >= 20_000, "{what}");
                let frames_out: Vec<u64> = out.iter().map(|f| f.frame).collect();
                assert!(frames_out.windows(2).all(|w| w[0] < w[1]), "{what}");
                if bit < 36 {
                    assert_eq!(
                        hits + s.losses.get("corrupt_frame_id_hits"),
                        20_000,
                        "{what}"
                    );
                    let flipped = id ^ (1 << bit);
                    if k > 0 && k + 1 < table.len() {
                        let (p, nx) = (table[k - 1].1, table[k + 1].1);
                        let between = ahead(p, flipped) > 0 && ahead(p, flipped) < ahead(p, nx);
                        let counted =
                            s.losses.get("corrupt_frame_id") + s.losses.get("repaired_frame_id");
                        assert_eq!(counted == 0, between, "{what}");
                    }
                } else if bit != 79 && bit != 80 {
                    assert!(s.losses.get("bad_frame_header") >= 1, "{what}");
                }
            }
        }
    }
}

/// Targeted tests for validity checks that the generated inputs above do not reach (each was
/// found by removing the check and seeing no test fail; see docs/formats.md and the report).
mod targeted {
    use super::*;
    use scandaq_decoders::petsys::{FrameIdVerdict, judge_frame_id};
    use scandaq_decoders::rf::decode_chunk;

    /// Frame bytes placed by the docs/formats.md §2 table.
    fn frame(out: &mut Vec<u8>, id: u64, hits: &[u64]) {
        put_frame(
            out,
            &GenFrame {
                id,
                hits: hits.to_vec(),
                lossy: false,
            },
        );
    }

    /// While resynchronising after a bad header, a well-formed header whose frame ID is
    /// far (2^30) from the last good frame is not a frame: its bytes are skipped with the
    /// garbage (`resync_skipped_bytes`), nothing is judged or dropped as a frame.
    #[test]
    fn resync_skips_well_formed_headers_with_implausible_frame_ids() {
        let mut buf = Vec::new();
        frame(&mut buf, 100, &[1 << 63 | 1]);
        buf.extend_from_slice(&u64::MAX.to_le_bytes()); // bad header word
        frame(&mut buf, 100 + (1 << 30), &[1 << 63 | 2]); // well-formed, implausible
        frame(&mut buf, 101, &[1 << 63 | 3, 1 << 63 | 4]);
        let (s, out) = scan_pieces(&buf, &[]);
        assert_eq!(
            out.iter().map(|f| (f.id, f.hits.len())).collect::<Vec<_>>(),
            vec![(100, 1), (101, 2)]
        );
        assert_eq!(
            s.losses.get("bad_frame_header"),
            1,
            "{}",
            s.losses.summary()
        );
        // The bad word and the whole implausible frame (2 header words + 1 hit).
        assert_eq!(s.losses.get("resync_skipped_bytes"), 8 + 24);
        assert_eq!(
            s.losses.get("corrupt_frame_id"),
            0,
            "{}",
            s.losses.summary()
        );
        assert!(bytes_accounted(&s, buf.len()));
    }

    /// Two single-bit changes of a bad frame ID land between its neighbours (27 -> 11 or
    /// 19 between 10 and 20): ambiguous, so the frame is dropped, never "repaired" to a guess.
    #[test]
    fn an_ambiguous_frame_id_repair_is_a_drop() {
        assert_eq!(judge_frame_id(Some(10), 27, Some(20)), FrameIdVerdict::Drop);
        // A unique one is repaired (only 28 ^ 16 = 12 lands between).
        assert_eq!(
            judge_frame_id(Some(10), 28, Some(20)),
            FrameIdVerdict::Repair(12)
        );
        let mut buf = Vec::new();
        for (id, n) in [(9u64, 1usize), (10, 2), (27, 3), (20, 4), (21, 5)] {
            frame(&mut buf, id, &vec![1 << 63; n]);
        }
        let (s, out) = scan_pieces(&buf, &[]);
        assert_eq!(
            out.iter().map(|f| f.id).collect::<Vec<_>>(),
            vec![9, 10, 20, 21]
        );
        assert_eq!(
            (
                s.losses.get("corrupt_frame_id"),
                s.losses.get("corrupt_frame_id_hits"),
                s.losses.get("repaired_frame_id")
            ),
            (1, 3, 0),
            "{}",
            s.losses.summary()
        );
    }

    /// The transport test vector of docs/formats.md §1, as literal bytes, and each header
    /// check: bad magic and header_len < 32 are `bad_header`, a payload past the end is
    /// `truncated_packet`, a longer header_len is skipped over.
    #[test]
    fn transport_header_checks_on_the_doc_vector() {
        let pkt: Vec<u8> = vec![
            0x53, 0x44, 0x51, 0x31, 0x20, 0x00, 0x01, 0x00, 0x07, 0x00, 0x00, 0x00, 0x01, 0x00,
            0x00, 0x00, 0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
            0x31, 0x0a, 0xc8, 0x92, 0x61, 0x62, 0x63, 0x64,
        ];
        let (h, p) = decode_packet(&pkt).unwrap();
        assert_eq!(
            (h.header_len, h.payload_format, h.source_id, h.flags, h.seq),
            (32, 1, 7, 1, 0x0102)
        );
        assert_eq!((h.payload_len, h.crc32c, p), (4, 0x92c8_0a31, &b"abcd"[..]));
        for k in 0..4 {
            let mut m = pkt.clone();
            m[k] = b'X';
            assert_eq!(
                decode_packet(&m).unwrap_err().reason(),
                "bad_header",
                "magic byte {k}"
            );
        }
        for hl in [0u16, 1, 16, 31] {
            let mut m = pkt.clone();
            m[4..6].copy_from_slice(&hl.to_le_bytes());
            assert_eq!(
                decode_packet(&m).unwrap_err().reason(),
                "bad_header",
                "header_len {hl}"
            );
        }
        let mut m = pkt.clone();
        m[24] = 5;
        assert_eq!(decode_packet(&m).unwrap_err().reason(), "truncated_packet");
        assert_eq!(
            decode_packet(&pkt[..35]).unwrap_err().reason(),
            "truncated_packet"
        );
        assert_eq!(
            decode_packet(&pkt[..31]).unwrap_err().reason(),
            "bad_header"
        );
        // header_len 40: 8 extra header bytes are skipped, the payload follows them.
        let mut m = pkt[..32].to_vec();
        m[4] = 40;
        m.extend_from_slice(&[0xee; 8]);
        m.extend_from_slice(b"abcd");
        assert_eq!(decode_packet(&m).unwrap().1, &b"abcd"[..]);
    }

    /// The `.rawf` clock bounds of docs/formats.md §2 at their edges (1 MHz and 2 GHz
    /// accepted, one Hz outside refused), header bytes written here.
    #[test]
    fn rawf_clock_bounds() {
        for (hz, ok) in [
            (999_999u32, false),
            (1_000_000, true),
            (200_000_000, true),
            (2_000_000_000, true),
            (2_000_000_001, false),
            (u32::MAX, false),
            (0, false),
        ] {
            let mut b = [0u8; 64];
            b[..4].copy_from_slice(&hz.to_le_bytes());
            let got = RawfHeader::parse(&b);
            assert_eq!(got.is_ok(), ok, "{hz} Hz: {got:?}");
            if ok {
                assert_eq!(got.unwrap().frequency_hz, hz);
            } else {
                assert_eq!(got, Err(RawfHeaderError::BadFrequency(hz)));
            }
        }
    }

    /// A `.rawf` header as literal bytes from the docs/formats.md §2 word list: 200 MHz with
    /// the QDC bit (h[0] bit 32), sync epoch 1.5 s (f64), trigger 0x1234 (`0x8000 | 0x1234`), mixed
    /// mode, creation tick 99, h[5..7] zero.
    #[test]
    fn rawf_header_literal_vector() {
        let mut b = vec![
            0x00, 0xc2, 0xeb, 0x0b, 0x01, 0x00, 0x00, 0x00, // h[0]
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf8, 0x3f, // h[1]
            0x34, 0x92, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // h[2]
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // h[3]
            0x63, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // h[4]
        ];
        b.resize(64, 0);
        let h = RawfHeader::parse(&b).unwrap();
        assert_eq!(
            (
                h.frequency_hz,
                h.qdc_mode,
                h.daq_sync_epoch_s,
                h.trigger_id,
                h.mixed_mode,
                h.creation_ticks
            ),
            (200_000_000, true, 1.5, Some(0x1234), true, 99)
        );
        assert_eq!(&h.encode()[..], &b[..]);
    }

    /// RF chunk checks the generated streams never reach (docs/ultrasound.md loss table): an
    /// empty shape is `us_bad_event_shape`, a chunk without samples or at an odd byte offset is
    /// `us_misaligned_chunks`.
    #[test]
    fn rf_chunk_shape_and_alignment_checks() {
        // frame 1, tx 0, channels, samples 8, ..., chunk 0 of 1 at `offset`.
        let chunk = |channels: u16, offset: u32, samples: &[u8]| {
            let mut b = vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            b.extend_from_slice(&channels.to_le_bytes());
            b.extend_from_slice(&[8, 0, 0, 0]);
            b.extend_from_slice(&[0; 16]);
            b.extend_from_slice(&[0, 0, 1, 0]);
            b.extend_from_slice(&offset.to_le_bytes());
            b.extend_from_slice(samples);
            b
        };
        assert!(decode_chunk(&chunk(4, 0, &[0; 64])).is_ok());
        assert!(decode_chunk(&chunk(4, 2, &[0; 62])).is_ok());
        let reason = |b: Vec<u8>| decode_chunk(&b).unwrap_err().reason();
        assert_eq!(reason(chunk(0, 0, &[0; 2])), "us_bad_event_shape");
        assert_eq!(reason(chunk(4, 0, &[])), "us_misaligned_chunks");
        assert_eq!(reason(chunk(4, 1, &[0; 2])), "us_misaligned_chunks");
        assert_eq!(reason(chunk(4, 0, &[0; 3])), "us_misaligned_chunks");
        assert_eq!(reason(chunk(4, 2, &[0; 64])), "us_chunk_outside_event");
    }
}
