//! The OPM array's channels and signals (docs/physics.md §5): triaxial sensors on a helmet-like
//! hemisphere, each axis a channel summing white noise, 1/f-like noise (the white draw shaped by
//! three one-pole filters), 50 Hz mains with its third harmonic, and an evoked response locked
//! to the trigger pulses and delayed by the sensor's group delay; a trigger bitmask channel last.

use crate::rng::Rng;
use scandaq_decoders::meg::{ChannelInfo, ChannelKind};

/// Tesla per raw count of the MEG channels (0.1 fT).
pub const MEG_CAL: f64 = 1e-16;
/// Length of a trigger pulse, s.
pub const TRIGGER_WIDTH_S: f64 = 0.02;
/// Latency of the evoked response's peak after the trigger, s.
pub const EVOKED_LATENCY_S: f64 = 0.1;

/// Poles of the three filters shaping the low-frequency noise.
const PINK_POLES: [f64; 3] = [0.9, 0.99, 0.999];

/// Constant per-channel parameters.
#[derive(Clone, Debug)]
pub struct ChannelModel {
    /// Table row.
    pub info: ChannelInfo,
    /// Group delay, s.
    pub delay_s: f64,
    white_ft: f64,
    pink_gain: [f64; 3],
    pink_state: [f64; 3],
    mains_ft: f64,
    mains_phase: f64,
    evoked_gain: f64,
}

/// A trigger pulse (reference time since the run start, s, and its bitmask).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trigger {
    /// Reference time of the rising edge, s since the run start.
    pub t_s: f64,
    /// Bits set while the pulse lasts.
    pub bits: i32,
}

/// Builds the channel models of `sensors` triaxial sensors and the trigger channel.
pub fn channels(
    sensors: usize,
    sample_rate_hz: f64,
    white_ft_per_rthz: f64,
    mains_ft: f64,
    evoked_ft: f64,
    rng: &mut Rng,
) -> Vec<ChannelModel> {
    let mut out = Vec::with_capacity(3 * sensors + 1);
    let white_ft = white_ft_per_rthz * (sample_rate_hz / 2.0).sqrt();
    for s in 0..sensors {
        // Fibonacci points on the upper hemisphere of a 0.1 m sphere.
        let z = 1.0 - (s as f64 + 0.5) / sensors as f64;
        let r = (1.0 - z * z).sqrt();
        let phi = s as f64 * 2.399_963_229_728_653;
        let radial = [r * phi.cos(), r * phi.sin(), z];
        let tang1 = [-phi.sin(), phi.cos(), 0.0];
        let tang2 = [
            radial[1] * tang1[2] - radial[2] * tang1[1],
            radial[2] * tang1[0] - radial[0] * tang1[2],
            radial[0] * tang1[1] - radial[1] * tang1[0],
        ];
        let delay_s = rng.range(1.0e-3, 3.0e-3);
        // The evoked field: strongest at the back-left of the head.
        let focus = (-(radial[0] + 0.5).powi(2) - (radial[1] - 0.5).powi(2)).exp();
        for (axis, ori) in [("Z", radial), ("Y", tang1), ("X", tang2)] {
            let pos = [0.1 * radial[0], 0.1 * radial[1], 0.1 * radial[2]];
            out.push(ChannelModel {
                info: ChannelInfo {
                    name: format!("OPM{:03}{axis}", s + 1),
                    kind: ChannelKind::MegMag,
                    cal: MEG_CAL,
                    range: 1.0,
                    unit: "T".into(),
                    delay_ps: (delay_s * 1e12).round() as i64,
                    position_m: pos,
                    orientation: ori,
                },
                delay_s,
                white_ft,
                pink_gain: [0.3, 0.2, 0.1].map(|g: f64| g * white_ft * rng.range(0.5, 1.5)),
                pink_state: [0.0; 3],
                mains_ft: mains_ft * rng.range(0.3, 1.0),
                mains_phase: rng.range(0.0, std::f64::consts::TAU),
                evoked_gain: evoked_ft * focus * if axis == "Z" { 1.0 } else { 0.4 },
            });
        }
    }
    out.push(ChannelModel {
        info: ChannelInfo {
            name: "STI101".into(),
            kind: ChannelKind::Trigger,
            cal: 1.0,
            range: 1.0,
            unit: "bitmask".into(),
            delay_ps: 0,
            position_m: [0.0; 3],
            orientation: [0.0; 3],
        },
        delay_s: 0.0,
        white_ft: 0.0,
        pink_gain: [0.0; 3],
        pink_state: [0.0; 3],
        mains_ft: 0.0,
        mains_phase: 0.0,
        evoked_gain: 0.0,
    });
    out
}

/// The evoked response to a trigger with bitmask `bits`, `tau` seconds after it at the
/// sensor (after its group delay), per unit of the channel's evoked gain: bit 2 pulses give
/// -0.7 times the shape of bit 1 pulses. The truth a test lines aligned channels up with.
pub fn evoked_response(tau: f64, bits: i32) -> f64 {
    let sign = if bits & 2 != 0 { -0.7 } else { 1.0 };
    sign * evoked(tau)
}

/// Evoked response shape at `tau` seconds after the trigger (0 outside 0..0.4 s): a 10 Hz
/// wavelet peaking at [`EVOKED_LATENCY_S`].
fn evoked(tau: f64) -> f64 {
    if !(0.0..0.4).contains(&tau) {
        return 0.0;
    }
    let g = ((tau - EVOKED_LATENCY_S) / 0.04).powi(2);
    (-g).exp() * (std::f64::consts::TAU * 10.0 * (tau - EVOKED_LATENCY_S)).cos()
}

/// Writes one sample of every channel (sample-major row) into `row`: `t_s` is the sample's
/// reference time since the run start, `triggers` the pulses near it (sorted). 50 Hz mains.
pub fn sample_row(
    models: &mut [ChannelModel],
    t_s: f64,
    triggers: &[Trigger],
    rng: &mut Rng,
    row: &mut Vec<i32>,
) {
    sample_row_at(models, t_s, triggers, rng, row, 50.0);
}

/// [`sample_row`] with mains at `mains_hz`.
pub fn sample_row_at(
    models: &mut [ChannelModel],
    t_s: f64,
    triggers: &[Trigger],
    rng: &mut Rng,
    row: &mut Vec<i32>,
    mains_hz: f64,
) {
    let mains_w = std::f64::consts::TAU * mains_hz;
    let mut trigger_bits = 0i32;
    for tr in triggers {
        if t_s >= tr.t_s && t_s < tr.t_s + TRIGGER_WIDTH_S {
            trigger_bits |= tr.bits;
        }
    }
    for m in models.iter_mut() {
        if m.info.kind == ChannelKind::Trigger {
            row.push(trigger_bits);
            continue;
        }
        let n = rng.normal();
        let mut v = m.white_ft * n;
        for ((state, gain), a) in m.pink_state.iter_mut().zip(m.pink_gain).zip(PINK_POLES) {
            *state = a * *state + (1.0 - a * a).sqrt() * n;
            v += gain * *state;
        }
        let ph = mains_w * t_s + m.mains_phase;
        v += m.mains_ft * (ph.sin() + 0.3 * (3.0 * ph).sin());
        for tr in triggers {
            let tau = t_s - m.delay_s - tr.t_s;
            if (0.0..0.4).contains(&tau) {
                v += m.evoked_gain * evoked_response(tau, tr.bits);
            }
        }
        // fT -> raw counts of 0.1 fT (MEG_CAL), saturating.
        let raw = (v * 1e-15 / MEG_CAL).round();
        row.push(raw.clamp(i32::MIN as f64, i32::MAX as f64) as i32);
    }
}
