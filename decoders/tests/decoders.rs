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
        // Arbitrary bytes are accepted exactly when the docs/formats.md §2 rules, applied
        // here, say so (almost never: the valid case is built below).
        prop_assert_eq!(RawfHeader::parse(&bytes).is_ok(), doc_valid_rawf_header(&bytes));
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

/// docs/formats.md §2 `.rawf` header rules: 64 bytes; h[0] bits 0-31 a clock of 1 MHz to 2 GHz,
/// bit 32 QDC, bits 33-63 zero; h[2] zero or `0x8000 | triggerID` (16 bits); h[5..7] zero.
fn doc_valid_rawf_header(b: &[u8]) -> bool {
    if b.len() < 64 {
        return false;
    }
    let h = |k: usize| u64::from_le_bytes(b[8 * k..8 * k + 8].try_into().unwrap());
    let clock = h(0) & 0xffff_ffff;
    h(0) >> 33 == 0
        && (1_000_000..=2_000_000_000).contains(&clock)
        && (h(2) == 0 || (h(2) >> 16 == 0 && h(2) & 0x8000 != 0))
        && (5..8).all(|k| h(k) == 0)
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

/// Whole PETsys hit words and frame headers as literal vectors written from the docs/formats.md
/// §2 tables (computed by hand from the bit positions, not by `HitFields::encode` or
/// `encode_frame`), several non-trivial values per field, ecoarse and TAC included: the
/// scanner finds the frames with their IDs, hit counts and lost-data flags, and every hit
/// word decodes to its fields.
#[test]
fn petsys_hit_words_and_frame_headers_match_literal_vectors() {
    // (word, channel, tac, tcoarse, ecoarse, tfine, efine); fine codes stored (fine - 27) mod 1024.
    let hits: [(u64, u32, u8, u16, u16, u16, u16); 4] = [
        (0xffff_fc00_3fff_97e4, 0x3f_ffff, 0, 0, 1023, 0, 1023),
        (0x0000_0580_2011_2769, 0x1, 1, 512, 513, 100, 900),
        (0xaaaa_aa55_6aaf_fc00, 0x2a_aaaa, 2, 0x155, 0x2aa, 26, 27),
        (0x0555_5700_400f_91d9, 0x1_5555, 3, 1, 0, 1023, 500),
    ];
    for &(w, channel, tac, tcoarse, ecoarse, tfine, efine) in &hits {
        let want = HitFields {
            channel,
            tac,
            tcoarse,
            ecoarse,
            tfine,
            efine,
        };
        assert_eq!(HitFields::decode(w), want, "{w:#018x}");
        assert_eq!(want.encode(), w, "encode {want:?}");
    }
    // Frames: (word0, word1, frame ID, hits, lossy). frameID bits 0-35, frameSize (hits + 2)
    // bits 36-50; nEvents bits 0-14, lost-data flags bits 15-16.
    let frames: [(u64, u64, u64, usize, bool); 4] = [
        (
            0x0000_0059_8765_4321,
            0x0000_0000_0000_8003,
            0x9_8765_4321,
            3,
            true,
        ),
        (
            0x0000_0039_8765_4322,
            0x0000_0000_0001_0001,
            0x9_8765_4322,
            1,
            true,
        ),
        (
            0x0000_0049_8765_4323,
            0x0000_0000_0000_0002,
            0x9_8765_4323,
            2,
            false,
        ),
        (
            0x0000_0029_8765_4324,
            0x0000_0000_0000_0000,
            0x9_8765_4324,
            0,
            false,
        ),
    ];
    let mut buf = Vec::new();
    let mut next_hit = 0;
    for &(w0, w1, _, n, _) in &frames {
        buf.extend_from_slice(&w0.to_le_bytes());
        buf.extend_from_slice(&w1.to_le_bytes());
        for _ in 0..n {
            buf.extend_from_slice(&hits[next_hit % hits.len()].0.to_le_bytes());
            next_hit += 1;
        }
    }
    let mut s = FrameScanner::new();
    let mut spans = Vec::new();
    assert_eq!(s.scan(&buf, true, &mut spans), buf.len());
    assert_eq!(
        s.losses.get("bad_frame_header"),
        0,
        "{}",
        s.losses.summary()
    );
    let got: Vec<(u64, usize, bool)> = spans
        .iter()
        .map(|sp| (sp.frame & ((1 << 36) - 1), sp.n_hits as usize, sp.lossy))
        .collect();
    let want: Vec<(u64, usize, bool)> = frames.iter().map(|f| (f.2, f.3, f.4)).collect();
    assert_eq!(got, want);
    assert_eq!(s.losses.get("frontend_lost_frames"), 2);
    let mut k = 0;
    for sp in &spans {
        for i in 0..sp.n_hits as usize {
            let o = sp.hits_offset + 8 * i;
            let w = u64::from_le_bytes(buf[o..o + 8].try_into().unwrap());
            let h = hits[k % hits.len()];
            assert_eq!(
                HitFields::decode(w),
                HitFields {
                    channel: h.1,
                    tac: h.2,
                    tcoarse: h.3,
                    ecoarse: h.4,
                    tfine: h.5,
                    efine: h.6
                }
            );
            k += 1;
        }
    }
    // The encoder writes the same header words.
    let mut enc = Vec::new();
    encode_frame(&mut enc, 0x9_8765_4321, true, &[1, 2, 3]);
    assert_eq!(&enc[..16], &buf[..16]);
    // A synthetic lost-frame header: (2 << 36) | first lost, word 1 = 1 << 16.
    let mut lost = Vec::new();
    lost.extend_from_slice(&0x0000_002f_ffff_fffe_u64.to_le_bytes());
    lost.extend_from_slice(&0x0000_0000_0001_0000_u64.to_le_bytes());
    lost.extend_from_slice(&0x0000_0020_0000_0002_u64.to_le_bytes()); // frame 2, no hits
    lost.extend_from_slice(&0u64.to_le_bytes());
    let mut s = FrameScanner::new();
    let mut spans = Vec::new();
    s.scan(&lost, true, &mut spans);
    // Frames 0xf_ffff_fffe, 0xf_ffff_ffff, 0, 1 lost (up to frame 2, across the wrap).
    assert_eq!(
        s.losses.get("frontend_lost_frames"),
        4,
        "{}",
        s.losses.summary()
    );
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].frame & ((1 << 36) - 1), 2);
}

/// PETLINK 32-bit list mode: the real Siemens mMR excerpt (`../shared/data/petlink/`, CI has
/// it) and property tests on arbitrary bytes.
mod petlink {
    use proptest::prelude::*;
    use scandaq_decoders::interfile::{InterfileHeader, PetlinkHeader};
    use scandaq_decoders::petlink::{EventBatch, PetlinkDecoder, SinglesRateBatch, SinogramLayout};
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
        // The split of docs/formats.md §4 done here (mMR: 344 bins, 252 views), not with
        // the decoder's `SinogramLayout::split`.
        for i in 0..ev.len() {
            let a = ev.bin_address[i];
            assert_eq!(
                (a / (252 * 344), (a % (252 * 344)) / 344, a % 344),
                (ev.sinogram[i], u32::from(ev.view[i]), u32::from(ev.bin[i]))
            );
            assert!(u32::from(ev.axial_pos[i]) + u32::from(ev.segment[i].unsigned_abs()) < 64);
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

    /// docs/formats.md §4, bits 31..28 → kind, as an index into
    /// [prompts, delayeds, time_tags, singles_tags, gantry_tags, gating_tags, control_words].
    const DOC_KIND_OF_TOP_NIBBLE: [usize; 16] = [
        1, 1, 1, 1, // 00xx delayed
        0, 0, 0, 0, // 01xx prompt
        2, 2, // 100x time tag
        3, 3, // 101x singles
        4, 4, // 110x gantry
        5, // 1110 gating
        6, // 1111 control
    ];

    /// One generated word: its kind and fields (ground truth).
    #[derive(Clone, Copy, Debug)]
    enum Word {
        Event { prompt: bool, address: u32 },
        Time(u32),
        Singles { block: u32, rate: u32 },
        Gantry(u32),
        Gating(u32),
        Control(u32),
    }

    impl Word {
        /// The word, bits placed by the docs/formats.md §4 table (not by the decoder's
        /// encoders).
        fn bits(self) -> u32 {
            match self {
                Word::Event { prompt, address } => (u32::from(prompt) << 30) | address,
                Word::Time(ms) => 0b100 << 29 | ms,
                Word::Singles { block, rate } => 0b101 << 29 | block << 19 | rate,
                Word::Gantry(x) => 0b110 << 29 | x,
                Word::Gating(x) => 0b1110 << 28 | x,
                Word::Control(x) => 0b1111 << 28 | x,
            }
        }
    }

    fn word(max_address: u32) -> impl Strategy<Value = Word> {
        prop_oneof![
            6 => (any::<bool>(), prop_oneof![0..max_address, 0u32..1 << 30])
                .prop_map(|(prompt, address)| Word::Event { prompt, address }),
            3 => prop_oneof![0u32..50, 0u32..1 << 29].prop_map(Word::Time),
            2 => (0u32..1 << 10, 0u32..1 << 19).prop_map(|(block, rate)| Word::Singles { block, rate }),
            1 => (0u32..1 << 29).prop_map(Word::Gantry),
            1 => (0u32..1 << 28).prop_map(Word::Gating),
            1 => (0u32..1 << 28).prop_map(Word::Control),
        ]
    }

    /// (segment, axial position) of each span-1 sinogram, in the order docs/formats.md §4
    /// gives: segments 0, -1, +1, -2, +2, ..., segment s holding rings - |s| sinograms.
    fn doc_sinograms(rings: u32, mrd: u32) -> Vec<(i16, u16)> {
        let mut v = Vec::new();
        let mut segs = vec![0i32];
        for d in 1..=mrd as i32 {
            segs.push(-d);
            segs.push(d);
        }
        for s in segs {
            for a in 0..rings - s.unsigned_abs() {
                v.push((s as i16, a as u16));
            }
        }
        v
    }

    /// Literal PETLINK words written from the docs/formats.md §4 table (hex by hand, not the
    /// decoder's `encode_*`), several values per field, decoded with the mMR layout (344
    /// bins, 252 views, 64 rings, maximum ring difference 60).
    #[test]
    fn literal_words_decode_as_the_doc_table_says() {
        let words: [u32; 12] = [
            0x9fff_fffe, // time tag, 0x1fff_fffe ms (bits 0-28)
            0x4123_4567, // prompt, address 0x0123_4567
            0x0000_0000, // delayed, address 0
            0x8000_0064, // time tag, 100 ms (backwards)
            0x3fff_ffff, // delayed, address 2^30 - 1 (beyond the 4084 sinograms)
            0xb52d_a5a5, // singles: block 0x2a5 = 677 (bits 19-28), rate 0x5a5a5 (bits 0-18)
            0xa000_0001, // singles: block 0, rate 1
            0x8000_0065, // time tag, 101 ms
            0x7fff_ffff, // prompt, address 2^30 - 1
            0xc123_4567, // gantry
            0xe000_0001, // gating
            0xf000_0000, // control
        ];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut d = PetlinkDecoder::new(SinogramLayout::new(344, 252, 64, 60), 8.0, 1, Some(224));
        let (mut ev, mut si) = (EventBatch::default(), SinglesRateBatch::default());
        d.decode(&bytes, &mut ev, &mut si);
        let c = d.finish().clone();
        assert_eq!(
            (c.prompts, c.delayeds, c.time_tags, c.singles_tags),
            (2, 2, 3, 2)
        );
        assert_eq!((c.gantry_tags, c.gating_tags, c.control_words), (1, 1, 1));
        assert_eq!((c.address_out_of_range, c.backward_time_jumps), (2, 1));
        assert_eq!(c.time_steps_not_interval, 0);
        assert_eq!(
            (c.first_time_ms, c.last_time_ms),
            (Some(0x1fff_fffe), Some(101))
        );
        assert_eq!(c.singles_block_beyond_header, 1);
        // 0x0123_4567 = 19088743 = sinogram 220 * 86688 + view 50 * 344 + bin 183; sinogram
        // 220 = segment -2 (after 64 + 63 + 63 sinograms of segments 0, -1, +1), axial 30.
        assert_eq!(ev.len(), 2);
        assert_eq!(
            (
                ev.time_ms[0],
                ev.prompt[0],
                ev.bin_address[0],
                ev.sinogram[0],
                ev.view[0],
                ev.bin[0],
                ev.segment[0],
                ev.axial_pos[0]
            ),
            (0x1fff_fffe, true, 0x0123_4567, 220, 50, 183, -2, 30)
        );
        assert_eq!(
            (
                ev.time_ms[1],
                ev.prompt[1],
                ev.bin_address[1],
                ev.sinogram[1],
                ev.view[1],
                ev.bin[1],
                ev.segment[1],
                ev.axial_pos[1]
            ),
            (0x1fff_fffe, false, 0, 0, 0, 0, 0, 0)
        );
        assert_eq!(si.block, vec![677, 0]);
        assert_eq!(si.raw_rate, vec![0x5a5a5, 1]);
        assert_eq!(si.time_ms, vec![100, 100]);
        assert_eq!(si.scaled_rate_hz, vec![0x5a5a5 as f64 * 8.0, 8.0]);
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
            // Expected kinds from the docs/formats.md §4 table, by the test's own lookup of
            // the top four bits (not the decoder's classifier).
            let mut expect = [0u64; 7];
            for w in bytes.chunks_exact(4) {
                expect[DOC_KIND_OF_TOP_NIBBLE[usize::from(w[3] >> 4)]] += 1;
            }
            prop_assert_eq!(
                [c.prompts, c.delayeds, c.time_tags, c.singles_tags, c.gantry_tags, c.gating_tags, c.control_words],
                expect
            );
            let layout = d.layout();
            for i in 0..ev.len() {
                prop_assert!(ev.sinogram[i] < layout.sinograms());
                prop_assert!(u32::from(ev.view[i]) < layout.views && u32::from(ev.bin[i]) < layout.bins);
            }
        }

        /// Words generated by kind with known fields, placed by the doc table: every count,
        /// event row and singles row equals what the generated truth says (times from the
        /// latest generated time tag, sinogram/view/bin/segment/axial from the doc's layout
        /// computed here, out-of-range addresses counted).
        #[test]
        fn generated_words_decode_to_their_truth(
            (bins, views, rings, mrd) in (1u32..40, 1u32..30, 1u32..12, 0u32..12),
            seed_words in prop::collection::vec(word(1 << 30), 0..300),
            interval in 1u32..3,
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        ) {
            let mrd = mrd.min(rings - 1);
            let sinos = doc_sinograms(rings, mrd);
            let size = bins * views;
            // Addresses: mostly inside the layout, some beyond it.
            let in_range = sinos.len() as u32 * size;
            let words: Vec<Word> = seed_words.iter().map(|w| match *w {
                Word::Event { prompt, address } if address % 4 != 0 => Word::Event { prompt, address: address % (in_range + in_range / 8 + 1) },
                other => other,
            }).collect();
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.bits().to_le_bytes()).collect();
            let mut d = PetlinkDecoder::new(SinogramLayout::new(bins, views, rings, mrd), 2.5, interval, Some(224));
            let (mut ev, mut si) = (EventBatch::default(), SinglesRateBatch::default());
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut start = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                d.decode(&bytes[start..c], &mut ev, &mut si);
                start = c;
            }
            let c = d.finish().clone();
            // Truth.
            let mut kinds = [0u64; 7];
            let (mut time, mut first, mut last) = (None::<u32>, None::<u32>, None::<u32>);
            let (mut before_tag, mut back, mut odd_steps, mut out_of_range, mut beyond) = (0u64, 0u64, 0u64, 0u64, 0u64);
            let mut rows = Vec::new();
            let mut srows = Vec::new();
            for w in &words {
                match *w {
                    Word::Event { prompt, address } => {
                        kinds[usize::from(!prompt)] += 1;
                        before_tag += u64::from(time.is_none());
                        let sino = address / size;
                        match sinos.get(sino as usize) {
                            Some(&(seg, ax)) => rows.push((
                                time.unwrap_or(0), prompt, address, sino,
                                ((address % size) / bins) as u16, (address % bins) as u16, seg, ax,
                            )),
                            None => out_of_range += 1,
                        }
                    }
                    Word::Time(ms) => {
                        kinds[2] += 1;
                        if let Some(p) = time {
                            if ms < p { back += 1 } else if ms - p != interval { odd_steps += 1 }
                        }
                        time = Some(ms);
                        first.get_or_insert(ms);
                        last = Some(ms);
                    }
                    Word::Singles { block, rate } => {
                        kinds[3] += 1;
                        beyond += u64::from(block >= 224);
                        srows.push((time.unwrap_or(0), block as u16, rate, f64::from(rate) * 2.5));
                    }
                    Word::Gantry(_) => kinds[4] += 1,
                    Word::Gating(_) => kinds[5] += 1,
                    Word::Control(_) => kinds[6] += 1,
                }
            }
            prop_assert_eq!(
                [c.prompts, c.delayeds, c.time_tags, c.singles_tags, c.gantry_tags, c.gating_tags, c.control_words],
                kinds
            );
            prop_assert_eq!(c.words, words.len() as u64);
            prop_assert_eq!((c.events_before_first_tag, c.backward_time_jumps, c.time_steps_not_interval), (before_tag, back, odd_steps));
            prop_assert_eq!((c.address_out_of_range, c.singles_block_beyond_header), (out_of_range, beyond));
            prop_assert_eq!((c.first_time_ms, c.last_time_ms), (first, last));
            prop_assert_eq!(d.layout().sinograms() as usize, sinos.len());
            let got: Vec<_> = (0..ev.len()).map(|i| (
                ev.time_ms[i], ev.prompt[i], ev.bin_address[i], ev.sinogram[i],
                ev.view[i], ev.bin[i], ev.segment[i], ev.axial_pos[i],
            )).collect();
            prop_assert_eq!(got, rows);
            let sgot: Vec<_> = (0..si.len()).map(|i| (si.time_ms[i], si.block[i], si.raw_rate[i], si.scaled_rate_hz[i])).collect();
            prop_assert_eq!(sgot, srows);
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

#[path = "mutants/mod.rs"]
mod mutants;

#[path = "control/mod.rs"]
mod control;
