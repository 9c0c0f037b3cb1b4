//! The live path: inputs (UDP with batched receive, TCP, raw archives) feeding bounded rings,
//! per-board sequence tracking and loss accounting, the run configuration file, and the live
//! run ([`live`]: its `LiveRun` owns one acquisition, from the inputs to the processing stage
//! and the sinks), and the [`cluster`] nodes over Arrow Flight.
//!
//! May import [`crate::process`] and [`crate::observe`]; never [`crate::commands`].

pub mod archive_file;
pub mod cluster;
pub mod ingest;
pub mod live;
pub mod net;
pub mod ring;
pub mod run_config;
pub mod seq_tracker;
