//! Reading an input file in blocks: [`read_up_to`] fills a buffer unless the file ends first
//! (a plain `read` may return less at any time); [`read_chunk`] reads the next block into a
//! new buffer without zeroing it first.

use std::io::Read;

/// Reads until `buf` is full or end of file; returns the bytes read (retries interrupted reads).
pub fn read_up_to(file: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The next `len` bytes of `file` (fewer only at its end; empty at the end) in a new buffer,
/// read into the buffer's spare capacity: a zeroed `vec![0; len]` per block was a memset of
/// every byte replayed before the read overwrote it (std's `read_to_end` reads files into
/// uninitialised capacity, safely). Retries interrupted reads.
pub fn read_chunk(file: &mut impl Read, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    /// A reader that hands out at most 3 bytes per call.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn fills_the_buffer_across_short_reads_and_stops_at_the_end() {
        let data: Vec<u8> = (0..10).collect();
        let mut r = Trickle(&data);
        let mut buf = [0u8; 8];
        assert_eq!(super::read_up_to(&mut r, &mut buf).unwrap(), 8);
        assert_eq!(buf, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(super::read_up_to(&mut r, &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], &[8, 9]);
    }

    #[test]
    fn chunks_are_full_across_short_reads_and_add_up_to_the_input() {
        let data: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let mut r = Trickle(&data);
        let mut chunks = Vec::new();
        loop {
            let chunk = super::read_chunk(&mut r, 64).unwrap();
            if chunk.is_empty() {
                break;
            }
            chunks.push(chunk);
        }
        // Every chunk but the last is whole; together they are the input, in order.
        assert_eq!(chunks.len(), 16);
        assert!(chunks[..15].iter().all(|c| c.len() == 64));
        assert_eq!(chunks[15].len(), 1000 - 15 * 64);
        assert_eq!(chunks.concat(), data);
    }
}
