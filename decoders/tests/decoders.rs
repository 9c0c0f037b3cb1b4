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
        if let Err(e) = decode_packet(&b) { prop_assert!(!e.reason().name().is_empty()); }
    }

    #[test]
    fn rawf_header_and_idxf_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..80), text in ".{0,200}") {
        if let Ok(h) = RawfHeader::parse(&bytes) {
            prop_assert_eq!(RawfHeader::parse(&h.encode()).unwrap().encode(), h.encode());
        }
        // The same bytes made into a valid header (random bytes almost never are one): it
        // must parse, and encode back to those bytes except the mixed-mode word (any non-zero
        // value means mixed).
        if bytes.len() >= 64 {
            let mut b = bytes.clone();
            let qdc = u64::from(b[4] & 1);
            b[0..8].copy_from_slice(&(200_000_000u64 | qdc << 32).to_le_bytes());
            b[16..24].fill(0);
            b[40..64].fill(0);
            let h = RawfHeader::parse(&b).unwrap();
            let e = h.encode();
            prop_assert_eq!(&e[..24], &b[..24]);
            prop_assert_eq!(&e[32..64], &b[32..64]);
            prop_assert_eq!(h.mixed_mode, b[24..32].iter().any(|&x| x != 0));
        }
        let _ = idxf::parse(&text);
    }
}

/// The hit-word test vector of docs/formats.md §2, read from the document, against a word
/// assembled from the bit table by hand (not by `HitFields::encode`): pins every field,
/// ecoarse and TAC included.
#[test]
fn hit_word_matches_the_doc_test_vector() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/formats.md"))
        .unwrap();
    let at = doc
        .find("Test vector: channel 0x20041")
        .expect("test vector paragraph");
    let para = &doc[at..at + 300];
    let hex = para
        .split('`')
        .nth(1)
        .expect("the word in backticks")
        .trim_start_matches("0x")
        .replace('_', "");
    let documented = u64::from_str_radix(&hex, 16).unwrap();
    // Table: efine 0-9, tfine 10-19, ecoarse 20-29, tcoarse 30-39, tacID 40-41, channel 42-63;
    // fine codes stored as (fine - 27) mod 1024.
    let (efine_raw, tfine_raw): (u64, u64) = ((28 + 1024 - 27) % 1024, (27 + 1024 - 27) % 1024);
    assert_eq!((efine_raw, tfine_raw), (1, 0));
    let by_table: u64 =
        efine_raw | tfine_raw << 10 | 7 << 20 | 1023 << 30 | 3 << 40 | 0x20041 << 42;
    assert_eq!(documented, by_table, "docs/formats.md test vector");
    assert_eq!(documented, 0x0801_07ff_c070_0001);
    let h = HitFields {
        channel: 0x20041,
        tac: 3,
        tcoarse: 1023,
        ecoarse: 7,
        tfine: 27,
        efine: 28,
    };
    assert_eq!(h.encode(), documented);
    assert_eq!(HitFields::decode(documented), h);
    // One more word with every field distinct and non-symmetric.
    let w: u64 = 0x3f0 | 0x2aa << 10 | 0x0f0 << 20 | 0x30f << 30 | 2 << 40 | 0x2a_5a5a << 42;
    let d = HitFields::decode(w);
    assert_eq!(
        (d.efine, d.tfine, d.ecoarse, d.tcoarse, d.tac, d.channel),
        (
            11,  // 0x3f0 + 27 = 1035, mod 1024
            709, // 0x2aa + 27
            0x0f0, 0x30f, 2, 0x2a_5a5a
        )
    );
    assert_eq!(d.encode(), w);
}

/// PETLINK 32-bit list mode: the real Siemens mMR excerpt (`../shared/data/petlink/`, CI has
/// it) and property tests on arbitrary bytes.
mod petlink {
    use proptest::prelude::*;
    use scandaq_decoders::interfile::{InterfileHeader, PetlinkHeader};
    use scandaq_decoders::petlink::{
        EventBatch, PetlinkDecoder, SinglesRateBatch, SinogramLayout, WordKind,
    };
    use std::path::PathBuf;

    fn data_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/petlink")
    }

    fn read_fixture(name: &str) -> Vec<u8> {
        let path = data_dir().join(name);
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "PETLINK test fixture {} is missing ({e}): the real mMR sample must sit at \
                 ../shared/data/petlink/ beside the workspace (CI provides it)",
                path.display()
            )
        })
    }

    fn header() -> PetlinkHeader {
        let text = String::from_utf8(read_fixture("PET_ACQ_small.l.hdr.STIR")).unwrap();
        PetlinkHeader::parse(&text, "PET_ACQ_small.l.hdr.STIR").unwrap()
    }

    #[test]
    fn real_header_parses() {
        let text = String::from_utf8(read_fixture("PET_ACQ_small.l.hdr.STIR")).unwrap();
        let raw = InterfileHeader::parse(&text, "hdr").unwrap();
        assert_eq!(
            raw.get("%SMS-MI header name space"),
            Some("PETLINK bin address")
        );
        assert_eq!(raw.entry("number of segments").unwrap().line, 65);
        let h = header();
        assert_eq!(h.data_file, "small_listmode_file.l");
        assert_eq!(h.data_file_name(), "small_listmode_file.l");
        assert_eq!(h.data_offset_bytes, 0);
        assert_eq!(h.originating_system.as_deref(), Some("2008"));
        assert_eq!((h.projections, h.views, h.rings), (344, 252, 64));
        assert_eq!((h.max_ring_difference, h.axial_compression), (60, 1));
        assert_eq!(h.segments, Some(11));
        assert_eq!(
            h.segment_table,
            vec![127, 115, 115, 93, 93, 71, 71, 49, 49, 27, 27]
        );
        assert_eq!(h.segment_table_sinograms(), 837);
        assert_eq!(h.tag_interval_ms, 1);
        assert_eq!(h.singles_scale_factor, 8.0);
        assert_eq!(h.singles_blocks, Some(224));
        assert_eq!(h.energy_window_kev, Some((430.0, 610.0)));
        assert_eq!(h.total_listmode_words, Some(331_257_106));
        assert_eq!(h.time_sync, Some(25_934_299));
        assert_eq!(h.image_duration_s, Some(900.0));
        assert_eq!(h.isotope.as_deref(), Some("F-18"));
    }

    #[test]
    fn header_errors_name_the_key_and_line() {
        let e = PetlinkHeader::parse("name of data file:=x.l\n%number of views:=252\n", "h.hdr")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("h.hdr") && e.contains("number of projections"),
            "{e}"
        );
        let e = PetlinkHeader::parse(
            "name of data file:=x.l\n%number of projections:=34four\n",
            "h.hdr",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2") && e.contains("34four"), "{e}");
        let e = PetlinkHeader::parse(
            "name of data file:=x.l\nnumber of projections:=344\nnumber of views:=252\nnumber of rings:=64\n%axial compression:=11\n",
            "h.hdr",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("axial compression") && e.contains("span 1"),
            "{e}"
        );
    }

    #[test]
    fn real_file_decodes_and_every_word_is_accounted_for() {
        let h = header();
        let bytes = read_fixture("small_listmode_file.l");
        let mut d = PetlinkDecoder::from_header(&h);
        let (mut ev, mut si) = (EventBatch::default(), SinglesRateBatch::default());
        // Odd-sized pieces: words straddle the pieces.
        for piece in bytes.chunks(65_537) {
            d.decode(piece, &mut ev, &mut si);
        }
        let c = d.finish().clone();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(c.words, bytes.len() as u64 / 4);
        assert_eq!(c.kinds_total(), c.words);
        assert_eq!(c.trailing_bytes, 0);
        assert_eq!(c.words, 254_816);
        assert_eq!((c.prompts, c.delayeds), (218_881, 35_320));
        assert_eq!((c.time_tags, c.singles_tags, c.control_words), (613, 1, 1));
        assert_eq!((c.gantry_tags, c.gating_tags), (0, 0));
        assert_eq!(c.events_before_first_tag, 187);
        // Time tags: 0..=612 ms, 1 ms apart, never backwards.
        assert_eq!((c.first_time_ms, c.last_time_ms), (Some(0), Some(612)));
        assert_eq!(c.backward_time_jumps, 0);
        assert_eq!(c.time_steps_not_interval, 0);
        assert_eq!(
            c.duration_ms(),
            u64::from(h.tag_interval_ms) * (c.time_tags - 1)
        );
        assert!(ev.time_ms.windows(2).all(|w| w[0] <= w[1]));
        // Every event is inside the span-1 sinogram set (4084 sinograms x 252 views x 344 bins).
        assert_eq!(c.address_out_of_range, 0);
        assert_eq!(ev.len() as u64, c.prompts + c.delayeds);
        assert_eq!(ev.prompt.iter().filter(|p| **p).count() as u64, c.prompts);
        let layout = d.layout();
        assert_eq!(layout.sinograms(), 4084);
        assert!(ev.sinogram.iter().all(|&s| s < 4084));
        assert!(ev.view.iter().all(|&v| v < 252));
        assert!(ev.bin.iter().all(|&b| b < 344));
        // The header's segment table (837 sinograms, span 11) does not bound the list-mode
        // addresses: they use the span-1 set, up to the last sinogram of segment +60.
        assert_eq!(ev.sinogram.iter().max(), Some(&4083));
        assert!(u64::from(*ev.sinogram.iter().max().unwrap()) >= h.segment_table_sinograms());
        assert!(ev.segment.iter().all(|s| s.unsigned_abs() <= 60));
        for i in 0..ev.len() {
            let (s, v, b) = layout.split(ev.bin_address[i]);
            assert_eq!(
                (s, v, b),
                (
                    u64::from(ev.sinogram[i]),
                    u32::from(ev.view[i]),
                    u32::from(ev.bin[i])
                )
            );
            let (ra, rb) = SinogramLayout::ring_pair(ev.segment[i], ev.axial_pos[i]);
            assert!(ra < 64 && rb < 64);
            assert_eq!(i32::from(rb) - i32::from(ra), i32::from(ev.segment[i]));
        }
        // The layout splits the address space where the data change: in segment 0 the axial
        // profile of a centred object is high in the middle and low at both ends.
        let mut seg0 = [0u64; 64];
        for i in 0..ev.len() {
            if ev.segment[i] == 0 {
                seg0[usize::from(ev.axial_pos[i])] += 1;
            }
        }
        let (ends, middle): (u64, u64) = (
            seg0[..8].iter().chain(&seg0[56..]).sum(),
            seg0[24..40].iter().sum(),
        );
        assert!(middle > 3 * ends, "segment 0 axial profile {seg0:?}");
        // The one singles tag: block 896, rate 0 (scaled by 8).
        assert_eq!(si.len(), 1);
        assert_eq!(
            (si.block[0], si.raw_rate[0], si.scaled_rate_hz[0]),
            (896, 0, 0.0)
        );
        assert_eq!(c.singles_block_beyond_header, 1);
    }

    fn layout_strategy() -> impl Strategy<Value = (u32, u32, u32, u32)> {
        (1u32..400, 1u32..300, 1u32..80, 0u32..80)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic_and_counts_add_up(
            bytes in prop::collection::vec(any::<u8>(), 0..4096),
            (bins, views, rings, mrd) in layout_strategy(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
            scale in 0.0f64..100.0,
        ) {
            let mut d = PetlinkDecoder::new(SinogramLayout::new(bins, views, rings, mrd), scale, 1, Some(224));
            let (mut ev, mut si) = (EventBatch::default(), SinglesRateBatch::default());
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut start = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                d.decode(&bytes[start..c], &mut ev, &mut si);
                start = c;
            }
            let c = d.finish().clone();
            prop_assert_eq!(c.bytes, bytes.len() as u64);
            prop_assert_eq!(c.words, bytes.len() as u64 / 4);
            prop_assert_eq!(c.trailing_bytes, bytes.len() as u64 % 4);
            prop_assert_eq!(c.kinds_total(), c.words);
            prop_assert_eq!(ev.len() as u64, c.events_kept());
            prop_assert_eq!(si.len() as u64, c.singles_tags);
            let expect: u64 = bytes.chunks_exact(4)
                .filter(|w| WordKind::of(u32::from_le_bytes([w[0], w[1], w[2], w[3]])) == WordKind::TimeTag)
                .count() as u64;
            prop_assert_eq!(c.time_tags, expect);
            let layout = d.layout();
            for i in 0..ev.len() {
                prop_assert!(ev.sinogram[i] < layout.sinograms());
                prop_assert!(u32::from(ev.view[i]) < layout.views && u32::from(ev.bin[i]) < layout.bins);
            }
        }

        #[test]
        fn arbitrary_header_text_never_panics(text in "(?s).{0,400}", lines in prop::collection::vec("[!%]?[a-z ()\\[\\]0-9]{0,20} ?:= ?[-0-9.e{}, a-z]{0,12}", 0..12)) {
            let _ = PetlinkHeader::parse(&text, "t");
            let joined = lines.join("\n");
            if let Ok(h) = InterfileHeader::parse(&joined, "t") {
                for e in &h.entries {
                    let _ = h.get_u32(&e.key);
                    let _ = h.get_f64(&e.key);
                    let _ = h.get_u32_list(&e.key);
                }
            }
            let _ = PetlinkHeader::parse(&joined, "t");
        }
    }
}

#[path = "meg/mod.rs"]
mod meg;

#[path = "rf/mod.rs"]
mod rf;

#[path = "structured/mod.rs"]
mod structured;
