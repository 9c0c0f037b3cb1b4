//! Device clock model and frame-counter unwrapping (raw counters -> picoseconds since the
//! device clock's zero).

/// Ticks per PETsys frame.
pub const FRAME_TICKS: u64 = 1024;
/// Width of the PETsys frameID counter in bits.
pub const FRAME_ID_BITS: u32 = 36;
/// Modulus of the frameID counter.
pub const FRAME_ID_MODULUS: u64 = 1 << FRAME_ID_BITS;

/// A front-end clock: frequency in Hz, from which the tick period follows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockModel {
    /// System clock frequency in Hz (200 MHz for TOFPET2 unless the file says otherwise).
    pub frequency_hz: u32,
}

impl ClockModel {
    /// The TOFPET2 default, 200 MHz (5 ns ticks).
    pub const TOFPET2_DEFAULT: Self = Self {
        frequency_hz: 200_000_000,
    };

    /// Clock period in picoseconds, exact as f64.
    pub fn period_ps(self) -> f64 {
        1e12 / f64::from(self.frequency_hz)
    }
}

/// Unwraps a 36-bit frameID counter into a monotone 64-bit frame number.
///
/// A backward jump of more than half the counter range is a wrap (epoch + 1). Smaller backward
/// jumps are left alone (the caller decides whether they are disorder or a reset).
#[derive(Clone, Debug, Default)]
pub struct FrameUnwrapper {
    epoch: u64,
    last_raw: Option<u64>,
}

impl FrameUnwrapper {
    /// New unwrapper; the first frame seen defines epoch 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of wraps seen so far.
    pub fn wraps(&self) -> u64 {
        self.epoch
    }

    /// Unwrapped frame number of a raw 36-bit frameID.
    pub fn unwrap(&mut self, raw: u64) -> u64 {
        let raw = raw & (FRAME_ID_MODULUS - 1);
        if let Some(last) = self.last_raw {
            if raw < last && last - raw > FRAME_ID_MODULUS / 2 {
                self.epoch += 1;
            } else if raw > last && raw - last > FRAME_ID_MODULUS / 2 && self.epoch > 0 {
                // A straggler from before the wrap: belongs to the previous epoch.
                return (self.epoch - 1) * FRAME_ID_MODULUS + raw;
            }
        }
        self.last_raw = Some(raw);
        self.epoch * FRAME_ID_MODULUS + raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwraps_across_the_36_bit_wrap() {
        let mut u = FrameUnwrapper::new();
        let start = FRAME_ID_MODULUS - 3;
        let got: Vec<u64> = (0..6)
            .map(|k| u.unwrap((start + k) % FRAME_ID_MODULUS))
            .collect();
        assert_eq!(got, (0..6).map(|k| start + k).collect::<Vec<_>>());
        assert_eq!(u.wraps(), 1);
        // A straggler from just before the wrap keeps its old epoch.
        assert_eq!(u.unwrap(FRAME_ID_MODULUS - 1), FRAME_ID_MODULUS - 1);
    }

    #[test]
    fn only_a_backward_jump_of_more_than_half_the_range_is_a_wrap() {
        let mut u = FrameUnwrapper::new();
        let a = 4 * FRAME_ID_MODULUS / 10;
        assert_eq!(u.unwrap(a), a);
        // Backward by 10 % of the range, mid-range: disorder, not a wrap.
        assert_eq!(
            u.unwrap(a - FRAME_ID_MODULUS / 10),
            a - FRAME_ID_MODULUS / 10
        );
        assert_eq!(u.wraps(), 0);
        // Backward by exactly half the range: still not a wrap.
        let mut u = FrameUnwrapper::new();
        let top = FRAME_ID_MODULUS - 1;
        u.unwrap(top);
        assert_eq!(
            u.unwrap(top - FRAME_ID_MODULUS / 2),
            top - FRAME_ID_MODULUS / 2
        );
        assert_eq!(u.wraps(), 0);
        // One more: a wrap.
        let mut u = FrameUnwrapper::new();
        u.unwrap(top);
        u.unwrap(top - FRAME_ID_MODULUS / 2 - 1);
        assert_eq!(u.wraps(), 1);
        // After a wrap, a forward step of exactly half the range stays in the new epoch; one
        // more is a straggler from before the wrap.
        let mut u = FrameUnwrapper::new();
        u.unwrap(top);
        assert_eq!(u.unwrap(5), FRAME_ID_MODULUS + 5);
        let half = 5 + FRAME_ID_MODULUS / 2;
        assert_eq!(u.unwrap(half), FRAME_ID_MODULUS + half);
        let mut u = FrameUnwrapper::new();
        u.unwrap(top);
        u.unwrap(5);
        assert_eq!(u.unwrap(half + 1), half + 1);
    }

    #[test]
    fn a_far_forward_step_before_any_wrap_is_not_a_straggler() {
        // No wrap yet (epoch 0): there is no earlier epoch to put it in, so it stays in epoch 0.
        let mut u = FrameUnwrapper::new();
        u.unwrap(5);
        let far = 5 + FRAME_ID_MODULUS / 2 + 1;
        assert_eq!(u.unwrap(far), far);
        assert_eq!(u.wraps(), 0);
    }

    #[test]
    fn a_straggler_after_two_wraps_belongs_to_the_second_epoch() {
        let top = FRAME_ID_MODULUS - 1;
        let mut u = FrameUnwrapper::new();
        u.unwrap(top);
        u.unwrap(1); // wrap 1
        u.unwrap(FRAME_ID_MODULUS / 2);
        u.unwrap(top);
        u.unwrap(1); // wrap 2
        assert_eq!(u.wraps(), 2);
        // A late frame from just before the second wrap: epoch 1.
        assert_eq!(u.unwrap(top - 3), FRAME_ID_MODULUS + top - 3);
    }

    #[test]
    fn period_of_default_clock_is_5000_ps() {
        assert_eq!(ClockModel::TOFPET2_DEFAULT.period_ps(), 5000.0);
    }
}
