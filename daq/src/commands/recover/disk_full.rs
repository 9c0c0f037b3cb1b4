//! The advice a recovery gives when the disk is full: how much it needs, where, and that
//! running it again once there is room loses nothing.

use std::path::Path;

/// When `e` is a full disk: what the recovery needs (bytes, where) and what to do.
pub(super) fn disk_full_advice(
    e: &anyhow::Error,
    dir: &Path,
    what: &str,
    needed: u64,
) -> Option<String> {
    let full = e.chain().any(|c| {
        c.downcast_ref::<scandaq_sinks::SinkError>()
            .is_some_and(scandaq_sinks::SinkError::is_disk_full)
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(scandaq_sinks::error::is_disk_full)
    });
    if !full {
        return None;
    }
    let free = scandaq_sinks::error::free_bytes(dir).unwrap_or(0);
    Some(format!(
        "the disk holding {} is full: recover needs about {} free there to {what} ({} free now); free space (or copy the run directory to a disk with room) and run `scandaq recover` again — nothing is lost meanwhile",
        dir.display(),
        scandaq_sinks::error::human_bytes(needed),
        scandaq_sinks::error::human_bytes(free),
    ))
}
