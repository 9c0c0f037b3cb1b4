//! What travels between cluster nodes over Arrow Flight (docs/cluster.md "Wire protocol"):
//! the singles columns as an Arrow schema, each `FlightData`'s `app_metadata` ([`PieceMeta`]:
//! run, slice, source, sequence, piece role, end of slice) and the builder's acknowledgements
//! ([`Credit`], in `PutResult.app_metadata`). JSON metadata, so any Flight client (pyarrow)
//! can read it. No network here: encoding and decoding only.

use crate::process::coinc_stage::SorterInput;
use anyhow::{Context, Result, anyhow, bail};
use arrow_array::{Array, Float32Array, Int64Array, RecordBatch, UInt16Array, UInt32Array};
use arrow_flight::{FlightData, SchemaAsIpc};
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};

/// The `DoAction` type every node answers with its statistics snapshot (JSON).
pub const STATS_ACTION: &str = "stats";
/// The Flight descriptor path of an acquisition node's singles stream.
pub const SINGLES_PATH: &str = "scandaq.singles";

/// The singles schema on the wire: `t_ps` Int64, `channel` UInt32, `energy_kev` Float32,
/// `flags` UInt16 (18 bytes a single).
pub fn singles_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("t_ps", DataType::Int64, false),
                Field::new("channel", DataType::UInt32, false),
                Field::new("energy_kev", DataType::Float32, false),
                Field::new("flags", DataType::UInt16, false),
            ]))
        })
        .clone()
}

/// The part of a slice a piece carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PieceRole {
    /// Singles inside the slice: pairs they open belong to it.
    Body,
    /// Singles before the slice, carried for state (single-window mode, grouping).
    LeadIn,
    /// Singles after the slice, up to its lead-out: partners of pairs opened inside it.
    LeadOut,
    /// No rows: the source's stream ends (every slice through `slice` is finished).
    EndOfStream,
}

impl PieceRole {
    /// The slicing library's role (None for the end-of-stream marker).
    pub fn slicing(self) -> Option<scandaq_core::slicing::PieceRole> {
        use scandaq_core::slicing::PieceRole as R;
        match self {
            PieceRole::Body => Some(R::Body),
            PieceRole::LeadIn => Some(R::LeadIn),
            PieceRole::LeadOut => Some(R::LeadOut),
            PieceRole::EndOfStream => None,
        }
    }

    /// The wire role of a slicing library role.
    pub fn of(role: scandaq_core::slicing::PieceRole) -> Self {
        use scandaq_core::slicing::PieceRole as R;
        match role {
            R::Body => PieceRole::Body,
            R::LeadIn => PieceRole::LeadIn,
            R::LeadOut => PieceRole::LeadOut,
        }
    }
}

/// The `app_metadata` of one `FlightData` an acquisition node sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PieceMeta {
    /// Cluster run number.
    pub run: u64,
    /// Slice number (detector time / slice length, rounded down).
    pub slice: i64,
    /// The sending acquisition node's name.
    pub source: String,
    /// Per (source, builder) stream: 0, 1, 2, ... (acknowledged by [`Credit`]).
    pub sequence: u64,
    /// What the rows are.
    pub role: PieceRole,
    /// After this message the source has finished every slice through `slice` for this
    /// builder (a watermark: earlier slices need no marker of their own).
    pub end_of_slice: bool,
    /// Singles of this slice the source dropped before sending (its buffer to this builder
    /// was full): the builder marks the slice incomplete.
    #[serde(default)]
    pub dropped_rows: u64,
    /// Energies are keV (an energy table was loaded), so the energy window applies.
    pub energy_in_kev: bool,
}

/// The `app_metadata` of a builder's `PutResult`: the highest sequence processed and the
/// number of batches the sender may have in flight beyond it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credit {
    /// Every message with a sequence up to this one is taken.
    pub acked_sequence: u64,
    /// Messages the sender may send beyond `acked_sequence`.
    pub credits: u32,
}

impl Credit {
    /// As `PutResult.app_metadata`.
    pub fn to_bytes(self) -> Bytes {
        Bytes::from(serde_json::to_vec(&self).unwrap_or_default())
    }

    /// From `PutResult.app_metadata`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).context("a builder acknowledgement that is not a credit")
    }
}

impl PieceMeta {
    /// As `FlightData.app_metadata`.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// From `FlightData.app_metadata`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).with_context(|| {
            format!(
                "FlightData app_metadata is not scandaq piece metadata: {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )
        })
    }
}

/// Encodes Arrow IPC messages of the singles schema for one stream.
pub struct SinglesEncoder {
    generator: IpcDataGenerator,
    tracker: DictionaryTracker,
    options: IpcWriteOptions,
    context: IpcWriteContext,
}

impl Default for SinglesEncoder {
    fn default() -> Self {
        Self {
            generator: IpcDataGenerator::default(),
            tracker: DictionaryTracker::new(false),
            options: IpcWriteOptions::default(),
            context: IpcWriteContext::default(),
        }
    }
}

impl SinglesEncoder {
    /// The schema message that opens a stream.
    pub fn schema_message(&self) -> FlightData {
        let descriptor = arrow_flight::FlightDescriptor::new_path(vec![SINGLES_PATH.into()]);
        FlightData::from(SchemaAsIpc::new(&singles_schema(), &self.options))
            .with_descriptor(descriptor)
    }

    /// Rows `range` of `singles` as one message carrying `meta`.
    pub fn piece(
        &mut self,
        singles: &SorterInput,
        range: std::ops::Range<usize>,
        meta: &PieceMeta,
    ) -> Result<FlightData> {
        let batch = to_record_batch(singles, range)?;
        let (dictionaries, encoded) = self
            .generator
            .encode(&batch, &mut self.tracker, &self.options, &mut self.context)
            .map_err(|e| anyhow!("encoding a singles batch for Flight: {e}"))?;
        if !dictionaries.is_empty() {
            bail!("the singles schema has no dictionaries");
        }
        Ok(FlightData::from(encoded).with_app_metadata(meta.to_bytes()))
    }

    /// A message with no rows (an end-of-slice or end-of-stream marker): an empty record
    /// batch, so every message after the schema is one any Flight client decodes.
    pub fn marker(&mut self, meta: &PieceMeta) -> Result<FlightData> {
        self.piece(&SorterInput::default(), 0..0, meta)
    }
}

/// Rows `range` of `singles` as a record batch of [`singles_schema`] (copied).
pub fn to_record_batch(
    singles: &SorterInput,
    range: std::ops::Range<usize>,
) -> Result<RecordBatch> {
    let r = range;
    RecordBatch::try_new(
        singles_schema(),
        vec![
            Arc::new(Int64Array::from(singles.t_ps[r.clone()].to_vec())),
            Arc::new(UInt32Array::from(singles.channel[r.clone()].to_vec())),
            Arc::new(Float32Array::from(singles.energy_kev[r.clone()].to_vec())),
            Arc::new(UInt16Array::from(singles.flags[r].to_vec())),
        ],
    )
    .map_err(|e| anyhow!("building a singles batch: {e}"))
}

/// The four columns of a received batch (its schema checked against [`singles_schema`]).
pub fn from_record_batch(batch: &RecordBatch) -> Result<SorterInput> {
    if batch.schema().fields() != singles_schema().fields() {
        bail!(
            "a singles batch with schema {:?}; expected t_ps Int64, channel UInt32, energy_kev Float32, flags UInt16",
            batch.schema()
        );
    }
    fn column<T: 'static>(batch: &RecordBatch, k: usize) -> Result<&T> {
        batch
            .column(k)
            .as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| anyhow!("singles column {k} has the wrong type"))
    }
    let has_nulls = batch.columns().iter().any(|c| c.null_count() > 0);
    if has_nulls {
        bail!("a singles batch with null values");
    }
    Ok(SorterInput {
        t_ps: column::<Int64Array>(batch, 0)?.values().to_vec(),
        channel: column::<UInt32Array>(batch, 1)?.values().to_vec(),
        energy_kev: column::<Float32Array>(batch, 2)?.values().to_vec(),
        flags: column::<UInt16Array>(batch, 3)?.values().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_survives_encoding_and_decoding_with_its_metadata() {
        let singles = SorterInput {
            t_ps: vec![1, 2, 3],
            channel: vec![7, 8, 9],
            energy_kev: vec![511.0, 300.0, 0.5],
            flags: vec![0, 1, 2],
        };
        let meta = PieceMeta {
            run: 3,
            slice: 9,
            source: "acq-a".into(),
            sequence: 4,
            role: PieceRole::LeadOut,
            end_of_slice: true,
            dropped_rows: 0,
            energy_in_kev: true,
        };
        let mut enc = SinglesEncoder::default();
        let messages = vec![
            enc.schema_message(),
            enc.piece(&singles, 1..3, &meta).unwrap(),
        ];
        let batches = arrow_flight::utils::flight_data_to_batches(&messages).unwrap();
        let back = from_record_batch(&batches[0]).unwrap();
        assert_eq!(back.t_ps, vec![2, 3]);
        assert_eq!(back.channel, vec![8, 9]);
        assert_eq!(PieceMeta::parse(&messages[1].app_metadata).unwrap(), meta);
        assert!(PieceMeta::parse(b"{\"run\":1}").is_err());
    }
}
