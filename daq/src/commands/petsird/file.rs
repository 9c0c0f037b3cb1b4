//! Writing one `.petsird` file: the yardl file header, PETSIRD's `Header`, then the
//! `timeBlocks` stream, one `EventTimeBlock` per block in time order (prompts and delayeds
//! of the block's interval, read from the two tables side by side), ended by the stream's end
//! marker. The file is `NAME.inprogress` until it is complete, fsynced and renamed, so a killed
//! or failed export never leaves a file under the final name (a failed one removes its
//! `.inprogress`).

use super::events::{Clamped, Event, EventCursor, EventMap};
use super::yardl;
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// PETSIRD 0.12's protocol schema, as its readers compare it (byte for byte).
pub fn schema() -> &'static str {
    include_str!("schema-0.12.json").trim_end()
}

/// What the time blocks are made of.
pub struct BlockPlan<'a> {
    /// Time origin (block 0 starts here), ps.
    pub t0_ps: i64,
    /// Block length, ms.
    pub block_ms: u32,
    /// The acquisition's last time, ps (blocks continue up to it even without events).
    pub last_t_ps: Option<i64>,
    /// Row -> event mapping.
    pub map: EventMap<'a>,
}

/// What was written.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// Time blocks.
    pub blocks: u64,
    /// Prompt events.
    pub prompts: u64,
    /// Delayed events.
    pub delayed: u64,
    /// File size, bytes.
    pub bytes: u64,
    /// Values put in the nearest bin.
    pub clamped: Clamped,
}

/// Writes `path` (see the module doc): `header` is the encoded PETSIRD `Header`.
pub fn write(
    path: &Path,
    header: &[u8],
    plan: &BlockPlan<'_>,
    prompts: EventCursor,
    delayed: Option<EventCursor>,
) -> Result<Written> {
    let tmp = inprogress(path);
    let file = File::create(&tmp).with_context(|| {
        format!(
            "cannot create {}: check that the directory is writable and has space",
            tmp.display()
        )
    })?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let result = write_body(&mut out, &tmp, header, plan, prompts, delayed)
        .and_then(|w| commit(out, &tmp, path).map(|bytes| Written { bytes, ..w }));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `path.inprogress`.
fn inprogress(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".inprogress");
    PathBuf::from(name)
}

/// Flushes, fsyncs, renames `tmp` to `path` and syncs the directory; returns the size.
fn commit(out: BufWriter<File>, tmp: &Path, path: &Path) -> Result<u64> {
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    std::fs::rename(tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if let Some(dir) = path.parent() {
        scandaq_sinks::durable_file::sync_dir(dir);
    }
    Ok(bytes)
}

/// The file's content: header, blocks, end marker.
fn write_body(
    out: &mut impl Write,
    tmp: &Path,
    header: &[u8],
    plan: &BlockPlan<'_>,
    mut prompts: EventCursor,
    mut delayed: Option<EventCursor>,
) -> Result<Written> {
    let io =
        |e: std::io::Error| anyhow::Error::new(e).context(format!("writing {}", tmp.display()));
    let mut buf = Vec::with_capacity(1 << 16);
    yardl::file_header(&mut buf, schema());
    buf.extend_from_slice(header);
    out.write_all(&buf).map_err(io)?;
    let block_ps = i64::from(plan.block_ms) * 1_000_000_000;
    let (mut p_events, mut d_events): (Vec<Event>, Vec<Event>) = (Vec::new(), Vec::new());
    let mut w = Written::default();
    for k in 0u64.. {
        let end_ps = plan.t0_ps + (k as i64 + 1) * block_ps;
        p_events.clear();
        d_events.clear();
        let mut more = prompts.take_until(end_ps, &plan.map, &mut p_events)?;
        if let Some(d) = delayed.as_mut() {
            more |= d.take_until(end_ps, &plan.map, &mut d_events)?;
        }
        let start_ms = block_start_ms(k, plan.block_ms)?;
        buf.clear();
        encode_block(
            &mut buf,
            start_ms,
            plan.block_ms,
            &p_events,
            delayed.as_ref().map(|_| &d_events[..]),
        );
        out.write_all(&buf).map_err(io)?;
        w.blocks += 1;
        w.prompts += p_events.len() as u64;
        w.delayed += d_events.len() as u64;
        let acquisition_goes_on = plan.last_t_ps.is_some_and(|t| t >= end_ps);
        if !more && !acquisition_goes_on {
            break;
        }
    }
    buf.clear();
    yardl::stream_end(&mut buf);
    out.write_all(&buf).map_err(io)?;
    w.clamped = prompts.clamped;
    check_all_read(&prompts)?;
    if let Some(d) = &delayed {
        check_all_read(d)?;
        w.clamped.energy += d.clamped.energy;
        w.clamped.tof += d.clamped.tof;
    }
    Ok(w)
}

/// Start of block `k`, ms, refused beyond PETSIRD's `uint32` milliseconds (49.7 days).
fn block_start_ms(k: u64, block_ms: u32) -> Result<u32> {
    let start = k * u64::from(block_ms);
    match u32::try_from(start + u64::from(block_ms)) {
        Ok(_) => Ok(start as u32),
        Err(_) => bail!(
            "the run lasts beyond {start} ms from its start: PETSIRD time intervals are uint32 milliseconds (at most 49.7 days)"
        ),
    }
}

/// A table fully read: its rows as its footer says (a table cut short reads fewer).
fn check_all_read(c: &EventCursor) -> Result<()> {
    if c.read != c.rows {
        bail!(
            "a coincidence table gave {} rows but its footer says {}: it is damaged; copy it again, or recover the run",
            c.read,
            c.rows
        );
    }
    Ok(())
}

/// Appends one stream batch holding one `TimeBlock` (case 0, `EventTimeBlock`).
fn encode_block(
    buf: &mut Vec<u8>,
    start_ms: u32,
    block_ms: u32,
    prompts: &[Event],
    delayed: Option<&[Event]>,
) {
    yardl::stream_batch(buf, 1);
    yardl::union_case(buf, 0);
    yardl::uvarint(buf, u64::from(start_ms)); // timeInterval.start
    yardl::uvarint(buf, u64::from(start_ms + block_ms)); // timeInterval.stop
    yardl::len(buf, 0); // singleEvents (policy none)
    event_matrix(buf, Some(prompts));
    event_matrix(buf, delayed);
    yardl::len(buf, 0); // tripleEvents
    yardl::len(buf, 0); // quadrupleEvents
}

/// A `LowerTriangularMatrix<ListOfCoincidenceEvents>` for one module type (1 x 1), or an empty
/// one when the events are not stored.
fn event_matrix(buf: &mut Vec<u8>, events: Option<&[Event]>) {
    let Some(events) = events else {
        yardl::len(buf, 0);
        return;
    };
    yardl::len(buf, 1);
    yardl::len(buf, 1);
    yardl::len(buf, events.len());
    for e in events {
        // detectionBins: fixed vector of 2, then tofIdx.
        yardl::uvarint(buf, u64::from(e[0]));
        yardl::uvarint(buf, u64::from(e[1]));
        yardl::uvarint(buf, u64::from(e[2]));
    }
}
