//! `scandaq inspect PATH`: a summary of a PETsys `.rawf`, a scandaq raw archive `.sdq`
//! ([`archive`]), a PETLINK `.l` list-mode file with its Interfile header ([`petlink`]), a
//! scandaq Parquet file or a run directory (format, counts, time span, losses), without
//! calibration. What a file is comes from its first bytes (`PAR1`, `SDQA`), then its name
//! (`.l`); anything else is read as a `.rawf`. A `.rawf` is scanned with the replay's
//! [`FrameScanner`], so its losses carry the replay's reason names and counts (frame IDs
//! judged, repaired or dropped the same way). A directory without a manifest is said not to
//! be a run.

mod archive;
mod petlink;

use anyhow::{Context, Result, bail};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;
use scandaq_decoders::FrameScanner;
use scandaq_decoders::rawf::{RAWF_HEADER_LEN, RawfHeader};
use scandaq_sinks::Manifest;
use std::io::Read;
use std::path::Path;

/// Prints a summary of `path` on stdout.
pub fn inspect(path: &Path) -> Result<()> {
    if path.is_dir() {
        if !path.join("manifest.json").exists() {
            bail!(
                "{} is a directory but not a scandaq run (no manifest.json): give a run \
                 directory (OUTDIR/run-NNNNNN) or a file (.rawf, .sdq, .l, .parquet)",
                path.display()
            );
        }
        return inspect_run_dir(path);
    }
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if n == 4 && &magic == b"PAR1" {
        return inspect_parquet(path);
    }
    if n == 4 && magic == scandaq_decoders::archive::ARCHIVE_MAGIC {
        return archive::inspect_archive(path);
    }
    drop(f);
    if crate::commands::petlink_replay::is_petlink(path, None) {
        return petlink::inspect_petlink(path);
    }
    inspect_rawf(path)
}

fn inspect_run_dir(dir: &Path) -> Result<()> {
    let m = Manifest::read(dir)?;
    println!(
        "scandaq run {} ({}), {}",
        m.run,
        m.mode,
        if m.complete { "complete" } else { "INCOMPLETE" }
    );
    println!("  sources: {}", m.sources.join(", "));
    println!(
        "  energy unit: {}  calibration sha256 {}",
        m.energy_unit, m.calibration.checksum
    );
    for (k, v) in &m.counts {
        println!("  {k}: {v}");
    }
    if let (Some(a), Some(b)) = (m.first_t_ps, m.last_t_ps) {
        println!("  t_ps {a} .. {b} ({:.6} s)", (b - a) as f64 * 1e-12);
    }
    println!("  losses: {}", m.losses.summary());
    for file in &m.files {
        println!("  {} {} rows {} bytes", file.path, file.rows, file.bytes);
    }
    Ok(())
}

fn inspect_parquet(path: &Path) -> Result<()> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
    let meta = reader.metadata();
    let fm = meta.file_metadata();
    println!(
        "{}: Parquet, {} rows in {} row groups",
        path.display(),
        fm.num_rows(),
        meta.num_row_groups()
    );
    let columns: Vec<String> = fm
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    println!("  columns: {}", columns.join(", "));
    if let Some(kv) = fm.key_value_metadata() {
        for e in kv
            .iter()
            .filter(|e| e.key.starts_with("scandaq.") || e.key.ends_with("_t_ps"))
        {
            println!("  {} = {}", e.key, e.value.as_deref().unwrap_or(""));
        }
    }
    let time_col = columns.iter().position(|c| c == "t_ps" || c == "t_true_ps");
    if let Some(ci) = time_col {
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for rg in meta.row_groups() {
            if let Some(Statistics::Int64(s)) = rg.column(ci).statistics()
                && let (Some(a), Some(b)) = (s.min_opt(), s.max_opt())
            {
                lo = lo.min(*a);
                hi = hi.max(*b);
            }
        }
        if lo <= hi {
            println!(
                "  {} {lo} .. {hi} ({:.6} s)",
                columns[ci],
                (hi - lo) as f64 * 1e-12
            );
        }
    }
    if let Some(dir) = path.parent()
        && let Ok(m) = Manifest::read(dir)
    {
        println!("  run {} losses: {}", m.run, m.losses.summary());
    }
    Ok(())
}

fn inspect_rawf(path: &Path) -> Result<()> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut head = [0u8; RAWF_HEADER_LEN];
    let mut n = 0;
    while n < head.len() {
        let k = file.read(&mut head[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let header = match RawfHeader::parse(&head[..n]) {
        Ok(h) => h,
        Err(e) => bail!(
            "{}: not a Parquet file nor a usable PETsys .rawf ({e})",
            path.display()
        ),
    };
    println!(
        "{}: PETsys .rawf, {} mode, clock {} Hz, DAQ sync epoch {} s",
        path.display(),
        if header.qdc_mode { "QDC" } else { "ToT" },
        header.frequency_hz,
        header.daq_sync_epoch_s
    );
    let mut scanner = FrameScanner::new();
    let mut spans = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8 << 20];
    let mut channels = std::collections::BTreeSet::new();
    loop {
        let k = file.read(&mut buf)?;
        let eof = k == 0;
        carry.extend_from_slice(&buf[..k]);
        spans.clear();
        let used = scanner.scan(&carry, eof, &mut spans);
        for s in &spans {
            for w in carry[s.hits_offset..s.hits_offset + 8 * s.n_hits as usize].chunks_exact(8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(w);
                channels.insert((u64::from_le_bytes(b) >> 42) as u32);
            }
        }
        carry.drain(..used);
        if eof {
            break;
        }
    }
    println!(
        "  frames {}  hits {}  channels seen {}",
        scanner.frames,
        scanner.hits,
        channels.len()
    );
    if let Some((a, b)) = scanner.frame_range {
        let period = 1e12 / f64::from(header.frequency_hz);
        println!(
            "  frames {a} .. {b} (unwrapped; {} wraps), span {:.6} s",
            scanner.wraps(),
            (b - a + 1) as f64 * 1024.0 * period * 1e-12
        );
    }
    // The frame scanner is the replay's: these are the reasons and counts a replay of this
    // file records, before calibration and time ordering.
    let mut losses = scanner.losses.clone();
    let repairs = losses.take_repairs();
    println!(
        "  losses: {} (frame scanning, as a replay counts them; calibration and time-order \
         losses need a replay)",
        losses.summary()
    );
    if !repairs.is_empty() {
        let list: Vec<String> = repairs.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "  repaired: {} (frame IDs restored from their neighbours; no hit lost)",
            list.join(", ")
        );
    }
    Ok(())
}
