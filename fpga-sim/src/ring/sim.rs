//! The ring simulation engine ([`RingSim`]): Poisson source decays (annihilation point,
//! photon pair, phantom scatter, crystal entry, detection, photopeak or Compton deposit,
//! inter-crystal sharing), Lu-176 background and SiPM dark counts, fed through the same
//! electronics as the bench preset (skew, jitter, energy resolution, dead time, TDC, ToT,
//! frames), slice by slice with the truth beside; plus the truth-based pair counts of
//! `summary.json`.
//!
//! Simplifications (the README lists them for users):
//! - Only decays whose photon axis lies in the axial acceptance band are simulated; the
//!   activity reported as total is the simulated rate over the band's solid-angle fraction.
//!   With a phantom the automatic band is widened to the directions that reach the ring from
//!   any point of the phantom, so scatter of photons that start outside it is neglected.
//! - A photon's first interaction is in the crystal whose front-face cell it crosses (no depth
//!   of interaction, no entry through module sides); arrival time = decay time + path / c.
//! - Detected photons deposit their full energy with `photopeak_fraction`, else an energy
//!   uniform up to the Compton edge; a full-energy photon shares it with 1 or 2 neighbouring
//!   crystals of its module with `inter_crystal_fraction` (first deposit uniform up to the
//!   Compton edge, the rest further on), each later crystal 13–40 ps later (distance / c).

use crate::config::SimError;
use crate::detector::{C_MM_PER_PS, FrontEnd};
use crate::ring::config::RingConfig;
use crate::ring::geometry::RingGeometry;
use crate::ring::physics::{
    Photon, band_direction, compton_edge, isotropic, partner, sample_source, through_phantom,
};
use crate::rng::Rng;
use crate::sim::{
    BACKGROUND_ID_BIT, DARK_CROSSTALK, DARK_ID_BIT, DARK_KEV_PER_PE, E_511, Electronics,
    LU_BETA_MAX, LU_GAMMAS, SLICE_PS,
};
use crate::truth::{HitKind, TruthBatch, TruthExtra};
use scandaq_core::{EnergyTable, Geometry, SkewTable, TdcTable};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Lu-176 activity of LYSO, Bq per mm³ (39 Bq/cm³).
const LU_BQ_PER_MM3: f64 = 39.0e-3;
/// Probability that an inter-crystal scattered photon reaches a third crystal.
const ICS_THIRD: f64 = 0.25;
/// Probability that the next crystal is two cells away instead of adjacent.
const ICS_FAR: f64 = 0.2;
/// Decays sampled by the pilot Monte Carlo that sets the activity.
const PILOT_DECAYS: usize = 200_000;
/// Fixed seed of the pilot.
const PILOT_SEED: u64 = 0x5ca7_da0b_e7c4_0002;
/// Truth-pair bookkeeping keeps a decay this long after its last hit, ps.
const PAIR_MEMORY_PS: i64 = 100_000_000;

/// One crystal deposit above threshold, before the electronics.
#[derive(Clone, Copy, Debug)]
struct Deposit {
    t_true: f64,
    ch: usize,
    e: f64,
    photon_id: u8,
    kind: HitKind,
    extra: TruthExtra,
}

#[derive(Clone, Debug, Default)]
struct PhysCounters {
    decays: u64,
    photons_reaching_ring: u64,
    photons_object_scattered: u64,
    photons_absorbed: u64,
    photons_detected: u64,
    below_threshold: u64,
    background_decays: u64,
    dark_counts: u64,
}

/// The geometry and physics constants of a configuration.
#[derive(Clone, Debug)]
struct Physics {
    config: RingConfig,
    geo: RingGeometry,
    cos_acc: f64,
    sigma_acol: f64,
}

impl Physics {
    fn new(config: &RingConfig) -> Self {
        let geo = RingGeometry::new(config);
        let sigma_acol = config.acollinearity_fwhm_deg.to_radians() / 2.355;
        let cos_acc = config.axial_acceptance_cos.unwrap_or_else(|| {
            let (mut r, mut z) = config.source.extent();
            if let Some(p) = &config.phantom {
                r = r.max(p.radius_mm);
                z = z.max(p.length_mm / 2.0);
            }
            let extra = 10.0 * config.positron_range_mm;
            let (r, z) = (r + extra, z + extra);
            let h = geo.half_axial_mm() + config.crystal_pitch_mm;
            let el = ((h + z) / (config.ring_radius_mm - r).max(1.0)).atan()
                + 6.0 * sigma_acol * std::f64::consts::SQRT_2
                + 1e-3;
            el.sin().min(1.0)
        });
        Self {
            config: config.clone(),
            geo,
            cos_acc,
            sigma_acol,
        }
    }

    /// One source decay at `t`: deposits above threshold go to `out`.
    fn decay(&self, rng: &mut Rng, t: f64, out: &mut Vec<Deposit>, c: &mut PhysCounters) {
        c.decays += 1;
        let mut x = sample_source(rng, &self.config.source);
        if self.config.positron_range_mm > 0.0 {
            let d = rng.exponential(1.0 / self.config.positron_range_mm);
            let v = isotropic(rng);
            for (xi, vi) in x.iter_mut().zip(v) {
                *xi += d * vi;
            }
        }
        let u = band_direction(rng, self.cos_acc);
        let v = partner(rng, u, self.sigma_acol);
        let src = [x[0] as f32, x[1] as f32, x[2] as f32];
        self.photon(rng, t, x, u, 1, src, out, c);
        self.photon(rng, t, x, v, 2, src, out, c);
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn photon(
        &self,
        rng: &mut Rng,
        t: f64,
        x: [f64; 3],
        u: [f64; 3],
        photon_id: u8,
        src_mm: [f32; 3],
        out: &mut Vec<Deposit>,
        c: &mut PhysCounters,
    ) {
        let mut ph = Photon {
            pos: x,
            dir: u,
            e_kev: E_511,
            path_mm: 0.0,
            n_scatter: 0,
        };
        if let Some(p) = &self.config.phantom {
            if !through_phantom(rng, p, &mut ph) {
                c.photons_absorbed += 1;
                return;
            }
            c.photons_object_scattered += u64::from(ph.n_scatter > 0);
        }
        let Some(hit) = self.geo.face_hit(ph.pos, ph.dir) else {
            return;
        };
        c.photons_reaching_ring += 1;
        if rng.uniform() >= self.config.detection_efficiency {
            return;
        }
        let t_arr = t + (ph.path_mm + hit.path_mm) / C_MM_PER_PS;
        let e = ph.e_kev;
        // Up to 3 crystals: (channel, energy, delay ps).
        let mut parts = [(hit.ch, 0.0, 0.0); 3];
        let mut n = 1;
        let dep;
        if rng.uniform() < self.config.photopeak_fraction {
            dep = e;
            parts[0].1 = e;
            if rng.uniform() < self.config.inter_crystal_fraction {
                let mut remaining = e;
                let mut cur = hit.ch;
                let mut delay = 0.0;
                loop {
                    let t1 = compton_edge(remaining) * rng.uniform_open0();
                    let Some((next, dist)) = self.neighbour(rng, cur, &parts[..n]) else {
                        break;
                    };
                    parts[n - 1].1 = t1;
                    remaining -= t1;
                    delay += dist / C_MM_PER_PS;
                    parts[n] = (next, remaining, delay);
                    n += 1;
                    cur = next;
                    if n == 3 || rng.uniform() >= ICS_THIRD {
                        break;
                    }
                }
            }
        } else {
            dep = compton_edge(e) * rng.uniform_open0();
            parts[0].1 = dep;
        }
        let kind0 = if ph.n_scatter > 0 {
            HitKind::Scatter
        } else {
            HitKind::True
        };
        let mut any = false;
        for (i, &(ch, ei, delay)) in parts[..n].iter().enumerate() {
            if ei < self.config.threshold_kev {
                c.below_threshold += 1;
                continue;
            }
            any = true;
            out.push(Deposit {
                t_true: t_arr + delay,
                ch,
                e: ei,
                photon_id,
                kind: if i == 0 { kind0 } else { HitKind::InterCrystal },
                extra: TruthExtra {
                    interaction: i as u8,
                    n_scatter: ph.n_scatter,
                    e_photon_kev: e as f32,
                    photon_dep_kev: dep as f32,
                    src_mm,
                },
            });
        }
        c.photons_detected += u64::from(any);
    }

    /// A crystal of the same module next to `cur` (adjacent, or two cells away with
    /// [`ICS_FAR`]) not yet in `used`, and its distance, mm.
    #[inline]
    fn neighbour(
        &self,
        rng: &mut Rng,
        cur: usize,
        used: &[(usize, f64, f64)],
    ) -> Option<(usize, f64)> {
        let (m, yi, xi) = RingGeometry::parts(cur);
        for _ in 0..8 {
            let reach: i64 = if rng.uniform() < ICS_FAR { 2 } else { 1 };
            let side = 2 * reach + 1;
            let mut k = rng.below((side * side - 1) as u64) as i64;
            if k >= (side * side) / 2 {
                k += 1; // skip the centre cell
            }
            let (dx, dy) = (k % side - reach, k / side - reach);
            let (x, y) = (xi as i64 + dx, yi as i64 + dy);
            if !(0..8).contains(&x) || !(0..8).contains(&y) {
                continue;
            }
            let next = RingGeometry::index(m, y as usize, x as usize);
            if used.iter().any(|p| p.0 == next) {
                continue;
            }
            let dist = self.config.crystal_pitch_mm * ((dx * dx + dy * dy) as f64).sqrt();
            return Some((next, dist));
        }
        None
    }
}

/// Truth-based pair bookkeeping over the emitted rows.
#[derive(Clone, Debug, Default)]
struct PairCounter {
    /// decay id -> (photon mask, first emitted true time per photon, scattered mask, last t).
    open: HashMap<u64, ([i64; 2], u8, u8, i64)>,
    photons_emitted: u64,
    pairs: u64,
    in_window: u64,
    scattered_in_window: u64,
    window_ps: i64,
}

impl PairCounter {
    fn add(&mut self, truth: &TruthBatch, from: usize) {
        for i in from..truth.len() {
            let id = truth.decay_id[i];
            if id & (DARK_ID_BIT | BACKGROUND_ID_BIT) != 0 {
                continue;
            }
            let p = truth.photon_id[i];
            if !(1..=2).contains(&p) {
                continue;
            }
            let bit = 1u8 << (p - 1);
            let t = truth.t_true_ps[i];
            let e = self.open.entry(id).or_insert(([0; 2], 0, 0, t));
            e.3 = e.3.max(t);
            if e.1 & bit != 0 {
                continue;
            }
            e.1 |= bit;
            e.0[usize::from(p - 1)] = t;
            if truth.n_scatter[i] > 0 {
                e.2 |= bit;
            }
            self.photons_emitted += 1;
            if e.1 == 3 {
                self.pairs += 1;
                if (e.0[0] - e.0[1]).abs() <= self.window_ps {
                    self.in_window += 1;
                    self.scattered_in_window += u64::from(e.2 != 0);
                }
            }
        }
        if let Some(&last) = truth.t_true_ps.last()
            && self.open.len() > 4096
        {
            self.open.retain(|_, e| e.3 > last - PAIR_MEMORY_PS);
        }
    }
}

/// What a ring simulation did, for `summary.json` and the console.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RingSummary {
    /// Geometry preset (`ring`).
    pub preset: String,
    /// Seed.
    pub seed: u64,
    /// Detector time simulated so far, s.
    pub simulated_s: f64,
    /// The whole configured duration has been generated and flushed.
    pub finished: bool,
    /// Hit words emitted (= truth rows).
    pub hits_emitted: u64,
    /// Frames emitted (only non-empty frames).
    pub frames_emitted: u64,
    /// Frames flagged lost because they overflowed `max_hits_per_frame`.
    pub lossy_frames: u64,
    /// Source decays simulated (those in the axial acceptance band).
    pub decays: u64,
    /// Annihilation photons that entered a crystal face.
    pub photons_reaching_ring: u64,
    /// Photons that Compton-scattered in the phantom and left it.
    pub photons_object_scattered: u64,
    /// Photons absorbed in the phantom (below 100 keV or after 10 scatters).
    pub photons_absorbed_in_phantom: u64,
    /// Photons with at least one deposit above threshold (before dead time).
    pub photons_detected: u64,
    /// Photons with at least one emitted hit.
    pub photons_emitted: u64,
    /// Decays with hits of both photons emitted.
    pub true_pairs_emitted: u64,
    /// Of those, decays whose photons' first emitted hits are within the window in true time.
    pub true_coincidences_in_window: u64,
    /// Of those, decays where at least one photon scattered in the object.
    pub scattered_coincidences_in_window: u64,
    /// Window of the two counts above, ps.
    pub coincidence_window_ps: f64,
    /// Random coincidences expected from uncorrelated singles: emitted hit rate² × window
    /// (no energy window; one window opened per single), Hz.
    pub randoms_rate_estimate_hz: f64,
    /// Lu-176 decays generated (above and below threshold).
    pub background_decays: u64,
    /// Dark-count hits emitted.
    pub dark_hits: u64,
    /// Hits dropped by the per-channel dead time.
    pub dead_time_lost: u64,
    /// Hits cut from overflowing frames.
    pub overflow_lost: u64,
    /// Crystal deposits (and background decays) below the threshold.
    pub below_threshold: u64,
    /// Emitted hits by kind name.
    pub hits_by_kind: BTreeMap<String, u64>,
    /// Raw 36-bit frameID of the first emitted frame.
    pub first_frame_id: Option<u64>,
    /// Raw 36-bit frameID of the last emitted frame.
    pub last_frame_id: Option<u64>,
    /// Absolute (unwrapped) frame number of the first emitted frame.
    pub first_frame: Option<u64>,
    /// Absolute (unwrapped) frame number of the last emitted frame.
    pub last_frame: Option<u64>,
    /// 36-bit frameID wraps between the first and last emitted frames.
    pub wraps: u64,
    /// |cos(polar angle)| limit of the simulated photon axes (= fraction of all decays).
    pub axial_acceptance_cos: f64,
    /// Rate of simulated decays (in the band), Bq.
    pub activity_simulated_bq: f64,
    /// Equivalent total source activity, Bq.
    pub activity_total_bq: f64,
    /// Fraction of the face circle covered by modules.
    pub transaxial_coverage: f64,
    /// Expected emitted hits per simulated decay (pilot Monte Carlo, before dead time).
    pub expected_hits_per_decay: f64,
    /// Expected emitted hit rate before dead time and frame overflow, Hz.
    pub expected_hit_rate_hz: f64,
    /// Dark-count rate above threshold, all channels, Hz.
    pub dark_rate_above_threshold_hz: f64,
    /// Lu-176 decay rate, all crystals, Hz.
    pub background_rate_hz: f64,
    /// Remarks.
    pub notes: Vec<String>,
    /// The configuration.
    pub config: RingConfig,
}

/// The ring simulator. Create with [`RingSim::new`], call [`RingSim::next_slice`] until it
/// returns false, read [`RingSim::summary`].
#[derive(Debug)]
pub struct RingSim {
    phys: Physics,
    fe: Electronics,
    geometry: Geometry,
    rng: Rng,
    activity: f64,
    dark_rate: f64,
    dark_n_min: u32,
    bg_rate: f64,
    bg_above: f64,
    expected_hits_per_decay: f64,
    notes: Vec<String>,
    t_end: f64,
    t_now: f64,
    next_decay: f64,
    next_dark: f64,
    next_bg: f64,
    next_decay_id: u64,
    next_dark_id: u64,
    next_bg_id: u64,
    deposits: Vec<Deposit>,
    counters: PhysCounters,
    pairs: PairCounter,
    finished: bool,
}

impl RingSim {
    /// Validates `config`, draws the per-channel constants and sets the source activity
    /// (from `activity_bq`, or so the expected emitted hit rate is `hit_rate_hz`).
    pub fn new(config: RingConfig) -> Result<Self, SimError> {
        config.validate()?;
        let phys = Physics::new(&config);
        let ids = phys.geo.channel_ids();
        let n_ch = ids.len() as f64;
        let front = FrontEnd::draw_channels(
            &ids,
            config.skew_range_ps,
            config.gain_spread,
            &mut Rng::stream(config.seed, 0),
        );
        let fe = Electronics::new(front, config.electronics());
        let geometry = phys.geo.channel_map();
        let mut notes = Vec::new();

        let dark_n_min = ((config.threshold_kev / DARK_KEV_PER_PE).ceil().max(1.0)) as u32;
        let dark_rate = n_ch
            * config.dark_rate_hz
            * DARK_CROSSTALK.powi(dark_n_min.saturating_sub(1).min(1000) as i32);
        let crystal_mm3 = config.crystal_pitch_mm.powi(2) * config.crystal_length_mm;
        let bg_rate = if config.lyso_background {
            n_ch * LU_BQ_PER_MM3 * crystal_mm3
        } else {
            0.0
        };
        let bg_above: f64 = LU_GAMMAS
            .iter()
            .map(|&(g, p)| {
                p * ((LU_BETA_MAX + g - config.threshold_kev) / LU_BETA_MAX).clamp(0.0, 1.0)
            })
            .sum();
        let fixed_rate = dark_rate + bg_rate * bg_above;

        // Pilot: deposits above threshold per simulated decay.
        let h = {
            let mut rng = Rng::seed_from_u64(PILOT_SEED);
            let mut out = Vec::new();
            let mut c = PhysCounters::default();
            let mut total = 0usize;
            for _ in 0..PILOT_DECAYS {
                phys.decay(&mut rng, 0.0, &mut out, &mut c);
                total += out.len();
                out.clear();
            }
            total as f64 / PILOT_DECAYS as f64
        };
        let activity = if let Some(a) = config.activity_bq {
            a * phys.cos_acc
        } else {
            let signal = config.hit_rate_hz - fixed_rate;
            if h <= 0.0 {
                notes.push(
                    "the source cannot produce hits with this configuration; activity set to 1 Bq"
                        .to_string(),
                );
                1.0
            } else if signal < 0.01 * config.hit_rate_hz {
                let a = 0.01 * config.hit_rate_hz / h;
                notes.push(format!(
                    "requested hit rate {} Hz is below dark + background ({fixed_rate:.0} Hz); the \
                     source activity is set to give 1% of the requested rate",
                    config.hit_rate_hz
                ));
                a
            } else {
                signal / h
            }
        };
        let max_activity = 1000.0 * config.hit_rate_hz.max(1e6);
        let activity = if activity > max_activity && config.activity_bq.is_none() {
            notes.push(format!(
                "only {h:.2e} hits per decay are expected; the simulated activity is capped at \
                 {max_activity:.3e} Bq, so the requested hit rate is not reached"
            ));
            max_activity
        } else {
            activity
        };

        let t_begin = fe.t_begin;
        let mut rng = Rng::stream(config.seed, 1);
        let mut first = |rate: f64| {
            if rate > 0.0 {
                t_begin + rng.exponential(rate * 1e-12)
            } else {
                f64::INFINITY
            }
        };
        let next_decay = first(activity);
        let next_dark = first(dark_rate);
        let next_bg = first(bg_rate);
        Ok(Self {
            fe,
            geometry,
            rng,
            activity,
            dark_rate,
            dark_n_min,
            bg_rate,
            bg_above,
            expected_hits_per_decay: h,
            notes,
            t_end: config.duration_s * 1e12,
            t_now: 0.0,
            next_decay,
            next_dark,
            next_bg,
            next_decay_id: 0,
            next_dark_id: 0,
            next_bg_id: 0,
            deposits: Vec::new(),
            counters: PhysCounters::default(),
            pairs: PairCounter {
                window_ps: config.coincidence_window_ps.round() as i64,
                ..Default::default()
            },
            finished: false,
            phys,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RingConfig {
        &self.phys.config
    }

    /// The scanner geometry (ray lookup, crystal centres).
    pub fn ring_geometry(&self) -> &RingGeometry {
        &self.phys.geo
    }

    /// True TDC calibration: per (channel, TAC, branch) `t0, a0, a1, a2`.
    pub fn true_tdc(&self) -> &TdcTable {
        &self.fe.front.tdc
    }

    /// True ToT -> keV curve per channel.
    pub fn true_energy(&self) -> &EnergyTable {
        &self.fe.front.energy
    }

    /// True time skew per channel, ps.
    pub fn true_skew(&self) -> &SkewTable {
        &self.fe.front.skew
    }

    /// Channel map (PETsys `map_channel.tsv` content).
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Generates the next slice (about 1 ms) of detector time, appending whole encoded frames
    /// to `frames` and one truth row per emitted hit word to `truth`, in the same order.
    /// Returns false (appending nothing) once the configured duration is exhausted.
    pub fn next_slice(&mut self, frames: &mut Vec<u8>, truth: &mut TruthBatch) -> bool {
        if self.finished {
            return false;
        }
        let t1 = (self.t_now + SLICE_PS).min(self.t_end);
        self.generate(t1);
        self.t_now = t1;
        let last = t1 >= self.t_end;
        let from = truth.len();
        self.fe.advance(&mut self.rng, t1, last, frames, truth);
        self.pairs.add(truth, from);
        self.finished = last;
        true
    }

    fn generate(&mut self, t1: f64) {
        let ps = 1e-12;
        while self.next_decay < t1 {
            let t = self.next_decay;
            let id = self.next_decay_id;
            self.next_decay_id += 1;
            self.phys
                .decay(&mut self.rng, t, &mut self.deposits, &mut self.counters);
            for d in self.deposits.drain(..) {
                self.fe.candidate(
                    &mut self.rng,
                    d.t_true,
                    d.ch,
                    d.e,
                    id,
                    d.photon_id,
                    d.kind,
                    d.extra,
                );
            }
            self.next_decay += self.rng.exponential(self.activity * ps);
        }
        let n_ch = self.phys.geo.n_channels() as u64;
        while self.next_dark < t1 {
            let t = self.next_dark;
            let id = DARK_ID_BIT | self.next_dark_id;
            self.next_dark_id += 1;
            self.counters.dark_counts += 1;
            let ch = self.rng.below(n_ch) as usize;
            let mut n = self.dark_n_min;
            while n < 10_000 && self.rng.uniform() < DARK_CROSSTALK {
                n += 1;
            }
            let e = f64::from(n) * DARK_KEV_PER_PE;
            self.fe.candidate(
                &mut self.rng,
                t,
                ch,
                e,
                id,
                0,
                HitKind::Dark,
                TruthExtra::default(),
            );
            self.next_dark += self.rng.exponential(self.dark_rate * ps);
        }
        while self.next_bg < t1 {
            let t = self.next_bg;
            let id = BACKGROUND_ID_BIT | self.next_bg_id;
            self.next_bg_id += 1;
            self.counters.background_decays += 1;
            let ch = self.rng.below(n_ch) as usize;
            let beta = LU_BETA_MAX * self.rng.uniform_open0();
            let mut x = self.rng.uniform();
            let mut gamma = LU_GAMMAS[LU_GAMMAS.len() - 1].0;
            for &(g, p) in &LU_GAMMAS {
                if x < p {
                    gamma = g;
                    break;
                }
                x -= p;
            }
            let e = beta + gamma;
            if e < self.phys.config.threshold_kev {
                self.counters.below_threshold += 1;
            } else {
                self.fe.candidate(
                    &mut self.rng,
                    t,
                    ch,
                    e,
                    id,
                    0,
                    HitKind::Background,
                    TruthExtra::default(),
                );
            }
            self.next_bg += self.rng.exponential(self.bg_rate * ps);
        }
    }

    /// Counts so far (complete once [`RingSim::next_slice`] has returned false).
    pub fn summary(&self) -> RingSummary {
        let c = &self.counters;
        let e = &self.fe.counters;
        let hits_emitted: u64 = e.hits_by_kind.iter().sum();
        let hits_by_kind = HitKind::ALL
            .iter()
            .filter(|k| **k != HitKind::PromptGamma)
            .map(|k| (k.name().to_string(), e.hits_by_kind[*k as usize]))
            .collect();
        let simulated_s = self.t_now / 1e12;
        let cfg = &self.phys.config;
        let rate = if simulated_s > 0.0 {
            hits_emitted as f64 / simulated_s
        } else {
            0.0
        };
        RingSummary {
            preset: "ring".into(),
            seed: cfg.seed,
            simulated_s,
            finished: self.finished,
            hits_emitted,
            frames_emitted: e.frames,
            lossy_frames: e.lossy_frames,
            decays: c.decays,
            photons_reaching_ring: c.photons_reaching_ring,
            photons_object_scattered: c.photons_object_scattered,
            photons_absorbed_in_phantom: c.photons_absorbed,
            photons_detected: c.photons_detected,
            photons_emitted: self.pairs.photons_emitted,
            true_pairs_emitted: self.pairs.pairs,
            true_coincidences_in_window: self.pairs.in_window,
            scattered_coincidences_in_window: self.pairs.scattered_in_window,
            coincidence_window_ps: cfg.coincidence_window_ps,
            randoms_rate_estimate_hz: rate * rate * cfg.coincidence_window_ps * 1e-12,
            background_decays: c.background_decays,
            dark_hits: e.hits_by_kind[HitKind::Dark as usize],
            dead_time_lost: e.dead_time_lost,
            overflow_lost: e.overflow_lost,
            below_threshold: c.below_threshold,
            hits_by_kind,
            first_frame_id: e.first_frame.map(|f| f % crate::config::FRAME_ID_MODULUS),
            last_frame_id: e.last_frame.map(|f| f % crate::config::FRAME_ID_MODULUS),
            first_frame: e.first_frame,
            last_frame: e.last_frame,
            wraps: match (e.first_frame, e.last_frame) {
                (Some(a), Some(b)) => {
                    b / crate::config::FRAME_ID_MODULUS - a / crate::config::FRAME_ID_MODULUS
                }
                _ => 0,
            },
            axial_acceptance_cos: self.phys.cos_acc,
            activity_simulated_bq: self.activity,
            activity_total_bq: self.activity / self.phys.cos_acc,
            transaxial_coverage: self.phys.geo.transaxial_coverage(),
            expected_hits_per_decay: self.expected_hits_per_decay,
            expected_hit_rate_hz: self.activity * self.expected_hits_per_decay
                + self.dark_rate
                + self.bg_rate * self.bg_above,
            dark_rate_above_threshold_hz: self.dark_rate,
            background_rate_hz: self.bg_rate,
            notes: self.notes.clone(),
            config: cfg.clone(),
        }
    }
}
