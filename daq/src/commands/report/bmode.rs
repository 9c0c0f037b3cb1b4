//! Delay-and-sum B-mode image of one ultrasound frame (its plane-wave transmits, coherently
//! compounded) and the brightest points of it.
//!
//! Geometry (docs/ultrasound.md; the simulator uses the same): elements on the x axis centred
//! on 0 at `(e − (n − 1)/2) · pitch`, depth z > 0; a plane wave at angle θ reaches (x, z) at
//! `(x sin θ + z cos θ)/c` after transmit, the echo returns to element e after `|p − e|/c`;
//! sample k of an event is at `rx_offset + k / fs`. Each channel is turned into its analytic
//! signal (FFT, negative frequencies removed), sampled at every pixel's delay by linear
//! interpolation over the elements within an f-number of 1.5 (Hann apodisation), summed over
//! elements and transmits; the image is the envelope in dB of its maximum.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

/// Receive f-number: elements within depth / (2 F) of the pixel contribute.
const F_NUMBER: f64 = 1.5;
/// Deepest pixel, m.
const MAX_DEPTH_M: f64 = 0.08;
/// Shallowest pixel, m.
const MIN_DEPTH_M: f64 = 0.003;

/// The probe and sampling of a stream's sequence.
#[derive(Clone, Debug)]
pub(super) struct Probe {
    /// Elements (= channels).
    pub n_elements: usize,
    /// Pitch, m.
    pub pitch_m: f64,
    /// Centre frequency, Hz.
    pub center_frequency_hz: f64,
    /// Speed of sound, m/s.
    pub speed_of_sound_m_s: f64,
}

/// One received event: a transmit's RF, channel-major.
pub(super) struct TxEvent {
    /// Steering angle, degrees.
    pub angle_deg: f64,
    /// First sample relative to transmit, ns.
    pub rx_offset_ns: i32,
    /// Sampling rate, Hz.
    pub sample_rate_hz: f64,
    /// Channels.
    pub n_channels: usize,
    /// Samples per channel.
    pub n_samples: usize,
    /// i16 samples, channel-major.
    pub rf: Vec<i16>,
}

/// A B-mode image: `nz` rows (depth) of `nx` columns, dB re the brightest pixel.
pub(super) struct Image {
    /// Envelope in dB (≤ 0), row-major from the shallowest row.
    pub db: Vec<f32>,
    /// Columns.
    pub nx: usize,
    /// Rows.
    pub nz: usize,
    /// Lateral position of column 0's centre, m.
    pub x0_m: f64,
    /// Column step, m.
    pub dx_m: f64,
    /// Depth of row 0's centre, m.
    pub z0_m: f64,
    /// Row step, m.
    pub dz_m: f64,
}

/// A bright point of an image.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub(super) struct Peak {
    /// Lateral position, mm.
    pub x_mm: f64,
    /// Depth, mm.
    pub z_mm: f64,
    /// Brightness, dB re the brightest pixel.
    pub db: f64,
}

/// The compounded image of `events` (one frame), or None when they cannot make one.
pub(super) fn beamform(probe: &Probe, events: &[TxEvent]) -> Option<Image> {
    let first = events.first()?;
    let fs = first.sample_rate_hz;
    if !(fs > 0.0 && probe.speed_of_sound_m_s > 0.0 && probe.pitch_m > 0.0) {
        return None;
    }
    let c = probe.speed_of_sound_m_s;
    let lambda = c / probe.center_frequency_hz.max(1.0);
    let half_width = probe.pitch_m * (probe.n_elements as f64 - 1.0) / 2.0;
    let dx = probe.pitch_m / 2.0;
    let dz = lambda / 4.0;
    let last_t = f64::from(first.rx_offset_ns) * 1e-9 + first.n_samples as f64 / fs;
    let z_max = (last_t * c / 2.0).min(MAX_DEPTH_M);
    if z_max <= MIN_DEPTH_M {
        return None;
    }
    let nx = (2.0 * half_width / dx).floor() as usize + 1;
    let nz = ((z_max - MIN_DEPTH_M) / dz).floor() as usize + 1;
    let mut sum = vec![Complex::new(0.0f64, 0.0); nx * nz];
    for ev in events {
        let shape_ok = ev.n_samples >= 2 && ev.rf.len() == ev.n_channels * ev.n_samples;
        if ev.n_channels != probe.n_elements || !shape_ok {
            continue;
        }
        let analytic = analytic_signals(ev);
        let grid = Grid {
            nx,
            nz,
            x0: -half_width,
            dx,
            z0: MIN_DEPTH_M,
            dz,
        };
        add_event(probe, ev, &analytic, &grid, &mut sum);
    }
    let env: Vec<f64> = sum.iter().map(|v| v.norm()).collect();
    let max = env.iter().copied().fold(0.0f64, f64::max);
    if max <= 0.0 {
        return None;
    }
    let db = env
        .iter()
        .map(|&v| (20.0 * (v / max).max(1e-10).log10()) as f32)
        .collect();
    Some(Image {
        db,
        nx,
        nz,
        x0_m: -half_width,
        dx_m: dx,
        z0_m: MIN_DEPTH_M,
        dz_m: dz,
    })
}

struct Grid {
    nx: usize,
    nz: usize,
    x0: f64,
    dx: f64,
    z0: f64,
    dz: f64,
}

/// Each channel's analytic signal (length n_samples).
fn analytic_signals(ev: &TxEvent) -> Vec<Complex<f64>> {
    let n = ev.n_samples.next_power_of_two().max(2);
    let mut planner = FftPlanner::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let mut out = Vec::with_capacity(ev.n_channels * ev.n_samples);
    let mut buf = vec![Complex::new(0.0, 0.0); n];
    for ch in ev.rf.chunks_exact(ev.n_samples) {
        buf.iter_mut().for_each(|b| *b = Complex::new(0.0, 0.0));
        for (b, &s) in buf.iter_mut().zip(ch) {
            b.re = f64::from(s);
        }
        fwd.process(&mut buf);
        // Keep DC and Nyquist, double the positive frequencies, drop the negative ones.
        for (k, b) in buf.iter_mut().enumerate() {
            if k > 0 && k < n / 2 {
                *b *= 2.0;
            } else if k > n / 2 {
                *b = Complex::new(0.0, 0.0);
            }
        }
        inv.process(&mut buf);
        out.extend(buf[..ev.n_samples].iter().map(|v| v / n as f64));
    }
    out
}

fn add_event(
    probe: &Probe,
    ev: &TxEvent,
    analytic: &[Complex<f64>],
    g: &Grid,
    sum: &mut [Complex<f64>],
) {
    let c = probe.speed_of_sound_m_s;
    let (sin, cos) = ev.angle_deg.to_radians().sin_cos();
    let t0 = f64::from(ev.rx_offset_ns) * 1e-9;
    let fs = ev.sample_rate_hz;
    let ns = ev.n_samples;
    let centre = (probe.n_elements as f64 - 1.0) / 2.0;
    for iz in 0..g.nz {
        let z = g.z0 + iz as f64 * g.dz;
        let aperture = z / (2.0 * F_NUMBER);
        for ix in 0..g.nx {
            let x = g.x0 + ix as f64 * g.dx;
            let t_tx = (x * sin + z * cos) / c;
            let e_lo = ((x - aperture) / probe.pitch_m + centre).ceil().max(0.0) as usize;
            let e_hi = ((x + aperture) / probe.pitch_m + centre)
                .floor()
                .min(probe.n_elements as f64 - 1.0);
            if e_hi < e_lo as f64 {
                continue;
            }
            let mut acc = Complex::new(0.0, 0.0);
            for e in e_lo..=e_hi as usize {
                let xe = (e as f64 - centre) * probe.pitch_m;
                let dxe = x - xe;
                let t = t_tx + (dxe * dxe + z * z).sqrt() / c;
                let s = (t - t0) * fs;
                if s < 0.0 || s >= (ns - 1) as f64 {
                    continue;
                }
                let k = s as usize;
                let f = s - k as f64;
                let row = &analytic[e * ns..(e + 1) * ns];
                let v = row[k] * (1.0 - f) + row[k + 1] * f;
                // Hann apodisation across the aperture.
                let a = 0.5 + 0.5 * (std::f64::consts::PI * dxe / aperture.max(1e-9)).cos();
                acc += v * a;
            }
            sum[iz * g.nx + ix] += acc;
        }
    }
}

impl Image {
    /// The brightest local maxima at or above `floor_db`, at least `min_sep_mm` apart (a
    /// brighter one wins), brightest first, at most `n`.
    pub fn peaks(&self, n: usize, floor_db: f32, min_sep_mm: f64) -> Vec<Peak> {
        let at = |ix: usize, iz: usize| self.db[iz * self.nx + ix];
        let mut cands: Vec<(usize, usize)> = Vec::new();
        for iz in 1..self.nz.saturating_sub(1) {
            for ix in 1..self.nx.saturating_sub(1) {
                let v = at(ix, iz);
                if v < floor_db {
                    continue;
                }
                let is_max = (iz - 1..=iz + 1)
                    .flat_map(|z| (ix - 1..=ix + 1).map(move |x| (x, z)))
                    .all(|(x, z)| (x, z) == (ix, iz) || at(x, z) <= v);
                if is_max {
                    cands.push((ix, iz));
                }
            }
        }
        cands.sort_by(|a, b| at(b.0, b.1).total_cmp(&at(a.0, a.1)));
        let mut out: Vec<Peak> = Vec::new();
        for (ix, iz) in cands {
            let p = Peak {
                x_mm: (self.x0_m + ix as f64 * self.dx_m) * 1e3,
                z_mm: (self.z0_m + iz as f64 * self.dz_m) * 1e3,
                db: f64::from(at(ix, iz)),
            };
            if out
                .iter()
                .all(|q| (q.x_mm - p.x_mm).hypot(q.z_mm - p.z_mm) >= min_sep_mm)
            {
                out.push(p);
                if out.len() == n {
                    break;
                }
            }
        }
        out
    }

    /// Grey levels (0 black … 255 white) over `range_db` below the brightest pixel.
    pub fn grey(&self, range_db: f32) -> Vec<u8> {
        self.db
            .iter()
            .map(|&d| ((d + range_db) / range_db * 255.0).clamp(0.0, 255.0) as u8)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A point at (x, z) seen by a plane wave at 0°: a 5 MHz Gaussian pulse per channel at
    /// the geometric delay, written here from the geometry above.
    fn point_event(probe: &Probe, x: f64, z: f64) -> TxEvent {
        let (fs, ns, t0) = (25e6, 2048, 2e-6);
        let c = probe.speed_of_sound_m_s;
        let centre = (probe.n_elements as f64 - 1.0) / 2.0;
        let mut rf = vec![0i16; probe.n_elements * ns];
        for e in 0..probe.n_elements {
            let xe = (e as f64 - centre) * probe.pitch_m;
            let t_echo = z / c + ((x - xe).powi(2) + z * z).sqrt() / c;
            for k in 0..ns {
                let t = t0 + k as f64 / fs - t_echo;
                let v = 1000.0
                    * (-0.5 * (t / 1.2e-7).powi(2)).exp()
                    * (std::f64::consts::TAU * 5e6 * t).cos();
                rf[e * ns + k] = v.round() as i16;
            }
        }
        TxEvent {
            angle_deg: 0.0,
            rx_offset_ns: 2000,
            sample_rate_hz: fs,
            n_channels: probe.n_elements,
            n_samples: ns,
            rf,
        }
    }

    #[test]
    fn events_of_no_or_wrong_shape_give_no_image_and_no_panic() {
        let probe = Probe {
            n_elements: 4,
            pitch_m: 0.3e-3,
            center_frequency_hz: 5e6,
            speed_of_sound_m_s: 1540.0,
        };
        for (nc, ns, len) in [(4, 0, 0), (4, 1, 4), (4, 100, 7), (3, 100, 300)] {
            let ev = TxEvent {
                angle_deg: 0.0,
                rx_offset_ns: 0,
                sample_rate_hz: 25e6,
                n_channels: nc,
                n_samples: ns,
                rf: vec![1; len],
            };
            assert!(
                beamform(&probe, &[ev]).is_none(),
                "{nc} x {ns}, {len} samples"
            );
        }
    }

    #[test]
    fn a_point_is_imaged_where_it_is() {
        let probe = Probe {
            n_elements: 64,
            pitch_m: 0.3e-3,
            center_frequency_hz: 5e6,
            speed_of_sound_m_s: 1540.0,
        };
        let ev = point_event(&probe, 2e-3, 20e-3);
        let img = beamform(&probe, &[ev]).unwrap();
        let p = img.peaks(1, -6.0, 2.0);
        assert_eq!(p.len(), 1);
        assert!((p[0].x_mm - 2.0).abs() < 0.3, "{p:?}");
        assert!((p[0].z_mm - 20.0).abs() < 0.2, "{p:?}");
    }
}
