//! scandaq: the acquisition pipeline behind the `scandaq` command.
//!
//! The crate is in four layers; each imports only the layers below it:
//!
//! - [`commands`]: one module per subcommand (demo, replay, recover, export, calibrate, ...);
//! - [`acquire`]: the live path (UDP/TCP/archive inputs, rings, sequence tracking, the run loop);
//! - [`process`]: decode + calibrate kernel, time-order merge, coincidence stage, Parquet sinks
//!   glue, OPM-MEG / ultrasound streams, and the run lifecycle (process::run: directory, manifest, states);
//! - [`observe`]: live statistics, the control socket, markers, the dashboard glue, disk watch.
//!
//! `main.rs` only parses the command line, calls a command and maps errors to exit codes.

pub mod acquire;
pub mod commands;
pub mod observe;
pub mod process;
