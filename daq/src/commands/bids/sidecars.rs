//! The text of the recording's sidecars: `channels.tsv` (type and unit from the channel
//! table, status from the dashboard's channel health over the run), `meg.json` (the FIF
//! export's rate, duration and channel counts, the mains frequency the dashboard found, the
//! delay alignment as the software filter), `coordsystem.json` (the channel table's frame,
//! said as it is), and the dataset's `dataset_description.json`, `participants.json` and
//! README. Every value's origin is in docs/bids.md.

use crate::commands::fif::{Channel, FifExport};
use crate::commands::report::StreamHealth;
use scandaq_core::snapshot::ChannelHealth;
use serde_json::{Value, json};
use std::fmt::Write;

/// The BIDS version the dataset follows.
pub(super) const BIDS_VERSION: &str = "1.10.0";

/// BIDS channel type and unit of a channel-table row.
fn bids_type(c: &Channel) -> (&'static str, String) {
    let unit = |fallback: &str| {
        if c.unit.is_empty() {
            fallback.to_string()
        } else {
            c.unit.clone()
        }
    };
    match c.kind.as_str() {
        "meg_mag" => ("MEGMAG", unit("T")),
        // An OPM gradiometer is neither axial nor planar in BIDS's SQUID vocabulary.
        "meg_grad" => ("MEGOTHER", unit("T/m")),
        "trigger" => ("TRIG", "n/a".into()),
        _ => ("MISC", unit("n/a")),
    }
}

/// Status and its description of channel `name` from the health over the run: `bad` for a
/// channel that was flat, saturated or noisy in most 1 s windows, `good` for ok, `n/a` for
/// a channel the dashboard does not analyse (trigger, misc) or a run shorter than a window.
fn status(name: &str, health: &StreamHealth) -> (&'static str, String) {
    let Some(i) = health.names.iter().position(|n| n == name) else {
        return ("n/a", "not analysed (not a MEG channel)".into());
    };
    let (Some(h), Some(w)) = (health.health.get(i), health.windows.get(i)) else {
        return ("n/a", "not analysed".into());
    };
    let total: u64 = w.iter().sum();
    if total == 0 {
        return (
            "n/a",
            "not analysed: the run is shorter than one 1 s window".into(),
        );
    }
    let text = format!(
        "{} in most 1 s windows (ok/flat/saturated/noisy: {}/{}/{}/{}; scandaq channel health)",
        h.name(),
        w[0],
        w[1],
        w[2],
        w[3]
    );
    (
        if *h == ChannelHealth::Ok {
            "good"
        } else {
            "bad"
        },
        text,
    )
}

/// `channels.tsv`, one row per FIF channel in file order.
pub(super) fn channels_tsv(channels: &[Channel], sfreq: f64, health: &StreamHealth) -> String {
    let mut t = String::from(
        "name\ttype\tunits\tdescription\tsampling_frequency\tstatus\tstatus_description\n",
    );
    for c in channels {
        let (typ, unit) = bids_type(c);
        let description = match c.kind.as_str() {
            "meg_mag" => "OPM magnetometer axis",
            "meg_grad" => "OPM gradiometer",
            "trigger" => "trigger bitmask (events.tsv value = 2^bit)",
            _ => "auxiliary input",
        };
        let (status, why) = status(&c.name, health);
        let _ = writeln!(
            t,
            "{}\t{typ}\t{unit}\t{description}\t{sfreq}\t{status}\t{why}",
            c.name
        );
    }
    t
}

/// What `meg.json` says beyond the export itself.
pub(super) struct MegSidecar<'a> {
    pub(super) task: &'a str,
    /// The mains frequency (`--line-freq`, else the dashboard's finding), Hz.
    pub(super) line_freq_hz: Option<f64>,
    pub(super) manufacturer: Option<&'a str>,
    /// The scandaq version that recorded the run (the manifest's).
    pub(super) recorded_by: Option<&'a str>,
}

/// `meg.json`: the required keys and the recommended ones scandaq knows.
pub(super) fn meg_json(s: &MegSidecar, e: &FifExport, channels: &[Channel]) -> Value {
    let count = |kinds: &[&str]| {
        channels
            .iter()
            .filter(|c| kinds.contains(&c.kind.as_str()))
            .count()
    };
    let filters = if e.aligned {
        json!({"DelayAlignment": {
            "Description": "Each MEG channel shifted by its group delay (meg_channels.delay_ps) so all channels refer to the same instants: fractional-delay Kaiser-windowed sinc interpolation, 32 taps, beta 8 (docs/meg.md, FIF export). The trigger channel is not shifted.",
            "MaxShiftSamples": e.max_shift_samples
        }})
    } else {
        json!("n/a")
    };
    let mut v = json!({
        "TaskName": s.task,
        "SamplingFrequency": e.sfreq,
        "PowerLineFrequency": s.line_freq_hz.map_or(json!("n/a"), |f| json!(f)),
        "DewarPosition": "n/a",
        "SoftwareFilters": filters,
        "DigitizedLandmarks": false,
        "DigitizedHeadPoints": false,
        "MEGChannelCount": count(&["meg_mag", "meg_grad"]),
        "MEGREFChannelCount": 0,
        "EEGChannelCount": 0,
        "ECOGChannelCount": 0,
        "SEEGChannelCount": 0,
        "EOGChannelCount": 0,
        "ECGChannelCount": 0,
        "EMGChannelCount": 0,
        "TriggerChannelCount": count(&["trigger"]),
        "MiscChannelCount": count(&["misc"]),
        "RecordingDuration": e.samples as f64 / e.sfreq,
        "RecordingType": "continuous",
        "ContinuousHeadLocalization": false,
        "HardwareFilters": "n/a",
        "Manufacturer": s.manufacturer.unwrap_or("n/a"),
    });
    if let Some(version) = s.recorded_by {
        v["SoftwareVersions"] = json!(format!("scandaq {version}"));
    }
    v
}

/// `coordsystem.json`: the channel table's positions are copied into the FIF as they are, in
/// a frame scandaq does not know (the simulator's: a 0.1 m sphere about the origin, z up),
/// not registered to the head.
pub(super) fn coordsystem_json() -> Value {
    json!({
        "MEGCoordinateSystem": "Other",
        "MEGCoordinateUnits": "m",
        "MEGCoordinateSystemDescription": "The frame of the run's channel table ([meg] channel_table: x_m, y_m, z_m and the sensitive axis ox, oy, oz), copied as given into the FIF channel positions (MNE's device frame). scandaq does not know how that frame sits on the head: no head coils or landmarks were digitised, so nothing registers it to the head or an MRI. For fpga-sim's OPM preset the sensors lie on the upper hemisphere of a 0.1 m sphere centred on the origin, z pointing up; a lab's table gives its own helmet or cap frame."
    })
}

/// `dataset_description.json` of a new dataset.
pub(super) fn dataset_description(name: &str) -> Value {
    json!({
        "Name": name,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "GeneratedBy": [{
            "Name": "scandaq",
            "Version": env!("CARGO_PKG_VERSION"),
            "Description": "scandaq export bids: OPM-MEG runs as BIDS MEG recordings (FIF data, sidecars from the run's tables)"
        }]
    })
}

/// `participants.json`.
pub(super) fn participants_json() -> Value {
    json!({"participant_id": {"Description": "Participant label, as given to scandaq export bids --subject"}})
}

/// The README of a new dataset.
pub(super) fn readme(name: &str) -> String {
    format!(
        "# {name}\n\nOPM-MEG recordings written by scandaq {} (`scandaq export bids`), one per \
         acquisition run. Each recording's data file is scandaq's raw FIF export of the run's \
         MEG stream; channels.tsv gives each channel's status from scandaq's channel health \
         over the run, events.tsv the run's trigger edges. See scandaq's docs/bids.md for \
         where every value comes from.\n",
        env!("CARGO_PKG_VERSION")
    )
}
