//! The subcommands, one module each: what `scandaq demo`, `replay`, `recover`, `export`,
//! `calibrate` and `inspect` do beyond parsing their arguments.
//!
//! Top layer: may import [`crate::acquire`], [`crate::process`] and [`crate::observe`];
//! nothing below imports a command.

pub mod calibrate;
pub mod castor;
pub mod demo;
pub mod fif;
pub mod inspect;
pub mod petlink_replay;
pub mod recover;
pub mod replay;
