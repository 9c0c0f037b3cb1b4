//! The live path: inputs (UDP with batched receive, TCP, raw archives) feeding bounded rings,
//! per-board sequence tracking and loss accounting, the run configuration file, and the run
//! loop that wires inputs to the processing stage ([`live`]).
//!
//! May import [`crate::process`] and [`crate::observe`]; never [`crate::commands`].

pub mod ingest;
pub mod live;
pub mod net;
pub mod ring;
pub mod run_config;
pub mod seq_tracker;
