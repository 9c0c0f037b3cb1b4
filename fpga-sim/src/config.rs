//! The bench preset's configuration ([`BenchConfig`]) with its defaults and validation, the
//! clock/frame constants the simulator uses, and the crate's error type ([`SimError`]).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Clock period of the TOFPET2 front end, ps (200 MHz).
pub const CLOCK_PERIOD_PS: f64 = 5000.0;
/// Clock ticks per frame.
pub const FRAME_TICKS: u64 = scandaq_core::clock::FRAME_TICKS;
/// Length of one frame, ps.
pub const FRAME_PS: f64 = CLOCK_PERIOD_PS * FRAME_TICKS as f64;
/// Modulus of the 36-bit frameID counter.
pub const FRAME_ID_MODULUS: u64 = scandaq_core::clock::FRAME_ID_MODULUS;
/// Longest run the simulator accepts, seconds: times are kept as f64 picoseconds since the
/// run start, whose resolution is still below 1 ps at one hour.
pub const MAX_DURATION_S: f64 = 3600.0;
/// Largest `max_hits_per_frame`: the frame header's size field is 15 bits (hits + 2 words).
pub const MAX_FRAME_HITS: usize = (1 << 15) - 3;

/// Everything the bench preset can be told (see docs/physics.md §1–2). All fields are public so a
/// caller can write `BenchConfig { duration_s: 0.1, ..Default::default() }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchConfig {
    /// Seed of every random draw (per-channel constants and events).
    pub seed: u64,
    /// Detector time to simulate, s.
    pub duration_s: f64,
    /// Target total emitted hit rate (signal + dark + background), Hz.
    pub hit_rate_hz: f64,
    /// Raw 36-bit frameID of the first frame (the device clock's frame 0 is time 0).
    pub start_frame_id: u64,
    /// Face-to-face distance of the two modules, mm.
    pub module_distance_mm: f64,
    /// Coincidence time resolution, ps FWHM (each single gets sigma = CTR / (2.355 sqrt 2)).
    pub ctr_fwhm_ps: f64,
    /// Energy resolution FWHM at 511 keV (fraction), scaling as 1/sqrt(E).
    pub energy_resolution_fwhm: f64,
    /// Probability that a detected photon deposits its full energy.
    pub photopeak_fraction: f64,
    /// Probability that a photon reaching a crystal is detected.
    pub detection_efficiency: f64,
    /// Per-channel time skew is uniform in ± this, ps.
    pub skew_range_ps: f64,
    /// Per-channel gain is uniform in 1 ± this.
    pub gain_spread: f64,
    /// SiPM dark-count rate per channel before the threshold, Hz.
    pub dark_rate_hz: f64,
    /// Hits depositing less than this (keV) are not emitted.
    pub threshold_kev: f64,
    /// Non-paralysable dead time per channel, ns.
    pub dead_time_ns: f64,
    /// Frames with more hits keep the first this many and are flagged lost (word 1 bit 15).
    pub max_hits_per_frame: usize,
    /// Gaussian noise sigma on fine codes.
    pub tdc_noise_codes: f64,
    /// Na-22 1274.5 keV prompt gamma with each decay.
    pub na22_prompt_gamma: bool,
    /// Lu-176 intrinsic background of the LYSO crystals.
    pub lyso_background: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            duration_s: 1.0,
            hit_rate_hz: 1e6,
            start_frame_id: 0,
            module_distance_mm: 250.0,
            ctr_fwhm_ps: 200.0,
            energy_resolution_fwhm: 0.11,
            photopeak_fraction: 0.6,
            detection_efficiency: 0.8,
            skew_range_ps: 500.0,
            gain_spread: 0.15,
            dark_rate_hz: 100e3,
            threshold_kev: 10.0,
            dead_time_ns: 300.0,
            max_hits_per_frame: 256,
            tdc_noise_codes: 0.3,
            na22_prompt_gamma: true,
            lyso_background: true,
        }
    }
}

impl BenchConfig {
    /// Sets `start_frame_id` so the 36-bit frameID wraps about halfway through the run.
    pub fn near_wrap(mut self) -> Self {
        let frames = self.duration_s * 1e12 / FRAME_PS;
        let half = if frames.is_finite() && frames > 2.0 {
            ((frames / 2.0).round() as u64).clamp(1, FRAME_ID_MODULUS / 2)
        } else {
            1
        };
        self.start_frame_id = FRAME_ID_MODULUS - half;
        self
    }

    /// Checks every field; the error names the field, its value and the accepted range.
    pub fn validate(&self) -> Result<(), SimError> {
        range(
            "duration_s",
            self.duration_s,
            1e-6,
            MAX_DURATION_S,
            "seconds",
        )?;
        range("hit_rate_hz", self.hit_rate_hz, 1.0, 1e9, "Hz")?;
        if self.start_frame_id >= FRAME_ID_MODULUS {
            return Err(SimError::config(
                "start_frame_id",
                self.start_frame_id,
                "must be below 2^36 (the frameID counter has 36 bits)",
            ));
        }
        range(
            "module_distance_mm",
            self.module_distance_mm,
            1.0,
            10_000.0,
            "mm",
        )?;
        range("ctr_fwhm_ps", self.ctr_fwhm_ps, 0.0, 100_000.0, "ps")?;
        range(
            "energy_resolution_fwhm",
            self.energy_resolution_fwhm,
            0.0,
            1.0,
            "(fraction)",
        )?;
        range(
            "photopeak_fraction",
            self.photopeak_fraction,
            0.0,
            1.0,
            "(probability)",
        )?;
        range(
            "detection_efficiency",
            self.detection_efficiency,
            0.0,
            1.0,
            "(probability)",
        )?;
        range("skew_range_ps", self.skew_range_ps, 0.0, 1e6, "ps")?;
        range("gain_spread", self.gain_spread, 0.0, 0.9, "(fraction)")?;
        range(
            "dark_rate_hz",
            self.dark_rate_hz,
            0.0,
            1e8,
            "Hz per channel",
        )?;
        range("threshold_kev", self.threshold_kev, 0.0, 5000.0, "keV")?;
        range("dead_time_ns", self.dead_time_ns, 0.0, 1e6, "ns")?;
        range("tdc_noise_codes", self.tdc_noise_codes, 0.0, 50.0, "codes")?;
        if !(1..=MAX_FRAME_HITS).contains(&self.max_hits_per_frame) {
            return Err(SimError::config(
                "max_hits_per_frame",
                self.max_hits_per_frame,
                format!("must be in 1..={MAX_FRAME_HITS} (the frame size field has 15 bits)"),
            ));
        }
        Ok(())
    }
}

pub(crate) fn range(
    field: &'static str,
    v: f64,
    lo: f64,
    hi: f64,
    unit: &str,
) -> Result<(), SimError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(SimError::config(
            field,
            v,
            format!("must be a number in [{lo}, {hi}] {unit}"),
        ))
    }
}

/// What went wrong in the simulator or while writing its files.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A configuration field is out of range.
    #[error("invalid simulator configuration: {field} = {value}: {message}")]
    InvalidConfig {
        /// Field name as in [`BenchConfig`].
        field: &'static str,
        /// The value given.
        value: String,
        /// The accepted range.
        message: String,
    },
    /// File-system error on a path.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The output directory cannot be used.
    #[error("{0}")]
    OutputDir(String),
    /// A socket error while streaming (binding, sending, waiting for or serving a client).
    #[error("{action}: {source}")]
    Network {
        /// What was being done.
        action: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing the truth Parquet file failed.
    #[error(transparent)]
    Sink(#[from] scandaq_sinks::SinkError),
    /// Building a truth record batch failed.
    #[error("building the truth table: {0}")]
    Arrow(String),
    /// Serialising the summary or config to JSON failed.
    #[error("serialising {what} to JSON: {message}")]
    Json {
        /// What was serialised.
        what: &'static str,
        /// serde_json's message.
        message: String,
    },
}

impl SimError {
    /// An invalid-configuration error.
    pub fn config(
        field: &'static str,
        value: impl std::fmt::Display,
        message: impl Into<String>,
    ) -> Self {
        Self::InvalidConfig {
            field,
            value: value.to_string(),
            message: message.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        BenchConfig::default().validate().unwrap();
        let e = BenchConfig {
            duration_s: -1.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("duration_s = -1"), "{e}");
        let e = BenchConfig {
            max_hits_per_frame: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("max_hits_per_frame"), "{e}");
        let e = BenchConfig {
            start_frame_id: 1 << 36,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("2^36"), "{e}");
        let e = BenchConfig {
            photopeak_fraction: f64::NAN,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("photopeak_fraction"), "{e}");
    }

    #[test]
    fn near_wrap_puts_the_wrap_mid_run() {
        let c = BenchConfig {
            duration_s: 0.1,
            ..Default::default()
        }
        .near_wrap();
        let frames = 0.1e12 / FRAME_PS;
        let to_wrap = (FRAME_ID_MODULUS - c.start_frame_id) as f64;
        assert!((to_wrap - frames / 2.0).abs() <= 1.0);
        c.validate().unwrap();
    }
}
