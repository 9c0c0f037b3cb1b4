//! Ground truth of the emitted hits: [`HitKind`], the column batch [`TruthBatch`] (one row per
//! emitted hit, in emission order) and its Arrow schemas for `truth.parquet`: the bench
//! layout ([`TruthBatch::schema`], six columns) and the ring layout
//! ([`TruthBatch::schema_extended`], the same six columns followed by the [`TruthExtra`] ones).

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
    /// First crystal deposit of an annihilation photon that Compton-scattered in the object
    /// (ring preset with a phantom; the bench preset never produces this kind).
    Scatter = 1,
    /// A SiPM dark count (with optical crosstalk).
    Dark = 2,
    /// Lu-176 intrinsic background of the LYSO.
    Background = 3,
    /// The Na-22 1274.5 keV prompt gamma.
    PromptGamma = 4,
    /// A further crystal deposit (after the first) of an annihilation photon that scattered
    /// from crystal to crystal (ring preset's inter-crystal scatter; never produced by bench).
    InterCrystal = 5,
}

impl HitKind {
    /// Every kind, in code order.
    pub const ALL: [HitKind; 6] = [
        HitKind::True,
        HitKind::Scatter,
        HitKind::Dark,
        HitKind::Background,
        HitKind::PromptGamma,
        HitKind::InterCrystal,
    ];

    /// Stable snake_case name, as written to `truth.parquet`.
    pub fn name(&self) -> &'static str {
        match self {
            HitKind::True => "true",
            HitKind::Scatter => "scatter",
            HitKind::Dark => "dark",
            HitKind::Background => "background",
            HitKind::PromptGamma => "prompt_gamma",
            HitKind::InterCrystal => "inter_crystal",
        }
    }

    /// The kind of a name written by [`HitKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The ring preset's extra truth of one hit (all zero for the bench preset and for dark
/// counts and background hits).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TruthExtra {
    /// 0: the photon's first crystal deposit; 1, 2: further crystals it scattered into.
    pub interaction: u8,
    /// Compton scatters of the photon in the object (phantom) before it reached the ring.
    pub n_scatter: u8,
    /// Energy of the photon when it reached the ring, keV (511 unless object-scattered).
    pub e_photon_kev: f32,
    /// The photon's total deposited energy over all its crystals, before threshold and dead
    /// time, keV (`== e_photon_kev` for a photopeak photon).
    pub photon_dep_kev: f32,
    /// Annihilation point, mm.
    pub src_mm: [f32; 3],
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
    /// [`TruthExtra::interaction`] per row (0 for bench).
    pub interaction: Vec<u8>,
    /// [`TruthExtra::n_scatter`] per row (0 for bench).
    pub n_scatter: Vec<u8>,
    /// [`TruthExtra::e_photon_kev`] per row (0 for bench).
    pub e_photon_kev: Vec<f32>,
    /// [`TruthExtra::photon_dep_kev`] per row (0 for bench).
    pub photon_dep_kev: Vec<f32>,
    /// Annihilation point x, mm (0 for bench).
    pub src_x_mm: Vec<f32>,
    /// Annihilation point y, mm (0 for bench).
    pub src_y_mm: Vec<f32>,
    /// Annihilation point z, mm (0 for bench).
    pub src_z_mm: Vec<f32>,
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
        self.interaction.clear();
        self.n_scatter.clear();
        self.e_photon_kev.clear();
        self.photon_dep_kev.clear();
        self.src_x_mm.clear();
        self.src_y_mm.clear();
        self.src_z_mm.clear();
    }

    /// Appends one row (extra columns zero).
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
        self.push_extra(
            t_true_ps,
            channel,
            e_true_kev,
            decay_id,
            photon_id,
            kind,
            &TruthExtra::default(),
        );
    }

    /// Appends one row with its extra columns.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn push_extra(
        &mut self,
        t_true_ps: i64,
        channel: u32,
        e_true_kev: f32,
        decay_id: u64,
        photon_id: u8,
        kind: HitKind,
        extra: &TruthExtra,
    ) {
        self.t_true_ps.push(t_true_ps);
        self.channel.push(channel);
        self.e_true_kev.push(e_true_kev);
        self.decay_id.push(decay_id);
        self.photon_id.push(photon_id);
        self.kind.push(kind);
        self.interaction.push(extra.interaction);
        self.n_scatter.push(extra.n_scatter);
        self.e_photon_kev.push(extra.e_photon_kev);
        self.photon_dep_kev.push(extra.photon_dep_kev);
        self.src_x_mm.push(extra.src_mm[0]);
        self.src_y_mm.push(extra.src_mm[1]);
        self.src_z_mm.push(extra.src_mm[2]);
    }

    /// The extra columns of row `i`.
    pub fn extra(&self, i: usize) -> TruthExtra {
        TruthExtra {
            interaction: self.interaction[i],
            n_scatter: self.n_scatter[i],
            e_photon_kev: self.e_photon_kev[i],
            photon_dep_kev: self.photon_dep_kev[i],
            src_mm: [self.src_x_mm[i], self.src_y_mm[i], self.src_z_mm[i]],
        }
    }

    /// Appends every row of `other`.
    pub fn extend_from(&mut self, other: &TruthBatch) {
        self.t_true_ps.extend_from_slice(&other.t_true_ps);
        self.channel.extend_from_slice(&other.channel);
        self.e_true_kev.extend_from_slice(&other.e_true_kev);
        self.decay_id.extend_from_slice(&other.decay_id);
        self.photon_id.extend_from_slice(&other.photon_id);
        self.kind.extend_from_slice(&other.kind);
        self.interaction.extend_from_slice(&other.interaction);
        self.n_scatter.extend_from_slice(&other.n_scatter);
        self.e_photon_kev.extend_from_slice(&other.e_photon_kev);
        self.photon_dep_kev.extend_from_slice(&other.photon_dep_kev);
        self.src_x_mm.extend_from_slice(&other.src_x_mm);
        self.src_y_mm.extend_from_slice(&other.src_y_mm);
        self.src_z_mm.extend_from_slice(&other.src_z_mm);
    }

    /// Arrow schema of `truth.parquet`: `t_true_ps` Int64, `channel` UInt32, `e_true_kev`
    /// Float32, `decay_id` UInt64, `photon_id` UInt8, `kind` Utf8 (all non-null).
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(Self::base_fields()))
    }

    fn base_fields() -> Vec<Field> {
        vec![
            Field::new("t_true_ps", DataType::Int64, false),
            Field::new("channel", DataType::UInt32, false),
            Field::new("e_true_kev", DataType::Float32, false),
            Field::new("decay_id", DataType::UInt64, false),
            Field::new("photon_id", DataType::UInt8, false),
            Field::new("kind", DataType::Utf8, false),
        ]
    }

    /// Arrow schema of the ring preset's `truth.parquet`: the [`TruthBatch::schema`] columns,
    /// then `interaction` UInt8, `n_scatter` UInt8, `e_photon_kev` Float32, `photon_dep_kev`
    /// Float32, `src_x_mm`, `src_y_mm`, `src_z_mm` Float32 (all non-null).
    pub fn schema_extended() -> SchemaRef {
        let mut f = Self::base_fields();
        f.extend([
            Field::new("interaction", DataType::UInt8, false),
            Field::new("n_scatter", DataType::UInt8, false),
            Field::new("e_photon_kev", DataType::Float32, false),
            Field::new("photon_dep_kev", DataType::Float32, false),
            Field::new("src_x_mm", DataType::Float32, false),
            Field::new("src_y_mm", DataType::Float32, false),
            Field::new("src_z_mm", DataType::Float32, false),
        ]);
        Arc::new(Schema::new(f))
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

    /// The rows as an Arrow record batch with [`TruthBatch::schema_extended`].
    pub fn to_record_batch_extended(&self) -> Result<RecordBatch, ArrowError> {
        let mut columns = self.to_record_batch()?.columns().to_vec();
        columns.extend([
            Arc::new(UInt8Array::from(self.interaction.clone())) as ArrayRef,
            Arc::new(UInt8Array::from(self.n_scatter.clone())),
            Arc::new(Float32Array::from(self.e_photon_kev.clone())),
            Arc::new(Float32Array::from(self.photon_dep_kev.clone())),
            Arc::new(Float32Array::from(self.src_x_mm.clone())),
            Arc::new(Float32Array::from(self.src_y_mm.clone())),
            Arc::new(Float32Array::from(self.src_z_mm.clone())),
        ]);
        RecordBatch::try_new(Self::schema_extended(), columns)
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
        let x = t.to_record_batch_extended().unwrap();
        assert_eq!(x.num_columns(), 13);
        assert_eq!(x.schema().field(6).name(), "interaction");
        t.clear();
        assert!(t.is_empty());
    }
}
