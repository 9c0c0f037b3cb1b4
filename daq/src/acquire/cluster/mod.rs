//! scandaq as a cluster over Arrow Flight (docs/cluster.md): the `cluster.toml` [`config`],
//! every node's Flight [`service`] (`DoAction("stats")`, a builder's `DoPut`), an acquisition
//! node's [`sender`] (slicer thread + one credit-limited link per builder) and its
//! [`acquisition`] run, the [`builder`] node, and the run-level [`manifest`] that merges every
//! node's report. Tokio runs the Flight services and links; the UDP hot path stays on the live
//! run's own threads.
//!
//! May import [`crate::process`] and [`crate::observe`] (and the rest of `acquire`).

pub mod acquisition;
pub mod builder;
pub mod config;
pub mod manifest;
pub mod sender;
pub mod service;
