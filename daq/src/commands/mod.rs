//! The subcommands, one module each: what `scandaq demo`, `replay`, `recover`, `export`
//! (castor, fif, bids),
//! `calibrate`, `inspect`, `report`, `node` and `cluster` do beyond parsing their arguments.
//!
//! Top layer: may import [`crate::acquire`], [`crate::process`] and [`crate::observe`];
//! nothing below imports a command.
//!
//! `demo` exists only with the `demo` feature (on by default): it is the one command that
//! needs the simulator (scandaq-fpga-sim), so a scanner build without it carries no simulator.

pub mod attach;
pub mod bids;
pub mod calibrate;
pub mod castor;
pub mod cli;
pub mod cluster;
pub mod coinc_run;
pub mod config_check;
#[cfg(feature = "demo")]
pub mod demo;
pub mod export;
pub mod fif;
pub mod inspect;
pub mod node;
mod outcome;
pub mod petlink_replay;
pub mod petsird;
pub mod recover;
pub mod replay;
pub mod report;
pub mod run;

pub use outcome::finish_run;
