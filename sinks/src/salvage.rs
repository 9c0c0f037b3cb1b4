//! Salvage of a Parquet table cut short before its footer (a killed writer's `.inprogress`
//! file): its page headers are walked from the `PAR1` magic on, the pages are cut into column
//! chunks and row groups (a dictionary-encoded column's chunk starts with its dictionary page,
//! which fixes the row count of each row group), every row group whose column chunks are all
//! complete is decoded through a footer rebuilt in memory from the table's known schema, and
//! the rows are rewritten through [`ParquetTableWriter`]. Used by `scandaq recover`
//! (docs/formats.md §6); tested against files this crate's writer produced, cut at every page.

use crate::error::SinkError;
use crate::manifest::FileRecord;
use crate::{ParquetTableWriter, WriteOptions, coincidences, petlink_tables, singles};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowSchemaConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{
    ColumnChunkMetaData, FileMetaData, ParquetMetaData, RowGroupMetaData,
};
use parquet::schema::types::SchemaDescriptor;
use std::path::Path;
use std::sync::Arc;

/// The tables salvage knows the schema of, by file-name prefix: candidate schemas (the
/// singles table has eight: optional positions, photon and raw columns), the write options
/// and the table's name.
pub fn table_schemas(name: &str) -> Option<(Vec<SchemaRef>, WriteOptions, &'static str)> {
    if name.starts_with("singles-") {
        Some((singles::all_schemas(), singles::write_options(), "singles"))
    } else if name.starts_with("coincidences-") || name.starts_with("delayed-") {
        Some((
            vec![coincidences::schema()],
            coincidences::write_options(),
            if name.starts_with("delayed-") {
                "delayed"
            } else {
                "coincidences"
            },
        ))
    } else if name.starts_with("petlink_events-") {
        Some((
            vec![petlink_tables::events_schema()],
            petlink_tables::events_write_options(),
            "petlink_events",
        ))
    } else if name.starts_with("petlink_singles-") {
        Some((
            vec![petlink_tables::singles_schema()],
            petlink_tables::singles_write_options(),
            "petlink_singles",
        ))
    } else {
        None
    }
}

/// The dictionary-encoded columns a file of `table` may have: this build's layout, then
/// earlier builds' (the singles' flags were a dictionary until 2026-12-07).
fn dictionary_layouts(table: &str, options: &WriteOptions) -> Vec<Vec<&'static str>> {
    let mut layouts = vec![options.dictionary_columns.clone()];
    if table == "singles" {
        layouts.push(
            [
                options.dictionary_columns.as_slice(),
                singles::FORMER_DICTIONARY_COLUMNS,
            ]
            .concat(),
        );
    }
    layouts
}

// Page headers (Thrift compact protocol), just what walking a footerless file needs.

const PAGE_DATA: i32 = 0;
const PAGE_DICTIONARY: i32 = 2;
const PAGE_DATA_V2: i32 = 3;

/// One page found in the file.
#[derive(Clone, Copy, Debug)]
struct Page {
    offset: u64,
    header_len: u64,
    compressed: u64,
    uncompressed: u64,
    kind: i32,
    /// Rows of a data page (v1: values; flat required columns have one value per row).
    rows: u64,
}

struct Thrift<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Thrift<'_> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift.min(63);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn zigzag(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }
    fn skip(&mut self, ty: u8, depth: u32) -> Option<()> {
        if depth > 16 {
            return None;
        }
        match ty {
            1 | 2 => {}
            3 => {
                self.byte()?;
            }
            4..=6 => {
                self.varint()?;
            }
            7 => {
                self.pos = self.pos.checked_add(8).filter(|&p| p <= self.b.len())?;
            }
            8 => {
                let n = usize::try_from(self.varint()?).ok()?;
                self.pos = self.pos.checked_add(n).filter(|&p| p <= self.b.len())?;
            }
            9 | 10 => {
                let h = self.byte()?;
                let n = match h >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                for _ in 0..n {
                    if h & 0x0f == 1 || h & 0x0f == 2 {
                        self.byte()?;
                    } else {
                        self.skip(h & 0x0f, depth + 1)?;
                    }
                }
            }
            11 => {
                let n = self.varint()?;
                if n > 0 {
                    let kv = self.byte()?;
                    for _ in 0..n {
                        self.skip(kv >> 4, depth + 1)?;
                        self.skip(kv & 0x0f, depth + 1)?;
                    }
                }
            }
            12 => {
                self.fields(depth + 1, |_, _, t| t.skip_field())?;
            }
            _ => return None,
        }
        Some(())
    }
    /// Walks a struct's fields; `f(id, type, self)` returns Some(true) when it consumed the
    /// value, Some(false) to have it skipped.
    fn fields(
        &mut self,
        depth: u32,
        mut f: impl FnMut(i16, u8, &mut Self) -> Option<bool>,
    ) -> Option<()> {
        let mut last = 0i16;
        loop {
            let h = self.byte()?;
            if h == 0 {
                return Some(());
            }
            let ty = h & 0x0f;
            let id = match h >> 4 {
                0 => i16::try_from(self.zigzag()?).ok()?,
                d => last.checked_add(i16::from(d))?,
            };
            last = id;
            if !f(id, ty, self)? {
                self.skip(ty, depth)?;
            }
        }
    }
    fn skip_field(&mut self) -> Option<bool> {
        Some(false)
    }
}

/// Parses the page header at `b[0..]`: (header length, page).
fn page_header(b: &[u8], offset: u64) -> Option<Page> {
    let mut t = Thrift { b, pos: 0 };
    let (mut kind, mut unc, mut comp, mut values, mut rows_v2) = (None, None, None, None, None);
    t.fields(0, |id, ty, t| match (id, ty) {
        (1, 5) => {
            kind = Some(t.zigzag()?);
            Some(true)
        }
        (2, 5) => {
            unc = Some(t.zigzag()?);
            Some(true)
        }
        (3, 5) => {
            comp = Some(t.zigzag()?);
            Some(true)
        }
        (5, 12) | (7, 12) => {
            t.fields(1, |id, ty, t| {
                if id == 1 && ty == 5 {
                    values = Some(t.zigzag()?);
                    Some(true)
                } else {
                    Some(false)
                }
            })?;
            Some(true)
        }
        (8, 12) => {
            t.fields(1, |id, ty, t| match (id, ty) {
                (1, 5) => {
                    values = Some(t.zigzag()?);
                    Some(true)
                }
                (3, 5) => {
                    rows_v2 = Some(t.zigzag()?);
                    Some(true)
                }
                _ => Some(false),
            })?;
            Some(true)
        }
        _ => Some(false),
    })?;
    let kind = i32::try_from(kind?).ok()?;
    let rows = match kind {
        PAGE_DATA => values?,
        PAGE_DATA_V2 => rows_v2?,
        _ => 0,
    };
    Some(Page {
        offset,
        header_len: t.pos as u64,
        compressed: u64::try_from(comp?).ok()?,
        uncompressed: u64::try_from(unc?).ok()?,
        kind,
        rows: u64::try_from(rows).ok()?,
    })
}

/// Every complete page after the magic, in file order.
fn walk_pages(bytes: &[u8]) -> Vec<Page> {
    let mut pages = Vec::new();
    let mut pos = 4usize;
    while pos < bytes.len() {
        let Some(p) = page_header(&bytes[pos..], pos as u64) else {
            break;
        };
        let end = pos as u64 + p.header_len + p.compressed;
        if end > bytes.len() as u64 || !(0..=3).contains(&p.kind) {
            break;
        }
        pages.push(p);
        pos = end as usize;
    }
    pages
}

/// A row group found in the pages: per column, its pages.
struct FoundGroup {
    rows: u64,
    columns: Vec<Vec<Page>>,
}

/// Cuts `pages` into complete row groups of a table whose columns are dictionary-encoded
/// where `dict[i]` says. Needs a dictionary column after the first: the values before its
/// dictionary page fix the row count. Stops at the first incomplete or inconsistent group.
fn cut_row_groups(pages: &[Page], dict: &[bool]) -> (Vec<FoundGroup>, Option<String>) {
    let mut groups = Vec::new();
    let Some(k) = dict.iter().position(|&d| d).filter(|&k| k > 0) else {
        return (
            groups,
            Some("the table has no dictionary column after the first, so row-group boundaries cannot be found without the footer".into()),
        );
    };
    let mut i = 0usize;
    while i < pages.len() {
        // Rows of this group: data values before the first dictionary page, over k columns.
        let mut before = 0u64;
        let mut j = i;
        while j < pages.len() && pages[j].kind != PAGE_DICTIONARY {
            before += pages[j].rows;
            j += 1;
        }
        if j == pages.len() {
            return (groups, None); // the group being written when the process died
        }
        if before == 0 || !before.is_multiple_of(k as u64) {
            return (
                groups,
                Some(format!(
                    "page structure inconsistent at byte {}",
                    pages[i].offset
                )),
            );
        }
        let rows = before / k as u64;
        let mut columns = Vec::with_capacity(dict.len());
        let mut p = i;
        for &is_dict in dict {
            let mut chunk = Vec::new();
            if is_dict {
                match pages.get(p) {
                    Some(pg) if pg.kind == PAGE_DICTIONARY => {
                        chunk.push(*pg);
                        p += 1;
                    }
                    Some(pg) => {
                        return (
                            groups,
                            Some(format!("expected a dictionary page at byte {}", pg.offset)),
                        );
                    }
                    None => return (groups, None),
                }
            }
            let mut got = 0u64;
            while got < rows {
                match pages.get(p) {
                    Some(pg) if pg.kind == PAGE_DATA || pg.kind == PAGE_DATA_V2 => {
                        got += pg.rows;
                        chunk.push(*pg);
                        p += 1;
                    }
                    Some(pg) => {
                        return (
                            groups,
                            Some(format!(
                                "unexpected page kind {} at byte {}",
                                pg.kind, pg.offset
                            )),
                        );
                    }
                    None => return (groups, None),
                }
            }
            if got != rows {
                return (
                    groups,
                    Some(format!("a column chunk holds {got} rows, not {rows}")),
                );
            }
            columns.push(chunk);
        }
        groups.push(FoundGroup { rows, columns });
        i = p;
    }
    (groups, None)
}

/// Builds the in-memory footer for `groups`.
fn rebuild_metadata(
    descr: &Arc<SchemaDescriptor>,
    groups: &[FoundGroup],
    compression: Compression,
) -> Result<ParquetMetaData, String> {
    let mut row_groups = Vec::with_capacity(groups.len());
    let mut total = 0i64;
    for (ordinal, g) in groups.iter().enumerate() {
        let mut cols = Vec::with_capacity(g.columns.len());
        let mut group_bytes = 0i64;
        for (c, pages) in g.columns.iter().enumerate() {
            let dict = pages.first().filter(|p| p.kind == PAGE_DICTIONARY);
            let data = pages
                .iter()
                .find(|p| p.kind != PAGE_DICTIONARY)
                .ok_or_else(|| "column chunk without data pages".to_string())?;
            let comp: u64 = pages.iter().map(|p| p.header_len + p.compressed).sum();
            let unc: u64 = pages.iter().map(|p| p.header_len + p.uncompressed).sum();
            group_bytes += unc as i64;
            cols.push(
                ColumnChunkMetaData::builder(descr.column(c))
                    .set_compression(compression)
                    .set_encodings(vec![Encoding::PLAIN, Encoding::RLE])
                    .set_num_values(g.rows as i64)
                    .set_total_compressed_size(comp as i64)
                    .set_total_uncompressed_size(unc as i64)
                    .set_data_page_offset(data.offset as i64)
                    .set_dictionary_page_offset(dict.map(|d| d.offset as i64))
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        }
        total += g.rows as i64;
        row_groups.push(
            RowGroupMetaData::builder(descr.clone())
                .set_num_rows(g.rows as i64)
                .set_total_byte_size(group_bytes)
                .set_column_metadata(cols)
                .set_ordinal(ordinal as i32)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    let file = FileMetaData::new(2, total, None, None, descr.clone(), None);
    Ok(ParquetMetaData::new(file, row_groups))
}

/// What salvaging one footerless file gave.
#[derive(Debug)]
pub struct Salvage {
    /// The committed salvaged file, when any row group was kept.
    pub record: Option<FileRecord>,
    /// Row groups kept.
    pub row_groups: usize,
    /// Bytes of the footerless file after the last kept row group.
    pub bytes_lost: u64,
    /// Why the walk stopped before the end of the file, when it did.
    pub why_stopped: Option<String>,
}

/// The codec a footerless file's pages were written with (the footer that named it is
/// missing): the first page whose stored size differs from its size decoded starts with
/// zstd's frame magic under zstd, and is a plain LZ4 block (no magic) under LZ4_RAW, the only
/// other codec [`ParquetTableWriter`] writes; a file whose every page is stored as is was
/// written uncompressed (`--compression none`). zstd's level is not in the pages and does not
/// matter to a reader: the recovered file is written at level 1.
fn page_codec(bytes: &[u8], pages: &[Page]) -> crate::Compression {
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
    let Some(p) = pages.iter().find(|p| p.compressed != p.uncompressed) else {
        return crate::Compression::None;
    };
    let start = usize::try_from(p.offset.saturating_add(p.header_len)).unwrap_or(usize::MAX);
    match bytes.get(start..start.saturating_add(4)) {
        Some(head) if head == ZSTD_MAGIC => crate::Compression::Zstd(1),
        _ => crate::Compression::Lz4Raw,
    }
}

/// Salvages `footerless` (a table named `final_name`, written by [`ParquetTableWriter`] and
/// cut short before its footer) into `dir/final_name`: every complete row group, rewritten
/// through the writer. `run` goes into the new file's metadata.
pub fn salvage(
    dir: &Path,
    footerless: &Path,
    final_name: &str,
    run: u64,
) -> Result<Salvage, SinkError> {
    let fail = |message: String| SinkError::Parquet {
        path: footerless.to_path_buf(),
        message,
    };
    let Some((schemas, options, table)) = table_schemas(final_name) else {
        return Err(fail(
            "not a table recovery knows the schema of (no footer, so no schema)".into(),
        ));
    };
    let bytes = std::fs::read(footerless).map_err(|e| SinkError::io("reading", footerless, e))?;
    let size = bytes.len() as u64;
    if bytes.len() < 4 || &bytes[..4] != b"PAR1" {
        return Ok(Salvage {
            record: None,
            row_groups: 0,
            bytes_lost: size,
            why_stopped: Some("the file does not start with the Parquet magic PAR1".into()),
        });
    }
    let pages = walk_pages(&bytes);
    let codec = page_codec(&bytes, &pages);
    drop(bytes);
    let layouts = dictionary_layouts(table, &options);
    let best = best_explaining_schema(&pages, &schemas, &layouts);
    let Some((schema, groups, mut why)) = best else {
        return Err(fail("no schema".into()));
    };
    // The recovered file keeps the codec the writer used.
    let options = WriteOptions {
        compression: codec,
        ..options
    };
    let compression = match codec {
        crate::Compression::None => Compression::UNCOMPRESSED,
        crate::Compression::Lz4Raw => Compression::LZ4_RAW,
        crate::Compression::Zstd(level) => {
            Compression::ZSTD(ZstdLevel::try_new(level).unwrap_or_default())
        }
    };
    let descr = Arc::new(
        ArrowSchemaConverter::new()
            .convert(&schema)
            .map_err(|e| fail(e.to_string()))?,
    );
    // Decode row group by row group; keep those that decode.
    let file =
        std::fs::File::open(footerless).map_err(|e| SinkError::io("opening", footerless, e))?;
    let mut writer: Option<ParquetTableWriter> = None;
    let mut kept = 0usize;
    let mut kept_end = 4u64;
    for (i, g) in groups.iter().enumerate() {
        let metadata = rebuild_metadata(&descr, &groups[..=i], compression).map_err(fail)?;
        let decoded = decode_row_group(&file, metadata, &schema, i);
        let batches = match decoded {
            Ok(b) if b.iter().map(|b| b.num_rows() as u64).sum::<u64>() == g.rows => b,
            Ok(_) => {
                why = Some(format!("row group {i} decoded to the wrong number of rows"));
                break;
            }
            Err(e) => {
                why = Some(format!("row group {i} does not decode: {e}"));
                break;
            }
        };
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(salvage_writer(
                dir, final_name, &schema, &options, run, table,
            )?),
        };
        for b in &batches {
            w.write(b)?;
        }
        kept += 1;
        kept_end = g
            .columns
            .last()
            .and_then(|c| c.last())
            .map_or(kept_end, |p| p.offset + p.header_len + p.compressed);
    }
    let record = match writer {
        Some(mut w) => {
            w.add_metadata("scandaq.recovered_row_groups", kept.to_string());
            Some(w.commit()?)
        }
        None => None,
    };
    Ok(Salvage {
        record,
        row_groups: kept,
        bytes_lost: size.saturating_sub(kept_end),
        why_stopped: why,
    })
}

/// The candidate schema whose page layout explains the most complete row groups, with those
/// groups and why the walk stopped.
fn best_explaining_schema(
    pages: &[Page],
    schemas: &[SchemaRef],
    dictionary_layouts: &[Vec<&str>],
) -> Option<(SchemaRef, Vec<FoundGroup>, Option<String>)> {
    let mut best: Option<(SchemaRef, Vec<FoundGroup>, Option<String>)> = None;
    for schema in schemas {
        for dictionary_columns in dictionary_layouts {
            let dict: Vec<bool> = schema
                .fields()
                .iter()
                .map(|f| dictionary_columns.contains(&f.name().as_str()))
                .collect();
            let (groups, why) = cut_row_groups(pages, &dict);
            if best.as_ref().is_none_or(|b| groups.len() > b.1.len()) {
                best = Some((schema.clone(), groups, why));
            }
        }
    }
    best
}

/// Row group `index` of the footerless `file`, read through the rebuilt `metadata`.
fn decode_row_group(
    file: &std::fs::File,
    metadata: ParquetMetaData,
    schema: &SchemaRef,
    index: usize,
) -> Result<Vec<RecordBatch>, ParquetError> {
    ArrowReaderMetadata::try_new(
        Arc::new(metadata),
        ArrowReaderOptions::new().with_schema(schema.clone()),
    )
    .and_then(|m| {
        ParquetRecordBatchReaderBuilder::new_with_metadata(file.try_clone()?, m)
            .with_row_groups(vec![index])
            .build()?
            .collect::<Result<Vec<_>, _>>()
            .map_err(Into::into)
    })
}

/// The writer of the salvaged table, its metadata saying where it came from.
fn salvage_writer(
    dir: &Path,
    final_name: &str,
    schema: &SchemaRef,
    options: &WriteOptions,
    run: u64,
    table: &str,
) -> Result<ParquetTableWriter, SinkError> {
    let meta = vec![
        ("scandaq.run".to_string(), run.to_string()),
        ("scandaq.table".to_string(), table.to_string()),
        (
            "scandaq.software_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "scandaq.recovered".to_string(),
            "salvaged by scandaq recover from a file without footer; the original key-value \
             metadata was in the lost footer"
                .to_string(),
        ),
    ];
    ParquetTableWriter::create(dir, final_name, schema.clone(), options, meta)
}

#[cfg(test)]
mod tests {
    //! Files this crate's writer produced, cut short at every page boundary and at points in
    //! between: salvage must keep exactly the row groups whose column chunks all end before the
    //! cut (read from the uncut file's real footer, not from the page walk), with their rows.
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use scandaq_core::HitBatch;

    /// A committed singles file of 7 row groups of 1000 hits (the table's own encodings).
    fn committed_singles(dir: &Path, compression: crate::Compression) -> (Vec<u8>, HitBatch) {
        committed_singles_with(dir, compression, singles::write_options())
    }

    /// [`committed_singles`] with the table's encodings given.
    fn committed_singles_with(
        dir: &Path,
        compression: crate::Compression,
        encodings: WriteOptions,
    ) -> (Vec<u8>, HitBatch) {
        let n = 7000;
        let mut hits = HitBatch::with_capacity(n);
        for i in 0..n {
            hits.t_ps.push(1_000_000 + 7919 * i as i64);
            hits.channel.push((i as u32 * 37) % 256);
            hits.energy_kev.push(300.0 + (i % 400) as f32);
            hits.flags.push((i % 3) as u16);
        }
        let options = WriteOptions {
            row_group_rows: 1000,
            commit_interval: None,
            compression,
            ..encodings
        };
        let mut w = ParquetTableWriter::create(
            dir,
            "singles-00000.parquet",
            singles::schema(false),
            &options,
            vec![],
        )
        .unwrap();
        let batch = singles::to_record_batch(hits.clone(), false).unwrap();
        for k in 0..7 {
            w.write(&batch.slice(k * 1000, 1000)).unwrap();
        }
        w.commit().unwrap();
        (
            std::fs::read(dir.join("singles-00000.parquet")).unwrap(),
            hits,
        )
    }

    /// `(end of the row group's last byte, rows)` per row group, from the real footer, and the
    /// byte offsets where pages start or column chunks end.
    fn layout(bytes: &[u8], dir: &Path) -> (Vec<(u64, u64)>, Vec<u64>) {
        let path = dir.join("uncut.parquet");
        std::fs::write(&path, bytes).unwrap();
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let mut groups = Vec::new();
        let mut boundaries = Vec::new();
        for rg in reader.metadata().row_groups() {
            let mut end = 0u64;
            for c in rg.columns() {
                let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset()) as u64;
                let chunk_end = start + c.compressed_size() as u64;
                boundaries.extend([start, c.data_page_offset() as u64, chunk_end]);
                end = end.max(chunk_end);
            }
            groups.push((end, rg.num_rows() as u64));
        }
        (groups, boundaries)
    }

    #[test]
    fn every_cut_keeps_exactly_the_row_groups_before_it() {
        // LZ4_RAW (the default), zstd and an uncompressed table (`--compression none`).
        for compression in [
            crate::Compression::Lz4Raw,
            crate::Compression::Zstd(3),
            crate::Compression::None,
        ] {
            every_cut_keeps_the_row_groups_before_it(compression);
        }
    }

    fn every_cut_keeps_the_row_groups_before_it(compression: crate::Compression) {
        let tmp = tempfile::tempdir().unwrap();
        let (bytes, hits) = committed_singles(tmp.path(), compression);
        let (groups, boundaries) = layout(&bytes, tmp.path());
        assert_eq!(groups.len(), 7, "the test needs several row groups");
        let footer_start = groups.last().unwrap().0;
        let mut cuts: Vec<u64> = boundaries
            .iter()
            .flat_map(|&b| [b.saturating_sub(1), b, b + 1])
            .chain((4..footer_start).step_by(1013))
            .chain([footer_start])
            .filter(|&c| c >= 4 && c <= footer_start)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        assert!(cuts.len() > 60, "{} cuts", cuts.len());
        for cut in cuts {
            let expected_groups = groups.iter().filter(|g| g.0 <= cut).count();
            let expected_rows: u64 = groups.iter().filter(|g| g.0 <= cut).map(|g| g.1).sum();
            let dir = tempfile::tempdir().unwrap();
            let footerless = dir.path().join("singles-00000.parquet.footerless");
            std::fs::write(&footerless, &bytes[..cut as usize]).unwrap();
            let s = salvage(dir.path(), &footerless, "singles-00000.parquet", 1).unwrap();
            assert_eq!(s.row_groups, expected_groups, "cut at byte {cut}");
            let kept_end = groups[..expected_groups].last().map_or(4, |g| g.0);
            assert_eq!(s.bytes_lost, cut - kept_end, "cut at byte {cut}");
            match s.record {
                None => assert_eq!(expected_rows, 0, "cut at byte {cut}"),
                Some(rec) => {
                    assert_eq!(rec.rows, expected_rows, "cut at byte {cut}");
                    let f = std::fs::File::open(dir.path().join(&rec.path)).unwrap();
                    let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
                    // The recovered file keeps the codec the pages were written with.
                    for rg in reader.metadata().row_groups() {
                        for c in rg.columns() {
                            let same = matches!(
                                (compression, c.compression()),
                                (crate::Compression::None, Compression::UNCOMPRESSED)
                                    | (crate::Compression::Lz4Raw, Compression::LZ4_RAW)
                                    | (crate::Compression::Zstd(_), Compression::ZSTD(_))
                            );
                            assert!(same, "cut at byte {cut}: {:?}", c.compression());
                        }
                    }
                    let got: Vec<i64> = reader
                        .build()
                        .unwrap()
                        .flat_map(|b| {
                            let b = b.unwrap();
                            b.column(0)
                                .as_any()
                                .downcast_ref::<arrow_array::Int64Array>()
                                .unwrap()
                                .values()
                                .to_vec()
                        })
                        .collect();
                    assert_eq!(
                        got,
                        hits.t_ps[..expected_rows as usize],
                        "cut at byte {cut}"
                    );
                }
            }
        }
    }

    /// A file an earlier build wrote, its flags as a dictionary, still gives its row groups.
    #[test]
    fn a_singles_file_of_the_former_layout_is_salvaged_too() {
        let tmp = tempfile::tempdir().unwrap();
        let mut former = singles::write_options();
        former
            .dictionary_columns
            .extend_from_slice(singles::FORMER_DICTIONARY_COLUMNS);
        let (bytes, hits) = committed_singles_with(tmp.path(), crate::Compression::Zstd(1), former);
        let (groups, _) = layout(&bytes, tmp.path());
        let cut = groups[4].0 as usize + 10;
        let footerless = tmp.path().join("singles-00000.parquet.footerless");
        std::fs::write(&footerless, &bytes[..cut]).unwrap();
        let s = salvage(tmp.path(), &footerless, "singles-00000.parquet", 1).unwrap();
        assert_eq!(s.row_groups, 5);
        let rec = s.record.expect("the salvaged rows are committed");
        assert_eq!(rec.rows, 5000);
        let f = std::fs::File::open(tmp.path().join(&rec.path)).unwrap();
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let flags: Vec<u16> = batches
            .iter()
            .flat_map(|b| {
                b.column_by_name("flags")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<arrow_array::UInt16Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(
            flags,
            hits.flags[..5000],
            "the dictionary-encoded flags read back"
        );
    }

    #[test]
    fn a_file_without_the_magic_is_all_lost() {
        let tmp = tempfile::tempdir().unwrap();
        let footerless = tmp.path().join("singles-00000.parquet.footerless");
        std::fs::write(&footerless, b"not parquet").unwrap();
        let s = salvage(tmp.path(), &footerless, "singles-00000.parquet", 1).unwrap();
        assert!(s.record.is_none());
        assert_eq!(s.bytes_lost, 11);
    }
}
