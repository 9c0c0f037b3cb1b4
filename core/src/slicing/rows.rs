//! [`SliceRows`]: owned singles columns (time, channel, energy, flags) of a slice job, and the
//! k-way merge of per-source runs into one time-ordered batch with a defined tie order.

use crate::coincidence::SinglesRef;

/// Singles as owned columns, time ordered (struct-of-arrays, like the `SinglesRef` view).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SliceRows {
    /// Time, ps.
    pub t_ps: Vec<i64>,
    /// PETsys absolute channel id.
    pub channel: Vec<u32>,
    /// Energy, keV.
    pub energy_kev: Vec<f32>,
    /// Hit flags.
    pub flags: Vec<u16>,
}

impl SliceRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.t_ps.len()
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.t_ps.is_empty()
    }

    /// The columns as a [`SinglesRef`].
    pub fn view(&self) -> SinglesRef<'_> {
        SinglesRef {
            t_ps: &self.t_ps,
            channel: &self.channel,
            energy_kev: &self.energy_kev,
            flags: &self.flags,
        }
    }

    /// Appends every row of `s` (columns of equal length, checked by the caller).
    pub fn extend_from(&mut self, s: SinglesRef<'_>) {
        self.t_ps.extend_from_slice(s.t_ps);
        self.channel.extend_from_slice(s.channel);
        self.energy_kev.extend_from_slice(s.energy_kev);
        self.flags.extend_from_slice(s.flags);
    }

    fn reserve(&mut self, n: usize) {
        self.t_ps.reserve(n);
        self.channel.reserve(n);
        self.energy_kev.reserve(n);
        self.flags.reserve(n);
    }
}

/// Merges time-ordered `runs` into one time-ordered batch. Ties (equal `t_ps`) keep the runs'
/// order: rows of `runs[0]` first, then `runs[1]`, ...; within a run, its own order. With the
/// runs given by ascending source id this is the order of the single-process merge
/// (`KWayMerger` in daq/src/process/merge.rs merges boards by ascending stream id, earlier
/// stream first on equal times).
pub fn merge_runs(runs: &[SinglesRef<'_>]) -> SliceRows {
    let total = runs.iter().map(|r| r.len()).sum();
    let mut out = SliceRows::default();
    out.reserve(total);
    let mut pos = vec![0usize; runs.len()];
    // Row by row (sources interleave every few rows at high rates, so stretches are short):
    // take the head with the smallest time, the earliest run on equal times.
    for _ in 0..total {
        let mut best = usize::MAX;
        let mut best_t = 0;
        for (i, r) in runs.iter().enumerate() {
            if let Some(&t) = r.t_ps.get(pos[i])
                && (best == usize::MAX || t < best_t)
            {
                (best, best_t) = (i, t);
            }
        }
        let (r, p) = (&runs[best], pos[best]);
        out.t_ps.push(best_t);
        out.channel.push(r.channel[p]);
        out.energy_kev.push(r.energy_kev[p]);
        out.flags.push(r.flags[p]);
        pos[best] = p + 1;
    }
    out
}
