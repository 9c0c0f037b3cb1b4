//! Parsing of the `fpga-sim` command line's values (durations, rates, presets, fault
//! probabilities, packet sizes) and the console summaries; kept in the library so they are
//! unit-tested.

use crate::ring::{RingSummary, Source};
use crate::sim::SimSummary;
use crate::stream::{
    FaultCounts, MAX_MAX_PACKET_BYTES, MIN_MAX_PACKET_BYTES, StreamSummary, Transport,
};
pub use scandaq_core::units::{parse_duration_s as parse_duration, parse_rate_hz as parse_rate};

/// Geometry presets the simulator implements.
pub const PRESETS: [&str; 4] = ["bench", "ring", "opm", "us"];

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

/// Parses an activity: `50M`, `5e7`, `50MBq`, `2.5 MBq` (becquerel).
pub fn parse_activity(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let core = t.strip_suffix("Bq").unwrap_or(t).trim_end();
    match parse_rate(core) {
        Ok(v) if v > 0.0 => Ok(v),
        _ => Err(format!(
            "invalid activity {t:?}: give becquerel like 50M, 5e7 or 50MBq"
        )),
    }
}

fn parse_point(s: &str) -> Result<[f64; 3], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{s:?} is not a point X,Y,Z in mm"))?;
    match v[..] {
        [x, y, z] if v.iter().all(|c| c.is_finite()) => Ok([x, y, z]),
        _ => Err(format!("{s:?} is not a point X,Y,Z in mm")),
    }
}

/// One `--source` value: `point:X,Y,Z`, `line:X,Y,Z:X,Y,Z` or `cylinder:R,L[:X,Y,Z]`
/// (mm; a cylinder's axis is parallel to z, centred at the origin unless given).
pub fn parse_source(s: &str) -> Result<Source, String> {
    let t = s.trim();
    let parts: Vec<&str> = t.split(':').collect();
    let usage = "expected point:X,Y,Z, line:X,Y,Z:X,Y,Z or cylinder:R,L[:X,Y,Z] (mm)";
    match parts[..] {
        ["point", p] => Ok(Source::Points {
            positions_mm: vec![parse_point(p)?],
        }),
        ["line", a, b] => Ok(Source::Line {
            from_mm: parse_point(a)?,
            to_mm: parse_point(b)?,
        }),
        ["cylinder", rl] | ["cylinder", rl, _] => {
            let v: Vec<f64> = rl
                .split(',')
                .map(|x| x.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("invalid source {t:?}: {usage}"))?;
            let [radius_mm, length_mm] = v[..] else {
                return Err(format!("invalid source {t:?}: {usage}"));
            };
            let centre_mm = match parts.get(2) {
                Some(c) => parse_point(c)?,
                None => [0.0; 3],
            };
            Ok(Source::Cylinder {
                centre_mm,
                radius_mm,
                length_mm,
            })
        }
        _ => Err(format!("invalid source {t:?}: {usage}")),
    }
}

/// Merges several `--source` values: all points become one multi-point source; a line or
/// cylinder must be the only source.
pub fn merge_sources(sources: &[Source]) -> Result<Source, String> {
    match sources {
        [] => Ok(Source::default()),
        [one] => Ok(one.clone()),
        many => {
            let mut positions_mm = Vec::new();
            for s in many {
                match s {
                    Source::Points { positions_mm: p } => positions_mm.extend_from_slice(p),
                    _ => {
                        return Err(
                            "several --source values must all be points (a line or cylinder source must be the only one)"
                                .to_string(),
                        );
                    }
                }
            }
            Ok(Source::Points { positions_mm })
        }
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

/// One paragraph describing a finished ring simulation and the files written.
pub fn ring_summary_paragraph(s: &RingSummary, out_dir: &str, files: &[String]) -> String {
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
        "fpga-sim preset ring seed {}: {} modules ({} channels) at {} mm; simulated {:.6} s, emitted {} hits ({:.0} Hz; {}) in {} frames (frameID {} .. {}, {} wrap(s)) from {} decays ({:.3e} Bq total activity, axial acceptance |cos| <= {:.3}). Photons: {} reached the ring, {} detected, {} emitted, {} scattered in the object. True pairs emitted {}, {} within {} ps ({} with object scatter); randoms estimate {:.0} Hz. Lost: {} to dead time, {} to frame overflow ({} frames flagged lost); {} deposits below the {} keV threshold.",
        s.seed,
        s.config.modules,
        s.config.modules * 64,
        s.config.ring_radius_mm,
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
        s.axial_acceptance_cos,
        s.photons_reaching_ring,
        s.photons_detected,
        s.photons_emitted,
        s.photons_object_scattered,
        s.true_pairs_emitted,
        s.true_coincidences_in_window,
        s.coincidence_window_ps,
        s.scattered_coincidences_in_window,
        s.randoms_rate_estimate_hz,
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
        assert_eq!(parse_preset("ring"), Ok("ring".into()));
        let e = parse_preset("cube").unwrap_err();
        assert!(e.contains("available presets: bench, ring"), "{e}");
    }

    #[test]
    fn sources_and_activity() {
        assert_eq!(
            parse_source("point:1,2,-3"),
            Ok(Source::Points {
                positions_mm: vec![[1.0, 2.0, -3.0]]
            })
        );
        assert_eq!(
            parse_source("line:0,0,-10:0,0,10"),
            Ok(Source::Line {
                from_mm: [0.0, 0.0, -10.0],
                to_mm: [0.0, 0.0, 10.0]
            })
        );
        assert_eq!(
            parse_source("cylinder:50,20"),
            Ok(Source::Cylinder {
                centre_mm: [0.0; 3],
                radius_mm: 50.0,
                length_mm: 20.0
            })
        );
        assert!(matches!(
            parse_source("cylinder:50,20:10,0,0"),
            Ok(Source::Cylinder {
                centre_mm: [10.0, 0.0, 0.0],
                ..
            })
        ));
        for bad in [
            "point:1,2",
            "sphere:1",
            "line:0,0,0",
            "cylinder:5",
            "point:a,b,c",
        ] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
        let m = merge_sources(&[
            parse_source("point:0,0,0").unwrap(),
            parse_source("point:100,0,0").unwrap(),
        ])
        .unwrap();
        assert_eq!(
            m,
            Source::Points {
                positions_mm: vec![[0.0; 3], [100.0, 0.0, 0.0]]
            }
        );
        assert!(
            merge_sources(&[
                parse_source("point:0,0,0").unwrap(),
                parse_source("cylinder:5,5").unwrap()
            ])
            .is_err()
        );
        assert_eq!(parse_activity("50MBq"), Ok(50e6));
        assert_eq!(parse_activity("5e7"), Ok(5e7));
        assert!(parse_activity("lots").is_err());
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
