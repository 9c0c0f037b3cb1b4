//! Ultrasound RF event chunks (payload format 4): arbitrary bytes never panic (decoder and
//! reassembler), and events split into chunks, shuffled, duplicated and interleaved with other
//! events reassemble bit-exact; an event missing a chunk is never emitted.

use proptest::prelude::*;
use scandaq_decoders::rf::{
    CHUNK_HEADER_LEN, RfEvent, RfEventHeader, RfReassembler, decode_chunk, encode_chunk,
    plan_chunks,
};

fn event_header() -> impl Strategy<Value = RfEventHeader> {
    (
        any::<u64>(),
        any::<u16>(),
        1u16..9,
        1u32..300,
        any::<u64>(),
        any::<i32>(),
        any::<u32>(),
    )
        .prop_map(
            |(
                frame_no,
                tx_index,
                n_channels,
                n_samples,
                tx_ticks,
                rx_offset_ns,
                sample_rate_hz,
            )| {
                RfEventHeader {
                    frame_no,
                    tx_index,
                    n_channels,
                    n_samples,
                    tx_ticks,
                    rx_offset_ns,
                    sample_rate_hz,
                }
            },
        )
}

fn samples_for(h: &RfEventHeader, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..h.event_bytes())
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn chunk_payloads(h: &RfEventHeader, data: &[u8], max_payload: usize) -> Vec<Vec<u8>> {
    plan_chunks(h, max_payload)
        .expect("plannable event")
        .into_iter()
        .map(|(ch, r)| {
            let mut p = Vec::new();
            encode_chunk(&mut p, &ch, &data[r]);
            p
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..30)) {
        let mut r = RfReassembler::new(3, 1 << 16);
        let mut emitted = 0u64;
        for p in &payloads {
            match decode_chunk(p) {
                Ok(c) => {
                    prop_assert!(c.header.chunk_index < c.header.chunk_count);
                    prop_assert_eq!(c.samples.len(), p.len() - CHUNK_HEADER_LEN);
                }
                Err(e) => prop_assert!(e.reason().name().starts_with("us_")),
            }
            r.push(p, &mut |e: RfEvent| {
                emitted += 1;
                assert_eq!(e.samples.len() as u64, e.header.event_bytes());
            });
        }
        r.finish();
        prop_assert_eq!(emitted, r.counts().events_complete);
        prop_assert_eq!(r.open_events(), 0);
    }

    #[test]
    fn split_shuffle_duplicate_round_trip(
        headers in prop::collection::vec(event_header(), 1..6),
        max_payload in (CHUNK_HEADER_LEN + 2)..600,
        shuffle_seed in any::<u64>(),
        dup in any::<prop::sample::Index>(),
        drop_one in any::<Option<prop::sample::Index>>(),
    ) {
        // Distinct keys: one event per (frame_no, tx_index).
        let mut headers = headers;
        for (i, h) in headers.iter_mut().enumerate() {
            h.frame_no = h.frame_no.wrapping_mul(8).wrapping_add(i as u64);
        }
        let datas: Vec<Vec<u8>> = headers.iter().enumerate().map(|(i, h)| samples_for(h, shuffle_seed ^ i as u64)).collect();
        let mut all: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, (h, d)) in headers.iter().zip(&datas).enumerate() {
            for p in chunk_payloads(h, d, max_payload) {
                all.push((i, p));
            }
        }
        // Fisher–Yates with a small xorshift: any interleaving of all events' chunks.
        let mut x = shuffle_seed | 1;
        for i in (1..all.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            let j = (x % (i as u64 + 1)) as usize;
            all.swap(i, j);
        }
        let d = dup.index(all.len());
        let copy = all[d].clone();
        all.insert(d + 1, copy);
        let dropped = drop_one.map(|ix| {
            let k = ix.index(all.len());
            all.remove(k).0
        });
        let mut r = RfReassembler::new(headers.len() + 1, 1 << 20);
        let mut out: Vec<RfEvent> = Vec::new();
        for (_, p) in &all {
            r.push(p, &mut |e| out.push(e));
        }
        r.finish();
        for e in &out {
            let i = headers.iter().position(|h| *h == e.header).expect("known event");
            prop_assert_eq!(&e.samples, &datas[i]);
        }
        let total = headers.len() as u64;
        let complete = r.counts().events_complete;
        prop_assert_eq!(complete, out.len() as u64);
        match dropped {
            None => prop_assert_eq!(complete, total),
            Some(i) => {
                // The event that lost its only copy of a chunk is never emitted; the duplicate
                // may have been the one dropped, so at most one event is missing.
                // A single-chunk event that lost its only chunk was never seen at all.
                let emitted_i = out.iter().any(|e| e.header == headers[i]);
                let seen_i = all.iter().any(|(k, _)| *k == i);
                prop_assert_eq!(complete + u64::from(!emitted_i), total);
                prop_assert_eq!(
                    r.losses().get("us_incomplete_events"),
                    u64::from(!emitted_i && seen_i)
                );
            }
        }
    }
}

/// The event-header test vector of docs/ultrasound.md, read from the document, and a
/// handwritten header with every field non-trivial (bytes placed by the offset table, not by
/// `encode_chunk`), decode field by field.
#[test]
fn chunk_headers_match_the_doc_test_vector_and_literal_layouts() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/ultrasound.md"
    ))
    .unwrap();
    let at = doc
        .find("Test vector: frame 1, tx 0")
        .expect("test vector paragraph in docs/ultrasound.md");
    let para = &doc[at..at + 500];
    let hex = para
        .split('`')
        .nth(1)
        .expect("the header bytes in backticks");
    let mut bytes: Vec<u8> = hex
        .split(|c: char| c.is_whitespace() || c == '|')
        .filter(|t| !t.is_empty())
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    assert_eq!(
        bytes.len(),
        CHUNK_HEADER_LEN,
        "docs/ultrasound.md bytes {hex:?}"
    );
    bytes.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    let c = decode_chunk(&bytes).unwrap();
    assert_eq!(
        c.header.event,
        RfEventHeader {
            frame_no: 1,
            tx_index: 0,
            n_channels: 4,
            n_samples: 8,
            tx_ticks: 123_456_789,
            rx_offset_ns: -250,
            sample_rate_hz: 25_000_000,
        }
    );
    assert_eq!(
        (
            c.header.chunk_index,
            c.header.chunk_count,
            c.header.chunk_offset
        ),
        (0, 1, 0)
    );
    assert_eq!(c.samples, &bytes[40..]);

    // frame 0x0102030405060708, tx 0xBEEF, 3 channels x 70000 samples, tx_ticks
    // 0xF0E1D2C3B4A59687, rx_offset -2^31 + 5 ns, 62.5 MS/s, chunk 2 of 3 at byte 840.
    let literal: [u8; 40] = [
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0xef, 0xbe, 0x03, 0x00, 0x70, 0x11, 0x01,
        0x00, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0, 0x05, 0x00, 0x00, 0x80, 0xa0, 0xac,
        0xb9, 0x03, 0x02, 0x00, 0x03, 0x00, 0x48, 0x03, 0x00, 0x00,
    ];
    let mut bytes = literal.to_vec();
    bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
    let c = decode_chunk(&bytes).unwrap();
    let e = c.header.event;
    assert_eq!(
        (
            e.frame_no,
            e.tx_index,
            e.n_channels,
            e.n_samples,
            e.tx_ticks,
            e.rx_offset_ns,
            e.sample_rate_hz
        ),
        (
            0x0102_0304_0506_0708,
            0xbeef,
            3,
            70_000,
            0xf0e1_d2c3_b4a5_9687,
            i32::MIN + 5,
            62_500_000
        )
    );
    assert_eq!(
        (
            c.header.chunk_index,
            c.header.chunk_count,
            c.header.chunk_offset
        ),
        (2, 3, 840)
    );
    assert_eq!(c.samples, &[1, 2, 3, 4, 5, 6]);
    assert_eq!(e.event_bytes(), 420_000);
    let mut enc = Vec::new();
    encode_chunk(&mut enc, &c.header, c.samples);
    assert_eq!(enc, bytes, "encoder vs literal");
}
