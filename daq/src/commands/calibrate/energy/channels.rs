//! The ToT spectra of the raw files, per (channel, TAC), and what each channel's spectra show:
//! its 511 keV (and second-line) photopeaks on the sum of its TACs aligned on their own peaks.

use super::super::{StreamCounts, for_each_calibrated_batch};
use super::peaks::{Peak, add_shifted, find_lines, refine, smooth};
use super::{BIN_NS, BINS, EnergyOptions};
use anyhow::Result;
use rayon::prelude::*;
use scandaq_core::Calibration;
use std::collections::HashMap;

/// ToT spectra (counts per bin) per channel, one per TAC.
pub(super) type TotSpectra = HashMap<u32, [Vec<u32>; 4]>;

/// Streams the raw files through `cal` (TDC only: the singles carry their ToT, ns) and fills
/// the ToT spectra.
pub(super) fn fill_tot_spectra(
    opts: &EnergyOptions,
    cal: &Calibration,
) -> Result<(TotSpectra, StreamCounts)> {
    let mut hists: TotSpectra = HashMap::new();
    let counts = for_each_calibrated_batch(&opts.files, cal, |_, b| {
        for i in 0..b.len() {
            let tot = f64::from(b.energy_kev[i]);
            let bin = (tot / BIN_NS).floor();
            if bin >= 0.0 && (bin as usize) < BINS {
                let h = hists
                    .entry(b.channel[i])
                    .or_insert_with(|| std::array::from_fn(|_| vec![0u32; BINS]));
                h[usize::from(b.tac[i] & 3)][bin as usize] += 1;
            }
        }
        Ok(())
    })?;
    Ok((hists, counts))
}

/// Analyses every channel's spectra (in parallel), in channel order.
pub(super) fn analyse_channels(hists: &TotSpectra, opts: &EnergyOptions) -> Vec<ChannelResult> {
    let min_bin = (opts.min_tot_ns / BIN_NS) as usize;
    let mut channels: Vec<u32> = hists.keys().copied().collect();
    channels.sort_unstable();
    channels
        .par_iter()
        .map(|ch| analyse_channel(*ch, &hists[ch], min_bin, opts.second_line_kev))
        .collect()
}

/// What the fit found for one channel.
#[derive(Clone, Debug)]
pub(super) struct ChannelResult {
    pub(super) channel: u32,
    pub(super) hits: u64,
    /// Per TAC: 511 keV peak ToT (ns), if found.
    pub(super) tac_peaks: [Option<f64>; 4],
    pub(super) peak_511: Option<Peak>,
    pub(super) peak_2: Option<Peak>,
}

/// Finds the lines of one channel: on the sum of its TACs, then each TAC's 511 keV peak near
/// it, then the lines again on the TACs aligned on those peaks.
fn analyse_channel(
    channel: u32,
    tacs: &[Vec<u32>; 4],
    min_bin: usize,
    second_kev: f64,
) -> ChannelResult {
    let hits: u64 = tacs.iter().flatten().map(|&c| u64::from(c)).sum();
    let mut sum = vec![0.0; BINS];
    for t in tacs {
        add_shifted(&mut sum, t, 0.0);
    }
    let (p511, _) = find_lines(&sum, min_bin, second_kev);
    let mut tac_peaks = [None; 4];
    if let Some(p) = p511 {
        let guess = (p.tot_ns / BIN_NS) as usize;
        for (k, t) in tacs.iter().enumerate() {
            let h: Vec<f64> = t.iter().map(|&c| f64::from(c)).collect();
            if h.iter().sum::<f64>() < 50.0 {
                continue;
            }
            let s = smooth(&h, 1.0 / BIN_NS);
            tac_peaks[k] = refine(&h, &s, guess, (8.0 / BIN_NS) as usize).map(|p| p.tot_ns);
        }
    }
    let found: Vec<f64> = tac_peaks.iter().flatten().copied().collect();
    let mean = if found.is_empty() {
        0.0
    } else {
        found.iter().sum::<f64>() / found.len() as f64
    };
    let mut aligned = vec![0.0; BINS];
    for (k, t) in tacs.iter().enumerate() {
        add_shifted(&mut aligned, t, tac_peaks[k].map_or(0.0, |p| mean - p));
    }
    let (peak_511, peak_2) = find_lines(&aligned, min_bin, second_kev);
    ChannelResult {
        channel,
        hits,
        tac_peaks,
        peak_511,
        peak_2,
    }
}
