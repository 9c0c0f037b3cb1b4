//! The discrete bins a PETSIRD event carries: TOF bins (equal widths, symmetric about 0,
//! covering the coincidence window) and energy bins (equal widths over the run's energy
//! window), and the conversion of a time difference to PETSIRD's TOF unit, mm.

/// Half the speed of light, mm per ps: PETSIRD's TOF coordinate is `(t1 - t2) * c / 2`.
pub const HALF_C_MM_PER_PS: f64 = 0.299_792_458 / 2.0;

/// TOF bins: `count` bins of `width_ps` from `-count * width_ps / 2` to `+count * width_ps / 2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TofBins {
    /// Bin width, ps.
    pub width_ps: i64,
    /// Number of bins (>= 1).
    pub count: u32,
}

impl TofBins {
    /// Bins of `width_ps` (>= 1) covering `[-window_ps, window_ps]`; one bin of exactly the
    /// window's two sides when `width_ps` is `None` (no TOF: the window itself).
    pub fn covering(window_ps: i64, width_ps: Option<i64>) -> Self {
        let window_ps = window_ps.max(1);
        match width_ps {
            Some(w) => {
                let w = w.max(1);
                let count = (2 * window_ps + w - 1) / w;
                Self {
                    width_ps: w,
                    count: u32::try_from(count).unwrap_or(u32::MAX),
                }
            }
            None => Self {
                width_ps: 2 * window_ps,
                count: 1,
            },
        }
    }

    /// Lower edge of bin 0, ps.
    fn low_ps(&self) -> i64 {
        -(i64::from(self.count) * self.width_ps) / 2
    }

    /// The bin of a time difference, ps; `None` outside the edges (the last edge belongs to
    /// the last bin).
    #[inline]
    pub fn index(&self, dt_ps: i64) -> Option<u32> {
        let k = (dt_ps - self.low_ps()).div_euclid(self.width_ps);
        if k == i64::from(self.count) && dt_ps == self.low_ps() + k * self.width_ps {
            return Some(self.count - 1);
        }
        u32::try_from(k).ok().filter(|&k| k < self.count)
    }

    /// The edges in mm (PETSIRD's unit), `count + 1` values.
    pub fn edges_mm(&self) -> Vec<f32> {
        (0..=i64::from(self.count))
            .map(|i| ((self.low_ps() + i * self.width_ps) as f64 * HALF_C_MM_PER_PS) as f32)
            .collect()
    }
}

/// Energy bins: equal widths between two edges, keV.
#[derive(Clone, Debug, PartialEq)]
pub struct EnergyBins {
    /// `count + 1` edges, ascending, keV.
    pub edges_kev: Vec<f32>,
}

impl EnergyBins {
    /// `count` (>= 1) equal bins over `[lo, hi]`.
    pub fn equal(lo: f32, hi: f32, count: u32) -> Self {
        let count = count.max(1);
        let step = (f64::from(hi) - f64::from(lo)) / f64::from(count);
        Self {
            edges_kev: (0..=count)
                .map(|i| (f64::from(lo) + f64::from(i) * step) as f32)
                .collect(),
        }
    }

    /// Number of bins.
    pub fn count(&self) -> u32 {
        (self.edges_kev.len() - 1) as u32
    }

    /// The bin of `energy_kev`: bin `i` holds `[edge i, edge i+1)`, the last also its upper
    /// edge; `None` outside.
    #[inline]
    pub fn index(&self, energy_kev: f32) -> Option<u32> {
        let e = &self.edges_kev;
        let last = e.len() - 1;
        if !(energy_kev >= e[0] && energy_kev <= e[last]) {
            return None;
        }
        let i = e.partition_point(|&edge| edge <= energy_kev);
        Some((i.clamp(1, last) - 1) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tof_bins_are_symmetric_and_cover_the_window() {
        let b = TofBins::covering(4000, Some(50));
        assert_eq!(b.count, 160);
        assert_eq!(b.index(-4000), Some(0));
        assert_eq!(b.index(-3951), Some(0));
        assert_eq!(b.index(-3950), Some(1));
        assert_eq!(b.index(0), Some(80));
        assert_eq!(b.index(-1), Some(79));
        assert_eq!(b.index(4000), Some(159));
        assert_eq!(b.index(4001), None);
        assert_eq!(b.index(-4001), None);
        let e = b.edges_mm();
        assert_eq!(e.len(), 161);
        assert!((e[0] + 4000.0 * 0.149_896_23).abs() < 1e-3);
        assert_eq!(e[80], 0.0);
        // A width that does not divide the window: one more bin, still centred on 0.
        let odd = TofBins::covering(1000, Some(300));
        assert_eq!(odd.count, 7);
        assert_eq!(odd.index(-1000), Some(0));
        assert_eq!(odd.index(1000), Some(6));
        let one = TofBins::covering(4000, None);
        assert_eq!(
            (one.count, one.index(-4000), one.index(4000)),
            (1, Some(0), Some(0))
        );
    }

    #[test]
    fn energy_bins_split_the_window() {
        let b = EnergyBins::equal(400.0, 650.0, 5);
        assert_eq!(b.edges_kev, [400.0, 450.0, 500.0, 550.0, 600.0, 650.0]);
        assert_eq!(b.index(400.0), Some(0));
        assert_eq!(b.index(449.9), Some(0));
        assert_eq!(b.index(450.0), Some(1));
        assert_eq!(b.index(650.0), Some(4));
        assert_eq!(b.index(650.1), None);
        assert_eq!(b.index(f32::NAN), None);
        assert_eq!(EnergyBins::equal(0.0, 1.0, 1).index(0.5), Some(0));
    }
}
