//! Reading an input file in blocks: [`read_up_to`] fills a buffer unless the file ends first
//! (a plain `read` may return less at any time).

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
}
