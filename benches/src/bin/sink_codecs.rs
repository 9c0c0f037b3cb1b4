//! Codec and encoding trade-offs of the singles and coincidence tables: writes a table read
//! from a Parquet file (one a run wrote) with scandaq's `ParquetTableWriter` under several
//! layouts (LZ4_RAW, zstd levels, no compression, channel ids and flags plain or dictionary, row-group
//! sizes),
//! alternating them, and prints per layout the median wall time, CPU time of the process
//! (all threads) and the file size relative to today's default. BENCHMARKS.md quotes it.
//!
//! Usage: `sink_codecs singles|coincidences INPUT.parquet [REPEATS]`

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use scandaq_sinks::{Compression, ParquetTableWriter, WriteOptions, coincidences, singles};
use std::time::Instant;

/// CPU time of this process so far (user + system, all threads), seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) close with ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// The table at `input` with exactly the columns of `schema`, in 64 k-row batches.
fn read_table(input: &str, schema: &SchemaRef) -> Result<Vec<RecordBatch>, String> {
    let file = std::fs::File::open(input).map_err(|e| format!("cannot open: {e}"))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format!("not a Parquet file: {e}"))?
        .with_batch_size(64 << 10)
        .build()
        .map_err(|e| format!("cannot read: {e}"))?;
    reader
        .map(|b| {
            let b = b.map_err(|e| format!("cannot read: {e}"))?;
            let cols = schema
                .fields()
                .iter()
                .map(|f| {
                    b.column_by_name(f.name()).cloned().ok_or_else(|| {
                        format!("no column {}: give a table this scandaq wrote", f.name())
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(schema.clone(), cols).map_err(|e| format!("wrong columns: {e}"))
        })
        .collect()
}

/// Stops the tool on a failed write to `what`.
fn fail(what: &str, e: &dyn std::fmt::Display) -> ! {
    eprintln!("error: writing {what}: {e}");
    std::process::exit(1);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let table = args.next().unwrap_or_default();
    let (Some(input), true) = (args.next(), table == "singles" || table == "coincidences") else {
        eprintln!("usage: sink_codecs singles|coincidences INPUT.parquet [REPEATS]");
        std::process::exit(2);
    };
    let repeats: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(5);
    let (schema, base) = if table == "singles" {
        (singles::schema(false), singles::write_options())
    } else {
        (coincidences::schema(), coincidences::write_options())
    };
    let batches = match read_table(&input, &schema) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {input}: {e}");
            std::process::exit(1);
        }
    };
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let without = |cols: &[&'static str], name: &str| -> Vec<&'static str> {
        cols.iter().copied().filter(|c| *c != name).collect()
    };
    let channel_plain = |o: &WriteOptions| WriteOptions {
        dictionary_columns: without(&without(&o.dictionary_columns, "channel"), "channel1")
            .into_iter()
            .filter(|c| *c != "channel2")
            .collect(),
        ..o.clone()
    };
    let layouts: Vec<(&str, WriteOptions)> = vec![
        ("default (LZ4_RAW)", base.clone()),
        (
            "zstd 1",
            WriteOptions {
                compression: Compression::Zstd(1),
                ..base.clone()
            },
        ),
        (
            "zstd 3",
            WriteOptions {
                compression: Compression::Zstd(3),
                ..base.clone()
            },
        ),
        (
            "zstd 9",
            WriteOptions {
                compression: Compression::Zstd(9),
                ..base.clone()
            },
        ),
        (
            "uncompressed",
            WriteOptions {
                compression: Compression::None,
                ..base.clone()
            },
        ),
        ("channel ids plain (LZ4_RAW)", channel_plain(&base)),
        (
            "channel ids delta (LZ4_RAW)",
            WriteOptions {
                delta_columns: [
                    base.delta_columns.clone(),
                    vec!["channel", "channel1", "channel2"],
                ]
                .concat(),
                ..channel_plain(&base)
            },
        ),
        (
            "channel ids byte-stream-split (LZ4_RAW)",
            WriteOptions {
                byte_stream_split_columns: [
                    base.byte_stream_split_columns.clone(),
                    vec!["channel", "channel1", "channel2"],
                ]
                .concat(),
                ..channel_plain(&base)
            },
        ),
        (
            "flags plain (LZ4_RAW)",
            WriteOptions {
                dictionary_columns: without(&base.dictionary_columns, "flags"),
                ..base.clone()
            },
        ),
        (
            "row groups of 1 M rows",
            WriteOptions {
                row_group_rows: 1 << 20,
                ..base.clone()
            },
        ),
    ];
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail("a temporary directory", &e));
    let mut wall = vec![Vec::new(); layouts.len()];
    let mut cpu = vec![Vec::new(); layouts.len()];
    let mut bytes = vec![0u64; layouts.len()];
    for i in 0..repeats {
        for (k, (_, options)) in layouts.iter().enumerate() {
            let name = format!("out-{i}-{k}.parquet");
            let (t0, c0) = (Instant::now(), cpu_seconds());
            let mut w =
                ParquetTableWriter::create(dir.path(), &name, schema.clone(), options, vec![])
                    .unwrap_or_else(|e| fail(&name, &e));
            for b in &batches {
                w.write(b).unwrap_or_else(|e| fail(&name, &e));
            }
            let rec = w.commit().unwrap_or_else(|e| fail(&name, &e));
            wall[k].push(t0.elapsed().as_secs_f64());
            cpu[k].push(cpu_seconds() - c0);
            bytes[k] = rec.bytes;
            std::fs::remove_file(dir.path().join(&name)).ok();
        }
    }
    println!("{table}: {rows} rows, median of {repeats}, layouts alternated");
    println!("| layout | wall | CPU | M rows/s (wall) | bytes/row | size vs default |");
    println!("|---|---|---|---|---|---|");
    for (k, (label, _)) in layouts.iter().enumerate() {
        let w = median(&mut wall[k]);
        let c = median(&mut cpu[k]);
        println!(
            "| {label} | {w:.3} s | {c:.3} s | {:.1} | {:.2} | {:.2}x |",
            rows as f64 / w / 1e6,
            bytes[k] as f64 / rows as f64,
            bytes[k] as f64 / bytes[0] as f64
        );
    }
}
