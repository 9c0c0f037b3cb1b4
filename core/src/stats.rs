//! Named counters: what was processed and, for everything not written, why.
//!
//! Every reason is a [`LossReason`]: one definition with its documented name (the manifest
//! and console spelling, docs/tables.md "Loss reasons"), its unit and its meaning.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Declares [`LossReason`] with, for each variant, its name, unit and meaning.
macro_rules! loss_reasons {
    ($($variant:ident => $name:literal, $unit:literal, $meaning:literal;)+) => {
        /// Why something did not reach the output (or, for the few counts that lose nothing,
        /// what happened on the way: see [`LossReason::is_loss`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum LossReason {
            $(
                #[doc = $meaning]
                $variant,
            )+
        }

        impl LossReason {
            /// Every reason, in declaration order (grouped by where it is counted).
            pub const ALL: &'static [LossReason] = &[$(LossReason::$variant),+];

            /// The documented name (`resync_skipped_bytes`, ...): manifests, console, dashboard.
            pub fn name(self) -> &'static str {
                match self { $(LossReason::$variant => $name),+ }
            }

            /// What one unit of the count is (`bytes`, `frames`, `hits`, `packets`, ...).
            pub fn unit(self) -> &'static str {
                match self { $(LossReason::$variant => $unit),+ }
            }

            /// One line on what the count means.
            pub fn meaning(self) -> &'static str {
                match self { $(LossReason::$variant => $meaning),+ }
            }
        }
    };
}

loss_reasons! {
    ResyncSkippedBytes => "resync_skipped_bytes", "bytes", "PETsys stream bytes skipped while looking for the next valid frame header";
    BadFrameHeader => "bad_frame_header", "frames", "a PETsys frame header that fails the plausibility checks (its hits are not decoded)";
    TruncatedFrame => "truncated_frame", "frames", "a PETsys frame cut short by the end of the input";
    TruncatedBytes => "truncated_bytes", "bytes", "the bytes of truncated frames";
    CorruptFrameId => "corrupt_frame_id", "frames", "a PETsys frame whose frame ID is implausible and cannot be restored from its neighbours";
    CorruptFrameIdHits => "corrupt_frame_id_hits", "hits", "the hits of frames with a corrupt frame ID";
    FrontendLostFrames => "frontend_lost_frames", "frames", "frames the front end flagged as having lost data (their hits are kept, flagged)";
    RepairedFrameId => "repaired_frame_id", "frames", "a frame ID restored from its neighbours (a count, not a loss: the manifest moves it to counts)";
    NoTdcCalibration => "no_tdc_calibration", "hits", "hits whose channel/TAC has no TDC calibration entry";
    NoEnergyCalibration => "no_energy_calibration", "hits", "hits whose channel has no energy calibration entry";
    NoSkewCalibration => "no_skew_calibration", "hits", "hits whose channel has no skew entry";
    LateHit => "late_hit", "hits", "hits that arrive after the time-order merge has already released later times";
    BadHeader => "bad_header", "packets", "a transport packet with a bad magic, header length or a short header";
    TruncatedPacket => "truncated_packet", "packets", "a transport packet whose payload runs past the datagram";
    CrcError => "crc_error", "packets", "a transport packet whose CRC-32C does not match";
    PacketGaps => "packet_gaps", "packets", "packets missing from a board's sequence (never received)";
    DuplicatePackets => "duplicate_packets", "packets", "packets received twice (the copy is dropped)";
    TooLatePackets => "too_late_packets", "packets", "packets that arrived after their place in the sequence was released";
    ImplausibleSequence => "implausible_sequence", "packets", "packets whose sequence number jumps implausibly far (neither a gap nor a restart)";
    MissedBeforeFirstPacket => "missed_before_first_packet", "packets", "packets a board sent before the first one received";
    ForeignSenderPackets => "foreign_sender_packets", "packets", "packets from an address not on the input's allow list";
    ForeignSenderConnections => "foreign_sender_connections", "connections", "TCP connections from an address not on the allow list";
    UnknownSourcePackets => "unknown_source_packets", "packets", "packets from a board id not in the configured board list";
    ExcessSourcePackets => "excess_source_packets", "packets", "packets from boards beyond the 256-board cap of an input";
    PayloadFormatChangedPackets => "payload_format_changed_packets", "packets", "packets whose payload format differs from the board's first";
    UnsupportedPayloadFormat => "unsupported_payload_format", "packets", "packets of a payload format scandaq does not decode";
    UnsupportedControlPackets => "unsupported_control_packets", "packets", "control packets from a PETsys board (PETsys boards have no control records)";
    ControlBeforeDataPackets => "control_before_data_packets", "packets", "control packets of a stream board beyond the 4096 held before its first data packet";
    ControlWithoutStreamPackets => "control_without_stream_packets", "packets", "control packets held for a stream board that never sent data";
    ControlTruncated => "control_truncated", "packets", "a control record shorter than its kind needs";
    ControlUnknownKindPackets => "control_unknown_kind_packets", "packets", "a control record of an unknown kind";
    ArchiveResyncSkippedBytes => "archive_resync_skipped_bytes", "bytes", "raw-archive bytes skipped while looking for the next valid packet";
    UdpKernelDrops => "udp_kernel_drops", "packets", "datagrams the kernel dropped because the socket buffer was full";
    UdpReceiveErrors => "udp_receive_errors", "errors", "failed receive calls on a UDP socket";
    TcpDisconnects => "tcp_disconnects", "connections", "TCP connections that ended before end of stream";
    TcpReconnects => "tcp_reconnects", "connections", "TCP reconnections after a disconnect (data sent while disconnected shows as packet gaps)";
    TcpTruncatedBytes => "tcp_truncated_bytes", "bytes", "bytes of a partial packet left when a TCP connection ended";
    RingOverflowPackets => "ring_overflow_packets", "packets", "packets dropped because an input ring was full (drop policy)";
    RingOverflowBytes => "ring_overflow_bytes", "bytes", "the bytes of those packets";
    ClusterBufferFull => "cluster_buffer_full", "singles", "singles an acquisition node dropped because its buffer to a builder was full (builder or link too slow; the slice is listed missing)";
    ClusterBuilderUnreachable => "cluster_builder_unreachable", "singles", "singles an acquisition node could not deliver because the builder of their slice was gone (the slice is listed missing)";
    ClusterRefusedSingles => "cluster_refused_singles", "singles", "singles in pieces a builder refused: from a node not in the cluster file, for a slice already closed, or out of time order (a stray or replayed stream)";
    ClusterPartialSliceSingles => "cluster_partial_slice_singles", "singles", "singles a restarted acquisition node sent for slices before the one it rejoined at (its first slice, begun mid-way): dropped by the builders";
    ClusterBeforeFirstSlice => "cluster_before_first_slice", "singles", "singles an acquisition node had before slice 0 (negative detector time): no builder owns them";
    UncommittedAfterFailure => "uncommitted_after_failure", "singles", "singles that reached the sink of a failed run but are in no committed file";
    MegTruncatedBlocks => "meg_truncated_blocks", "blocks", "OPM-MEG blocks shorter than their header";
    MegEmptyBlocks => "meg_empty_blocks", "blocks", "OPM-MEG blocks with zero channels or samples";
    MegOversizedBlocks => "meg_oversized_blocks", "blocks", "OPM-MEG blocks longer than their shape";
    MegDuplicateBlocks => "meg_duplicate_blocks", "blocks", "OPM-MEG blocks whose samples were already stored";
    MegOverlappingBlocks => "meg_overlapping_blocks", "blocks", "OPM-MEG blocks that overlap stored samples";
    MegMissingSamples => "meg_missing_samples", "samples", "OPM-MEG samples never received (gaps in the sample counter)";
    MegSampleGaps => "meg_sample_gaps", "gaps", "gaps in the OPM-MEG sample index (each gap once; its samples are in meg_missing_samples)";
    MegSyncPointsNotAdvancing => "meg_sync_points_not_advancing", "records", "OPM-MEG clock sync points whose device time does not advance (left out of the clock fit)";
    UsTruncatedChunks => "us_truncated_chunks", "chunks", "ultrasound chunks shorter than their header";
    UsBadChunkIndex => "us_bad_chunk_index", "chunks", "ultrasound chunks whose index is beyond the event's chunk count";
    UsBadEventShape => "us_bad_event_shape", "chunks", "ultrasound chunks whose event shape overflows";
    UsChunkOutsideEvent => "us_chunk_outside_event", "chunks", "ultrasound chunks whose samples fall outside their event";
    UsMisalignedChunks => "us_misaligned_chunks", "chunks", "ultrasound chunks not aligned to whole samples";
    UsConflictingChunks => "us_conflicting_chunks", "chunks", "ultrasound chunks that disagree with an earlier chunk of the same event";
    UsDuplicateChunks => "us_duplicate_chunks", "chunks", "ultrasound chunks received twice, or of an event already complete";
    UsInconsistentEvents => "us_inconsistent_events", "events", "ultrasound events whose chunks disagree on the event header";
    UsIncompleteEvents => "us_incomplete_events", "events", "ultrasound events given up with chunks missing (evicted, or open at the end of the run)";
    UsIncompleteEventChunks => "us_incomplete_event_chunks", "chunks", "the chunks received of incomplete events";
    UsLateChunks => "us_late_chunks", "chunks", "ultrasound chunks of an event already given up as incomplete";
    AddressOutOfRange => "address_out_of_range", "events", "PETLINK events whose bin address is outside the sinogram of the header";
    TrailingBytes => "trailing_bytes", "bytes", "bytes after the last whole 32-bit word of a PETLINK file";
}

impl LossReason {
    /// False for the counters that ride with the losses but lose nothing (a frame ID
    /// restored from its neighbours): [`LossCounts::take_repairs`] moves them to counts and
    /// [`LossCounts::total_lost`] leaves them out.
    pub fn is_loss(self) -> bool {
        !REPAIRS.contains(&self)
    }
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LossReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            // Written by the ultrasound stream before the MEG and ultrasound names were one.
            "control_unknown_kind" => Ok(LossReason::ControlUnknownKindPackets),
            _ => LossReason::ALL
                .iter()
                .copied()
                .find(|r| r.name() == s)
                .ok_or_else(|| format!("unknown loss reason {s:?} (docs/tables.md lists them)")),
        }
    }
}

impl Serialize for LossReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for LossReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A [`LossReason`] or a documented reason name (see [`LossCounts::get`]).
pub trait ReasonName {
    /// The reason.
    fn loss_reason(self) -> LossReason;
}

impl ReasonName for LossReason {
    fn loss_reason(self) -> LossReason {
        self
    }
}

impl ReasonName for &LossReason {
    fn loss_reason(self) -> LossReason {
        *self
    }
}

impl ReasonName for &str {
    fn loss_reason(self) -> LossReason {
        match self.parse() {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }
}

impl ReasonName for &&str {
    fn loss_reason(self) -> LossReason {
        (*self).loss_reason()
    }
}

/// A reason equals its documented name (`LossReason::CrcError == "crc_error"`).
impl PartialEq<&str> for LossReason {
    fn eq(&self, name: &&str) -> bool {
        self.name() == *name
    }
}

/// Counts by reason. Every hit, frame or byte that does not reach the output is added here
/// under its [`LossReason`] (serialised as a map from the reason's name to the count).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LossCounts(pub BTreeMap<LossReason, u64>);

/// Counters that ride with the losses from the frame scanner but lose nothing: a frame whose
/// ID was restored from its neighbours. The manifest moves them to `counts`; loss totals
/// leave them out.
pub const REPAIRS: [LossReason; 1] = [LossReason::RepairedFrameId];

impl LossCounts {
    /// Takes the [`REPAIRS`] counters out of the losses, by name (for the manifest's counts).
    pub fn take_repairs(&mut self) -> BTreeMap<String, u64> {
        REPAIRS
            .iter()
            .filter_map(|r| self.0.remove(r).map(|n| (r.name().to_string(), n)))
            .collect()
    }

    /// Sum of every count except the [`REPAIRS`].
    pub fn total_lost(&self) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.is_loss())
            .map(|(_, v)| v)
            .sum()
    }

    /// Adds `n` under `reason` (no entry is created for zero).
    pub fn add(&mut self, reason: LossReason, n: u64) {
        if n == 0 {
            return;
        }
        *self.0.entry(reason).or_insert(0) += n;
    }

    /// Count under `reason` (0 if absent). `reason` is a [`LossReason`] or its documented
    /// name (tests and scripts that read manifests by name).
    ///
    /// # Panics
    /// When given a name that is no loss reason: a misspelt name in code would otherwise read
    /// as zero losses and hide a drift between the code and the documented names.
    pub fn get(&self, reason: impl ReasonName) -> u64 {
        self.0.get(&reason.loss_reason()).copied().unwrap_or(0)
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &LossCounts) {
        for (k, v) in &other.0 {
            self.add(*k, *v);
        }
    }

    /// Sum over `reasons` ([`LossReason`]s or their names, as for [`LossCounts::get`]).
    pub fn sum_of<R: ReasonName + Copy>(&self, reasons: &[R]) -> u64 {
        reasons.iter().map(|r| self.get(*r)).sum()
    }

    /// `reason count, reason count, ...` in name order, or `none`.
    pub fn summary(&self) -> String {
        if self.0.is_empty() {
            return "none".to_string();
        }
        self.by_name()
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The counts by name, in name order (for text keyed by the documented names).
    pub fn by_name(&self) -> BTreeMap<&'static str, u64> {
        self.0.iter().map(|(k, v)| (k.name(), *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_merge_and_sum() {
        let mut a = LossCounts::default();
        a.add(LossReason::NoTdcCalibration, 3);
        a.add(LossReason::LateHit, 0);
        let mut b = LossCounts::default();
        b.add(LossReason::NoTdcCalibration, 2);
        b.add(LossReason::LateHit, 1);
        a.merge(&b);
        assert_eq!(a.get(LossReason::NoTdcCalibration), 5);
        assert_eq!(
            a.sum_of(&[
                LossReason::NoTdcCalibration,
                LossReason::LateHit,
                LossReason::CrcError
            ]),
            6
        );
        assert_eq!(a.summary(), "late_hit 1, no_tdc_calibration 5");
    }

    #[test]
    fn names_are_unique_snake_case_and_round_trip_through_json() {
        let mut seen = std::collections::BTreeSet::new();
        for &r in LossReason::ALL {
            assert!(seen.insert(r.name()), "{} twice", r.name());
            assert!(
                r.name()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                r.name()
            );
            assert_eq!(r.name().parse::<LossReason>(), Ok(r));
            assert!(!r.unit().is_empty() && !r.meaning().is_empty());
        }
        let mut counts = LossCounts::default();
        counts.add(LossReason::CrcError, 2);
        counts.add(LossReason::RepairedFrameId, 1);
        let json = serde_json::to_string(&counts).unwrap();
        assert_eq!(json, r#"{"repaired_frame_id":1,"crc_error":2}"#);
        let back: LossCounts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, counts);
        assert_eq!(back.total_lost(), 2);
        assert!(serde_json::from_str::<LossCounts>(r#"{"no_such_reason":1}"#).is_err());
        let old: LossCounts = serde_json::from_str(r#"{"control_unknown_kind":4}"#).unwrap();
        assert_eq!(old.get(LossReason::ControlUnknownKindPackets), 4);
        assert_eq!(old.get("control_unknown_kind_packets"), 4);
        assert_eq!(
            old.sum_of(&["control_unknown_kind_packets", "crc_error"]),
            4
        );
        assert!(LossReason::CrcError == "crc_error" && LossReason::CrcError != "crc");
    }

    #[test]
    fn repairs_move_out_by_name_and_a_reason_displays_as_its_name() {
        let mut c = LossCounts::default();
        c.add(LossReason::RepairedFrameId, 3);
        c.add(LossReason::BadFrameHeader, 2);
        let repairs = c.take_repairs();
        assert_eq!(
            repairs,
            BTreeMap::from([("repaired_frame_id".to_string(), 3)])
        );
        assert_eq!(c.by_name(), BTreeMap::from([("bad_frame_header", 2)]));
        assert!(c.take_repairs().is_empty());
        assert_eq!(LossReason::BadFrameHeader.to_string(), "bad_frame_header");
    }

    #[test]
    fn the_documented_table_lists_every_reason() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/tables.md"),
        )
        .unwrap();
        let section = doc
            .split("### Loss reasons")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/tables.md has a Loss reasons section");
        let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
        for &r in LossReason::ALL {
            let row = format!("| `{}` | {} | {} |", r.name(), r.unit(), r.meaning());
            assert!(rows.contains(&row.as_str()), "docs/tables.md lacks {row}");
        }
        assert_eq!(
            rows.len(),
            LossReason::ALL.len(),
            "a documented reason the enum lacks"
        );
    }

    #[test]
    #[should_panic(expected = "unknown loss reason \"crc_errors\"")]
    fn a_misspelt_name_is_not_read_as_zero() {
        let _ = LossCounts::default().get("crc_errors");
    }

    #[test]
    fn empty_until_something_is_counted() {
        let mut counts = LossCounts::default();
        assert!(counts.is_empty());
        counts.add(LossReason::LateHit, 1);
        assert!(!counts.is_empty());
    }
}
