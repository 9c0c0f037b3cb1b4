//! Parquet singles sink harness: writes a singles table (read from a Parquet file, e.g. one a
//! run wrote) with scandaq's `ParquetTableWriter` and the singles encodings at zstd level 1,
//! several times, and prints the median rows/s and the file size.
//! benches/scripts/sink_vs_pyarrow.py runs it beside pyarrow's `write_table` on the same
//! table with the same codec and encodings.
//!
//! Usage: `sink_bench INPUT.parquet [REPEATS]`

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use scandaq_sinks::{ParquetTableWriter, singles};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let input = args
        .next()
        .expect("usage: sink_bench INPUT.parquet [REPEATS]");
    let repeats: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(5);
    let file = std::fs::File::open(&input).expect("open input");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("a Parquet file")
        .with_batch_size(64 << 10)
        .build()
        .expect("reader");
    let schema = singles::schema(false);
    let batches: Vec<RecordBatch> = reader
        .map(|b| {
            let b = b.expect("read");
            let cols = schema
                .fields()
                .iter()
                .map(|f| b.column_by_name(f.name()).expect("singles column").clone())
                .collect();
            RecordBatch::try_new(schema.clone(), cols).expect("singles batch")
        })
        .collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let dir = tempfile::tempdir().expect("temp dir");
    // Both modes alternate in one process, so machine load affects them alike.
    // Modes: whole row groups in parallel (the default), columns in parallel, sequential.
    let modes = [
        ("scandaq", true, true),
        ("scandaq_parallel_columns", false, true),
        ("scandaq_sequential", false, false),
    ];
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    let mut bytes = 0;
    for i in 0..repeats {
        for (mode, &(_, row_groups, columns)) in modes.iter().enumerate() {
            let name = format!("out-{i}-{mode}.parquet");
            let options = scandaq_sinks::WriteOptions {
                parallel_row_groups: row_groups,
                parallel_columns: columns,
                // pyarrow's codec beside it (the table's default is LZ4_RAW).
                compression: scandaq_sinks::Compression::Zstd(1),
                ..singles::write_options()
            };
            let start = Instant::now();
            let mut w =
                ParquetTableWriter::create(dir.path(), &name, schema.clone(), &options, vec![])
                    .expect("create");
            for b in &batches {
                w.write(b).expect("write");
            }
            let rec = w.commit().expect("commit");
            times[mode].push(start.elapsed().as_secs_f64());
            bytes = rec.bytes;
            std::fs::remove_file(dir.path().join(&name)).ok();
        }
    }
    for (mode, &(label, _, _)) in modes.iter().enumerate() {
        let t = &mut times[mode];
        t.sort_by(f64::total_cmp);
        let median = t[t.len() / 2];
        println!(
            "{{\"writer\": \"{label}\", \"rows\": {rows}, \"median_s\": {median:.4}, \"rows_per_s\": {:.0}, \"bytes\": {bytes}}}",
            rows as f64 / median
        );
    }
}
