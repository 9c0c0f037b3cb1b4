//! The PETsys `.idxf` index: one text line per acquisition step,
//! `startOffset endOffset firstFrameID lastFrameID step1 step2`.

use std::fmt::Write as _;

/// One acquisition step of a `.rawf`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IdxfStep {
    /// First byte of the step in the `.rawf`.
    pub start_offset: u64,
    /// One past the last byte.
    pub end_offset: u64,
    /// First frameID (raw, 36 bits).
    pub first_frame_id: u64,
    /// Last frameID.
    pub last_frame_id: u64,
    /// Scan variable 1 (e.g. bias voltage).
    pub step1: f64,
    /// Scan variable 2.
    pub step2: f64,
}

/// A bad `.idxf` line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(".idxf line {line}: {message}")]
pub struct IdxfError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses an index file.
pub fn parse(text: &str) -> Result<Vec<IdxfStep>, IdxfError> {
    let mut steps = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let err = |message: String| IdxfError {
            line: i + 1,
            message,
        };
        if f.len() < 6 {
            return Err(err(format!(
                "expected 6 columns (startOffset endOffset firstFrameID lastFrameID step1 step2), found {}",
                f.len()
            )));
        }
        let int = |k: usize| {
            f[k].parse::<u64>()
                .map_err(|_| err(format!("column {}: {:?} is not an integer", k + 1, f[k])))
        };
        let float = |k: usize| {
            f[k].parse::<f64>()
                .map_err(|_| err(format!("column {}: {:?} is not a number", k + 1, f[k])))
        };
        let step = IdxfStep {
            start_offset: int(0)?,
            end_offset: int(1)?,
            first_frame_id: int(2)?,
            last_frame_id: int(3)?,
            step1: float(4)?,
            step2: float(5)?,
        };
        if step.end_offset < step.start_offset {
            return Err(err(format!(
                "endOffset {} is before startOffset {}",
                step.end_offset, step.start_offset
            )));
        }
        steps.push(step);
    }
    Ok(steps)
}

/// Writes an index file.
pub fn format(steps: &[IdxfStep]) -> String {
    let mut out = String::new();
    for s in steps {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            s.start_offset, s.end_offset, s.first_frame_id, s.last_frame_id, s.step1, s.step2
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let s = vec![IdxfStep {
            start_offset: 64,
            end_offset: 4096,
            first_frame_id: 7,
            last_frame_id: 99,
            step1: 35.5,
            step2: 0.0,
        }];
        assert_eq!(parse(&format(&s)).unwrap(), s);
        let e = parse("64 10 0 0 0 0\n").unwrap_err();
        assert!(e.to_string().contains("line 1") && e.message.contains("before"));
        assert!(
            parse("1 2 3\n")
                .unwrap_err()
                .message
                .contains("expected 6 columns")
        );
    }
}
