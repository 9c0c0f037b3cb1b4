//! An acquisition node: today's live pipeline (inputs -> rings -> processing -> time-sorted
//! calibrated singles, the singles table written locally under `OUT/nodes/NAME/`) with its
//! coincidence stage off; the singles go through the live run's singles tap to the cluster
//! sender (slicer thread + one Flight link per builder). At the end the node writes its report
//! `OUT/run=R/acquisition-NAME.json`: its run's counts and losses, every link's figures and
//! the slices it could not deliver, with their time ranges.

use crate::acquire::cluster::config::{Cluster, Role};
use crate::acquire::cluster::sender::{LinkReport, Sender, SenderSettings};
use crate::acquire::cluster::service::{NodeService, StatsFn};
use crate::acquire::live::{LiveHandles, run_live};
use crate::observe::live_stats::LiveStats;
use crate::observe::stop::StopFlag;
use crate::process::calib_load::{CalibrationArgs, LoadedCalibration};
use crate::process::cluster::builder_out::MissingSlice;
use anyhow::{Context, Result, anyhow};
use scandaq_core::run_state::RunMode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What an acquisition node reports at its end.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AcquisitionReport {
    /// Cluster run number.
    pub run: u64,
    /// Node name.
    pub node: String,
    /// Its local run directory (singles table, manifest).
    pub run_dir: String,
    /// The local run's final state (`stopped`, `failed`).
    pub state: String,
    /// The local run's counts.
    pub counts: BTreeMap<String, u64>,
    /// The local run's losses plus the transport's (`cluster_buffer_full`,
    /// `cluster_builder_unreachable`, singles).
    pub losses: BTreeMap<String, u64>,
    /// Every builder link.
    pub links: Vec<LinkReport>,
    /// Slices this node could not deliver whole.
    pub missing_slices: Vec<MissingSlice>,
    /// The first and last slice the node had singles in.
    pub slice_range: Option<(i64, i64)>,
    /// Peak resident memory of the node process, bytes (Linux `VmHWM`).
    pub peak_rss_bytes: u64,
}

/// The report's file: `OUT/run=R/acquisition-NAME.json`.
pub fn report_path(out: &Path, run: u64, node: &str) -> PathBuf {
    out.join(format!("run={run}"))
        .join(format!("acquisition-{node}.json"))
}

/// Runs acquisition node `name` of `cluster` as run `run` until its inputs end, a limit, or
/// `stop`.
pub fn run_acquisition(
    cluster: &Cluster,
    name: &str,
    run: u64,
    stop: StopFlag,
) -> Result<AcquisitionReport> {
    let (index, node) = cluster.node(name)?;
    if node.role != Role::Acquisition {
        anyhow::bail!("node {name:?} is a builder");
    }
    let file = cluster.acquisition_run_file(node)?;
    if let Some(out) = &file.run.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    }
    let validated = file.validate()?;
    let calibration = CalibrationArgs {
        calib: validated.calib_dir.clone(),
        petsys_config: validated.petsys_config.clone(),
        no_calib: false,
    }
    .load()?
    .unwrap_or_else(LoadedCalibration::none);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flight")
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let settings = SenderSettings {
        run,
        source: name.into(),
        source_id: cluster
            .nodes_of(Role::Acquisition)
            .iter()
            .position(|(n, _)| n.name == name)
            .unwrap_or(0) as u32,
        spec: cluster.spec,
        builders: cluster
            .nodes_of(Role::Builder)
            .into_iter()
            .map(|(n, a)| (n.name.clone(), a))
            .collect(),
        credits: cluster.file.flow.credits,
        buffer_batches: cluster.file.flow.buffer_batches,
        batch_rows: cluster.file.flow.batch_rows,
        reconnect_every: cluster.reconnect_every,
        drain_timeout: cluster.drain_timeout,
        energy_in_kev: calibration.calibration.energy.is_some(),
    };
    let mut sender = Sender::start(settings, runtime.handle().clone())?;
    let counters = sender.counters.clone();
    let stats = Arc::new(LiveStats::default());
    let stats_fn = acquisition_stats(name, run, stats.clone(), sender.counters.clone());
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let addr = cluster.addrs[index];
    let (_, server) = NodeService::stats_only(stats_fn)
        .serve(runtime.handle(), addr, async {
            let _ = shutdown_rx.await;
        })
        .with_context(|| format!("node {name}"))?;
    eprintln!("scandaq node {name}: acquisition, run {run}, stats on {addr} (Flight)");
    let handles = LiveHandles {
        stop,
        mode: RunMode::Run,
        stats,
        markers: Default::default(),
        singles_tap: sender.tap.take(),
    };
    let summary = run_live(&validated.live, &calibration, handles);
    let links = sender.finish();
    let _ = shutdown.send(());
    let served = runtime.block_on(server);
    runtime.shutdown_timeout(Duration::from_secs(1));
    let summary = summary?;
    if let Ok(Err(e)) = served {
        eprintln!("scandaq node {name}: the Flight stats server on {addr} failed: {e:?}");
    }
    let links = links?;
    let mut report = report_of(cluster, name, run, &summary, links);
    report.slice_range = counters.slice_range();
    let before_first = counters.rows_before_first_slice();
    if before_first > 0 {
        *report
            .losses
            .entry("cluster_before_first_slice".into())
            .or_insert(0) += before_first;
    }
    let path = report_path(&cluster.out, run, name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    scandaq_sinks::durable_file::write_atomic(&path, &serde_json::to_vec_pretty(&report)?)?;
    if let Some(e) = &summary.error {
        return Err(anyhow!("the acquisition failed: {e}"));
    }
    Ok(report)
}

/// The stats action's answer: the live run's snapshot and the links.
fn acquisition_stats(
    name: &str,
    run: u64,
    stats: Arc<LiveStats>,
    links: crate::acquire::cluster::sender::SenderCounters,
) -> StatsFn {
    let name = name.to_string();
    Arc::new(move || {
        serde_json::json!({
            "node": name,
            "role": "acquisition",
            "run": run,
            "live": stats.snapshot(),
            "links": links.reports(),
            "rss_bytes": rss_bytes("VmRSS:"),
        })
    })
}

fn report_of(
    cluster: &Cluster,
    name: &str,
    run: u64,
    summary: &crate::process::run::RunSummary,
    links: Vec<LinkReport>,
) -> AcquisitionReport {
    let mut losses: BTreeMap<String, u64> = summary
        .manifest
        .losses
        .0
        .iter()
        .map(|(k, v)| (k.name().to_string(), *v))
        .collect();
    let mut missing = BTreeMap::new();
    for link in &links {
        *losses.entry("cluster_buffer_full".into()).or_insert(0) += link.rows_buffer_full;
        *losses
            .entry("cluster_builder_unreachable".into())
            .or_insert(0) += link.rows_unreachable;
        for (slice, reason) in &link.missing_slices {
            let body = cluster.spec.body_ps(*slice);
            let (start_ps, end_ps) = (body.start, body.end);
            missing.entry(*slice).or_insert_with(|| MissingSlice {
                slice: *slice,
                start_ps,
                end_ps,
                reason: reason.clone(),
                sources: vec![name.to_string()],
                written: false,
            });
        }
    }
    losses.retain(|_, v| *v > 0);
    AcquisitionReport {
        run,
        node: name.into(),
        run_dir: summary.dir.display().to_string(),
        state: summary.manifest.state.to_string(),
        counts: summary.manifest.counts.clone(),
        losses,
        links,
        missing_slices: missing.into_values().collect(),
        slice_range: None,
        peak_rss_bytes: rss_bytes("VmHWM:"),
    }
}

/// A memory figure of this process from /proc/self/status (`VmRSS:`, `VmHWM:`), bytes; 0
/// where there is no /proc.
pub fn rss_bytes(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
