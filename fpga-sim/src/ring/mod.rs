//! The `ring` preset (docs/physics.md §1): a full PET ring of 8×8-crystal LYSO modules (default
//! 32 modules = 2048 channels, face radius 400 mm) around point, line or cylinder sources of
//! back-to-back 511 keV photons (acollinearity, optional positron range), with an optional
//! water phantom (Compton scatter in the object), inter-crystal scatter (multi-hit photons),
//! Lu-176 background and dark counts, read out by the same TOFPET2 electronics model as the
//! bench preset. [`RingSim`] generates frames slice by slice; [`write_ring_files`] writes a
//! run as `ring.rawf`/`ring.idxf`, `truth.parquet` (extended schema), `calib/` and
//! `summary.json`.

pub mod config;
pub mod files;
pub mod geometry;
pub mod physics;
pub mod sim;

pub use config::{Phantom, RingConfig, Source};
pub use files::{RING_IDXF_FILE, RING_RAWF_FILE, ring_file_list, write_ring_files};
pub use geometry::{FaceHit, RingGeometry};
pub use sim::{RingSim, RingSummary};
