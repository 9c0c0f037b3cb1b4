//! Turning raw frames into physics and tables: the decode + calibrate [`kernel`], the loaded
//! calibration ([`calib_load`]), one board's frame decoding ([`frame_decode`]), the parallel
//! [`pipeline`] and its time-order [`merge`], the [`cluster`] wire protocol, slices and
//! builder output, the coincidence stage and its PETsys trigger settings ([`petsys_trigger`],
//! [`trigger_map`]), the [`rotating_table`] sequence every long table is written as, the singles
//! columns, the OPM-MEG / ultrasound [`streams`], and the
//! [`run`] lifecycle (run directory, manifest, states) shared by every command that writes a
//! run.
//!
//! May import [`crate::observe`]; never [`crate::acquire`] or [`crate::commands`].

pub mod calib_load;
pub mod cluster;
pub mod coinc_stage;
pub mod frame_chunk;
pub mod frame_decode;
pub mod kernel;
pub mod merge;
pub mod petsys_trigger;
pub mod pipeline;
pub mod read_blocks;
pub mod rotating_table;
pub mod run;
pub mod singles_columns;
pub mod streams;
pub mod trigger_map;
