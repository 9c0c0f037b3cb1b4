//! The RF model of the `us` preset: a linear array insonifying point scatterers with steered
//! plane waves. For each transmit of the sequence the noiseless echo matrix is computed once
//! (delay-and-sum-consistent geometry: transmit delay of a plane wave at angle θ to the point
//! (x, z) is `(x sin θ + z cos θ) / c`, receive delay to element e is `|p - e| / c`); an event
//! is that template plus white noise, taken at random offsets from a precomputed Gaussian
//! table, so the simulator keeps up with GB/s of RF.

use crate::rng::Rng;

/// A point scatterer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scatterer {
    /// Lateral position, m (0 = array centre, +x towards the last element).
    pub x_m: f64,
    /// Depth, m.
    pub z_m: f64,
    /// Echo amplitude, ADC LSB at the peak.
    pub amplitude_lsb: f64,
}

/// The default phantom: six points from 12 to 48 mm depth.
pub fn default_scatterers() -> Vec<Scatterer> {
    [
        (0.0, 12.0, 3000.0),
        (-8.0, 20.0, 2500.0),
        (6.0, 26.0, 2200.0),
        (0.0, 34.0, 2000.0),
        (10.0, 40.0, 1600.0),
        (-12.0, 48.0, 1400.0),
    ]
    .into_iter()
    .map(|(x, z, a)| Scatterer {
        x_m: x * 1e-3,
        z_m: z * 1e-3,
        amplitude_lsb: a,
    })
    .collect()
}

/// Geometry and sampling of the echo model.
#[derive(Clone, Debug, PartialEq)]
pub struct EchoGeometry {
    /// Elements (= channels).
    pub n_elements: u16,
    /// Pitch, m.
    pub pitch_m: f64,
    /// Pulse centre frequency, Hz.
    pub center_frequency_hz: f64,
    /// Fractional bandwidth of the Gaussian pulse (-6 dB), e.g. 0.6.
    pub fractional_bandwidth: f64,
    /// Sampling rate, Hz.
    pub sample_rate_hz: f64,
    /// Samples per channel.
    pub n_samples: u32,
    /// First sample relative to transmit, ns.
    pub rx_offset_ns: i32,
    /// Speed of sound, m/s.
    pub speed_of_sound_m_s: f64,
}

impl EchoGeometry {
    /// Lateral position of element `e`, m.
    pub fn element_x(&self, e: usize) -> f64 {
        (e as f64 - (f64::from(self.n_elements) - 1.0) / 2.0) * self.pitch_m
    }

    /// Two-way travel time (s) of a plane wave at `angle_rad` to scatterer `s` and back to
    /// element `e`.
    pub fn echo_time_s(&self, angle_rad: f64, s: &Scatterer, e: usize) -> f64 {
        let c = self.speed_of_sound_m_s;
        let tx = (s.x_m * angle_rad.sin() + s.z_m * angle_rad.cos()) / c;
        let dx = s.x_m - self.element_x(e);
        let rx = (dx * dx + s.z_m * s.z_m).sqrt() / c;
        tx + rx
    }

    /// The noiseless echo matrix of one transmit, i16 channel-major (rounded, saturated).
    pub fn template(&self, angle_deg: f64, scatterers: &[Scatterer]) -> Vec<i16> {
        let ns = self.n_samples as usize;
        let nc = usize::from(self.n_elements);
        let mut acc = vec![0f64; ns * nc];
        let f0 = self.center_frequency_hz;
        // Gaussian envelope whose -6 dB full bandwidth is fractional_bandwidth * f0.
        let sigma_f = self.fractional_bandwidth * f0 / (2.0 * (2.0 * 2f64.ln()).sqrt());
        let sigma_t = 1.0 / (2.0 * std::f64::consts::PI * sigma_f);
        let half_width = 4.0 * sigma_t;
        let fs = self.sample_rate_hz;
        let t0 = f64::from(self.rx_offset_ns) * 1e-9;
        let angle = angle_deg.to_radians();
        for e in 0..nc {
            let row = &mut acc[e * ns..(e + 1) * ns];
            for s in scatterers {
                let t_echo = self.echo_time_s(angle, s, e);
                // Spherical spreading on the way back, relative to 10 mm.
                let r = ((s.x_m - self.element_x(e)).powi(2) + s.z_m * s.z_m).sqrt();
                let amp = s.amplitude_lsb * (0.01 / r.max(1e-3)).sqrt();
                let first = (((t_echo - half_width - t0) * fs).floor()).max(0.0) as usize;
                let last = (((t_echo + half_width - t0) * fs).ceil()).max(0.0) as usize;
                for (k, v) in row.iter_mut().enumerate().take(last.min(ns)).skip(first) {
                    let t = t0 + k as f64 / fs - t_echo;
                    *v += amp
                        * (-0.5 * (t / sigma_t).powi(2)).exp()
                        * (2.0 * std::f64::consts::PI * f0 * t).cos();
                }
            }
        }
        acc.into_iter()
            .map(|v| v.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16)
            .collect()
    }
}

/// Length of the Gaussian noise table.
pub const NOISE_TABLE_LEN: usize = 1 << 20;

/// White Gaussian noise of `sigma_lsb`, rounded to i16.
pub fn noise_table(rng: &mut Rng, sigma_lsb: f64) -> Vec<i16> {
    (0..NOISE_TABLE_LEN)
        .map(|_| {
            (rng.normal() * sigma_lsb)
                .round()
                .clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
        })
        .collect()
}

/// Writes one event (template + noise from a random offset per channel) as little-endian
/// i16 bytes into `out` (resized to the event).
pub fn render_event(
    template: &[i16],
    noise: &[i16],
    n_channels: usize,
    n_samples: usize,
    rng: &mut Rng,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.resize(2 * n_channels * n_samples, 0);
    let span = noise.len().saturating_sub(n_samples).max(1) as u64;
    for c in 0..n_channels {
        let off = rng.below(span) as usize;
        let src = &template[c * n_samples..(c + 1) * n_samples];
        let nz = &noise[off..off + n_samples.min(noise.len() - off)];
        let dst = &mut out[2 * c * n_samples..2 * (c + 1) * n_samples];
        for ((d, &t), &n) in dst.chunks_exact_mut(2).zip(src).zip(nz) {
            d.copy_from_slice(&t.saturating_add(n).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_peaks_where_the_geometry_says() {
        let g = EchoGeometry {
            n_elements: 16,
            pitch_m: 0.3e-3,
            center_frequency_hz: 5e6,
            fractional_bandwidth: 0.6,
            sample_rate_hz: 25e6,
            n_samples: 1024,
            rx_offset_ns: 0,
            speed_of_sound_m_s: 1540.0,
        };
        let s = Scatterer {
            x_m: 1e-3,
            z_m: 15e-3,
            amplitude_lsb: 2000.0,
        };
        let t = g.template(10.0, &[s]);
        for e in [0usize, 7, 15] {
            let row = &t[e * 1024..(e + 1) * 1024];
            let (peak, _) = row
                .iter()
                .enumerate()
                .max_by_key(|(_, v)| v.unsigned_abs())
                .unwrap();
            let expect = g.echo_time_s(10f64.to_radians(), &s, e) * 25e6;
            assert!(
                (peak as f64 - expect).abs() <= 3.0,
                "{e}: {peak} vs {expect}"
            );
        }
    }
}
