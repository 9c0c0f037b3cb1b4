//! The yardl binary encoding (yardl's "binary format", version 1), the primitives PETSIRD's
//! records are made of, appended to a byte buffer. Written from the format's description
//! (docs/petsird.md, "The yardl binary encoding"), checked against PETSIRD's reference reader.
//!
//! - file header: the magic bytes `yardl`, the format version as a little-endian `i32` (1),
//!   then the protocol's schema as a string (readers compare it byte for byte);
//! - unsigned integers (`uint8..uint64`, `size`) as LEB128 varints, signed ones (and enums,
//!   whose base type is `int32`) zigzag-encoded first; `float32` as 4 little-endian bytes;
//! - a string: its UTF-8 length as a varint, then the bytes;
//! - a vector: its length as a varint, then the items; a fixed-length vector or fixed array:
//!   the items only; an array of known rank: each dimension as a varint, then the items;
//! - an optional: one byte 0 (absent) or 1 followed by the value; a union: one byte, the case
//!   index (+1 when the union may be null);
//! - a record: its fields in order, nothing between them;
//! - a stream: batches, each the number of items as a varint followed by the items, ended by a
//!   batch of 0 items.

/// The magic bytes every yardl binary file starts with.
pub const MAGIC: &[u8; 5] = b"yardl";
/// The binary format version written after the magic bytes.
pub const FORMAT_VERSION: i32 = 1;

/// Appends the file header: magic bytes, format version, `schema`.
pub fn file_header(buf: &mut Vec<u8>, schema: &str) {
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    string(buf, schema);
}

/// Appends `v` as an unsigned LEB128 varint (7 bits a byte, low bits first, the high bit set
/// on every byte but the last).
#[inline]
pub fn uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Zigzag mapping of a signed integer (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...).
#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends a signed integer (and an enum value): zigzag, then varint.
#[inline]
pub fn svarint(buf: &mut Vec<u8>, v: i64) {
    uvarint(buf, zigzag(v));
}

/// Appends a `float32`, little-endian.
#[inline]
pub fn f32(buf: &mut Vec<u8>, v: f32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Appends a string: byte length, then the UTF-8 bytes.
pub fn string(buf: &mut Vec<u8>, s: &str) {
    uvarint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// Appends the length prefix of a vector of `n` items (the items follow).
#[inline]
pub fn len(buf: &mut Vec<u8>, n: usize) {
    uvarint(buf, n as u64);
}

/// Appends a vector of `float32`.
pub fn f32_vector(buf: &mut Vec<u8>, v: &[f32]) {
    len(buf, v.len());
    for &x in v {
        f32(buf, x);
    }
}

/// Appends a one-dimensional `float32` array (`dimensions: 1`): its length, then the values.
pub fn f32_array_1d(buf: &mut Vec<u8>, v: &[f32]) {
    f32_vector(buf, v);
}

/// Appends the tag of an absent optional (or of the null case of a union).
pub fn none(buf: &mut Vec<u8>) {
    buf.push(0);
}

/// Appends the case tag of a union without a null case; the case's value follows.
pub fn union_case(buf: &mut Vec<u8>, index: u8) {
    buf.push(index);
}

/// Appends the count of one stream batch; its `n` (> 0) items follow.
pub fn stream_batch(buf: &mut Vec<u8>, n: usize) {
    uvarint(buf, n as u64);
}

/// Appends the end of a stream (a batch of 0 items).
pub fn stream_end(buf: &mut Vec<u8>) {
    buf.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = Vec::new();
        f(&mut b);
        b
    }

    #[test]
    fn varints_match_the_leb128_reference_values() {
        // LEB128's textbook values: 300 = 0b10_0101100 -> 0xAC 0x02.
        assert_eq!(enc(|b| uvarint(b, 0)), [0]);
        assert_eq!(enc(|b| uvarint(b, 127)), [0x7f]);
        assert_eq!(enc(|b| uvarint(b, 128)), [0x80, 0x01]);
        assert_eq!(enc(|b| uvarint(b, 300)), [0xac, 0x02]);
        assert_eq!(enc(|b| uvarint(b, 624_485)), [0xe5, 0x8e, 0x26]);
        assert_eq!(enc(|b| uvarint(b, u64::MAX)).len(), 10);
        assert_eq!(*enc(|b| uvarint(b, u64::MAX)).last().unwrap(), 1);
    }

    #[test]
    fn zigzag_interleaves_signs() {
        let z: Vec<u64> = [0, -1, 1, -2, 2, i64::MAX, i64::MIN]
            .into_iter()
            .map(zigzag)
            .collect();
        assert_eq!(z, [0, 1, 2, 3, 4, u64::MAX - 1, u64::MAX]);
        assert_eq!(enc(|b| svarint(b, -64)), [0x7f]);
        assert_eq!(enc(|b| svarint(b, 64)), [0x80, 0x01]);
    }

    #[test]
    fn header_strings_and_floats() {
        let h = enc(|b| file_header(b, "ab"));
        assert_eq!(h, [b'y', b'a', b'r', b'd', b'l', 1, 0, 0, 0, 2, b'a', b'b']);
        assert_eq!(enc(|b| f32(b, 1.0)), [0, 0, 0x80, 0x3f]);
        assert_eq!(enc(|b| f32_vector(b, &[1.0])), [1, 0, 0, 0x80, 0x3f]);
        let long = "x".repeat(200);
        assert_eq!(enc(|b| string(b, &long))[..2], [0xc8, 0x01]);
    }
}
