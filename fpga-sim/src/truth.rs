//! Ground truth of the emitted hits: [`HitKind`], the column batch [`TruthBatch`] (one row per
//! emitted hit, in emission order) and its Arrow schema for `truth.parquet`.

use arrow_array::{
    ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray, UInt8Array, UInt32Array,
    UInt64Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Where a hit came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum HitKind {
    /// A 511 keV annihilation photon of a source decay (full or partial deposit).
    True = 0,
    /// An annihilation photon scattered in the object (reserved: the bench preset has no
    /// scattering object, so it never produces this kind).
    Scatter = 1,
    /// A SiPM dark count (with optical crosstalk).
    Dark = 2,
    /// Lu-176 intrinsic background of the LYSO.
    Background = 3,
    /// The Na-22 1274.5 keV prompt gamma.
    PromptGamma = 4,
}

impl HitKind {
    /// Every kind, in code order.
    pub const ALL: [HitKind; 5] = [
        HitKind::True,
        HitKind::Scatter,
        HitKind::Dark,
        HitKind::Background,
        HitKind::PromptGamma,
    ];

    /// Stable snake_case name, as written to `truth.parquet`.
    pub fn name(&self) -> &'static str {
        match self {
            HitKind::True => "true",
            HitKind::Scatter => "scatter",
            HitKind::Dark => "dark",
            HitKind::Background => "background",
            HitKind::PromptGamma => "prompt_gamma",
        }
    }

    /// The kind of a name written by [`HitKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Truth rows, column by column. Row `i` describes the `i`-th hit word emitted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TruthBatch {
    /// True time of the photon's arrival at the crystal face, ps of absolute device time
    /// (frame 0 starts at 0; keeps growing past the 36-bit frameID wrap). No skew, no jitter.
    pub t_true_ps: Vec<i64>,
    /// PETsys channel id.
    pub channel: Vec<u32>,
    /// True deposited energy, keV.
    pub e_true_kev: Vec<f32>,
    /// Decay id: sequential from 0 for source decays; bit 63 set for Lu-176 decays, bit 62
    /// set for dark counts.
    pub decay_id: Vec<u64>,
    /// 1 and 2: the annihilation photons (+u and −u); 3: prompt gamma; 0: dark/background.
    pub photon_id: Vec<u8>,
    /// Origin of the hit.
    pub kind: Vec<HitKind>,
}

impl TruthBatch {
    /// Empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.t_true_ps.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.t_true_ps.is_empty()
    }

    /// Removes every row, keeping the allocations.
    pub fn clear(&mut self) {
        self.t_true_ps.clear();
        self.channel.clear();
        self.e_true_kev.clear();
        self.decay_id.clear();
        self.photon_id.clear();
        self.kind.clear();
    }

    /// Appends one row.
    #[inline]
    pub fn push(
        &mut self,
        t_true_ps: i64,
        channel: u32,
        e_true_kev: f32,
        decay_id: u64,
        photon_id: u8,
        kind: HitKind,
    ) {
        self.t_true_ps.push(t_true_ps);
        self.channel.push(channel);
        self.e_true_kev.push(e_true_kev);
        self.decay_id.push(decay_id);
        self.photon_id.push(photon_id);
        self.kind.push(kind);
    }

    /// Appends every row of `other`.
    pub fn extend_from(&mut self, other: &TruthBatch) {
        self.t_true_ps.extend_from_slice(&other.t_true_ps);
        self.channel.extend_from_slice(&other.channel);
        self.e_true_kev.extend_from_slice(&other.e_true_kev);
        self.decay_id.extend_from_slice(&other.decay_id);
        self.photon_id.extend_from_slice(&other.photon_id);
        self.kind.extend_from_slice(&other.kind);
    }

    /// Arrow schema of `truth.parquet`: `t_true_ps` Int64, `channel` UInt32, `e_true_kev`
    /// Float32, `decay_id` UInt64, `photon_id` UInt8, `kind` Utf8 (all non-null).
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("t_true_ps", DataType::Int64, false),
            Field::new("channel", DataType::UInt32, false),
            Field::new("e_true_kev", DataType::Float32, false),
            Field::new("decay_id", DataType::UInt64, false),
            Field::new("photon_id", DataType::UInt8, false),
            Field::new("kind", DataType::Utf8, false),
        ]))
    }

    /// The rows as an Arrow record batch with [`TruthBatch::schema`].
    pub fn to_record_batch(&self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.t_true_ps.clone())),
            Arc::new(UInt32Array::from(self.channel.clone())),
            Arc::new(Float32Array::from(self.e_true_kev.clone())),
            Arc::new(UInt64Array::from(self.decay_id.clone())),
            Arc::new(UInt8Array::from(self.photon_id.clone())),
            Arc::new(StringArray::from_iter_values(
                self.kind.iter().map(|k| k.name()),
            )),
        ];
        RecordBatch::try_new(Self::schema(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in HitKind::ALL {
            assert_eq!(HitKind::from_name(k.name()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.name())
            );
        }
        assert_eq!(HitKind::PromptGamma as u8, 4);
        assert_eq!(HitKind::from_name("random"), None);
    }

    #[test]
    fn batch_to_arrow() {
        let mut t = TruthBatch::new();
        t.push(5, 64, 511.0, 0, 1, HitKind::True);
        t.push(9, 3, 12.0, 1 << 62, 0, HitKind::Dark);
        let b = t.to_record_batch().unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema(), TruthBatch::schema());
        let kinds = b.column(5).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(kinds.value(1), "dark");
        t.clear();
        assert!(t.is_empty());
    }
}
