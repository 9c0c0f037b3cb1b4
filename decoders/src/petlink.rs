//! PETLINK 32-bit list mode (docs/formats.md §4): a streaming decoder of little-endian
//! 32-bit words into struct-of-arrays batches of events and singles-rate rows, with a count
//! for every word kind.
//!
//! Word kinds, by the top bits:
//!
//! | bits 31..28 | kind |
//! |---|---|
//! | `0 1 x x` | prompt event, bits 0–29 bin address |
//! | `0 0 x x` | delayed event, bits 0–29 bin address |
//! | `1 0 0 x` | elapsed-time tag, bits 0–28 ms since acquisition start |
//! | `1 0 1 x` | dead-time / singles tag, bits 19–28 block, bits 0–18 raw rate |
//! | `1 1 0 x` | gantry motion / bed position tag |
//! | `1 1 1 0` | physiological gating tag |
//! | `1 1 1 1` | control word |
//!
//! **Bin addresses** are span-1 (axial compression 1) sinogram addresses:
//! `sino = addr / (views*bins)`, `view = (addr % (views*bins)) / bins`, `bin = addr % bins`.
//! The sinograms are ordered by segment, `0, -1, +1, -2, +2, ...` up to the maximum ring
//! difference, segment `s` holding `rings - |s|` sinograms (one per axial position); this is
//! the layout the Siemens mMR writes and STIR decodes (`CListRecordECAT8_32bit`). For the mMR
//! (64 rings, maximum ring difference 60) that is 4084 sinograms. The header's `%segment
//! table` (`{127,115,115,...}`, 837 sinograms) describes the span-11 *histogrammed*
//! sinograms, not the list-mode address space: the real sample's addresses reach sinogram
//! 4083, so the segment table cannot be used to bound or split them. In span 1 each sinogram
//! is one ring pair; [`SinogramLayout::ring_pair`] gives it with STIR's convention
//! (`segment = ring_b - ring_a`, `axial position = min(ring_a, ring_b)`). The sign of the
//! segment follows the ECAT ordering and cannot be checked from list-mode data alone.
//!
//! **Time.** Each event and singles row gets the value of the most recent elapsed-time tag
//! (ms). Words before the first tag get time 0 and are counted (`events_before_first_tag`).
//! Tags that go backwards are counted (`backward_time_jumps`) and followed; forward steps
//! other than the header's tag interval are counted (`time_steps_not_interval`).
//!
//! **Accounting.** `words == prompts + delayeds + time_tags + singles_tags + gantry_tags +
//! gating_tags + control_words`, and `bytes == 4 * words + trailing_bytes` (a file whose
//! length is not a multiple of 4 ends in a partial word, counted, never decoded). Events whose
//! sinogram is beyond the layout are counted in `address_out_of_range` and not put in the
//! batch. No input panics (property-tested).

use crate::interfile::PetlinkHeader;

/// Bin-address bits of an event word.
pub const ADDRESS_MASK: u32 = (1 << 30) - 1;
/// Milliseconds bits of an elapsed-time tag.
pub const TIME_MASK: u32 = (1 << 29) - 1;
/// Raw-rate bits of a singles tag.
pub const SINGLES_RATE_MASK: u32 = (1 << 19) - 1;
/// Shift of the block field of a singles tag.
pub const SINGLES_BLOCK_SHIFT: u32 = 19;
/// Block bits of a singles tag (after the shift).
pub const SINGLES_BLOCK_MASK: u32 = (1 << 10) - 1;

/// The kind of one 32-bit word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WordKind {
    /// Prompt coincidence event.
    Prompt,
    /// Delayed coincidence event.
    Delayed,
    /// Elapsed-time tag.
    TimeTag,
    /// Dead-time / singles tag.
    Singles,
    /// Gantry motion or bed position tag.
    Gantry,
    /// Physiological gating tag.
    Gating,
    /// Control word.
    Control,
}

impl WordKind {
    /// Every kind, in table order.
    pub const ALL: [WordKind; 7] = [
        WordKind::Prompt,
        WordKind::Delayed,
        WordKind::TimeTag,
        WordKind::Singles,
        WordKind::Gantry,
        WordKind::Gating,
        WordKind::Control,
    ];

    /// The kind of `w`.
    #[inline(always)]
    pub fn of(w: u32) -> Self {
        match w >> 28 {
            0x4..=0x7 => WordKind::Prompt,
            0x0..=0x3 => WordKind::Delayed,
            0x8 | 0x9 => WordKind::TimeTag,
            0xA | 0xB => WordKind::Singles,
            0xC | 0xD => WordKind::Gantry,
            0xE => WordKind::Gating,
            _ => WordKind::Control,
        }
    }

    /// Name used in counts and manifests (`prompts`, `time_tags`, ...).
    pub fn count_name(self) -> &'static str {
        match self {
            WordKind::Prompt => "prompts",
            WordKind::Delayed => "delayeds",
            WordKind::TimeTag => "time_tags",
            WordKind::Singles => "singles_tags",
            WordKind::Gantry => "gantry_tags",
            WordKind::Gating => "gating_tags",
            WordKind::Control => "control_words",
        }
    }
}

/// Encodes an event word (for tests and simulators).
pub fn encode_event(prompt: bool, address: u32) -> u32 {
    (u32::from(prompt) << 30) | (address & ADDRESS_MASK)
}

/// Encodes an elapsed-time tag.
pub fn encode_time_tag(ms: u32) -> u32 {
    0x8000_0000 | (ms & TIME_MASK)
}

/// Encodes a singles tag.
pub fn encode_singles_tag(block: u32, raw_rate: u32) -> u32 {
    0xA000_0000
        | (block & SINGLES_BLOCK_MASK) << SINGLES_BLOCK_SHIFT
        | (raw_rate & SINGLES_RATE_MASK)
}

/// The span-1 sinogram layout of the bin addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinogramLayout {
    /// Bins (projections) per view.
    pub bins: u32,
    /// Views per sinogram.
    pub views: u32,
    /// Detector rings.
    pub rings: u32,
    /// Largest ring difference.
    pub max_ring_difference: u32,
    /// (segment, axial position) of each sinogram.
    segment_axial: Vec<(i16, u16)>,
}

impl SinogramLayout {
    /// The span-1 layout of `rings` rings up to `max_ring_difference`. Values are clamped
    /// into range (`rings` 1..=4096, `max_ring_difference < rings`, bins and views 1..=65535) so
    /// any input gives a usable layout; [`PetlinkHeader`] rejects such headers earlier.
    pub fn new(bins: u32, views: u32, rings: u32, max_ring_difference: u32) -> Self {
        let rings = rings.clamp(1, crate::interfile::MAX_RINGS);
        let mrd = max_ring_difference.min(rings - 1);
        let mut segment_axial = Vec::new();
        for k in 0..=2 * mrd {
            let segment = if k == 0 {
                0i32
            } else if k % 2 == 1 {
                -(k.div_ceil(2) as i32)
            } else {
                (k / 2) as i32
            };
            for axial in 0..rings - segment.unsigned_abs() {
                segment_axial.push((segment as i16, axial as u16));
            }
        }
        Self {
            bins: bins.clamp(1, crate::interfile::MAX_BINS_OR_VIEWS),
            views: views.clamp(1, crate::interfile::MAX_BINS_OR_VIEWS),
            rings,
            max_ring_difference: mrd,
            segment_axial,
        }
    }

    /// The layout described by a header.
    pub fn from_header(h: &PetlinkHeader) -> Self {
        Self::new(h.projections, h.views, h.rings, h.max_ring_difference)
    }

    /// Number of span-1 sinograms (`rings + 2 * sum_{d=1}^{mrd} (rings - d)`).
    pub fn sinograms(&self) -> u32 {
        self.segment_axial.len() as u32
    }

    /// Addresses per sinogram (`views * bins`).
    pub fn sinogram_size(&self) -> u64 {
        u64::from(self.views) * u64::from(self.bins)
    }

    /// Splits a bin address into (sinogram, view, bin).
    #[inline(always)]
    pub fn split(&self, address: u32) -> (u64, u32, u32) {
        let a = u64::from(address);
        let size = self.sinogram_size();
        let within = a % size;
        (
            a / size,
            (within / u64::from(self.bins)) as u32,
            (within % u64::from(self.bins)) as u32,
        )
    }

    /// (segment, axial position) of a sinogram, or `None` beyond the layout. The segment is
    /// the signed ring difference.
    #[inline(always)]
    pub fn segment_axial(&self, sinogram: u64) -> Option<(i16, u16)> {
        usize::try_from(sinogram)
            .ok()
            .and_then(|s| self.segment_axial.get(s))
            .copied()
    }

    /// The ring pair `(ring_a, ring_b)` of a (segment, axial position), STIR's convention:
    /// `ring_b - ring_a = segment`, `min(ring_a, ring_b) = axial position`.
    pub fn ring_pair(segment: i16, axial: u16) -> (u16, u16) {
        let d = segment.unsigned_abs();
        if segment >= 0 {
            (axial, axial.saturating_add(d))
        } else {
            (axial.saturating_add(d), axial)
        }
    }
}

/// Decoded coincidence events, struct of arrays (one row per event in the layout).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventBatch {
    /// Time of the most recent elapsed-time tag, ms since acquisition start.
    pub time_ms: Vec<u32>,
    /// True for a prompt, false for a delayed.
    pub prompt: Vec<bool>,
    /// Bin address (bits 0–29).
    pub bin_address: Vec<u32>,
    /// Span-1 sinogram index.
    pub sinogram: Vec<u32>,
    /// View (angle) index.
    pub view: Vec<u16>,
    /// Bin (tangential position) index.
    pub bin: Vec<u16>,
    /// Segment (signed ring difference).
    pub segment: Vec<i16>,
    /// Axial position within the segment (the lower ring).
    pub axial_pos: Vec<u16>,
}

impl EventBatch {
    /// An empty batch with room for `n` events.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            time_ms: Vec::with_capacity(n),
            prompt: Vec::with_capacity(n),
            bin_address: Vec::with_capacity(n),
            sinogram: Vec::with_capacity(n),
            view: Vec::with_capacity(n),
            bin: Vec::with_capacity(n),
            segment: Vec::with_capacity(n),
            axial_pos: Vec::with_capacity(n),
        }
    }

    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.time_ms.len()
    }

    /// True when the batch holds no events.
    pub fn is_empty(&self) -> bool {
        self.time_ms.is_empty()
    }

    /// Empties the batch, keeping its capacity.
    pub fn clear(&mut self) {
        self.time_ms.clear();
        self.prompt.clear();
        self.bin_address.clear();
        self.sinogram.clear();
        self.view.clear();
        self.bin.clear();
        self.segment.clear();
        self.axial_pos.clear();
    }
}

/// Decoded singles / dead-time tags, struct of arrays.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SinglesRateBatch {
    /// Time of the most recent elapsed-time tag, ms.
    pub time_ms: Vec<u32>,
    /// Block (bucket) index, bits 19–28.
    pub block: Vec<u16>,
    /// Raw rate field, bits 0–18.
    pub raw_rate: Vec<u32>,
    /// `raw_rate * singles scale factor`, counts per second.
    pub scaled_rate_hz: Vec<f64>,
}

impl SinglesRateBatch {
    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.time_ms.len()
    }

    /// True when the batch holds no rows.
    pub fn is_empty(&self) -> bool {
        self.time_ms.is_empty()
    }

    /// Empties the batch, keeping its capacity.
    pub fn clear(&mut self) {
        self.time_ms.clear();
        self.block.clear();
        self.raw_rate.clear();
        self.scaled_rate_hz.clear();
    }
}

/// Everything the decoder has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PetlinkCounts {
    /// Bytes given to the decoder.
    pub bytes: u64,
    /// Whole 32-bit words decoded.
    pub words: u64,
    /// Prompt event words.
    pub prompts: u64,
    /// Delayed event words.
    pub delayeds: u64,
    /// Elapsed-time tags.
    pub time_tags: u64,
    /// Singles / dead-time tags.
    pub singles_tags: u64,
    /// Gantry / bed tags.
    pub gantry_tags: u64,
    /// Gating tags.
    pub gating_tags: u64,
    /// Control words.
    pub control_words: u64,
    /// Bytes of a partial word at the end of the input (0–3).
    pub trailing_bytes: u64,
    /// Events (prompt or delayed) before the first time tag.
    pub events_before_first_tag: u64,
    /// Time tags smaller than the one before.
    pub backward_time_jumps: u64,
    /// Forward time-tag steps other than the tag interval (including repeats of a value).
    pub time_steps_not_interval: u64,
    /// Events whose sinogram is beyond the layout (counted, not in the batches).
    pub address_out_of_range: u64,
    /// Singles tags whose block is not below the header's number of singles blocks.
    pub singles_block_beyond_header: u64,
    /// First elapsed-time tag, ms.
    pub first_time_ms: Option<u32>,
    /// Last elapsed-time tag, ms.
    pub last_time_ms: Option<u32>,
    /// Largest elapsed-time tag, ms.
    pub max_time_ms: Option<u32>,
}

impl PetlinkCounts {
    /// Sum of the per-kind counts (must equal `words`).
    pub fn kinds_total(&self) -> u64 {
        self.prompts
            + self.delayeds
            + self.time_tags
            + self.singles_tags
            + self.gantry_tags
            + self.gating_tags
            + self.control_words
    }

    /// The count of one word kind.
    pub fn of_kind(&self, kind: WordKind) -> u64 {
        match kind {
            WordKind::Prompt => self.prompts,
            WordKind::Delayed => self.delayeds,
            WordKind::TimeTag => self.time_tags,
            WordKind::Singles => self.singles_tags,
            WordKind::Gantry => self.gantry_tags,
            WordKind::Gating => self.gating_tags,
            WordKind::Control => self.control_words,
        }
    }

    /// Events written to the batches (`prompts + delayeds - address_out_of_range`).
    pub fn events_kept(&self) -> u64 {
        self.prompts + self.delayeds - self.address_out_of_range
    }

    /// Span of the time tags, ms (largest minus first), 0 without tags.
    pub fn duration_ms(&self) -> u64 {
        match (self.first_time_ms, self.max_time_ms) {
            (Some(a), Some(b)) => u64::from(b.saturating_sub(a)),
            _ => 0,
        }
    }

    /// Every count by name, for manifests (`first_time_ms` etc. only when present).
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![
            ("bytes", self.bytes),
            ("words", self.words),
            ("prompts", self.prompts),
            ("delayeds", self.delayeds),
            ("time_tags", self.time_tags),
            ("singles_tags", self.singles_tags),
            ("gantry_tags", self.gantry_tags),
            ("gating_tags", self.gating_tags),
            ("control_words", self.control_words),
            ("trailing_bytes", self.trailing_bytes),
            ("events_before_first_tag", self.events_before_first_tag),
            ("backward_time_jumps", self.backward_time_jumps),
            ("time_steps_not_interval", self.time_steps_not_interval),
            ("address_out_of_range", self.address_out_of_range),
            (
                "singles_block_beyond_header",
                self.singles_block_beyond_header,
            ),
            ("events_kept", self.events_kept()),
            ("duration_ms", self.duration_ms()),
        ];
        for (k, t) in [
            ("first_time_ms", self.first_time_ms),
            ("last_time_ms", self.last_time_ms),
            ("max_time_ms", self.max_time_ms),
        ] {
            if let Some(t) = t {
                v.push((k, u64::from(t)));
            }
        }
        v
    }
}

/// Streaming PETLINK 32-bit decoder. Feed bytes in pieces of any size with
/// [`PetlinkDecoder::decode`] (a word split between pieces is carried), then call
/// [`PetlinkDecoder::finish`].
#[derive(Clone, Debug)]
pub struct PetlinkDecoder {
    layout: SinogramLayout,
    singles_scale: f64,
    singles_blocks: Option<u32>,
    tag_interval_ms: u32,
    time_ms: Option<u32>,
    carry: [u8; 4],
    carry_len: usize,
    counts: PetlinkCounts,
}

impl PetlinkDecoder {
    /// A decoder for `layout`, scaling singles by `singles_scale`; `tag_interval_ms` is the
    /// expected step of the time tags and `singles_blocks` (if known) bounds the block index.
    pub fn new(
        layout: SinogramLayout,
        singles_scale: f64,
        tag_interval_ms: u32,
        singles_blocks: Option<u32>,
    ) -> Self {
        Self {
            layout,
            singles_scale,
            singles_blocks,
            tag_interval_ms,
            time_ms: None,
            carry: [0; 4],
            carry_len: 0,
            counts: PetlinkCounts::default(),
        }
    }

    /// A decoder set up from a header.
    pub fn from_header(h: &PetlinkHeader) -> Self {
        Self::new(
            SinogramLayout::from_header(h),
            h.singles_scale_factor,
            h.tag_interval_ms,
            h.singles_blocks,
        )
    }

    /// The sinogram layout.
    pub fn layout(&self) -> &SinogramLayout {
        &self.layout
    }

    /// Counts so far.
    pub fn counts(&self) -> &PetlinkCounts {
        &self.counts
    }

    /// Decodes `bytes`, appending events and singles rows to the batches.
    pub fn decode(
        &mut self,
        bytes: &[u8],
        events: &mut EventBatch,
        singles: &mut SinglesRateBatch,
    ) {
        self.counts.bytes += bytes.len() as u64;
        let mut rest = bytes;
        if self.carry_len > 0 {
            let take = (4 - self.carry_len).min(rest.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&rest[..take]);
            self.carry_len += take;
            rest = &rest[take..];
            if self.carry_len < 4 {
                return;
            }
            self.carry_len = 0;
            let w = u32::from_le_bytes(self.carry);
            self.word(w, events, singles);
        }
        let mut chunks = rest.chunks_exact(4);
        for c in &mut chunks {
            let w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            self.word(w, events, singles);
        }
        let tail = chunks.remainder();
        self.carry[..tail.len()].copy_from_slice(tail);
        self.carry_len = tail.len();
    }

    /// Ends the stream: a partial word left over is counted in `trailing_bytes`.
    pub fn finish(&mut self) -> &PetlinkCounts {
        self.counts.trailing_bytes += self.carry_len as u64;
        self.carry_len = 0;
        &self.counts
    }

    #[inline(always)]
    fn word(&mut self, w: u32, events: &mut EventBatch, singles: &mut SinglesRateBatch) {
        self.counts.words += 1;
        let kind = WordKind::of(w);
        match kind {
            WordKind::Prompt | WordKind::Delayed => {
                let prompt = kind == WordKind::Prompt;
                if prompt {
                    self.counts.prompts += 1;
                } else {
                    self.counts.delayeds += 1;
                }
                if self.time_ms.is_none() {
                    self.counts.events_before_first_tag += 1;
                }
                let address = w & ADDRESS_MASK;
                let (sino, view, bin) = self.layout.split(address);
                match self.layout.segment_axial(sino) {
                    Some((segment, axial)) => {
                        events.time_ms.push(self.time_ms.unwrap_or(0));
                        events.prompt.push(prompt);
                        events.bin_address.push(address);
                        events.sinogram.push(sino as u32);
                        events.view.push(view as u16);
                        events.bin.push(bin as u16);
                        events.segment.push(segment);
                        events.axial_pos.push(axial);
                    }
                    None => self.counts.address_out_of_range += 1,
                }
            }
            WordKind::TimeTag => {
                self.counts.time_tags += 1;
                let t = w & TIME_MASK;
                if let Some(prev) = self.time_ms {
                    if t < prev {
                        self.counts.backward_time_jumps += 1;
                    } else if t - prev != self.tag_interval_ms {
                        self.counts.time_steps_not_interval += 1;
                    }
                }
                self.time_ms = Some(t);
                self.counts.first_time_ms.get_or_insert(t);
                self.counts.last_time_ms = Some(t);
                self.counts.max_time_ms = Some(self.counts.max_time_ms.map_or(t, |m| m.max(t)));
            }
            WordKind::Singles => {
                self.counts.singles_tags += 1;
                let block = (w >> SINGLES_BLOCK_SHIFT) & SINGLES_BLOCK_MASK;
                if self.singles_blocks.is_some_and(|n| block >= n) {
                    self.counts.singles_block_beyond_header += 1;
                }
                let raw = w & SINGLES_RATE_MASK;
                singles.time_ms.push(self.time_ms.unwrap_or(0));
                singles.block.push(block as u16);
                singles.raw_rate.push(raw);
                singles
                    .scaled_rate_hz
                    .push(f64::from(raw) * self.singles_scale);
            }
            WordKind::Gantry => self.counts.gantry_tags += 1,
            WordKind::Gating => self.counts.gating_tags += 1,
            WordKind::Control => self.counts.control_words += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmr_layout_has_4084_sinograms_in_ecat_order() {
        let l = SinogramLayout::new(344, 252, 64, 60);
        assert_eq!(l.sinograms(), 4084);
        assert_eq!(l.segment_axial(0), Some((0, 0)));
        assert_eq!(l.segment_axial(63), Some((0, 63)));
        assert_eq!(l.segment_axial(64), Some((-1, 0)));
        assert_eq!(l.segment_axial(64 + 63), Some((1, 0)));
        assert_eq!(l.segment_axial(4083), Some((60, 3)));
        assert_eq!(l.segment_axial(4084), None);
        assert_eq!(SinogramLayout::ring_pair(-3, 5), (8, 5));
        assert_eq!(SinogramLayout::ring_pair(3, 5), (5, 8));
        let addr = 1000 * 252 * 344 + 17 * 344 + 300;
        assert_eq!(l.split(addr), (1000, 17, 300));
    }

    #[test]
    fn words_split_across_pieces_and_trailing_bytes() {
        let mut bytes = Vec::new();
        for w in [
            encode_event(true, 5),
            encode_time_tag(7),
            encode_event(false, 6),
            encode_singles_tag(3, 100),
            0xC000_0000,
            0xE000_0000,
            0xF000_0000,
        ] {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        bytes.push(0xff);
        let mut d = PetlinkDecoder::new(SinogramLayout::new(4, 2, 2, 1), 8.0, 1, Some(224));
        let (mut ev, mut si) = (EventBatch::default(), SinglesRateBatch::default());
        for piece in bytes.chunks(3) {
            d.decode(piece, &mut ev, &mut si);
        }
        let c = d.finish().clone();
        assert_eq!(c.words, 7);
        assert_eq!(c.kinds_total(), 7);
        assert_eq!(c.trailing_bytes, 1);
        assert_eq!(c.events_before_first_tag, 1);
        assert_eq!(ev.time_ms, vec![0, 7]);
        assert_eq!(ev.prompt, vec![true, false]);
        assert_eq!(si.scaled_rate_hz, vec![800.0]);
        assert_eq!(si.block, vec![3]);
    }
}
