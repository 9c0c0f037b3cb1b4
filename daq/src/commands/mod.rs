//! The subcommands, one module each: what `scandaq demo`, `replay`, `recover`, `export`,
//! `calibrate` and `inspect` do beyond parsing their arguments.
//!
//! Top layer: may import [`crate::acquire`], [`crate::process`] and [`crate::observe`];
//! nothing below imports a command.

pub mod attach;
pub mod calibrate;
pub mod castor;
pub mod config_check;
pub mod demo;
pub mod export;
pub mod fif;
pub mod inspect;
mod outcome;
pub mod petlink_replay;
pub mod recover;
pub mod replay;
pub mod run;

pub use outcome::finish_run;
