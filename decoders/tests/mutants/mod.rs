//! Tests written for the mutants cargo-mutants found missed in scandaq-decoders
//! (/work/notes/decoders_mutants.md lists each mutant and the test that catches it, or why it
//! is equivalent). Expected values come from docs/formats.md, docs/meg.md,
//! docs/ultrasound.md and the module documentation (field widths, documented rules), never
//! from running the code under test.

use scandaq_decoders::idxf;
use scandaq_decoders::interfile::{InterfileError, InterfileHeader, PetlinkHeader};
use scandaq_decoders::meg::{
    ChannelKind, ChannelTableError, FLAG_CLIPPED, FLAG_TRIGGER_CHANNEL, parse_channel_table,
};
use scandaq_decoders::petlink::{
    EventBatch, PetlinkDecoder, SinglesRateBatch, SinogramLayout, WordKind,
};
use scandaq_decoders::petsys::{
    FrameIdVerdict, FrameScanner, FrameSpan, encode_frame, judge_frame_id,
};
use scandaq_decoders::rf::{
    ChunkHeader, RfError, RfEventHeader, RfReassembler, decode_chunk_limited, encode_chunk,
    plan_chunks,
};

// ---------------------------------------------------------------- transport

use scandaq_decoders::transport::encode_packet;

/// docs/formats.md §1 flags: bit 0 CRC present, bit 1 end of stream, bit 2 start of stream.
#[test]
fn transport_flag_constants_are_the_documented_bits() {
    use scandaq_decoders::transport::{FLAG_CRC, FLAG_END_OF_STREAM, FLAG_START_OF_STREAM};
    assert_eq!(
        (FLAG_CRC, FLAG_END_OF_STREAM, FLAG_START_OF_STREAM),
        (0b001, 0b010, 0b100)
    );
}

/// docs/formats.md §1: a packet is `header_len` header bytes (readers skip extra ones) then
/// `payload_len` payload bytes; a header written by hand with header_len 40 and payload_len 7
/// gives a 47-byte packet.
#[test]
fn transport_packet_len_is_header_len_plus_payload_len() {
    use scandaq_decoders::transport::TransportHeader;
    let mut b = Vec::new();
    b.extend_from_slice(b"SDQ1");
    b.extend_from_slice(&40u16.to_le_bytes()); // header_len
    b.extend_from_slice(&1u16.to_le_bytes()); // payload_format
    b.extend_from_slice(&9u32.to_le_bytes()); // source_id
    b.extend_from_slice(&0u32.to_le_bytes()); // flags: no CRC
    b.extend_from_slice(&5u64.to_le_bytes()); // seq
    b.extend_from_slice(&7u32.to_le_bytes()); // payload_len
    b.extend_from_slice(&0u32.to_le_bytes()); // crc32c
    b.extend_from_slice(&[0; 8 + 7]); // 8 extra header bytes, 7 payload bytes
    let h = TransportHeader::parse(&b).expect("a valid header");
    assert_eq!((h.header_len, h.payload_len), (40, 7));
    assert_eq!(h.packet_len(), 47);
}

/// docs/formats.md §1: flag bit 0 says the CRC is present. A packet encoded with a CRC has
/// bit 0 set even when the caller's extra flags already carry it (bytes 12..16 = flags).
#[test]
fn transport_packet_with_crc_has_the_crc_flag_whatever_the_extra_flags() {
    use scandaq_decoders::transport::{FLAG_CRC, FLAG_END_OF_STREAM, decode_packet};
    let mut b = Vec::new();
    encode_packet(&mut b, 1, 9, 5, FLAG_CRC | FLAG_END_OF_STREAM, b"abc", true);
    assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 0b011);
    let (h, payload) = decode_packet(&b).expect("valid packet");
    assert_eq!((h.flags, payload), (0b011, &b"abc"[..]));
}

// ---------------------------------------------------------------- .idxf

/// docs/formats.md §2: one line per step; a blank line or a `#` line is not a step, and a step
/// whose end offset equals its start offset is empty, not "before" it (the end is exclusive).
#[test]
fn idxf_skips_blank_and_comment_lines_and_accepts_an_empty_step() {
    let steps = idxf::parse("# startOffset endOffset ...\n\n64 4096 7 99 35.5 0\n   \n")
        .expect("a comment line and blank lines are not steps");
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!((steps[0].start_offset, steps[0].end_offset), (64, 4096));
    let empty = idxf::parse("64 64 7 7 0 0\n").expect("endOffset == startOffset is an empty step");
    assert_eq!((empty[0].start_offset, empty[0].end_offset), (64, 64));
}

// ---------------------------------------------------------------- Interfile / PETLINK header

/// The four required keys of docs/formats.md §4 with the given shape, then `extra` lines.
fn petlink_header(projections: u32, views: u32, rings: u32, extra: &str) -> String {
    format!(
        "!INTERFILE:=\nname of data file:=x.l\n%number of projections:={projections}\n\
         %number of views:={views}\nnumber of rings:={rings}\n{extra}"
    )
}

/// Projections and views must be 1..=65535 and rings 1..=4096 (`MAX_BINS_OR_VIEWS`,
/// `MAX_RINGS`, the message "must be between 1 and 65535 (rings: 4096)"): the bounds
/// themselves are accepted, 0 and one past them refused naming the key.
#[test]
fn petlink_header_accepts_the_shape_bounds_and_refuses_zero_and_one_past() {
    let h = PetlinkHeader::parse(&petlink_header(65535, 65535, 4096, ""), "h.hdr")
        .expect("65535 projections and views, 4096 rings are within the documented bounds");
    assert_eq!((h.projections, h.views, h.rings), (65535, 65535, 4096));
    for (p, v, r, key) in [
        (0, 252, 64, "number of projections"),
        (344, 0, 64, "number of views"),
        (344, 252, 0, "number of rings"),
        (65536, 252, 64, "number of projections"),
        (344, 65536, 64, "number of views"),
        (344, 252, 4097, "number of rings"),
    ] {
        match PetlinkHeader::parse(&petlink_header(p, v, r, ""), "h.hdr") {
            Err(InterfileError::Unsupported { key: k, .. }) => {
                assert_eq!(k, key, "projections {p} views {v} rings {r}")
            }
            other => panic!(
                "projections {p} views {v} rings {r}: expected Unsupported naming `{key}`, got {other:?}"
            ),
        }
    }
}

/// docs/formats.md §4: "more than one TOF bin ... refused"; one TOF bin is plain list mode.
#[test]
fn petlink_header_refuses_more_than_one_tof_bin() {
    let one = petlink_header(344, 252, 64, "%number of TOF time bins:=1\n");
    assert_eq!(PetlinkHeader::parse(&one, "h").unwrap().tof_bins, 1);
    let two = petlink_header(344, 252, 64, "%number of TOF time bins:=2\n");
    match PetlinkHeader::parse(&two, "h") {
        Err(InterfileError::Unsupported { key, line, .. }) => {
            assert_eq!((key.as_str(), line), ("number of tof time bins", 6))
        }
        other => panic!("2 TOF bins must be refused, got {other:?}"),
    }
}

/// `get` documents "present and non-empty": a key written with an empty value (Siemens
/// headers have such lines) is absent, not a bad number, for the numeric getters too.
#[test]
fn interfile_empty_numeric_value_is_absent_not_bad() {
    let text = petlink_header(
        344,
        252,
        64,
        "%total listmode word counts:=\n%singles polling interval (sec):=  \n",
    );
    let raw = InterfileHeader::parse(&text, "h").unwrap();
    assert_eq!(raw.get_u64("%total listmode word counts"), Ok(None));
    assert_eq!(raw.get_f64("%singles polling interval (sec)"), Ok(None));
    let h = PetlinkHeader::from_interfile(&raw).expect("empty optional values are absent");
    assert_eq!(h.total_listmode_words, None);
    assert_eq!(h.singles_polling_interval_s, None);
}

/// `get_f64`: "an optional finite number": `inf` and `NaN` parse as f64 but are refused,
/// naming the line and saying a finite number was expected.
#[test]
fn interfile_infinite_or_nan_number_is_refused() {
    let raw = InterfileHeader::parse("a:=inf\nb:=NaN\nc:=-inf\nd:=4.65e+007\n", "h").unwrap();
    for (key, line) in [("a", 1), ("b", 2), ("c", 3)] {
        match raw.get_f64(key) {
            Err(InterfileError::BadValue {
                line: l, expected, ..
            }) => {
                assert_eq!((l, expected), (line, "a finite number"), "key {key}")
            }
            other => panic!("key {key}: expected BadValue, got {other:?}"),
        }
    }
    assert_eq!(raw.get_f64("d"), Ok(Some(46_500_000.0)));
}

/// `require_f64` returns the number written (exponent form as Siemens writes it) and names a
/// missing key.
#[test]
fn interfile_require_f64_returns_the_written_number_or_names_the_missing_key() {
    let raw = InterfileHeader::parse("image duration (sec):=4.65e+007\nx:=-2.5\n", "h").unwrap();
    assert_eq!(raw.require_f64("Image Duration (sec)"), Ok(46_500_000.0));
    assert_eq!(raw.require_f64("x"), Ok(-2.5));
    assert_eq!(
        raw.require_f64("%singles scale factor"),
        Err(InterfileError::MissingKey {
            origin: "h".into(),
            key: "singles scale factor".into()
        })
    );
}

// ---------------------------------------------------------------- OPM-MEG

/// docs/meg.md block header: flags bit 0 = trigger channel, bit 1 = clipped.
#[test]
fn meg_flag_constants_are_the_documented_bits() {
    assert_eq!(FLAG_TRIGGER_CHANNEL, 0b01);
    assert_eq!(FLAG_CLIPPED, 0b10);
}

const MEG_HEADER: &str = "name\tkind\tcal\trange\tunit\tdelay_ps\tx_m\ty_m\tz_m\tox\toy\toz\n";

/// docs/meg.md §2: `kind` is one of `meg_mag`, `meg_grad`, `trigger`, `misc`; every one is
/// read from a channel table, anything else is refused.
#[test]
fn meg_channel_table_reads_all_four_kinds() {
    for (name, kind) in [
        ("meg_mag", ChannelKind::MegMag),
        ("meg_grad", ChannelKind::MegGrad),
        ("trigger", ChannelKind::Trigger),
        ("misc", ChannelKind::Misc),
    ] {
        assert_eq!(ChannelKind::parse(name), Some(kind), "{name}");
    }
    assert_eq!(ChannelKind::parse("squid"), None);
    let text = format!(
        "{MEG_HEADER}g1\tmeg_grad\t1e-16\t1\tT/m\t0\t0\t0\t0\t0\t0\t1\n\
         aux\tmisc\t1\t1\tV\t0\t0\t0\t0\t1\t0\t0\n"
    );
    let t = parse_channel_table(&text).expect("meg_grad and misc rows are valid");
    assert_eq!(
        t.iter().map(|c| c.kind).collect::<Vec<_>>(),
        vec![ChannelKind::MegGrad, ChannelKind::Misc]
    );
}

/// Channel names are unique and non-empty (`ChannelInfo::name`, docs/meg.md): an empty name
/// alone, and a repeated name alone, are each refused naming the line.
#[test]
fn meg_channel_table_refuses_an_empty_name_and_a_repeated_name() {
    let row = |name: &str| format!("{name}\tmeg_mag\t1e-16\t1\tT\t0\t0\t0\t0\t0\t0\t1\n");
    let empty = format!("{MEG_HEADER}{}", row(""));
    assert!(
        matches!(
            parse_channel_table(&empty),
            Err(ChannelTableError::Row { line: 2, .. })
        ),
        "{:?}",
        parse_channel_table(&empty)
    );
    let repeated = format!("{MEG_HEADER}{}{}{}", row("a"), row("b"), row("a"));
    assert!(
        matches!(
            parse_channel_table(&repeated),
            Err(ChannelTableError::Row { line: 4, .. })
        ),
        "{:?}",
        parse_channel_table(&repeated)
    );
}

// ---------------------------------------------------------------- PETLINK batches

/// The manifest count names of docs/formats.md §4's word-kind table, in table order.
#[test]
fn petlink_word_kind_count_names_match_the_format_table() {
    let names: Vec<_> = WordKind::ALL.iter().map(|k| k.count_name()).collect();
    assert_eq!(
        names,
        [
            "prompts",
            "delayeds",
            "time_tags",
            "singles_tags",
            "gantry_tags",
            "gating_tags",
            "control_words"
        ]
    );
}

/// `EventBatch::with_capacity(n)` has room for n events in every column; `is_empty` and
/// `clear` (empties every column, keeps capacity) of both batch types.
#[test]
fn petlink_batches_report_emptiness_and_clear_every_column() {
    let mut e = EventBatch::with_capacity(100);
    assert!(e.is_empty());
    for cap in [
        e.time_ms.capacity(),
        e.prompt.capacity(),
        e.bin_address.capacity(),
        e.sinogram.capacity(),
        e.view.capacity(),
        e.bin.capacity(),
        e.segment.capacity(),
        e.axial_pos.capacity(),
    ] {
        assert!(cap >= 100, "capacity {cap} < 100");
    }
    e.time_ms.push(1);
    e.prompt.push(true);
    e.bin_address.push(2);
    e.sinogram.push(3);
    e.view.push(4);
    e.bin.push(5);
    e.segment.push(-1);
    e.axial_pos.push(6);
    assert!(!e.is_empty());
    assert_eq!(e.len(), 1);
    e.clear();
    assert_eq!(e, EventBatch::default(), "clear empties every column");
    assert!(e.is_empty());
    assert!(e.time_ms.capacity() >= 100, "clear keeps the capacity");

    let mut s = SinglesRateBatch::default();
    assert!(s.is_empty());
    s.time_ms.push(1);
    s.block.push(2);
    s.raw_rate.push(3);
    s.scaled_rate_hz.push(24.0);
    assert!(!s.is_empty());
    s.clear();
    assert_eq!(s, SinglesRateBatch::default(), "clear empties every column");
    assert!(s.is_empty());
}

/// Words written from the kind table of docs/formats.md §4 (top bits), with a known number of
/// each kind and a 2-byte tail: `counts()` (before `finish`), `of_kind` and `named` report them.
#[test]
fn petlink_counts_by_kind_and_by_name_match_a_literal_word_stream() {
    let words: [u32; 12] = [
        0x4000_0001,                 // prompt (01xx), address 1
        0x8000_0001,                 // time tag (100x), 1 ms
        0x4000_0002,                 // prompt
        0x0000_0003,                 // delayed (00xx)
        0x7000_0000,                 // prompt (0111), address 0x3000_0000: beyond the layout
        0x0000_0004,                 // delayed
        0x8000_0002,                 // time tag, 2 ms
        0xA000_0000 | (3 << 19) | 5, // singles (101x), block 3, rate 5
        0xC000_0000,                 // gantry (110x)
        0xE000_0000,                 // gating (1110)
        0xF000_0000,                 // control (1111)
        0x8000_0003,                 // time tag, 3 ms
    ];
    let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    bytes.extend_from_slice(&[0xAB, 0xCD]);
    // 2 rings, max ring difference 1: 4 sinograms of 2 views x 4 bins = 32 addresses.
    let mut dec = PetlinkDecoder::new(SinogramLayout::new(4, 2, 2, 1), 1.0, 1, None);
    let (mut ev, mut si) = (EventBatch::default(), SinglesRateBatch::default());
    dec.decode(&bytes, &mut ev, &mut si);
    assert_eq!((dec.counts().words, dec.counts().bytes), (12, 50));
    let expected = [
        (WordKind::Prompt, 3),
        (WordKind::Delayed, 2),
        (WordKind::TimeTag, 3),
        (WordKind::Singles, 1),
        (WordKind::Gantry, 1),
        (WordKind::Gating, 1),
        (WordKind::Control, 1),
    ];
    for (kind, n) in expected {
        assert_eq!(dec.counts().of_kind(kind), n, "{kind:?}");
    }
    let c = dec.finish().clone();
    let named: std::collections::HashMap<_, _> = c.named().into_iter().collect();
    for (name, n) in [
        ("bytes", 50),
        ("words", 12),
        ("prompts", 3),
        ("delayeds", 2),
        ("time_tags", 3),
        ("singles_tags", 1),
        ("gantry_tags", 1),
        ("gating_tags", 1),
        ("control_words", 1),
        ("trailing_bytes", 2),
        ("events_before_first_tag", 1),
        ("address_out_of_range", 1),
        ("events_kept", 4),
        ("first_time_ms", 1),
        ("last_time_ms", 3),
        ("max_time_ms", 3),
        ("duration_ms", 2),
    ] {
        assert_eq!(named.get(name), Some(&n), "named()[{name}] in {named:?}");
    }
    assert_eq!(ev.len(), 4);
    assert_eq!((si.block.clone(), si.raw_rate.clone()), (vec![3], vec![5]));
}

// ---------------------------------------------------------------- PETsys frame IDs and scanner

/// `judge_frame_id` rule 2 applies only when `prev < next`; a frame ID equal to `prev` whose
/// next frame is *behind* prev (2^35 + 2^33 + 1 ahead mod 2^36, i.e. before it) is dropped,
/// even though one bit flip (2^34) would land "between" them around the wrap.
#[test]
fn petsys_repeated_frame_id_with_next_behind_prev_is_dropped() {
    let next = (1u64 << 35) + (1 << 33) + 1;
    assert_eq!(judge_frame_id(Some(0), 0, Some(next)), FrameIdVerdict::Drop);
}

/// docs/formats.md §2: frameSize is bits 36-50 of word 0, 15 bits, so the largest frame is
/// 2^15 - 1 = 32767 words.
#[test]
fn petsys_max_frame_words_is_the_largest_15_bit_frame_size() {
    assert_eq!(scandaq_decoders::petsys::MAX_FRAME_WORDS, 32767);
}

/// "After" means 1 to 2^35 - 1 frames ahead (mod 2^36): a candidate exactly 2^35 ahead of
/// prev is not after it, next (2^35 + 2^30 ahead of prev) is not after prev either, and
/// neither neighbour is within `MAX_UNCONFIRMED_STEP` (2^24) of the candidate: rule 5, drop.
#[test]
fn petsys_frame_id_exactly_half_the_counter_ahead_is_not_after() {
    assert_eq!(
        judge_frame_id(Some(0), 1 << 35, Some((1 << 35) + (1 << 30))),
        FrameIdVerdict::Drop
    );
}

fn scan_all(buf: &[u8]) -> (FrameScanner, Vec<FrameSpan>) {
    let mut s = FrameScanner::new();
    let mut spans = Vec::new();
    assert_eq!(s.scan(buf, true, &mut spans), buf.len());
    (s, spans)
}

/// Frame IDs are a 36-bit counter: 2^36 - 2, 2^36 - 1, 0 is one wrap (frame numbers continue
/// at 2^36); 5, 6, 7 is none.
#[test]
fn petsys_scanner_counts_frame_id_wraps() {
    let mut buf = Vec::new();
    for id in [5, 6, 7] {
        encode_frame(&mut buf, id, false, &[1]);
    }
    let (s, _) = scan_all(&buf);
    assert_eq!((s.frames, s.wraps()), (3, 0));

    let mut buf = Vec::new();
    for id in [(1u64 << 36) - 2, (1 << 36) - 1, 0] {
        encode_frame(&mut buf, id, false, &[1]);
    }
    let (s, spans) = scan_all(&buf);
    assert_eq!((s.frames, s.wraps()), (3, 1));
    assert_eq!(
        spans.iter().map(|f| f.frame).collect::<Vec<_>>(),
        vec![(1 << 36) - 2, (1 << 36) - 1, 1 << 36]
    );
}

/// A first frame (ID 100) whose successor disagrees (100 + 2^30) waits, unconsumed, until the
/// third header arrives (module docs: "such a frame waits (unconsumed) until the next header
/// has arrived"); that third frame (101) confirms 100, and the successor is dropped.
#[test]
fn petsys_first_frame_waits_for_the_third_header_before_being_judged() {
    let (a, b, c) = (100u64, 100 + (1u64 << 30), 101u64);
    let mut part = Vec::new();
    encode_frame(&mut part, a, false, &[0xA]);
    encode_frame(&mut part, b, false, &[0xB]);
    let mut s = FrameScanner::new();
    let mut spans = Vec::new();
    let consumed = s.scan(&part, false, &mut spans);
    assert_eq!(
        consumed, 0,
        "the first frame must wait for the third header"
    );
    assert!(spans.is_empty());
    let mut rest = part[consumed..].to_vec();
    encode_frame(&mut rest, c, false, &[0xC]);
    assert_eq!(s.scan(&rest, true, &mut spans), rest.len());
    let hit_at = |f: &FrameSpan| {
        u64::from_le_bytes(rest[f.hits_offset..f.hits_offset + 8].try_into().unwrap())
    };
    assert_eq!(
        spans
            .iter()
            .map(|f| (f.frame, hit_at(f)))
            .collect::<Vec<_>>(),
        vec![(100, 0xA), (101, 0xC)]
    );
    assert_eq!(s.losses.get("corrupt_frame_id"), 1);
    assert_eq!(s.losses.get("corrupt_frame_id_hits"), 1);
    assert_eq!(s.losses.get("repaired_frame_id"), 0);
}

/// Resynchronisation that ends at a frame dropped for its ID: the skipped bytes are exactly
/// the 16 garbage bytes inserted after the first frame (not counted from the stream start).
#[test]
fn petsys_resync_ending_at_a_dropped_frame_counts_exactly_the_garbage() {
    let mut buf = Vec::new();
    encode_frame(&mut buf, 10, false, &[1]);
    buf.extend_from_slice(&[0xff; 16]); // bits 51..63 of word 0 set: not a header
    // Plausible (2^20 ahead of 10) but not between 10 and 20, and no one-bit repair: dropped.
    encode_frame(&mut buf, 10 + (1 << 20), false, &[2]);
    encode_frame(&mut buf, 20, false, &[3]);
    let (s, spans) = scan_all(&buf);
    assert_eq!(s.losses.get("bad_frame_header"), 1);
    assert_eq!(s.losses.get("resync_skipped_bytes"), 16);
    assert_eq!(s.losses.get("corrupt_frame_id"), 1);
    assert_eq!(
        spans.iter().map(|f| f.frame).collect::<Vec<_>>(),
        vec![10, 20]
    );
    assert_eq!(s.frame_bytes + 16, buf.len() as u64);
}

/// `stream_offset` is the byte position of the next buffer's start: the sum of the bytes
/// consumed so far.
#[test]
fn petsys_stream_offset_is_the_sum_of_consumed_bytes() {
    let mut s = FrameScanner::new();
    let mut spans = Vec::new();
    let mut one = Vec::new();
    encode_frame(&mut one, 1, false, &[1, 2]); // 32 bytes
    assert_eq!(
        s.scan(&one, false, &mut spans),
        0,
        "frame 1 waits for its successor"
    );
    let mut two = one.clone();
    encode_frame(&mut two, 2, false, &[3]); // 24 bytes
    assert_eq!(s.scan(&two, true, &mut spans), 56);
    assert_eq!(s.stream_offset, 56);
    let mut three = Vec::new();
    encode_frame(&mut three, 3, false, &[]); // 16 bytes
    assert_eq!(s.scan(&three, true, &mut spans), 16);
    assert_eq!(s.stream_offset, 72);
}

// ---------------------------------------------------------------- ultrasound RF

fn rf_event(n_channels: u16, n_samples: u32) -> RfEventHeader {
    RfEventHeader {
        frame_no: 3,
        tx_index: 1,
        n_channels,
        n_samples,
        tx_ticks: 0,
        rx_offset_ns: 0,
        sample_rate_hz: 25_000_000,
    }
}

fn rf_chunk(ev: RfEventHeader, index: u16, count: u16, offset: u32, samples: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    encode_chunk(
        &mut p,
        &ChunkHeader {
            event: ev,
            chunk_index: index,
            chunk_count: count,
            chunk_offset: offset,
        },
        samples,
    );
    p
}

/// `decode_chunk_limited`: the accepted event sizes are `1 ..= max` bytes (its error text), so
/// an event of exactly `max` bytes (2 channels x 4 samples x 2 bytes = 16) is accepted and one
/// of 18 is not.
#[test]
fn rf_event_of_exactly_the_size_limit_is_accepted() {
    let p = rf_chunk(rf_event(2, 4), 0, 1, 0, &[5; 16]);
    let c = decode_chunk_limited(&p, 16).expect("an event of exactly the limit is accepted");
    assert_eq!(c.samples.len(), 16);
    let p = rf_chunk(rf_event(1, 9), 0, 1, 0, &[5; 18]);
    assert!(matches!(
        decode_chunk_limited(&p, 16),
        Err(RfError::ShapeOverflow {
            bytes: 18,
            max: 16,
            ..
        })
    ));
}

/// `plan_chunks` gives `None` when `max_payload` leaves no room for one i16 sample (41 bytes:
/// 40-byte header + 1), for an empty event (decoders refuse a zero shape), and for an event of
/// more than u32::MAX bytes (`chunk_offset` is a 4-byte field), however large the payload.
#[test]
fn rf_plan_chunks_refuses_no_room_an_empty_event_and_an_event_beyond_u32_offsets() {
    assert_eq!(plan_chunks(&rf_event(2, 4), 41), None);
    assert_eq!(plan_chunks(&rf_event(2, 4), 40), None);
    assert_eq!(plan_chunks(&rf_event(0, 4), 1000), None);
    assert_eq!(plan_chunks(&rf_event(2, 0), 1000), None);
    // 2 * 65535 * 65536 = 8 589 803 520 bytes > u32::MAX.
    assert_eq!(plan_chunks(&rf_event(u16::MAX, 65536), usize::MAX), None);
    // Control: 42 bytes leave room for one sample per chunk.
    assert_eq!(plan_chunks(&rf_event(2, 4), 42).map(|v| v.len()), Some(8));
}

/// docs/ultrasound.md: all chunk_count chunks arrived but overlapping (both at offset 0,
/// bytes 8..16 never written) is `us_inconsistent_events`, never emitted; while only one of
/// the two chunks has arrived, one event is open.
#[test]
fn rf_reassembler_counts_open_events_and_refuses_overlapping_chunks() {
    let ev = rf_event(2, 4); // 16 bytes
    let mut r = RfReassembler::new(4, 1 << 20);
    let mut out = Vec::new();
    assert_eq!(r.open_events(), 0);
    r.push(&rf_chunk(ev, 0, 2, 0, &[1; 8]), &mut |e| out.push(e));
    assert_eq!(r.open_events(), 1);
    r.push(&rf_chunk(ev, 1, 2, 0, &[2; 8]), &mut |e| out.push(e));
    assert_eq!(r.open_events(), 0);
    assert!(
        out.is_empty(),
        "an event that is not tiled exactly is never emitted"
    );
    assert_eq!(r.losses().get("us_inconsistent_events"), 1);
    assert_eq!(r.counts().events_complete, 0);
    // Control: the same event tiled correctly is emitted.
    let ev2 = RfEventHeader { frame_no: 4, ..ev };
    r.push(&rf_chunk(ev2, 1, 2, 8, &[2; 8]), &mut |e| out.push(e));
    r.push(&rf_chunk(ev2, 0, 2, 0, &[1; 8]), &mut |e| out.push(e));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].samples, [[1u8; 8], [2u8; 8]].concat());
    // Totals count the emitted event only: 2 chunks, 16 sample bytes.
    let c = r.counts();
    assert_eq!((c.events_complete, c.chunks, c.event_bytes), (1, 2, 16));
}

/// docs/ultrasound.md `us_inconsistent_events` ("e.g. a truncated chunk accepted short"): a
/// single-chunk event whose one chunk, at offset 0, holds 8 of its 16 bytes is never emitted.
#[test]
fn rf_single_chunk_event_shorter_than_its_shape_is_inconsistent() {
    let mut r = RfReassembler::new(4, 1 << 20);
    let mut out = Vec::new();
    r.push(&rf_chunk(rf_event(2, 4), 0, 1, 0, &[1; 8]), &mut |e| {
        out.push(e)
    });
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(r.losses().get("us_inconsistent_events"), 1);
}

/// `us_conflicting_chunks`: a chunk whose event header differs from the event's first chunk
/// (same key, other `tx_ticks`), and one whose chunk_count differs, are each refused; the
/// event is not completed by them.
#[test]
fn rf_chunk_with_a_different_header_or_chunk_count_conflicts() {
    let ev = rf_event(2, 4); // 16 bytes
    let other_ticks = RfEventHeader { tx_ticks: 99, ..ev };
    let mut r = RfReassembler::new(4, 1 << 20);
    let mut out = Vec::new();
    r.push(&rf_chunk(ev, 0, 2, 0, &[1; 8]), &mut |e| out.push(e));
    r.push(&rf_chunk(other_ticks, 1, 2, 8, &[2; 8]), &mut |e| {
        out.push(e)
    });
    assert_eq!(r.losses().get("us_conflicting_chunks"), 1);
    // Same header, chunk_count 4 instead of 2 (chunk 1 of 4: bytes 4..8).
    r.push(&rf_chunk(ev, 1, 4, 4, &[2; 4]), &mut |e| out.push(e));
    assert_eq!(r.losses().get("us_conflicting_chunks"), 2);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(r.open_events(), 1);
}

/// docs/ultrasound.md: the reassembler remembers the last `4 * max_open_events + 16` closed
/// events, so a repeated chunk of one of them is `us_duplicate_chunks` (never a second copy of
/// the event); a chunk of an event closed before those is taken as a new event.
#[test]
fn rf_closed_events_are_remembered_for_four_times_the_open_limit_plus_sixteen() {
    for max_open in [1usize, 3] {
        let remembered = 4 * max_open + 16;
        let event = |frame_no: u64| RfEventHeader {
            frame_no,
            ..rf_event(2, 4)
        };
        let chunk = |frame_no: u64| rf_chunk(event(frame_no), 0, 1, 0, &[7; 16]);
        let mut r = RfReassembler::new(max_open, 1 << 20);
        let mut emitted = Vec::new();
        for f in 0..remembered as u64 {
            r.push(&chunk(f), &mut |e| emitted.push(e.header.frame_no));
        }
        assert_eq!(emitted.len(), remembered, "max_open {max_open}");
        // Event 0 is the oldest still remembered: its repeat is a duplicate.
        r.push(&chunk(0), &mut |e| emitted.push(e.header.frame_no));
        assert_eq!(
            emitted.len(),
            remembered,
            "max_open {max_open}: repeat emitted"
        );
        assert_eq!(
            r.losses().get("us_duplicate_chunks"),
            1,
            "max_open {max_open}"
        );
        // One more event closes: event 0 is forgotten, so its chunk makes a new event.
        r.push(&chunk(remembered as u64), &mut |e| {
            emitted.push(e.header.frame_no)
        });
        r.push(&chunk(0), &mut |e| emitted.push(e.header.frame_no));
        assert_eq!(emitted.len(), remembered + 2, "max_open {max_open}");
        assert_eq!(emitted.last(), Some(&0), "max_open {max_open}");
        assert_eq!(
            r.losses().get("us_duplicate_chunks"),
            1,
            "max_open {max_open}"
        );
    }
}
