//! Shared reader for the whitespace/tab-separated calibration and map tables: skips blank and
//! `#` lines, splits fields, and turns bad fields into [`TableError`]s naming file and line.

use crate::channel::ChannelId;
use std::str::FromStr;

/// A table could not be read: which table, which line, what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{table} line {line}: {message}")]
pub struct TableError {
    /// Table (file) name.
    pub table: String,
    /// 1-based line number (0 = the table as a whole).
    pub line: usize,
    /// What is wrong, and the expected layout where that helps.
    pub message: String,
}

impl TableError {
    /// New error.
    pub fn new(table: &str, line: usize, message: String) -> Self {
        Self {
            table: table.to_string(),
            line,
            message,
        }
    }
}

/// One data row of a table: its 1-based line number and its fields.
pub(crate) struct Row<'a> {
    pub table: &'a str,
    pub line: usize,
    pub fields: Vec<&'a str>,
}

/// Iterates the data rows of `text`; every row must have at least `min_fields` fields
/// (extra trailing fields are allowed: PETsys files sometimes carry more columns).
pub(crate) fn rows<'a>(
    table: &'a str,
    text: &'a str,
    min_fields: usize,
    layout: &'static str,
) -> impl Iterator<Item = Result<Row<'a>, TableError>> + 'a {
    text.lines().enumerate().filter_map(move |(i, raw)| {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < min_fields {
            return Some(Err(TableError::new(
                table,
                i + 1,
                format!(
                    "expected {min_fields} columns ({layout}), found {}",
                    fields.len()
                ),
            )));
        }
        Some(Ok(Row {
            table,
            line: i + 1,
            fields,
        }))
    })
}

impl Row<'_> {
    /// Parses field `k` as `T`, naming the column on failure.
    pub fn get<T: FromStr>(&self, k: usize, column: &str) -> Result<T, TableError> {
        self.fields[k].parse().map_err(|_| {
            TableError::new(
                self.table,
                self.line,
                format!("column {column}: cannot parse {:?}", self.fields[k]),
            )
        })
    }

    /// Parses a finite f64 in field `k`.
    pub fn finite(&self, k: usize, column: &str) -> Result<f64, TableError> {
        let v: f64 = self.get(k, column)?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(TableError::new(
                self.table,
                self.line,
                format!("column {column}: {v} is not finite"),
            ))
        }
    }

    /// Reads the four PETsys address columns starting at field `k`.
    pub fn channel(&self, k: usize) -> Result<ChannelId, TableError> {
        let port: u32 = self.get(k, "portID")?;
        let slave: u32 = self.get(k + 1, "slaveID")?;
        let chip: u32 = self.get(k + 2, "chipID")?;
        let ch: u32 = self.get(k + 3, "channelID")?;
        ChannelId::from_parts(port, slave, chip, ch).ok_or_else(|| {
            TableError::new(
                self.table,
                self.line,
                format!(
                    "channel address {port} {slave} {chip} {ch} out of range \
                     (port < 32, slave < 32, chip < 64, channel < 64)"
                ),
            )
        })
    }

    /// An error about this row.
    pub fn error(&self, message: String) -> TableError {
        TableError::new(self.table, self.line, message)
    }
}
