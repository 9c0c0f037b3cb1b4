//! Live acquisition (`scandaq run`) and raw-archive replay: inputs on their own threads feed
//! [`Ingest`]s, which hand per-board frame chunks through bounded rings to the processing
//! thread; there each board has its own decode/calibrate [`Processor`], a k-way merge restores
//! global time order, and the singles sink (plus the optional raw archive) write the run.
//!
//! Start order: sinks, processing, then inputs. Stop order: inputs (they drain and flush),
//! processing drains the rings and flushes every board, then the sinks commit their files and
//! the manifest is written. States: configured -> running -> stopping -> stopped | error.

use crate::acquire::ingest::{FrameChunk, Ingest, IngestOptions};
use crate::acquire::net::{bind_udp, run_tcp, run_udp};
use crate::acquire::ring::{OverflowPolicy, RingConsumer, RingStats, ring};
use crate::observe::disk_watch::{DiskWarnLevels, DiskWatch};
use crate::observe::live_stats::{BoardDecodeSnapshot, LiveStats, RunInfo, RunState};
use crate::process::calib_load::LoadedCalibration;
use crate::process::coinc_stage::CoincidenceOptions;
use crate::process::merge::KWayMerger;
use crate::process::pipeline::{PipelineCounts, Processor, spawn_singles_sink};
use crate::process::session::{self, RunDescription, RunEnd, RunSummary};
use crate::process::streams::StreamSettings;
use crate::process::streams::stage::StreamStage;
use anyhow::{Context, Result, anyhow, bail};
use scandaq_core::LossReason;
use scandaq_core::run_state::{FailureReason, RunMode, StopReason};
use scandaq_core::{HitBatch, LossCounts};
use scandaq_decoders::archive::{ARCHIVE_HEADER_LEN, parse_header};
use scandaq_decoders::transport::TransportHeader;
use scandaq_sinks::archive::RawArchiveWriter;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where packets come from.
#[derive(Clone, Debug, PartialEq)]
pub enum InputSpec {
    /// Listen for datagrams on this address.
    Udp(SocketAddr),
    /// Connect to a front-end serving a TCP stream at this address.
    Tcp(SocketAddr),
    /// Read a raw archive (`.sdq`) written by an earlier run.
    Archive(PathBuf),
}

/// One input and its policies.
#[derive(Clone, Debug)]
pub struct InputConfig {
    /// The input.
    pub spec: InputSpec,
    /// Front-end addresses allowed to send (empty = any).
    pub allow: Vec<IpAddr>,
    /// What the input's ring does when full.
    pub policy: OverflowPolicy,
    /// Ring capacity in chunks (each up to 256 KiB of frames).
    pub ring_chunks: usize,
    /// Expected boards, TCP connect timeout.
    pub ingest: IngestOptions,
}

/// When a run stops by itself.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunLimits {
    /// Wall-clock duration.
    pub duration: Option<Duration>,
    /// Singles written.
    pub max_hits: Option<u64>,
    /// Frame bytes accepted from the inputs.
    pub max_bytes: Option<u64>,
}

/// A live run.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// Inputs.
    pub inputs: Vec<InputConfig>,
    /// Output directory (runs are made inside it).
    pub out_dir: PathBuf,
    /// Limits.
    pub limits: RunLimits,
    /// Keep raw diagnostic columns in the singles.
    pub raw_columns: bool,
    /// Record packets as received into `raw-00000.sdq`.
    pub raw_archive: bool,
    /// Stop once every board seen has sent end-of-stream.
    pub stop_at_end_of_stream: bool,
    /// Print a stats line on stderr this often (None = quiet).
    pub stats_every: Option<Duration>,
    /// Front-end clock.
    pub clock: scandaq_core::ClockModel,
    /// Coincidence sorting.
    pub coincidences: CoincidenceOptions,
    /// Singles file rotation.
    pub rotation: crate::process::pipeline::Rotation,
    /// Stream processors' settings (`[meg]`, `[ultrasound]`).
    pub streams: StreamSettings,
    /// When to warn that the output disk is filling.
    pub disk_warn: DiskWarnLevels,
}

impl Default for LiveConfig {
    /// No inputs, `./scandaq-runs`, no limits, stop at end of stream, quiet, the TOFPET2 clock,
    /// default coincidences, rotation, streams and disk warnings.
    fn default() -> Self {
        Self {
            inputs: vec![],
            out_dir: PathBuf::from("scandaq-runs"),
            limits: RunLimits::default(),
            raw_columns: false,
            raw_archive: false,
            stop_at_end_of_stream: true,
            stats_every: None,
            clock: scandaq_core::ClockModel::TOFPET2_DEFAULT,
            coincidences: CoincidenceOptions::default(),
            rotation: crate::process::pipeline::Rotation::default(),
            streams: StreamSettings::default(),
            disk_warn: DiskWarnLevels::default(),
        }
    }
}

/// Chunks taken off one input's ring per processing round (between merger releases).
const DRAIN_CHUNKS_PER_CALL: usize = 8;

/// Largest batch handed to the singles sink (about 10 MB of columns); the sink queue holds
/// a few of them, so its memory is bounded whatever the release sizes.
const MAX_SINK_BATCH_HITS: usize = 1 << 18;

pub use crate::observe::stop::StopFlag;

struct InputThread {
    label: String,
    handle: JoinHandle<Result<Ingest>>,
    consumer: RingConsumer<FrameChunk>,
    stats: Arc<RingStats>,
}

impl std::fmt::Display for InputSpec {
    /// `udp ADDR`, `tcp ADDR`, `archive PATH`: how inputs are named in manifests, stats and
    /// messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputSpec::Udp(addr) => write!(f, "udp {addr}"),
            InputSpec::Tcp(addr) => write!(f, "tcp {addr}"),
            InputSpec::Archive(path) => write!(f, "archive {}", path.display()),
        }
    }
}

fn input_label(spec: &InputSpec) -> String {
    spec.to_string()
}

/// An input whose resources are held (a bound UDP socket) but whose thread has not started:
/// everything that can fail at start (a port in use) fails here, before any file is made.
enum OpenedInput {
    Udp(std::net::UdpSocket),
    Other,
}

fn open_input(cfg: &InputConfig) -> Result<OpenedInput> {
    match &cfg.spec {
        InputSpec::Udp(addr) => bind_udp(*addr)
            .map(OpenedInput::Udp)
            .with_context(|| format!("cannot listen for UDP on {addr}")),
        InputSpec::Archive(path) => {
            std::fs::File::open(path)
                .with_context(|| format!("cannot open raw archive {}", path.display()))?;
            Ok(OpenedInput::Other)
        }
        InputSpec::Tcp(_) => Ok(OpenedInput::Other),
    }
}

fn start_input(
    cfg: &InputConfig,
    opened: OpenedInput,
    archive: bool,
    stop: StopFlag,
    live: &LiveStats,
) -> Result<InputThread> {
    let (producer, consumer) = ring::<FrameChunk>(cfg.ring_chunks, cfg.policy);
    let stats = consumer.stats();
    let mut ingest = Ingest::new(cfg.allow.clone(), producer, archive).with_options(&cfg.ingest);
    let label = input_label(&cfg.spec);
    ingest.publish_into(label.clone(), live.register_input(&label));
    let handle = match (&cfg.spec, opened) {
        (InputSpec::Udp(addr), OpenedInput::Udp(socket)) => std::thread::Builder::new()
            .name(format!("udp-{addr}"))
            .spawn(move || Ok(run_udp(socket, ingest, stop)))?,
        (InputSpec::Udp(addr), OpenedInput::Other) => {
            bail!("UDP input {addr} was not bound before its start")
        }
        (InputSpec::Tcp(addr), _) => {
            let addr = *addr;
            let timeout = cfg.ingest.connect_timeout;
            std::thread::Builder::new()
                .name(format!("tcp-{addr}"))
                .spawn(move || Ok(run_tcp(addr, ingest, stop, timeout)?))?
        }
        (InputSpec::Archive(path), _) => {
            let path = path.clone();
            std::thread::Builder::new()
                .name("sdq-reader".into())
                .spawn(move || read_archive(&path, ingest))?
        }
    };
    Ok(InputThread {
        label,
        handle,
        consumer,
        stats,
    })
}

/// Largest payload an archived packet may declare (as for a TCP stream); a header claiming
/// more is skipped like a bad one.
const MAX_ARCHIVED_PAYLOAD: u32 = 1 << 26;

/// Feeds every packet of a `.sdq` archive to `ingest`, in file order.
fn read_archive(path: &Path, mut ingest: Ingest) -> Result<Ingest> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut head = [0u8; ARCHIVE_HEADER_LEN];
    file.read_exact(&mut head)
        .with_context(|| format!("{}: too short for a raw archive", path.display()))?;
    let meta_len = parse_header(&head).with_context(|| format!("{}", path.display()))?;
    let mut meta = vec![0u8; meta_len as usize];
    file.read_exact(&mut meta)
        .with_context(|| format!("{}: metadata truncated", path.display()))?;
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 4 << 20];
    loop {
        let n = file
            .read(&mut chunk)
            .with_context(|| format!("read error in {}", path.display()))?;
        buf.extend_from_slice(&chunk[..n]);
        let mut off = 0;
        while buf.len() - off >= scandaq_decoders::transport::HEADER_LEN {
            let len = match TransportHeader::parse(&buf[off..]) {
                // A corrupt length cannot make the reader hold the rest of the file.
                Ok(h) if h.payload_len <= MAX_ARCHIVED_PAYLOAD => h.packet_len(),
                _ => {
                    // Archives hold packets as received; a bad one was counted live too.
                    ingest.losses.add(LossReason::ArchiveResyncSkippedBytes, 1);
                    off += 1;
                    continue;
                }
            };
            if buf.len() - off < len {
                break;
            }
            ingest
                .accept(peer, &buf[off..off + len])
                .map_err(|_| anyhow!("processing stopped"))?;
            off += len;
        }
        buf.drain(..off);
        ingest.publish();
        if n == 0 {
            if !buf.is_empty() {
                ingest
                    .losses
                    .add(LossReason::TruncatedBytes, buf.len() as u64);
            }
            break;
        }
    }
    ingest
        .flush(true)
        .map_err(|_| anyhow!("processing stopped"))?;
    Ok(ingest)
}

/// Per-board processing state (of the board's current session).
struct BoardState<'k> {
    processor: Processor<'k>,
    ended: bool,
    /// The board's session (0, then one more per restart; see [`crate::acquire::ingest`]).
    session: u32,
    /// The merger stream of this session.
    key: u32,
    /// Sessions after a restart: the offset that puts their clock onto the run's timeline
    /// (fixed by the session's first singles).
    rebase: Option<i64>,
    /// Counts of the board's earlier sessions.
    earlier: PipelineCounts,
}

/// Times and merger streams shared by the boards' sessions.
#[derive(Default)]
struct Timeline {
    /// Newest singles time handed to the merger (ps), if any.
    newest: Option<i64>,
    /// Sessions after a restart opened so far (their merger streams are numbered down from
    /// `u32::MAX - 1`; a board's first session uses its source id, so ties between boards
    /// break as before, whatever order their chunks arrive in).
    keys: u32,
}

impl<'k> BoardState<'k> {
    fn new(
        kernel: &'k crate::process::kernel::CompiledCalibration,
        session: u32,
        key: u32,
    ) -> Self {
        Self {
            processor: Processor::new(kernel),
            ended: false,
            session,
            key,
            rebase: None,
            earlier: PipelineCounts::default(),
        }
    }

    /// This board's counts over all its sessions.
    fn counts(&self) -> PipelineCounts {
        let mut c = self.processor.counts();
        let e = &self.earlier;
        c.bytes_scanned += e.bytes_scanned;
        c.frames += e.frames;
        c.hits_decoded += e.hits_decoded;
        c.frame_wraps += e.frame_wraps;
        c.losses.merge(&e.losses);
        c
    }

    /// Decodes `frames` (and the session's end with `eof`) into the merger; a session after
    /// a restart is moved onto the run's timeline and flagged.
    fn push(
        &mut self,
        frames: &[u8],
        eof: bool,
        merger: &mut KWayMerger,
        timeline: &mut Timeline,
    ) -> Result<()> {
        let (key, restarted, rebase) = (self.key, self.session > 0, &mut self.rebase);
        self.processor.push(frames, eof, &mut |mut b| {
            if restarted && !b.is_empty() {
                // The board's clock restarted with it: its first singles are placed at the
                // newest time of the run so far, and the session keeps that offset.
                let offset = *rebase.get_or_insert_with(|| {
                    timeline.newest.map_or(0, |n| n.saturating_sub(b.t_ps[0]))
                });
                for t in &mut b.t_ps {
                    *t = t.saturating_add(offset);
                }
                for f in &mut b.flags {
                    *f |= scandaq_core::hit_flags::CLOCK_REBASED;
                }
            }
            if let Some(&last) = b.t_ps.last() {
                timeline.newest = Some(timeline.newest.map_or(last, |n| n.max(last)));
            }
            merger.push(key, b);
            Ok(())
        })
    }

    /// Ends the current session and opens `session`, on a new merger stream.
    fn next_session(
        &mut self,
        session: u32,
        kernel: &'k crate::process::kernel::CompiledCalibration,
        merger: &mut KWayMerger,
        timeline: &mut Timeline,
    ) -> Result<()> {
        if !self.ended {
            self.push(&[], true, merger, timeline)?;
        }
        merger.end(self.key);
        let earlier = self.counts();
        timeline.keys += 1;
        *self = Self::new(kernel, session, u32::MAX - timeline.keys);
        self.earlier = earlier;
        Ok(())
    }
}

/// Drains every ring once into the boards' processors and the merger; returns whether
/// anything arrived.
#[allow(clippy::too_many_arguments)]
fn drain<'k>(
    inputs: &mut [InputThread],
    boards: &mut BTreeMap<u32, BoardState<'k>>,
    kernel: &'k crate::process::kernel::CompiledCalibration,
    merger: &mut KWayMerger,
    timeline: &mut Timeline,
    archive: &mut Option<RawArchiveWriter>,
    archive_error: &mut Option<String>,
    streams: &mut StreamStage,
) -> Result<bool> {
    let mut got = false;
    for input in inputs.iter_mut() {
        // A bounded number per call: the caller releases merged hits to the sink between
        // calls, so an input that refills its ring as fast as it is drained cannot make the
        // merger hold an unbounded backlog.
        for _ in 0..DRAIN_CHUNKS_PER_CALL {
            let Some(chunk) = input.consumer.pop() else {
                break;
            };
            got = true;
            if let Some(w) = archive.as_mut()
                && !chunk.raw.is_empty()
                && let Err(e) = w.write_packets(&chunk.raw, chunk.raw_packets)
            {
                *archive_error = Some(format!("{e}"));
                *archive = None;
            }
            if chunk.frames.is_empty() && !chunk.end_of_stream && chunk.packets == 0 {
                continue; // archive-only chunk (rejected packets)
            }
            if StreamStage::is_stream_chunk(&chunk) {
                streams.push(&chunk)?;
                continue;
            }
            let board = boards
                .entry(chunk.source_id)
                .or_insert_with(|| BoardState::new(kernel, chunk.session, chunk.source_id));
            if chunk.session > board.session {
                board.next_session(chunk.session, kernel, merger, timeline)?;
            }
            board.push(&chunk.frames, false, merger, timeline)?;
            if chunk.end_of_stream && !board.ended {
                board.ended = true;
                board.push(&[], true, merger, timeline)?;
                merger.end(board.key);
            }
        }
    }
    Ok(got)
}

/// What a live run shares with its caller: the stop flag (signals, the control socket, a
/// dashboard), the mode the manifest records, the statistics anyone may snapshot while the run
/// goes on, and the operator markers it writes into `markers.parquet`.
pub struct LiveHandles {
    /// Raise to stop the run (it drains and commits).
    pub stop: StopFlag,
    /// `run`, `replay` (a raw archive), `recover` (a killed run's archive tail).
    pub mode: RunMode,
    /// Published statistics ([`LiveStats::snapshot`] from any thread).
    pub stats: Arc<LiveStats>,
    /// Markers to place (dashboard, control socket).
    pub markers: crate::observe::markers::SharedMarkers,
}

impl LiveHandles {
    /// Fresh handles: a stop flag not raised, empty statistics and markers.
    pub fn new(mode: RunMode) -> Self {
        Self {
            stop: crate::observe::stop::new_stop_flag(),
            mode,
            stats: Arc::new(LiveStats::default()),
            markers: Arc::default(),
        }
    }
}

/// Runs a live acquisition until a limit, the stop flag, or the end of every stream.
pub fn run_live(
    config: &LiveConfig,
    calibration: &LoadedCalibration,
    handles: LiveHandles,
) -> Result<RunSummary> {
    let LiveHandles {
        stop,
        mode,
        stats,
        markers,
    } = handles;
    if config.inputs.is_empty() {
        bail!("a run needs at least one input (--udp ADDR, --tcp ADDR or [[input]] in the config)");
    }
    // Checked (and the files they name read) before anything starts.
    let stream_settings = config.streams.resolve()?;
    let description = RunDescription {
        mode,
        sources: config.inputs.iter().map(|i| i.spec.to_string()).collect(),
        clock: config.clock,
        extra_counts: BTreeMap::new(),
        warnings: vec![],
        raw_columns: config.raw_columns,
        rotation: config.rotation,
        coincidences: config.coincidences.clone(),
    };
    let mut start = session::begin(&config.out_dir, calibration, description)?;
    stats.set_state(RunState::Configured);
    // What can fail at start (a port in use, a missing archive) fails before any file is made,
    // and leaves the run `failed` with the reason.
    let mut opened = Vec::new();
    for cfg in &config.inputs {
        match open_input(cfg) {
            Ok(o) => opened.push(o),
            Err(e) => {
                stats.set_failure(FailureReason::StartFailed, &format!("{e:#}"));
                stats.set_state(RunState::Failed);
                return Err(start.fail_start(FailureReason::StartFailed, e));
            }
        }
    }
    // Sinks first.
    let mut streams = StreamStage::new(
        start.run_dir.path.clone(),
        start.metadata.clone(),
        stream_settings.clone(),
    );
    streams.publish_into(stats.streams.clone());
    let (sink_tx, sink) = spawn_singles_sink(
        &start.run_dir.path,
        start.metadata.clone(),
        start.sink_settings(stats.sink.clone()),
    )?;
    stats.info.publish(RunInfo {
        run: start.run_dir.run,
        run_dir: start.run_dir.path.display().to_string(),
        mode: mode.name().into(),
        limits: limit_descriptions(&config.limits),
    });
    let mut archive = if config.raw_archive {
        let meta = serde_json::json!({
            "run": start.run_dir.run,
            "software_version": session::SOFTWARE_VERSION,
            "inputs": config.inputs.iter().map(|i| i.spec.to_string()).collect::<Vec<_>>(),
            "calibration_checksum": calibration.calibration.checksum,
            (crate::process::streams::ARCHIVE_METADATA_KEY): stream_settings,
        });
        let mut w =
            RawArchiveWriter::create(&start.run_dir.path, "raw-00000.sdq", &meta.to_string())?;
        w.set_commit_interval(config.rotation.commit_interval());
        Some(w)
    } else {
        None
    };
    // Then processing, then inputs.
    let input_stop: StopFlag = Arc::new(AtomicBool::new(false));
    let mut inputs = Vec::new();
    for (cfg, opened) in config.inputs.iter().zip(opened) {
        match start_input(cfg, opened, archive.is_some(), input_stop.clone(), &stats) {
            Ok(t) => inputs.push(t),
            Err(e) => {
                input_stop.store(true, Ordering::Relaxed);
                for t in inputs {
                    let _ = t.handle.join();
                }
                drop(sink_tx);
                let _ = sink.join();
                stats.set_failure(FailureReason::StartFailed, &format!("{e:#}"));
                stats.set_state(RunState::Failed);
                return Err(start.fail_start(FailureReason::StartFailed, e));
            }
        }
    }
    start.set_running(Some(&stats))?;
    let mut disk = DiskWatch::new(&start.run_dir.path, config.disk_warn);
    let mut failure: Option<FailureReason> = None;
    let kernel_owned = start.kernel.clone();
    let kernel = &kernel_owned;
    let mut boards: BTreeMap<u32, BoardState> = BTreeMap::new();
    let mut timeline = Timeline::default();
    // Boards may lag each other by 0.5 s of detector time; nothing within 50 ms of the newest
    // hit is released, so a board whose data starts a little later is not late.
    let mut merger = KWayMerger::new(500_000_000_000, 50_000_000_000);
    let mut singles_sent = 0u64;
    let mut error: Option<String> = None;
    let begun = Instant::now();
    let mut last_stats = Instant::now();
    let mut last_publish = Instant::now();
    let mut last_data = Instant::now();
    let mut archive_error = None;
    let reason;
    let mut last_snapshot = stats.snapshot();
    let mut last_warning_check = Instant::now();
    let mut warnings_printed = BTreeMap::new();
    let send = |batch: HitBatch, singles_sent: &mut u64| -> Result<()> {
        *singles_sent += batch.len() as u64;
        stats.record_singles(&batch);
        markers.note_released(&batch);
        // The sink queue is bounded in batches; cap each batch so it is bounded in bytes too
        // (a slow loop iteration can release seconds of data at once).
        if batch.len() <= MAX_SINK_BATCH_HITS {
            return sink_tx
                .send(batch)
                .map_err(|_| anyhow!("the Parquet sink stopped"));
        }
        for start in (0..batch.len()).step_by(MAX_SINK_BATCH_HITS) {
            let end = (start + MAX_SINK_BATCH_HITS).min(batch.len());
            let mut piece = HitBatch::with_capacity(end - start);
            piece.extend_from_range(&batch, start..end);
            sink_tx
                .send(piece)
                .map_err(|_| anyhow!("the Parquet sink stopped"))?;
        }
        Ok(())
    };
    loop {
        match drain(
            &mut inputs,
            &mut boards,
            kernel,
            &mut merger,
            &mut timeline,
            &mut archive,
            &mut archive_error,
            &mut streams,
        ) {
            Ok(true) => last_data = Instant::now(),
            Ok(false) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => {
                error = Some(format!("{e:#}"));
                reason = StopReason::Failure;
                break;
            }
        }
        let ready = merger.release();
        if !ready.is_empty()
            && let Err(e) = send(ready, &mut singles_sent)
        {
            error = Some(format!("{e:#}"));
            reason = StopReason::Failure;
            break;
        }
        // A failed write (a full disk first of all) stops the run at once: the inputs stop,
        // what can be committed is committed, and the operator sees it now, not at the end.
        let sink_failure = stats.sink.failure.get().map(|f| {
            let reason = if f.disk_full {
                FailureReason::DiskFull
            } else {
                FailureReason::WriteFailed
            };
            (reason, f.message.clone())
        });
        if let Some((f, e)) = sink_failure.or_else(|| {
            archive_error.as_ref().map(|e| {
                let e = format!("raw archive: {e}");
                (session::failure_of(&e), e)
            })
        }) {
            report_failure(&stats, f, &e, config.stats_every.is_some());
            failure = Some(f);
            error = Some(e);
            reason = StopReason::Failure;
            break;
        }
        if let Some((reading, warnings)) = disk.check() {
            stats.set_disk(reading.free_bytes, reading.seconds_to_full);
            for w in warnings {
                if config.stats_every.is_some() {
                    eprintln!("{}", paint(&format!("warning: {w}"), YELLOW));
                }
                stats.warn(w);
            }
        }
        // The archive's commit interval holds when no packets arrive too.
        if let Some(Err(e)) = archive.as_mut().map(RawArchiveWriter::tick) {
            archive_error = Some(format!("{e}"));
            archive = None;
        }
        if stop.load(Ordering::Relaxed) {
            reason = StopReason::StopRequested;
            break;
        }
        if config.limits.duration.is_some_and(|d| begun.elapsed() >= d) {
            reason = StopReason::DurationLimit;
            break;
        }
        let bytes_in: u64 = inputs
            .iter()
            .map(|i| i.stats.pushed_bytes.load(Ordering::Relaxed))
            .sum();
        if config.limits.max_bytes.is_some_and(|m| bytes_in >= m) {
            reason = StopReason::ByteLimit;
            break;
        }
        if config.limits.max_hits.is_some_and(|m| singles_sent >= m) {
            reason = StopReason::HitLimit;
            break;
        }
        let all_ended = (!boards.is_empty() || !streams.is_empty())
            && boards.values().all(|b| b.ended)
            && (streams.is_empty() || streams.all_ended());
        // An input thread that has ended (archive read, TCP stream closed) with its ring
        // drained has nothing more to give.
        let inputs_done = inputs
            .iter()
            .all(|i| i.handle.is_finished() && i.consumer.is_empty());
        if (config.stop_at_end_of_stream
            && all_ended
            && last_data.elapsed() > Duration::from_millis(200))
            || inputs_done
        {
            reason = StopReason::EndOfStream;
            break;
        }
        stats.frame_bytes.store(bytes_in, Ordering::Relaxed);
        stats.ring_fill.store(
            inputs.iter().map(|i| i.consumer.fill() as u64).sum(),
            Ordering::Relaxed,
        );
        stats.boards.store(boards.len() as u64, Ordering::Relaxed);
        if last_publish.elapsed() >= Duration::from_millis(50) {
            last_publish = Instant::now();
            stats.board_decode.publish(board_decode_snapshot(&boards));
        }
        if config.stats_every.is_some() && last_warning_check.elapsed() >= WARNINGS_EVERY {
            last_warning_check = Instant::now();
            print_new_warnings(&stats, &mut warnings_printed);
        }
        if let Some(every) = config.stats_every
            && last_stats.elapsed() >= every
        {
            last_stats = Instant::now();
            let now = stats.snapshot();
            let losses = now.losses_total();
            eprintln!(
                "[{:>6.1} s] running: {} singles ({:.2} M/s), {} boards, {:.1} MB in, {} chunks waiting, {}",
                now.elapsed_s,
                now.singles,
                now.singles_rate_since(&last_snapshot) / 1e6,
                now.boards,
                now.frame_bytes as f64 / 1e6,
                now.ring_fill,
                if losses == 0 {
                    "no losses".to_string()
                } else {
                    paint(
                        &format!("LOSSES {losses} (see the manifest for reasons)"),
                        RED,
                    )
                }
            );
            last_snapshot = now;
        }
    }
    // A sink that failed is the root cause of whatever the loop saw next (a send to the
    // stopped sink): its error is the one the run reports.
    if let Some(f) = stats.sink.failure.get()
        && failure.is_none()
    {
        let reason = if f.disk_full {
            FailureReason::DiskFull
        } else {
            FailureReason::WriteFailed
        };
        report_failure(&stats, reason, &f.message, config.stats_every.is_some());
        failure = Some(reason);
        error = Some(f.message.clone());
    }
    stats.set_state(RunState::Stopping);
    if config.stats_every.is_some() {
        eprintln!("stopping ({reason}): draining inputs");
    }
    // Stop: inputs first, then drain, flush boards, close files last.
    input_stop.store(true, Ordering::Relaxed);
    let mut ingests = Vec::new();
    let mut input_errors = Vec::new();
    // Keep draining (and releasing to the sink) while the inputs finish, then until their
    // rings are empty.
    loop {
        let finished = inputs.iter().all(|i| i.handle.is_finished());
        let mut got = false;
        if error.is_none() {
            match drain(
                &mut inputs,
                &mut boards,
                kernel,
                &mut merger,
                &mut timeline,
                &mut archive,
                &mut archive_error,
                &mut streams,
            ) {
                Ok(g) => got = g,
                Err(e) => error = Some(format!("{e:#}")),
            }
            let ready = merger.release();
            if !ready.is_empty()
                && let Err(e) = send(ready, &mut singles_sent)
            {
                error = Some(format!("{e:#}"));
            }
        }
        if finished && !got {
            break;
        }
        if !got {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut ring_losses = LossCounts::default();
    for input in inputs {
        ring_losses.add(
            LossReason::RingOverflowPackets,
            input.stats.dropped_packets.load(Ordering::Relaxed),
        );
        ring_losses.add(
            LossReason::RingOverflowBytes,
            input.stats.dropped_bytes.load(Ordering::Relaxed),
        );
        match input.handle.join() {
            Ok(Ok(ingest)) => ingests.push(ingest),
            Ok(Err(e)) => input_errors.push(format!("{}: {e:#}", input.label)),
            Err(_) => input_errors.push(format!("{}: input thread panicked", input.label)),
        }
    }
    for board in boards.values_mut() {
        if !board.ended
            && error.is_none()
            && let Err(e) = board.push(&[], true, &mut merger, &mut timeline)
        {
            error = Some(format!("{e:#}"));
        }
    }
    stats.board_decode.publish(board_decode_snapshot(&boards));
    let rest = merger.finish();
    if !rest.is_empty()
        && error.is_none()
        && let Err(e) = send(rest, &mut singles_sent)
    {
        error = Some(format!("{e:#}"));
    }

    drop(sink_tx);
    let sink_result = sink
        .join()
        .map_err(|_| anyhow!("the Parquet sink thread panicked"))
        .and_then(|r| r);

    // Accounting.
    let mut counts = PipelineCounts::default();
    let mut extra = BTreeMap::new();
    for (&id, board) in &boards {
        let c = board.counts();
        counts.bytes_scanned += c.bytes_scanned;
        counts.frames += c.frames;
        counts.hits_decoded += c.hits_decoded;
        counts.frame_wraps += c.frame_wraps;
        counts.losses.merge(&c.losses);
        extra.insert(format!("board.{id}.hits_decoded"), c.hits_decoded);
        extra.insert(format!("board.{id}.frames"), c.frames);
    }
    counts.losses.add(LossReason::LateHit, merger.late_hits());
    counts.losses.merge(&ring_losses);
    let mut packets_in = 0;
    let mut port_drops = 0u64;
    for ingest in &ingests {
        packets_in += ingest.packets_in;
        port_drops += ingest.kernel_drops;
        ingest.account(&mut extra, &mut counts.losses);
        start
            .description
            .warnings
            .extend(ingest.warnings().iter().cloned());
    }
    counts.losses.add(LossReason::UdpKernelDrops, port_drops);
    extra.insert("packets_in".into(), packets_in);
    let mut extra_files = Vec::new();
    let (stream_report, stream_errors) = streams.finish();
    extra_files.extend(stream_report.files);
    extra.extend(stream_report.counts);
    counts.losses.merge(&stream_report.losses);
    start.description.warnings.extend(stream_report.warnings);
    if !stream_errors.is_empty() {
        error.get_or_insert(stream_errors.join("; "));
    }
    if let Some(w) = archive {
        match w.commit() {
            Ok(f) => extra_files.push(f),
            Err(e) => archive_error = Some(e.to_string()),
        }
    }
    if let Some(e) = archive_error {
        error.get_or_insert(format!("raw archive: {e}"));
    }
    if !input_errors.is_empty() && error.is_none() {
        error = Some(input_errors.join("; "));
        failure = Some(FailureReason::InputFailed);
    }
    match markers.commit(&start.run_dir.path, &start.metadata) {
        Ok(Some(f)) => extra_files.push(f),
        Ok(None) => {}
        Err(e) => {
            error.get_or_insert(format!("markers: {e:#}"));
        }
    }
    let boards_seen: BTreeSet<u32> = boards.keys().copied().collect();
    extra.insert("boards".into(), boards_seen.len() as u64);
    let summary = session::finish(
        start,
        RunEnd {
            counts,
            sink: sink_result,
            extra_files,
            extra_counts: extra,
            error,
            failure,
            stop_reason: reason,
        },
    );
    match &summary {
        Ok(s) if s.error.is_none() => stats.set_state(RunState::Stopped),
        Ok(s) => {
            let f = s
                .manifest
                .failure
                .unwrap_or(FailureReason::ProcessingFailed);
            report_failure(&stats, f, s.error.as_deref().unwrap_or_default(), false);
            stats.set_state(RunState::Failed);
        }
        Err(e) => {
            report_failure(&stats, FailureReason::WriteFailed, &format!("{e:#}"), false);
            stats.set_state(RunState::Failed);
        }
    }
    summary
}

/// Records a failure in the statistics (the dashboard shows it at once) and, when `print`,
/// says it on stderr in red.
fn report_failure(stats: &LiveStats, failure: FailureReason, error: &str, print: bool) {
    stats.set_failure(failure, error);
    if print {
        eprintln!(
            "{}",
            paint(
                &format!("FAILED ({failure}): {error}: stopping the acquisition"),
                RED
            )
        );
    }
}

const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";

/// `text` in `colour` when stderr is a terminal, plain otherwise.
fn paint(text: &str, colour: &str) -> String {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        format!("{colour}{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// How often the inputs' warnings are checked for new ones to print.
const WARNINGS_EVERY: Duration = Duration::from_millis(100);

/// Prints, on stderr, the inputs' warnings not printed yet (`printed`: per input label, how
/// many were).
fn print_new_warnings(stats: &LiveStats, printed: &mut BTreeMap<String, usize>) {
    for input in stats.inputs_snapshot() {
        let done = printed.entry(input.label).or_insert(0);
        for w in input.warnings.iter().skip(*done) {
            eprintln!("{}", paint(&format!("warning: {w}"), YELLOW));
        }
        *done = (*done).max(input.warnings.len());
    }
}

/// The limits as an operator reads them.
pub fn limit_descriptions(limits: &RunLimits) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(d) = limits.duration {
        out.push(format!("duration {} s", d.as_secs_f64()));
    }
    if let Some(h) = limits.max_hits {
        out.push(format!("hits {h}"));
    }
    if let Some(b) = limits.max_bytes {
        out.push(format!("bytes {b}"));
    }
    out
}

/// Per-board decode counts for the stats snapshot.
fn board_decode_snapshot(boards: &BTreeMap<u32, BoardState<'_>>) -> Vec<BoardDecodeSnapshot> {
    boards
        .iter()
        .map(|(&id, b)| {
            let c = b.counts();
            BoardDecodeSnapshot {
                source_id: id,
                frames: c.frames,
                hits_decoded: c.hits_decoded,
                losses: c.losses,
            }
        })
        .collect()
}
