//! Column chunks encoded straight from Arrow's value buffers ([`DirectColumns`]).
//!
//! parquet-rs's Arrow writer (`ArrowColumnWriter`) first computes a column's levels, which
//! for a flat, non-nullable column are just the list of every row's index (8 bytes per value,
//! built for every write), then gathers the values through that list into a new buffer
//! before encoding them. Every column of the singles and coincidence tables is flat,
//! non-nullable and primitive, so that work buys nothing: here such a column goes to
//! parquet's own column writer as one slice per batch, with the same properties, encodings
//! and statistics, and the same bytes come out (checked by
//! `parquet_table::tests::direct_columns_write_the_same_file_as_arrows_writer`). Any other
//! column keeps the Arrow writer.

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_schema::{DataType, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_writer::ArrowColumnChunk;
use parquet::column::writer::{ColumnCloseResult, ColumnWriter, get_column_writer};
use parquet::errors::{ParquetError, Result};
use parquet::file::properties::WriterPropertiesPtr;
use parquet::file::writer::{
    SerializedFileWriter, SerializedPageWriter, SerializedRowGroupWriter, TrackedWrite,
};
use parquet::schema::types::ColumnDescPtr;
use std::io::Write;

/// A column chunk encoded and ready to be spliced into its row group.
pub(crate) enum EncodedChunk {
    /// Written by parquet's Arrow writer.
    Arrow(ArrowColumnChunk),
    /// Written by [`DirectColumns::encode`]: the chunk's pages, dictionary first, and what
    /// closing its writer returned (offsets from the start of `bytes`).
    Direct {
        bytes: Bytes,
        close: ColumnCloseResult,
    },
}

impl EncodedChunk {
    /// Appends the chunk to `row_group` (the next column in schema order).
    pub(crate) fn append_to_row_group<W: Write + Send>(
        self,
        row_group: &mut SerializedRowGroupWriter<'_, W>,
    ) -> Result<()> {
        match self {
            EncodedChunk::Arrow(chunk) => chunk.append_to_row_group(row_group),
            EncodedChunk::Direct { bytes, close } => row_group.append_column(&bytes, close),
        }
    }
}

/// The columns of a table that are encoded directly, with the file's writer properties and
/// their descriptors.
#[derive(Clone, Debug)]
pub(crate) struct DirectColumns {
    props: WriterPropertiesPtr,
    /// Per field: its leaf's descriptor when the field is written directly.
    descriptors: Vec<Option<ColumnDescPtr>>,
}

impl DirectColumns {
    /// The fields of `schema`, as `writer` lays them out, that can be encoded directly:
    /// non-nullable, one leaf each, of a type in [`write_values`].
    pub(crate) fn of<W: Write + Send>(
        writer: &SerializedFileWriter<W>,
        schema: &SchemaRef,
    ) -> Self {
        let leaves = writer.schema_descr();
        let flat = leaves.num_columns() == schema.fields().len();
        let descriptors = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let descr = leaves.columns().get(i).filter(|_| flat)?;
                let direct = !field.is_nullable()
                    && descr.max_def_level() == 0
                    && descr.max_rep_level() == 0
                    && supported(field.data_type());
                direct.then(|| descr.clone())
            })
            .collect();
        Self {
            props: writer.properties().clone(),
            descriptors,
        }
    }

    /// Whether field `i` is encoded directly.
    pub(crate) fn has(&self, i: usize) -> bool {
        self.descriptors.get(i).is_some_and(Option::is_some)
    }

    /// Encodes field `i` (one of [`DirectColumns::has`]) from `arrays`, its column in each of
    /// a row group's batches, in order.
    pub(crate) fn encode<'a>(
        &self,
        i: usize,
        arrays: impl Iterator<Item = &'a dyn Array>,
    ) -> Result<EncodedChunk> {
        let descr =
            self.descriptors.get(i).cloned().flatten().ok_or_else(|| {
                ParquetError::General(format!("column {i} is not written directly"))
            })?;
        let mut sink = TrackedWrite::new(Vec::new());
        let close = {
            let pages = Box::new(SerializedPageWriter::new(&mut sink));
            let mut writer = get_column_writer(descr, self.props.clone(), pages);
            for array in arrays {
                write_values(&mut writer, array)?;
            }
            writer.close()?
        };
        Ok(EncodedChunk::Direct {
            bytes: Bytes::from(sink.into_inner()?),
            close,
        })
    }
}

/// Whether [`write_values`] takes columns of `data_type`.
fn supported(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int64
            | DataType::UInt64
            | DataType::Int32
            | DataType::UInt32
            | DataType::UInt16
            | DataType::UInt8
            | DataType::Float32
            | DataType::Float64
    )
}

/// Writes `array`'s values (no nulls) to `writer`, converted as parquet's Arrow writer does:
/// unsigned 32- and 64-bit integers reinterpreted as the signed physical type, narrower ones
/// widened to INT32.
fn write_values(writer: &mut ColumnWriter<'_>, array: &dyn Array) -> Result<usize> {
    if array.null_count() > 0 {
        return Err(ParquetError::General(
            "a column written directly has nulls".into(),
        ));
    }
    match (writer, array.data_type()) {
        (ColumnWriter::Int64ColumnWriter(w), DataType::Int64) => {
            w.write_batch(array.as_primitive::<Int64Type>().values(), None, None)
        }
        (ColumnWriter::Int64ColumnWriter(w), DataType::UInt64) => {
            let values = array.as_primitive::<UInt64Type>().values();
            w.write_batch(values.inner().typed_data::<i64>(), None, None)
        }
        (ColumnWriter::Int32ColumnWriter(w), DataType::Int32) => {
            w.write_batch(array.as_primitive::<Int32Type>().values(), None, None)
        }
        (ColumnWriter::Int32ColumnWriter(w), DataType::UInt32) => {
            let values = array.as_primitive::<UInt32Type>().values();
            w.write_batch(values.inner().typed_data::<i32>(), None, None)
        }
        (ColumnWriter::Int32ColumnWriter(w), DataType::UInt16) => {
            let values = array.as_primitive::<UInt16Type>().values();
            let widened: Vec<i32> = values.iter().map(|&v| i32::from(v)).collect();
            w.write_batch(&widened, None, None)
        }
        (ColumnWriter::Int32ColumnWriter(w), DataType::UInt8) => {
            let values = array.as_primitive::<UInt8Type>().values();
            let widened: Vec<i32> = values.iter().map(|&v| i32::from(v)).collect();
            w.write_batch(&widened, None, None)
        }
        (ColumnWriter::FloatColumnWriter(w), DataType::Float32) => {
            w.write_batch(array.as_primitive::<Float32Type>().values(), None, None)
        }
        (ColumnWriter::DoubleColumnWriter(w), DataType::Float64) => {
            w.write_batch(array.as_primitive::<Float64Type>().values(), None, None)
        }
        (_, data_type) => Err(ParquetError::General(format!(
            "no direct encoding of {data_type} for this column"
        ))),
    }
}
