//! scandaq-sinks: everything that writes scandaq's outputs.
//!
//! [`parquet_table`] writes one Parquet file atomically (`.inprogress`, fsync, rename) with
//! per-column encodings and key-value metadata; [`singles`] maps hit batches onto the singles
//! schema; [`coincidences`] the prompt and delayed coincidence tables; [`petlink_tables`] holds the PETLINK list-mode events and singles-rate tables;
//! [`run_dir`] allocates never-reused run numbers; [`manifest`] is the run manifest,
//! written atomically.

pub mod archive;
pub mod castor;
pub mod coincidences;
mod direct_chunk;
pub mod durable_file;
pub mod error;
pub mod manifest;
pub mod meg_tables;
pub mod parquet_table;
pub mod petlink_tables;
pub mod rf_tables;
pub mod run_dir;
pub mod salvage;
pub mod singles;
pub mod table_files;

pub use error::SinkError;
pub use manifest::{FileRecord, LossTime, Manifest};
pub use parquet_table::{
    Compression, EncodeBudget, FileMetadata, ParquetTableWriter, WriteOptions,
};
pub use run_dir::RunDir;
pub use table_files::{TableFiles, table_file_index, table_file_name};
