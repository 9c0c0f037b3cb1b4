//! The run-level manifest `OUT/run=R/manifest.json`: every builder's manifest and every
//! acquisition node's report merged: coincidences per builder and in total, losses summed by
//! name, and the missing slices with their time ranges, whoever noticed them (a sender that
//! could not deliver, a builder whose source died, or a builder that left no manifest at all:
//! then every slice it owned within the run's range).

use crate::acquire::cluster::acquisition::{AcquisitionReport, report_path};
use crate::acquire::cluster::config::{Cluster, Role};
use crate::process::cluster::builder_out::{
    BUILDER_MANIFEST, BuilderManifest, MissingSlice, builder_dir,
};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The run-level manifest's file name.
pub const RUN_MANIFEST: &str = "manifest.json";

/// One builder in the run manifest.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BuilderSummary {
    /// Its manifest was found and says complete.
    pub complete: bool,
    /// Its manifest was found.
    pub reported: bool,
    /// Prompt pairs in its committed tables.
    pub prompts: u64,
    /// Delayed pairs.
    pub delayed: u64,
    /// Slices written.
    pub slices_written: u64,
}

/// `OUT/run=R/manifest.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunManifest {
    /// Run number.
    pub run: u64,
    /// Slice length, ps.
    pub slice_ps: i64,
    /// Every node reported and every builder committed without a missing slice.
    pub complete: bool,
    /// Prompt pairs over all builders.
    pub prompts: u64,
    /// Delayed pairs over all builders.
    pub delayed: u64,
    /// By builder name.
    pub builders: BTreeMap<String, BuilderSummary>,
    /// Acquisition nodes' final states by name (`stopped`, `failed`; without a report: how the
    /// builders saw it, `never_connected` or `lost`, else `no_report`).
    pub acquisition: BTreeMap<String, String>,
    /// Every node's losses summed by name.
    pub losses: BTreeMap<String, u64>,
    /// Missing slices, one entry per slice (reasons of every node that noticed it joined).
    pub missing_slices: Vec<MissingSlice>,
}

/// Merges what the nodes of `cluster` left for run `run` and writes the run manifest.
pub fn merge_run(cluster: &Cluster, run: u64) -> Result<(PathBuf, RunManifest)> {
    let mut m = RunManifest {
        run,
        slice_ps: cluster.spec.slice_ps,
        complete: true,
        ..RunManifest::default()
    };
    let mut missing: BTreeMap<i64, MissingSlice> = BTreeMap::new();
    let mut range: Option<(i64, i64)> = None;
    let mut builder_views: BTreeMap<String, String> = BTreeMap::new();
    for (node, _) in cluster.nodes_of(Role::Acquisition) {
        let path = report_path(&cluster.out, run, &node.name);
        let Some(report) = read_json::<AcquisitionReport>(&path)? else {
            m.acquisition.insert(node.name.clone(), "no_report".into());
            m.complete = false;
            continue;
        };
        m.acquisition
            .insert(node.name.clone(), report.state.clone());
        add_losses(&mut m.losses, &report.losses);
        report
            .missing_slices
            .into_iter()
            .for_each(|s| join(&mut missing, s));
        if let Some((a, b)) = report.slice_range {
            range = Some(range.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
        }
    }
    for (b, (node, _)) in cluster.nodes_of(Role::Builder).into_iter().enumerate() {
        let path = builder_dir(&cluster.out, run, &node.name).join(BUILDER_MANIFEST);
        let Some(bm) = read_json::<BuilderManifest>(&path)? else {
            m.builders
                .insert(node.name.clone(), BuilderSummary::default());
            m.complete = false;
            // Nothing of it is committed: every slice it owned is missing.
            builder_lost(
                cluster,
                (b as u32, &node.name),
                range,
                |_| false,
                &mut missing,
            );
            continue;
        };
        let count = |k: &str| bm.counts.get(k).copied().unwrap_or(0);
        m.builders.insert(
            node.name.clone(),
            BuilderSummary {
                complete: bm.complete,
                reported: true,
                prompts: count("prompts"),
                delayed: count("delayed"),
                slices_written: count("slices_written"),
            },
        );
        m.prompts += count("prompts");
        m.delayed += count("delayed");
        // A life that died took its slices with it: every slice of the run's range no
        // committed life covers is missing.
        builder_lost(
            cluster,
            (b as u32, &node.name),
            range,
            |k| bm.covers(k),
            &mut missing,
        );
        m.complete &= bm.complete;
        add_losses(&mut m.losses, &bm.losses);
        for (source, how) in &bm.sources {
            if how != "end_of_stream" {
                builder_views.insert(source.clone(), how.clone());
            }
        }
        bm.missing_slices
            .into_iter()
            .for_each(|s| join(&mut missing, s));
    }
    // A node that left no report is named as the builders saw it (`never_connected`, `lost`).
    for (name, state) in m.acquisition.iter_mut() {
        if state == "no_report"
            && let Some(seen) = builder_views.get(name)
        {
            state.clone_from(seen);
        }
    }
    m.missing_slices = missing.into_values().collect();
    m.complete &= m.missing_slices.is_empty();
    let path = cluster.out.join(format!("run={run}")).join(RUN_MANIFEST);
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
        .with_context(|| format!("cannot create {}", path.display()))?;
    scandaq_sinks::durable_file::write_atomic(&path, &serde_json::to_vec_pretty(&m)?)?;
    Ok((path, m))
}

/// Lists `builder_lost` every slice of builder `(index, name)` within the run's `range` that
/// `covered` does not cover.
fn builder_lost(
    cluster: &Cluster,
    (b, name): (u32, &str),
    range: Option<(i64, i64)>,
    covered: impl Fn(i64) -> bool,
    missing: &mut BTreeMap<i64, MissingSlice>,
) {
    let Some((first, last)) = range else {
        return;
    };
    for slice in (first..=last).filter(|&k| cluster.spec.builder_of(k) == b && !covered(k)) {
        let body = cluster.spec.body_ps(slice);
        join(
            missing,
            MissingSlice {
                slice,
                start_ps: body.start,
                end_ps: body.end,
                reason: "builder_lost".into(),
                sources: vec![name.to_string()],
                written: false,
            },
        );
    }
}

/// One entry per slice: a second notice adds its reason and nodes.
fn join(missing: &mut BTreeMap<i64, MissingSlice>, s: MissingSlice) {
    match missing.get_mut(&s.slice) {
        None => {
            missing.insert(s.slice, s);
        }
        Some(have) => {
            if !have.reason.split(',').any(|r| r == s.reason) {
                have.reason = format!("{},{}", have.reason, s.reason);
            }
            for n in s.sources {
                if !have.sources.contains(&n) {
                    have.sources.push(n);
                }
            }
            have.written &= s.written;
        }
    }
}

fn add_losses(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

/// `path` parsed, or None when it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is not a node report", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}
