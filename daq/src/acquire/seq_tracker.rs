//! Per-source sequence accounting of transport packets (docs/formats.md §1): gaps (lost
//! packets), duplicates, out-of-order arrivals, packets missed before the first one received,
//! implausible sequence numbers, sequence jumps and board restarts — exactly, in O(1) per
//! packet whatever the numbers.
//!
//! # Window
//! Each session of a source keeps a bitmap of the last [`REORDER_WINDOW`] sequence numbers
//! (8 KiB): a bit is set when that number was received (or is not expected). Numbers that leave
//! the window unreceived become final gaps; a jump of any size costs at most one pass over the
//! bitmap (1024 words), never a walk over the numbers skipped, which are counted arithmetically.
//!
//! # Suspects
//! A packet whose number is *implausible* — more than [`REORDER_WINDOW`] ahead of the highest
//! number seen, more than twice the window behind it, or behind the window and below
//! [`REORDER_WINDOW`] (a restart without the start flag) — is not believed. It is held (one per
//! source) and the next packet of the source decides:
//! - the next packet fits the old window (in it, or at most the window ahead): the suspect is
//!   dropped and counted as `implausible_sequence`;
//! - it is within the window of the suspect: the source really jumped. Forward: one
//!   `sequence_jumps`, and the numbers skipped count as missing. Backward: the source restarted
//!   its counter, a new session opens (`board_restarts`);
//! - neither: the suspect is dropped (`implausible_sequence`) and the new packet is held.
//!
//! The first packet of a source is held the same way until a second one within the window
//! confirms it (a stray header arriving first cannot set the window), unless it carries the
//! start-of-stream flag. A suspect still held at the end of the input is dropped and counted,
//! except a source's lone first packet, which is accepted (nothing is counted as missed before
//! it: one packet says nothing about its sender's numbering).
//!
//! # Sessions
//! A packet with the start-of-stream flag that is not a repeat of the current session's own
//! start packet opens a new session at once. A session that starts without the flag at number
//! N expects the numbers from 0: the N before the first are counted as
//! `missed_before_first_packet` (any of them that still arrives within the window is taken).
//!
//! For every source: `received + missing + missed_before_first = expected` (the numbers each
//! session spans), and every packet observed is exactly one of received, duplicate, too late,
//! implausible, or the suspect still held.

/// Packets further back than this behind the newest are no longer waited for: a gap that old is
/// final, and a packet that old is counted as `too_late` (dropped, not reordered). Also the
/// plausibility bound: a number more than this ahead of the newest is a suspect.
pub const REORDER_WINDOW: u64 = 1 << 16;
const W: u64 = REORDER_WINDOW;
const WORDS: usize = (REORDER_WINDOW / 64) as usize;

/// What to do with an arriving packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The next packet, or one after a gap: use it.
    InOrder,
    /// A packet that fills an earlier gap: use it (counted as out of order).
    Late,
    /// Seen before: drop it (counted as duplicate).
    Duplicate,
    /// Older than the reorder window: drop it (counted as too_late).
    TooLate,
    /// Implausible (or a source's first packet): hold it until the next packet decides.
    Held,
}

/// What became of the packet held as suspect before this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuspectOutcome {
    /// Believed: use the held packet, before this one. With `restart`, the held packet opens a
    /// new session (hand the old session's data on first).
    Confirmed {
        /// The held packet starts a new session.
        restart: bool,
    },
    /// Not believed: drop the held packet (counted as implausible_sequence).
    Rejected,
}

/// The outcome of observing one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// What became of the suspect held before this packet, if one was.
    pub suspect: Option<SuspectOutcome>,
    /// This packet opens a new session (start-of-stream flag): hand the old session on first.
    pub restart: bool,
    /// What to do with this packet.
    pub verdict: SeqVerdict,
}

impl Observation {
    fn just(verdict: SeqVerdict) -> Self {
        Self {
            suspect: None,
            restart: false,
            verdict,
        }
    }
}

/// One session's window.
#[derive(Clone, Debug)]
struct Window {
    /// First number received in the session.
    first: u64,
    /// Lowest number the session expects: 0, or `first` when it began with the start flag.
    floor: u64,
    highest: u64,
    /// Bit `seq % W`: received, or not expected.
    bits: Box<[u64]>,
    /// Unreceived numbers in the window at or above `first`.
    gaps_open: u64,
    /// Unreceived numbers in `[floor, first)`.
    before_first: u64,
    /// Fingerprint of the packet that started the session with the start flag.
    start_fingerprint: Option<u32>,
}

impl Window {
    fn new(first: u64, floor: u64, start_fingerprint: Option<u32>) -> Self {
        let mut w = Self {
            first,
            floor,
            highest: first,
            bits: vec![u64::MAX; WORDS].into_boxed_slice(),
            gaps_open: 0,
            before_first: first - floor,
            start_fingerprint,
        };
        // Numbers in the window below `first` and from `floor` may still arrive.
        let lo = first.saturating_sub(W - 1).max(floor);
        if lo < first {
            w.set_range(lo, first - 1, false);
        }
        w
    }

    fn lo(&self) -> u64 {
        self.highest.saturating_sub(W - 1)
    }

    fn bit(&self, seq: u64) -> bool {
        let i = (seq % W) as usize;
        self.bits[i / 64] >> (i % 64) & 1 == 1
    }

    fn set(&mut self, seq: u64) {
        let i = (seq % W) as usize;
        self.bits[i / 64] |= 1 << (i % 64);
    }

    /// Calls `f(word, mask)` for the bits of the numbers `a..=b` (at most W of them).
    fn for_words(a: u64, b: u64, mut f: impl FnMut(usize, u64)) {
        debug_assert!(a <= b && b - a < W);
        let mut i = a % W;
        let mut left = b - a + 1;
        while left > 0 {
            let bit = i % 64;
            let n = (64 - bit).min(left).min(W - i);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            f((i / 64) as usize, mask);
            left -= n;
            i = (i + n) % W;
        }
    }

    fn set_range(&mut self, a: u64, b: u64, value: bool) {
        let bits = &mut self.bits;
        Self::for_words(a, b, |w, mask| {
            if value {
                bits[w] |= mask;
            } else {
                bits[w] &= !mask;
            }
        });
    }

    fn zeros(&self, a: u64, b: u64) -> u64 {
        let mut n = 0;
        Self::for_words(a, b, |w, mask| {
            n += u64::from((!self.bits[w] & mask).count_ones())
        });
        n
    }

    /// Moves the newest number to `seq` (> highest); returns the numbers that became final
    /// gaps.
    fn advance(&mut self, seq: u64) -> u64 {
        let h = self.highest;
        let d = seq - h;
        let finals;
        if d >= W {
            // Every open gap leaves the window; of the numbers skipped, those that do not fit
            // in the new window are final at once, the others are open.
            finals = self.gaps_open + (d - W);
            self.gaps_open = W - 1;
            self.bits.fill(0);
        } else {
            // Numbers h-W+1 ..= seq-W leave the window.
            let mut z = 0;
            if seq >= W {
                let leave_hi = seq - W;
                let leave_lo = (h + 1).saturating_sub(W).max(self.first);
                if leave_lo <= leave_hi {
                    z = self.zeros(leave_lo, leave_hi);
                }
            }
            self.gaps_open = self.gaps_open - z + (d - 1);
            finals = z;
            if d > 1 {
                self.set_range(h + 1, seq - 1, false);
            }
        }
        self.set(seq);
        self.highest = seq;
        finals
    }

    /// `seq` would be taken (in the window or at most the window ahead), not held or too late.
    fn fits(&self, seq: u64) -> bool {
        seq >= self.lo() && seq - self.highest.min(seq) <= W
    }

    /// `seq` would be held as a suspect.
    fn implausible(&self, seq: u64) -> bool {
        if seq > self.highest {
            return seq - self.highest > W;
        }
        let lo = self.lo();
        seq < lo && (lo - seq > W || seq < W)
    }
}

/// Sequence state of one source, over all its sessions.
#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    window: Option<Window>,
    suspect: Option<u64>,
    /// Packets accepted.
    pub received: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Late packets that filled a gap.
    pub out_of_order: u64,
    /// Packets older than the window.
    pub too_late: u64,
    /// Missing packets given up on (older than the window, or skipped by a jump).
    pub lost_final: u64,
    /// Implausible sequence numbers not believed (packets dropped).
    pub implausible: u64,
    /// Confirmed forward jumps beyond the window (the numbers skipped are in `missing`).
    pub jumps: u64,
    /// New sessions after the first (restarts).
    pub restarts: u64,
    missed_closed: u64,
    expected_closed: u64,
}

impl SeqTracker {
    /// Accounts for a packet with sequence number `seq`; `start` is its start-of-stream flag,
    /// `fingerprint` a checksum of it (tells a repeat of a start packet from a new start).
    pub fn observe(&mut self, seq: u64, start: bool, fingerprint: u32) -> Observation {
        if start {
            if let Some(w) = &self.window
                && w.first == seq
                && w.start_fingerprint == Some(fingerprint)
            {
                self.duplicates += 1;
                return Observation::just(SeqVerdict::Duplicate);
            }
            let mut obs = Observation::just(SeqVerdict::InOrder);
            match (self.suspect.take(), &self.window) {
                (Some(s), None) if s.abs_diff(seq) <= W && s != seq => {
                    // A first packet that overtook the start packet: both are taken.
                    self.window = Some(Window::new(seq, seq, Some(fingerprint)));
                    self.received += 1;
                    let late = self.classify(s);
                    debug_assert!(matches!(late, SeqVerdict::InOrder | SeqVerdict::TooLate));
                    obs.suspect = Some(match late {
                        SeqVerdict::InOrder | SeqVerdict::Late => {
                            SuspectOutcome::Confirmed { restart: false }
                        }
                        _ => SuspectOutcome::Rejected,
                    });
                    return obs;
                }
                (Some(_), _) => {
                    self.implausible += 1;
                    obs.suspect = Some(SuspectOutcome::Rejected);
                }
                (None, _) => {}
            }
            if self.window.is_some() {
                self.close_session();
                self.restarts += 1;
                obs.restart = true;
            }
            self.window = Some(Window::new(seq, seq, Some(fingerprint)));
            self.received += 1;
            return obs;
        }
        let mut outcome = None;
        if let Some(s) = self.suspect {
            if seq == s {
                self.duplicates += 1;
                return Observation::just(SeqVerdict::Duplicate);
            }
            let near_suspect = seq.abs_diff(s) <= W;
            match &self.window {
                None if near_suspect => {
                    self.suspect = None;
                    self.window = Some(Window::new(s, 0, None));
                    self.received += 1;
                    outcome = Some(SuspectOutcome::Confirmed { restart: false });
                }
                Some(w) if w.fits(seq) || (!near_suspect && !w.implausible(seq)) => {
                    self.suspect = None;
                    self.implausible += 1;
                    outcome = Some(SuspectOutcome::Rejected);
                }
                Some(w) if near_suspect => {
                    self.suspect = None;
                    let restart = s < w.highest;
                    if restart {
                        self.close_session();
                        self.restarts += 1;
                        self.window = Some(Window::new(s, 0, None));
                    } else {
                        self.jumps += 1;
                        self.advance(s);
                    }
                    self.received += 1;
                    outcome = Some(SuspectOutcome::Confirmed { restart });
                }
                _ => {
                    self.implausible += 1;
                    self.suspect = Some(seq);
                    return Observation {
                        suspect: Some(SuspectOutcome::Rejected),
                        restart: false,
                        verdict: SeqVerdict::Held,
                    };
                }
            }
        }
        let verdict = self.classify(seq);
        Observation {
            suspect: outcome,
            restart: false,
            verdict,
        }
    }

    fn advance(&mut self, seq: u64) {
        if let Some(w) = self.window.as_mut() {
            self.lost_final = self.lost_final.saturating_add(w.advance(seq));
        }
    }

    fn classify(&mut self, seq: u64) -> SeqVerdict {
        let Some(w) = self.window.as_mut() else {
            self.suspect = Some(seq);
            return SeqVerdict::Held;
        };
        if w.implausible(seq) {
            self.suspect = Some(seq);
            return SeqVerdict::Held;
        }
        if seq > w.highest {
            self.lost_final = self.lost_final.saturating_add(w.advance(seq));
            self.received += 1;
            return SeqVerdict::InOrder;
        }
        if seq < w.lo() || seq < w.floor {
            self.too_late += 1;
            return SeqVerdict::TooLate;
        }
        if w.bit(seq) {
            self.duplicates += 1;
            return SeqVerdict::Duplicate;
        }
        w.set(seq);
        if seq >= w.first {
            w.gaps_open -= 1;
        } else {
            w.before_first -= 1;
        }
        self.received += 1;
        self.out_of_order += 1;
        SeqVerdict::Late
    }

    fn close_session(&mut self) {
        if let Some(w) = self.window.take() {
            self.lost_final = self.lost_final.saturating_add(w.gaps_open);
            self.missed_closed = self.missed_closed.saturating_add(w.before_first);
            self.expected_closed = self
                .expected_closed
                .saturating_add((w.highest - w.floor).saturating_add(1));
        }
    }

    /// Ends the input: decides a suspect still held. A source's lone first packet is accepted
    /// (`Confirmed`); a suspect against a window is dropped (`Rejected`, counted).
    pub fn finish(&mut self) -> Option<SuspectOutcome> {
        let s = self.suspect.take()?;
        if self.window.is_none() {
            // One packet says nothing about the numbers before it.
            self.window = Some(Window::new(s, s, None));
            self.received += 1;
            Some(SuspectOutcome::Confirmed { restart: false })
        } else {
            self.implausible += 1;
            Some(SuspectOutcome::Rejected)
        }
    }

    /// The sequence numbers the sessions span (from 0, or from the start packet's number).
    pub fn expected(&self) -> u64 {
        self.expected_closed.saturating_add(
            self.window
                .as_ref()
                .map_or(0, |w| (w.highest - w.floor).saturating_add(1)),
        )
    }

    /// Packets never received (gaps, final and still open; numbers skipped by a jump).
    pub fn missing(&self) -> u64 {
        self.lost_final
            .saturating_add(self.window.as_ref().map_or(0, |w| w.gaps_open))
    }

    /// Packets a session's sender numbered before the first one received (a sender started
    /// before the run, or a first packet lost), when the session began without the start flag.
    pub fn missed_before_first(&self) -> u64 {
        self.missed_closed
            .saturating_add(self.window.as_ref().map_or(0, |w| w.before_first))
    }

    /// The highest number of the current session.
    pub fn highest(&self) -> Option<u64> {
        self.window.as_ref().map(|w| w.highest)
    }

    /// A packet is held as suspect.
    pub fn holds_suspect(&self) -> bool {
        self.suspect.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut SeqTracker, seqs: &[u64]) -> Vec<SeqVerdict> {
        seqs.iter()
            .map(|&s| t.observe(s, false, 0).verdict)
            .collect()
    }

    fn balanced(t: &SeqTracker) {
        assert_eq!(
            t.received + t.missing() + t.missed_before_first(),
            t.expected(),
            "{t:?}"
        );
    }

    #[test]
    fn gaps_duplicates_and_reorders_are_exact() {
        let mut t = SeqTracker::default();
        let v = run(&mut t, &[0, 1, 3, 2, 2, 5, 6, 6, 9]);
        assert_eq!(v[0], SeqVerdict::Held);
        assert_eq!(v[3], SeqVerdict::Late);
        assert_eq!(v[4], SeqVerdict::Duplicate);
        assert_eq!(t.expected(), 10);
        assert_eq!(t.received, 7);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.out_of_order, 1);
        assert_eq!(t.missing(), 3); // 4, 7, 8
        balanced(&t);
    }

    #[test]
    fn gaps_leave_the_window_as_final() {
        let mut t = SeqTracker::default();
        let b = 3 * W;
        t.observe(b, true, 0);
        run(&mut t, &[b + 1, b + 3]);
        for s in b + 4..b + W + 10 {
            t.observe(s, false, 0);
        }
        assert_eq!((t.missing(), t.lost_final), (1, 1));
        assert_eq!(run(&mut t, &[b + 2]), [SeqVerdict::TooLate]);
        // Behind the window and below it, near 0: a restart candidate, held.
        assert_eq!(run(&mut t, &[2]), [SeqVerdict::Held]);
        // A jump just inside the window: its gap is open, then closes as the window moves.
        let h = t.highest().unwrap();
        t.observe(h + W, false, 0);
        assert_eq!(t.missing(), 1 + W - 1);
        t.observe(h + W + 1, false, 0);
        assert_eq!(t.missing(), W);
        balanced(&t);
    }

    #[test]
    fn a_stray_huge_number_is_dropped_and_the_board_goes_on() {
        for stray in [1u64 << 62, 1_000_000_000_000, 100_000_000, u64::MAX] {
            let mut t = SeqTracker::default();
            run(&mut t, &[0, 1, 2]);
            assert_eq!(run(&mut t, &[stray]), [SeqVerdict::Held]);
            let o = t.observe(3, false, 0);
            assert_eq!(o.suspect, Some(SuspectOutcome::Rejected));
            assert_eq!(o.verdict, SeqVerdict::InOrder);
            run(&mut t, &[4, 5]);
            assert_eq!((t.implausible, t.missing(), t.received), (1, 0, 6));
            assert_eq!(t.expected(), 6);
            balanced(&t);
        }
    }

    #[test]
    fn a_real_jump_is_counted_once_with_its_gap() {
        let mut t = SeqTracker::default();
        run(&mut t, &[0, 1, 2]);
        let far = 2 + 5 * W;
        assert_eq!(run(&mut t, &[far]), [SeqVerdict::Held]);
        let o = t.observe(far + 1, false, 0);
        assert_eq!(
            o.suspect,
            Some(SuspectOutcome::Confirmed { restart: false })
        );
        assert_eq!(o.verdict, SeqVerdict::InOrder);
        assert_eq!((t.jumps, t.implausible), (1, 0));
        assert_eq!(t.missing(), far - 3);
        balanced(&t);
        // A 2^62 jump costs the same.
        let huge = 1u64 << 62;
        run(&mut t, &[huge, huge + 2]);
        assert_eq!(t.jumps, 2);
        assert_eq!(t.missing(), huge - 3 - 2 + 1);
        balanced(&t);
    }

    #[test]
    fn restarts_open_sessions() {
        let mut t = SeqTracker::default();
        // Explicit: the start flag (a repeat of the start packet is a duplicate).
        assert_eq!(t.observe(0, true, 7).verdict, SeqVerdict::InOrder);
        assert_eq!(t.observe(0, true, 7).verdict, SeqVerdict::Duplicate);
        run(&mut t, &[1, 2, 3]);
        let o = t.observe(0, true, 8);
        assert!(o.restart);
        run(&mut t, &[1, 2]);
        assert_eq!((t.restarts, t.received, t.duplicates), (1, 7, 1));
        assert_eq!(t.expected(), 7);
        balanced(&t);
        // Without the flag: back near 0 from far beyond, confirmed by the next packet.
        let mut t = SeqTracker::default();
        for s in 0..3 * W {
            t.observe(s, false, 0);
        }
        assert_eq!(run(&mut t, &[0]), [SeqVerdict::Held]);
        let o = t.observe(1, false, 0);
        assert_eq!(o.suspect, Some(SuspectOutcome::Confirmed { restart: true }));
        assert_eq!(t.restarts, 1);
        assert_eq!(t.received, 3 * W + 2);
        balanced(&t);
    }

    #[test]
    fn a_start_packet_overtaken_by_the_next_takes_both() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(1, false, 0).verdict, SeqVerdict::Held);
        let o = t.observe(0, true, 5);
        assert_eq!(
            o.suspect,
            Some(SuspectOutcome::Confirmed { restart: false })
        );
        assert_eq!(o.verdict, SeqVerdict::InOrder);
        run(&mut t, &[2]);
        assert_eq!(
            (t.received, t.missed_before_first(), t.missing()),
            (3, 0, 0)
        );
        assert_eq!(t.expected(), 3);
    }

    #[test]
    fn a_late_start_counts_what_was_missed() {
        let mut t = SeqTracker::default();
        run(&mut t, &[500, 501, 499, 502]);
        assert_eq!(t.missed_before_first(), 499);
        assert_eq!(t.missing(), 0);
        balanced(&t);
        // A stray header before the board's first packet does not set its window.
        let mut t = SeqTracker::default();
        run(&mut t, &[1 << 62, 10, 11, 12]);
        assert_eq!((t.implausible, t.received), (1, 3));
        assert_eq!(t.missed_before_first(), 10);
        balanced(&t);
        // A lone first packet is accepted at the end.
        let mut t = SeqTracker::default();
        run(&mut t, &[3]);
        assert_eq!(
            t.finish(),
            Some(SuspectOutcome::Confirmed { restart: false })
        );
        assert_eq!((t.received, t.missed_before_first()), (1, 0));
        // A suspect against a window is dropped at the end.
        let mut t = SeqTracker::default();
        run(&mut t, &[0, 1, 1 << 40]);
        assert_eq!(t.finish(), Some(SuspectOutcome::Rejected));
        assert_eq!(t.implausible, 1);
        balanced(&t);
    }
}
