//! The recording's events from the run's `triggers` table: one event per rising edge, its
//! onset and sample counted from FIF sample 0 (the export's first sample), its duration up to
//! the falling edge of the same bit, `trial_type` `bitB` and `value` `2^B` (the trigger
//! channel's value while the pulse lasts); written as `events.tsv` and described by
//! `events.json`.

use crate::commands::fif;
use anyhow::{Result, bail};
use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt8Type};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// One event (a rising trigger edge).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Event {
    /// Stream sample index of the rising edge.
    pub(super) sample: i64,
    /// Trigger bit.
    pub(super) bit: u8,
    /// Samples until the falling edge of the same bit (None: still high at the end).
    pub(super) duration_samples: Option<i64>,
}

/// The rising edges of `triggers-sourceN.parquet`, paired with their falling edges, in
/// sample order.
pub(super) fn read_events(run_dir: &Path, stream: u32) -> Result<Vec<Event>> {
    use scandaq_sinks::meg_tables::{TRIGGERS_TABLE, file_name};
    let path = run_dir.join(file_name(TRIGGERS_TABLE, stream));
    if !path.is_file() {
        bail!(
            "{} is missing: the run has no trigger table, so events.tsv cannot be written \
             (a complete MEG run always has one; was the run interrupted? `scandaq recover` \
             salvages its tables)",
            path.display()
        );
    }
    let file = path.display().to_string();
    let mut events: Vec<Event> = Vec::new();
    // Per bit: index in `events` of the rising edge waiting for its fall.
    let mut open: BTreeMap<u8, usize> = BTreeMap::new();
    for b in fif::batches(&path, Some(&["sample", "bit", "rising"]))? {
        let b = b?;
        let col = |name: &str| {
            b.column_by_name(name)
                .ok_or_else(|| anyhow::anyhow!("{file} has no column {name}"))
        };
        let sample = col("sample")?.as_primitive::<Int64Type>();
        let bit = col("bit")?.as_primitive::<UInt8Type>();
        let rising = col("rising")?.as_boolean();
        for i in 0..b.num_rows() {
            let (s, bit) = (sample.value(i), bit.value(i));
            if rising.is_valid(i) && rising.value(i) {
                open.insert(bit, events.len());
                events.push(Event {
                    sample: s,
                    bit,
                    duration_samples: None,
                });
            } else if let Some(k) = open.remove(&bit) {
                events[k].duration_samples = Some(s - events[k].sample);
            }
        }
    }
    events.sort_by_key(|e| (e.sample, e.bit));
    Ok(events)
}

/// `events.tsv`: onset and duration (s), trial_type, value, sample (from FIF sample 0,
/// `first_sample` of the stream, at `sfreq`).
pub(super) fn events_tsv(events: &[Event], first_sample: i64, sfreq: f64) -> String {
    let mut t = String::from("onset\tduration\ttrial_type\tvalue\tsample\n");
    for e in events {
        let rel = e.sample - first_sample;
        let duration = e
            .duration_samples
            .map_or("n/a".to_string(), |d| format!("{:.6}", d as f64 / sfreq));
        let _ = writeln!(
            t,
            "{:.6}\t{duration}\tbit{}\t{}\t{rel}",
            rel as f64 / sfreq,
            e.bit,
            1u64 << e.bit.min(63)
        );
    }
    t
}

/// `events.json`: what each column holds.
pub(super) fn events_json(events: &[Event], stream: u32) -> Value {
    let levels: BTreeMap<String, String> = events
        .iter()
        .map(|e| {
            (
                format!("bit{}", e.bit),
                format!("a pulse on trigger bit {} (rising edge)", e.bit),
            )
        })
        .collect();
    json!({
        "onset": {
            "Description": "Time of the rising trigger edge from the first sample of the data file.",
            "Units": "s"
        },
        "duration": {
            "Description": "Time from the rising to the falling edge of the same bit (n/a: still high when the recording ended).",
            "Units": "s"
        },
        "trial_type": {
            "Description": "The trigger bit that rose.",
            "Levels": levels
        },
        "value": {
            "Description": "Value of the trigger channel while the pulse lasts: 2 to the power of the bit."
        },
        "sample": {
            "Description": format!(
                "Sample of the rising edge, counted from the first sample of the data file \
                 (0-based); scandaq's triggers table (stream {stream}) gives it on the stream's \
                 sample index, from which the data file's first sample is subtracted."
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_rising_edges_timed_from_the_first_sample() {
        let ev = [
            Event {
                sample: 110,
                bit: 0,
                duration_samples: Some(24),
            },
            Event {
                sample: 1000,
                bit: 1,
                duration_samples: None,
            },
        ];
        let t = events_tsv(&ev, 100, 1000.0);
        assert_eq!(
            t,
            "onset\tduration\ttrial_type\tvalue\tsample\n\
             0.010000\t0.024000\tbit0\t1\t10\n\
             0.900000\tn/a\tbit1\t2\t900\n"
        );
    }
}
