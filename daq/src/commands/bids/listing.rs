//! The dataset's shared lists, updated in place: `participants.tsv` (one row per subject)
//! and the session's `scans.tsv` (one row per data file, with its acquisition time). Rows of
//! other recordings and columns other tools added are kept; a file that is not a TSV with the
//! key column is an error naming it.

use anyhow::{Result, bail};
use std::path::Path;

/// A parsed TSV: its header and rows (each as long as the header).
struct Tsv {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Tsv {
    fn parse(path: &Path, text: &str, key: &str) -> Result<Self> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<String> = lines
            .next()
            .unwrap_or_default()
            .split('\t')
            .map(str::to_string)
            .collect();
        if header.first().map(String::as_str) != Some(key) {
            bail!(
                "{}: its first column is not {key:?}: not the BIDS file scandaq expects; fix or \
                 remove it",
                path.display()
            );
        }
        let mut rows = Vec::new();
        for (n, line) in lines.enumerate() {
            let mut row: Vec<String> = line.split('\t').map(str::to_string).collect();
            if row.len() > header.len() {
                bail!(
                    "{} line {}: {} columns, the header has {}",
                    path.display(),
                    n + 2,
                    row.len(),
                    header.len()
                );
            }
            row.resize(header.len(), "n/a".into());
            rows.push(row);
        }
        Ok(Self { header, rows })
    }

    fn text(&self) -> String {
        let mut t = self.header.join("\t");
        t.push('\n');
        for r in &self.rows {
            t.push_str(&r.join("\t"));
            t.push('\n');
        }
        t
    }
}

/// The text of `path` after dropping the rows whose key `drop` selects and adding `rows`
/// (`(column, value)` pairs; columns missing from the file are added, missing values are
/// `n/a`); a new file when `path` does not exist.
pub(super) fn merged(
    path: &Path,
    key: &str,
    drop: impl Fn(&str) -> bool,
    rows: &[Vec<(&str, String)>],
) -> Result<String> {
    let mut tsv = match std::fs::read_to_string(path) {
        Ok(text) => Tsv::parse(path, &text, key)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Tsv {
            header: vec![key.to_string()],
            rows: Vec::new(),
        },
        Err(e) => bail!("reading {}: {e}", path.display()),
    };
    tsv.rows.retain(|r| !drop(&r[0]));
    for row in rows {
        for (col, _) in row {
            if !tsv.header.iter().any(|h| h == col) {
                tsv.header.push(col.to_string());
                for r in &mut tsv.rows {
                    r.push("n/a".into());
                }
            }
        }
        let line = tsv
            .header
            .iter()
            .map(|h| {
                row.iter()
                    .find(|(c, _)| c == h)
                    .map_or("n/a".to_string(), |(_, v)| v.clone())
            })
            .collect();
        tsv.rows.push(line);
    }
    tsv.rows.sort_by(|a, b| a[0].cmp(&b[0]));
    Ok(tsv.text())
}

/// `acq_time` of a data file: the corrected time of its first sample as UTC
/// (`YYYY-MM-DDThh:mm:ss.ffffffZ`), or `n/a` when the run's reference clock is not a
/// calendar time (no corrected time, or outside 2000-2100: not the Unix epoch).
pub(super) fn acq_time(meas_ns: i64) -> String {
    const Y2000_S: i64 = 946_684_800;
    const Y2100_S: i64 = 4_102_444_800;
    let secs = meas_ns.div_euclid(1_000_000_000);
    if !(Y2000_S..Y2100_S).contains(&secs) {
        return "n/a".into();
    }
    let micros = meas_ns.rem_euclid(1_000_000_000) / 1000;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acq_time_is_utc_and_n_a_off_the_calendar() {
        // 2024-02-29T12:34:56.789012Z = 1709210096 s.
        assert_eq!(
            acq_time(1_709_210_096_789_012_345),
            "2024-02-29T12:34:56.789012Z"
        );
        assert_eq!(
            acq_time(946_684_800_000_000_000),
            "2000-01-01T00:00:00.000000Z"
        );
        assert_eq!(acq_time(0), "n/a");
        assert_eq!(acq_time(12_345_678_901), "n/a");
    }

    #[test]
    fn merging_keeps_other_rows_and_columns() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("scans.tsv");
        std::fs::write(
            &p,
            "filename\tacq_time\tnote\nmeg/b.fif\tT1\tx\nmeg/a.fif\tT0\ty\n",
        )
        .unwrap();
        let t = merged(
            &p,
            "filename",
            |f| f == "meg/a.fif",
            &[vec![
                ("filename", "meg/c.fif".into()),
                ("acq_time", "T2".into()),
            ]],
        )
        .unwrap();
        assert_eq!(
            t,
            "filename\tacq_time\tnote\nmeg/b.fif\tT1\tx\nmeg/c.fif\tT2\tn/a\n"
        );
        std::fs::write(&p, "name\tx\n").unwrap();
        assert!(merged(&p, "filename", |_| false, &[]).is_err());
        let fresh = merged(
            &dir.path().join("new.tsv"),
            "participant_id",
            |_| false,
            &[vec![("participant_id", "sub-01".into())]],
        )
        .unwrap();
        assert_eq!(fresh, "participant_id\nsub-01\n");
    }
}
