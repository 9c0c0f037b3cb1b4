//! The clock-sync control record against the test vector printed in docs/formats.md §7
//! (bytes written out by hand from the field table, not produced by the encoder).

use scandaq_decoders::control::{
    CLOCK_SYNC_LEN, ClockSync, ControlRecord, decode_control, encode_clock_sync,
};

/// docs/formats.md §7: counter 0xFFFFFFF0, fraction 2^31 (half a tick), reference -5 ns.
const DOC_VECTOR: &str = "01 00 00 00 00 00 00 80 F0 FF FF FF 00 00 00 00 FB FF FF FF FF FF FF FF";

fn doc_bytes() -> Vec<u8> {
    let mut bytes: Vec<u8> = DOC_VECTOR
        .split(' ')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    // "followed by 8 zero bytes"
    bytes.extend([0u8; 8]);
    bytes
}

#[test]
fn clock_sync_record_bytes_match_the_documented_test_vector() {
    // The vector in this test is the one the doc prints.
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/formats.md"),
    )
    .unwrap();
    let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        doc.contains(&format!("`{DOC_VECTOR}` followed by 8 zero bytes")),
        "docs/formats.md no longer prints the vector this test checks"
    );
    let expected = doc_bytes();
    assert_eq!(expected.len(), CLOCK_SYNC_LEN);
    let sync = ClockSync {
        device_counter: 0xFFFF_FFF0,
        device_fraction: 1 << 31,
        reference_ns: -5,
    };
    let encoded = encode_clock_sync(&sync);
    assert_eq!(
        encoded.as_slice(),
        expected.as_slice(),
        "encoder output differs from docs/formats.md §7"
    );
    // The documented bytes decode to the documented fields.
    let Ok(ControlRecord::ClockSync(decoded)) = decode_control(&expected) else {
        panic!("the documented vector does not decode as a clock-sync record");
    };
    assert_eq!(decoded, sync);
    assert_eq!(decoded.device_ticks(), 4_294_967_280.5);
}
