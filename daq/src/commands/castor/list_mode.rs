//! Writing one CASToR list-mode pair: a coincidence table (its files, in order) streamed into a
//! `.cdf` (event time, TOF, the two crystal ids) and its `.cdh` header.

use super::ListModeExport;
use anyhow::{Context, Result, anyhow, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt32Type};
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use scandaq_sinks::castor::{CdfEvent, CdfWriter, CdhHeader, CrystalIds, TofHeader, write_atomic};
use std::path::{Path, PathBuf};

/// What every list-mode pair of an export shares.
pub(super) struct ListModeWriter<'a> {
    /// Output directory.
    pub(super) out: &'a Path,
    /// The export's base name.
    pub(super) name: &'a str,
    /// The scanner's name (`scandaq_NAME`).
    pub(super) scanner: &'a str,
    pub(super) ids: &'a CrystalIds,
    /// Time origin, ps.
    pub(super) t0_ps: i64,
    /// The run's last time, ps, when the manifest has it.
    pub(super) last_t_ps: Option<i64>,
    /// TOF resolution FWHM, ps (None: no TOF field).
    pub(super) fwhm_ps: Option<f64>,
    /// TOF measurement range, ps (twice the coincidence window), when recorded.
    pub(super) tof_range_ps: Option<f64>,
}

impl ListModeWriter<'_> {
    /// Writes a coincidence table (its files, in order) as `base.cdf` + `base.cdh`;
    /// `shift_ps` is added to the TOF (the delay of a delayed window) and `what` says what the
    /// table holds.
    pub(super) fn write(
        &self,
        table: &[PathBuf],
        base: &str,
        shift_ps: i64,
        what: &str,
    ) -> Result<ListModeExport> {
        let cdf = self.out.join(format!("{base}.cdf"));
        let (events, bytes, t_max) = self.write_cdf(table, &cdf, shift_ps)?;
        let t0 = self.t0_ps;
        let t_end = self.last_t_ps.or(t_max).unwrap_or(t0);
        let header = CdhHeader {
            scanner_name: self.scanner.to_string(),
            data_filename: format!("{base}.cdf"),
            number_of_events: events,
            start_time_s: 0.0,
            duration_s: ((t_end - t0).max(0) as f64 * 1e-12 * 1e6).round() / 1e6,
            tof: self.fwhm_ps.map(|f| TofHeader {
                resolution_ps: f,
                measurement_range_ps: self.tof_range_ps.unwrap_or(2.0 * 4000.0),
            }),
            comments: self.comments(table, shift_ps, what),
        };
        let cdh = self.out.join(format!("{base}.cdh"));
        write_atomic(&cdh, header.to_text().as_bytes())?;
        Ok(ListModeExport {
            header: cdh,
            data: cdf,
            events,
            bytes,
        })
    }

    /// The `.cdh` comments: provenance, time origin, crystal ids and (with TOF) its sign.
    fn comments(&self, table: &[PathBuf], shift_ps: i64, what: &str) -> Vec<String> {
        let (t0, name) = (self.t0_ps, self.name);
        let mut comments = vec![
            format!(
                "written by scandaq {} export castor from {} ({what})",
                env!("CARGO_PKG_VERSION"),
                describe(table)
            ),
            format!(
                "time origin: t_ps {t0} of the run (its first single); event time = floor((t1_ps - t0) / 1e9) ms"
            ),
            format!(
                "crystal ids: {name}_crystal_ids.tsv (id = rank of the PETsys channel id among the channels of calib/map_channel.tsv); crystal 1 = channel1 (window opener), crystal 2 = channel2"
            ),
        ];
        if self.fwhm_ps.is_some() {
            comments.push(if shift_ps == 0 {
                "TOF = t(crystal 1) - t(crystal 2) = tof_ps of the coincidence table (ps; <= 0 since crystal 1 opened the window)".into()
            } else {
                format!("TOF = tof_ps + {shift_ps} (the delay): t(crystal 1) - t(crystal 2) on the prompt window's scale")
            });
        }
        comments
    }

    /// Streams a coincidence table's files, in order, into one `.cdf`; returns (events,
    /// bytes, largest t2_ps).
    fn write_cdf(
        &self,
        table: &[PathBuf],
        cdf: &Path,
        shift_ps: i64,
    ) -> Result<(u64, u64, Option<i64>)> {
        let mut writer = CdfWriter::create(cdf, self.fwhm_ps.is_some())?;
        let mut t_max = None;
        for file in table {
            let mut stream = CdfStream {
                list_mode: self,
                table: file,
                shift_ps,
                writer,
                t_max,
            };
            stream.write_file()?;
            (writer, t_max) = (stream.writer, stream.t_max);
        }
        let (events, bytes) = writer.commit()?;
        Ok((events, bytes, t_max))
    }

    /// The event time of an opener at `t1_ps`: whole milliseconds from the time origin.
    fn time_ms(&self, table: &Path, t1_ps: i64) -> Result<u32> {
        let t0_ps = self.t0_ps;
        let dt = t1_ps - t0_ps;
        u32::try_from(dt.div_euclid(1_000_000_000)).map_err(|_| {
            anyhow!(
                "{}: event at t1_ps {} is {} ms from the acquisition start (t_ps {t0_ps}): outside CASToR's u32 millisecond range",
                table.display(),
                t1_ps,
                dt.div_euclid(1_000_000_000)
            )
        })
    }

    /// The crystal id of channel `ch` (refused when the map does not have it).
    fn crystal_id(&self, table: &Path, ch: u32) -> Result<u32> {
        self.ids.id_of(ch).ok_or_else(|| {
            anyhow!(
                "{}: channel {} is not in the run's calib/map_channel.tsv, so it has no crystal id; the table and the map do not belong together",
                table.display(),
                scandaq_core::ChannelId(ch)
            )
        })
    }
}

/// One coincidence table being streamed into its `.cdf`.
struct CdfStream<'a> {
    list_mode: &'a ListModeWriter<'a>,
    table: &'a Path,
    /// Added to the TOF, ps.
    shift_ps: i64,
    writer: CdfWriter,
    /// Largest `t2_ps` so far.
    t_max: Option<i64>,
}

impl CdfStream<'_> {
    /// Writes the events of the whole file, checked against its footer's row count.
    fn write_file(&mut self) -> Result<()> {
        let table = self.table;
        let file = std::fs::File::open(table)
            .with_context(|| format!("cannot open {}", table.display()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{} is not a readable Parquet file", table.display()))?;
        let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
        let reader = builder.with_batch_size(64 << 10).build()?;
        let before = self.writer.events();
        for batch in reader {
            let b = batch.with_context(|| format!("reading {}", table.display()))?;
            self.write_batch(&b)?;
        }
        let written = self.writer.events() - before;
        if written != rows {
            bail!(
                "{}: wrote {written} events but the table's footer says {rows} rows",
                table.display()
            );
        }
        Ok(())
    }

    /// Writes the events of one record batch.
    fn write_batch(&mut self, b: &RecordBatch) -> Result<()> {
        let table = self.table;
        let col = |name: &str| column(b, name, table);
        let (t1, t2, c1, c2, tf) = (
            col("t1_ps")?,
            col("t2_ps")?,
            col("channel1")?,
            col("channel2")?,
            col("tof_ps")?,
        );
        let bad = || anyhow!("{}: unexpected column types", table.display());
        let t1 = t1.as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
        let t2 = t2.as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
        let c1 = c1.as_primitive_opt::<UInt32Type>().ok_or_else(bad)?;
        let c2 = c2.as_primitive_opt::<UInt32Type>().ok_or_else(bad)?;
        let tf = tf.as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
        let lm = self.list_mode;
        let tof = lm.fwhm_ps.is_some();
        for i in 0..b.num_rows() {
            let time_ms = lm.time_ms(table, t1.value(i))?;
            self.t_max = Some(self.t_max.map_or(t2.value(i), |m| m.max(t2.value(i))));
            self.writer.push(&CdfEvent {
                time_ms,
                tof_ps: tof.then(|| (tf.value(i) + self.shift_ps) as f32),
                id1: lm.crystal_id(table, c1.value(i))?,
                id2: lm.crystal_id(table, c2.value(i))?,
            })?;
        }
        Ok(())
    }
}

/// How a table's files are named in a comment: the file, or the first and last of several.
fn describe(table: &[PathBuf]) -> String {
    match table {
        [] => "no file".into(),
        [one] => one.display().to_string(),
        [first, .., last] => format!(
            "{} .. {} ({} files)",
            first.display(),
            last.file_name().unwrap_or_default().to_string_lossy(),
            table.len()
        ),
    }
}

/// Column `name` of a batch of `table`.
fn column(b: &RecordBatch, name: &str, table: &Path) -> Result<ArrayRef> {
    b.column_by_name(name).cloned().ok_or_else(|| {
        anyhow!(
            "{}: column {name} missing: not a scandaq coincidence table",
            table.display()
        )
    })
}
