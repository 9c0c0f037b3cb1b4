//! The run lifecycle's vocabulary: the states a run moves through, why it stopped and why it
//! failed. One definition each, serialised as the strings docs/tables.md documents (the
//! manifest, the stats snapshot, the control socket and the dashboard all use these).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The run's state: configured -> running -> stopping -> stopped | failed, and `recovered`
/// once `scandaq recover` has closed a run that died. `idle` is a dashboard's state before
/// any run is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Nothing configured yet.
    Idle,
    /// Run directory and sinks open, inputs not started.
    Configured,
    /// Inputs started, data flowing. A manifest left in this state means the process died.
    #[default]
    Running,
    /// A stop was requested (limit, end of stream, signal, failure): inputs stop, rings drain.
    Stopping,
    /// Files committed, manifest written: the run ended as asked.
    Stopped,
    /// The run ended on a failure (`failure` and `error` in the manifest say which); what was
    /// committed before it is intact. Manifests of older versions said `error`.
    #[serde(alias = "error")]
    Failed,
    /// A run that died (SIGKILL, power cut) closed afterwards by `scandaq recover`.
    Recovered,
}

impl RunState {
    /// Every state, in order.
    pub const ALL: [RunState; 7] = [
        RunState::Idle,
        RunState::Configured,
        RunState::Running,
        RunState::Stopping,
        RunState::Stopped,
        RunState::Failed,
        RunState::Recovered,
    ];

    /// Lower-case name, as in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            RunState::Idle => "idle",
            RunState::Configured => "configured",
            RunState::Running => "running",
            RunState::Stopping => "stopping",
            RunState::Stopped => "stopped",
            RunState::Failed => "failed",
            RunState::Recovered => "recovered",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// `--duration` reached.
    #[serde(rename = "duration limit")]
    DurationLimit,
    /// `--max-hits` reached.
    #[serde(rename = "hit limit")]
    HitLimit,
    /// `--max-bytes` reached.
    #[serde(rename = "byte limit")]
    ByteLimit,
    /// Every board sent end-of-stream, or every input closed.
    #[serde(rename = "end of stream")]
    EndOfStream,
    /// A file replay or the demo read its whole input.
    #[serde(rename = "end of input", alias = "end of file")]
    EndOfInput,
    /// SIGINT/SIGTERM, `scandaq ctl stop`, or the dashboard's stop.
    #[serde(rename = "stop requested")]
    StopRequested,
    /// A failure ended the run (see [`FailureReason`]).
    #[serde(rename = "failure", alias = "error")]
    Failure,
    /// The process ended without finishing the run (SIGKILL, power cut); written by
    /// `scandaq recover`.
    #[serde(
        rename = "process ended",
        alias = "the process ended without finishing the run (finalised by scandaq recover)"
    )]
    ProcessEnded,
}

impl StopReason {
    /// The documented string.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::DurationLimit => "duration limit",
            StopReason::HitLimit => "hit limit",
            StopReason::ByteLimit => "byte limit",
            StopReason::EndOfStream => "end of stream",
            StopReason::EndOfInput => "end of input",
            StopReason::StopRequested => "stop requested",
            StopReason::Failure => "failure",
            StopReason::ProcessEnded => "process ended",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The output filesystem is full (ENOSPC or a quota).
    DiskFull,
    /// The run could not start (port in use, an input that cannot be opened, ...).
    StartFailed,
    /// An input failed while running (e.g. a TCP front end never reached).
    InputFailed,
    /// An output file could not be written (an I/O error other than a full disk).
    WriteFailed,
    /// Processing stopped on an error.
    ProcessingFailed,
}

impl FailureReason {
    /// The documented string.
    pub fn name(self) -> &'static str {
        match self {
            FailureReason::DiskFull => "disk_full",
            FailureReason::StartFailed => "start_failed",
            FailureReason::InputFailed => "input_failed",
            FailureReason::WriteFailed => "write_failed",
            FailureReason::ProcessingFailed => "processing_failed",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What made the run: `scandaq demo`, `replay` (a file or raw archive), `run` (live
/// front-ends), or `recover` (the tail of a killed run's raw archive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// The embedded simulator.
    Demo,
    /// A recorded file or raw archive.
    Replay,
    /// Live front-ends.
    #[default]
    Run,
    /// The tail replay of `scandaq recover`.
    Recover,
}

impl RunMode {
    /// The documented name (`demo`, `replay`, `run`, `recover`).
    pub fn name(self) -> &'static str {
        match self {
            RunMode::Demo => "demo",
            RunMode::Replay => "replay",
            RunMode::Run => "run",
            RunMode::Recover => "recover",
        }
    }
}

/// What the singles' `energy_kev` column holds: keV (energy-calibrated), ToT in ns (no energy
/// table, flag bit 0 set on every single), or nothing (a run without PET singles, e.g. PETLINK).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnergyUnit {
    /// Calibrated energy in keV.
    #[serde(rename = "keV")]
    Kev,
    /// Time over threshold in ns.
    #[serde(rename = "ToT_ns")]
    TotNs,
    /// No PET energies in the run.
    #[default]
    #[serde(rename = "")]
    None,
}

impl EnergyUnit {
    /// The documented name (`keV`, `ToT_ns`, or empty).
    pub fn name(self) -> &'static str {
        match self {
            EnergyUnit::Kev => "keV",
            EnergyUnit::TotNs => "ToT_ns",
            EnergyUnit::None => "",
        }
    }
}

/// Each vocabulary equals its documented name (`RunMode::Demo == "demo"`), and displays as it.
macro_rules! named {
    ($($t:ty),+) => {$(
        impl PartialEq<&str> for $t {
            fn eq(&self, name: &&str) -> bool {
                self.name() == *name
            }
        }
    )+};
}
named!(RunMode, EnergyUnit, RunState, StopReason, FailureReason);

impl fmt::Display for RunMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for EnergyUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialised_names_are_the_documented_strings() {
        for s in RunState::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        let old: RunState = serde_json::from_str("\"error\"").unwrap();
        assert_eq!(old, RunState::Failed);
        for r in [
            StopReason::DurationLimit,
            StopReason::HitLimit,
            StopReason::ByteLimit,
            StopReason::EndOfStream,
            StopReason::EndOfInput,
            StopReason::StopRequested,
            StopReason::Failure,
            StopReason::ProcessEnded,
        ] {
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
        for f in [
            FailureReason::DiskFull,
            FailureReason::StartFailed,
            FailureReason::InputFailed,
            FailureReason::WriteFailed,
            FailureReason::ProcessingFailed,
        ] {
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{f}\""));
        }
    }

    #[test]
    fn mode_and_energy_unit_names_are_the_documented_manifest_strings() {
        // docs/tables.md, manifest `mode` and `energy_unit`.
        let modes = [
            (RunMode::Demo, "demo"),
            (RunMode::Replay, "replay"),
            (RunMode::Run, "run"),
            (RunMode::Recover, "recover"),
        ];
        for (mode, name) in modes {
            assert_eq!((mode.name(), mode.to_string()), (name, name.to_string()));
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{name}\""));
        }
        let units = [
            (EnergyUnit::Kev, "keV"),
            (EnergyUnit::TotNs, "ToT_ns"),
            (EnergyUnit::None, ""),
        ];
        for (unit, name) in units {
            assert_eq!((unit.name(), unit.to_string()), (name, name.to_string()));
            assert_eq!(serde_json::to_string(&unit).unwrap(), format!("\"{name}\""));
        }
    }
}
