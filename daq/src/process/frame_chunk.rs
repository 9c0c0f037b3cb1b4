//! [`FrameChunk`]: the unit an input hands to processing (whole frames of one board).

/// Whole frames of one board, in packet order, handed from an input to the processing stage.
#[derive(Debug, Default)]
pub struct FrameChunk {
    /// Board (transport source_id).
    pub source_id: u32,
    /// The board's session: 0, then one more at each restart of the board.
    pub session: u32,
    /// The board's data payload format (0 while only control packets have been seen).
    pub payload_format: u16,
    /// PETsys frames back to back (PET boards), or packet payloads back to back (streams).
    pub frames: Vec<u8>,
    /// Stream boards only: for each payload in `frames`, its payload format (data or
    /// control) and its end offset in `frames`.
    pub payload_ends: Vec<(u16, u32)>,
    /// Packets whose payloads are in `frames`.
    pub packets: u64,
    /// The board said end of stream.
    pub end_of_stream: bool,
    /// Packets exactly as received from allowed senders, in arrival order (for the raw
    /// archive), when archiving; may be carried by a chunk of any board.
    pub raw: Vec<u8>,
    /// Packets in `raw`.
    pub raw_packets: u64,
}
