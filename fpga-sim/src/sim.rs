//! The bench simulation engine ([`BenchSim`]): Poisson sources (Na-22 decays, Lu-176
//! background, SiPM dark counts) -> deposits above threshold -> measured times and energies ->
//! per-channel dead time -> TOFPET2 hit words (TAC round-robin, TDC response, ToT) -> frames
//! with overflow flagging, generated slice by slice in emission order with the truth beside.
//!
//! Simplifications (documented for the tests that compare against the truth):
//! - Photons travel straight from the source to the module face; the arrival time is the decay
//!   time plus the path to the face plane over c (no depth of interaction, no light transport).
//! - A detected photon deposits its full energy with `photopeak_fraction`, else an energy
//!   uniform in (0, Compton edge] in the same crystal (340.67 keV for 511 keV, 1061.7 keV for
//!   the 1274.5 keV gamma, photopeak probability 0.35); no inter-crystal or object scatter.
//! - Only decays whose annihilation axis lies in the double cone covering both faces are
//!   simulated in full. Their prompt gamma is isotropic; the prompt gammas of the other decays
//!   are simulated as a separate Poisson process of "prompt-only" decays whose gamma lies in
//!   the cone, at rate `A (1 − f)` where `f` is the cone's solid-angle fraction, so the prompt
//!   single rate is what a real source of total activity `A / f` gives.
//! - Lu-176: beta energy uniform in (0, 596] keV plus a cascade deposit of 0, 88, 202, 307 or
//!   202 + 307 keV (probabilities 0.30, 0.15, 0.20, 0.25, 0.10).
//! - Dark counts: primary avalanche plus geometric optical crosstalk (p = 0.15), 4 keV per
//!   photo-electron; only the part of the process above threshold is generated.
//! - Time over threshold has a floor of 3 ns (0.6 clock periods) so the energy branch never
//!   ends before the timing branch's clock tick; deposits measuring below ~6 keV read high.
//! - Dead time acts before the frame-overflow cut: hits dropped because a frame overflowed
//!   still made their channel busy.

use crate::config::{
    BenchConfig, CLOCK_PERIOD_PS, FRAME_ID_MODULUS, FRAME_PS, FRAME_TICKS, SimError,
};
use crate::detector::{BenchGeometry, C_MM_PER_PS, FrontEnd, N_CHANNELS};
use crate::rng::Rng;
use crate::truth::{HitKind, TruthBatch, TruthExtra};
use scandaq_core::{EnergyTable, Geometry, SkewTable, TdcEntry, TdcTable};
use scandaq_decoders::petsys::{HitFields, encode_frame};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Detector time generated per slice, ps (1 ms).
pub(crate) const SLICE_PS: f64 = 1e9;
/// Annihilation photon energy, keV.
pub const E_511: f64 = 511.0;
/// Compton edge of 511 keV, keV.
pub const COMPTON_EDGE_511: f64 = 340.67;
/// Na-22 prompt gamma energy, keV.
pub const E_PROMPT: f64 = 1274.5;
/// Compton edge of the prompt gamma, keV.
pub const COMPTON_EDGE_PROMPT: f64 = 1061.7;
/// Photopeak probability of a detected prompt gamma.
pub const PROMPT_PHOTOPEAK: f64 = 0.35;
/// Optical crosstalk probability per avalanche of a dark count.
pub const DARK_CROSSTALK: f64 = 0.15;
/// Energy of one photo-electron, keV.
pub const DARK_KEV_PER_PE: f64 = 4.0;
/// Lu-176 activity per crystal, Bq (39 Bq/cm³ × 0.3 × 0.3 × 2.0 cm³).
pub const LU_BQ_PER_CRYSTAL: f64 = 39.0 * 0.18;
/// Lu-176 beta end point used, keV.
pub const LU_BETA_MAX: f64 = 596.0;
/// Lu-176 cascade deposits (keV) and their probabilities.
pub(crate) const LU_GAMMAS: [(f64, f64); 5] = [
    (0.0, 0.30),
    (88.0, 0.15),
    (202.0, 0.20),
    (307.0, 0.25),
    (509.0, 0.10),
];
/// Shortest time over threshold, ns.
pub const MIN_TOT_NS: f64 = 3.0;
/// Bit set in the decay id of dark counts.
pub const DARK_ID_BIT: u64 = 1 << 62;
/// Bit set in the decay id of Lu-176 decays.
pub const BACKGROUND_ID_BIT: u64 = 1 << 63;
/// Directions sampled by the pilot Monte Carlo that sets the activity.
const PILOT_SAMPLES: usize = 200_000;
/// Fixed seed of the pilot (the activity depends on the physics settings only).
const PILOT_SEED: u64 = 0x5ca7_da0b_e7c4_0001;

/// A deposit that passed the threshold, with its measured time and energy, before dead time.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    /// Sort key: bit pattern of `t_meas` (non-negative f64 bits order like the values).
    key: u64,
    /// Measured leading-edge time since the run start, ps (true + skew + jitter).
    t_meas: f64,
    /// True time since the run start, ps.
    t_true: f64,
    e_meas: f32,
    e_true: f32,
    decay_id: u64,
    ch: u16,
    photon_id: u8,
    kind: HitKind,
    extra: TruthExtra,
}

/// A hit word waiting for its frame to be complete.
#[derive(Clone, Copy, Debug)]
struct Ready {
    /// Frame number since frame `start_frame_id`.
    frame: u64,
    tcoarse: u16,
    channel: u32,
    word: u64,
    t_true_ps: i64,
    e_true: f32,
    decay_id: u64,
    photon_id: u8,
    kind: HitKind,
    extra: TruthExtra,
}

#[derive(Clone, Debug, Default)]
struct Counters {
    decays_in_cone: u64,
    decays_prompt_only: u64,
    background_decays: u64,
    dark_counts: u64,
    below_threshold: u64,
}

/// The electronics settings every preset shares (see [`BenchConfig`] for their meaning).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ElectronicsParams {
    pub ctr_fwhm_ps: f64,
    pub energy_resolution_fwhm: f64,
    pub skew_range_ps: f64,
    pub dead_time_ns: f64,
    pub tdc_noise_codes: f64,
    pub max_hits_per_frame: usize,
    pub start_frame_id: u64,
}

impl ElectronicsParams {
    pub(crate) fn of_bench(c: &BenchConfig) -> Self {
        Self {
            ctr_fwhm_ps: c.ctr_fwhm_ps,
            energy_resolution_fwhm: c.energy_resolution_fwhm,
            skew_range_ps: c.skew_range_ps,
            dead_time_ns: c.dead_time_ns,
            tdc_noise_codes: c.tdc_noise_codes,
            max_hits_per_frame: c.max_hits_per_frame,
            start_frame_id: c.start_frame_id,
        }
    }
}

/// What the electronics emitted and lost.
#[derive(Clone, Debug, Default)]
pub(crate) struct FrontEndCounters {
    pub hits_by_kind: [u64; HitKind::ALL.len()],
    pub frames: u64,
    pub lossy_frames: u64,
    pub dead_time_lost: u64,
    pub overflow_lost: u64,
    pub first_frame: Option<u64>,
    pub last_frame: Option<u64>,
}

/// The front end shared by the presets: deposits (candidates) -> measured time and energy
/// (jitter, skew, resolution) -> dead time -> TOFPET2 hit words -> frames with overflow
/// flagging, with one truth row per emitted word. Random draws come from the caller's
/// generator so a preset keeps one event stream.
#[derive(Debug)]
pub(crate) struct Electronics {
    pub front: FrontEnd,
    pub counters: FrontEndCounters,
    p: ElectronicsParams,
    sigma_t_ps: f64,
    res_coef: f64,
    dead_ps: f64,
    /// Margin between generated time and final times: 2 frames beyond any reordering.
    pub margin_ps: f64,
    /// Earliest time an event may be generated at, ps since the run start.
    pub t_begin: f64,
    base_ps: i64,
    candidates: Vec<Candidate>,
    ready: Vec<Ready>,
    words: Vec<u64>,
    last_emit_ps: Vec<f64>,
    tac_count: Vec<u32>,
}

/// What a simulation did, for `summary.json` and the console.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimSummary {
    /// Geometry preset.
    pub preset: String,
    /// Seed.
    pub seed: u64,
    /// Detector time simulated so far, s.
    pub simulated_s: f64,
    /// The whole configured duration has been generated and flushed.
    pub finished: bool,
    /// Hit words emitted (= truth rows).
    pub hits_emitted: u64,
    /// Frames emitted (only non-empty frames are emitted).
    pub frames_emitted: u64,
    /// Frames flagged lost because they overflowed `max_hits_per_frame`.
    pub lossy_frames: u64,
    /// Source decays simulated (in-cone + prompt-only).
    pub decays: u64,
    /// Decays whose annihilation axis lies in the cone covering the faces.
    pub decays_in_cone: u64,
    /// Other decays, simulated only for their prompt gamma heading into the cone.
    pub decays_prompt_only: u64,
    /// Lu-176 decays generated (above and below threshold).
    pub background_decays: u64,
    /// Dark-count hits emitted.
    pub dark_hits: u64,
    /// Hits dropped by the per-channel dead time (not in the truth).
    pub dead_time_lost: u64,
    /// Hits cut from overflowing frames (not in the truth).
    pub overflow_lost: u64,
    /// Detected photons and background decays depositing less than the threshold.
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
    /// Rate of in-cone decays, Bq.
    pub activity_in_cone_bq: f64,
    /// Equivalent total source activity (in-cone rate / cone fraction), Bq.
    pub activity_total_bq: f64,
    /// Half-angle of the cone covering the faces, degrees.
    pub cone_half_angle_deg: f64,
    /// Expected emitted hits per in-cone decay (pilot Monte Carlo, incl. prompt-only decays).
    pub expected_hits_per_decay: f64,
    /// Expected emitted hit rate before dead time and frame overflow, Hz.
    pub expected_hit_rate_hz: f64,
    /// Dark-count rate above threshold, all channels, Hz.
    pub dark_rate_above_threshold_hz: f64,
    /// Lu-176 decay rate, all crystals, Hz.
    pub background_rate_hz: f64,
    /// Remarks (for example when the requested rate is below dark + background).
    pub notes: Vec<String>,
    /// The configuration.
    pub config: BenchConfig,
}

/// The bench simulator. Create with [`BenchSim::new`], call [`BenchSim::next_slice`] until it
/// returns false, read [`BenchSim::summary`].
#[derive(Debug)]
pub struct BenchSim {
    config: BenchConfig,
    geo: BenchGeometry,
    fe: Electronics,
    geometry: Geometry,
    rng: Rng,
    // rates
    activity: f64,
    prompt_only_rate: f64,
    dark_rate: f64,
    dark_n_min: u32,
    bg_rate: f64,
    expected_hits_per_decay: f64,
    notes: Vec<String>,
    t_end: f64,
    // state
    t_now: f64,
    next_decay: f64,
    next_prompt_only: f64,
    next_dark: f64,
    next_bg: f64,
    next_decay_id: u64,
    next_dark_id: u64,
    next_bg_id: u64,
    counters: Counters,
    finished: bool,
}

impl Electronics {
    /// Front end with the constants `front`, nothing queued.
    pub fn new(front: FrontEnd, p: ElectronicsParams) -> Self {
        let sigma_t_ps = p.ctr_fwhm_ps / (2.355 * std::f64::consts::SQRT_2);
        // Box-Muller normals are bounded by ~8.6 sigma, so 9 sigma bounds the jitter.
        let spread_ps = p.skew_range_ps + 9.0 * sigma_t_ps;
        let margin_ps = 2.0 * FRAME_PS + spread_ps + 2.0 * CLOCK_PERIOD_PS;
        let n = front.channels.len();
        Self {
            front,
            counters: FrontEndCounters::default(),
            sigma_t_ps,
            res_coef: p.energy_resolution_fwhm / 2.355,
            dead_ps: p.dead_time_ns * 1000.0,
            margin_ps,
            t_begin: spread_ps + CLOCK_PERIOD_PS,
            base_ps: (p.start_frame_id as i64) * (FRAME_PS as i64),
            p,
            candidates: Vec::new(),
            ready: Vec::new(),
            words: Vec::new(),
            last_emit_ps: vec![f64::NEG_INFINITY; n],
            tac_count: vec![0; n],
        }
    }

    /// After every event up to `t1` (ps since the run start) has been queued: digitises and
    /// emits whatever can no longer change (everything when `last`).
    pub fn advance(
        &mut self,
        rng: &mut Rng,
        t1: f64,
        last: bool,
        frames: &mut Vec<u8>,
        truth: &mut TruthBatch,
    ) {
        if last {
            self.process_until(rng, f64::INFINITY);
            self.emit_frames(u64::MAX, frames, truth);
        } else {
            let horizon = t1 - self.margin_ps;
            if horizon > 0.0 {
                self.process_until(rng, horizon);
                // A hit processed later has tau >= horizon/P, so tick >= horizon/P - 0.3.
                let complete = ((horizon / CLOCK_PERIOD_PS - 2.0) / FRAME_TICKS as f64).floor();
                if complete > 0.0 {
                    self.emit_frames(complete as u64, frames, truth);
                }
            }
        }
    }

    /// Measures a deposit (jitter, skew, energy resolution) and queues it.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn candidate(
        &mut self,
        rng: &mut Rng,
        t_true: f64,
        ch: usize,
        e_true: f64,
        decay_id: u64,
        photon_id: u8,
        kind: HitKind,
        extra: TruthExtra,
    ) {
        let t_meas = t_true + self.front.channels[ch].skew_ps + self.sigma_t_ps * rng.normal();
        let rel = self.res_coef * (E_511 / e_true).sqrt();
        let e_meas = (e_true * (1.0 + rel * rng.normal())).max(0.1);
        self.candidates.push(Candidate {
            key: t_meas.max(0.0).to_bits(),
            t_meas,
            t_true,
            e_meas: e_meas as f32,
            e_true: e_true as f32,
            decay_id,
            ch: ch as u16,
            photon_id,
            kind,
            extra,
        });
    }

    /// Applies dead time and digitises, in measured-time order, every candidate measured
    /// before `horizon` (ps since the run start).
    pub fn process_until(&mut self, rng: &mut Rng, horizon: f64) {
        self.candidates.sort_by_key(|c| c.key);
        let k = self.candidates.partition_point(|c| c.t_meas < horizon);
        for i in 0..k {
            let c = self.candidates[i];
            self.digitise(rng, c);
        }
        self.candidates.drain(..k);
    }

    /// One TDC branch: edge at `tau` periods -> (tick, fine code).
    #[inline]
    pub fn tdc_edge(&self, rng: &mut Rng, e: &TdcEntry, tau: f64) -> (i64, u16) {
        let tp = tau + e.t0;
        // floor without a libm call (tp is far inside the i64 range).
        let mut fl = tp as i64;
        if (fl as f64) > tp {
            fl -= 1;
        }
        let q = (fl as f64 + 1.0) - tp;
        let code = e.a0 + q * (e.a1 + e.a2 * q) + self.p.tdc_noise_codes * rng.normal();
        // Round half up on the clamped, non-negative code.
        (fl + 1, (code.clamp(0.0, 1023.0) + 0.5) as u16)
    }

    fn digitise(&mut self, rng: &mut Rng, c: Candidate) {
        let ch = usize::from(c.ch);
        if c.t_meas < self.last_emit_ps[ch] + self.dead_ps {
            self.counters.dead_time_lost += 1;
            return;
        }
        self.last_emit_ps[ch] = c.t_meas;
        let tac = (self.tac_count[ch] & 3) as usize;
        self.tac_count[ch] = self.tac_count[ch].wrapping_add(1);
        let k = self.front.channels[ch];
        let tau = c.t_meas / CLOCK_PERIOD_PS;
        let (tick, tfine) = self.tdc_edge(rng, &k.tdc[tac][0], tau);
        let tot_ns = (k.a_ns * (1.0 + f64::from(c.e_meas) / k.b_kev).ln()).max(MIN_TOT_NS);
        let (tick_e, efine) = self.tdc_edge(rng, &k.tdc[tac][1], tau + tot_ns / 5.0);
        let tick = tick.max(0) as u64;
        let hit = HitFields {
            channel: k.id,
            tac: tac as u8,
            tcoarse: (tick % FRAME_TICKS) as u16,
            ecoarse: tick_e.rem_euclid(FRAME_TICKS as i64) as u16,
            tfine,
            efine,
        };
        self.ready.push(Ready {
            frame: tick / FRAME_TICKS,
            tcoarse: hit.tcoarse,
            channel: k.id,
            word: hit.encode(),
            t_true_ps: self.base_ps + c.t_true.round() as i64,
            e_true: c.e_true,
            decay_id: c.decay_id,
            photon_id: c.photon_id,
            kind: c.kind,
            extra: c.extra,
        });
    }

    /// Emits every frame before `limit` (relative frame number) that has hits.
    pub fn emit_frames(&mut self, limit: u64, frames: &mut Vec<u8>, truth: &mut TruthBatch) {
        let ready = &mut self.ready;
        ready.sort_by_key(|r| (r.frame, r.tcoarse, r.channel));
        let max = self.p.max_hits_per_frame;
        let start = self.p.start_frame_id;
        let counters = &mut self.counters;
        let words = &mut self.words;
        let mut i = 0;
        while i < ready.len() && ready[i].frame < limit {
            let frame = ready[i].frame;
            let mut j = i + 1;
            while j < ready.len() && ready[j].frame == frame {
                j += 1;
            }
            let n = j - i;
            let keep = n.min(max);
            let kept = &ready[i..i + keep];
            words.clear();
            words.extend(kept.iter().map(|r| r.word));
            let absolute = start + frame;
            encode_frame(frames, absolute % FRAME_ID_MODULUS, n > keep, words);
            for r in kept {
                truth.push_extra(
                    r.t_true_ps,
                    r.channel,
                    r.e_true,
                    r.decay_id,
                    r.photon_id,
                    r.kind,
                    &r.extra,
                );
                counters.hits_by_kind[r.kind as usize] += 1;
            }
            counters.overflow_lost += (n - keep) as u64;
            counters.lossy_frames += u64::from(n > keep);
            counters.frames += 1;
            counters.first_frame.get_or_insert(absolute);
            counters.last_frame = Some(absolute);
            i = j;
        }
        ready.drain(..i);
    }
}

/// Probability that a detected photon of energy `full` deposits at least `thr`.
fn p_above(thr: f64, full: f64, edge: f64, photopeak: f64) -> f64 {
    let peak = if full >= thr { photopeak } else { 0.0 };
    let compton = ((edge - thr) / edge).clamp(0.0, 1.0);
    peak + (1.0 - photopeak) * compton
}

/// Expected emitted hits per in-cone decay, including the prompt-only decays that go with it
/// (deterministic pilot Monte Carlo over the geometry; energy and efficiency analytically).
fn pilot_hits_per_decay(config: &BenchConfig, geo: &BenchGeometry) -> f64 {
    let thr = config.threshold_kev;
    let eff = config.detection_efficiency;
    let p511 = eff * p_above(thr, E_511, COMPTON_EDGE_511, config.photopeak_fraction);
    let p1274 = eff * p_above(thr, E_PROMPT, COMPTON_EDGE_PROMPT, PROMPT_PHOTOPEAK);
    let mut rng = Rng::seed_from_u64(PILOT_SEED);
    let (mut pairs, mut prompt_iso, mut prompt_cone) = (0u64, 0u64, 0u64);
    for _ in 0..PILOT_SAMPLES {
        let u = geo.cone_direction(&mut rng);
        pairs += u64::from(geo.face_hit(u).is_some());
        pairs += u64::from(geo.face_hit([-u[0], -u[1], -u[2]]).is_some());
        let iso = geo.isotropic_in_cone(&mut rng);
        prompt_iso += u64::from(iso.and_then(|v| geo.face_hit(v)).is_some());
        prompt_cone += u64::from(geo.face_hit(geo.cone_direction(&mut rng)).is_some());
    }
    let n = PILOT_SAMPLES as f64;
    let mut h = p511 * pairs as f64 / n;
    if config.na22_prompt_gamma {
        let f = geo.cone_fraction();
        h += p1274 * (prompt_iso as f64 / n + (1.0 - f) * prompt_cone as f64 / n);
    }
    h
}

impl BenchSim {
    /// Validates `config`, draws the per-channel constants and sets the source activity so the
    /// expected emitted hit rate is `hit_rate_hz`.
    pub fn new(config: BenchConfig) -> Result<Self, SimError> {
        config.validate()?;
        let geo = BenchGeometry::new(config.module_distance_mm);
        let front = FrontEnd::draw(&config, &mut Rng::stream(config.seed, 0));
        let geometry = geo.channel_map();
        let mut notes = Vec::new();

        // Dark counts: n = 1 + geometric crosstalk photo-electrons; P(n >= k) = p^(k-1).
        let dark_n_min = ((config.threshold_kev / DARK_KEV_PER_PE).ceil().max(1.0)) as u32;
        let dark_rate = N_CHANNELS as f64
            * config.dark_rate_hz
            * DARK_CROSSTALK.powi(dark_n_min.saturating_sub(1).min(1000) as i32);
        let bg_rate = if config.lyso_background {
            N_CHANNELS as f64 * LU_BQ_PER_CRYSTAL
        } else {
            0.0
        };
        // Fraction of Lu-176 decays above threshold (beta uniform, so analytic per line).
        let bg_above: f64 = LU_GAMMAS
            .iter()
            .map(|&(g, p)| {
                p * ((LU_BETA_MAX + g - config.threshold_kev) / LU_BETA_MAX).clamp(0.0, 1.0)
            })
            .sum();
        let fixed_rate = dark_rate + bg_rate * bg_above;

        let h = pilot_hits_per_decay(&config, &geo);
        let signal_rate = config.hit_rate_hz - fixed_rate;
        let activity = if h <= 0.0 {
            notes.push(format!(
                "the source cannot produce hits with this configuration (efficiency {}, threshold {} keV); \
                 activity set to 1 Bq in the cone",
                config.detection_efficiency, config.threshold_kev
            ));
            1.0
        } else if signal_rate < 0.01 * config.hit_rate_hz {
            let a = 0.01 * config.hit_rate_hz / h;
            notes.push(format!(
                "requested hit rate {} Hz is below dark + background ({fixed_rate:.0} Hz); the source \
                 activity is set to give 1% of the requested rate ({a:.1} Bq in the cone)",
                config.hit_rate_hz
            ));
            a
        } else {
            signal_rate / h
        };
        // Guard against configurations where almost no decay gives a hit (the run would
        // generate an absurd number of decays): at most 100 in-cone decays per requested hit.
        let max_activity = 100.0 * config.hit_rate_hz;
        let activity = if activity > max_activity {
            notes.push(format!(
                "only {h:.2e} hits per decay are expected; the in-cone activity is capped at \
                 {max_activity:.3e} Bq, so the requested hit rate is not reached"
            ));
            max_activity
        } else {
            activity
        };
        let prompt_only_rate = if config.na22_prompt_gamma {
            activity * (1.0 - geo.cone_fraction())
        } else {
            0.0
        };

        let fe = Electronics::new(front, ElectronicsParams::of_bench(&config));
        let t_begin = fe.t_begin;
        let t_end = config.duration_s * 1e12;
        let mut rng = Rng::stream(config.seed, 1);
        let first = |rng: &mut Rng, rate: f64| {
            if rate > 0.0 {
                t_begin + rng.exponential(rate * 1e-12)
            } else {
                f64::INFINITY
            }
        };
        let next_decay = first(&mut rng, activity);
        let next_prompt_only = first(&mut rng, prompt_only_rate);
        let next_dark = first(&mut rng, dark_rate);
        let next_bg = first(&mut rng, bg_rate);
        Ok(Self {
            geo,
            fe,
            geometry,
            rng,
            activity,
            prompt_only_rate,
            dark_rate,
            dark_n_min,
            bg_rate,
            expected_hits_per_decay: h,
            notes,
            t_end,
            t_now: 0.0,
            next_decay,
            next_prompt_only,
            next_dark,
            next_bg,
            next_decay_id: 0,
            next_dark_id: 0,
            next_bg_id: 0,
            counters: Counters::default(),
            finished: false,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BenchConfig {
        &self.config
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

    /// Channel map (geometry) of the bench.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Rate of in-cone decays, Bq.
    pub fn activity_in_cone_bq(&self) -> f64 {
        self.activity
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
        self.fe.advance(&mut self.rng, t1, last, frames, truth);
        self.finished = last;
        true
    }

    /// Runs every Poisson process up to `t1` (ps since the run start).
    fn generate(&mut self, t1: f64) {
        let ps = 1e-12;
        while self.next_decay < t1 {
            let t = self.next_decay;
            self.decay(t);
            self.next_decay += self.rng.exponential(self.activity * ps);
        }
        while self.next_prompt_only < t1 {
            let t = self.next_prompt_only;
            self.prompt_only_decay(t);
            self.next_prompt_only += self.rng.exponential(self.prompt_only_rate * ps);
        }
        while self.next_dark < t1 {
            let t = self.next_dark;
            self.dark_count(t);
            self.next_dark += self.rng.exponential(self.dark_rate * ps);
        }
        while self.next_bg < t1 {
            let t = self.next_bg;
            self.background_decay(t);
            self.next_bg += self.rng.exponential(self.bg_rate * ps);
        }
    }

    fn decay(&mut self, t: f64) {
        let id = self.next_decay_id;
        self.next_decay_id += 1;
        self.counters.decays_in_cone += 1;
        let u = self.geo.cone_direction(&mut self.rng);
        let pp = self.config.photopeak_fraction;
        self.photon(t, u, E_511, COMPTON_EDGE_511, pp, id, 1, HitKind::True);
        self.photon(
            t,
            [-u[0], -u[1], -u[2]],
            E_511,
            COMPTON_EDGE_511,
            pp,
            id,
            2,
            HitKind::True,
        );
        if self.config.na22_prompt_gamma {
            // Directions outside the cone miss both faces.
            if let Some(v) = self.geo.isotropic_in_cone(&mut self.rng) {
                self.photon(
                    t,
                    v,
                    E_PROMPT,
                    COMPTON_EDGE_PROMPT,
                    PROMPT_PHOTOPEAK,
                    id,
                    3,
                    HitKind::PromptGamma,
                );
            }
        }
    }

    fn prompt_only_decay(&mut self, t: f64) {
        let id = self.next_decay_id;
        self.next_decay_id += 1;
        self.counters.decays_prompt_only += 1;
        let v = self.geo.cone_direction(&mut self.rng);
        self.photon(
            t,
            v,
            E_PROMPT,
            COMPTON_EDGE_PROMPT,
            PROMPT_PHOTOPEAK,
            id,
            3,
            HitKind::PromptGamma,
        );
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn photon(
        &mut self,
        t_decay: f64,
        u: [f64; 3],
        full: f64,
        edge: f64,
        photopeak: f64,
        id: u64,
        photon_id: u8,
        kind: HitKind,
    ) {
        let Some((ch, path)) = self.geo.face_hit(u) else {
            return;
        };
        if self.rng.uniform() >= self.config.detection_efficiency {
            return;
        }
        let e = if self.rng.uniform() < photopeak {
            full
        } else {
            edge * self.rng.uniform_open0()
        };
        if e < self.config.threshold_kev {
            self.counters.below_threshold += 1;
            return;
        }
        self.candidate(t_decay + path / C_MM_PER_PS, ch, e, id, photon_id, kind);
    }

    fn dark_count(&mut self, t: f64) {
        let id = DARK_ID_BIT | self.next_dark_id;
        self.next_dark_id += 1;
        self.counters.dark_counts += 1;
        let ch = self.rng.below(N_CHANNELS as u64) as usize;
        let mut n = self.dark_n_min;
        while n < 10_000 && self.rng.uniform() < DARK_CROSSTALK {
            n += 1;
        }
        self.candidate(t, ch, f64::from(n) * DARK_KEV_PER_PE, id, 0, HitKind::Dark);
    }

    fn background_decay(&mut self, t: f64) {
        let id = BACKGROUND_ID_BIT | self.next_bg_id;
        self.next_bg_id += 1;
        self.counters.background_decays += 1;
        let ch = self.rng.below(N_CHANNELS as u64) as usize;
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
        if e < self.config.threshold_kev {
            self.counters.below_threshold += 1;
            return;
        }
        self.candidate(t, ch, e, id, 0, HitKind::Background);
    }

    /// Measures a deposit and queues it (bench: no extra truth).
    #[inline]
    fn candidate(
        &mut self,
        t_true: f64,
        ch: usize,
        e_true: f64,
        decay_id: u64,
        photon_id: u8,
        kind: HitKind,
    ) {
        self.fe.candidate(
            &mut self.rng,
            t_true,
            ch,
            e_true,
            decay_id,
            photon_id,
            kind,
            TruthExtra::default(),
        );
    }

    /// Counts so far (complete once [`BenchSim::next_slice`] has returned false).
    pub fn summary(&self) -> SimSummary {
        let c = &self.counters;
        let e = &self.fe.counters;
        // The bench's own kinds (it never produces inter-crystal hits).
        let hits_by_kind: BTreeMap<String, u64> = HitKind::ALL[..5]
            .iter()
            .map(|k| (k.name().to_string(), e.hits_by_kind[*k as usize]))
            .collect();
        let f = self.geo.cone_fraction();
        let bg_expected: f64 = LU_GAMMAS
            .iter()
            .map(|&(g, p)| {
                p * ((LU_BETA_MAX + g - self.config.threshold_kev) / LU_BETA_MAX).clamp(0.0, 1.0)
            })
            .sum::<f64>()
            * self.bg_rate;
        SimSummary {
            preset: "bench".into(),
            seed: self.config.seed,
            simulated_s: self.t_now / 1e12,
            finished: self.finished,
            hits_emitted: e.hits_by_kind.iter().sum(),
            frames_emitted: e.frames,
            lossy_frames: e.lossy_frames,
            decays: c.decays_in_cone + c.decays_prompt_only,
            decays_in_cone: c.decays_in_cone,
            decays_prompt_only: c.decays_prompt_only,
            background_decays: c.background_decays,
            dark_hits: e.hits_by_kind[HitKind::Dark as usize],
            dead_time_lost: e.dead_time_lost,
            overflow_lost: e.overflow_lost,
            below_threshold: c.below_threshold,
            hits_by_kind,
            first_frame_id: e.first_frame.map(|f| f % FRAME_ID_MODULUS),
            last_frame_id: e.last_frame.map(|f| f % FRAME_ID_MODULUS),
            first_frame: e.first_frame,
            last_frame: e.last_frame,
            wraps: match (e.first_frame, e.last_frame) {
                (Some(a), Some(b)) => b / FRAME_ID_MODULUS - a / FRAME_ID_MODULUS,
                _ => 0,
            },
            activity_in_cone_bq: self.activity,
            activity_total_bq: self.activity / f,
            cone_half_angle_deg: self.geo.cos_cone.acos().to_degrees(),
            expected_hits_per_decay: self.expected_hits_per_decay,
            expected_hit_rate_hz: self.activity * self.expected_hits_per_decay
                + self.dark_rate
                + bg_expected,
            dark_rate_above_threshold_hz: self.dark_rate,
            background_rate_hz: self.bg_rate,
            notes: self.notes.clone(),
            config: self.config.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: BenchConfig) -> (BenchSim, Vec<u8>, TruthBatch) {
        let mut sim = BenchSim::new(config).unwrap();
        let mut frames = Vec::new();
        let mut truth = TruthBatch::new();
        while sim.next_slice(&mut frames, &mut truth) {}
        (sim, frames, truth)
    }

    #[test]
    fn tdc_edge_inverts_with_the_phase_formula() {
        let cfg = BenchConfig {
            tdc_noise_codes: 0.0,
            ..Default::default()
        };
        let mut sim = BenchSim::new(cfg).unwrap();
        let e = sim.fe.front.channels[5].tdc[2][0];
        for tau in [1000.0, 1000.25, 1234.999, 77.5001, 3.0 - e.t0] {
            let (tick, fine) = sim.fe.tdc_edge(&mut sim.rng, &e, tau);
            let q = e.phase(f64::from(fine));
            let back = tick as f64 - q - e.t0;
            // Code rounding: half a code over ~300 codes per period.
            assert!((back - tau).abs() < 0.6 / 280.0, "tau {tau} back {back}");
        }
    }

    #[test]
    fn decoded_hit_gives_back_true_time_and_energy() {
        let cfg = BenchConfig {
            duration_s: 0.002,
            ctr_fwhm_ps: 0.0,
            tdc_noise_codes: 0.0,
            energy_resolution_fwhm: 0.0,
            ..Default::default()
        };
        let (sim, frames, truth) = run(cfg);
        assert!(truth.len() > 500);
        let mut k = 0;
        let mut off = 0;
        while off < frames.len() {
            let w0 = u64::from_le_bytes(frames[off..off + 8].try_into().unwrap());
            let frame = w0 & (FRAME_ID_MODULUS - 1);
            let n = ((w0 >> 36) & 0x7fff) as usize - 2;
            for h in 0..n {
                let at = off + 16 + 8 * h;
                let w = u64::from_le_bytes(frames[at..at + 8].try_into().unwrap());
                let f = HitFields::decode(w);
                assert_eq!(f.channel, truth.channel[k]);
                let et = sim
                    .true_tdc()
                    .get(f.channel, f.tac, scandaq_core::calib::Branch::T)
                    .unwrap();
                let ee = sim
                    .true_tdc()
                    .get(f.channel, f.tac, scandaq_core::calib::Branch::E)
                    .unwrap();
                let tick = (frame * 1024 + u64::from(f.tcoarse)) as f64;
                let tau = tick - et.phase(f64::from(f.tfine)) - et.t0;
                let t_ps = tau * CLOCK_PERIOD_PS - sim.true_skew().offsets_ps[&f.channel];
                assert!(
                    (t_ps - truth.t_true_ps[k] as f64).abs() < 12.0,
                    "{t_ps} vs {}",
                    truth.t_true_ps[k]
                );
                let mut ecoarse = i64::from(f.ecoarse);
                if ecoarse < i64::from(f.tcoarse) - 256 {
                    ecoarse += 1024;
                }
                let tau_e =
                    (frame * 1024) as f64 + ecoarse as f64 - ee.phase(f64::from(f.efine)) - ee.t0;
                let tot_ns = (tau_e - tau) * 5.0;
                let e = sim.true_energy().entries[&f.channel].energy_kev(tot_ns);
                let e_true = f64::from(truth.e_true_kev[k]);
                if e_true > 10.0 {
                    assert!((e - e_true).abs() < 0.01 * e_true + 0.5, "{e} vs {e_true}");
                }
                k += 1;
            }
            off += 16 + 8 * n;
        }
        assert_eq!(k, truth.len());
    }

    #[test]
    fn activity_is_set_from_the_requested_rate() {
        let s = BenchSim::new(BenchConfig::default()).unwrap().summary();
        assert!(
            (s.expected_hit_rate_hz - 1e6).abs() < 1.0,
            "{}",
            s.expected_hit_rate_hz
        );
        assert!(s.notes.is_empty());
        let low = BenchSim::new(BenchConfig {
            hit_rate_hz: 1000.0,
            ..Default::default()
        })
        .unwrap();
        assert!(low.activity_in_cone_bq() > 0.0);
        assert_eq!(low.summary().notes.len(), 1);
        let cfg = BenchConfig {
            detection_efficiency: 1e-9,
            duration_s: 0.001,
            ..Default::default()
        };
        let (sim, _, _) = run(cfg);
        let s = sim.summary();
        assert_eq!(s.activity_in_cone_bq, 1e8);
        assert!(s.notes[0].contains("capped"), "{:?}", s.notes);
    }
}
