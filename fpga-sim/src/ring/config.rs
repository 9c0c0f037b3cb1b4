//! The ring preset's configuration ([`RingConfig`]): scanner geometry, source distribution,
//! optional water phantom, photon physics and the electronics settings shared with the bench
//! preset, with defaults and validation.

use crate::config::{FRAME_ID_MODULUS, FRAME_PS, MAX_DURATION_S, MAX_FRAME_HITS, SimError, range};
use crate::detector::MAX_MODULES;
use crate::sim::ElectronicsParams;
use serde::{Deserialize, Serialize};

/// Where the annihilations happen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case")]
pub enum Source {
    /// Point sources of equal activity at these positions, mm.
    Points {
        /// Source positions (x, y, z), mm.
        positions_mm: Vec<[f64; 3]>,
    },
    /// Activity uniform along the segment `from_mm` -> `to_mm`.
    Line {
        /// One end (x, y, z), mm.
        from_mm: [f64; 3],
        /// The other end (x, y, z), mm.
        to_mm: [f64; 3],
    },
    /// Activity uniform in a cylinder whose axis is parallel to z.
    Cylinder {
        /// Centre (x, y, z), mm.
        centre_mm: [f64; 3],
        /// Radius, mm.
        radius_mm: f64,
        /// Axial length, mm.
        length_mm: f64,
    },
}

impl Default for Source {
    fn default() -> Self {
        Source::Points {
            positions_mm: vec![[0.0; 3]],
        }
    }
}

impl Source {
    /// `(largest transaxial radius, largest |z|)` of any point of the source, mm.
    pub fn extent(&self) -> (f64, f64) {
        let r = |p: &[f64; 3]| p[0].hypot(p[1]);
        match self {
            Source::Points { positions_mm } => positions_mm
                .iter()
                .fold((0.0, 0.0), |(a, b), p| (r(p).max(a), p[2].abs().max(b))),
            Source::Line { from_mm, to_mm } => (
                r(from_mm).max(r(to_mm)),
                from_mm[2].abs().max(to_mm[2].abs()),
            ),
            Source::Cylinder {
                centre_mm,
                radius_mm,
                length_mm,
            } => (
                r(centre_mm) + radius_mm,
                centre_mm[2].abs() + length_mm / 2.0,
            ),
        }
    }

    fn validate(&self) -> Result<(), SimError> {
        let finite = |p: &[f64; 3]| p.iter().all(|v| v.is_finite());
        match self {
            Source::Points { positions_mm } => {
                if positions_mm.is_empty() || !positions_mm.iter().all(finite) {
                    return Err(SimError::config(
                        "source",
                        format!("{positions_mm:?}"),
                        "give at least one point source with finite coordinates",
                    ));
                }
            }
            Source::Line { from_mm, to_mm } => {
                if !finite(from_mm) || !finite(to_mm) {
                    return Err(SimError::config(
                        "source",
                        format!("{from_mm:?} -> {to_mm:?}"),
                        "line source ends must be finite",
                    ));
                }
            }
            Source::Cylinder {
                centre_mm,
                radius_mm,
                length_mm,
            } => {
                if !finite(centre_mm) {
                    return Err(SimError::config(
                        "source",
                        format!("{centre_mm:?}"),
                        "cylinder centre must be finite",
                    ));
                }
                range("source.radius_mm", *radius_mm, 0.0, 10_000.0, "mm")?;
                range("source.length_mm", *length_mm, 0.0, 10_000.0, "mm")?;
            }
        }
        Ok(())
    }
}

/// A water-like cylinder (axis z, centred at the origin) in which photons Compton-scatter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phantom {
    /// Radius, mm.
    pub radius_mm: f64,
    /// Axial length, mm.
    pub length_mm: f64,
    /// Linear attenuation coefficient at 511 keV, 1/mm (water: 0.0096); other energies
    /// follow the Klein–Nishina total cross-section.
    pub mu_511_per_mm: f64,
}

impl Default for Phantom {
    fn default() -> Self {
        Self {
            radius_mm: 100.0,
            length_mm: 200.0,
            mu_511_per_mm: 0.0096,
        }
    }
}

/// Everything the ring preset can be told (docs/physics.md §1–2). Build with
/// `RingConfig { duration_s: 0.1, ..Default::default() }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RingConfig {
    /// Seed of every random draw (per-channel constants and events).
    pub seed: u64,
    /// Detector time to simulate, s.
    pub duration_s: f64,
    /// Target total emitted hit rate (source + dark + background), Hz; the source activity
    /// is set from it unless `activity_bq` is given.
    pub hit_rate_hz: f64,
    /// Total source activity (all directions), Bq; overrides `hit_rate_hz` when set.
    pub activity_bq: Option<f64>,
    /// Raw 36-bit frameID of the first frame.
    pub start_frame_id: u64,
    /// Detector modules around the ring (one TOFPET2 chip of 64 channels each).
    pub modules: usize,
    /// Radius of the module front faces (distance from the axis to a face centre), mm.
    pub ring_radius_mm: f64,
    /// Crystal pitch on the module face (8 × 8 crystals), mm.
    pub crystal_pitch_mm: f64,
    /// Crystal length (depth), mm.
    pub crystal_length_mm: f64,
    /// Source distribution.
    pub source: Source,
    /// Water phantom (object scatter); `None` = no object.
    pub phantom: Option<Phantom>,
    /// Photon pair acollinearity, degrees FWHM (0 = exactly back to back).
    pub acollinearity_fwhm_deg: f64,
    /// Mean positron range, mm (exponential, isotropic; 0 = none).
    pub positron_range_mm: f64,
    /// Only decays whose photon axis has |cos(polar angle)| below this are simulated; `None`
    /// = automatic (the band that can reach the ring, see the README). 1.0 simulates every
    /// direction.
    pub axial_acceptance_cos: Option<f64>,
    /// Probability that a photon reaching a crystal is detected.
    pub detection_efficiency: f64,
    /// Probability that a detected photon deposits its full energy.
    pub photopeak_fraction: f64,
    /// Probability that a full-energy photon shares its energy with neighbouring crystals.
    pub inter_crystal_fraction: f64,
    /// Coincidence window for the truth count in `summary.json`, ps.
    pub coincidence_window_ps: f64,
    /// Coincidence time resolution, ps FWHM.
    pub ctr_fwhm_ps: f64,
    /// Energy resolution FWHM at 511 keV (fraction), scaling as 1/sqrt(E).
    pub energy_resolution_fwhm: f64,
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
    /// Frames with more hits keep the first this many and are flagged lost.
    pub max_hits_per_frame: usize,
    /// Gaussian noise sigma on fine codes.
    pub tdc_noise_codes: f64,
    /// Lu-176 intrinsic background of the LYSO crystals.
    pub lyso_background: bool,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            duration_s: 1.0,
            hit_rate_hz: 3e6,
            activity_bq: None,
            start_frame_id: 0,
            modules: 32,
            ring_radius_mm: 400.0,
            crystal_pitch_mm: 4.0,
            crystal_length_mm: 20.0,
            source: Source::default(),
            phantom: None,
            acollinearity_fwhm_deg: 0.5,
            positron_range_mm: 0.0,
            axial_acceptance_cos: None,
            detection_efficiency: 0.8,
            photopeak_fraction: 0.6,
            inter_crystal_fraction: 0.3,
            coincidence_window_ps: 4000.0,
            ctr_fwhm_ps: 200.0,
            energy_resolution_fwhm: 0.11,
            skew_range_ps: 500.0,
            gain_spread: 0.15,
            dark_rate_hz: 100e3,
            threshold_kev: 20.0,
            dead_time_ns: 300.0,
            max_hits_per_frame: 1024,
            tdc_noise_codes: 0.3,
            lyso_background: true,
        }
    }
}

impl RingConfig {
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

    /// Channels of the ring (64 per module).
    pub fn n_channels(&self) -> usize {
        self.modules * 64
    }

    /// Checks every field; the error names the field, its value and the accepted range.
    pub fn validate(&self) -> Result<(), SimError> {
        self.validate_run()?;
        self.validate_geometry()?;
        self.validate_source()?;
        self.validate_physics()?;
        self.validate_electronics()
    }

    /// Duration, rates, activity and the first frame ID.
    fn validate_run(&self) -> Result<(), SimError> {
        range(
            "duration_s",
            self.duration_s,
            1e-6,
            MAX_DURATION_S,
            "seconds",
        )?;
        range("hit_rate_hz", self.hit_rate_hz, 1.0, 1e9, "Hz")?;
        if let Some(a) = self.activity_bq {
            range("activity_bq", a, 1.0, 1e11, "Bq")?;
        }
        if self.start_frame_id >= FRAME_ID_MODULUS {
            return Err(SimError::config(
                "start_frame_id",
                self.start_frame_id,
                "must be below 2^36 (the frameID counter has 36 bits)",
            ));
        }
        Ok(())
    }

    /// Modules, crystals and the ring radius they must fit around.
    fn validate_geometry(&self) -> Result<(), SimError> {
        if !(2..=MAX_MODULES.min(4096)).contains(&self.modules) {
            return Err(SimError::config(
                "modules",
                self.modules,
                "must be in 2..=4096",
            ));
        }
        range("crystal_pitch_mm", self.crystal_pitch_mm, 0.5, 50.0, "mm")?;
        range(
            "crystal_length_mm",
            self.crystal_length_mm,
            1.0,
            100.0,
            "mm",
        )?;
        range("ring_radius_mm", self.ring_radius_mm, 20.0, 5000.0, "mm")?;
        let half_face = 4.0 * self.crystal_pitch_mm;
        let room = self.ring_radius_mm * (std::f64::consts::PI / self.modules as f64).tan();
        if half_face > room + 1e-9 {
            return Err(SimError::config(
                "ring_radius_mm",
                self.ring_radius_mm,
                format!(
                    "{} modules of {:.1} mm do not fit around a ring of this radius (needs at least {:.1} mm)",
                    self.modules,
                    2.0 * half_face,
                    half_face / (std::f64::consts::PI / self.modules as f64).tan()
                ),
            ));
        }
        Ok(())
    }

    /// The source (inside the ring) and the phantom.
    fn validate_source(&self) -> Result<(), SimError> {
        self.source.validate()?;
        let (r_src, _) = self.source.extent();
        if r_src >= self.ring_radius_mm - 1.0 {
            return Err(SimError::config(
                "source",
                format!("{:?}", self.source),
                format!(
                    "the source must lie inside the ring (transaxial radius below {} mm)",
                    self.ring_radius_mm - 1.0
                ),
            ));
        }
        if let Some(p) = &self.phantom {
            range(
                "phantom.radius_mm",
                p.radius_mm,
                1.0,
                self.ring_radius_mm - 1.0,
                "mm (inside the ring)",
            )?;
            range("phantom.length_mm", p.length_mm, 1.0, 10_000.0, "mm")?;
            range("phantom.mu_511_per_mm", p.mu_511_per_mm, 0.0, 1.0, "1/mm")?;
        }
        Ok(())
    }

    /// Annihilation physics, acceptance and detection probabilities.
    fn validate_physics(&self) -> Result<(), SimError> {
        range(
            "acollinearity_fwhm_deg",
            self.acollinearity_fwhm_deg,
            0.0,
            5.0,
            "degrees",
        )?;
        range("positron_range_mm", self.positron_range_mm, 0.0, 10.0, "mm")?;
        if let Some(c) = self.axial_acceptance_cos {
            range("axial_acceptance_cos", c, 1e-3, 1.0, "(cosine)")?;
        }
        for (name, v) in [
            ("detection_efficiency", self.detection_efficiency),
            ("photopeak_fraction", self.photopeak_fraction),
            ("inter_crystal_fraction", self.inter_crystal_fraction),
        ] {
            range(name, v, 0.0, 1.0, "(probability)")?;
        }
        Ok(())
    }

    /// Coincidence window and the electronics' response.
    fn validate_electronics(&self) -> Result<(), SimError> {
        range(
            "coincidence_window_ps",
            self.coincidence_window_ps,
            0.0,
            1e6,
            "ps",
        )?;
        range("ctr_fwhm_ps", self.ctr_fwhm_ps, 0.0, 100_000.0, "ps")?;
        range(
            "energy_resolution_fwhm",
            self.energy_resolution_fwhm,
            0.0,
            1.0,
            "(fraction)",
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

    pub(crate) fn electronics(&self) -> ElectronicsParams {
        ElectronicsParams {
            ctr_fwhm_ps: self.ctr_fwhm_ps,
            energy_resolution_fwhm: self.energy_resolution_fwhm,
            skew_range_ps: self.skew_range_ps,
            dead_time_ns: self.dead_time_ns,
            tdc_noise_codes: self.tdc_noise_codes,
            max_hits_per_frame: self.max_hits_per_frame,
            start_frame_id: self.start_frame_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        RingConfig::default().validate().unwrap();
        let bad = |c: RingConfig, want: &str| {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        bad(
            RingConfig {
                ring_radius_mm: 100.0,
                ..Default::default()
            },
            "do not fit",
        );
        bad(
            RingConfig {
                source: Source::Points {
                    positions_mm: vec![[500.0, 0.0, 0.0]],
                },
                ..Default::default()
            },
            "inside the ring",
        );
        bad(
            RingConfig {
                phantom: Some(Phantom {
                    radius_mm: 450.0,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "phantom.radius_mm",
        );
        bad(
            RingConfig {
                modules: 1,
                ..Default::default()
            },
            "modules",
        );
    }
}
