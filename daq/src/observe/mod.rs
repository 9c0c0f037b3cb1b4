//! What the operator and scripts see of a run: the live statistics snapshot, the control
//! socket, markers, the dashboard glue, the disk watch, the stop flag and signal handling,
//! and the progress bar.
//!
//! Bottom layer of the crate: imports only the library crates, never another layer.

pub mod control;
pub mod dashboard;
pub mod disk_watch;
pub mod live_stats;
pub mod loss_timeline;
pub mod markers;
pub mod progress;
pub mod stop;
