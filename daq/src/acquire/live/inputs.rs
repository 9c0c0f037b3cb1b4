//! The run's inputs: each on its own thread (UDP, TCP, or a `.sdq` raw archive read back)
//! feeding an [`Ingest`] that hands frame chunks through a bounded ring; [`Inputs`] starts
//! them, reports their fill and bytes, and stops and joins them at the end.

use super::{InputConfig, InputSpec};
use crate::acquire::archive_file::{MAX_ARCHIVED_PAYLOAD, open_archive};
use crate::acquire::ingest::{FrameChunk, Ingest};
use crate::acquire::net::{bind_udp, run_tcp, run_udp};
use crate::acquire::ring::{RingConsumer, RingStats, ring};
use crate::observe::live_stats::LiveStats;
use crate::observe::stop::StopFlag;
use anyhow::{Context, Result, anyhow, bail};
use scandaq_core::{LossCounts, LossReason};
use scandaq_decoders::transport::TransportHeader;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// One started input: its thread and the consumer end of its ring.
pub(super) struct InputThread {
    label: String,
    handle: JoinHandle<Result<Ingest>>,
    /// Frame chunks from the input.
    pub(super) consumer: RingConsumer<FrameChunk>,
    stats: Arc<RingStats>,
    /// A raw archive read back: finite, and read as fast as it is taken, so the processing
    /// side paces it against the other archives by detector time (boards.rs).
    pub(super) finite: bool,
}

impl InputThread {
    /// True when the thread has ended and its ring is drained: nothing more will come.
    pub(super) fn exhausted(&self) -> bool {
        self.handle.is_finished() && self.consumer.is_empty()
    }
}

/// What the inputs left when they were joined.
pub(super) struct InputsEnd {
    /// Every input that ended cleanly.
    pub(super) ingests: Vec<Ingest>,
    /// `LABEL: error` of every input that failed.
    pub(super) errors: Vec<String>,
    /// Chunks the rings dropped when full.
    pub(super) ring_losses: LossCounts,
}

/// The run's started inputs and the flag that stops them.
pub(super) struct Inputs {
    /// The inputs, in configuration order.
    pub(super) threads: Vec<InputThread>,
    stop: StopFlag,
}

impl Inputs {
    /// Holds what every input needs before the run makes any file (a bound UDP socket, an
    /// archive that exists): a port in use fails here.
    pub(super) fn open(configs: &[InputConfig]) -> Result<Vec<OpenedInput>> {
        configs.iter().map(open_input).collect()
    }

    /// Starts the inputs' threads (`archive`: their ingests keep the raw packets for the raw
    /// archive). If one cannot start, those started are stopped and joined.
    pub(super) fn start(
        configs: &[InputConfig],
        opened: Vec<OpenedInput>,
        archive: bool,
        live: &LiveStats,
    ) -> Result<Self> {
        let mut inputs = Self {
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        for (cfg, opened) in configs.iter().zip(opened) {
            match start_input(cfg, opened, archive, inputs.stop.clone(), live) {
                Ok(t) => inputs.threads.push(t),
                Err(e) => {
                    inputs.stop.store(true, Ordering::Relaxed);
                    for t in inputs.threads {
                        let _ = t.handle.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(inputs)
    }

    /// Frame bytes the inputs have pushed into their rings.
    pub(super) fn bytes_in(&self) -> u64 {
        self.threads
            .iter()
            .map(|i| i.stats.pushed_bytes.load(Ordering::Relaxed))
            .sum()
    }

    /// Chunks waiting in the rings.
    pub(super) fn ring_fill(&self) -> u64 {
        self.threads.iter().map(|i| i.consumer.fill() as u64).sum()
    }

    /// True when every input thread has ended.
    pub(super) fn all_finished(&self) -> bool {
        self.threads.iter().all(|i| i.handle.is_finished())
    }

    /// True when every input thread has ended (archive read, TCP stream closed) and its ring
    /// is drained: nothing more to give.
    pub(super) fn all_done(&self) -> bool {
        self.threads.iter().all(InputThread::exhausted)
    }

    /// True when every raw-archive input is exhausted (none left: true). A board that ended
    /// its stream does not end the run while an archive still holds packets (its boards may
    /// not have been seen yet).
    pub(super) fn archives_done(&self) -> bool {
        self.threads
            .iter()
            .filter(|i| i.finite)
            .all(InputThread::exhausted)
    }

    /// Asks every input to stop (they drain and flush).
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Joins the input threads: their ingests, errors and ring losses.
    pub(super) fn join(&mut self) -> InputsEnd {
        let mut end = InputsEnd {
            ingests: Vec::new(),
            errors: Vec::new(),
            ring_losses: LossCounts::default(),
        };
        for input in self.threads.drain(..) {
            end.ring_losses.add(
                LossReason::RingOverflowPackets,
                input.stats.dropped_packets.load(Ordering::Relaxed),
            );
            end.ring_losses.add(
                LossReason::RingOverflowBytes,
                input.stats.dropped_bytes.load(Ordering::Relaxed),
            );
            match input.handle.join() {
                Ok(Ok(ingest)) => end.ingests.push(ingest),
                Ok(Err(e)) => end.errors.push(format!("{}: {e:#}", input.label)),
                Err(_) => end
                    .errors
                    .push(format!("{}: input thread panicked", input.label)),
            }
        }
        end
    }
}

/// An input whose resources are held (a bound UDP socket) but whose thread has not started:
/// everything that can fail at start (a port in use) fails here, before any file is made.
pub(super) enum OpenedInput {
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
    let label = cfg.spec.to_string();
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
        finite: matches!(cfg.spec, InputSpec::Archive(_)),
    })
}

/// Feeds every packet of a `.sdq` archive to `ingest`, in file order.
fn read_archive(path: &Path, mut ingest: Ingest) -> Result<Ingest> {
    let (mut file, _metadata) = open_archive(path)?;
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
