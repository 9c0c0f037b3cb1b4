//! Sampled-stream sources (payload formats 3 = OPM-MEG sample blocks and 4 = ultrasound RF
//! event chunks): the interface between live ingest and the per-stream processors.
//!
//! PETsys boards go through the hit pipeline (decode, calibrate, k-way merge, singles). A
//! board whose packets carry payload format 3 or 4 is a *stream* instead: ingest restores its
//! packet order exactly as for PET boards, then hands each packet's payload, one by one and in
//! sequence order, to the [`StreamProcessor`] made for that source by [`new_processor`].
//! Control packets (format 0xFFFF, e.g. clock-sync records) with the same source_id travel
//! in the same sequence space and reach the same processor through [`StreamProcessor::control`].
//!
//! A processor owns its tables: it writes its own Parquet files in the run directory (on its
//! own writer thread when the data rate needs it) and, at [`StreamProcessor::finish`], returns
//! them with its counters and losses; the run adds them to the manifest.

pub mod meg;
pub mod panel;
pub mod stage;
pub mod us;

use scandaq_core::LossCounts;
use scandaq_decoders::transport::payload_format;
use scandaq_sinks::FileRecord;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Configuration of the stream processors (the `[meg]` and `[ultrasound]` run-config sections).
/// A run records them, resolved (files' text included), under [`ARCHIVE_METADATA_KEY`] in its
/// raw archive's metadata, and `scandaq replay` uses them from there.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// OPM-MEG streams.
    #[serde(default)]
    pub meg: meg::MegSettings,
    /// Ultrasound RF streams.
    #[serde(default)]
    pub ultrasound: us::UsSettings,
}

/// The key of a raw archive's metadata JSON holding the run's [`StreamSettings`].
pub const ARCHIVE_METADATA_KEY: &str = "streams";

impl StreamSettings {
    /// Checks every setting and reads the files they name (channel table, sequence) into
    /// the settings, so mistakes stop the run at startup with a message saying what, where
    /// and how to fix it, and the result can be stored in a raw archive.
    pub fn resolve(&self) -> anyhow::Result<Self> {
        Ok(Self {
            meg: self.meg.resolve()?,
            ultrasound: self.ultrasound.resolve()?,
        })
    }
}

/// What a processor is given when its stream first appears.
#[derive(Clone, Debug)]
pub struct StreamContext {
    /// The run directory (write tables here, `NAME.parquet.inprogress` then rename).
    pub run_dir: PathBuf,
    /// The run's Parquet key-value metadata (run number, software version, checksums...);
    /// add `scandaq.table` and `scandaq.schema_version` of your own table.
    pub metadata: Vec<(String, String)>,
    /// The stream's transport source_id.
    pub source_id: u32,
    /// Its payload format ([`payload_format::OPM_BLOCK`] or [`payload_format::US_RF_EVENT`]).
    pub payload_format: u16,
    /// Settings from the run configuration.
    pub settings: StreamSettings,
}

/// What a processor hands back when the run ends.
#[derive(Debug, Default)]
pub struct StreamReport {
    /// Committed files, in the order they should appear in the manifest.
    pub files: Vec<FileRecord>,
    /// Counters for the manifest's `counts` (prefix them, e.g. `meg.3.samples`).
    pub counts: BTreeMap<String, u64>,
    /// Everything dropped, by named reason (e.g. `meg_sample_gap_samples`,
    /// `us_incomplete_events`).
    pub losses: LossCounts,
    /// Warnings for the run summary (clock resets, ...).
    pub warnings: Vec<String>,
    /// The stream's dashboard figures after everything was flushed (the last values the
    /// dashboard shows), when the processor has any.
    pub panel: Option<scandaq_core::snapshot::StreamFigures>,
}

/// A live figure for the dashboard (name, value, unit), e.g. ("frames/s", 812.0, "Hz").
pub type StreamFigure = (String, f64, String);

/// One stream's processing.
pub trait StreamProcessor: Send {
    /// One packet's payload, in the source's sequence order. Packets lost in transport are
    /// already counted by ingest; the processor sees only the gap in its own counters.
    fn payload(&mut self, payload: &[u8]) -> anyhow::Result<()>;
    /// One control packet's payload (format 0xFFFF) from the same source, in sequence order.
    fn control(&mut self, payload: &[u8]) -> anyhow::Result<()>;
    /// Live figures for the dashboard and the stats line (cheap; called a few times a second).
    fn figures(&self) -> Vec<StreamFigure> {
        Vec::new()
    }
    /// Typed dashboard figures ([`panel`]: cheap, small copies; called up to 20 times a
    /// second on the processing thread).
    fn panel(&self) -> Option<scandaq_core::snapshot::StreamFigures> {
        None
    }
    /// Flushes and commits everything; called once at the end of the run.
    fn finish(self: Box<Self>) -> anyhow::Result<StreamReport>;
}

/// Makes the processor for a stream, or `None` when the format is not a stream format.
pub fn new_processor(ctx: StreamContext) -> anyhow::Result<Option<Box<dyn StreamProcessor>>> {
    match ctx.payload_format {
        payload_format::OPM_BLOCK => Ok(Some(meg::new_processor(ctx)?)),
        payload_format::US_RF_EVENT => Ok(Some(us::new_processor(ctx)?)),
        _ => Ok(None),
    }
}
