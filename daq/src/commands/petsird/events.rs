//! A coincidence table read batch by batch as PETSIRD `CoincidenceEvent`s: each row's two
//! channels become detection bins (element x energy bin), ordered as PETSIRD requires
//! (`detectionBin1 >= detectionBin2`, the TOF negated when swapped), its `tof_ps` (plus the
//! delayed window's offset) a TOF bin. [`EventCursor::take_until`] hands out the rows before a
//! time, so a caller walks the table in time blocks holding one batch at a time.

use super::bins::{EnergyBins, TofBins};
use super::layout::Layout;
use anyhow::{Context, Result, anyhow, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type, UInt32Type};
use arrow_array::{Float32Array, Int64Array, RecordBatch, UInt32Array};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use std::path::{Path, PathBuf};

/// Rows read at a time.
const BATCH_ROWS: usize = 64 << 10;

/// The columns an event needs.
const COLUMNS: [&str; 6] = [
    "t1_ps",
    "channel1",
    "channel2",
    "energy1_kev",
    "energy2_kev",
    "tof_ps",
];

/// How rows become events.
pub struct EventMap<'a> {
    /// Channel -> element.
    pub layout: &'a Layout,
    /// Energy bins.
    pub energy: &'a EnergyBins,
    /// TOF bins.
    pub tof: TofBins,
}

/// One `CoincidenceEvent`: two detection bins and a TOF bin.
pub type Event = [u32; 3];

/// What was bent to fit the bins (counted, reported, never dropped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clamped {
    /// Energies outside the energy edges, put in the nearest bin.
    pub energy: u64,
    /// Time differences outside the TOF edges, put in the nearest bin.
    pub tof: u64,
}

/// One batch's columns.
struct Columns {
    t1: Int64Array,
    c1: UInt32Array,
    c2: UInt32Array,
    e1: Float32Array,
    e2: Float32Array,
    tof: Int64Array,
}

impl Columns {
    fn of(b: &RecordBatch, table: &Path) -> Result<Self> {
        let col = |name: &str| {
            b.column_by_name(name).ok_or_else(|| {
                anyhow!(
                    "{}: column {name} missing: not a scandaq coincidence table",
                    table.display()
                )
            })
        };
        let bad = |name: &str| anyhow!("{}: column {name} has an unexpected type", table.display());
        Ok(Self {
            t1: col("t1_ps")?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| bad("t1_ps"))?
                .clone(),
            c1: col("channel1")?
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(|| bad("channel1"))?
                .clone(),
            c2: col("channel2")?
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(|| bad("channel2"))?
                .clone(),
            e1: col("energy1_kev")?
                .as_primitive_opt::<Float32Type>()
                .ok_or_else(|| bad("energy1_kev"))?
                .clone(),
            e2: col("energy2_kev")?
                .as_primitive_opt::<Float32Type>()
                .ok_or_else(|| bad("energy2_kev"))?
                .clone(),
            tof: col("tof_ps")?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| bad("tof_ps"))?
                .clone(),
        })
    }
}

/// A coincidence table (its files, in order) being read in time order.
pub struct EventCursor {
    /// The file being read.
    table: PathBuf,
    reader: ParquetRecordBatchReader,
    /// The files still to read, in order.
    next_files: std::collections::VecDeque<PathBuf>,
    /// Rows handed out before the file being read.
    file_start: u64,
    batch: Option<Columns>,
    pos: usize,
    /// Added to `tof_ps` (the delayed window's offset).
    shift_ps: i64,
    /// Rows the files' footers announce.
    pub rows: u64,
    /// Rows handed out.
    pub read: u64,
    last_t1: i64,
    /// Largest `t1_ps` handed out.
    pub max_t1: Option<i64>,
    /// Values put in the nearest bin.
    pub clamped: Clamped,
}

/// A reader of the event columns of one file, and the rows its footer announces (refused,
/// naming the file, when it is not a readable Parquet file).
fn open_file(table: &Path) -> Result<(ParquetRecordBatchReader, u64)> {
    let file =
        std::fs::File::open(table).with_context(|| format!("cannot open {}", table.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).with_context(|| {
        format!(
            "{} is not a readable Parquet file (truncated or damaged): copy it again from where the run was taken, or, if the run was interrupted, run `scandaq recover` on its directory",
            table.display()
        )
    })?;
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let mask = ProjectionMask::columns(builder.parquet_schema(), COLUMNS);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .with_context(|| format!("reading {}", table.display()))?;
    Ok((reader, rows))
}

impl EventCursor {
    /// Opens a table's files (at least one; every footer is read now, so a damaged file is
    /// refused before anything is written).
    pub fn open(tables: &[PathBuf], shift_ps: i64) -> Result<Self> {
        let Some(first) = tables.first() else {
            bail!("no coincidence table to read");
        };
        let mut rows = 0;
        for table in &tables[1..] {
            rows += open_file(table)?.1;
        }
        let (reader, first_rows) = open_file(first)?;
        Ok(Self {
            table: first.clone(),
            reader,
            next_files: tables[1..].iter().cloned().collect(),
            file_start: 0,
            batch: None,
            pos: 0,
            shift_ps,
            rows: rows + first_rows,
            read: 0,
            last_t1: i64::MIN,
            max_t1: None,
            clamped: Clamped::default(),
        })
    }

    /// The next row's `t1_ps`, loading a batch (and the next file) when needed; `None` at the
    /// end of the last file.
    fn peek_t1(&mut self) -> Result<Option<i64>> {
        loop {
            if let Some(b) = &self.batch
                && self.pos < b.t1.len()
            {
                return Ok(Some(b.t1.value(self.pos)));
            }
            match self.reader.next() {
                Some(b) => {
                    let b = b.with_context(|| {
                        format!(
                            "reading {} (truncated or damaged?): copy it again, or run `scandaq recover` on the run",
                            self.table.display()
                        )
                    })?;
                    self.batch = Some(Columns::of(&b, &self.table)?);
                    self.pos = 0;
                }
                None => {
                    self.batch = None;
                    let Some(next) = self.next_files.pop_front() else {
                        return Ok(None);
                    };
                    self.reader = open_file(&next)?.0;
                    self.table = next;
                    self.file_start = self.read;
                }
            }
        }
    }

    /// Appends to `out` the events of every row with `t1_ps < end_ps`; returns whether rows
    /// remain.
    pub fn take_until(
        &mut self,
        end_ps: i64,
        map: &EventMap<'_>,
        out: &mut Vec<Event>,
    ) -> Result<bool> {
        while let Some(t1) = self.peek_t1()? {
            if t1 >= end_ps {
                return Ok(true);
            }
            if t1 < self.last_t1 {
                bail!(
                    "{}: row {} (t1_ps {t1}) is earlier than the row before it ({}): the table is not in time order, which every scandaq coincidence table is (its files too, one after the other); it was not written by scandaq or was modified",
                    self.table.display(),
                    self.read - self.file_start,
                    self.last_t1
                );
            }
            self.last_t1 = t1;
            let Some(b) = self.batch.as_ref() else {
                bail!(
                    "{}: row {} vanished while it was read",
                    self.table.display(),
                    self.read
                );
            };
            out.push(row_event(
                &self.table,
                self.shift_ps,
                b,
                self.pos,
                map,
                &mut self.clamped,
            )?);
            self.pos += 1;
            self.read += 1;
            self.max_t1 = Some(t1);
        }
        Ok(false)
    }
}

/// The event of row `i` of batch `b` of `table`; energies and time differences outside the
/// edges go to the nearest bin and are counted in `clamped`.
fn row_event(
    table: &Path,
    shift_ps: i64,
    b: &Columns,
    i: usize,
    map: &EventMap<'_>,
    clamped: &mut Clamped,
) -> Result<Event> {
    let element = |ch: u32| {
        map.layout.element(ch).ok_or_else(|| {
            anyhow!(
                "{}: channel {} is not in the run's calib/map_channel.tsv; the table and the map do not belong together",
                table.display(),
                scandaq_core::ChannelId(ch)
            )
        })
    };
    let last_energy = map.energy.count() - 1;
    let mut energy_bin = |e: f32| {
        map.energy.index(e).unwrap_or_else(|| {
            clamped.energy += 1;
            if e < map.energy.edges_kev[0] {
                0
            } else {
                last_energy
            }
        })
    };
    let n_energy = map.energy.count();
    let bin1 = element(b.c1.value(i))? * n_energy + energy_bin(b.e1.value(i));
    let bin2 = element(b.c2.value(i))? * n_energy + energy_bin(b.e2.value(i));
    let dt = b.tof.value(i) + shift_ps;
    let (bin1, bin2, dt) = if bin1 >= bin2 {
        (bin1, bin2, dt)
    } else {
        (bin2, bin1, -dt)
    };
    let tof = map.tof.index(dt).unwrap_or_else(|| {
        clamped.tof += 1;
        if dt < 0 { 0 } else { map.tof.count - 1 }
    });
    Ok([bin1, bin2, tof])
}
