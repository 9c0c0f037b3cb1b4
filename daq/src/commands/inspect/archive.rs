//! `scandaq inspect FILE.sdq`: a summary of a scandaq raw archive (docs/formats.md §1): its
//! header and metadata (what recorded it, the stream settings it carries), and its packets
//! by source and payload format, read header by header (payloads are not decoded).

use crate::acquire::archive_file::{MAX_ARCHIVED_PAYLOAD, open_archive};
use anyhow::{Context, Result};
use scandaq_decoders::transport::{HEADER_LEN, TransportHeader, payload_format};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// What the packets of an archive hold.
#[derive(Debug, Default)]
struct PacketCounts {
    /// (source id, payload format) -> (packets, payload bytes).
    by_source: BTreeMap<(u32, u16), (u64, u64)>,
    /// Bytes skipped where no packet header was found.
    skipped_bytes: u64,
    /// Bytes of a packet cut short at the end of the file.
    truncated_bytes: u64,
}

/// The name of a payload format.
fn format_name(format: u16) -> String {
    match format {
        payload_format::PETSYS_TOFPET2 => "PETsys TOFPET2 frames".into(),
        payload_format::PETLINK32 => "PETLINK 32-bit words".into(),
        payload_format::OPM_BLOCK => "OPM-MEG sample blocks".into(),
        payload_format::US_RF_EVENT => "ultrasound RF event chunks".into(),
        payload_format::CONTROL => "control records".into(),
        other => format!("payload format {other}"),
    }
}

/// Prints a summary of the raw archive `path` on stdout.
pub fn inspect_archive(path: &Path) -> Result<()> {
    let (mut file, meta) = open_archive(path)?;
    let meta_len = meta.len();
    println!(
        "{}: scandaq raw archive (.sdq), {} bytes of metadata",
        path.display(),
        meta_len
    );
    print_metadata(&meta);
    let counts = count_packets(path, &mut file)?;
    if counts.by_source.is_empty() {
        println!("  packets: none");
    }
    for ((source, format), (packets, bytes)) in &counts.by_source {
        println!(
            "  source {source}: {packets} packets of {} ({bytes} payload bytes)",
            format_name(*format)
        );
    }
    println!(
        "  holds PET data: {}",
        if counts
            .by_source
            .keys()
            .any(|(_, f)| *f == payload_format::PETSYS_TOFPET2 || *f == payload_format::PETLINK32)
        {
            "yes (a replay needs --calib DIR or --petsys-config FILE)"
        } else {
            "no (OPM-MEG / ultrasound streams only: a replay needs no calibration)"
        }
    );
    if counts.skipped_bytes > 0 || counts.truncated_bytes > 0 {
        println!(
            "  damaged: {} bytes skipped between packets, {} bytes of a packet cut at the end \
             (a replay counts them as archive_resync_skipped_bytes / truncated_bytes)",
            counts.skipped_bytes, counts.truncated_bytes
        );
    }
    Ok(())
}

/// Prints what the archive's metadata says (what recorded it, the stream settings).
fn print_metadata(meta: &[u8]) {
    if meta.is_empty() {
        println!("  metadata: none");
        return;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(meta) else {
        println!("  metadata: not JSON (a replay will refuse it)");
        return;
    };
    let text = |k: &str| value.get(k).map(|v| v.to_string());
    if let Some(s) = value.get("source").and_then(|s| s.as_str()) {
        println!("  recorded by {s}");
    }
    if let Some(run) = text("run") {
        println!(
            "  recorded by scandaq run {run} (version {}), inputs {}",
            text("software_version").unwrap_or_else(|| "?".into()),
            text("inputs").unwrap_or_else(|| "?".into())
        );
    }
    if let Some(serde_json::Value::Object(streams)) = value.get("streams") {
        let sections: Vec<&str> = streams
            .iter()
            .filter(|(_, v)| v.as_object().is_some_and(|o| !o.is_empty()))
            .map(|(k, _)| k.as_str())
            .collect();
        if !sections.is_empty() {
            println!("  stream settings stored: [{}]", sections.join("], ["));
        }
    }
}

/// Reads the packet headers after the metadata, skipping payloads.
fn count_packets(path: &Path, file: &mut std::fs::File) -> Result<PacketCounts> {
    let mut counts = PacketCounts::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 4 << 20];
    loop {
        let n = file
            .read(&mut chunk)
            .with_context(|| format!("read error in {}", path.display()))?;
        buf.extend_from_slice(&chunk[..n]);
        let mut off = 0;
        while buf.len() - off >= HEADER_LEN {
            let h = match TransportHeader::parse(&buf[off..]) {
                Ok(h) if h.payload_len <= MAX_ARCHIVED_PAYLOAD => h,
                _ => {
                    counts.skipped_bytes += 1;
                    off += 1;
                    continue;
                }
            };
            if buf.len() - off < h.packet_len() {
                break;
            }
            let e = counts
                .by_source
                .entry((h.source_id, h.payload_format))
                .or_default();
            e.0 += 1;
            e.1 += u64::from(h.payload_len);
            off += h.packet_len();
        }
        buf.drain(..off);
        if n == 0 {
            counts.truncated_bytes = buf.len() as u64;
            return Ok(counts);
        }
    }
}
