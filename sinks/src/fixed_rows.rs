//! Copies the rows of record batches of any size into record batches of one fixed row count,
//! each column in a buffer allocated at exactly that size. A table writer that buffers whole
//! row groups then holds (and frees) only allocations of the same few sizes, which the
//! allocator reuses, instead of the varying sizes of its input batches: with those, glibc's
//! heap grew with the file size (BENCHMARKS.md, issue 16, "Memory").
//!
//! Only flat schemas of fixed-width, non-nullable columns (every singles column) qualify;
//! [`FixedRows::new`] says no to any other.

use arrow_array::{ArrayRef, RecordBatch, make_array};
use arrow_buffer::MutableBuffer;
use arrow_data::ArrayData;
use arrow_schema::{ArrowError, DataType, SchemaRef};

/// Rows gathered into fixed-size columns.
pub(crate) struct FixedRows {
    schema: SchemaRef,
    /// Rows of every batch taken out (the last one of a table excepted).
    rows: usize,
    /// Bytes per value of each column.
    widths: Vec<usize>,
    /// The columns being filled; empty until the first row arrives after a take.
    columns: Vec<MutableBuffer>,
    /// Rows in `columns`.
    len: usize,
}

impl FixedRows {
    /// Gathers batches of `rows` rows of `schema`; `None` when a column is nullable or not of
    /// a fixed width (or `rows` is 0).
    pub(crate) fn new(schema: SchemaRef, rows: usize) -> Option<Self> {
        let widths = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Boolean => None,
                t if !f.is_nullable() => t.primitive_width(),
                _ => None,
            })
            .collect::<Option<Vec<usize>>>()?;
        (rows > 0).then_some(Self {
            schema,
            rows,
            widths,
            columns: Vec::new(),
            len: 0,
        })
    }

    /// Rows gathered so far (fewer than the fixed count).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Copies rows of `batch` from row `start` on until the batch ends or the fixed count is
    /// reached; returns how many were copied. A full batch must be taken before the next fill.
    pub(crate) fn fill(&mut self, batch: &RecordBatch, start: usize) -> Result<usize, ArrowError> {
        if batch.num_columns() != self.widths.len() {
            return Err(ArrowError::SchemaError(format!(
                "a batch of {} columns for a table of {}",
                batch.num_columns(),
                self.widths.len()
            )));
        }
        if self.columns.is_empty() {
            self.columns = self
                .widths
                .iter()
                .map(|w| MutableBuffer::with_capacity(self.rows * w))
                .collect();
        }
        let n = (self.rows - self.len).min(batch.num_rows().saturating_sub(start));
        for ((column, &w), array) in self
            .columns
            .iter_mut()
            .zip(&self.widths)
            .zip(batch.columns())
        {
            let data = array.to_data();
            let from = (data.offset() + start) * w;
            let values = data.buffers().first().map(|b| b.as_slice()).unwrap_or(&[]);
            let bytes = values.get(from..from + n * w).ok_or_else(|| {
                ArrowError::InvalidArgumentError("a column shorter than its batch".into())
            })?;
            column.extend_from_slice(bytes);
        }
        self.len += n;
        Ok(n)
    }

    /// Whether the fixed count of rows is gathered.
    pub(crate) fn is_full(&self) -> bool {
        self.len == self.rows
    }

    /// The gathered rows as a record batch (`None` when there are none); the next rows go
    /// into new columns of the fixed size.
    pub(crate) fn take(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        if self.len == 0 {
            return Ok(None);
        }
        let len = std::mem::take(&mut self.len);
        let arrays = std::mem::take(&mut self.columns)
            .into_iter()
            .zip(self.schema.fields())
            .map(|(values, field)| {
                ArrayData::builder(field.data_type().clone())
                    .len(len)
                    .add_buffer(values.into())
                    .build()
                    .map(make_array)
            })
            .collect::<Result<Vec<ArrayRef>, ArrowError>>()?;
        RecordBatch::try_new(self.schema.clone(), arrays).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Int64Array, UInt16Array};
    use arrow_schema::{Field, Schema};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("t", DataType::Int64, false),
            Field::new("f", DataType::UInt16, false),
        ]))
    }

    fn batch(first: i64, n: usize) -> RecordBatch {
        let t: Vec<i64> = (first..first + n as i64).collect();
        let f: Vec<u16> = t.iter().map(|&v| (v * 7) as u16).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(t)),
                Arc::new(UInt16Array::from(f)),
            ],
        )
        .unwrap()
    }

    /// Batches of sizes around the fixed count (and sliced ones, with an offset) come out as
    /// batches of exactly that count, the last one partial, every row once and in order, each
    /// column in a buffer of the fixed size.
    #[test]
    fn rows_are_split_exactly_at_the_fixed_count_and_none_lost() {
        const ROWS: usize = 100;
        let mut fixed = FixedRows::new(schema(), ROWS).unwrap();
        let mut out = Vec::new();
        let mut next = 0i64;
        for n in [1usize, 99, 100, 101, 0, 250, 37, 199] {
            // A slice of a larger batch: the copy starts at the slice's offset.
            let b = batch(next - 3, n + 5).slice(3, n);
            next += n as i64;
            let mut start = 0;
            while start < b.num_rows() {
                start += fixed.fill(&b, start).unwrap();
                if fixed.is_full() {
                    out.push(fixed.take().unwrap().unwrap());
                }
                assert!(fixed.len() < ROWS);
            }
        }
        let rest = fixed.len();
        out.extend(fixed.take().unwrap());
        assert!(fixed.take().unwrap().is_none(), "nothing left twice");
        let total = next as usize;
        assert_eq!(rest, total % ROWS);
        assert_eq!(out.len(), total.div_ceil(ROWS));
        for (i, b) in out.iter().enumerate() {
            let want = if i + 1 < out.len() { ROWS } else { rest };
            assert_eq!(b.num_rows(), want, "batch {i}");
            let t = b.column(0).to_data();
            // Arrow rounds allocations up to 64 bytes.
            let one_size = (ROWS * 8).next_multiple_of(64);
            assert_eq!(t.buffers()[0].capacity(), one_size, "one allocation size");
        }
        let t: Vec<i64> = out
            .iter()
            .flat_map(|b| {
                let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                a.values().to_vec()
            })
            .collect();
        assert_eq!(t, (0..total as i64).collect::<Vec<_>>());
        let f: Vec<u16> = out
            .iter()
            .flat_map(|b| {
                let a = b.column(1).as_any().downcast_ref::<UInt16Array>().unwrap();
                a.values().to_vec()
            })
            .collect();
        assert_eq!(f, t.iter().map(|&v| (v * 7) as u16).collect::<Vec<_>>());
        assert!(out.iter().all(|b| b.column(1).null_count() == 0));
    }

    #[test]
    fn nullable_or_variable_width_columns_do_not_qualify() {
        let nullable = Arc::new(Schema::new(vec![Field::new("t", DataType::Int64, true)]));
        assert!(FixedRows::new(nullable, 10).is_none());
        let text = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        assert!(FixedRows::new(text, 10).is_none());
        assert!(FixedRows::new(schema(), 0).is_none());
    }
}
