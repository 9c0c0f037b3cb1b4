//! scandaq: the acquisition pipeline behind the `scandaq` command.
//!
//! [`calibrate`] is the decode+calibrate kernel, [`merge`] restores time order, [`pipeline`]
//! wires input -> parallel blocks -> merge -> Parquet, [`session`] turns that into a numbered
//! run with a manifest; [`replay`], [`demo`] and [`inspect`] are the commands;
//! [`petlink_replay`] replays PETLINK 32-bit list-mode files.

pub mod calib_load;
pub mod calibrate;
pub mod calibrate_cmd;
pub mod coinc_stage;
pub mod control;
pub mod dashboard;
pub mod demo;
pub mod disk_watch;
pub mod export;
pub mod export_fif;
pub mod ingest;
pub mod inspect;
pub mod live;
pub mod live_stats;
pub mod markers;
pub mod merge;
pub mod net_sources;
pub mod petlink_replay;
pub mod pipeline;
pub mod recover;
pub mod replay;
pub mod ring;
pub mod run_config;
pub mod seq_tracker;
pub mod session;
pub mod singles_columns;
pub mod streams;
