//! Parsing of the `fpga-sim` command line's values (durations, rates, presets) and the
//! one-paragraph console summary; kept in the library so they are unit-tested.

use crate::sim::SimSummary;
pub use scandaq_core::units::{parse_duration_s as parse_duration, parse_rate_hz as parse_rate};

/// Geometry presets the simulator implements.
pub const PRESETS: [&str; 1] = ["bench"];

/// Parses a preset name; the error lists the available presets.
pub fn parse_preset(s: &str) -> Result<String, String> {
    let t = s.trim();
    if PRESETS.contains(&t) {
        Ok(t.to_string())
    } else {
        Err(format!(
            "unknown preset {t:?}; available presets: {}",
            PRESETS.join(", ")
        ))
    }
}

/// One paragraph describing a finished simulation and the files written.
pub fn summary_paragraph(s: &SimSummary, out_dir: &str, files: &[String]) -> String {
    let kinds: Vec<String> = s
        .hits_by_kind
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let rate = if s.simulated_s > 0.0 {
        s.hits_emitted as f64 / s.simulated_s
    } else {
        0.0
    };
    let mut p = format!(
        "fpga-sim preset {} seed {}: simulated {:.6} s of detector time, emitted {} hits ({:.0} Hz; {}) \
         in {} frames (frameID {} .. {}, {} wrap(s)) from {} source decays ({:.3e} Bq total activity). \
         Lost in the simulated front end: {} to dead time, {} to frame overflow ({} frames flagged lost); \
         {} deposits were below the {} keV threshold.",
        s.preset,
        s.seed,
        s.simulated_s,
        s.hits_emitted,
        rate,
        if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join(", ")
        },
        s.frames_emitted,
        s.first_frame_id.map_or("-".into(), |f| f.to_string()),
        s.last_frame_id.map_or("-".into(), |f| f.to_string()),
        s.wraps,
        s.decays,
        s.activity_total_bq,
        s.dead_time_lost,
        s.overflow_lost,
        s.lossy_frames,
        s.below_threshold,
        s.config.threshold_kev,
    );
    for n in &s.notes {
        p.push_str(" Note: ");
        p.push_str(n);
        if !n.ends_with('.') {
            p.push('.');
        }
    }
    p.push_str(&format!(" Wrote {} in {out_dir}.", files.join(", ")));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets() {
        assert_eq!(parse_preset("bench"), Ok("bench".into()));
        let e = parse_preset("ring").unwrap_err();
        assert!(e.contains("available presets: bench"), "{e}");
    }
}
