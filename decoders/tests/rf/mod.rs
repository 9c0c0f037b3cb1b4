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
