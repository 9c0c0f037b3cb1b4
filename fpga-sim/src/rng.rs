//! The simulator's own random numbers: xoshiro256++ seeded through splitmix64, with uniform,
//! Box–Muller normal and exponential variates. Small, fast and fully deterministic, so the same
//! seed gives the same bytes on every platform and every Rust version.

/// One step of splitmix64: advances `state` and returns the next output (used for seeding).
#[inline]
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256++ generator (Blackman & Vigna), plus a cached second Box–Muller normal.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
    spare_normal: Option<f64>,
}

impl Rng {
    /// Generator whose 256-bit state is four splitmix64 outputs of `seed`.
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut st = seed;
        let s = [
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
        ];
        Self::from_state(s)
    }

    /// Independent stream number `stream` of `seed` (seeds differ by a splitmix64 step, so
    /// streams do not overlap in practice).
    pub fn stream(seed: u64, stream: u64) -> Self {
        let mut st = stream.wrapping_mul(0xd1b5_4a32_d192_ed03) ^ seed;
        let mixed = splitmix64(&mut st);
        Self::seed_from_u64(mixed ^ seed.rotate_left(17))
    }

    /// Generator with an explicit state (an all-zero state is replaced by a fixed non-zero one,
    /// since xoshiro would stay at zero forever).
    pub fn from_state(s: [u64; 4]) -> Self {
        let s = if s == [0; 4] { [1, 2, 3, 4] } else { s };
        Self {
            s,
            spare_normal: None,
        }
    }

    /// Next 64 random bits (xoshiro256++).
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `(0, 1]` (safe to take the logarithm of).
    #[inline]
    pub fn uniform_open0(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    #[inline]
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `0..n` (`n > 0`; multiply-shift, bias below 2^-32 for small `n`).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Standard normal variate (Box–Muller; the second value of each pair is cached).
    /// Magnitudes are bounded by about 8.6 because the uniforms have 53 bits.
    #[inline]
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let r = (-2.0 * self.uniform_open0().ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * self.uniform()).sin_cos();
        self.spare_normal = Some(r * s);
        r * c
    }

    /// Exponential variate with the given rate (mean `1 / rate`); `rate` must be positive.
    #[inline]
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -self.uniform_open0().ln() / rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_output() {
        // Reference: the first output of splitmix64 from state 0.
        let mut st = 0u64;
        assert_eq!(splitmix64(&mut st), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(&mut st), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn xoshiro256pp_reference_output() {
        // Reference vector of xoshiro256++ from state {1, 2, 3, 4}.
        let mut r = Rng::from_state([1, 2, 3, 4]);
        let want = [
            41943041u64,
            58720359,
            3588806011781223,
            3591011842654386,
            9228616714210784205,
        ];
        for w in want {
            assert_eq!(r.next_u64(), w);
        }
    }

    #[test]
    fn moments_of_the_variates() {
        let mut r = Rng::seed_from_u64(7);
        let n = 200_000;
        let (mut s1, mut s2, mut e1, mut u1) = (0.0, 0.0, 0.0, 0.0);
        let mut max_abs: f64 = 0.0;
        for _ in 0..n {
            let z = r.normal();
            s1 += z;
            s2 += z * z;
            max_abs = max_abs.max(z.abs());
            e1 += r.exponential(4.0);
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            u1 += u;
            assert!(r.below(5) < 5);
        }
        let nf = n as f64;
        assert!((s1 / nf).abs() < 0.01);
        assert!((s2 / nf - 1.0).abs() < 0.02);
        assert!(max_abs < 8.7);
        assert!((e1 / nf - 0.25).abs() < 0.005);
        assert!((u1 / nf - 0.5).abs() < 0.005);
    }

    #[test]
    fn streams_differ_and_repeat() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::stream(1, 0);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::stream(1, 1);
                move |_| r.next_u64()
            })
            .collect();
        let a2: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::stream(1, 0);
                move |_| r.next_u64()
            })
            .collect();
        assert_ne!(a, b);
        assert_eq!(a, a2);
    }
}
