//! Transport packets (docs/formats.md §1) built straight into a batch: the 32-byte header with
//! seq, flags and the CRC-32C of the payload, then the payload's parts copied once. [`Batch`]
//! holds packets back to back with a [`Span`] each, until the destination takes them.

use scandaq_decoders::transport::{FLAG_CRC, FLAG_START_OF_STREAM, HEADER_LEN, MAGIC};

/// One packet in a [`Batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    /// Its transport source_id.
    pub(crate) source_id: u32,
    /// Where it starts in the batch.
    pub(crate) start: usize,
    /// Its length, header included.
    pub(crate) len: usize,
    /// The caller's count of what it carries (hits, for the PET bench).
    pub(crate) hits: u64,
    /// Times it goes on the wire (end-of-stream markers over UDP: several).
    pub(crate) copies: usize,
    /// Sent once, intact, with no held packet behind it: a TCP disconnect may cut it and the
    /// receiver then sees exactly one more gap.
    pub(crate) cuttable: bool,
}

/// Packets waiting for the destination, back to back.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) bytes: Vec<u8>,
    pub(crate) spans: Vec<Span>,
}

impl Batch {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            spans: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Packets on the wire, copies included.
    pub(crate) fn wire_packets(&self) -> u64 {
        self.spans.iter().map(|s| s.copies as u64).sum()
    }

    /// Bytes on the wire, copies included.
    pub(crate) fn wire_bytes(&self) -> u64 {
        self.spans.iter().map(|s| (s.len * s.copies) as u64).sum()
    }

    /// The bytes of one packet.
    pub(crate) fn packet(&self, span: &Span) -> &[u8] {
        &self.bytes[span.start..span.start + span.len]
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }

    /// Appends one packet: header (`FLAG_START_OF_STREAM` added at seq 0, CRC flag always)
    /// and the concatenated `parts`. Returns its index in the batch.
    pub(crate) fn push_packet(
        &mut self,
        source_id: u32,
        format: u16,
        seq: u64,
        flags: u32,
        parts: &[&[u8]],
    ) -> usize {
        let start = self.bytes.len();
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        self.bytes.resize(start + HEADER_LEN, 0);
        let mut crc = 0u32;
        for p in parts {
            self.bytes.extend_from_slice(p);
            crc = crc32c::crc32c_append(crc, p);
        }
        let flags = if seq == 0 {
            flags | FLAG_START_OF_STREAM
        } else {
            flags
        };
        let h = &mut self.bytes[start..start + HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4..6].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        h[6..8].copy_from_slice(&format.to_le_bytes());
        h[8..12].copy_from_slice(&source_id.to_le_bytes());
        h[12..16].copy_from_slice(&(flags | FLAG_CRC).to_le_bytes());
        h[16..24].copy_from_slice(&seq.to_le_bytes());
        h[24..28].copy_from_slice(&(payload_len as u32).to_le_bytes());
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        self.push_span(source_id, start, HEADER_LEN + payload_len)
    }

    /// Appends a packet made earlier (a held one), as is.
    pub(crate) fn push_bytes(&mut self, source_id: u32, packet: &[u8], hits: u64) -> usize {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(packet);
        let i = self.push_span(source_id, start, packet.len());
        self.spans[i].hits = hits;
        i
    }

    fn push_span(&mut self, source_id: u32, start: usize, len: usize) -> usize {
        self.spans.push(Span {
            source_id,
            start,
            len,
            hits: 0,
            copies: 1,
            cuttable: false,
        });
        self.spans.len() - 1
    }

    /// Appends a second copy of the last packet (a duplicate).
    pub(crate) fn duplicate_last(&mut self) {
        if let Some(&last) = self.spans.last() {
            let start = self.bytes.len();
            self.bytes
                .extend_from_within(last.start..last.start + last.len);
            self.spans.push(Span { start, ..last });
        }
    }

    /// Removes the last packet and returns its bytes (a packet held back for reordering).
    pub(crate) fn take_last(&mut self) -> Option<Vec<u8>> {
        let last = self.spans.pop()?;
        Some(self.bytes.split_off(last.start))
    }
}
