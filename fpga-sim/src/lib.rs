//! scandaq-fpga-sim: a front-end emulator that turns simulated PET detector physics into
//! PETsys TOFPET2 frames, with the ground truth of every emitted hit beside them.
//!
//! The `bench` preset (docs/physics.md §1–2): two 8×8 LYSO modules facing a Na-22 point source,
//! read one-to-one; dark counts, Lu-176 background, per-channel skew, gain and TDC response,
//! dead time and frame overflow. [`BenchSim`] generates frames slice by slice (for in-process
//! use by the `scandaq demo` pipeline and tests); [`write_bench_files`] writes a whole run as
//! `.rawf`/`.idxf`, `truth.parquet`, a PETsys-style `calib/` folder and `summary.json`;
//! [`stream()`] sends the frames live as transport packets over UDP or TCP, one stream per
//! board, with deterministic fault injection ([`generate_packets`] does the same in-process).
//!
//! The `ring` preset ([`ring`]): a full PET ring (default 32 modules × 64 crystals) around
//! point, line or cylinder sources, with optional phantom scatter and inter-crystal scatter,
//! through the same electronics; [`RingSim`] and [`write_ring_files`].
//! The `opm` and `us` presets ([`opm`], [`us`]) stream OPM-MEG blocks and ultrasound RF events.
//! Every streaming preset sends through one packet sender, [`packet_out`] (sequence numbers,
//! CRC, faults, pacing; UDP, TCP, `.sdq` archive or closure).
//! Everything is deterministic in the seed.

pub mod cli;
pub mod config;
pub mod detector;
pub mod files;
pub mod opm;
pub mod packet_out;
pub mod preset_args;
pub mod ring;
pub mod rng;
pub mod sim;
pub mod stream;
pub mod truth;
pub mod us;

pub use config::{BenchConfig, SimError};
pub use files::{write_bench_files, write_calibration_dir};
pub use ring::{Phantom, RingConfig, RingSim, RingSummary, Source, write_ring_files};
pub use sim::{BenchSim, SimSummary};
pub use stream::{
    BoardSummary, FaultCounts, Faults, StreamConfig, StreamSummary, Transport, generate_packets,
    stream,
};
pub use truth::{HitKind, TruthBatch, TruthExtra};
