//! Names of a run's table files and how a reader finds one table's sequence: a table `NAME`
//! (`singles`, `coincidences`, `delayed`) is written as `NAME-00000.parquet`,
//! `NAME-00001.parquet`, ... (a new file at each rotation), and the file being written is
//! `NAME-NNNNN.parquet.inprogress`.

use std::path::{Path, PathBuf};

/// File name of file number `index` of table `name`: `singles-00000.parquet`, ...
pub fn table_file_name(name: &str, index: u32) -> String {
    format!("{name}-{index:05}.parquet")
}

/// The file number of `file_name` when it is a committed file of table `name`
/// (`NAME-NNNNN.parquet`, five or more digits).
pub fn table_file_index(file_name: &str, name: &str) -> Option<u32> {
    let digits = file_name
        .strip_prefix(name)?
        .strip_prefix('-')?
        .strip_suffix(".parquet")?;
    if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What a directory holds of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableFiles {
    /// The committed files, by file number.
    pub committed: Vec<(u32, PathBuf)>,
    /// Files of the table a writer did not finish (`.inprogress`, or the `.footerless` an
    /// interrupted recovery left), by name.
    pub interrupted: Vec<String>,
}

impl TableFiles {
    /// The files of table `name` in `dir`.
    pub fn find(dir: &Path, name: &str) -> std::io::Result<Self> {
        let mut files = Self::default();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let Some(index) = table_file_index(&file_name, name) {
                files.committed.push((index, entry.path()));
            } else if let Some(base) = file_name
                .strip_suffix(".inprogress")
                .or_else(|| file_name.strip_suffix(".footerless"))
                && table_file_index(base, name).is_some()
            {
                files.interrupted.push(file_name);
            }
        }
        files.committed.sort();
        files.interrupted.sort();
        Ok(files)
    }

    /// The first file number missing from the committed sequence (which starts at 0), when
    /// one is: a file deleted or not copied with the rest.
    pub fn first_gap(&self) -> Option<u32> {
        self.committed
            .iter()
            .enumerate()
            .find(|(expected, (index, _))| *index as usize != *expected)
            .map(|(expected, _)| expected as u32)
    }

    /// The committed files' paths, in order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.committed.iter().map(|(_, p)| p.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_strangers_are_not_taken_for_table_files() {
        assert_eq!(table_file_name("delayed", 7), "delayed-00007.parquet");
        assert_eq!(
            table_file_index("delayed-00007.parquet", "delayed"),
            Some(7)
        );
        assert_eq!(
            table_file_index("coincidences-123456.parquet", "coincidences"),
            Some(123_456)
        );
        for stranger in [
            "delayed-7.parquet",
            "delayed-00007.parquet.inprogress",
            "delayed-0000x.parquet",
            "delayed_00007.parquet",
            "coincidences-00000.parquet",
        ] {
            assert_eq!(table_file_index(stranger, "delayed"), None, "{stranger}");
        }
    }

    #[test]
    fn a_directory_gives_the_sequence_in_order_with_its_gaps_and_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        for name in [
            "coincidences-00002.parquet",
            "coincidences-00000.parquet",
            "coincidences-00003.parquet.inprogress",
            "delayed-00000.parquet",
            "singles-00000.parquet",
        ] {
            std::fs::write(tmp.path().join(name), b"x").unwrap();
        }
        let f = TableFiles::find(tmp.path(), "coincidences").unwrap();
        let numbers: Vec<u32> = f.committed.iter().map(|(i, _)| *i).collect();
        assert_eq!(numbers, [0, 2]);
        assert_eq!(f.first_gap(), Some(1));
        assert_eq!(f.interrupted, ["coincidences-00003.parquet.inprogress"]);
        let d = TableFiles::find(tmp.path(), "delayed").unwrap();
        assert_eq!(d.paths(), [tmp.path().join("delayed-00000.parquet")]);
        assert_eq!(d.first_gap(), None);
    }
}
