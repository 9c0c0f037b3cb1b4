//! A builder node: its Flight service takes the acquisition nodes' singles streams, the
//! assembly loop (this thread) gathers their pieces into slices (`SliceAssembler`), sorts each
//! complete slice (`process_slice`) and writes it (`BuilderOutput`: `OUT/run=R/builder=B/`).
//! The run ends when every acquisition node has ended its stream (or died: its unfinished
//! slices are written from what arrived and listed missing), or on a stop (what waits is
//! listed missing). Memory: the bounded inbound queue plus the slices still waiting for a
//! source.

use crate::acquire::cluster::config::{Cluster, Role};
use crate::acquire::cluster::service::{Inbound, NodeService, StatsFn};
use crate::observe::stop::StopFlag;
use crate::process::calib_load::CalibrationArgs;
use crate::process::cluster::builder_out::{BuilderManifest, BuilderOutput};
use crate::process::cluster::protocol::{PieceMeta, PieceRole};
use crate::process::cluster::slices::{Assembler, Job, process};
use crate::process::coinc_stage::SorterInput;
use anyhow::{Context, Result, anyhow};
use scandaq_core::coincidence::CrystalLut;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Pieces waiting for the assembly loop (each up to one Flight batch).
const INBOUND_QUEUE: usize = 16;

/// What a builder shows through `DoAction("stats")`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BuilderStats {
    /// Node name.
    pub node: String,
    /// Always `builder`.
    pub role: String,
    /// Run number (0 before the first piece).
    pub run: u64,
    /// Singles received, by source.
    pub singles_received: BTreeMap<String, u64>,
    /// Messages received.
    pub pieces: u64,
    /// Slices written.
    pub slices_written: u64,
    /// Slices waiting for a source.
    pub slices_pending: u64,
    /// Singles held in waiting slices.
    pub rows_pending: u64,
    /// Prompt pairs written.
    pub prompts: u64,
    /// Delayed pairs written.
    pub delayed: u64,
    /// Sources that ended their stream.
    pub sources_ended: Vec<String>,
    /// Sources whose stream broke.
    pub sources_lost: Vec<String>,
    /// Slices listed missing.
    pub slices_missing: u64,
}

/// Runs builder `name` of `cluster` until every source ended or `stop` is raised.
pub fn run_builder(
    cluster: &Cluster,
    name: &str,
    stop: StopFlag,
) -> Result<Option<BuilderManifest>> {
    let (_, node) = cluster.node(name)?;
    if node.role != Role::Builder {
        anyhow::bail!(
            "node {name:?} is an acquisition node: start it the same way, it runs its inputs"
        );
    }
    let lut = builder_lut(cluster)?;
    let addr = cluster.addrs[cluster.node(name)?.0];
    let sources: Vec<String> = cluster
        .nodes_of(Role::Acquisition)
        .iter()
        .map(|(n, _)| n.name.clone())
        .collect();
    let stats = Arc::new(Mutex::new(BuilderStats {
        node: name.into(),
        role: "builder".into(),
        ..BuilderStats::default()
    }));
    let shown = stats.clone();
    let stats_fn: StatsFn = Arc::new(move || {
        shown
            .lock()
            .map(|s| serde_json::to_value(&*s).unwrap_or_default())
            .unwrap_or_default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flight")
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let service = NodeService::builder(stats_fn, tx, cluster.file.flow.credits);
    let (_, server) = service
        .serve(runtime.handle(), addr, async {
            let _ = shutdown_rx.await;
        })
        .with_context(|| format!("node {name}"))?;
    eprintln!(
        "scandaq node {name}: builder listening on {addr} (Flight), waiting for {}",
        sources.join(", ")
    );
    let mut assembly = Assembly {
        cluster,
        name,
        lut: &lut,
        assembler: Assembler::new(cluster.spec, builder_index(cluster, name), &sources)?,
        output: None,
        ended: BTreeSet::new(),
        stats,
        energy_in_kev: true,
        refused_singles: 0,
        refusals: 0,
        first_data: None,
        heard: BTreeSet::new(),
        silent_given_up: false,
        streams: BTreeMap::new(),
        stray_run: None,
    };
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            // What was acknowledged is taken before the stop.
            let mut taken = Ok(());
            while let (Ok(inbound), true) = (rx.try_recv(), taken.is_ok()) {
                taken = assembly.take(inbound);
            }
            break taken.and_then(|()| assembly.stop("builder_stopped"));
        }
        if server.is_finished() {
            break Err(anyhow!("the Flight server on {addr} stopped serving"));
        }
        let next = runtime
            .block_on(async { tokio::time::timeout(Duration::from_millis(200), rx.recv()).await });
        match next {
            Ok(Some(inbound)) => {
                if let Err(e) = assembly.take(inbound) {
                    break Err(e);
                }
            }
            Ok(None) => break assembly.stop("builder_stopped"),
            Err(_) => {}
        }
        if let Err(e) = assembly.give_up_on_silent() {
            break Err(e);
        }
        if assembly.done() {
            break assembly.commit(true);
        }
    };
    let _ = shutdown.send(());
    let served = runtime.block_on(server);
    runtime.shutdown_timeout(Duration::from_secs(1));
    match served {
        Ok(Err(e)) => Err(anyhow!(
            "node {name}: the Flight server on {addr} failed: {e:?}"
        )),
        _ => result,
    }
}

/// The index of builder `name` among the builders (slice k goes to builder k mod N).
fn builder_index(cluster: &Cluster, name: &str) -> u32 {
    cluster
        .nodes_of(Role::Builder)
        .iter()
        .position(|(n, _)| n.name == name)
        .unwrap_or(0) as u32
}

/// The crystal map the builders sort with (the cluster's `[calibration]`).
fn builder_lut(cluster: &Cluster) -> Result<CrystalLut> {
    let cal = cluster.builder_calibration();
    let loaded = CalibrationArgs {
        calib: cal.dir.clone(),
        petsys_config: cal.petsys_config.clone(),
        no_calib: false,
    }
    .load()?
    .ok_or_else(|| {
        anyhow!("cluster [calibration]: a builder needs the crystal map: set dir or petsys_config")
    })?;
    let geometry = loaded.calibration.geometry.as_ref().ok_or_else(|| {
        anyhow!("cluster [calibration]: no crystal map (map_channel.tsv) there: builders cannot sort coincidences")
    })?;
    Ok(CrystalLut::from_geometry(geometry))
}

/// The assembly loop's state.
struct Assembly<'a> {
    cluster: &'a Cluster,
    name: &'a str,
    lut: &'a CrystalLut,
    assembler: Assembler,
    output: Option<BuilderOutput>,
    ended: BTreeSet<String>,
    stats: Arc<Mutex<BuilderStats>>,
    energy_in_kev: bool,
    /// Singles of pieces refused (`cluster_refused_singles`) not yet in the output's manifest.
    refused_singles: u64,
    /// Refusals so far (the first few are printed).
    refusals: u64,
    /// When the run's first piece arrived.
    first_data: Option<Instant>,
    /// Acquisition nodes that opened a stream to this builder.
    heard: BTreeSet<String>,
    /// The nodes never heard from were given up (`flow.source_timeout`).
    silent_given_up: bool,
    /// Each source's current stream.
    streams: BTreeMap<String, u64>,
    /// The run a stray stream named (its refusals reach a manifest even if no real data
    /// comes).
    stray_run: Option<u64>,
}

impl Assembly<'_> {
    fn take(&mut self, inbound: Inbound) -> Result<()> {
        match inbound {
            Inbound::Piece { meta, rows, stream } => {
                if self.assembler.knows(&meta.source) {
                    self.first_data.get_or_insert_with(Instant::now);
                    self.heard.insert(meta.source.clone());
                    let gone = self.assembler.is_gone(&meta.source);
                    // A source's stream is the first it opens, or after it was lost the next
                    // one (a restart); another stream claiming its name is a stray.
                    let current = *self.streams.entry(meta.source.clone()).or_insert(stream);
                    if current != stream && !gone {
                        let why = format!(
                            "a second stream claiming to be {:?} while its own is open",
                            meta.source
                        );
                        self.stray(meta.run);
                        self.refuse(rows.len() as u64, &why);
                        return self.process_ready();
                    }
                    self.streams.insert(meta.source.clone(), stream);
                    if gone && meta.role != PieceRole::EndOfStream {
                        self.rejoin(&meta, &rows)?;
                    }
                    self.piece(meta, rows)?;
                } else {
                    let why = format!(
                        "a piece from {:?}, which is no acquisition node of the cluster file",
                        meta.source
                    );
                    self.stray(meta.run);
                    self.refuse(rows.len() as u64, &why);
                }
            }
            Inbound::SourceLost { source, stream }
                if self.streams.get(&source).is_some_and(|&s| s != stream) =>
            {
                eprintln!(
                    "scandaq node {}: a stray stream claiming to be {source:?} broke (its own goes on)",
                    self.name
                );
            }
            Inbound::SourceLost { source, .. } if !self.assembler.knows(&source) => {
                eprintln!(
                    "scandaq node {}: a stream from {source:?} (no node of the cluster file) ended",
                    self.name
                );
            }
            Inbound::SourceLost { source, .. } => {
                self.heard.insert(source.clone());
                eprintln!(
                    "scandaq node {}: source {source} lost (its stream broke)",
                    self.name
                );
                self.assembler.source_gone(&source)?;
                if let Ok(mut s) = self.stats.lock() {
                    s.sources_lost.push(source);
                }
            }
        }
        self.process_ready()
    }

    /// `flow.source_timeout` after the run's first data, every acquisition node not heard
    /// from is given up: marked lost (`never_connected` in the manifest), the slices waiting
    /// for it completed without it and listed missing (`source_lost`, naming it), so the
    /// builder finishes with the others. A stream it opens later is refused and counted.
    fn give_up_on_silent(&mut self) -> Result<()> {
        let timeout = self.cluster.source_timeout;
        if self.silent_given_up || self.first_data.is_none_or(|t| t.elapsed() < timeout) {
            return Ok(());
        }
        self.silent_given_up = true;
        for (node, _) in self.cluster.nodes_of(Role::Acquisition) {
            if self.heard.contains(&node.name) {
                continue;
            }
            eprintln!(
                "scandaq node {}: acquisition node {} did not connect within {timeout:?} of the \
                 run's first data (flow.source_timeout): marked lost, its slices listed missing",
                self.name, node.name
            );
            self.assembler.source_gone(&node.name)?;
            if let Ok(mut s) = self.stats.lock() {
                s.sources_lost.push(node.name.clone());
            }
        }
        self.process_ready()
    }

    /// A source that was lost is back (a restarted acquisition node under the same name): it
    /// rejoins at the next slice whose rows it can all have sent; its pieces before that are
    /// dropped and counted (`cluster_partial_slice_singles`), the slices it missed are listed
    /// missing (`source_lost`).
    fn rejoin(&mut self, meta: &PieceMeta, rows: &SorterInput) -> Result<()> {
        let at = self
            .assembler
            .rejoin(&meta.source, rows.t_ps.first().copied(), meta.slice)?;
        eprintln!(
            "scandaq node {}: acquisition node {} is back (a restart): it rejoins at slice {at}",
            self.name, meta.source
        );
        if let Ok(mut s) = self.stats.lock() {
            s.sources_lost.retain(|n| n != &meta.source);
        }
        if let Some(out) = self.output.as_mut() {
            out.count(&format!("source.{}.rejoins", meta.source), 1);
        }
        Ok(())
    }

    /// Creates the run's output (`OUT/run=R/builder=B/`).
    fn open_output(&mut self, run: u64) -> Result<()> {
        let metadata = vec![
            ("scandaq.run".to_string(), run.to_string()),
            ("scandaq.builder".to_string(), self.name.to_string()),
            (
                "scandaq.coincidence_config".to_string(),
                serde_json::to_string(&self.cluster.file.coincidences)?,
            ),
        ];
        let out = BuilderOutput::create(
            &self.cluster.out,
            run,
            self.name,
            self.cluster.spec,
            self.cluster.file.coincidences.delay_ps != 0,
            metadata,
            self.cluster.rotation,
        )?;
        eprintln!(
            "scandaq node {}: run {run} -> {}",
            self.name,
            out.dir().display()
        );
        self.output = Some(out);
        Ok(())
    }

    fn piece(&mut self, meta: PieceMeta, rows: SorterInput) -> Result<()> {
        if self.output.is_none() {
            self.open_output(meta.run)?;
            self.energy_in_kev = meta.energy_in_kev;
        }
        let n = rows.len() as u64;
        if let Ok(mut s) = self.stats.lock() {
            s.run = meta.run;
            s.pieces += 1;
            *s.singles_received.entry(meta.source.clone()).or_insert(0) += n;
        }
        if let Some(out) = self.output.as_mut() {
            out.count(&format!("source.{}.singles", meta.source), n);
            out.count("singles_received", n);
        }
        // A piece the assembler refuses (a slice already closed, rows out of order: a stray or
        // replayed stream) is counted and dropped; the builder goes on with the rest.
        let taken = match meta.role {
            PieceRole::EndOfStream => self.assembler.end_of_stream(&meta.source).map(|()| {
                self.ended.insert(meta.source.clone());
                if let Ok(mut s) = self.stats.lock() {
                    s.sources_ended.push(meta.source.clone());
                }
            }),
            role => role
                .slicing()
                .filter(|_| n > 0 || meta.dropped_rows > 0)
                .map_or(Ok(()), |role| {
                    self.assembler.add_piece(
                        &meta.source,
                        meta.slice,
                        role,
                        &rows,
                        meta.dropped_rows,
                    )
                })
                .and_then(|()| {
                    if meta.end_of_slice {
                        self.assembler.finished_through(&meta.source, meta.slice)
                    } else {
                        Ok(())
                    }
                }),
        };
        if let Err(e) = taken {
            if self
                .assembler
                .rejoined_at(&meta.source)
                .is_some_and(|at| meta.slice < at)
            {
                // A restarted node's first, partial slice (or its lead-out copy).
                if let Some(out) = self.output.as_mut() {
                    out.loss("cluster_partial_slice_singles", n);
                }
            } else {
                self.refuse(n, &format!("{e:#}"));
            }
        }
        if let Some(out) = self.output.as_mut() {
            out.loss(
                "cluster_refused_singles",
                std::mem::take(&mut self.refused_singles),
            );
        }
        Ok(())
    }

    /// Notes the run a stray stream named.
    fn stray(&mut self, run: u64) {
        self.stray_run.get_or_insert(run);
    }

    /// Counts a refused piece's `rows` (`cluster_refused_singles`); prints the first few.
    fn refuse(&mut self, rows: u64, why: &str) {
        self.refused_singles += rows;
        self.refusals += 1;
        if self.refusals <= 5 {
            eprintln!(
                "scandaq node {}: refused a piece of {rows} singles: {why}",
                self.name
            );
        }
        if let Some(out) = self.output.as_mut() {
            out.loss(
                "cluster_refused_singles",
                std::mem::take(&mut self.refused_singles),
            );
        }
    }

    fn process_ready(&mut self) -> Result<()> {
        for job in self.assembler.take_ready() {
            self.write(job, None)?;
        }
        if let Ok(mut s) = self.stats.lock() {
            s.slices_pending = self.assembler.pending_slices() as u64;
            s.rows_pending = self.assembler.pending_rows() as u64;
        }
        Ok(())
    }

    /// Sorts and writes `job`; `forced` names why it is written incomplete (a stop).
    fn write(&mut self, job: Job, forced: Option<&str>) -> Result<()> {
        let Some(out) = self.output.as_mut() else {
            return Ok(());
        };
        let quiet = job.missing_sources.is_empty() && job.dropped_rows == 0 && forced.is_none();
        if job.job.rows.is_empty() && quiet {
            // An empty slice (no source had singles in it): nothing to write or list.
            return Ok(());
        }
        let result = process(
            &job.job,
            &self.cluster.file.coincidences,
            self.energy_in_kev,
            self.lut,
        )?;
        let mut missing = 0;
        if let Some(reason) = forced {
            out.missing(job.job.slice, reason, vec![], true);
            missing += 1;
        } else if !job.missing_sources.is_empty() {
            out.missing(
                job.job.slice,
                "source_lost",
                job.missing_sources.clone(),
                true,
            );
            missing += 1;
        } else if job.dropped_rows > 0 {
            out.missing(job.job.slice, "dropped_rows", vec![], true);
            out.loss("cluster_buffer_full", job.dropped_rows);
            missing += 1;
        }
        if let Ok(mut s) = self.stats.lock() {
            s.slices_written += 1;
            s.prompts += result.prompts.len() as u64;
            s.delayed += result.delayed.len() as u64;
            s.slices_missing += missing;
        }
        out.write_slice(result)
    }

    fn done(&self) -> bool {
        self.output.is_some() && self.assembler.all_done()
    }

    /// Stops: what waits is written from what arrived and listed missing.
    fn stop(&mut self, reason: &str) -> Result<Option<BuilderManifest>> {
        self.assembler.end_all()?;
        for job in self.assembler.take_ready() {
            self.write(job, Some(reason))?;
        }
        self.commit(false)
    }

    fn commit(&mut self, complete: bool) -> Result<Option<BuilderManifest>> {
        if self.output.is_none()
            && self.refused_singles > 0
            && let Some(run) = self.stray_run
        {
            // Only stray streams came: their refusals still reach a manifest.
            self.open_output(run)?;
            let refused = std::mem::take(&mut self.refused_singles);
            if let Some(out) = self.output.as_mut() {
                out.loss("cluster_refused_singles", refused);
            }
        }
        let Some(mut out) = self.output.take() else {
            eprintln!(
                "scandaq node {}: no data arrived; nothing written",
                self.name
            );
            return Ok(None);
        };
        for source in self.cluster.nodes_of(Role::Acquisition) {
            let how = if self.ended.contains(&source.0.name) {
                "end_of_stream"
            } else if out
                .manifest
                .counts
                .contains_key(&format!("source.{}.singles", source.0.name))
            {
                "lost"
            } else {
                "never_connected"
            };
            out.manifest
                .sources
                .insert(source.0.name.clone(), how.into());
        }
        // Complete: every source ended its stream and no slice is missing.
        let complete = complete
            && out.manifest.missing_slices.is_empty()
            && out.manifest.sources.values().all(|h| h == "end_of_stream");
        let manifest = out.commit(complete)?;
        eprintln!(
            "scandaq node {}: committed {} prompts, {} delayed in {} slices ({} missing)",
            self.name,
            manifest.counts.get("prompts").copied().unwrap_or(0),
            manifest.counts.get("delayed").copied().unwrap_or(0),
            manifest.counts.get("slices_written").copied().unwrap_or(0),
            manifest.missing_slices.len()
        );
        Ok(Some(manifest))
    }
}
