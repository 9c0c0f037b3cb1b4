//! PETsys TOFPET2 frames and hit words (docs/formats.md §2): field extraction, the +27 mod 1024
//! fine-code fix-up, frame encoding, and [`FrameScanner`], which walks a byte stream of frames
//! (file or packet payloads) frame by frame, unwraps frame IDs, and counts every frame and byte
//! it cannot use under a named reason.

use scandaq_core::{FrameUnwrapper, LossCounts};

/// Offset added (mod 1024) to the stored fine codes.
pub const FINE_CODE_OFFSET: u16 = 27;
/// Bits of the frameID field.
const FRAME_ID_MASK: u64 = (1 << 36) - 1;
/// Word-1 lost-data flag bits (15 and 16).
pub const LOST_DATA_MASK: u64 = 0x18000;
/// Word 1 of a synthetic lost-frame header.
pub const SYNTHETIC_LOST_WORD1: u64 = 1 << 16;
/// Largest frame the scanner accepts, in words (frameSize is 15 bits).
pub const MAX_FRAME_WORDS: u64 = (1 << 15) - 1;

/// The fields of one hit word, fine codes already fixed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HitFields {
    /// PETsys absolute channel id (22 bits).
    pub channel: u32,
    /// TAC (0..4).
    pub tac: u8,
    /// Timing coarse counter (10 bits).
    pub tcoarse: u16,
    /// Energy coarse counter (10 bits).
    pub ecoarse: u16,
    /// Decoded timing fine code, `(raw + 27) % 1024`.
    pub tfine: u16,
    /// Decoded energy fine code.
    pub efine: u16,
}

/// Decoded fine code of a stored 10-bit field.
#[inline(always)]
pub fn decode_fine(raw: u64) -> u16 {
    ((raw as u16 & 0x3ff) + FINE_CODE_OFFSET) & 0x3ff
}

/// Stored 10-bit field of a fine code (the inverse of [`decode_fine`]).
#[inline(always)]
pub fn encode_fine(fine: u16) -> u64 {
    u64::from((fine + 1024 - FINE_CODE_OFFSET) & 0x3ff)
}

impl HitFields {
    /// Splits a hit word.
    #[inline(always)]
    pub fn decode(w: u64) -> Self {
        Self {
            efine: decode_fine(w),
            tfine: decode_fine(w >> 10),
            ecoarse: ((w >> 20) & 0x3ff) as u16,
            tcoarse: ((w >> 30) & 0x3ff) as u16,
            tac: ((w >> 40) & 0x3) as u8,
            channel: (w >> 42) as u32,
        }
    }

    /// Packs a hit word (fields are masked to their widths).
    pub fn encode(&self) -> u64 {
        encode_fine(self.efine & 0x3ff)
            | encode_fine(self.tfine & 0x3ff) << 10
            | u64::from(self.ecoarse & 0x3ff) << 20
            | u64::from(self.tcoarse & 0x3ff) << 30
            | u64::from(self.tac & 3) << 40
            | u64::from(self.channel & 0x3f_ffff) << 42
    }
}

/// Appends one frame (header words + hit words) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, frame_id: u64, lost_flags: bool, hits: &[u64]) {
    let n = hits.len() as u64;
    let word0 = (frame_id & FRAME_ID_MASK) | (n + 2) << 36;
    let word1 = n | if lost_flags { 1 << 15 } else { 0 };
    out.extend_from_slice(&word0.to_le_bytes());
    out.extend_from_slice(&word1.to_le_bytes());
    for h in hits {
        out.extend_from_slice(&h.to_le_bytes());
    }
}

/// Appends a synthetic lost-frame header standing for a run of lost frames from `first_lost`.
pub fn encode_lost_run(out: &mut Vec<u8>, first_lost: u64) {
    out.extend_from_slice(&((2u64 << 36) | (first_lost & FRAME_ID_MASK)).to_le_bytes());
    out.extend_from_slice(&SYNTHETIC_LOST_WORD1.to_le_bytes());
}

/// A frame the scanner accepted: where its hit words are and which frame it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpan {
    /// Byte offset of the first hit word within the buffer given to the scanner.
    pub hits_offset: usize,
    /// Number of hit words.
    pub n_hits: u32,
    /// Unwrapped frame number.
    pub frame: u64,
    /// The front-end's lost-data flag was set on this frame.
    pub lossy: bool,
}

/// Walks frames in a byte stream that may arrive in pieces.
///
/// Counters (in [`FrameScanner::losses`]): `frontend_lost_frames` (frames flagged by the
/// front-end plus frames covered by synthetic lost-frame headers), `bad_frame_header` (headers
/// that fail the consistency checks), `resync_skipped_bytes`, `truncated_frame` and
/// `truncated_bytes` (a partial frame at end of input). Counts of good frames and hits are
/// in [`FrameScanner::frames`] and [`FrameScanner::hits`].
#[derive(Debug, Default)]
pub struct FrameScanner {
    unwrapper: FrameUnwrapper,
    last_frame_id: Option<u64>,
    pending_lost_run: Option<u64>,
    /// Named counts of what could not be used.
    pub losses: LossCounts,
    /// Data frames accepted.
    pub frames: u64,
    /// Hit words in accepted frames.
    pub hits: u64,
    /// Bytes of accepted frames and synthetic lost-frame headers. Together with
    /// `resync_skipped_bytes` and `truncated_bytes` this accounts for every byte scanned.
    pub frame_bytes: u64,
    /// Byte position of the stream start of the current buffer (for error messages).
    pub stream_offset: u64,
    /// First and last unwrapped frame numbers seen.
    pub frame_range: Option<(u64, u64)>,
}

#[inline(always)]
fn word_at(buf: &[u8], off: usize) -> Option<u64> {
    let b: [u8; 8] = buf.get(off..off + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// Result of checking the header at one position.
enum HeaderCheck {
    Data {
        frame_id: u64,
        n_hits: u64,
        lossy: bool,
    },
    LostRun {
        first: u64,
    },
    Bad,
    NeedMore,
}

impl FrameScanner {
    /// New scanner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of frame-ID wraps seen.
    pub fn wraps(&self) -> u64 {
        self.unwrapper.wraps()
    }

    fn check(buf: &[u8], off: usize) -> HeaderCheck {
        let (Some(w0), Some(w1)) = (word_at(buf, off), word_at(buf, off + 8)) else {
            return HeaderCheck::NeedMore;
        };
        let frame_id = w0 & FRAME_ID_MASK;
        let size = (w0 >> 36) & 0x7fff;
        let n_hits = w1 & 0x7fff;
        if w0 >> 51 != 0 || w1 >> 17 != 0 {
            return HeaderCheck::Bad;
        }
        if size == 2 && w1 == SYNTHETIC_LOST_WORD1 {
            return HeaderCheck::LostRun { first: frame_id };
        }
        if size < 2 || size != n_hits + 2 {
            return HeaderCheck::Bad;
        }
        HeaderCheck::Data {
            frame_id,
            n_hits,
            lossy: w1 & LOST_DATA_MASK != 0,
        }
    }

    /// Whether a header that passes the format checks also fits the frame sequence (used
    /// while resynchronising, so random words are not taken for frames).
    fn plausible_next(&self, frame_id: u64) -> bool {
        match self.last_frame_id {
            None => true,
            Some(last) => {
                let ahead = frame_id.wrapping_sub(last) & FRAME_ID_MASK;
                ahead <= 1 << 24
            }
        }
    }

    fn close_lost_run(&mut self, next_frame_id: Option<u64>) {
        if let Some(first) = self.pending_lost_run.take() {
            let n = match next_frame_id {
                Some(next) => (next.wrapping_sub(first) & FRAME_ID_MASK).clamp(1, 1 << 24),
                None => 1,
            };
            self.losses.add("frontend_lost_frames", n);
        }
    }

    /// Scans whole frames at the start of `buf`, appending a [`FrameSpan`] per data frame to
    /// `spans`. Returns the number of bytes consumed; the caller keeps the rest and calls
    /// again with more bytes appended. With `eof`, trailing bytes that do not make a whole
    /// frame are counted as truncated and consumed.
    pub fn scan(&mut self, buf: &[u8], eof: bool, spans: &mut Vec<FrameSpan>) -> usize {
        let mut off = 0usize;
        let mut resyncing_from: Option<usize> = None;
        loop {
            match Self::check(buf, off) {
                HeaderCheck::NeedMore => break,
                HeaderCheck::Bad => {
                    if resyncing_from.is_none() {
                        self.losses.add("bad_frame_header", 1);
                        resyncing_from = Some(off);
                    }
                    off += 8;
                }
                HeaderCheck::LostRun { first } => {
                    if resyncing_from.is_some() && !self.plausible_next(first) {
                        off += 8;
                        continue;
                    }
                    if let Some(from) = resyncing_from.take() {
                        self.losses.add("resync_skipped_bytes", (off - from) as u64);
                    }
                    self.close_lost_run(Some(first));
                    self.pending_lost_run = Some(first);
                    self.last_frame_id = Some(first);
                    self.frame_bytes += 16;
                    off += 16;
                }
                HeaderCheck::Data {
                    frame_id,
                    n_hits,
                    lossy,
                } => {
                    if resyncing_from.is_some() && !self.plausible_next(frame_id) {
                        off += 8;
                        continue;
                    }
                    let end = off + 16 + 8 * n_hits as usize;
                    if end > buf.len() {
                        break;
                    }
                    if let Some(from) = resyncing_from.take() {
                        self.losses.add("resync_skipped_bytes", (off - from) as u64);
                    }
                    self.close_lost_run(Some(frame_id));
                    if lossy {
                        self.losses.add("frontend_lost_frames", 1);
                    }
                    let frame = self.unwrapper.unwrap(frame_id);
                    self.last_frame_id = Some(frame_id);
                    self.frame_range = Some(match self.frame_range {
                        None => (frame, frame),
                        Some((a, b)) => (a.min(frame), b.max(frame)),
                    });
                    self.frames += 1;
                    self.hits += n_hits;
                    self.frame_bytes += (end - off) as u64;
                    spans.push(FrameSpan {
                        hits_offset: off + 16,
                        n_hits: n_hits as u32,
                        frame,
                        lossy,
                    });
                    off = end;
                }
            }
        }
        if let Some(from) = resyncing_from {
            // Everything from the bad header up to here is skipped; keep scanning later from
            // `off` (a possible partial header is kept for the next call).
            self.losses.add("resync_skipped_bytes", (off - from) as u64);
        }
        if eof && off < buf.len() {
            self.losses.add("truncated_frame", 1);
            self.losses.add("truncated_bytes", (buf.len() - off) as u64);
            off = buf.len();
        }
        if eof {
            self.close_lost_run(None);
        }
        self.stream_offset += off as u64;
        off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fine_offset_is_plus_27_mod_1024() {
        assert_eq!(decode_fine(0), 27);
        assert_eq!(decode_fine(1000), 3);
        for f in 0..1024u16 {
            assert_eq!(decode_fine(encode_fine(f)), f);
        }
    }

    #[test]
    fn hit_word_layout() {
        let h = HitFields {
            channel: 0x2_0041,
            tac: 3,
            tcoarse: 1023,
            ecoarse: 7,
            tfine: 27,
            efine: 28,
        };
        let w = h.encode();
        assert_eq!(w & 0x3ff, 1); // efine 28 stored as 1
        assert_eq!((w >> 10) & 0x3ff, 0); // tfine 27 stored as 0
        assert_eq!((w >> 30) & 0x3ff, 1023);
        assert_eq!(w >> 42, 0x2_0041);
        assert_eq!(HitFields::decode(w), h);
    }

    #[test]
    fn scanner_counts_lost_runs_and_lossy_frames() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 10, false, &[1, 2]);
        encode_lost_run(&mut buf, 11);
        encode_frame(&mut buf, 14, true, &[3]);
        let mut s = FrameScanner::new();
        let mut spans = Vec::new();
        assert_eq!(s.scan(&buf, true, &mut spans), buf.len());
        assert_eq!(spans.len(), 2);
        assert_eq!(
            (spans[0].frame, spans[0].n_hits, spans[1].frame),
            (10, 2, 14)
        );
        // frames 11, 12, 13 lost (run), frame 14 flagged lossy
        assert_eq!(s.losses.get("frontend_lost_frames"), 4);
        assert_eq!(s.hits, 3);
    }

    #[test]
    fn scanner_resyncs_after_garbage_and_counts_truncation() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 100, false, &[5]);
        buf.extend_from_slice(&[0xff; 24]);
        encode_frame(&mut buf, 101, false, &[6, 7]);
        encode_frame(&mut buf, 102, false, &[8]);
        buf.truncate(buf.len() - 3);
        let mut s = FrameScanner::new();
        let mut spans = Vec::new();
        let used = s.scan(&buf, true, &mut spans);
        assert_eq!(used, buf.len());
        assert_eq!(
            spans.iter().map(|f| f.frame).collect::<Vec<_>>(),
            vec![100, 101]
        );
        assert_eq!(s.losses.get("bad_frame_header"), 1);
        assert_eq!(s.losses.get("resync_skipped_bytes"), 24);
        assert_eq!(s.losses.get("truncated_frame"), 1);
        assert_eq!(s.losses.get("truncated_bytes"), 24 - 3);
    }

    #[test]
    fn scanner_keeps_partial_frame_for_next_call() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 5, false, &[1, 2, 3]);
        let mut s = FrameScanner::new();
        let mut spans = Vec::new();
        assert_eq!(s.scan(&buf[..20], false, &mut spans), 0);
        assert!(spans.is_empty() && s.losses.is_empty());
        assert_eq!(s.scan(&buf, false, &mut spans), buf.len());
        assert_eq!(spans.len(), 1);
    }
}
