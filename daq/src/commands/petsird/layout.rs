//! The run's crystal map (`calib/map_channel.tsv`) as PETSIRD's scanner geometry: one module
//! type whose detecting elements are boxes, replicated by rigid transforms, and the detecting
//! element every PETsys channel reads.
//!
//! Each module (map `region`) gets a frame: origin at the centroid of its crystals, rotated
//! about the scanner axis (z) so that its local x axis points from the axis towards the
//! centroid (a module centred on the axis keeps the gantry's axes). When every module has the
//! same crystals at the same local positions (a ring of identical modules, the bench's two
//! facing modules), the geometry is one module with its crystals as elements, replicated once
//! per module ("replicated" layout). Otherwise it is one module at the identity holding every
//! crystal, each element transform carrying its module's rotation ("flat" layout). Either way
//! the element box is centred on the crystal centre: depth along local x, the transaxial pitch
//! along local y, the axial pitch along z.

use scandaq_core::{Crystal, Geometry};
use std::collections::{BTreeMap, HashMap};

/// A rigid transform as PETSIRD stores it: a 3x4 matrix `[R | t]`, row-major, mm.
pub type Transform = [[f32; 4]; 3];

/// Two local positions closer than this (mm, each axis) are the same place.
const SAME_PLACE_MM: f64 = 0.01;

/// The scanner geometry and channel -> element index map.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Box size: depth (local x), transaxial (local y), axial (z), mm.
    pub box_mm: [f32; 3],
    /// Transforms of the detecting elements inside a module.
    pub elements: Vec<Transform>,
    /// Transforms of the modules.
    pub modules: Vec<Transform>,
    /// PETsys channel -> element index over all modules (`module * elements + element`).
    element_of: HashMap<u32, u32>,
    /// True when modules are replicated (see the module doc).
    pub replicated: bool,
}

/// A module's frame: centroid and rotation angle about z.
struct Frame {
    centre: [f64; 3],
    angle: f64,
}

impl Frame {
    fn of(crystals: &[(u32, Crystal)]) -> Self {
        let n = crystals.len().max(1) as f64;
        let mut c = [0.0; 3];
        for (_, k) in crystals {
            for (ci, p) in c.iter_mut().zip(k.pos_mm) {
                *ci += f64::from(p) / n;
            }
        }
        let angle = if c[0].hypot(c[1]) > 1e-6 {
            c[1].atan2(c[0])
        } else {
            0.0
        };
        Self { centre: c, angle }
    }

    /// `p` in this frame's local coordinates.
    fn local(&self, p: [f32; 3]) -> [f64; 3] {
        let (s, c) = self.angle.sin_cos();
        let d = [
            f64::from(p[0]) - self.centre[0],
            f64::from(p[1]) - self.centre[1],
            f64::from(p[2]) - self.centre[2],
        ];
        [c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2]]
    }

    /// The transform rotating by this frame's angle then translating by `t`.
    fn transform_to(&self, t: [f64; 3]) -> Transform {
        rotation_z(self.angle, t)
    }
}

/// `[Rz(angle) | t]`.
fn rotation_z(angle: f64, t: [f64; 3]) -> Transform {
    let (s, c) = angle.sin_cos();
    [
        [c as f32, -s as f32, 0.0, t[0] as f32],
        [s as f32, c as f32, 0.0, t[1] as f32],
        [0.0, 0.0, 1.0, t[2] as f32],
    ]
}

/// A module's crystals in local-position order, with their local positions.
fn local_order(frame: &Frame, crystals: &[(u32, Crystal)]) -> Vec<(u32, [f64; 3])> {
    let mut v: Vec<(u32, [f64; 3])> = crystals
        .iter()
        .map(|(ch, k)| (*ch, frame.local(k.pos_mm)))
        .collect();
    let key = |p: &[f64; 3]| {
        let q = |x: f64| (x / SAME_PLACE_MM).round() as i64;
        (q(p[2]), q(p[1]), q(p[0]))
    };
    v.sort_by_key(|(ch, p)| (key(p), *ch));
    v
}

impl Layout {
    /// The layout of `geometry`; `box_mm` as in [`Layout::box_mm`].
    pub fn of(geometry: &Geometry, box_mm: [f32; 3]) -> Self {
        let mut by_module: BTreeMap<u32, Vec<(u32, Crystal)>> = BTreeMap::new();
        for (&ch, k) in &geometry.crystals {
            by_module.entry(k.module).or_default().push((ch, *k));
        }
        let frames: Vec<Frame> = by_module.values().map(|c| Frame::of(c)).collect();
        let orders: Vec<Vec<(u32, [f64; 3])>> = by_module
            .values()
            .zip(&frames)
            .map(|(c, f)| local_order(f, c))
            .collect();
        let same = |a: &[(u32, [f64; 3])], b: &[(u32, [f64; 3])]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|((_, p), (_, q))| {
                    p.iter().zip(q).all(|(x, y)| (x - y).abs() < SAME_PLACE_MM)
                })
        };
        let replicated = orders.len() > 1 && orders.iter().all(|o| same(o, &orders[0]));
        if replicated {
            let per_module = orders[0].len() as u32;
            let mut element_of = HashMap::new();
            for (m, order) in orders.iter().enumerate() {
                for (e, (ch, _)) in order.iter().enumerate() {
                    element_of.insert(*ch, m as u32 * per_module + e as u32);
                }
            }
            return Self {
                box_mm,
                elements: orders[0].iter().map(|(_, p)| rotation_z(0.0, *p)).collect(),
                modules: frames.iter().map(|f| f.transform_to(f.centre)).collect(),
                element_of,
                replicated,
            };
        }
        // Flat: one module holding every crystal, in channel-id order (the CASToR crystal ids).
        let mut elements = Vec::with_capacity(geometry.crystals.len());
        let mut element_of = HashMap::new();
        let frame_of: BTreeMap<u32, &Frame> = by_module.keys().copied().zip(&frames).collect();
        for (&ch, k) in &geometry.crystals {
            let angle = frame_of.get(&k.module).map_or(0.0, |f| f.angle);
            element_of.insert(ch, elements.len() as u32);
            elements.push(rotation_z(angle, k.pos_mm.map(f64::from)));
        }
        Self {
            box_mm,
            elements,
            modules: vec![rotation_z(0.0, [0.0; 3])],
            element_of,
            replicated,
        }
    }

    /// The element index (over all modules) of PETsys channel `channel`.
    #[inline]
    pub fn element(&self, channel: u32) -> Option<u32> {
        self.element_of.get(&channel).copied()
    }

    /// Detecting elements over all modules.
    pub fn element_count(&self) -> usize {
        self.elements.len() * self.modules.len()
    }

    /// The 8 corners of the element box, centred on the origin (x fastest, then y, then z).
    pub fn box_corners(&self) -> [[f32; 3]; 8] {
        let h = self.box_mm.map(|s| s / 2.0);
        std::array::from_fn(|i| {
            let sign = |bit: usize| if i >> bit & 1 == 0 { -1.0 } else { 1.0 };
            [sign(0) * h[0], sign(1) * h[1], sign(2) * h[2]]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(t: &Transform, p: [f64; 3]) -> [f64; 3] {
        std::array::from_fn(|r| {
            (0..3).map(|c| f64::from(t[r][c]) * p[c]).sum::<f64>() + f64::from(t[r][3])
        })
    }

    fn crystal(module: u32, pos_mm: [f32; 3]) -> Crystal {
        Crystal {
            module,
            xi: 0,
            yi: 0,
            pos_mm,
        }
    }

    /// A ring of `n` modules of 2x2 crystals at radius 100 mm: every crystal's element centre
    /// (module transform after element transform) is its map position.
    fn check_positions(g: &Geometry, l: &Layout) {
        let per = l.elements.len() as u32;
        for (&ch, k) in &g.crystals {
            let i = l.element(ch).unwrap();
            let (m, e) = ((i / per) as usize, (i % per) as usize);
            let p = apply(&l.modules[m], apply(&l.elements[e], [0.0; 3]));
            for a in 0..3 {
                assert!(
                    (p[a] - f64::from(k.pos_mm[a])).abs() < 1e-3,
                    "{ch}: {p:?} {k:?}"
                );
            }
        }
    }

    #[test]
    fn a_ring_of_identical_modules_is_replicated_and_positions_hold() {
        let mut g = Geometry::default();
        let mut ch = 0;
        for m in 0..6u32 {
            let a = f64::from(m) * std::f64::consts::TAU / 6.0;
            for (dy, dz) in [(-2.0, -2.0), (2.0, -2.0), (-2.0, 2.0), (2.0, 2.0)] {
                let (x, y) = (
                    100.0 * a.cos() - dy * a.sin(),
                    100.0 * a.sin() + dy * a.cos(),
                );
                g.crystals
                    .insert(ch, crystal(m, [x as f32, y as f32, dz as f32]));
                ch += 7;
            }
        }
        let l = Layout::of(&g, [20.0, 4.0, 4.0]);
        assert!(l.replicated);
        assert_eq!(
            (l.modules.len(), l.elements.len(), l.element_count()),
            (6, 4, 24)
        );
        check_positions(&g, &l);
    }

    #[test]
    fn unequal_modules_fall_back_to_one_module_and_positions_hold() {
        let mut g = Geometry::default();
        g.crystals.insert(1, crystal(0, [100.0, 0.0, 0.0]));
        g.crystals.insert(2, crystal(0, [100.0, 4.0, 0.0]));
        g.crystals.insert(3, crystal(1, [-100.0, 0.0, 0.0]));
        let l = Layout::of(&g, [20.0, 4.0, 4.0]);
        assert!(!l.replicated);
        assert_eq!((l.modules.len(), l.elements.len()), (1, 3));
        assert_eq!(l.element(3), Some(2));
        assert_eq!(l.element(4), None);
        check_positions(&g, &l);
        let c = l.box_corners();
        assert_eq!(c[0], [-10.0, -2.0, -2.0]);
        assert_eq!(c[7], [10.0, 2.0, 2.0]);
    }
}
