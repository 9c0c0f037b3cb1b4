//! PETsys TOFPET2 frames and hit words (docs/formats.md §2): field extraction, the +27 mod 1024
//! fine-code fix-up, frame encoding, and [`FrameScanner`], which walks a byte stream of frames
//! (file or packet payloads) frame by frame, checks each frame ID against its neighbours
//! ([`judge_frame_id`]), unwraps frame IDs, and counts every frame and byte it cannot use under
//! a named reason.

use scandaq_core::LossReason;
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
/// A frame ID counts as "after" another when it is 1 to `2^35 - 1` frames ahead (mod 2^36).
const HALF_RANGE: u64 = 1 << 35;
/// Largest forward step (frames, ~86 s at 200 MHz) believed on the word of one neighbour
/// alone: a jump confirmed only by the previous frame or only by the next one.
pub const MAX_UNCONFIRMED_STEP: u64 = 1 << 24;

/// Frames from `from` forward to `to`, modulo the 36-bit counter (0..2^36).
#[inline(always)]
fn ahead(from: u64, to: u64) -> u64 {
    to.wrapping_sub(from) & FRAME_ID_MASK
}

/// `to` comes after `from` (1 to 2^35 - 1 frames ahead).
#[inline(always)]
fn is_after(from: u64, to: u64) -> bool {
    let d = ahead(from, to);
    d != 0 && d < HALF_RANGE
}

/// `to` comes after `from` by at most [`MAX_UNCONFIRMED_STEP`].
#[inline(always)]
fn is_shortly_after(from: u64, to: u64) -> bool {
    let d = ahead(from, to);
    d != 0 && d <= MAX_UNCONFIRMED_STEP
}

/// What the scanner does with a frame ID, given its neighbours (see [`judge_frame_id`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameIdVerdict {
    /// The ID fits: use it.
    Accept,
    /// The ID does not fit but its neighbours say what it was: use this ID instead
    /// (counted `repaired_frame_id`).
    Repair(u64),
    /// The ID does not fit and cannot be repaired: drop the frame (counted `corrupt_frame_id`,
    /// its hits `corrupt_frame_id_hits`).
    Drop,
}

/// The one frame ID strictly between `prev` and `next` that `cand` could have been before one
/// corrupted bit, or the only slot between them; `None` when that is not unique.
fn repair_between(prev: u64, cand: u64, next: u64) -> Option<u64> {
    if ahead(prev, next) == 2 {
        return Some((prev + 1) & FRAME_ID_MASK);
    }
    let mut found = None;
    for bit in 0..36 {
        let v = cand ^ (1 << bit);
        if is_after(prev, v) && is_after(v, next) {
            if found.is_some() {
                return None;
            }
            found = Some(v);
        }
    }
    found
}

/// Decides whether the frame ID `cand` fits between the last accepted frame ID `prev` and the
/// ID of the frame that follows it, `next` (`None` at either end of the input or when the next
/// header is unusable). Frame IDs of one stream increase strictly (frames with no hits may be
/// missing, so steps larger than 1 are normal); a corrupted ID shows up as a frame that does
/// not come between its neighbours. The rules, in order:
///
/// 1. `prev < cand < next`: accept (an ID that is wrong but still between its neighbours
///    cannot be told from a real gap; its hits keep a time off by less than the gap).
/// 2. `prev < next` with room between them: `cand` is the outlier. Repair it when exactly one
///    value fits (the only slot between the neighbours, or the only single-bit change of
///    `cand` that lands between them), else drop it.
/// 3. `cand < next` within [`MAX_UNCONFIRMED_STEP`]: the stream really jumped (the next frame
///    confirms it): accept.
/// 4. `prev < cand` within [`MAX_UNCONFIRMED_STEP`]: the next frame is the odd one: accept.
/// 5. Otherwise drop.
///
/// A frame ID equal to `prev` is repaired as in 2 or dropped.
///
/// With only one neighbour the ID is accepted when it is within [`MAX_UNCONFIRMED_STEP`] of
/// it; a first frame whose next frame disagrees is repaired to `next - 1` when one bit
/// explains the difference.
pub fn judge_frame_id(prev: Option<u64>, cand: u64, next: Option<u64>) -> FrameIdVerdict {
    use FrameIdVerdict::{Accept, Drop, Repair};
    match (prev, next) {
        // A repeated frame ID is never believed as such (a stream's IDs increase strictly).
        (Some(p), Some(n)) if cand == p => {
            if is_after(p, n) && ahead(p, n) >= 2 {
                repair_between(p, cand, n).map_or(Drop, Repair)
            } else {
                Drop
            }
        }
        (Some(p), Some(n)) => {
            if is_after(p, cand) && is_after(cand, n) {
                Accept
            } else if is_after(p, n) && ahead(p, n) >= 2 {
                repair_between(p, cand, n).map_or(Drop, Repair)
            } else if is_shortly_after(cand, n) || is_shortly_after(p, cand) {
                Accept
            } else {
                Drop
            }
        }
        (Some(p), None) => {
            if is_shortly_after(p, cand) {
                Accept
            } else {
                Drop
            }
        }
        (None, Some(n)) => {
            let before_next = n.wrapping_sub(1) & FRAME_ID_MASK;
            if is_shortly_after(cand, n) {
                Accept
            } else if (cand ^ before_next).is_power_of_two() {
                Repair(before_next)
            } else {
                Drop
            }
        }
        (None, None) => Accept,
    }
}

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
/// `truncated_bytes` (a partial frame at end of input), `corrupt_frame_id` and
/// `corrupt_frame_id_hits` (frames dropped because their ID does not fit their neighbours, and
/// their hits), `repaired_frame_id` (frames whose ID did not fit but was restored from the
/// neighbours; their hits are kept). Counts of good frames and hits are in
/// [`FrameScanner::frames`] and [`FrameScanner::hits`].
///
/// A frame whose ID is not the previous one + 1 is judged by [`judge_frame_id`] against the
/// next frame's header, so such a frame waits (unconsumed) until the next header has arrived
/// or the input ends.
#[derive(Debug, Default)]
pub struct FrameScanner {
    unwrapper: FrameUnwrapper,
    last_frame_id: Option<u64>,
    pending_lost_run: Option<u64>,
    /// A resynchronisation was still under way at the end of the last buffer (its bad header
    /// is already counted).
    resyncing: bool,
    /// Named counts of what could not be used.
    pub losses: LossCounts,
    /// Data frames accepted.
    pub frames: u64,
    /// Hit words in accepted frames.
    pub hits: u64,
    /// Bytes of whole frames (accepted, or dropped for their frame ID) and synthetic lost-frame
    /// headers. Together with `resync_skipped_bytes` and `truncated_bytes` this accounts for
    /// every byte scanned.
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

/// A header that passed the format checks.
#[derive(Clone, Copy)]
struct Header {
    frame_id: u64,
    n_hits: u64,
    lossy: bool,
    /// A synthetic lost-frame header (no hits).
    lost_run: bool,
}

/// Result of checking the header at one position.
enum HeaderCheck {
    Frame(Header),
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

    #[inline(always)]
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
            return HeaderCheck::Frame(Header {
                frame_id,
                n_hits: 0,
                lossy: false,
                lost_run: true,
            });
        }
        if size < 2 || size != n_hits + 2 {
            return HeaderCheck::Bad;
        }
        HeaderCheck::Frame(Header {
            frame_id,
            n_hits,
            lossy: w1 & LOST_DATA_MASK != 0,
            lost_run: false,
        })
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
            self.losses.add(LossReason::FrontendLostFrames, n);
        }
    }

    /// The verdict on the id of a frame that does not follow the last one, from the headers
    /// after it (ending at `end`); `None` while those headers are not here yet.
    fn judge_out_of_sequence(
        &self,
        buf: &[u8],
        end: usize,
        frame_id: u64,
        eof: bool,
    ) -> Option<FrameIdVerdict> {
        let next = match Self::check(buf, end) {
            HeaderCheck::Frame(n) => Some(n),
            HeaderCheck::Bad => None,
            HeaderCheck::NeedMore if eof => None,
            HeaderCheck::NeedMore => return None,
        };
        let verdict = judge_frame_id(self.last_frame_id, frame_id, next.map(|n| n.frame_id));
        if let (None, Some(n), false) =
            (self.last_frame_id, next, verdict == FrameIdVerdict::Accept)
        {
            // A first frame and its successor disagree: the frame after them decides which
            // one is the outlier.
            let end2 = end + 16 + 8 * n.n_hits as usize;
            match Self::check(buf, end2) {
                HeaderCheck::Frame(n2)
                    if is_shortly_after(frame_id, n2.frame_id)
                        && !is_shortly_after(n.frame_id, n2.frame_id) =>
                {
                    return Some(FrameIdVerdict::Accept);
                }
                HeaderCheck::NeedMore if !eof => return None,
                _ => {}
            }
        }
        Some(verdict)
    }

    /// Scans whole frames at the start of `buf`, appending a [`FrameSpan`] per data frame to
    /// `spans`. Returns the number of bytes consumed; the caller keeps the rest and calls
    /// again with more bytes appended. With `eof`, trailing bytes that do not make a whole
    /// frame are counted as truncated and consumed.
    pub fn scan(&mut self, buf: &[u8], eof: bool, spans: &mut Vec<FrameSpan>) -> usize {
        let mut off = 0usize;
        let mut resyncing_from: Option<usize> = self.resyncing.then_some(0);
        loop {
            let h = match Self::check(buf, off) {
                HeaderCheck::NeedMore => break,
                HeaderCheck::Bad => {
                    if resyncing_from.is_none() {
                        self.losses.add(LossReason::BadFrameHeader, 1);
                        resyncing_from = Some(off);
                    }
                    off += 8;
                    continue;
                }
                HeaderCheck::Frame(h) => h,
            };
            if resyncing_from.is_some() && !self.plausible_next(h.frame_id) {
                off += 8;
                continue;
            }
            let end = off + 16 + 8 * h.n_hits as usize;
            if end > buf.len() {
                break;
            }
            let mut frame_id = h.frame_id;
            let in_sequence =
                matches!(self.last_frame_id, Some(last) if ahead(last, frame_id) == 1);
            if !in_sequence {
                let Some(verdict) = self.judge_out_of_sequence(buf, end, frame_id, eof) else {
                    break; // decide when the next headers are here
                };
                match verdict {
                    FrameIdVerdict::Accept => {}
                    FrameIdVerdict::Repair(id) => {
                        self.losses.add(LossReason::RepairedFrameId, 1);
                        frame_id = id;
                    }
                    FrameIdVerdict::Drop => {
                        if let Some(from) = resyncing_from.take() {
                            self.losses
                                .add(LossReason::ResyncSkippedBytes, (off - from) as u64);
                        }
                        self.losses.add(LossReason::CorruptFrameId, 1);
                        self.losses.add(LossReason::CorruptFrameIdHits, h.n_hits);
                        self.frame_bytes += (end - off) as u64;
                        off = end;
                        continue;
                    }
                }
            }
            if let Some(from) = resyncing_from.take() {
                self.losses
                    .add(LossReason::ResyncSkippedBytes, (off - from) as u64);
            }
            self.close_lost_run(Some(frame_id));
            self.last_frame_id = Some(frame_id);
            self.frame_bytes += (end - off) as u64;
            if h.lost_run {
                self.pending_lost_run = Some(frame_id);
                off = end;
                continue;
            }
            if h.lossy {
                self.losses.add(LossReason::FrontendLostFrames, 1);
            }
            let frame = self.unwrapper.unwrap(frame_id);
            self.frame_range = Some(match self.frame_range {
                None => (frame, frame),
                Some((a, b)) => (a.min(frame), b.max(frame)),
            });
            self.frames += 1;
            self.hits += h.n_hits;
            spans.push(FrameSpan {
                hits_offset: off + 16,
                n_hits: h.n_hits as u32,
                frame,
                lossy: h.lossy,
            });
            off = end;
        }
        if let Some(from) = resyncing_from {
            // Everything from the bad header up to here is skipped; keep scanning later from
            // `off` (a possible partial header is kept for the next call), still resyncing.
            self.losses
                .add(LossReason::ResyncSkippedBytes, (off - from) as u64);
        }
        self.resyncing = resyncing_from.is_some() && !eof;
        if eof && off < buf.len() {
            self.losses.add(LossReason::TruncatedFrame, 1);
            self.losses
                .add(LossReason::TruncatedBytes, (buf.len() - off) as u64);
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
        assert_eq!(s.losses.get(LossReason::FrontendLostFrames), 4);
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
        assert_eq!(s.losses.get(LossReason::BadFrameHeader), 1);
        assert_eq!(s.losses.get(LossReason::ResyncSkippedBytes), 24);
        assert_eq!(s.losses.get(LossReason::TruncatedFrame), 1);
        assert_eq!(s.losses.get(LossReason::TruncatedBytes), 24 - 3);
    }

    #[test]
    fn scanner_keeps_partial_frame_for_next_call() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 5, false, &[1, 2, 3]);
        encode_frame(&mut buf, 6, false, &[4]);
        let first = 16 + 3 * 8;
        let mut s = FrameScanner::new();
        let mut spans = Vec::new();
        assert_eq!(s.scan(&buf[..20], false, &mut spans), 0);
        assert!(spans.is_empty() && s.losses.is_empty());
        // A first frame waits for its successor's header to be judged.
        assert_eq!(s.scan(&buf[..first + 8], false, &mut spans), 0);
        assert_eq!(s.scan(&buf[..first + 16], false, &mut spans), first);
        assert_eq!(spans.len(), 1);
        // The next one is in sequence: taken as soon as it is whole.
        assert_eq!(s.scan(&buf[first..], false, &mut spans), buf.len() - first);
        assert_eq!(spans.len(), 2);
    }

    /// Frames with the given IDs, frame k holding k+1 hits.
    fn frames_with_ids(ids: &[u64]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            let hits: Vec<u64> = (0..=k as u64).collect();
            encode_frame(&mut buf, id, false, &hits);
        }
        buf
    }

    fn scan_all(buf: &[u8]) -> (FrameScanner, Vec<FrameSpan>) {
        let mut s = FrameScanner::new();
        let mut spans = Vec::new();
        assert_eq!(s.scan(buf, true, &mut spans), buf.len());
        (s, spans)
    }

    #[test]
    fn judge_frame_id_rules() {
        use FrameIdVerdict::{Accept, Drop, Repair};
        // In sequence, and a real gap between agreeing neighbours.
        assert_eq!(judge_frame_id(Some(10), 11, Some(12)), Accept);
        assert_eq!(judge_frame_id(Some(10), 500, Some(501)), Accept);
        // One flipped high bit: the only slot between the neighbours.
        assert_eq!(judge_frame_id(Some(10), 11 | 1 << 30, Some(12)), Repair(11));
        // Wider gap: the single-bit change that lands between the neighbours.
        assert_eq!(judge_frame_id(Some(10), 13 | 1 << 33, Some(20)), Repair(13));
        // Backwards (a set bit cleared).
        assert_eq!(
            judge_frame_id(Some(1 << 20), 5, Some((1 << 20) + 9)),
            Repair((1 << 20) + 5)
        );
        assert_eq!(judge_frame_id(Some(3 << 20), 5, Some((3 << 20) + 9)), Drop);
        assert_eq!(
            judge_frame_id(Some((1 << 20) + 3), 4, Some((1 << 20) + 5)),
            Repair((1 << 20) + 4)
        );
        // A jump that the next frame confirms is believed, forward or back.
        assert_eq!(
            judge_frame_id(Some(10), 1 << 30, Some((1 << 30) + 2)),
            Accept
        );
        assert_eq!(judge_frame_id(Some(1 << 30), 7, Some(8)), Accept);
        // The next frame is the odd one: keep this one.
        assert_eq!(judge_frame_id(Some(10), 12, Some(1 << 34 | 3)), Accept);
        assert_eq!(judge_frame_id(Some(10), 12, Some(11)), Accept);
        // Nobody agrees.
        assert_eq!(judge_frame_id(Some(10), 1 << 34, Some(5)), Drop);
        // One neighbour only.
        assert_eq!(judge_frame_id(Some(10), 15, None), Accept);
        assert_eq!(judge_frame_id(Some(10), 11 | 1 << 30, None), Drop);
        assert_eq!(judge_frame_id(None, 11 | 1 << 30, Some(12)), Repair(11));
        assert_eq!(judge_frame_id(None, 3 << 30, Some(12)), Drop);
        assert_eq!(judge_frame_id(None, 9, Some(12)), Accept);
        assert_eq!(judge_frame_id(None, 9, None), Accept);
        // Across the 36-bit wrap.
        let top = FRAME_ID_MASK;
        assert_eq!(judge_frame_id(Some(top - 1), top, Some(0)), Accept);
        assert_eq!(judge_frame_id(Some(top), 1 << 20, Some(1)), Repair(0));
    }

    #[test]
    fn one_flipped_frame_id_bit_never_drags_the_time_base() {
        let ids: Vec<u64> = (100..110).collect();
        let total: u64 = (1..=ids.len() as u64).sum();
        for bit in 0..36 {
            for victim in 0..ids.len() {
                let mut bad = ids.clone();
                bad[victim] ^= 1 << bit;
                let (s, spans) = scan_all(&frames_with_ids(&bad));
                let what = format!("bit {bit} frame {victim}: {}", s.losses.summary());
                let got: Vec<u64> = spans.iter().map(|f| f.frame).collect();
                let dropped = s.losses.get(LossReason::CorruptFrameId);
                let repaired = s.losses.get(LossReason::RepairedFrameId);
                assert_eq!(
                    s.hits + s.losses.get(LossReason::CorruptFrameIdHits),
                    total,
                    "{what}"
                );
                assert!(got.windows(2).all(|w| w[0] < w[1]), "{what}");
                assert!(dropped + repaired <= 2, "{what}");
                if victim < 2 || victim + 1 == ids.len() {
                    // The first frames are judged with one neighbour, the last with none
                    // after it: at most one frame is lost, the rest keep their IDs.
                    assert!(dropped <= 1, "{what}");
                    assert!(got.len() + 1 >= ids.len(), "{what}");
                    continue;
                }
                // Inside, consecutive neighbours leave one slot: the frame is repaired.
                assert_eq!((dropped, repaired), (0, 1), "{what}");
                assert_eq!(got, ids, "{what}");
            }
        }
    }

    #[test]
    fn a_confirmed_jump_is_believed_and_a_suspect_frame_waits_for_its_successor() {
        let ids = [5u64, 6, 1000, 1001, 1002];
        let buf = frames_with_ids(&ids);
        let (s, spans) = scan_all(&buf);
        assert!(s.losses.is_empty(), "{}", s.losses.summary());
        assert_eq!(spans.iter().map(|f| f.frame).collect::<Vec<_>>(), ids);
        // Split right after the frame that jumps: it is held back until the next header.
        let cut = 16 * 3 + 8 * (1 + 2 + 3);
        let mut s = FrameScanner::new();
        let mut spans = Vec::new();
        let used = s.scan(&buf[..cut], false, &mut spans);
        assert_eq!(spans.len(), 2);
        assert_eq!(used, 16 * 2 + 8 * 3);
        // At the end of the input it is judged with the previous frame alone.
        let mut s = FrameScanner::new();
        let mut spans = Vec::new();
        assert_eq!(s.scan(&buf[..cut], true, &mut spans), cut);
        assert_eq!(spans.len(), 3);
    }
}
