//! The cluster's data side, without the network (docs/cluster.md): the wire [`protocol`]
//! (singles schema, piece metadata, credits), the time-slice adapter [`slices`] (the one
//! place the transport meets the slicing library) and a builder's [`builder_out`]
//! (hive-partitioned tables and manifest).
//!
//! May import the rest of [`crate::process`] and [`crate::observe`].

pub mod builder_out;
pub mod protocol;
pub mod slices;
