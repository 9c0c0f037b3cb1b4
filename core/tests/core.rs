//! Integration tests of scandaq-core's coincidence stage.
//!
//! [`reference`] is a deliberately plain, quadratic implementation of grouping and of the
//! GATE 10 coincidence sorter (docs/physics.md §4), written straight from the rules and sharing no
//! code with the library: it only reads the public [`Geometry`](scandaq_core::Geometry).
//! The tests compare the library to it on random singles (every policy, both window modes,
//! prompt and delayed, whole vs streaming vs parallel) and on hand-written cases. The
//! benchmark `benches/benches/coincidence.rs` includes this file to run the reference beside
//! the library, so proptest is named only inside `#[test]` functions and macros (which a
//! harness-less bench never compiles).

/// The plain reference implementation.
// Conditions are written as the negation of the rule they enforce, on purpose.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub mod reference {
    use scandaq_core::Geometry;

    /// One single (or hit).
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Single {
        /// Time, ps.
        pub t: i64,
        /// Channel.
        pub ch: u32,
        /// Energy, keV.
        pub e: f32,
        /// Flags.
        pub flags: u16,
    }

    /// Multiples policy.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Policy {
        /// takeAllGoods
        TakeAllGoods,
        /// takeWinnerOfGoods
        TakeWinnerOfGoods,
        /// takeWinnerIfIsGood
        TakeWinnerIfIsGood,
        /// takeWinnerIfAllAreGoods
        TakeWinnerIfAllAreGoods,
        /// takeIfOnlyOneGood
        TakeIfOnlyOneGood,
        /// removeMultiples
        RemoveMultiples,
    }

    /// Sorter settings.
    #[derive(Clone, Debug)]
    pub struct Config {
        /// Window, ps.
        pub window: i64,
        /// Offset, ps.
        pub offset: i64,
        /// Delayed flag bit set on output.
        pub delayed: bool,
        /// Closed energy window.
        pub energy: Option<(f32, f32)>,
        /// Minimum transaxial distance, mm.
        pub min_transaxial: Option<f64>,
        /// Maximum axial difference, mm.
        pub max_axial: Option<f64>,
        /// (minimum module difference, modules around the ring).
        pub min_module: Option<(u32, Option<u32>)>,
        /// Module pairs a good pair may join (either order); `None` = any.
        pub allowed_modules: Option<Vec<(u32, u32)>>,
        /// Policy.
        pub policy: Policy,
        /// Single-window mode.
        pub single_window: bool,
    }

    /// One coincidence.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Pair {
        /// Opener time.
        pub t1: i64,
        /// Partner time.
        pub t2: i64,
        /// Opener channel.
        pub ch1: u32,
        /// Partner channel.
        pub ch2: u32,
        /// Opener energy.
        pub e1: f32,
        /// Partner energy.
        pub e2: f32,
        /// t1 - t2.
        pub tof: i64,
        /// bit 0 delayed, bit 1 multiple.
        pub flags: u16,
    }

    /// Counters, same meaning as the library's.
    #[derive(Clone, Copy, Debug, Default, PartialEq)]
    pub struct Stats {
        /// Singles offered.
        pub singles_in: u64,
        /// Outside the energy window.
        pub outside_energy_window: u64,
        /// Channel not in the geometry.
        pub unmapped_channel: u64,
        /// Windows opened.
        pub windows_opened: u64,
        /// Openers suppressed (single-window).
        pub openers_suppressed: u64,
        /// Windows with one pair.
        pub one_pair_windows: u64,
        /// ... whose pair is not good.
        pub one_pair_not_good: u64,
        /// Windows with more than one pair.
        pub multiples_seen: u64,
        /// Multiples that kept nothing.
        pub multiples_rejected: u64,
        /// Pairs written.
        pub pairs_kept: u64,
    }

    /// One photon.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Photon {
        /// Time, ps.
        pub t: i64,
        /// Channel.
        pub ch: u32,
        /// Energy, keV.
        pub e: f32,
        /// Flags.
        pub flags: u16,
        /// Hits.
        pub multiplicity: u32,
    }

    fn is_good(cfg: &Config, geo: &Geometry, a: &Single, b: &Single) -> bool {
        let ca = geo.crystal(a.ch).unwrap();
        let cb = geo.crystal(b.ch).unwrap();
        let mut good = true;
        if let Some(min) = cfg.min_transaxial {
            let dx = ca.pos_mm[0] as f64 - cb.pos_mm[0] as f64;
            let dy = ca.pos_mm[1] as f64 - cb.pos_mm[1] as f64;
            let d = (dx * dx + dy * dy).sqrt();
            if !(d >= min) {
                good = false;
            }
        }
        if let Some(max) = cfg.max_axial {
            let dz = (ca.pos_mm[2] as f64 - cb.pos_mm[2] as f64).abs();
            if !(dz <= max) {
                good = false;
            }
        }
        if let Some((min, ring)) = cfg.min_module {
            let mut d = (ca.module as i64 - cb.module as i64).unsigned_abs() as u32;
            if let Some(n) = ring {
                d %= n;
                if n - d < d {
                    d = n - d;
                }
            }
            if d < min {
                good = false;
            }
        }
        if let Some(allowed) = &cfg.allowed_modules
            && !pair_listed(allowed, ca.module, cb.module)
        {
            good = false;
        }
        good
    }

    /// True when `(a, b)` or `(b, a)` is in `pairs`.
    fn pair_listed(pairs: &[(u32, u32)], a: u32, b: u32) -> bool {
        pairs.iter().any(|&p| p == (a, b) || p == (b, a))
    }

    /// Grouping rules beyond the window and distance (all off by default).
    #[derive(Clone, Debug, Default)]
    pub struct GroupRules {
        /// Module pairs whose hits may share a photon (first hit's module, hit's module).
        pub multi_hit: Option<Vec<(u32, u32)>>,
        /// Fewer hits: no photon.
        pub min_hits: u32,
        /// More hits: no photon.
        pub max_hits: Option<u32>,
        /// Closed window on the summed energy.
        pub energy: Option<(f32, f32)>,
    }

    /// Index (into `partners`) of the highest e1 + e2 among `allowed`; ties: earliest.
    fn winner(opener: &Single, partners: &[Single], allowed: &[bool]) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut best_sum = 0.0f64;
        for k in 0..partners.len() {
            if !allowed[k] {
                continue;
            }
            let sum = opener.e as f64 + partners[k].e as f64;
            if best.is_none() || sum > best_sum {
                best = Some(k);
                best_sum = sum;
            }
        }
        best
    }

    /// Sorts `singles` (time ordered) into coincidences.
    pub fn sort(cfg: &Config, geo: &Geometry, singles: &[Single]) -> (Vec<Pair>, Stats) {
        let (pairs, stats, _) = sort_marked(cfg, false, geo, singles);
        (pairs, stats)
    }

    /// [`sort`], with GATE 10's single-window rule when `gate10_single_window` (a single that
    /// is a candidate of any earlier single's window opens none; `cfg.single_window` is then
    /// ignored), also telling for each input single whether it opened a window: `None` when
    /// it was cut (energy window, unmapped channel), `Some(false)` when it was suppressed
    /// (single-window modes), `Some(true)` when it opened one.
    pub fn sort_marked(
        cfg: &Config,
        gate10_single_window: bool,
        geo: &Geometry,
        singles: &[Single],
    ) -> (Vec<Pair>, Stats, Vec<Option<bool>>) {
        let mut opened: Vec<Option<bool>> = vec![None; singles.len()];
        let mut input_row: Vec<usize> = Vec::new();
        let mut stats = Stats {
            singles_in: singles.len() as u64,
            ..Stats::default()
        };
        // Energy cut (and geometry) before sorting.
        let mut s: Vec<Single> = Vec::new();
        for (row, x) in singles.iter().enumerate() {
            if let Some((lo, hi)) = cfg.energy
                && !(x.e >= lo && x.e <= hi)
            {
                stats.outside_energy_window += 1;
                continue;
            }
            if geo.crystal(x.ch).is_none() {
                stats.unmapped_channel += 1;
                continue;
            }
            input_row.push(row);
            s.push(*x);
        }
        let mut suppressed = vec![false; s.len()];
        // GATE 10: suppressed when some earlier single on another crystal has it in its window.
        let mut in_earlier_window = vec![false; s.len()];
        if gate10_single_window {
            for j in 0..s.len() {
                for i in 0..j {
                    let dt = s[j].t as i128 - s[i].t as i128;
                    if s[i].ch != s[j].ch
                        && dt >= cfg.offset as i128
                        && dt <= cfg.offset as i128 + cfg.window as i128
                    {
                        in_earlier_window[j] = true;
                    }
                }
            }
        }
        let mut pairs = Vec::new();
        for i in 0..s.len() {
            if (cfg.single_window && !gate10_single_window && suppressed[i]) || in_earlier_window[i]
            {
                stats.openers_suppressed += 1;
                opened[input_row[i]] = Some(false);
                continue;
            }
            stats.windows_opened += 1;
            opened[input_row[i]] = Some(true);
            // Candidates: later singles with offset <= dt <= offset + window, other crystal.
            let mut partner_index = Vec::new();
            for j in (i + 1)..s.len() {
                let dt = s[j].t as i128 - s[i].t as i128;
                let inside =
                    dt >= cfg.offset as i128 && dt <= cfg.offset as i128 + cfg.window as i128;
                if inside && s[j].ch != s[i].ch {
                    partner_index.push(j);
                }
            }
            let partners: Vec<Single> = partner_index.iter().map(|&j| s[j]).collect();
            let good: Vec<bool> = partners
                .iter()
                .map(|p| is_good(cfg, geo, &s[i], p))
                .collect();
            let n_good = good.iter().filter(|&&g| g).count();
            let mut keep: Vec<usize> = Vec::new();
            let multiple = partners.len() > 1;
            if partners.is_empty() {
                continue;
            } else if partners.len() == 1 {
                stats.one_pair_windows += 1;
                if good[0] {
                    keep.push(0);
                } else {
                    stats.one_pair_not_good += 1;
                }
            } else {
                stats.multiples_seen += 1;
                let all = vec![true; partners.len()];
                match cfg.policy {
                    Policy::TakeAllGoods => {
                        for (k, &is_good) in good.iter().enumerate() {
                            if is_good {
                                keep.push(k);
                            }
                        }
                    }
                    Policy::TakeWinnerOfGoods => {
                        if let Some(k) = winner(&s[i], &partners, &good) {
                            keep.push(k);
                        }
                    }
                    Policy::TakeWinnerIfIsGood => {
                        let k = winner(&s[i], &partners, &all).unwrap();
                        if good[k] {
                            keep.push(k);
                        }
                    }
                    Policy::TakeWinnerIfAllAreGoods => {
                        if n_good == partners.len() {
                            keep.push(winner(&s[i], &partners, &all).unwrap());
                        }
                    }
                    Policy::TakeIfOnlyOneGood => {
                        if n_good == 1 {
                            keep.push(good.iter().position(|&g| g).unwrap());
                        }
                    }
                    Policy::RemoveMultiples => {}
                }
                if keep.is_empty() {
                    stats.multiples_rejected += 1;
                }
            }
            for k in keep {
                let (a, b) = (s[i], partners[k]);
                let mut flags = 0u16;
                if cfg.delayed {
                    flags |= 1;
                }
                if multiple {
                    flags |= 2;
                }
                pairs.push(Pair {
                    t1: a.t,
                    t2: b.t,
                    ch1: a.ch,
                    ch2: b.ch,
                    e1: a.e,
                    e2: b.e,
                    tof: a.t - b.t,
                    flags,
                });
                stats.pairs_kept += 1;
                suppressed[partner_index[k]] = true;
            }
        }
        (pairs, stats, opened)
    }

    /// Groups time-ordered hits into photons.
    pub fn group(window: i64, max_distance: f64, geo: &Geometry, hits: &[Single]) -> Vec<Photon> {
        group_with(window, max_distance, &GroupRules::default(), geo, hits)
    }

    /// Groups time-ordered hits into photons under `rules`.
    pub fn group_with(
        window: i64,
        max_distance: f64,
        rules: &GroupRules,
        geo: &Geometry,
        hits: &[Single],
    ) -> Vec<Photon> {
        let hits: Vec<Single> = hits
            .iter()
            .copied()
            .filter(|h| geo.crystal(h.ch).is_some())
            .collect();
        let pos = |h: &Single| geo.crystal(h.ch).unwrap().pos_mm;
        let module = |h: &Single| geo.crystal(h.ch).unwrap().module;
        let mut assigned = vec![false; hits.len()];
        let mut photons = Vec::new();
        for i in 0..hits.len() {
            if assigned[i] {
                continue;
            }
            assigned[i] = true;
            let mut members = vec![i];
            for j in (i + 1)..hits.len() {
                if assigned[j] {
                    continue;
                }
                let (a, b) = (pos(&hits[i]), pos(&hits[j]));
                let dx = a[0] as f64 - b[0] as f64;
                let dy = a[1] as f64 - b[1] as f64;
                let dz = a[2] as f64 - b[2] as f64;
                let d = (dx * dx + dy * dy + dz * dz).sqrt();
                let modules_may_share = rules
                    .multi_hit
                    .as_ref()
                    .is_none_or(|pairs| pair_listed(pairs, module(&hits[i]), module(&hits[j])));
                if hits[j].t - hits[i].t <= window && d <= max_distance && modules_may_share {
                    assigned[j] = true;
                    members.push(j);
                }
            }
            let mut best = members[0];
            let mut sum = 0.0f32;
            let mut flags = 0u16;
            for &m in &members {
                sum += hits[m].e;
                flags |= hits[m].flags;
                if hits[m].e > hits[best].e {
                    best = m;
                }
            }
            let n = members.len() as u32;
            let outside_energy = rules
                .energy
                .is_some_and(|(lo, hi)| !(sum >= lo && sum <= hi));
            if rules.max_hits.is_some_and(|max| n > max) || n < rules.min_hits || outside_energy {
                continue;
            }
            photons.push(Photon {
                t: hits[best].t,
                ch: hits[best].ch,
                e: sum,
                flags,
                multiplicity: members.len() as u32,
            });
        }
        // Stable: equal times stay in the order the groups were opened.
        photons.sort_by_key(|p| p.t);
        photons
    }
}

/// Counter unwrapping and clock fit (not part of the coincidence benchmark).
#[cfg(test)]
#[path = "clock_fit/mod.rs"]
mod clock_fit;

#[cfg(test)]
#[path = "hits/mod.rs"]
mod hits;

/// Time slices across sources and builders (not part of the coincidence benchmark).
#[cfg(test)]
#[path = "slicing/mod.rs"]
mod slicing;

#[cfg(test)]
mod tests {
    use super::reference::{self, Pair, Single};
    use scandaq_core::coincidence::*;
    use scandaq_core::{Crystal, Geometry};

    // ---------- helpers ----------

    fn to_ref(cfg: &CoincidenceConfig) -> reference::Config {
        reference::Config {
            window: cfg.window_ps,
            offset: cfg.offset_ps,
            delayed: cfg.delayed,
            energy: cfg.energy_window_kev.map(|[a, b]| (a, b)),
            min_transaxial: cfg.min_transaxial_mm,
            max_axial: cfg.max_axial_mm,
            min_module: cfg.min_module_difference.map(|m| (m.min, m.ring_modules)),
            allowed_modules: cfg
                .allowed_module_pairs
                .as_ref()
                .map(|p| p.pairs().iter().map(|&[a, b]| (a, b)).collect()),
            policy: match cfg.policy {
                Policy::TakeAllGoods => reference::Policy::TakeAllGoods,
                Policy::TakeWinnerOfGoods => reference::Policy::TakeWinnerOfGoods,
                Policy::TakeWinnerIfIsGood => reference::Policy::TakeWinnerIfIsGood,
                Policy::TakeWinnerIfAllAreGoods => reference::Policy::TakeWinnerIfAllAreGoods,
                Policy::TakeIfOnlyOneGood => reference::Policy::TakeIfOnlyOneGood,
                Policy::RemoveMultiples => reference::Policy::RemoveMultiples,
            },
            single_window: cfg.mode == WindowMode::SingleWindow,
        }
    }

    /// The reference's pairs and counters for `cfg` (any window mode).
    fn ref_sort(
        cfg: &CoincidenceConfig,
        geo: &Geometry,
        s: &[Single],
    ) -> (Vec<Pair>, reference::Stats) {
        let gate10 = cfg.mode == WindowMode::SingleWindowGate10;
        let (pairs, stats, _) = reference::sort_marked(&to_ref(cfg), gate10, geo, s);
        (pairs, stats)
    }

    fn ref_stats(s: &CoincidenceStats) -> reference::Stats {
        reference::Stats {
            singles_in: s.singles_in,
            outside_energy_window: s.outside_energy_window,
            unmapped_channel: s.unmapped_channel,
            windows_opened: s.windows_opened,
            openers_suppressed: s.openers_suppressed,
            one_pair_windows: s.one_pair_windows,
            one_pair_not_good: s.one_pair_not_good,
            multiples_seen: s.multiples_seen,
            multiples_rejected: s.multiples_rejected,
            pairs_kept: s.pairs_kept,
        }
    }

    fn pairs(b: &CoincidenceBatch) -> Vec<Pair> {
        (0..b.len())
            .map(|k| Pair {
                t1: b.t1_ps[k],
                t2: b.t2_ps[k],
                ch1: b.channel1[k],
                ch2: b.channel2[k],
                e1: b.energy1_kev[k],
                e2: b.energy2_kev[k],
                tof: b.tof_ps[k],
                flags: b.flags[k],
            })
            .collect()
    }

    struct Cols {
        t: Vec<i64>,
        ch: Vec<u32>,
        e: Vec<f32>,
        f: Vec<u16>,
    }

    impl Cols {
        fn new(s: &[Single]) -> Self {
            Self {
                t: s.iter().map(|x| x.t).collect(),
                ch: s.iter().map(|x| x.ch).collect(),
                e: s.iter().map(|x| x.e).collect(),
                f: s.iter().map(|x| x.flags).collect(),
            }
        }
        fn view(&self) -> SinglesRef<'_> {
            SinglesRef {
                t_ps: &self.t,
                channel: &self.ch,
                energy_kev: &self.e,
                flags: &self.f,
            }
        }
    }

    fn single(t: i64, ch: u32, e: f32) -> Single {
        Single { t, ch, e, flags: 0 }
    }

    /// Geometry of `(channel, module, [x, y, z])`.
    fn geometry(crystals: &[(u32, u32, [f32; 3])]) -> Geometry {
        let mut g = Geometry::default();
        for &(ch, module, pos_mm) in crystals {
            g.crystals.insert(
                ch,
                Crystal {
                    module,
                    xi: 0,
                    yi: 0,
                    pos_mm,
                },
            );
        }
        g
    }

    /// Channels 0..n spread around a ring of radius 400 mm (all pairs far apart), module = ch.
    fn ring(n: u32) -> Geometry {
        geometry(
            &(0..n)
                .map(|c| {
                    let a = c as f32 * std::f32::consts::TAU / n as f32;
                    (c, c, [400.0 * a.cos(), 400.0 * a.sin(), 0.0])
                })
                .collect::<Vec<_>>(),
        )
    }

    fn sort_all(cfg: &CoincidenceConfig, geo: &Geometry, s: &[Single]) -> Vec<Pair> {
        let lut = CrystalLut::from_geometry(geo);
        let cols = Cols::new(s);
        let mut out = CoincidenceBatch::default();
        sort_coincidences(cfg, &lut, cols.view(), &mut out).unwrap();
        let (want, _) = ref_sort(cfg, geo, s);
        assert_eq!(pairs(&out), want, "library vs reference");
        pairs(&out)
    }

    fn pt(p: &[Pair]) -> Vec<(i64, i64)> {
        p.iter().map(|p| (p.t1, p.t2)).collect()
    }

    // ---------- random inputs ----------

    #[derive(Clone, Debug)]
    struct Case {
        geo: Geometry,
        singles: Vec<Single>,
        window: i64,
        delay: i64,
        energy: Option<[f32; 2]>,
        min_transaxial: Option<f64>,
        max_axial: Option<f64>,
        module: Option<ModuleDifference>,
        allowed_modules: Option<Vec<[u32; 2]>>,
        splits: Vec<usize>,
        pieces: usize,
    }

    /// Strategy of random [`Case`]s (a macro so that proptest is only named inside `#[test]`
    /// functions: the benchmark includes this file without proptest).
    macro_rules! case_strategy {
        () => {{
            let geo = (2u32..7).prop_flat_map(|n| {
                prop::collection::vec((0u32..4, -2i32..3, -2i32..3, -2i32..3), n as usize)
            });
            (
                geo,
                1i64..40,
                1i64..60,
                prop::collection::vec((0u8..10, 0u32..200, 0u32..8, 0u8..12, 0u16..4), 0..90),
                prop::option::of(prop_oneof![Just([300.0f32, 650.0]), Just([0.0f32, 500.0])]),
                prop::option::of(prop_oneof![Just(0.0), Just(50.0), Just(100.0), Just(141.4)]),
                prop::option::of(prop_oneof![Just(0.0), Just(10.0), Just(25.0)]),
                prop::option::of((1u32..3, prop::option::of(Just(4u32)))),
                prop::collection::vec(0usize..30, 0..8),
                1usize..6,
                prop::option::of(prop::collection::vec([0u32..4, 0u32..4], 0..6)),
            )
                .prop_map(
                    |(
                        g,
                        window,
                        extra,
                        raw,
                        energy,
                        min_t,
                        max_a,
                        module,
                        splits,
                        pieces,
                        allowed_modules,
                    )| {
                        let crystals: Vec<(u32, u32, [f32; 3])> = g
                            .iter()
                            .enumerate()
                            .map(|(c, &(m, x, y, z))| {
                                (
                                    c as u32,
                                    m,
                                    [x as f32 * 50.0, y as f32 * 50.0, z as f32 * 10.0],
                                )
                            })
                            .collect();
                        let nch = crystals.len() as u32;
                        let delay = window + extra;
                        let mut t = 1_000i64;
                        let mut singles = Vec::new();
                        for (gap, r, ch, ecode, flags) in raw {
                            // Many collisions and exact edges (prompt and delayed).
                            t += match gap {
                                0 | 1 => 0,
                                2 => 1,
                                3 => window,
                                4 => window + 1,
                                5 => delay,
                                6 => delay + window,
                                7 => delay + window + 1,
                                _ => r as i64 % (2 * (delay + window) + 2),
                            };
                            let e = match ecode {
                                0..=6 => [100.0, 200.0, 300.0, 400.0, 511.0, 650.0, 700.0]
                                    [ecode as usize],
                                _ => r as f32 * 3.7,
                            };
                            // Channel nch (one past the geometry) is unmapped.
                            singles.push(single(t, ch % (nch + 1), e));
                            singles.last_mut().unwrap().flags = flags;
                        }
                        Case {
                            geo: geometry(&crystals),
                            singles,
                            window,
                            delay,
                            energy,
                            min_transaxial: min_t,
                            max_axial: max_a,
                            module: module
                                .map(|(min, ring_modules)| ModuleDifference { min, ring_modules }),
                            allowed_modules,
                            splits,
                            pieces,
                        }
                    },
                )
        }};
    }

    fn configs(c: &Case) -> Vec<CoincidenceConfig> {
        let mut v = Vec::new();
        for policy in Policy::ALL {
            for mode in [
                WindowMode::MultiWindow,
                WindowMode::SingleWindow,
                WindowMode::SingleWindowGate10,
            ] {
                for delayed in [false, true] {
                    let mut cfg = CoincidenceConfig::prompt(c.window);
                    cfg.policy = policy;
                    cfg.mode = mode;
                    cfg.energy_window_kev = c.energy;
                    cfg.min_transaxial_mm = c.min_transaxial;
                    cfg.max_axial_mm = c.max_axial;
                    cfg.min_module_difference = c.module;
                    cfg.allowed_module_pairs = c.allowed_modules.clone().map(ModulePairs);
                    if delayed {
                        cfg = cfg.to_delayed(c.delay);
                    }
                    v.push(cfg);
                }
            }
        }
        v
    }

    /// The number of singles a streaming sorter must still hold after it has been fed `prefix`
    /// (computed from the reference, not the library): among the singles past the energy cut
    /// and the geometry, those from the first one that opens a window (not suppressed in
    /// single-window mode; in GATE 10 single-window mode any single, since a suppressed one
    /// still suppresses its window's candidates) whose window is not complete yet, i.e. with
    /// `t + offset + window >= t_last` (`t_last`: the newest such single); 0 when there is none.
    /// Suppression of the singles before it depends only on complete windows, so the reference
    /// run on the prefix gives it.
    fn expected_pending(cfg: &CoincidenceConfig, geo: &Geometry, prefix: &[Single]) -> usize {
        let gate10 = cfg.mode == WindowMode::SingleWindowGate10;
        let (_, _, opened) = reference::sort_marked(&to_ref(cfg), gate10, geo, prefix);
        let kept: Vec<(i64, bool)> = prefix
            .iter()
            .zip(&opened)
            .filter_map(|(s, o)| o.map(|opens| (s.t, opens || gate10)))
            .collect();
        let Some(&(t_last, _)) = kept.last() else {
            return 0;
        };
        let span = cfg.offset_ps as i128 + cfg.window_ps as i128;
        kept.iter()
            .position(|&(t, opens)| opens && t as i128 + span >= t_last as i128)
            .map_or(0, |first| kept.len() - first)
    }

    fn split_batches(n: usize, splits: &[usize]) -> Vec<std::ops::Range<usize>> {
        let mut ranges = Vec::new();
        let mut start = 0;
        for &s in splits {
            let end = (start + s).min(n);
            ranges.push(start..end);
            start = end;
        }
        ranges.push(start..n);
        ranges
    }

    /// Runs `body` on `cases` random inputs of `strategy` with proptest's runner (shrinking,
    /// no failure persistence); panics with the minimal failing input.
    macro_rules! check {
        ($cases:expr, $strategy:expr, |$arg:pat_param| $body:block) => {{
            let config = proptest::test_runner::Config {
                cases: $cases,
                failure_persistence: None,
                ..Default::default()
            };
            let mut runner = proptest::test_runner::TestRunner::new(config);
            if let Err(e) = runner.run(&$strategy, |$arg| {
                $body;
                Ok(())
            }) {
                panic!("{e}");
            }
        }};
    }

    #[test]
    fn sorter_matches_reference_whole_streaming_parallel() {
        use proptest::prelude::*;
        check!(400, case_strategy!(), |c| {
            let lut = CrystalLut::from_geometry(&c.geo);
            let cols = Cols::new(&c.singles);
            for cfg in configs(&c) {
                let (want, want_stats) = ref_sort(&cfg, &c.geo, &c.singles);
                let name = format!("{} {:?} delayed={}", cfg.policy, cfg.mode, cfg.delayed);

                let mut whole = CoincidenceBatch::default();
                let stats = sort_coincidences(&cfg, &lut, cols.view(), &mut whole).unwrap();
                prop_assert_eq!(&pairs(&whole), &want, "whole {}", name);
                prop_assert_eq!(ref_stats(&stats), want_stats, "whole stats {}", name);

                let mut sorter = CoincidenceSorter::new(cfg.clone(), &lut).unwrap();
                let mut streamed = CoincidenceBatch::default();
                for r in split_batches(c.singles.len(), &c.splits) {
                    let end = r.end;
                    sorter.push(cols.view().slice(r), &mut streamed).unwrap();
                    // Bounded carry-over: exactly the singles from the first opener whose
                    // window is still incomplete.
                    prop_assert_eq!(
                        sorter.pending(),
                        expected_pending(&cfg, &c.geo, &c.singles[..end]),
                        "pending after {} singles, {}",
                        end,
                        name
                    );
                }
                sorter.finish(&mut streamed);
                prop_assert_eq!(&pairs(&streamed), &want, "streaming {}", name);
                prop_assert_eq!(
                    ref_stats(sorter.stats()),
                    want_stats,
                    "streaming stats {}",
                    name
                );

                let mut par = CoincidenceBatch::default();
                let pstats =
                    sort_coincidences_sliced(&cfg, &lut, cols.view(), c.pieces, &mut par).unwrap();
                prop_assert_eq!(&pairs(&par), &want, "parallel {}", name);
                prop_assert_eq!(ref_stats(&pstats), want_stats, "parallel stats {}", name);
            }
        });
    }

    #[test]
    fn gap_cuts_only_at_long_gaps() {
        use proptest::prelude::*;
        let strategy = (prop::collection::vec(0i64..30, 0..200), 0i64..20, 1usize..9);
        check!(256, strategy, |(gaps, span, pieces)| {
            let t: Vec<i64> = gaps
                .iter()
                .scan(0i64, |acc, g| {
                    *acc += g;
                    Some(*acc)
                })
                .collect();
            let cuts = gap_cuts(&t, span, pieces);
            prop_assert_eq!(cuts[0], 0);
            prop_assert_eq!(*cuts.last().unwrap(), t.len());
            prop_assert!(cuts.len() <= pieces + 1 || t.is_empty());
            for w in cuts.windows(2) {
                prop_assert!(w[0] < w[1] || t.is_empty());
            }
            for &c in &cuts[1..cuts.len() - 1] {
                prop_assert!(t[c] - t[c - 1] > span);
            }
        });
    }

    #[test]
    fn grouping_matches_reference_whole_and_streaming() {
        use proptest::prelude::*;
        let dmax = prop_oneof![Just(0.0), Just(50.0), Just(100.0), Just(1000.0)];
        // Module rule, hit-count and energy cuts: off in about half the cases each. Half the
        // module rules pair modules only with themselves (PETsys's `M` entries), which the
        // grouper follows on its fast path whenever every such module fits in the distance.
        let same_module_pairs = prop::collection::vec((0u32..4).prop_map(|m| [m, m]), 0..4);
        let rules = (
            prop::option::of(prop_oneof![
                prop::collection::vec([0u32..4, 0u32..4], 0..6),
                same_module_pairs,
            ]),
            prop_oneof![Just(1u32), Just(1u32), Just(2u32)],
            prop::option::of(1u32..4),
            prop::option::of(prop_oneof![Just([300.0f32, 900.0]), Just([0.0f32, 500.0])]),
        );
        check!(400, (case_strategy!(), 0i64..60, dmax, rules), |(
            c,
            window,
            dmax,
            (multi_hit, min_hits, max_hits, energy),
        )| {
            let lut = CrystalLut::from_geometry(&c.geo);
            let cols = Cols::new(&c.singles);
            let max_hits = max_hits.map(|m| m.max(min_hits));
            let cfg = GroupingConfig {
                multi_hit_module_pairs: multi_hit.clone().map(ModulePairs),
                min_hits,
                max_hits,
                energy_window: energy,
                ..GroupingConfig::new(window, dmax)
            };
            let rules = reference::GroupRules {
                multi_hit: multi_hit.map(|v| v.iter().map(|&[a, b]| (a, b)).collect()),
                min_hits,
                max_hits,
                energy: energy.map(|[a, b]| (a, b)),
            };
            let want = reference::group_with(window, dmax, &rules, &c.geo, &c.singles);
            let got_of = |b: &PhotonBatch| -> Vec<reference::Photon> {
                (0..b.len())
                    .map(|k| reference::Photon {
                        t: b.t_ps[k],
                        ch: b.channel[k],
                        e: b.energy_kev[k],
                        flags: b.flags[k],
                        multiplicity: b.multiplicity[k],
                    })
                    .collect()
            };
            let (whole, stats) = group_hits(&cfg, &lut, cols.view()).unwrap();
            prop_assert_eq!(got_of(&whole), want.clone());
            prop_assert_eq!(stats.photons_out, want.len() as u64);
            prop_assert_eq!(stats.hits_in, c.singles.len() as u64);
            // Every group either gave a photon or was counted as rejected.
            let uncut = reference::GroupRules {
                multi_hit: rules.multi_hit.clone(),
                ..Default::default()
            };
            let all_groups =
                reference::group_with(window, dmax, &uncut, &c.geo, &c.singles).len() as u64;
            prop_assert_eq!(stats.photons_out + stats.rejected(), all_groups);
            let mut g = Grouper::new(cfg.clone(), &lut).unwrap();
            let mut streamed = PhotonBatch::default();
            for r in split_batches(c.singles.len(), &c.splits) {
                g.push(cols.view().slice(r), &mut streamed).unwrap();
            }
            g.finish(&mut streamed);
            prop_assert_eq!(got_of(&streamed), want.clone());

            // Grouping then sorting, streamed end to end, equals the reference chain.
            let sort_cfg = CoincidenceConfig::prompt(c.window);
            let ref_photons: Vec<Single> = want
                .iter()
                .map(|p| Single {
                    t: p.t,
                    ch: p.ch,
                    e: p.e,
                    flags: p.flags,
                })
                .collect();
            let (want_pairs, _) = ref_sort(&sort_cfg, &c.geo, &ref_photons);
            let mut sorter = CoincidenceSorter::new(sort_cfg, &lut).unwrap();
            let mut g = Grouper::new(cfg, &lut).unwrap();
            let mut out = CoincidenceBatch::default();
            let mut photons = PhotonBatch::default();
            for r in split_batches(c.singles.len(), &c.splits) {
                photons.clear();
                g.push(cols.view().slice(r), &mut photons).unwrap();
                sorter.push((&photons).into(), &mut out).unwrap();
            }
            photons.clear();
            g.finish(&mut photons);
            sorter.push((&photons).into(), &mut out).unwrap();
            sorter.finish(&mut out);
            prop_assert_eq!(pairs(&out), want_pairs);
        });
    }

    // ---------- hand-written cases ----------

    #[test]
    fn physics_abc_example() {
        let geo = ring(8);
        let s = [
            single(0, 0, 400.0),
            single(1000, 1, 500.0),
            single(2000, 2, 600.0),
        ];
        let mut cfg = CoincidenceConfig::prompt(4000);
        // Windows {(a,b), (a,c)} (a multiple) and {(b,c)}.
        let p = sort_all(&cfg, &geo, &s);
        assert_eq!(pt(&p), vec![(0, 1000), (0, 2000), (1000, 2000)]);
        assert_eq!(
            p.iter().map(|p| p.flags).collect::<Vec<_>>(),
            vec![coinc_flags::MULTIPLE, coinc_flags::MULTIPLE, 0]
        );
        assert!(p.iter().all(|p| p.tof == p.t1 - p.t2));
        cfg.policy = Policy::RemoveMultiples;
        assert_eq!(pt(&sort_all(&cfg, &geo, &s)), vec![(1000, 2000)]);
        cfg.policy = Policy::TakeWinnerOfGoods;
        assert_eq!(pt(&sort_all(&cfg, &geo, &s)), vec![(0, 2000), (1000, 2000)]);
        // Single-window: b and c were partners of kept pairs, they open no window.
        cfg.policy = Policy::TakeAllGoods;
        cfg.mode = WindowMode::SingleWindow;
        assert_eq!(pt(&sort_all(&cfg, &geo, &s)), vec![(0, 1000), (0, 2000)]);
        // ... but a rejected multiple keeps nothing, so b still opens its window.
        cfg.policy = Policy::RemoveMultiples;
        assert_eq!(pt(&sort_all(&cfg, &geo, &s)), vec![(1000, 2000)]);
        // Winner of a's window is (a,c); c is then suppressed, b still opens: (b,c).
        cfg.policy = Policy::TakeWinnerOfGoods;
        assert_eq!(pt(&sort_all(&cfg, &geo, &s)), vec![(0, 2000), (1000, 2000)]);
    }

    /// GATE 10.1.1's single-window rule, worked out by hand from `_coincidences_sorter` in
    /// `opengate/actors/coincidences.py` (`allDigiOpenCoincGate = False`): every window whose
    /// opener is the second single of any pair (same-crystal pairs already removed) is dropped
    /// before the good-pair filter and the policy.
    #[test]
    fn gate10_single_window_rule() {
        let geo = ring(8);
        let abc = [
            single(0, 0, 400.0),
            single(1000, 1, 500.0),
            single(2000, 2, 600.0),
        ];
        let mut cfg = CoincidenceConfig::prompt(4000);
        cfg.mode = WindowMode::SingleWindowGate10;
        // b and c are in a's window: only a's window is left.
        assert_eq!(pt(&sort_all(&cfg, &geo, &abc)), vec![(0, 1000), (0, 2000)]);
        cfg.policy = Policy::TakeWinnerOfGoods;
        assert_eq!(pt(&sort_all(&cfg, &geo, &abc)), vec![(0, 2000)]);
        // a's window is a multiple and removed; b still opens none (scandaq's SingleWindow
        // writes (b,c) here).
        cfg.policy = Policy::RemoveMultiples;
        assert!(sort_all(&cfg, &geo, &abc).is_empty());
        // A chain a-b-c, 3 ns apart: c is in b's window although b opens none.
        let chain = [
            single(0, 0, 511.0),
            single(3000, 1, 511.0),
            single(6000, 5, 511.0),
        ];
        cfg.policy = Policy::TakeAllGoods;
        assert_eq!(pt(&sort_all(&cfg, &geo, &chain)), vec![(0, 3000)]);
        let stats = sort_coincidences(
            &cfg,
            &CrystalLut::from_geometry(&geo),
            Cols::new(&chain).view(),
            &mut CoincidenceBatch::default(),
        )
        .unwrap();
        assert_eq!(
            (stats.windows_opened, stats.openers_suppressed),
            (1, 2),
            "only a opens a window; b and c are suppressed"
        );
        // (a,b) is not good (neighbours, 306 mm), (b,c) is (opposite, 800 mm): b is still
        // suppressed, so nothing is written, where scandaq's SingleWindow writes (b,c).
        cfg.min_transaxial_mm = Some(500.0);
        assert!(sort_all(&cfg, &geo, &chain).is_empty());
        let mut kept_rule = cfg.clone();
        kept_rule.mode = WindowMode::SingleWindow;
        assert_eq!(pt(&sort_all(&kept_rule, &geo, &chain)), vec![(3000, 6000)]);
        // A same-crystal pair is no pair, so it suppresses nothing: b opens.
        let same = [
            single(0, 3, 511.0),
            single(1000, 3, 511.0),
            single(2000, 7, 511.0),
        ];
        cfg.min_transaxial_mm = None;
        assert_eq!(
            pt(&sort_all(&cfg, &geo, &same)),
            vec![(0, 2000), (1000, 2000)]
        );
    }

    #[test]
    fn closed_window_edges() {
        let geo = ring(4);
        let w = 4000;
        let cfg = CoincidenceConfig::prompt(w);
        assert_eq!(
            pt(&sort_all(
                &cfg,
                &geo,
                &[single(0, 0, 1.0), single(w, 1, 1.0)]
            )),
            vec![(0, w)]
        );
        assert!(sort_all(&cfg, &geo, &[single(0, 0, 1.0), single(w + 1, 1, 1.0)]).is_empty());
        // Equal times pair (opener is the earlier row).
        let p = sort_all(&cfg, &geo, &[single(7, 2, 1.0), single(7, 1, 1.0)]);
        assert_eq!((p[0].ch1, p[0].ch2, p[0].tof), (2, 1, 0));
        // Delayed: offset <= dt <= offset + window.
        let d = CoincidenceConfig::delayed(w);
        let off = DEFAULT_DELAY_PS;
        for (dt, inside) in [
            (off - 1, false),
            (off, true),
            (off + w, true),
            (off + w + 1, false),
            (w, false),
        ] {
            let p = sort_all(&d, &geo, &[single(0, 0, 1.0), single(dt, 1, 1.0)]);
            assert_eq!(p.len(), inside as usize, "dt {dt}");
            if inside {
                assert_eq!(p[0].flags, coinc_flags::DELAYED);
                assert_eq!(p[0].tof, -dt);
            }
        }
    }

    #[test]
    fn same_crystal_removed_first() {
        let geo = ring(4);
        let cfg = CoincidenceConfig::prompt(4000);
        // a and b on channel 0: a's window holds only (a,c), not a multiple.
        let s = [single(0, 0, 1.0), single(10, 0, 1.0), single(20, 1, 1.0)];
        let p = sort_all(&cfg, &geo, &s);
        assert_eq!(pt(&p), vec![(0, 20), (10, 20)]);
        assert!(p.iter().all(|p| p.flags == 0));
        // Two same-crystal singles alone make nothing.
        assert!(sort_all(&cfg, &geo, &[single(0, 3, 1.0), single(1, 3, 1.0)]).is_empty());
        let mut rm = cfg.clone();
        rm.policy = Policy::RemoveMultiples;
        assert_eq!(pt(&sort_all(&rm, &geo, &s)), vec![(0, 20), (10, 20)]);
    }

    /// Opener a (ch 0) with partners b (good, 100 keV), c (not good: too close, 500 keV),
    /// d (good, 300 keV); later singles are far in time so only a's window matters.
    #[test]
    fn each_policy_on_a_multiple() {
        let geo = geometry(&[
            (0, 0, [0.0, 0.0, 0.0]),
            (1, 4, [300.0, 0.0, 0.0]),
            (2, 1, [10.0, 0.0, 0.0]),
            (3, 5, [0.0, 300.0, 0.0]),
        ]);
        let mut cfg = CoincidenceConfig::prompt(1000);
        cfg.min_transaxial_mm = Some(100.0);
        let s = [
            single(0, 0, 500.0),
            single(0, 1, 100.0),
            single(600, 2, 500.0),
            single(1000, 3, 300.0),
        ];
        let a_pairs = |cfg: &CoincidenceConfig, policy: Policy, s: &[Single]| -> Vec<u32> {
            let mut cfg = cfg.clone();
            cfg.policy = policy;
            sort_all(&cfg, &geo, s)
                .iter()
                .filter(|p| p.t1 == 0 && p.ch1 == 0)
                .map(|p| p.ch2)
                .collect()
        };
        assert_eq!(a_pairs(&cfg, Policy::TakeAllGoods, &s), vec![1, 3]);
        assert_eq!(a_pairs(&cfg, Policy::TakeWinnerOfGoods, &s), vec![3]);
        assert_eq!(
            a_pairs(&cfg, Policy::TakeWinnerIfIsGood, &s),
            Vec::<u32>::new()
        );
        assert_eq!(
            a_pairs(&cfg, Policy::TakeWinnerIfAllAreGoods, &s),
            Vec::<u32>::new()
        );
        assert_eq!(
            a_pairs(&cfg, Policy::TakeIfOnlyOneGood, &s),
            Vec::<u32>::new()
        );
        assert_eq!(
            a_pairs(&cfg, Policy::RemoveMultiples, &s),
            Vec::<u32>::new()
        );
        // c low in energy: the winner (d) is good.
        let mut s2 = s;
        s2[2].e = 50.0;
        assert_eq!(a_pairs(&cfg, Policy::TakeWinnerIfIsGood, &s2), vec![3]);
        assert_eq!(
            a_pairs(&cfg, Policy::TakeWinnerIfAllAreGoods, &s2),
            Vec::<u32>::new()
        );
        // Without d only b is good.
        let s3 = [s[0], s[1], s[2]];
        assert_eq!(a_pairs(&cfg, Policy::TakeIfOnlyOneGood, &s3), vec![1]);
        assert_eq!(a_pairs(&cfg, Policy::TakeWinnerOfGoods, &s3), vec![1]);
        // Every pair good (no cut): winner = highest sum; ties go to the earliest partner.
        cfg.min_transaxial_mm = None;
        assert_eq!(a_pairs(&cfg, Policy::TakeWinnerIfAllAreGoods, &s), vec![2]);
        let mut tie = s;
        tie[3].e = 500.0;
        assert_eq!(a_pairs(&cfg, Policy::TakeWinnerIfIsGood, &tie), vec![2]);
        // Pairs kept from a multiple carry the flag.
        let mut all = cfg.clone();
        all.policy = Policy::TakeAllGoods;
        let p = sort_all(&all, &geo, &s);
        assert!(
            p.iter()
                .filter(|p| p.t1 == 0 && p.ch1 == 0)
                .all(|p| p.flags == coinc_flags::MULTIPLE)
        );
    }

    #[test]
    fn stats_count_outcomes() {
        let geo = ring(8);
        let mut cfg = CoincidenceConfig::prompt(100);
        cfg.energy_window_kev = Some([400.0, 600.0]);
        cfg.policy = Policy::RemoveMultiples;
        let s = [
            single(0, 0, 511.0),
            single(10, 1, 511.0),
            single(20, 2, 511.0),
            single(30, 3, 100.0),   // outside
            single(40, 99, 511.0),  // unmapped
            single(1000, 4, 700.0), // outside
        ];
        let lut = CrystalLut::from_geometry(&geo);
        let cols = Cols::new(&s);
        let mut out = CoincidenceBatch::default();
        let st = sort_coincidences(&cfg, &lut, cols.view(), &mut out).unwrap();
        assert_eq!(st.singles_in, 6);
        assert_eq!(st.outside_energy_window, 2);
        assert_eq!(st.unmapped_channel, 1);
        assert_eq!(st.windows_opened, 3);
        assert_eq!(st.multiples_seen, 1);
        assert_eq!(st.multiples_rejected, 1);
        assert_eq!(st.one_pair_windows, 1);
        assert_eq!(st.pairs_kept, 1);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn module_difference_wraps_around_the_ring() {
        let geo = geometry(&[(0, 0, [0.0; 3]), (1, 3, [0.0; 3]), (2, 2, [0.0; 3])]);
        let mut cfg = CoincidenceConfig::prompt(10);
        cfg.min_module_difference = Some(ModuleDifference {
            min: 2,
            ring_modules: Some(4),
        });
        // Modules 0 and 3 are neighbours on a 4-module ring; 0 and 2 are opposite.
        assert!(sort_all(&cfg, &geo, &[single(0, 0, 1.0), single(1, 1, 1.0)]).is_empty());
        assert_eq!(
            sort_all(&cfg, &geo, &[single(0, 0, 1.0), single(1, 2, 1.0)]).len(),
            1
        );
        cfg.min_module_difference = Some(ModuleDifference {
            min: 2,
            ring_modules: None,
        });
        assert_eq!(
            sort_all(&cfg, &geo, &[single(0, 0, 1.0), single(1, 1, 1.0)]).len(),
            1
        );
    }

    #[test]
    fn axial_and_transaxial_limits_are_closed() {
        let geo = geometry(&[(0, 0, [0.0, 0.0, 0.0]), (1, 1, [30.0, 40.0, 20.0])]);
        let s = [single(0, 0, 1.0), single(1, 1, 1.0)];
        let mut cfg = CoincidenceConfig::prompt(10);
        cfg.min_transaxial_mm = Some(50.0);
        cfg.max_axial_mm = Some(20.0);
        assert_eq!(sort_all(&cfg, &geo, &s).len(), 1);
        cfg.min_transaxial_mm = Some(50.001);
        assert!(sort_all(&cfg, &geo, &s).is_empty());
        cfg.min_transaxial_mm = Some(50.0);
        cfg.max_axial_mm = Some(19.99);
        assert!(sort_all(&cfg, &geo, &s).is_empty());
    }

    #[test]
    fn grouping_examples() {
        let geo = geometry(&[
            (0, 0, [0.0, 0.0, 0.0]),
            (1, 0, [10.0, 0.0, 0.0]),
            (2, 0, [0.0, 20.0, 0.0]),
            (3, 0, [30.0, 0.0, 0.0]),
            (9, 1, [500.0, 0.0, 0.0]),
        ]);
        let lut = CrystalLut::from_geometry(&geo);
        let cfg = GroupingConfig::new(10_000, 25.0);
        let mut hits = vec![
            single(0, 0, 100.0),
            single(2_000, 9, 50.0), // far: its own photon
            single(5_000, 1, 300.0),
            single(10_000, 2, 50.0), // exactly at the window edge: in
            single(10_000, 3, 40.0), // 30 mm from the first hit: own group
            single(10_001, 1, 70.0), // after the first group's window, 20 mm from ch 3: joins it
        ];
        hits[0].flags = 4;
        hits[3].flags = 1;
        let cols = Cols::new(&hits);
        let (p, st) = group_hits(&cfg, &lut, cols.view()).unwrap();
        // Photon 1: hits 0, 2, 3 at the time/channel of the 300 keV hit.
        // Photon 2: the far hit at 2000. Photon 3: hits 4, 5 (70 keV hit wins).
        assert_eq!(p.t_ps, vec![2_000, 5_000, 10_001]);
        assert_eq!(p.channel, vec![9, 1, 1]);
        assert_eq!(p.energy_kev, vec![50.0, 450.0, 110.0]);
        assert_eq!(p.multiplicity, vec![1, 3, 2]);
        assert_eq!(p.flags, vec![0, 5, 0]);
        assert_eq!(st.photons_out, 3);
        assert_eq!(st.multi_hit_photons, 2);
        let want = reference::group(10_000, 25.0, &geo, &hits);
        assert_eq!(want.len(), 3);
        assert_eq!(want[1].e, 450.0);
        // Window 0: only equal times group.
        let zero = GroupingConfig::new(0, 1000.0);
        let (p, _) = group_hits(&zero, &lut, cols.view()).unwrap();
        assert_eq!(p.multiplicity, vec![1, 1, 1, 2, 1]);
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let lut = CrystalLut::default();
        let msg = |c: CoincidenceConfig| CoincidenceSorter::new(c, &lut).unwrap_err().to_string();
        let m = msg(CoincidenceConfig::prompt(0));
        assert!(m.contains("window_ps") && m.contains("> 0"), "{m}");
        let m = msg(CoincidenceConfig::prompt(-5));
        assert!(m.contains("window_ps"), "{m}");
        let mut d = CoincidenceConfig::delayed(4000);
        d.offset_ps = 4000;
        let e = CoincidenceSorter::new(d.clone(), &lut).unwrap_err();
        assert_eq!(
            e,
            CoincidenceError::DelayNotAfterWindow {
                offset_ps: 4000,
                window_ps: 4000
            }
        );
        let m = e.to_string();
        assert!(m.contains("offset_ps") && m.contains("window_ps"), "{m}");
        d.offset_ps = 4001;
        assert!(CoincidenceSorter::new(d, &lut).is_ok());
        let mut p = CoincidenceConfig::prompt(4000);
        p.offset_ps = 10;
        assert!(msg(p).contains("offset_ps"));
        let mut p = CoincidenceConfig::prompt(4000);
        p.energy_window_kev = Some([600.0, 400.0]);
        assert!(msg(p).contains("energy_window_kev"));
        let mut p = CoincidenceConfig::prompt(4000);
        p.min_transaxial_mm = Some(f64::NAN);
        assert!(msg(p).contains("min_transaxial_mm"));
        let mut p = CoincidenceConfig::prompt(4000);
        p.max_axial_mm = Some(-1.0);
        assert!(msg(p).contains("max_axial_mm"));
        let mut p = CoincidenceConfig::delayed(4000);
        p.offset_ps = i64::MAX;
        assert!(msg(p).contains("overflows"));
        let g = GroupingConfig::new(-1, 1.0);
        assert!(
            Grouper::new(g, &lut)
                .unwrap_err()
                .to_string()
                .contains("window_ps")
        );
        let g = GroupingConfig::new(1, f64::INFINITY);
        assert!(
            group_hits(&g, &lut, Cols::new(&[]).view())
                .unwrap_err()
                .to_string()
                .contains("max_distance_mm")
        );
        // Parallel validates too.
        let mut out = CoincidenceBatch::default();
        assert!(
            sort_coincidences_parallel(
                &CoincidenceConfig::prompt(0),
                &lut,
                Cols::new(&[]).view(),
                &mut out
            )
            .is_err()
        );
    }

    #[test]
    fn policy_names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(p.name().parse::<Policy>().unwrap(), p);
        }
        assert!(
            "takeAll"
                .parse::<Policy>()
                .unwrap_err()
                .contains("takeAllGoods")
        );
        assert_eq!(CoincidenceConfig::default().policy, Policy::TakeAllGoods);
        assert_eq!(CoincidenceConfig::default().mode, WindowMode::MultiWindow);
        assert_eq!(CoincidenceConfig::delayed(4000).offset_ps, 100_000);
    }

    #[test]
    fn input_out_of_order_is_an_error_and_leaves_state() {
        let geo = ring(4);
        let lut = CrystalLut::from_geometry(&geo);
        let cfg = CoincidenceConfig::prompt(100);
        let mut s = CoincidenceSorter::new(cfg.clone(), &lut).unwrap();
        let mut out = CoincidenceBatch::default();
        let a = Cols::new(&[single(0, 0, 1.0), single(50, 1, 1.0), single(60, 2, 1.0)]);
        s.push(a.view(), &mut out).unwrap();
        let bad = Cols::new(&[single(59, 3, 1.0)]);
        let e = s.push(bad.view(), &mut out).unwrap_err();
        assert_eq!(
            e,
            CoincidenceError::NotTimeOrdered {
                index: 0,
                previous_ps: 60,
                t_ps: 59
            }
        );
        let bad = Cols::new(&[single(70, 3, 1.0), single(65, 3, 1.0)]);
        assert!(matches!(
            s.push(bad.view(), &mut out),
            Err(CoincidenceError::NotTimeOrdered { index: 1, .. })
        ));
        s.finish(&mut out);
        assert_eq!(pt(&pairs(&out)), vec![(0, 50), (0, 60), (50, 60)]);
        // Parallel reports the same first offending row.
        let mut rows: Vec<Single> = (0..200_000)
            .map(|k| single(k * 1000, (k % 4) as u32, 1.0))
            .collect();
        rows[150_000].t = 0;
        let cols = Cols::new(&rows);
        let mut out = CoincidenceBatch::default();
        assert!(matches!(
            sort_coincidences_sliced(&cfg, &lut, cols.view(), 4, &mut out),
            Err(CoincidenceError::NotTimeOrdered { index: 150_000, .. })
        ));
        // Unequal columns.
        let v = SinglesRef {
            t_ps: &[1, 2],
            channel: &[0],
            energy_kev: &[1.0, 1.0],
            flags: &[0, 0],
        };
        assert!(matches!(
            s.push(v, &mut out),
            Err(CoincidenceError::ColumnLengths { .. })
        ));
    }

    #[test]
    fn streaming_carry_over_is_bounded_and_exact() {
        let geo = ring(64);
        let lut = CrystalLut::from_geometry(&geo);
        // 60k singles, 1 per 100 ps on average, in batches of 1000.
        let mut t = 0i64;
        let mut x = 12345u64;
        let rows: Vec<Single> = (0..60_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mean gap 100 ps, and now and then a pause longer than the prompt span.
                t += (x % 200) as i64 + if x.is_multiple_of(1000) { 10_000 } else { 0 };
                single(t, (x >> 20) as u32 % 64, 300.0 + (x >> 40) as f32 % 400.0)
            })
            .collect();
        let cols = Cols::new(&rows);
        for cfg in [
            CoincidenceConfig::prompt(4000),
            CoincidenceConfig::delayed(4000),
        ] {
            let mut whole = CoincidenceBatch::default();
            sort_coincidences(&cfg, &lut, cols.view(), &mut whole).unwrap();
            let mut s = CoincidenceSorter::new(cfg.clone(), &lut).unwrap();
            let mut out = CoincidenceBatch::default();
            let mut max_pending = 0;
            for start in (0..rows.len()).step_by(1000) {
                s.push(
                    cols.view().slice(start..(start + 1000).min(rows.len())),
                    &mut out,
                )
                .unwrap();
                max_pending = max_pending.max(s.pending());
            }
            s.finish(&mut out);
            assert_eq!(out, whole);
            // offset + window spans ~(offset + window) / 100 singles.
            let bound = (cfg.span_ps() / 100 * 2) as usize + 1000;
            assert!(max_pending < bound, "pending {max_pending} >= {bound}");
            let mut par = CoincidenceBatch::default();
            sort_coincidences_sliced(&cfg, &lut, cols.view(), 7, &mut par).unwrap();
            assert_eq!(par, whole);
            assert!(gap_cuts(&cols.t, cfg.span_ps(), 7).len() > 2 || cfg.delayed);
        }
    }

    #[test]
    fn labeled_grouping_says_which_photon_each_hit_joined() {
        let geo = ring(64);
        let lut = CrystalLut::from_geometry(&geo);
        let mut x = 99u64;
        let mut t = 0i64;
        // 3000 hits, mean gap 40 ps, one in 16 on a channel missing from the geometry.
        let rows: Vec<Single> = (0..3000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                t += (x % 80) as i64;
                let ch = if x.is_multiple_of(16) {
                    5000
                } else {
                    (x >> 8) as u32 % 64
                };
                single(t, ch, 100.0 + (x >> 30) as f32 % 400.0)
            })
            .collect();
        let cols = Cols::new(&rows);
        let cfg = GroupingConfig::new(100, 100.0);
        let want = reference::group(100, 100.0, &geo, &rows);
        let mut plain = Grouper::new(cfg.clone(), &lut).unwrap();
        let mut labeled = Grouper::new(cfg, &lut).unwrap();
        let (mut p_plain, mut p_labeled) = (PhotonBatch::default(), PhotonBatch::default());
        let mut labels = GroupLabels::default();
        for start in (0..rows.len()).step_by(97) {
            let part = cols.view().slice(start..(start + 97).min(rows.len()));
            plain.push(part, &mut p_plain).unwrap();
            labeled
                .push_labeled(part, &mut p_labeled, &mut labels)
                .unwrap();
            // Groups close in id order: every id below groups_closed has its multiplicity.
            assert_eq!(
                labeled.groups_closed(),
                labels.closed_multiplicity.len() as u64
            );
        }
        // Streaming releases photons as their groups close: at most the last window's few
        // photons wait for finish.
        assert!(
            p_labeled.len() + 20 >= want.len(),
            "{} of {} photons released before finish",
            p_labeled.len(),
            want.len()
        );
        plain.finish(&mut p_plain);
        labeled.finish_labeled(&mut p_labeled, &mut labels);
        assert_eq!(p_labeled, p_plain, "labels change no photon");
        // Streamed in batches of 97, the photons are the reference's, in its order.
        let got: Vec<reference::Photon> = (0..p_labeled.len())
            .map(|k| reference::Photon {
                t: p_labeled.t_ps[k],
                ch: p_labeled.channel[k],
                e: p_labeled.energy_kev[k],
                flags: p_labeled.flags[k],
                multiplicity: p_labeled.multiplicity[k],
            })
            .collect();
        assert_eq!(got, want);
        assert!(!p_labeled.is_empty());
        // One label per hit; the unmapped hits are the ungrouped ones.
        assert_eq!(labels.photon_id.len(), rows.len());
        let unmapped = rows.iter().filter(|r| r.ch == 5000).count();
        let ungrouped = labels
            .photon_id
            .iter()
            .filter(|&&id| id == GroupLabels::UNGROUPED)
            .count();
        assert_eq!((ungrouped, unmapped > 100), (unmapped, true));
        // Group k holds exactly closed_multiplicity[k] hits; the multiplicities are the
        // reference's.
        assert_eq!(labels.closed_multiplicity.len(), want.len());
        assert_eq!(labeled.groups_closed(), want.len() as u64);
        let mut members = vec![0u32; want.len()];
        for &id in labels
            .photon_id
            .iter()
            .filter(|&&id| id != GroupLabels::UNGROUPED)
        {
            members[id as usize] += 1;
        }
        assert_eq!(members, labels.closed_multiplicity);
        let mut from_reference: Vec<u32> = want.iter().map(|p| p.multiplicity).collect();
        let mut from_labels = labels.closed_multiplicity.clone();
        from_reference.sort_unstable();
        from_labels.sort_unstable();
        assert_eq!(from_labels, from_reference);
        // The counters.
        let stats = *labeled.stats();
        assert_eq!(stats.hits_in, rows.len() as u64);
        assert_eq!(stats.unmapped_channel, unmapped as u64);
        assert_eq!(stats.photons_out, want.len() as u64);
        let multi = want.iter().filter(|p| p.multiplicity > 1).count() as u64;
        assert_eq!((stats.multi_hit_photons, multi > 10), (multi, true));
        labels.clear();
        assert_eq!(labels, GroupLabels::default());
    }

    #[test]
    fn batch_helpers_and_column_checks() {
        // One column of the wrong length is enough for an error.
        let (t, ch, e, f) = ([1i64, 2], [0u32, 1], [1.0f32, 1.0], [0u16, 0]);
        let ok = SinglesRef {
            t_ps: &t,
            channel: &ch,
            energy_kev: &e,
            flags: &f,
        };
        assert!(ok.check_lengths().is_ok());
        assert!(!ok.is_empty());
        assert!(ok.slice(1..1).is_empty());
        for bad in [
            SinglesRef {
                channel: &ch[..1],
                ..ok
            },
            SinglesRef {
                energy_kev: &e[..1],
                ..ok
            },
            SinglesRef {
                flags: &f[..1],
                ..ok
            },
        ] {
            assert!(matches!(
                bad.check_lengths(),
                Err(CoincidenceError::ColumnLengths { .. })
            ));
        }
        assert!(PhotonBatch::default().is_empty());
        // The first row out of order is named, after equal times (which are in order).
        let (tt, cc, ee, ff) = ([5i64, 5, 3], [0u32, 1, 2], [1.0f32; 3], [0u16; 3]);
        let unordered = SinglesRef {
            t_ps: &tt,
            channel: &cc,
            energy_kev: &ee,
            flags: &ff,
        };
        assert!(matches!(
            sort_coincidences(
                &CoincidenceConfig::prompt(10),
                &CrystalLut::from_geometry(&ring(8)),
                unordered,
                &mut CoincidenceBatch::default()
            ),
            Err(CoincidenceError::NotTimeOrdered {
                index: 2,
                previous_ps: 5,
                t_ps: 3
            })
        ));
        // A channel inside the table's range but without a crystal is unmapped.
        let sparse = geometry(&[(0, 0, [0.0; 3]), (10, 1, [1.0; 3])]);
        let sparse_lut = CrystalLut::from_geometry(&sparse);
        assert_eq!(sparse_lut.crystal(5), None);
        assert!(sparse_lut.crystal(10).is_some());
        assert_eq!(sparse_lut.crystal(11), None);
        let geo = ring(8);
        let lut = CrystalLut::from_geometry(&geo);
        assert_eq!((lut.len(), lut.is_empty()), (8, false));
        let none = CrystalLut::from_geometry(&Geometry::default());
        assert_eq!((none.len(), none.is_empty()), (0, true));
        let cfg = CoincidenceConfig::prompt(1000);
        assert_eq!(
            CoincidenceSorter::new(cfg.clone(), &lut).unwrap().config(),
            &cfg
        );
        let mut pairs = CoincidenceBatch::default();
        sort_coincidences(&cfg, &lut, ok, &mut pairs).unwrap();
        assert!(!pairs.is_empty());
        pairs.clear();
        assert!(pairs.is_empty());
        assert_eq!(pairs, CoincidenceBatch::default());
    }

    #[test]
    fn config_names_delays_and_module_differences() {
        // GATE's policy names (docs/coincidences.md), as displayed and parsed.
        let names = [
            "takeAllGoods",
            "takeWinnerOfGoods",
            "takeWinnerIfIsGood",
            "takeWinnerIfAllAreGoods",
            "takeIfOnlyOneGood",
            "removeMultiples",
        ];
        for (p, name) in Policy::ALL.into_iter().zip(names) {
            assert_eq!(p.to_string(), name);
            assert_eq!(name.parse::<Policy>(), Ok(p));
        }
        // A delayed copy keeps cuts, policy and mode.
        let prompt = CoincidenceConfig {
            energy_window_kev: Some([400.0, 650.0]),
            min_transaxial_mm: Some(50.0),
            policy: Policy::RemoveMultiples,
            mode: WindowMode::SingleWindow,
            ..CoincidenceConfig::prompt(3000)
        };
        let delayed = prompt.to_delayed(50_000);
        assert_eq!(
            delayed,
            CoincidenceConfig {
                offset_ps: 50_000,
                delayed: true,
                ..prompt.clone()
            }
        );
        assert!(delayed.validate().is_ok());
        // Module difference: plain, around a ring of 10, and with no ring size.
        let plain = ModuleDifference {
            min: 1,
            ring_modules: None,
        };
        let around = ModuleDifference {
            min: 1,
            ring_modules: Some(10),
        };
        let zero = ModuleDifference {
            min: 1,
            ring_modules: Some(0),
        };
        assert_eq!(plain.difference(0, 9), 9);
        assert_eq!(around.difference(0, 9), 1);
        assert_eq!(around.difference(2, 7), 5);
        assert_eq!(zero.difference(0, 9), 9, "a ring of 0 modules is no ring");
    }
}

/// Parity with the real GATE 10 sorter's output (not part of the coincidence benchmark).
#[cfg(test)]
#[path = "gate10/mod.rs"]
mod gate10;
