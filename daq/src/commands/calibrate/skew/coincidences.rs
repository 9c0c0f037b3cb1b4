//! Collecting the skew fit's coincidences: the calibrated singles of the raw files are paired
//! by the library sorter over (channel, TAC) "crystals", and each coincidence is stored as its
//! two unknowns and its measured-minus-geometric time of flight.

use super::super::{StreamCounts, for_each_calibrated_batch};
use super::least_squares::Event;
use super::{C_MM_PER_PS, SkewOptions};
use anyhow::Result;
use scandaq_core::coincidence::{
    CoincidenceBatch, CoincidenceConfig, CoincidenceSorter, CrystalLut, Policy, SinglesRef,
};
use scandaq_core::{Calibration, Crystal, Geometry, HitBatch};
use std::collections::HashMap;

/// The unknowns of the fit: unknown u = 4 * (dense channel index) + tac, each a "crystal" at
/// its channel's position.
pub(super) struct TacUnknowns {
    /// The channels of the map, in map order (dense index = position here).
    pub(super) channels: Vec<u32>,
    /// Channel -> dense index.
    dense: HashMap<u32, u32>,
    /// The sorter's view: one crystal per (channel, TAC).
    lut: CrystalLut,
    /// Geometric time of flight from the source to each unknown's crystal, ps.
    geo_ps: Vec<f64>,
}

impl TacUnknowns {
    /// The unknowns of `geometry` for a source at `source_mm`.
    pub(super) fn new(geometry: &Geometry, source_mm: [f64; 3]) -> Self {
        let channels: Vec<u32> = geometry.crystals.keys().copied().collect();
        let n = 4 * channels.len();
        let mut dense = HashMap::new();
        let mut tac_geometry = Geometry::default();
        let mut pos = Vec::with_capacity(n);
        for (i, (&ch, c)) in geometry.crystals.iter().enumerate() {
            dense.insert(ch, i as u32);
            for tac in 0..4u32 {
                tac_geometry
                    .crystals
                    .insert(4 * i as u32 + tac, Crystal { ..*c });
                pos.push(c.pos_mm);
            }
        }
        let s = source_mm;
        let dist = |p: [f32; 3]| {
            let d = [
                f64::from(p[0]) - s[0],
                f64::from(p[1]) - s[1],
                f64::from(p[2]) - s[2],
            ];
            (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
        };
        Self {
            channels,
            dense,
            lut: CrystalLut::from_geometry(&tac_geometry),
            geo_ps: pos.iter().map(|&p| dist(p) / C_MM_PER_PS).collect(),
        }
    }

    /// Number of unknowns.
    pub(super) fn len(&self) -> usize {
        4 * self.channels.len()
    }
}

/// The coincidences of the raw files and what was left out.
pub(super) struct Collected {
    pub(super) events: Vec<Event>,
    /// Coincidences beyond `--max-coincidences`, not stored.
    pub(super) dropped_cap: u64,
    /// Hits on channels missing from the channel map.
    pub(super) unmapped_hits: u64,
    /// What was streamed from the raw files.
    pub(super) counts: StreamCounts,
}

/// Streams the raw files through the calibration `cal` and collects their coincidences (the
/// sorter is started again for each file: files are separate acquisitions).
pub(super) fn collect_coincidences(
    opts: &SkewOptions,
    unknowns: &TacUnknowns,
    cal: &Calibration,
) -> Result<Collected> {
    let config = CoincidenceConfig {
        energy_window_kev: Some(opts.energy_window_kev),
        policy: Policy::RemoveMultiples,
        ..CoincidenceConfig::prompt(opts.window_ps)
    };
    let mut collector = Collector::new(unknowns, config, opts.max_coincidences)?;
    let counts =
        for_each_calibrated_batch(&opts.files, cal, |file, batch| collector.push(file, batch))?;
    collector.finish_file();
    Ok(Collected {
        events: collector.events,
        dropped_cap: collector.dropped_cap,
        unmapped_hits: collector.unmapped_hits,
        counts,
    })
}

/// The sorter of the file being read and the coincidences stored so far.
struct Collector<'a> {
    unknowns: &'a TacUnknowns,
    config: CoincidenceConfig,
    max_coincidences: usize,
    sorter: CoincidenceSorter<'a>,
    /// Index of the file the sorter is reading.
    file_now: usize,
    coinc: CoincidenceBatch,
    /// The mapped singles of the current batch, (channel, TAC) unknowns as channels.
    t_ps: Vec<i64>,
    unknown: Vec<u32>,
    energy_kev: Vec<f32>,
    flags: Vec<u16>,
    events: Vec<Event>,
    dropped_cap: u64,
    unmapped_hits: u64,
}

impl<'a> Collector<'a> {
    fn new(
        unknowns: &'a TacUnknowns,
        config: CoincidenceConfig,
        max_coincidences: usize,
    ) -> Result<Self> {
        Ok(Self {
            unknowns,
            sorter: CoincidenceSorter::new(config.clone(), &unknowns.lut)?,
            config,
            max_coincidences,
            file_now: 0,
            coinc: CoincidenceBatch::default(),
            t_ps: vec![],
            unknown: vec![],
            energy_kev: vec![],
            flags: vec![],
            events: Vec::new(),
            dropped_cap: 0,
            unmapped_hits: 0,
        })
    }

    /// Sorts one batch of calibrated singles of file `file`.
    fn push(&mut self, file: usize, batch: &HitBatch) -> Result<()> {
        if file != self.file_now {
            self.finish_file();
            self.sorter = CoincidenceSorter::new(self.config.clone(), &self.unknowns.lut)?;
            self.file_now = file;
        }
        self.map_singles(batch);
        let singles = SinglesRef {
            t_ps: &self.t_ps,
            channel: &self.unknown,
            energy_kev: &self.energy_kev,
            flags: &self.flags,
        };
        self.sorter.push(singles, &mut self.coinc)?;
        self.store_coincidences();
        Ok(())
    }

    /// Flushes the sorter at the end of a file.
    fn finish_file(&mut self) {
        self.sorter.finish(&mut self.coinc);
        self.store_coincidences();
    }

    /// The singles of `batch` on mapped channels, their channel replaced by their unknown.
    fn map_singles(&mut self, batch: &HitBatch) {
        self.t_ps.clear();
        self.unknown.clear();
        self.energy_kev.clear();
        self.flags.clear();
        for i in 0..batch.len() {
            match self.unknowns.dense.get(&batch.channel[i]) {
                Some(&d) => {
                    self.t_ps.push(batch.t_ps[i]);
                    self.unknown.push(4 * d + u32::from(batch.tac[i] & 3));
                    self.energy_kev.push(batch.energy_kev[i]);
                    self.flags.push(batch.flags[i]);
                }
                None => self.unmapped_hits += 1,
            }
        }
    }

    /// Stores the sorter's coincidences (up to `max_coincidences`) and empties its batch.
    fn store_coincidences(&mut self) {
        let geo_ps = &self.unknowns.geo_ps;
        let coinc = &mut self.coinc;
        for i in 0..coinc.len() {
            if self.events.len() >= self.max_coincidences {
                self.dropped_cap += 1;
                continue;
            }
            let (a, b) = (coinc.channel1[i], coinc.channel2[i]);
            let y = coinc.tof_ps[i] as f64 - (geo_ps[a as usize] - geo_ps[b as usize]);
            self.events.push(Event { a, b, y: y as f32 });
        }
        coinc.clear();
    }
}
