//! Interfile headers (docs/formats.md §4): `key := value` text, as written by Siemens for
//! PETLINK list-mode files (`.l.hdr`) and by STIR.
//!
//! [`InterfileHeader::parse`] keeps every `key := value` line with its line number. Keys are
//! matched after normalisation: a leading `!` or `%` is dropped, letters are lower-cased and
//! runs of whitespace become one space, so `%number of segments :` and `number of segments`
//! are the same key, and `%energy window lower level (keV) [1]` is
//! `energy window lower level (kev) [1]`. Lines may end in `\n`, `\r\n` or a bare `\r` (some
//! Siemens headers). Blank lines and `;` comments are skipped; other lines without `:=` are
//! kept in [`InterfileHeader::ignored_lines`] rather than rejected.
//!
//! [`PetlinkHeader::from_interfile`] extracts what a PETLINK 32-bit list-mode decoder needs.
//! Errors name the header, the key and the line, and say what to fix.

use std::str::FromStr;

/// An Interfile header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterfileError {
    /// A key the reader needs is absent.
    #[error(
        "{origin}: required key `{key}` is missing (add a line `{key} := ...` to the header, or check it is the Interfile header of a PETLINK list-mode file)"
    )]
    MissingKey {
        /// Header name (file name) for messages.
        origin: String,
        /// The normalised key.
        key: String,
    },
    /// A value is not the number (or list) it should be.
    #[error("{origin}: line {line}: `{key}` has value `{value}`, which is not {expected}")]
    BadValue {
        /// Header name.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// The normalised key.
        key: String,
        /// The value as written.
        value: String,
        /// What was expected ("an unsigned integer", ...).
        expected: &'static str,
    },
    /// The header is not one this reader can decode (e.g. 64-bit words, compressed bins).
    #[error("{origin}: line {line}: `{key}` = `{value}`: {reason}")]
    Unsupported {
        /// Header name.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// The normalised key.
        key: String,
        /// The value as written.
        value: String,
        /// Why it is not supported and what to do.
        reason: &'static str,
    },
    /// The text does not look like an Interfile header at all.
    #[error(
        "{origin}: not an Interfile header (no `key := value` line found): pass the `.hdr` file, not the data file"
    )]
    NotInterfile {
        /// Header name.
        origin: String,
    },
}

/// One `key := value` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key as written (without surrounding whitespace).
    pub raw_key: String,
    /// The normalised key (no `!`/`%`, lower case, single spaces).
    pub key: String,
    /// The value, trimmed.
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// A parsed Interfile header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfileHeader {
    /// Name used in error messages (usually the file name).
    pub origin: String,
    /// Every `key := value` line in file order.
    pub entries: Vec<Entry>,
    /// Line numbers of non-blank, non-comment lines without `:=` (skipped).
    pub ignored_lines: Vec<usize>,
}

/// Normalises a key: drops leading `!`/`%`, lower-cases, collapses whitespace.
pub fn normalise_key(key: &str) -> String {
    let key = key.trim().trim_start_matches(['!', '%']);
    let mut out = String::with_capacity(key.len());
    for word in key.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

impl InterfileHeader {
    /// Parses header text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, InterfileError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut header = Self {
            origin: origin.to_string(),
            ..Self::default()
        };
        // `\r\n`, `\n` and bare `\r` each end one line.
        let mut line_no = 0usize;
        let mut rest = text;
        while !rest.is_empty() {
            let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
            let line = &rest[..end];
            let mut next = end;
            if rest[end..].starts_with("\r\n") {
                next += 2;
            } else if end < rest.len() {
                next += 1;
            }
            rest = &rest[next..];
            line_no += 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with(';') {
                continue;
            }
            match trimmed.split_once(":=") {
                Some((k, v)) => header.entries.push(Entry {
                    raw_key: k.trim().to_string(),
                    key: normalise_key(k),
                    value: v.trim().to_string(),
                    line: line_no,
                }),
                None => header.ignored_lines.push(line_no),
            }
        }
        if header.entries.is_empty() {
            return Err(InterfileError::NotInterfile {
                origin: origin.to_string(),
            });
        }
        Ok(header)
    }

    /// The first entry with this key (normalised before matching).
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        let key = normalise_key(key);
        self.entries.iter().find(|e| e.key == key)
    }

    /// The value of the first entry with this key, if present and non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key)
            .map(|e| e.value.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The value of a key that must be present and non-empty.
    pub fn require(&self, key: &str) -> Result<&str, InterfileError> {
        self.get(key).ok_or_else(|| self.missing(key))
    }

    fn missing(&self, key: &str) -> InterfileError {
        InterfileError::MissingKey {
            origin: self.origin.clone(),
            key: normalise_key(key),
        }
    }

    fn bad(&self, e: &Entry, expected: &'static str) -> InterfileError {
        InterfileError::BadValue {
            origin: self.origin.clone(),
            line: e.line,
            key: e.key.clone(),
            value: e.value.clone(),
            expected,
        }
    }

    fn get_parsed<T: FromStr>(
        &self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<T>, InterfileError> {
        match self.entry(key) {
            None => Ok(None),
            Some(e) if e.value.is_empty() => Ok(None),
            Some(e) => e.value.parse().map(Some).map_err(|_| self.bad(e, expected)),
        }
    }

    /// An optional unsigned integer.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, InterfileError> {
        self.get_parsed(key, "an unsigned integer")
    }

    /// An optional unsigned 32-bit integer.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, InterfileError> {
        self.get_parsed(key, "an unsigned 32-bit integer")
    }

    /// A required unsigned 32-bit integer.
    pub fn require_u32(&self, key: &str) -> Result<u32, InterfileError> {
        self.get_u32(key)?.ok_or_else(|| self.missing(key))
    }

    /// An optional finite number (integers, decimals and exponents such as `4.65e+007`).
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, InterfileError> {
        let v: Option<f64> = self.get_parsed(key, "a number")?;
        match (v, self.entry(key)) {
            (Some(x), Some(e)) if !x.is_finite() => Err(self.bad(e, "a finite number")),
            _ => Ok(v),
        }
    }

    /// A required finite number.
    pub fn require_f64(&self, key: &str) -> Result<f64, InterfileError> {
        self.get_f64(key)?.ok_or_else(|| self.missing(key))
    }

    /// An optional list of unsigned integers written `{a, b, c}` (braces optional).
    pub fn get_u32_list(&self, key: &str) -> Result<Option<Vec<u32>>, InterfileError> {
        let Some(e) = self.entry(key).filter(|e| !e.value.is_empty()) else {
            return Ok(None);
        };
        let inner = e.value.trim();
        let inner = inner.strip_prefix('{').unwrap_or(inner);
        let inner = inner.strip_suffix('}').unwrap_or(inner);
        inner
            .split(',')
            .map(|s| s.trim().parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|_| self.bad(e, "a list of unsigned integers like `{127, 115, 115}`"))
    }

    fn unsupported(&self, key: &str, reason: &'static str) -> InterfileError {
        let e = self.entry(key);
        InterfileError::Unsupported {
            origin: self.origin.clone(),
            line: e.map_or(0, |e| e.line),
            key: normalise_key(key),
            value: e.map(|e| e.value.clone()).unwrap_or_default(),
            reason,
        }
    }
}

/// Keys of the PETLINK fields, normalised.
pub mod keys {
    /// Data file the header describes.
    pub const DATA_FILE: &str = "name of data file";
    /// Bytes to skip at the start of the data file.
    pub const DATA_OFFSET: &str = "data offset in bytes";
    /// Scanner model code (`2008` = Biograph mMR).
    pub const ORIGINATING_SYSTEM: &str = "originating system";
    /// Bins (tangential positions) per view.
    pub const PROJECTIONS: &str = "number of projections";
    /// Views (angles) per sinogram.
    pub const VIEWS: &str = "number of views";
    /// Segments of the sinogram set.
    pub const SEGMENTS: &str = "number of segments";
    /// Sinograms per segment.
    pub const SEGMENT_TABLE: &str = "segment table";
    /// Detector rings.
    pub const RINGS: &str = "number of rings";
    /// Largest ring difference recorded.
    pub const MAX_RING_DIFFERENCE: &str = "maximum ring difference";
    /// Axial compression (span).
    pub const AXIAL_COMPRESSION: &str = "axial compression";
    /// Milliseconds between elapsed-time tags.
    pub const TAG_INTERVAL: &str = "timing tagwords interval (msec)";
    /// Multiplier of the singles tags' rate field.
    pub const SINGLES_SCALE: &str = "singles scale factor";
    /// Singles blocks (buckets) of the scanner.
    pub const SINGLES_BLOCKS: &str = "total number of singles blocks";
    /// Seconds between singles polls.
    pub const SINGLES_POLLING_INTERVAL: &str = "singles polling interval (sec)";
    /// Lower energy threshold of window 1.
    pub const ENERGY_LOWER: &str = "energy window lower level (kev) [1]";
    /// Upper energy threshold of window 1.
    pub const ENERGY_UPPER: &str = "energy window upper level (kev) [1]";
    /// Words in the complete list-mode file.
    pub const TOTAL_WORDS: &str = "total listmode word counts";
    /// Siemens time synchronisation value.
    pub const TIME_SYNC: &str = "time_sync";
    /// Word size of the list-mode stream.
    pub const WORD_BITS: &str = "lm event and tag words format (bits)";
    /// Acquisition duration.
    pub const IMAGE_DURATION: &str = "image duration (sec)";
    /// Study date.
    pub const STUDY_DATE: &str = "study date (yyyy:mm:dd)";
    /// Study time.
    pub const STUDY_TIME: &str = "study time (hh:mm:ss gmt+00:00)";
    /// Isotope.
    pub const ISOTOPE: &str = "isotope name";
    /// TOF bins (1 = no TOF in the bin address).
    pub const TOF_BINS: &str = "number of tof time bins";
}

/// What a PETLINK 32-bit list-mode decoder needs from the Interfile header.
#[derive(Clone, Debug, PartialEq)]
pub struct PetlinkHeader {
    /// `name of data file` as written (may carry a directory, even a Windows one).
    pub data_file: String,
    /// `!data offset in bytes` (default 0).
    pub data_offset_bytes: u64,
    /// `!originating system` (scanner model code; `2008` is the Siemens Biograph mMR).
    pub originating_system: Option<String>,
    /// `%number of projections`: bins per view.
    pub projections: u32,
    /// `%number of views`.
    pub views: u32,
    /// `number of rings`.
    pub rings: u32,
    /// `%maximum ring difference` (default `rings - 1`).
    pub max_ring_difference: u32,
    /// `%axial compression` (default 1; only 1 is decodable, see [`crate::petlink`]).
    pub axial_compression: u32,
    /// `%number of segments`, as written.
    pub segments: Option<u32>,
    /// `%segment table`, as written (sinograms per segment of the *histogrammed* data).
    pub segment_table: Vec<u32>,
    /// `%timing tagwords interval (msec)` (default 1).
    pub tag_interval_ms: u32,
    /// `%singles scale factor` (default 1).
    pub singles_scale_factor: f64,
    /// `%total number of singles blocks`.
    pub singles_blocks: Option<u32>,
    /// `%singles polling interval (sec)`.
    pub singles_polling_interval_s: Option<f64>,
    /// Energy window 1, keV (lower, upper).
    pub energy_window_kev: Option<(f64, f64)>,
    /// `%total listmode word counts` (of the whole acquisition; an excerpt has fewer).
    pub total_listmode_words: Option<u64>,
    /// `%time_sync`.
    pub time_sync: Option<u64>,
    /// `image duration (sec)`.
    pub image_duration_s: Option<f64>,
    /// `%number of TOF time bins` (default 1).
    pub tof_bins: u32,
    /// `%study date (yyyy:mm:dd)`.
    pub study_date: Option<String>,
    /// `%study time (hh:mm:ss GMT+00:00)`.
    pub study_time: Option<String>,
    /// `isotope name`.
    pub isotope: Option<String>,
}

/// Largest projections or views accepted (they are stored as 16-bit columns).
pub const MAX_BINS_OR_VIEWS: u32 = u16::MAX as u32;
/// Largest ring count accepted.
pub const MAX_RINGS: u32 = 4096;

impl PetlinkHeader {
    /// Extracts and checks the PETLINK fields.
    pub fn from_interfile(h: &InterfileHeader) -> Result<Self, InterfileError> {
        use keys::*;
        let projections = h.require_u32(PROJECTIONS)?;
        let views = h.require_u32(VIEWS)?;
        let rings = h.require_u32(RINGS)?;
        for (key, v, max) in [
            (PROJECTIONS, projections, MAX_BINS_OR_VIEWS),
            (VIEWS, views, MAX_BINS_OR_VIEWS),
            (RINGS, rings, MAX_RINGS),
        ] {
            if v == 0 || v > max {
                return Err(h.unsupported(
                    key,
                    "must be between 1 and 65535 (rings: 4096); check the header",
                ));
            }
        }
        let max_ring_difference = h.get_u32(MAX_RING_DIFFERENCE)?.unwrap_or(rings - 1);
        if max_ring_difference >= rings {
            return Err(h.unsupported(
                MAX_RING_DIFFERENCE,
                "must be smaller than the number of rings; check the header",
            ));
        }
        let axial_compression = h.get_u32(AXIAL_COMPRESSION)?.unwrap_or(1);
        if axial_compression != 1 {
            return Err(h.unsupported(
                AXIAL_COMPRESSION,
                "list-mode bin addresses are decoded as span 1 (axial compression 1) only",
            ));
        }
        if let Some(bits) = h.get_u32(WORD_BITS)?
            && bits != 32
        {
            return Err(h.unsupported(
                WORD_BITS,
                "only the 32-bit PETLINK list-mode format is supported",
            ));
        }
        let tof_bins = h.get_u32(TOF_BINS)?.unwrap_or(1);
        if tof_bins > 1 {
            return Err(h.unsupported(
                TOF_BINS,
                "TOF bin addresses are not supported yet (only non-TOF list mode)",
            ));
        }
        let tag_interval_ms = h.get_u32(TAG_INTERVAL)?.unwrap_or(1);
        if tag_interval_ms == 0 {
            return Err(h.unsupported(TAG_INTERVAL, "must be at least 1 ms"));
        }
        let singles_scale_factor = h.get_f64(SINGLES_SCALE)?.unwrap_or(1.0);
        let energy_window_kev = match (h.get_f64(ENERGY_LOWER)?, h.get_f64(ENERGY_UPPER)?) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        };
        let text = |k: &str| h.get(k).map(str::to_string);
        Ok(Self {
            data_file: h.require(DATA_FILE)?.to_string(),
            data_offset_bytes: h.get_u64(DATA_OFFSET)?.unwrap_or(0),
            originating_system: text(ORIGINATING_SYSTEM),
            projections,
            views,
            rings,
            max_ring_difference,
            axial_compression,
            segments: h.get_u32(SEGMENTS)?,
            segment_table: h.get_u32_list(SEGMENT_TABLE)?.unwrap_or_default(),
            tag_interval_ms,
            singles_scale_factor,
            singles_blocks: h.get_u32(SINGLES_BLOCKS)?,
            singles_polling_interval_s: h.get_f64(SINGLES_POLLING_INTERVAL)?,
            energy_window_kev,
            total_listmode_words: h.get_u64(TOTAL_WORDS)?,
            time_sync: h.get_u64(TIME_SYNC)?,
            image_duration_s: h.get_f64(IMAGE_DURATION)?,
            tof_bins,
            study_date: text(STUDY_DATE),
            study_time: text(STUDY_TIME),
            isotope: text(ISOTOPE),
        })
    }

    /// Parses header text and extracts the PETLINK fields in one step.
    pub fn parse(text: &str, origin: &str) -> Result<Self, InterfileError> {
        Self::from_interfile(&InterfileHeader::parse(text, origin)?)
    }

    /// The file-name part of `name of data file` (after the last `/` or `\`).
    pub fn data_file_name(&self) -> &str {
        self.data_file
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or(&self.data_file)
    }

    /// Sinograms in the segment table (the histogrammed sinogram set the header describes;
    /// for the mMR a span-11 set of 837, which is *not* the list-mode address space).
    pub fn segment_table_sinograms(&self) -> u64 {
        self.segment_table.iter().map(|&n| u64::from(n)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_normalised_and_lines_numbered() {
        let text = "!INTERFILE:=\r\n%number of segments :=11\r%Energy Window Lower Level (keV) [1]:= 430\n\nbad line\n; comment\nname of data file := a.l\n";
        let h = InterfileHeader::parse(text, "t.hdr").unwrap();
        assert_eq!(h.get("number of segments"), Some("11"));
        assert_eq!(h.entry("%NUMBER  of segments").unwrap().line, 2);
        assert_eq!(h.get_f64(keys::ENERGY_LOWER).unwrap(), Some(430.0));
        assert_eq!(h.entry("name of data file").unwrap().line, 7);
        assert_eq!(h.ignored_lines, vec![5]);
        assert_eq!(h.get("interfile"), None);
    }

    #[test]
    fn errors_name_key_and_line() {
        let h = InterfileHeader::parse("a:=1\nnumber of views:=25x\n", "h").unwrap();
        let e = h.require_u32("%number of views").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("number of views") && e.contains("25x"));
        let e = h.require_u32("number of rings").unwrap_err().to_string();
        assert!(
            e.contains("number of rings") && e.contains("missing"),
            "{e}"
        );
        assert!(InterfileHeader::parse("just text\n", "x").is_err());
    }
}
