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
