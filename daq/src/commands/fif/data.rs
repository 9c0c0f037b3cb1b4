//! The second pass of the FIF export: the blocks' payloads, shifted by the channels' delays
//! or as recorded, written as data buffers with zero buffers over the gaps.

use super::align::DelayAligner;
use super::fiff;
use super::parts::PartWriter;
use super::tables::{batches, col};
use anyhow::{Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt16Type};
use std::path::{Path, PathBuf};

/// Writes the raw-data buffers: zero buffers over gaps, then the rows given.
pub(super) struct DataWriter {
    parts: PartWriter,
    nch: usize,
    /// The export's first sample (FIF sample 0).
    origin: i64,
    /// The next sample to write.
    next: i64,
    /// Zero samples written over gaps.
    filled: u64,
    /// Buffers are 32-bit floats (aligned) rather than integers.
    float: bool,
    buf: Vec<u8>,
}

impl DataWriter {
    /// Zero buffers from the next sample up to `start`.
    fn fill_to(&mut self, start: i64) -> Result<()> {
        if start < self.next {
            bail!(
                "meg_blocks rows overlap at sample {start}: the table is not a single clean stream"
            );
        }
        while self.next < start {
            let n = (start - self.next).min(1000) as usize;
            let zeros = vec![0u8; n * self.nch * 4];
            let typ = if self.float {
                fiff::T_FLOAT
            } else {
                fiff::T_INT
            };
            self.parts.buffer(self.next - self.origin, typ, &zeros)?;
            self.filled += n as u64;
            self.next += n as i64;
        }
        Ok(())
    }

    /// Rows as stored: little-endian i32, sample-major.
    fn raw_rows(&mut self, start: i64, payload: &[u8]) -> Result<()> {
        self.fill_to(start)?;
        self.buf.clear();
        self.buf.extend(
            payload
                .chunks_exact(4)
                .flat_map(|c| [c[3], c[2], c[1], c[0]]),
        );
        self.parts
            .buffer(start - self.origin, fiff::T_INT, &self.buf)?;
        self.next = start + (payload.len() / (4 * self.nch)) as i64;
        Ok(())
    }

    /// Aligned rows, sample-major.
    fn float_rows(&mut self, start: i64, rows: &[f32]) -> Result<()> {
        self.fill_to(start)?;
        self.buf.clear();
        self.buf.extend(rows.iter().flat_map(|v| v.to_be_bytes()));
        self.parts
            .buffer(start - self.origin, fiff::T_FLOAT, &self.buf)?;
        self.next = start + (rows.len() / self.nch) as i64;
        Ok(())
    }
}

/// Writes the blocks of a stream: through the aligner when the channels are shifted, else as
/// recorded.
pub(super) struct BlockWriter {
    data: DataWriter,
    /// `Some` when the channels are shifted by their delays.
    aligner: Option<DelayAligner>,
    nch: usize,
    /// One block's samples, decoded.
    samples: Vec<i32>,
}

impl BlockWriter {
    /// Writes the data of `nch` channels from sample `first` on into `parts` (float buffers
    /// through `aligner` when given).
    pub(super) fn new(
        parts: PartWriter,
        nch: usize,
        first: i64,
        aligner: Option<DelayAligner>,
    ) -> Self {
        Self {
            data: DataWriter {
                parts,
                nch,
                origin: first,
                next: first,
                filled: 0,
                float: aligner.is_some(),
                buf: Vec::new(),
            },
            aligner,
            nch,
            samples: Vec::new(),
        }
    }

    /// Second pass: the samples of `blocks_path`, one record batch at a time.
    pub(super) fn write_blocks(&mut self, blocks_path: &Path) -> Result<()> {
        let file = blocks_path.display().to_string();
        for b in batches(blocks_path, None)? {
            let b = &b?;
            let fs = col(b, "first_sample", &file)?.as_primitive::<Int64Type>();
            let ns = col(b, "n_samples", &file)?.as_primitive::<UInt16Type>();
            let payload = col(b, "payload", &file)?.as_binary::<i32>();
            for i in 0..b.num_rows() {
                let start = fs.value(i);
                let p = payload.value(i);
                if p.len() != ns.value(i) as usize * self.nch * 4 {
                    bail!("block at sample {start}: payload length does not match its shape");
                }
                self.block(start, p)?;
            }
        }
        Ok(())
    }

    /// One block's payload (little-endian i32, sample-major) starting at sample `start`.
    fn block(&mut self, start: i64, payload: &[u8]) -> Result<()> {
        let Some(aligner) = self.aligner.as_mut() else {
            return self.data.raw_rows(start, payload);
        };
        self.samples.clear();
        self.samples.extend(
            payload
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        let data = &mut self.data;
        let mut failed: Option<anyhow::Error> = None;
        aligner.push(start, &self.samples, &mut |first, rows| {
            if failed.is_none()
                && let Err(e) = data.float_rows(first, rows)
            {
                failed = Some(e);
            }
        });
        failed.map_or(Ok(()), Err)
    }

    /// Flushes the aligner and completes the files: (zero samples filled, files written).
    pub(super) fn finish(mut self) -> Result<(u64, Vec<PathBuf>)> {
        if let Some(aligner) = self.aligner.as_mut() {
            let data = &mut self.data;
            let mut failed: Option<anyhow::Error> = None;
            aligner.close(&mut |first, rows| {
                if failed.is_none()
                    && let Err(e) = data.float_rows(first, rows)
                {
                    failed = Some(e);
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
        }
        let filled = self.data.filled;
        let files = self.data.parts.finish()?;
        Ok((filled, files))
    }
}
