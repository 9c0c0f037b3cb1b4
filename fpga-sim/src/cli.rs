//! Parsing of the `fpga-sim` command line's values (durations, rates, presets, fault
//! probabilities, packet sizes) and the console summaries; kept in the library so they are
//! unit-tested.

use crate::sim::SimSummary;
use crate::stream::{
    FaultCounts, MAX_MAX_PACKET_BYTES, MIN_MAX_PACKET_BYTES, StreamSummary, Transport,
};
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

/// Parses a fault probability per packet, in [0, 1).
pub fn parse_probability(s: &str) -> Result<f64, String> {
    let t = s.trim();
    match t.parse::<f64>() {
        Ok(p) if (0.0..1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "{t:?} is not a probability per packet in [0, 1) (e.g. 0.01)"
        )),
    }
}

/// Parses a largest packet size in bytes, 32-byte header included.
pub fn parse_packet_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    match t.parse::<usize>() {
        Ok(n) if (MIN_MAX_PACKET_BYTES..=MAX_MAX_PACKET_BYTES).contains(&n) => Ok(n),
        _ => Err(format!(
            "{t:?} is not a packet size in [{MIN_MAX_PACKET_BYTES}, {MAX_MAX_PACKET_BYTES}] bytes \
             (32-byte header included)"
        )),
    }
}

/// One line of fault counts.
pub fn faults_line(f: &FaultCounts) -> String {
    format!(
        "lost {} packets ({} hits), corrupted {} ({} hits), duplicated {}, reordered {}, \
         disconnects {} ({} packets, {} hits cut)",
        f.lost_packets,
        f.lost_hits,
        f.corrupted_packets,
        f.corrupted_hits,
        f.duplicated_packets,
        f.reordered_packets,
        f.disconnects,
        f.disconnect_lost_packets,
        f.disconnect_lost_hits
    )
}

/// What a finished stream sent, at what rate, and the faults injected (total and per board).
pub fn stream_report(s: &StreamSummary, transport: &Transport, target_rate_hz: f64) -> String {
    let mut r = format!(
        "Streamed {} hits in {} packets ({} frames) on {} board(s), {transport}, in {:.3} s wall: \
         {:.3} M hits/s achieved ({:.3} M hits/s asked).",
        s.hits_sent,
        s.packets_sent,
        s.boards.iter().map(|b| b.frames_sent).sum::<u64>(),
        s.boards.len(),
        s.wall_seconds,
        s.achieved_hit_rate() / 1e6,
        target_rate_hz / 1e6,
    );
    r.push_str(&format!("\n  faults: {}", faults_line(&s.faults)));
    if s.boards.len() > 1 {
        for b in &s.boards {
            r.push_str(&format!(
                "\n  board {}: {} hits, {} packets; {}",
                b.source_id,
                b.hits_sent,
                b.packets_sent,
                faults_line(&b.faults)
            ));
        }
    }
    if s.client_disconnects > 0 {
        r.push_str(&format!(
            "\n  warning: the TCP client went away {} time(s) on its own; packets in flight then \
             were lost and are not counted above",
            s.client_disconnects
        ));
    }
    r
}

/// One paragraph describing a finished simulation and the files written (none: no file list).
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
    if !files.is_empty() {
        p.push_str(&format!(" Wrote {} in {out_dir}.", files.join(", ")));
    }
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

    #[test]
    fn probabilities_and_packet_sizes() {
        assert_eq!(parse_probability("0.05"), Ok(0.05));
        assert_eq!(parse_probability(" 0 "), Ok(0.0));
        for bad in ["1", "1.5", "-0.1", "NaN", "five"] {
            let e = parse_probability(bad).unwrap_err();
            assert!(e.contains("[0, 1)"), "{e}");
        }
        assert_eq!(parse_packet_bytes("8192"), Ok(8192));
        assert_eq!(parse_packet_bytes("96"), Ok(96));
        for bad in ["95", "70000", "big"] {
            let e = parse_packet_bytes(bad).unwrap_err();
            assert!(e.contains("[96, 65507]"), "{e}");
        }
    }
}
