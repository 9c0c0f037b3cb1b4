//! The bench preset's detector: two 8×8 LYSO modules facing a point source at the origin
//! (crystal lookup on the module faces, channel ids, the cone covering both faces), and the
//! per-channel front-end constants drawn once from the seed (TDC response per TAC and branch,
//! ToT -> energy curve, time skew), exposed as the scandaq-core tables the pipeline reads.

use crate::config::BenchConfig;
use crate::rng::Rng;
use scandaq_core::calib::{Branch, EnergyEntry};
use scandaq_core::{ChannelId, Crystal, EnergyTable, Geometry, SkewTable, TdcEntry, TdcTable};

/// Crystals along each side of a module.
pub const CRYSTALS_PER_SIDE: usize = 8;
/// Crystal pitch on the module face, mm.
pub const PITCH_MM: f64 = 3.2;
/// Crystal depth, mm (the crystal centre lies half of it behind the face).
pub const CRYSTAL_DEPTH_MM: f64 = 20.0;
/// Detector modules in the bench preset.
pub const MODULES: usize = 2;
/// Channels (= crystals) in the bench preset.
pub const N_CHANNELS: usize = MODULES * CRYSTALS_PER_SIDE * CRYSTALS_PER_SIDE;
/// Speed of light, mm/ps.
pub const C_MM_PER_PS: f64 = 0.299_792_458;

/// Bench geometry: module faces at x = ∓d/2, each a square of 8 × 3.2 mm cells centred on
/// the x axis. A photon "enters" the crystal whose cell (pitch × pitch, the 0.2 mm reflector
/// gap counted with the crystal) contains its crossing point with the face plane.
#[derive(Clone, Copy, Debug)]
pub struct BenchGeometry {
    half_d: f64,
    half_face: f64,
    /// Cosine of the half-angle of the cone (around ±x) that just covers both faces.
    pub cos_cone: f64,
}

impl BenchGeometry {
    /// Geometry for a face-to-face distance `distance_mm`.
    pub fn new(distance_mm: f64) -> Self {
        let half_d = distance_mm / 2.0;
        let half_face = PITCH_MM * CRYSTALS_PER_SIDE as f64 / 2.0;
        let corner = half_face * std::f64::consts::SQRT_2;
        let cos_cone = half_d / (half_d * half_d + corner * corner).sqrt();
        Self {
            half_d,
            half_face,
            cos_cone,
        }
    }

    /// Fraction of the full sphere covered by the double cone (both directions along x).
    pub fn cone_fraction(&self) -> f64 {
        1.0 - self.cos_cone
    }

    /// Channel index (0..128) of the crystal a photon from the origin along the unit vector `u`
    /// enters, and the path length to the face plane (mm); `None` if it misses both faces.
    #[inline]
    pub fn face_hit(&self, u: [f64; 3]) -> Option<(usize, f64)> {
        let ax = u[0].abs();
        if ax < 1e-9 {
            return None;
        }
        let path = self.half_d / ax;
        let y = u[1] * path;
        let z = u[2] * path;
        if !(y.abs() < self.half_face && z.abs() < self.half_face) {
            return None;
        }
        let half = CRYSTALS_PER_SIDE as f64 / 2.0;
        let n = CRYSTALS_PER_SIDE - 1;
        let xi = ((y / PITCH_MM + half).floor() as usize).min(n);
        let yi = ((z / PITCH_MM + half).floor() as usize).min(n);
        let module = usize::from(u[0] > 0.0);
        Some((
            module * CRYSTALS_PER_SIDE * CRYSTALS_PER_SIDE + yi * CRYSTALS_PER_SIDE + xi,
            path,
        ))
    }

    /// Direction uniform in the double cone around the x axis (either sign of x equally).
    #[inline]
    pub fn cone_direction(&self, rng: &mut Rng) -> [f64; 3] {
        let c = 1.0 - rng.uniform() * (1.0 - self.cos_cone);
        let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
        let s = (1.0 - c * c).max(0.0).sqrt();
        let (cp, sp) = unit_circle(rng);
        [sign * c, s * cp, s * sp]
    }

    /// Isotropic direction, or `None` when it lies outside the cone (and so misses both
    /// faces); the azimuth is only drawn for directions inside the cone.
    #[inline]
    pub fn isotropic_in_cone(&self, rng: &mut Rng) -> Option<[f64; 3]> {
        let c = 2.0 * rng.uniform() - 1.0;
        if c.abs() < self.cos_cone {
            return None;
        }
        let s = (1.0 - c * c).max(0.0).sqrt();
        let (cp, sp) = unit_circle(rng);
        Some([c, s * cp, s * sp])
    }

    /// The PETsys channel map: channel id `m*64 + yi*8 + xi` (port 0, slave 0, chip m) ->
    /// region m, indices and crystal centre (x = ∓(d/2 + 10), y = (xi − 3.5)·3.2,
    /// z = (yi − 3.5)·3.2 mm).
    pub fn channel_map(&self) -> Geometry {
        let mut g = Geometry::default();
        for ch in 0..N_CHANNELS {
            let (m, yi, xi) = channel_parts(ch);
            let sign = if m == 0 { -1.0 } else { 1.0 };
            let half = (CRYSTALS_PER_SIDE as f64 - 1.0) / 2.0;
            let pos_mm = [
                (sign * (self.half_d + CRYSTAL_DEPTH_MM / 2.0)) as f32,
                ((xi as f64 - half) * PITCH_MM) as f32,
                ((yi as f64 - half) * PITCH_MM) as f32,
            ];
            g.crystals.insert(
                channel_id(ch),
                Crystal {
                    module: m as u32,
                    xi: xi as u32,
                    yi: yi as u32,
                    pos_mm,
                },
            );
        }
        g
    }
}

/// `(cos φ, sin φ)` of an azimuth uniform in [0, 2π), by rejection from the square (no
/// trigonometric calls).
#[inline]
pub fn unit_circle(rng: &mut Rng) -> (f64, f64) {
    loop {
        let a = 2.0 * rng.uniform() - 1.0;
        let b = 2.0 * rng.uniform() - 1.0;
        let r2 = a * a + b * b;
        if r2 <= 1.0 && r2 > 1e-12 {
            let inv = 1.0 / r2.sqrt();
            return (a * inv, b * inv);
        }
    }
}

/// `(module, yi, xi)` of a channel index.
pub fn channel_parts(ch: usize) -> (usize, usize, usize) {
    let per = CRYSTALS_PER_SIDE * CRYSTALS_PER_SIDE;
    (
        ch / per,
        (ch % per) / CRYSTALS_PER_SIDE,
        ch % CRYSTALS_PER_SIDE,
    )
}

/// PETsys absolute channel id of a channel index: port 0, slave 0, chip = module,
/// channel = yi*8 + xi (so ids 0..63 and 64..127).
pub fn channel_id(ch: usize) -> u32 {
    let (m, yi, xi) = channel_parts(ch);
    module_channel_id(m, yi * CRYSTALS_PER_SIDE + xi)
}

/// Chips per slave (the 6-bit chipID field).
pub const CHIPS_PER_SLAVE: usize = 64;
/// Slaves per port (the 5-bit slaveID field).
pub const SLAVES_PER_PORT: usize = 32;
/// Largest number of 64-channel modules the channel id can address (32 ports).
pub const MAX_MODULES: usize = 32 * SLAVES_PER_PORT * CHIPS_PER_SLAVE;

/// PETsys absolute channel id of channel `channel` (0..64) of module (= chip) `module`:
/// chip = module % 64, slave = (module / 64) % 32, port = module / 2048, so modules 0..63 are
/// chips 0..63 of port 0, slave 0 exactly as in the bench preset.
pub fn module_channel_id(module: usize, channel: usize) -> u32 {
    ChannelId::from_parts(
        (module / (SLAVES_PER_PORT * CHIPS_PER_SLAVE)) as u32,
        ((module / CHIPS_PER_SLAVE) % SLAVES_PER_PORT) as u32,
        (module % CHIPS_PER_SLAVE) as u32,
        channel as u32,
    )
    .map_or(0, |c| c.0)
}

/// The front-end constants of one channel.
#[derive(Clone, Copy, Debug)]
pub struct ChannelConstants {
    /// PETsys channel id.
    pub id: u32,
    /// Time skew, ps (added to every hit's measured time).
    pub skew_ps: f64,
    /// ToT scale, ns: `ToT = a_ns ln(1 + E / b_kev)`.
    pub a_ns: f64,
    /// ToT saturation energy, keV (150 keV / gain).
    pub b_kev: f64,
    /// TDC response per TAC, `[T, E]` branch.
    pub tdc: [[TdcEntry; 2]; 4],
}

/// All channels' constants and the same values as scandaq-core tables.
#[derive(Clone, Debug)]
pub struct FrontEnd {
    /// Constants by channel index.
    pub channels: Vec<ChannelConstants>,
    /// TDC table.
    pub tdc: TdcTable,
    /// Energy table.
    pub energy: EnergyTable,
    /// Skew table.
    pub skew: SkewTable,
}

impl FrontEnd {
    /// Draws every bench channel's constants from `rng` (skew, then gain curve, then the 8
    /// TDCs).
    pub fn draw(config: &BenchConfig, rng: &mut Rng) -> Self {
        let ids: Vec<u32> = (0..N_CHANNELS).map(channel_id).collect();
        Self::draw_channels(&ids, config.skew_range_ps, config.gain_spread, rng)
    }

    /// Draws the constants of the channels `ids` (channel index = position in `ids`) from
    /// `rng`, channel by channel: skew uniform in ±`skew_range_ps`, ToT scale, gain uniform in
    /// 1 ± `gain_spread`, then the 8 TDCs (TAC-major, T before E).
    pub fn draw_channels(ids: &[u32], skew_range_ps: f64, gain_spread: f64, rng: &mut Rng) -> Self {
        let mut channels = Vec::with_capacity(ids.len());
        let mut tdc = TdcTable::default();
        let mut energy = EnergyTable::default();
        let mut skew = SkewTable::default();
        for &id in ids {
            let skew_ps = rng.range(-skew_range_ps, skew_range_ps);
            let a_ns = rng.range(70.0, 90.0);
            let gain = rng.range(1.0 - gain_spread, 1.0 + gain_spread);
            let b_kev = 150.0 / gain;
            let mut entries = [[TdcEntry {
                t0: 0.0,
                a0: 0.0,
                a1: 1.0,
                a2: 0.0,
            }; 2]; 4];
            for (tac, pair) in entries.iter_mut().enumerate() {
                for (b, e) in pair.iter_mut().enumerate() {
                    let t0 = rng.range(-0.3, 0.3);
                    let a0 = rng.range(60.0, 120.0);
                    let a1 = rng.range(300.0, 360.0);
                    let a2 = a1 * rng.range(-0.06, -0.02);
                    *e = TdcEntry { t0, a0, a1, a2 };
                    let branch = if b == 0 { Branch::T } else { Branch::E };
                    tdc.entries.insert((id, tac as u8, branch), *e);
                }
            }
            energy.entries.insert(id, EnergyEntry { a_ns, b_kev });
            skew.offsets_ps.insert(id, skew_ps);
            channels.push(ChannelConstants {
                id,
                skew_ps,
                a_ns,
                b_kev,
                tdc: entries,
            });
        }
        Self {
            channels,
            tdc,
            energy,
            skew,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_and_map() {
        assert_eq!(channel_id(0), 0);
        assert_eq!(channel_id(63), 63);
        assert_eq!(channel_id(64), 64);
        assert_eq!(channel_id(127), 127);
        let g = BenchGeometry::new(250.0).channel_map();
        assert_eq!(g.crystals.len(), 128);
        let c = g.crystal(64 + 8 * 2 + 5).unwrap();
        assert_eq!((c.module, c.xi, c.yi), (1, 5, 2));
        assert_eq!(
            c.pos_mm,
            [135.0, (1.5f64 * 3.2) as f32, (-1.5f64 * 3.2) as f32]
        );
        assert_eq!(g.crystal(0).unwrap().pos_mm[0], -135.0);
    }

    #[test]
    fn face_hits_land_in_the_right_crystal() {
        let geo = BenchGeometry::new(250.0);
        let norm = |v: [f64; 3]| {
            let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            [v[0] / n, v[1] / n, v[2] / n]
        };
        // Aim at the centre of crystal xi=5, yi=2 of module 1 and xi=0, yi=7 of module 0.
        let (ch, path) = geo.face_hit(norm([125.0, 1.5 * 3.2, -1.5 * 3.2])).unwrap();
        assert_eq!(ch, 64 + 2 * 8 + 5);
        assert!((path - (125.0f64.powi(2) + 2.0 * 4.8f64.powi(2)).sqrt()).abs() < 1e-9);
        let (ch, _) = geo.face_hit(norm([-125.0, -3.5 * 3.2, 3.5 * 3.2])).unwrap();
        assert_eq!(ch, 7 * 8);
        assert!(geo.face_hit(norm([125.0, 13.0, 0.0])).is_none());
        assert!(geo.face_hit([0.0, 1.0, 0.0]).is_none());
        // The cone just covers the face corners.
        let corner = norm([125.0, 12.8, 12.8]);
        assert!((corner[0] - geo.cos_cone).abs() < 1e-12);
    }

    #[test]
    fn tdc_codes_stay_inside_ten_bits() {
        let mut rng = Rng::seed_from_u64(3);
        let fe = FrontEnd::draw(&BenchConfig::default(), &mut rng);
        assert_eq!(fe.tdc.entries.len(), 128 * 8);
        for e in fe.tdc.entries.values() {
            for q in [0.0, 0.5, 1.0] {
                let f = e.a0 + e.a1 * q + e.a2 * q * q;
                assert!((50.0..600.0).contains(&f));
            }
            assert!(e.a2 < 0.0 && e.t0.abs() <= 0.3);
        }
    }
}
