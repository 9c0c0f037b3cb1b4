//! scandaq's operator dashboard: a ratatui view of a [`StatsSnapshot`] that answers at a
//! glance whether data flows, what is lost and where, whether the detectors look healthy and
//! where the files go. PET runs get the energy spectrum, crystal map and coincidences; runs
//! with sampled streams get a MEG panel (rates, triggers, mains line, per-channel RMS and
//! health map) and an ultrasound panel (frame/event/byte rates, incomplete events,
//! per-element amplitude); `d` switches in a run with both.
//!
//! [`App`] is the pure state (snapshot history, selection, freeze, help, a log derived from
//! how snapshots change), [`render()`] draws it into any ratatui frame (tests use
//! `TestBackend`), and [`term::run`] is the terminal loop used in-process and by
//! `scandaq top`. The crate depends on `scandaq-core` only: where snapshots come from (a
//! `LiveStats` in the same process, a control socket) is the caller's business.
//!
//! [`StatsSnapshot`]: scandaq_core::snapshot::StatsSnapshot

pub mod app;
pub mod render;
pub mod term;

pub use app::{Action, App, AppOptions, CoincidenceView, Key, Level, View};
pub use render::render;
