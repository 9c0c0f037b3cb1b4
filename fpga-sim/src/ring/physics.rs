//! Photon physics of the ring preset: annihilation points from the source distribution
//! (optionally displaced by the positron range), photon pair directions in the simulated
//! axial band (with acollinearity), and Compton scattering in a water phantom (Klein–Nishina
//! angular distribution and total cross-section, any number of scatters).

use crate::detector::unit_circle;
use crate::ring::config::{Phantom, Source};
use crate::rng::Rng;

/// Electron rest energy, keV.
pub const ME_KEV: f64 = 511.0;
/// Photons below this energy are taken as absorbed in the phantom, keV (they would mostly
/// scatter on many more times; a cut that keeps phantom runs fast).
pub const ABSORB_BELOW_KEV: f64 = 100.0;
/// Scatters followed per photon at most (the rest of the track is dropped as absorbed).
pub const MAX_SCATTERS: u8 = 10;

/// Compton edge (largest electron energy) of a photon of energy `e` keV.
#[inline]
pub fn compton_edge(e: f64) -> f64 {
    let k = e / ME_KEV;
    e * 2.0 * k / (1.0 + 2.0 * k)
}

/// Klein–Nishina total cross-section relative to its value at 511 keV.
pub fn kn_total_relative(e: f64) -> f64 {
    fn sigma(k: f64) -> f64 {
        let l = (1.0 + 2.0 * k).ln();
        (1.0 + k) / (k * k) * (2.0 * (1.0 + k) / (1.0 + 2.0 * k) - l / k) + l / (2.0 * k)
            - (1.0 + 3.0 * k) / ((1.0 + 2.0 * k) * (1.0 + 2.0 * k))
    }
    sigma(e / ME_KEV) / sigma(1.0)
}

/// Samples the cosine of a Compton scattering angle from the Klein–Nishina distribution for a
/// photon of `e` keV (rejection from uniform cos θ); returns `(cos θ, scattered energy)`.
#[inline]
pub fn sample_compton(rng: &mut Rng, e: f64) -> (f64, f64) {
    let k = e / ME_KEV;
    loop {
        let c = 2.0 * rng.uniform() - 1.0;
        let p = 1.0 / (1.0 + k * (1.0 - c));
        // dσ/dΩ ∝ p² (p + 1/p − sin²θ), at most 2 (θ = 0).
        let f = p * p * (p + 1.0 / p - (1.0 - c * c));
        if 2.0 * rng.uniform() < f {
            return (c, e * p);
        }
    }
}

/// `u` turned by polar angle acos(`cos_t`) around itself, azimuth uniform.
#[inline]
pub fn rotate(rng: &mut Rng, u: [f64; 3], cos_t: f64) -> [f64; 3] {
    let sin_t = (1.0 - cos_t * cos_t).max(0.0).sqrt();
    let (cp, sp) = unit_circle(rng);
    // Orthonormal basis (a, b) perpendicular to u.
    let a = if u[2].abs() < 0.9 {
        normalise(cross(u, [0.0, 0.0, 1.0]))
    } else {
        normalise(cross(u, [1.0, 0.0, 0.0]))
    };
    let b = cross(u, a);
    normalise([
        cos_t * u[0] + sin_t * (cp * a[0] + sp * b[0]),
        cos_t * u[1] + sin_t * (cp * a[1] + sp * b[1]),
        cos_t * u[2] + sin_t * (cp * a[2] + sp * b[2]),
    ])
}

#[inline]
fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// `v / |v|`.
#[inline]
pub fn normalise(v: [f64; 3]) -> [f64; 3] {
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    [v[0] / n, v[1] / n, v[2] / n]
}

/// A point of the source distribution, mm.
#[inline]
pub fn sample_source(rng: &mut Rng, source: &Source) -> [f64; 3] {
    match source {
        Source::Points { positions_mm } => {
            if positions_mm.len() == 1 {
                positions_mm[0]
            } else {
                positions_mm[rng.below(positions_mm.len() as u64) as usize]
            }
        }
        Source::Line { from_mm, to_mm } => {
            let f = rng.uniform();
            [
                from_mm[0] + f * (to_mm[0] - from_mm[0]),
                from_mm[1] + f * (to_mm[1] - from_mm[1]),
                from_mm[2] + f * (to_mm[2] - from_mm[2]),
            ]
        }
        Source::Cylinder {
            centre_mm,
            radius_mm,
            length_mm,
        } => {
            let r = radius_mm * rng.uniform().sqrt();
            let (c, s) = unit_circle(rng);
            [
                centre_mm[0] + r * c,
                centre_mm[1] + r * s,
                centre_mm[2] + length_mm * (rng.uniform() - 0.5),
            ]
        }
    }
}

/// Isotropic unit vector.
#[inline]
pub fn isotropic(rng: &mut Rng) -> [f64; 3] {
    band_direction(rng, 1.0)
}

/// Unit vector uniform over the directions with |cos(polar angle)| <= `cos_max`.
#[inline]
pub fn band_direction(rng: &mut Rng, cos_max: f64) -> [f64; 3] {
    let c = cos_max * (2.0 * rng.uniform() - 1.0);
    let s = (1.0 - c * c).max(0.0).sqrt();
    let (cp, sp) = unit_circle(rng);
    [s * cp, s * sp, c]
}

/// Two independent standard normals (Marsaglia's polar method: one logarithm, no
/// trigonometry).
#[inline]
pub fn normal_pair(rng: &mut Rng) -> (f64, f64) {
    loop {
        let a = 2.0 * rng.uniform() - 1.0;
        let b = 2.0 * rng.uniform() - 1.0;
        let s = a * a + b * b;
        if s < 1.0 && s > 1e-300 {
            let f = (-2.0 * s.ln() / s).sqrt();
            return (a * f, b * f);
        }
    }
}

/// The partner of `u`: `−u` deviated by a 2-D Gaussian angle of `sigma_rad` per component
/// (perpendicular basis from Duff et al.'s branchless construction).
#[inline]
pub fn partner(rng: &mut Rng, u: [f64; 3], sigma_rad: f64) -> [f64; 3] {
    if sigma_rad <= 0.0 {
        return [-u[0], -u[1], -u[2]];
    }
    let (g1, g2) = normal_pair(rng);
    let sign = 1f64.copysign(u[2]);
    let a = -1.0 / (sign + u[2]);
    let b = u[0] * u[1] * a;
    let e1 = [1.0 + sign * u[0] * u[0] * a, sign * b, -sign * u[0]];
    let e2 = [b, sign + u[1] * u[1] * a, -u[1]];
    let (d1, d2) = (sigma_rad * g1, sigma_rad * g2);
    normalise([
        -u[0] + d1 * e1[0] + d2 * e2[0],
        -u[1] + d1 * e1[1] + d2 * e2[1],
        -u[2] + d1 * e1[2] + d2 * e2[2],
    ])
}

/// atan2 to about 2e-4 rad (polynomial): enough to pick a module, since a face lookup that
/// misses the chosen face tries the neighbour on that side.
#[inline]
pub fn fast_atan2(y: f64, x: f64) -> f64 {
    let (ax, ay) = (x.abs(), y.abs());
    let (mn, mx) = if ax < ay { (ax, ay) } else { (ay, ax) };
    if mx == 0.0 {
        return 0.0;
    }
    let a = mn / mx;
    let s = a * a;
    let mut r = ((-0.046_496_474_9 * s + 0.159_314_22) * s - 0.327_622_764) * s * a + a;
    if ay > ax {
        r = std::f64::consts::FRAC_PI_2 - r;
    }
    if x < 0.0 {
        r = std::f64::consts::PI - r;
    }
    if y < 0.0 { -r } else { r }
}

/// Entry and exit distances `[s0, s1]` (s0 >= 0) of the ray `p + s u` in the phantom cylinder,
/// `None` if it does not cross it ahead.
#[inline]
pub fn chord(ph: &Phantom, p: [f64; 3], u: [f64; 3]) -> Option<(f64, f64)> {
    let half = ph.length_mm / 2.0;
    let (mut s0, mut s1) = (0.0f64, f64::INFINITY);
    // Radial slab.
    let a = u[0] * u[0] + u[1] * u[1];
    let c = p[0] * p[0] + p[1] * p[1] - ph.radius_mm * ph.radius_mm;
    if a < 1e-18 {
        if c > 0.0 {
            return None;
        }
    } else {
        let b = p[0] * u[0] + p[1] * u[1];
        let disc = b * b - a * c;
        if disc <= 0.0 {
            return None;
        }
        let r = disc.sqrt();
        s0 = s0.max((-b - r) / a);
        s1 = s1.min((-b + r) / a);
    }
    // Axial slab.
    if u[2].abs() < 1e-18 {
        if p[2].abs() > half {
            return None;
        }
    } else {
        let t0 = (-half - p[2]) / u[2];
        let t1 = (half - p[2]) / u[2];
        s0 = s0.max(t0.min(t1));
        s1 = s1.min(t0.max(t1));
    }
    (s1 > s0).then_some((s0, s1))
}

/// A photon after the object: position, direction, energy, path travelled and scatters.
#[derive(Clone, Copy, Debug)]
pub struct Photon {
    /// Position, mm.
    pub pos: [f64; 3],
    /// Unit direction.
    pub dir: [f64; 3],
    /// Energy, keV.
    pub e_kev: f64,
    /// Path travelled so far, mm.
    pub path_mm: f64,
    /// Compton scatters so far.
    pub n_scatter: u8,
}

/// Transports `ph` through the phantom; `false` if it was absorbed (fell below
/// [`ABSORB_BELOW_KEV`] or exceeded [`MAX_SCATTERS`]).
#[inline]
pub fn through_phantom(rng: &mut Rng, phantom: &Phantom, ph: &mut Photon) -> bool {
    while let Some((s0, s1)) = chord(phantom, ph.pos, ph.dir) {
        let mu = if ph.n_scatter == 0 {
            phantom.mu_511_per_mm
        } else {
            phantom.mu_511_per_mm * kn_total_relative(ph.e_kev)
        };
        if mu <= 0.0 {
            return true;
        }
        let s = rng.exponential(mu);
        if s0 + s >= s1 {
            return true;
        }
        let step = s0 + s;
        for (p, d) in ph.pos.iter_mut().zip(ph.dir) {
            *p += step * d;
        }
        ph.path_mm += step;
        let (cos_t, e) = sample_compton(rng, ph.e_kev);
        ph.dir = rotate(rng, ph.dir, cos_t);
        ph.e_kev = e;
        ph.n_scatter += 1;
        if e < ABSORB_BELOW_KEV || ph.n_scatter >= MAX_SCATTERS {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compton_kinematics_and_cross_section() {
        assert!((compton_edge(511.0) - 340.67).abs() < 0.01);
        assert!((kn_total_relative(511.0) - 1.0).abs() < 1e-12);
        // Water mu at 200 keV / 511 keV is about 1.43 (Compton part).
        let r = kn_total_relative(200.0);
        assert!(r > 1.35 && r < 1.5, "{r}");
        let mut rng = Rng::seed_from_u64(5);
        let (mut n, mut mean_e) = (0.0, 0.0);
        for _ in 0..100_000 {
            let (c, e) = sample_compton(&mut rng, 511.0);
            assert!((-1.0..=1.0).contains(&c));
            let want = 511.0 / (2.0 - c);
            assert!((e - want).abs() < 1e-9);
            mean_e += e;
            n += 1.0;
        }
        // Mean scattered energy at 511 keV (Klein–Nishina): a little above half.
        let m = mean_e / n / 511.0;
        assert!(m > 0.5 && m < 0.66, "{m}");
    }

    #[test]
    fn rotation_keeps_the_angle_and_chords_are_right() {
        let mut rng = Rng::seed_from_u64(9);
        for _ in 0..1000 {
            let u = isotropic(&mut rng);
            let v = rotate(&mut rng, u, 0.3);
            let d = u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
            assert!((d - 0.3).abs() < 1e-9);
            let w = partner(&mut rng, u, 0.004);
            let d = -(u[0] * w[0] + u[1] * w[1] + u[2] * w[2]);
            assert!(d > 0.999);
            let (y, x) = (2.0 * rng.uniform() - 1.0, 2.0 * rng.uniform() - 1.0);
            assert!((fast_atan2(y, x) - y.atan2(x)).abs() < 2.5e-4);
        }
        // Acollinearity: the angle from back-to-back has per-component sigma 0.004 rad, so
        // its mean square is 2 sigma^2.
        let mut m2 = 0.0;
        for _ in 0..20_000 {
            let u = isotropic(&mut rng);
            let w = partner(&mut rng, u, 0.004);
            let d = -(u[0] * w[0] + u[1] * w[1] + u[2] * w[2]);
            m2 += 2.0 * (1.0 - d);
        }
        let m2 = m2 / 20_000.0;
        assert!((m2 / (2.0 * 0.004 * 0.004) - 1.0).abs() < 0.05, "{m2}");
        let ph = Phantom::default();
        let (s0, s1) = chord(&ph, [0.0; 3], [1.0, 0.0, 0.0]).unwrap();
        assert!((s0 - 0.0).abs() < 1e-12 && (s1 - 100.0).abs() < 1e-9);
        let (s0, s1) = chord(&ph, [-300.0, 0.0, 0.0], [1.0, 0.0, 0.0]).unwrap();
        assert!((s0 - 200.0).abs() < 1e-9 && (s1 - 400.0).abs() < 1e-9);
        assert!(chord(&ph, [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]).is_some());
        assert!(chord(&ph, [200.0, 0.0, 0.0], [1.0, 0.0, 0.0]).is_none());
        let (_, s1) = chord(&ph, [0.0; 3], normalise([1.0, 0.0, 1.0])).unwrap();
        assert!((s1 - 100.0 * 2f64.sqrt()).abs() < 1e-9);
    }
}
