//! A minimal PNG writer for the report's raster figures (B-mode image, spectrogram-like
//! maps): 8-bit greyscale or RGB, no interlace, filter type 0 on every row, the image data
//! zlib-compressed by miniz_oxide. Returned base64-encoded, ready for a `data:` URI.

use base64::Engine;

/// Pixel layout of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pixels {
    /// One byte per pixel.
    Grey,
    /// Three bytes per pixel (R, G, B).
    Rgb,
}

impl Pixels {
    fn bytes(self) -> usize {
        match self {
            Pixels::Grey => 1,
            Pixels::Rgb => 3,
        }
    }

    fn colour_type(self) -> u8 {
        match self {
            Pixels::Grey => 0,
            Pixels::Rgb => 2,
        }
    }
}

/// The PNG file of a `width` x `height` image whose rows (top first) are in `data`;
/// None when `data` does not hold exactly that many pixels or the image is empty.
pub(super) fn encode(width: usize, height: usize, pixels: Pixels, data: &[u8]) -> Option<Vec<u8>> {
    let row = width * pixels.bytes();
    if width == 0 || height == 0 || data.len() != row * height {
        return None;
    }
    let (w, h) = (u32::try_from(width).ok()?, u32::try_from(height).ok()?);
    let mut raw = Vec::with_capacity((row + 1) * height);
    for r in data.chunks_exact(row) {
        raw.push(0); // filter type 0: the row as it is
        raw.extend_from_slice(r);
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, pixels.colour_type(), 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr)?;
    chunk(
        &mut out,
        b"IDAT",
        &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6),
    )?;
    chunk(&mut out, b"IEND", &[])?;
    Some(out)
}

/// [`encode`], base64-encoded.
pub(super) fn encode_base64(
    width: usize,
    height: usize,
    pixels: Pixels,
    data: &[u8],
) -> Option<String> {
    encode(width, height, pixels, data)
        .map(|png| base64::engine::general_purpose::STANDARD.encode(png))
}

/// Appends one chunk; None when `data` is too long for a PNG chunk (4 GiB).
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) -> Option<()> {
    let len = u32::try_from(data.len()).ok()?;
    out.extend_from_slice(&len.to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
    Some(())
}

/// CRC-32 (IEEE 802.3, reflected 0xEDB88320), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn png_layout_and_round_trip_of_the_pixels() {
        let data: Vec<u8> = (0..6u8).collect();
        let png = encode(3, 2, Pixels::Grey, &data).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[16..20], &3u32.to_be_bytes());
        assert_eq!(&png[20..24], &2u32.to_be_bytes());
        let idat_len = u32::from_be_bytes(png[33..37].try_into().unwrap()) as usize;
        assert_eq!(&png[37..41], b"IDAT");
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&png[41..41 + idat_len]).unwrap();
        assert_eq!(raw, vec![0, 0, 1, 2, 0, 3, 4, 5]);
        assert!(png.ends_with(&[0xAE, 0x42, 0x60, 0x82]), "IEND's CRC");
        assert!(encode(3, 2, Pixels::Rgb, &data).is_none());
    }
}
