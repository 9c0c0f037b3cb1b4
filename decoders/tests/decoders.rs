//! Property tests of the decoders: encode/decode round trips, and arbitrary bytes never panic
//! and are fully accounted for (every byte is consumed as a frame, skipped, or truncated).

use proptest::prelude::*;
use scandaq_decoders::idxf;
use scandaq_decoders::petsys::{FrameScanner, HitFields, encode_frame};
use scandaq_decoders::rawf::RawfHeader;
use scandaq_decoders::transport::{self, decode_packet, encode_packet};

fn hit_fields() -> impl Strategy<Value = HitFields> {
    (
        0u32..(1 << 22),
        0u8..4,
        0u16..1024,
        0u16..1024,
        0u16..1024,
        0u16..1024,
    )
        .prop_map(|(channel, tac, tcoarse, ecoarse, tfine, efine)| HitFields {
            channel,
            tac,
            tcoarse,
            ecoarse,
            tfine,
            efine,
        })
}

/// Bytes accounted by the scanner: frames (headers + hits) + skipped + truncated.
fn accounted(s: &FrameScanner, frame_bytes: u64) -> u64 {
    frame_bytes + s.losses.get("resync_skipped_bytes") + s.losses.get("truncated_bytes")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn hit_word_round_trip(h in hit_fields()) {
        prop_assert_eq!(HitFields::decode(h.encode()), h);
    }

    #[test]
    fn frames_round_trip_in_any_split(
        frames in prop::collection::vec((prop::collection::vec(hit_fields(), 0..40), any::<bool>()), 1..20),
        start in 0u64..(1 << 36),
        split in any::<prop::sample::Index>(),
    ) {
        let mut buf = Vec::new();
        let mut expect = Vec::new();
        for (k, (hits, lossy)) in frames.iter().enumerate() {
            let words: Vec<u64> = hits.iter().map(HitFields::encode).collect();
            encode_frame(&mut buf, start + k as u64, *lossy, &words);
            expect.push((words, *lossy));
        }
        // Feed in two pieces at an arbitrary split: the scanner must carry the partial frame.
        let cut = split.index(buf.len() + 1);
        let mut s = FrameScanner::new();
        let mut spans = Vec::new();
        let used = s.scan(&buf[..cut], false, &mut spans);
        let mut rest = buf[used..].to_vec();
        let base = used;
        let mut spans2 = Vec::new();
        prop_assert_eq!(s.scan(&rest, true, &mut spans2), rest.len());
        rest.clear();
        prop_assert_eq!(spans.len() + spans2.len(), frames.len());
        let all: Vec<_> = spans.iter().map(|sp| (sp, 0usize)).chain(spans2.iter().map(|sp| (sp, base))).collect();
        for ((span, off), (words, lossy)) in all.iter().zip(&expect) {
            prop_assert_eq!(span.n_hits as usize, words.len());
            prop_assert_eq!(span.lossy, *lossy);
            for (i, w) in words.iter().enumerate() {
                let p = off + span.hits_offset + 8 * i;
                prop_assert_eq!(u64::from_le_bytes(buf[p..p + 8].try_into().unwrap()), *w);
            }
        }
        prop_assert_eq!(s.losses.get("frontend_lost_frames"), frames.iter().filter(|f| f.1).count() as u64);
        prop_assert!(s.losses.get("bad_frame_header") == 0);
        // Frames were numbered consecutively: unwrapped numbers are consecutive across the wrap.
        let firsts: Vec<u64> = spans.iter().chain(&spans2).map(|s| s.frame).collect();
        prop_assert!(firsts.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn scanner_accounts_for_every_byte_of_arbitrary_input(bytes in prop::collection::vec(any::<u8>(), 0..2048), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(bytes.len() + 1);
        let mut s = FrameScanner::new();
        let mut spans = Vec::new();
        let used = s.scan(&bytes[..cut], false, &mut spans);
        let mut rest = bytes[used..].to_vec();
        let used2 = s.scan(&rest, true, &mut spans);
        prop_assert_eq!(used2, rest.len());
        rest.clear();
        let hit_bytes: u64 = spans.iter().map(|f| 16 + 8 * u64::from(f.n_hits)).sum();
        prop_assert!(hit_bytes <= s.frame_bytes);
        prop_assert_eq!(accounted(&s, s.frame_bytes), bytes.len() as u64);
        for sp in &spans {
            prop_assert!(sp.n_hits < 1 << 15);
        }
    }

    #[test]
    fn garbage_between_frames_is_skipped_and_counted(
        garbage in prop::collection::vec(any::<u8>(), 1..200),
        n_hits in 0usize..10,
    ) {
        // Garbage of a whole number of words between two good frames.
        let mut garbage = garbage;
        garbage.resize(garbage.len().div_ceil(8) * 8, 0xff);
        let words: Vec<u64> = (0..n_hits as u64).map(|i| i << 42).collect();
        let mut buf = Vec::new();
        encode_frame(&mut buf, 1000, false, &words);
        let first_len = buf.len();
        buf.extend_from_slice(&garbage);
        encode_frame(&mut buf, 1001, false, &words);
        let mut s = FrameScanner::new();
        let mut spans = Vec::new();
        prop_assert_eq!(s.scan(&buf, true, &mut spans), buf.len());
        prop_assert_eq!(spans[0].frame, 1000);
        // The last good frame is always recovered.
        prop_assert_eq!(spans.last().unwrap().frame, 1001);
        prop_assert_eq!(spans.last().unwrap().hits_offset, first_len + garbage.len() + 16);
    }

    #[test]
    fn transport_round_trip(fmt in any::<u16>(), src in any::<u32>(), seq in any::<u64>(), payload in prop::collection::vec(any::<u8>(), 0..300), crc in any::<bool>()) {
        let mut out = Vec::new();
        encode_packet(&mut out, fmt, src, seq, 0, &payload, crc);
        let (h, p) = decode_packet(&out).unwrap();
        prop_assert_eq!((h.payload_format, h.source_id, h.seq), (fmt, src, seq));
        prop_assert_eq!(p, &payload[..]);
        prop_assert_eq!(h.flags & transport::FLAG_CRC != 0, crc);
    }

    #[test]
    fn transport_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = decode_packet(&bytes);
        let mut b = bytes.clone();
        if b.len() >= 4 { b[..4].copy_from_slice(b"SDQ1"); }
        if let Err(e) = decode_packet(&b) { prop_assert!(!e.reason().is_empty()); }
    }

    #[test]
    fn rawf_header_and_idxf_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..80), text in ".{0,200}") {
        if let Ok(h) = RawfHeader::parse(&bytes) {
            prop_assert_eq!(RawfHeader::parse(&h.encode()).unwrap(), h);
        }
        let _ = idxf::parse(&text);
    }
}
