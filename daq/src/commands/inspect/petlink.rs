//! `scandaq inspect FILE.l`: a summary of a PETLINK 32-bit list-mode file with its Interfile
//! header (found as `scandaq replay` finds it): what the header says, and every word counted
//! by kind with the replay's decoder (nothing written).

use crate::commands::petlink_replay::{READ_CHUNK, find_header, word_counts_line};
use crate::process::read_blocks::read_up_to;
use anyhow::{Context, Result};
use scandaq_decoders::petlink::{EventBatch, PetlinkDecoder, SinglesRateBatch};
use std::io::{Seek, SeekFrom};
use std::path::Path;

/// Prints a summary of the PETLINK list-mode file `path` on stdout.
pub fn inspect_petlink(path: &Path) -> Result<()> {
    let (header_path, h) = find_header(path, None)?;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let file_len = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    println!(
        "{}: PETLINK 32-bit list mode, {file_len} bytes; header {}",
        path.display(),
        header_path.display()
    );
    println!(
        "  originating system {}: {} bins x {} views x {} rings, max ring difference {}, span {}, \
         time tags every {} ms{}",
        h.originating_system.as_deref().unwrap_or("(not named)"),
        h.projections,
        h.views,
        h.rings,
        h.max_ring_difference,
        h.axial_compression,
        h.tag_interval_ms,
        h.study_date
            .as_deref()
            .map_or(String::new(), |d| format!(", study date {d}"))
    );
    if let Some(total) = h.total_listmode_words {
        println!("  header: {total} list-mode words in the acquisition");
    }
    file.seek(SeekFrom::Start(h.data_offset_bytes.min(file_len)))
        .with_context(|| format!("cannot seek in {}", path.display()))?;
    let mut decoder = PetlinkDecoder::from_header(&h);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = read_up_to(&mut file, &mut buf)
            .with_context(|| format!("read error in {}", path.display()))?;
        if n == 0 {
            break;
        }
        // Counted only: the batches are dropped.
        let (mut events, mut singles) = (EventBatch::default(), SinglesRateBatch::default());
        decoder.decode(&buf[..n], &mut events, &mut singles);
    }
    let c = decoder.finish();
    println!("  {}", word_counts_line(c));
    match (c.first_time_ms, c.max_time_ms) {
        (Some(a), Some(b)) => println!(
            "  duration {:.3} s (time tags {a}..{b} ms)",
            c.duration_ms() as f64 / 1e3
        ),
        _ => println!("  no time tags: no time axis"),
    }
    if c.address_out_of_range > 0 {
        println!(
            "  {} events address sinograms beyond the header's layout",
            c.address_out_of_range
        );
    }
    Ok(())
}
