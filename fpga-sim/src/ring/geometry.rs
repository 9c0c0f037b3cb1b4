//! Ring geometry: `modules` flat 8×8 crystal modules whose front faces are tangent to a circle
//! of radius `ring_radius_mm` around the z axis, centred at z = 0. Module m sits at azimuth
//! `2π m / modules`; crystal (xi, yi) of a module lies at tangential offset `(xi − 3.5)·pitch`
//! (towards increasing azimuth) and axial offset `(yi − 3.5)·pitch`. Channel index
//! `m*64 + yi*8 + xi`, PETsys id from [`module_channel_id`] (chip = module for up to 64
//! modules, as in the bench preset).

use crate::detector::{CRYSTALS_PER_SIDE, module_channel_id};
use crate::ring::config::RingConfig;
use scandaq_core::{Crystal, Geometry};

const N_SIDE: usize = CRYSTALS_PER_SIDE;
const PER_MODULE: usize = N_SIDE * N_SIDE;

/// Where a photon enters the ring.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaceHit {
    /// Channel index (`module*64 + yi*8 + xi`).
    pub ch: usize,
    /// Path length from the ray origin to the face, mm.
    pub path_mm: f64,
}

/// The ring's crystals and the ray -> crystal lookup.
#[derive(Clone, Debug)]
pub struct RingGeometry {
    modules: usize,
    radius: f64,
    pitch: f64,
    length: f64,
    half_face: f64,
    /// (cos, sin) of each module's azimuth.
    normals: Vec<(f64, f64)>,
    dphi: f64,
}

impl RingGeometry {
    /// The geometry of `config` (already validated).
    pub fn new(config: &RingConfig) -> Self {
        let dphi = std::f64::consts::TAU / config.modules as f64;
        Self {
            modules: config.modules,
            radius: config.ring_radius_mm,
            pitch: config.crystal_pitch_mm,
            length: config.crystal_length_mm,
            half_face: N_SIDE as f64 / 2.0 * config.crystal_pitch_mm,
            normals: (0..config.modules)
                .map(|m| {
                    let (s, c) = (m as f64 * dphi).sin_cos();
                    (c, s)
                })
                .collect(),
            dphi,
        }
    }

    /// Number of channels (= crystals).
    pub fn n_channels(&self) -> usize {
        self.modules * PER_MODULE
    }

    /// Half the axial extent of the crystals, mm.
    pub fn half_axial_mm(&self) -> f64 {
        self.half_face
    }

    /// Fraction of the circle at the face radius covered by module faces.
    pub fn transaxial_coverage(&self) -> f64 {
        (2.0 * self.half_face * self.modules as f64 / (std::f64::consts::TAU * self.radius))
            .min(1.0)
    }

    /// `(module, yi, xi)` of a channel index.
    #[inline]
    pub fn parts(ch: usize) -> (usize, usize, usize) {
        (ch / PER_MODULE, (ch % PER_MODULE) / N_SIDE, ch % N_SIDE)
    }

    /// Channel index of crystal (`xi`, `yi`) of module `m`.
    #[inline]
    pub fn index(m: usize, yi: usize, xi: usize) -> usize {
        m * PER_MODULE + yi * N_SIDE + xi
    }

    /// PETsys channel id of a channel index.
    pub fn channel_id(ch: usize) -> u32 {
        let (m, yi, xi) = Self::parts(ch);
        module_channel_id(m, yi * N_SIDE + xi)
    }

    /// Every channel id, by channel index.
    pub fn channel_ids(&self) -> Vec<u32> {
        (0..self.n_channels()).map(Self::channel_id).collect()
    }

    /// Centre of a crystal, mm (half its length behind the face).
    pub fn crystal_centre(&self, ch: usize) -> [f64; 3] {
        let (m, yi, xi) = Self::parts(ch);
        let (c, s) = self.normals[m];
        let half = (N_SIDE as f64 - 1.0) / 2.0;
        let a = (xi as f64 - half) * self.pitch;
        let depth = self.radius + self.length / 2.0;
        [
            depth * c - a * s,
            depth * s + a * c,
            (yi as f64 - half) * self.pitch,
        ]
    }

    /// The PETsys channel map: region = module, xi, yi and the crystal centre.
    pub fn channel_map(&self) -> Geometry {
        let mut g = Geometry::default();
        for ch in 0..self.n_channels() {
            let (m, yi, xi) = Self::parts(ch);
            let p = self.crystal_centre(ch);
            g.crystals.insert(
                Self::channel_id(ch),
                Crystal {
                    module: m as u32,
                    xi: xi as u32,
                    yi: yi as u32,
                    pos_mm: [p[0] as f32, p[1] as f32, p[2] as f32],
                },
            );
        }
        g
    }

    /// PETsys `map_trigger.tsv`: every pair of distinct modules may form coincidences
    /// (`a b C`, a < b) and each module groups its own multi-hit events (`m m M`).
    pub fn map_trigger(&self) -> String {
        let mut s = String::new();
        for a in 0..self.modules {
            for b in a + 1..self.modules {
                s.push_str(&format!("{a}\t{b}\tC\n"));
            }
        }
        for m in 0..self.modules {
            s.push_str(&format!("{m}\t{m}\tM\n"));
        }
        s
    }

    /// Face of module `m` crossed by the ray `p + s u` (s > 0): `(tangential, axial, s)`.
    #[inline]
    fn plane(&self, m: usize, p: [f64; 3], u: [f64; 3]) -> Option<(f64, f64, f64)> {
        let (c, s) = self.normals[m];
        let un = u[0] * c + u[1] * s;
        if un <= 1e-12 {
            return None;
        }
        let dist = (self.radius - (p[0] * c + p[1] * s)) / un;
        if dist <= 0.0 {
            return None;
        }
        let q = [p[0] + dist * u[0], p[1] + dist * u[1], p[2] + dist * u[2]];
        Some((q[1] * c - q[0] * s, q[2], dist))
    }

    /// The crystal whose front-face cell the ray from `p` (inside the ring) along the unit
    /// vector `u` enters, and the path to it; `None` if it passes between modules or beyond
    /// the axial extent.
    #[inline]
    pub fn face_hit(&self, p: [f64; 3], u: [f64; 3]) -> Option<FaceHit> {
        // Where the ray crosses the circle of the face radius picks the module.
        let a = u[0] * u[0] + u[1] * u[1];
        if a < 1e-18 {
            return None;
        }
        let b = p[0] * u[0] + p[1] * u[1];
        let c = p[0] * p[0] + p[1] * p[1] - self.radius * self.radius;
        let disc = b * b - a * c;
        if disc < 0.0 {
            return None;
        }
        let s = (-b + disc.sqrt()) / a;
        if s <= 0.0 {
            return None;
        }
        let z = p[2] + s * u[2];
        if z.abs() > self.half_face + self.pitch {
            return None;
        }
        let phi = crate::ring::physics::fast_atan2(p[1] + s * u[1], p[0] + s * u[0]);
        let m = (phi / self.dphi).round().rem_euclid(self.modules as f64) as usize % self.modules;
        let (ta, za, dist) = self.plane(m, p, u)?;
        let (m, ta, za, dist) = if ta.abs() < self.half_face {
            (m, ta, za, dist)
        } else {
            // Close to a module edge on a nearly closed ring: the neighbour's face.
            let n = if ta > 0.0 {
                (m + 1) % self.modules
            } else {
                (m + self.modules - 1) % self.modules
            };
            let (ta, za, dist) = self.plane(n, p, u)?;
            (n, ta, za, dist)
        };
        if !(ta.abs() < self.half_face && za.abs() < self.half_face) {
            return None;
        }
        let half = N_SIDE as f64 / 2.0;
        let xi = ((ta / self.pitch + half).floor() as usize).min(N_SIDE - 1);
        let yi = ((za / self.pitch + half).floor() as usize).min(N_SIDE - 1);
        Some(FaceHit {
            ch: Self::index(m, yi, xi),
            path_mm: dist,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rays_from_the_centre_enter_the_aimed_crystal() {
        let g = RingGeometry::new(&RingConfig::default());
        assert_eq!(g.n_channels(), 2048);
        for ch in [0, 7, 63, 64 + 9, 17 * 64 + 36, 2047] {
            let c = g.crystal_centre(ch);
            let n = (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt();
            let u = [c[0] / n, c[1] / n, c[2] / n];
            let hit = g.face_hit([0.0; 3], u).unwrap();
            assert_eq!(hit.ch, ch);
            assert!(
                hit.path_mm > 400.0 && hit.path_mm < 401.0,
                "{}",
                hit.path_mm
            );
        }
        // Between modules 0 and 1 (azimuth 5.6 degrees): a gap.
        let (s, c) = (0.5 * std::f64::consts::TAU / 32.0).sin_cos();
        assert!(g.face_hit([0.0; 3], [c, s, 0.0]).is_none());
        // Along the axis and steeply out of the ring: nothing.
        assert!(g.face_hit([0.0; 3], [0.0, 0.0, 1.0]).is_none());
        assert!(g.face_hit([0.0; 3], [0.6, 0.0, 0.8]).is_none());
    }

    #[test]
    fn ids_match_the_bench_packing() {
        assert_eq!(RingGeometry::channel_id(0), crate::detector::channel_id(0));
        assert_eq!(
            RingGeometry::channel_id(127),
            crate::detector::channel_id(127)
        );
        assert_eq!(RingGeometry::channel_id(31 * 64 + 5), (31 << 6) | 5);
        assert_eq!(module_channel_id(64, 0), 1 << 12);
    }
}
