//! An acquisition node's side of the transport: the slicer thread cuts the node's time-sorted
//! singles into slice pieces (`SourceSlicer`) and offers each to its builder's bounded queue;
//! one tokio task per builder keeps one long-lived `DoPut` open and sends from the queue only
//! while it holds credits (the builder's acknowledgements), so a slow builder fills the queue
//! and then new pieces are dropped and counted (`cluster_buffer_full`), never waited for on the
//! acquisition threads. A builder that is gone has its pieces counted
//! (`cluster_builder_unreachable`) and its slices listed missing; the task tries to reach it
//! again every `reconnect_every` and, once back, resumes at the next slice boundary.

use crate::process::cluster::protocol::{Credit, PieceMeta, PieceRole, SinglesEncoder};
use crate::process::cluster::slices::Slicer;
use crate::process::coinc_stage::SorterInput;
use anyhow::{Context, Result, anyhow};
use arrow_flight::FlightData;
use arrow_flight::flight_service_client::FlightServiceClient;
use crossbeam_channel::Receiver;
use futures::SinkExt;
use scandaq_core::slicing::SliceSpec;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// What a sender is told.
#[derive(Clone, Debug)]
pub struct SenderSettings {
    /// Run number.
    pub run: u64,
    /// This node's name (the `source` of every piece).
    pub source: String,
    /// Its index among the acquisition nodes (the slicing library's source id).
    pub source_id: u32,
    /// Slicing.
    pub spec: SliceSpec,
    /// The builders, by index (slice k goes to builder k mod N).
    pub builders: Vec<(String, SocketAddr)>,
    /// Batches a builder may have unacknowledged at most (our side of its credits).
    pub credits: u32,
    /// Batches queued per builder before new ones are dropped.
    pub buffer_batches: usize,
    /// Rows per batch at most.
    pub batch_rows: usize,
    /// How often to try a lost builder again.
    pub reconnect_every: Duration,
    /// How long to wait at the end for the last acknowledgements.
    pub drain_timeout: Duration,
    /// Energies are keV.
    pub energy_in_kev: bool,
}

/// One builder link's counters (shared with the stats action).
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Connected now.
    pub connected: AtomicBool,
    /// Singles sent and acknowledged (or in flight); a batch lost unacknowledged moves to
    /// `rows_unreachable`.
    pub rows_sent: AtomicU64,
    /// Messages sent.
    pub batches_sent: AtomicU64,
    /// Messages acknowledged.
    pub batches_acked: AtomicU64,
    /// Singles routed to this builder (offered to its queue): at the end, sent + buffer full
    /// + unreachable.
    pub rows_routed: AtomicU64,
    /// Singles dropped because the queue was full (`cluster_buffer_full`).
    pub rows_buffer_full: AtomicU64,
    /// Singles not delivered because the builder was gone (`cluster_builder_unreachable`).
    pub rows_unreachable: AtomicU64,
    /// Connections made (1 when it never broke).
    pub connections: AtomicU64,
    /// Batches in the queue now.
    pub queued: AtomicU64,
    /// Slices this link could not deliver whole, with the reason.
    pub missing: Mutex<BTreeMap<i64, String>>,
}

/// A builder link's figures, as the stats action and the node report show them.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct LinkReport {
    /// Builder name.
    pub builder: String,
    /// Its address.
    pub addr: String,
    /// Connected now.
    pub connected: bool,
    /// Singles sent and acknowledged (or in flight at the end).
    pub rows_sent: u64,
    /// Messages sent.
    pub batches_sent: u64,
    /// Messages acknowledged.
    pub batches_acked: u64,
    /// Messages queued.
    pub queued: u64,
    /// Singles routed to this builder: at the end `rows_sent + rows_buffer_full +
    /// rows_unreachable`.
    #[serde(default)]
    pub rows_routed: u64,
    /// `cluster_buffer_full` singles.
    pub rows_buffer_full: u64,
    /// `cluster_builder_unreachable` singles.
    pub rows_unreachable: u64,
    /// Connections made.
    pub connections: u64,
    /// Slices not delivered whole: `[slice, reason]`.
    pub missing_slices: Vec<(i64, String)>,
}

impl LinkCounters {
    fn report(&self, builder: &str, addr: SocketAddr) -> LinkReport {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkReport {
            builder: builder.into(),
            addr: addr.to_string(),
            connected: self.connected.load(Ordering::Relaxed),
            rows_sent: get(&self.rows_sent),
            batches_sent: get(&self.batches_sent),
            batches_acked: get(&self.batches_acked),
            queued: get(&self.queued),
            rows_routed: get(&self.rows_routed),
            rows_buffer_full: get(&self.rows_buffer_full),
            rows_unreachable: get(&self.rows_unreachable),
            connections: get(&self.connections),
            missing_slices: self
                .missing
                .lock()
                .map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect())
                .unwrap_or_default(),
        }
    }

    fn lose(&self, slice: i64, rows: u64, reason: &str) {
        let counter = if reason == "cluster_buffer_full" {
            &self.rows_buffer_full
        } else {
            &self.rows_unreachable
        };
        counter.fetch_add(rows, Ordering::Relaxed);
        if let Ok(mut m) = self.missing.lock() {
            m.entry(slice).or_insert_with(|| reason.to_string());
        }
    }
}

/// A piece on its way: metadata (its sequence set when sent) and the encoded rows.
struct Outgoing {
    meta: PieceMeta,
    data: FlightData,
    rows: u64,
}

/// Every link's counters, by builder index.
#[derive(Clone)]
pub struct SenderCounters {
    links: Vec<(String, SocketAddr, Arc<LinkCounters>)>,
    /// The first and last slice this node had singles in.
    range: Arc<Mutex<Option<(i64, i64)>>>,
    /// Singles before slice 0: routed nowhere (`cluster_before_first_slice`).
    rows_before_first: Arc<AtomicU64>,
}

impl SenderCounters {
    /// The first and last slice this node had singles in.
    pub fn slice_range(&self) -> Option<(i64, i64)> {
        self.range.lock().ok().and_then(|r| *r)
    }

    fn note_slices(&self, first: i64, last: i64) {
        if let Ok(mut r) = self.range.lock() {
            *r = Some(r.map_or((first, last), |(a, b)| (a.min(first), b.max(last))));
        }
    }

    /// Singles before slice 0 (negative detector time), which no builder owns.
    pub fn rows_before_first_slice(&self) -> u64 {
        self.rows_before_first.load(Ordering::Relaxed)
    }

    /// Each link's figures now.
    pub fn reports(&self) -> Vec<LinkReport> {
        self.links.iter().map(|(n, a, c)| c.report(n, *a)).collect()
    }
}

/// The running sender: feed [`Sender::tap`] (bounded), drop it, then [`Sender::finish`].
pub struct Sender {
    /// Where the node's singles go (the live run's singles tap).
    pub tap: Option<crossbeam_channel::Sender<SorterInput>>,
    slicer: Option<std::thread::JoinHandle<Result<()>>>,
    links: Vec<tokio::task::JoinHandle<()>>,
    /// Counters.
    pub counters: SenderCounters,
    runtime: tokio::runtime::Handle,
}

/// Batches waiting for the slicer thread.
const TAP_QUEUE: usize = 8;

impl Sender {
    /// Starts one link task per builder on `runtime` and the slicer thread.
    pub fn start(settings: SenderSettings, runtime: tokio::runtime::Handle) -> Result<Self> {
        let (tap, tap_rx) = crossbeam_channel::bounded::<SorterInput>(TAP_QUEUE);
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        let mut links = Vec::new();
        for (name, addr) in &settings.builders {
            let (tx, rx) = mpsc::channel::<Outgoing>(settings.buffer_batches);
            let counters = Arc::new(LinkCounters::default());
            let link = LinkTask {
                addr: *addr,
                counters: counters.clone(),
                credits: settings.credits.max(1),
                reconnect_every: settings.reconnect_every,
                drain_timeout: settings.drain_timeout,
            };
            tasks.push(runtime.spawn(link.run(rx)));
            queues.push(tx);
            links.push((name.clone(), *addr, counters));
        }
        let counters = SenderCounters {
            links,
            range: Arc::default(),
            rows_before_first: Arc::default(),
        };
        let slicer_counters = counters.clone();
        let slicer = std::thread::Builder::new()
            .name("cluster-slicer".into())
            .spawn(move || slice_loop(settings, tap_rx, queues, slicer_counters))
            .context("cannot start the cluster slicer thread")?;
        Ok(Self {
            tap: Some(tap),
            slicer: Some(slicer),
            links: tasks,
            counters,
            runtime,
        })
    }

    /// Waits for the slicer (its input must be closed: every tap clone dropped) and the links
    /// (they send end-of-stream and wait for the last acknowledgements, at most the drain
    /// timeout), then reports.
    pub fn finish(mut self) -> Result<Vec<LinkReport>> {
        drop(self.tap.take());
        let slicer = self
            .slicer
            .take()
            .ok_or_else(|| anyhow!("the cluster sender was finished already"))?;
        let sliced = slicer
            .join()
            .map_err(|_| anyhow!("the cluster slicer thread panicked"))?;
        for task in self.links.drain(..) {
            let _ = self.runtime.block_on(task);
        }
        sliced?;
        Ok(self.counters.reports())
    }
}

/// The slicer thread: pieces to the links' queues, watermarks, end of stream.
fn slice_loop(
    settings: SenderSettings,
    tap: Receiver<SorterInput>,
    queues: Vec<mpsc::Sender<Outgoing>>,
    counters: SenderCounters,
) -> Result<()> {
    let mut slicer = Slicer::new(settings.spec, settings.source_id)?;
    let mut encoder = SinglesEncoder::default();
    let mut marked: Vec<Option<i64>> = vec![None; queues.len()];
    let meta = |slice: i64, role: PieceRole, end_of_slice: bool| PieceMeta {
        run: settings.run,
        slice,
        source: settings.source.clone(),
        sequence: 0,
        role,
        end_of_slice,
        dropped_rows: 0,
        energy_in_kev: settings.energy_in_kev,
    };
    for batch in tap {
        let (pieces, through) = slicer.push(&batch.t_ps)?;
        counters
            .rows_before_first
            .store(slicer.rows_before_first(), Ordering::Relaxed);
        if let (Some(&first), Some(&last)) = (batch.t_ps.first(), batch.t_ps.last()) {
            counters.note_slices(settings.spec.slice_of(first), settings.spec.slice_of(last));
        }
        for piece in pieces {
            let b = piece.builder as usize;
            let (queue, link) = (&queues[b], &counters.links[b].2);
            let mut start = piece.rows.start;
            while start < piece.rows.end {
                let end = (start + settings.batch_rows).min(piece.rows.end);
                let m = meta(piece.slice, PieceRole::of(piece.role), false);
                let data = encoder.piece(&batch, start..end, &m)?;
                offer(
                    queue,
                    link,
                    Outgoing {
                        meta: m,
                        data,
                        rows: (end - start) as u64,
                    },
                );
                start = end;
            }
        }
        if let Some(through) = through {
            for (b, queue) in queues.iter().enumerate() {
                let Some(slice) = last_owned(&settings.spec, b as u32, through) else {
                    continue;
                };
                if marked[b].is_some_and(|m| m >= slice) {
                    continue;
                }
                let m = meta(slice, PieceRole::Body, true);
                let out = Outgoing {
                    data: encoder.marker(&m)?,
                    meta: m,
                    rows: 0,
                };
                // A marker that finds the queue full is sent with a later one (a watermark).
                if queue.try_send(out).is_ok() {
                    counters.links[b].2.queued.fetch_add(1, Ordering::Relaxed);
                    marked[b] = Some(slice);
                }
            }
        }
    }
    let last = counters.slice_range().map_or(-1, |(_, last)| last);
    for (queue, link) in queues.iter().zip(&counters.links) {
        let m = meta(last, PieceRole::EndOfStream, true);
        let out = Outgoing {
            data: encoder.marker(&m)?,
            meta: m,
            rows: 0,
        };
        // The link drains its queue whatever the builder does (sends, or counts it lost).
        if queue.blocking_send(out).is_ok() {
            link.2.queued.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Offers `out` to a link's queue: full -> dropped and counted, closed -> counted.
fn offer(queue: &mpsc::Sender<Outgoing>, link: &LinkCounters, out: Outgoing) {
    let (slice, rows) = (out.meta.slice, out.rows);
    link.rows_routed.fetch_add(rows, Ordering::Relaxed);
    match queue.try_send(out) {
        Ok(()) => {
            link.queued.fetch_add(1, Ordering::Relaxed);
        }
        Err(mpsc::error::TrySendError::Full(_)) => link.lose(slice, rows, "cluster_buffer_full"),
        Err(mpsc::error::TrySendError::Closed(_)) => {
            link.lose(slice, rows, "cluster_builder_unreachable")
        }
    }
}

/// The last slice at or before `through` that builder `b` owns.
fn last_owned(spec: &SliceSpec, b: u32, through: i64) -> Option<i64> {
    let n = i64::from(spec.builders);
    let back = (through - i64::from(b)).rem_euclid(n);
    let slice = through - back;
    (slice >= 0 || through < 0).then_some(slice)
}

/// How a connection ended.
enum Ended {
    /// The queue closed and everything sent was acknowledged (or the drain timed out).
    Finished,
    /// The builder or the link went away.
    Lost,
}

/// One builder link.
struct LinkTask {
    addr: SocketAddr,
    counters: Arc<LinkCounters>,
    credits: u32,
    reconnect_every: Duration,
    drain_timeout: Duration,
}

impl LinkTask {
    async fn run(self, mut queue: mpsc::Receiver<Outgoing>) {
        // After a loss: pieces of slices up to this one are not sent (the slice is broken).
        let mut skip_through: Option<i64> = None;
        loop {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
                .map(|e| {
                    e.initial_stream_window_size(Some(
                        crate::acquire::cluster::service::STREAM_WINDOW_BYTES,
                    ))
                    .initial_connection_window_size(Some(
                        crate::acquire::cluster::service::CONNECTION_WINDOW_BYTES,
                    ))
                    .connect_timeout(self.reconnect_every.max(Duration::from_millis(200)))
                });
            let channel = match endpoint {
                Ok(e) => e.connect().await.ok(),
                Err(_) => None,
            };
            let ended = match channel {
                Some(channel) => {
                    self.counters.connections.fetch_add(1, Ordering::Relaxed);
                    self.counters.connected.store(true, Ordering::Relaxed);
                    let client = FlightServiceClient::new(channel)
                        .max_decoding_message_size(
                            crate::acquire::cluster::service::MAX_MESSAGE_BYTES,
                        )
                        .max_encoding_message_size(
                            crate::acquire::cluster::service::MAX_MESSAGE_BYTES,
                        );
                    self.stream(client, &mut queue, &mut skip_through).await
                }
                None => Ended::Lost,
            };
            self.counters.connected.store(false, Ordering::Relaxed);
            match ended {
                Ended::Finished => return,
                Ended::Lost => {
                    if self.discard_for(&mut queue, &mut skip_through).await {
                        return;
                    }
                }
            }
        }
    }

    /// While the builder is unreachable: counts what arrives for `reconnect_every`; true when
    /// the queue closed (the node is done).
    async fn discard_for(
        &self,
        queue: &mut mpsc::Receiver<Outgoing>,
        skip_through: &mut Option<i64>,
    ) -> bool {
        let deadline = tokio::time::sleep(self.reconnect_every);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                item = queue.recv() => match item {
                    None => return true,
                    Some(o) => {
                        self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                        if o.meta.role == PieceRole::EndOfStream {
                            return true;
                        }
                        self.counters.lose(o.meta.slice, o.rows, "cluster_builder_unreachable");
                        *skip_through = Some(skip_through.map_or(o.meta.slice, |s| s.max(o.meta.slice)));
                    }
                },
                _ = &mut deadline => return false,
            }
        }
    }

    /// One DoPut: sends from the queue within the credits until the queue closes or the
    /// builder goes away.
    async fn stream(
        &self,
        mut client: FlightServiceClient<tonic::transport::Channel>,
        queue: &mut mpsc::Receiver<Outgoing>,
        skip_through: &mut Option<i64>,
    ) -> Ended {
        let (mut tx, rx) = futures::channel::mpsc::channel::<FlightData>(2);
        if tx
            .send(SinglesEncoder::default().schema_message())
            .await
            .is_err()
        {
            return Ended::Lost;
        }
        let responses = match client.do_put(rx).await {
            Ok(r) => r.into_inner(),
            Err(_) => return Ended::Lost,
        };
        let acks = Arc::new(Acks::default());
        let (lost_tx, mut lost) = tokio::sync::watch::channel(false);
        let reader = tokio::spawn(read_acks(responses, acks.clone(), lost_tx));
        let mut in_flight: VecDeque<(u64, i64, u64)> = VecDeque::new();
        let mut seq = 0u64;
        // The last slice this connection sent rows of: if the builder dies, the rest of that
        // slice must not go to its next life (its first rows died with this one).
        let mut last_sent: Option<i64> = None;
        let ended = loop {
            // Credits: at most `credits` unacknowledged messages.
            while seq >= acks.acked.load(Ordering::Acquire) + u64::from(acks.window(self.credits)) {
                tokio::select! {
                    _ = acks.notify.notified() => {}
                    _ = lost.wait_for(|&l| l) => break,
                }
                if *lost.borrow() {
                    break;
                }
            }
            if *lost.borrow() {
                break Ended::Lost;
            }
            settle(&mut in_flight, acks.acked.load(Ordering::Acquire));
            let Some(mut out) = queue.recv().await else {
                break self.drain(&acks, &mut lost, seq).await;
            };
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            let end = out.meta.role == PieceRole::EndOfStream;
            if !end && skip_through.is_some_and(|s| out.meta.slice <= s) {
                self.counters
                    .lose(out.meta.slice, out.rows, "cluster_builder_unreachable");
                continue;
            }
            out.meta.sequence = seq;
            out.data.app_metadata = out.meta.to_bytes();
            let sent = tokio::select! {
                r = tx.send(out.data) => r.is_ok(),
                _ = lost.wait_for(|&l| l) => false,
            };
            if !sent {
                self.counters
                    .lose(out.meta.slice, out.rows, "cluster_builder_unreachable");
                break Ended::Lost;
            }
            in_flight.push_back((seq, out.meta.slice, out.rows));
            if !end {
                last_sent = Some(last_sent.map_or(out.meta.slice, |s| s.max(out.meta.slice)));
            }
            seq += 1;
            self.counters.batches_sent.fetch_add(1, Ordering::Relaxed);
            self.counters
                .rows_sent
                .fetch_add(out.rows, Ordering::Relaxed);
            if end {
                break self.drain(&acks, &mut lost, seq).await;
            }
        };
        drop(tx);
        if let Ended::Lost = ended {
            // What was sent but never acknowledged is lost with the builder.
            settle(&mut in_flight, acks.acked.load(Ordering::Acquire));
            for (_, slice, rows) in in_flight.drain(..) {
                // Counted once: no longer sent, now unreachable (routed = sent + counted).
                self.counters.rows_sent.fetch_sub(rows, Ordering::Relaxed);
                self.counters
                    .lose(slice, rows, "cluster_builder_unreachable");
                *skip_through = Some(skip_through.map_or(slice, |s| s.max(slice)));
            }
            // A slice begun on this connection is broken even if all it sent was
            // acknowledged: a restarted builder rejoins at the next slice boundary.
            if let Some(slice) = last_sent {
                *skip_through = Some(skip_through.map_or(slice, |s| s.max(slice)));
            }
            reader.abort();
        } else {
            let _ = tokio::time::timeout(self.drain_timeout, reader).await;
        }
        self.counters
            .batches_acked
            .store(acks.acked.load(Ordering::Acquire), Ordering::Relaxed);
        ended
    }

    /// Waits for every sent message's acknowledgement (at most the drain timeout).
    async fn drain(
        &self,
        acks: &Acks,
        lost: &mut tokio::sync::watch::Receiver<bool>,
        seq: u64,
    ) -> Ended {
        let wait = async {
            while acks.acked.load(Ordering::Acquire) < seq {
                tokio::select! {
                    _ = acks.notify.notified() => {}
                    _ = lost.wait_for(|&l| l) => return Ended::Lost,
                }
            }
            Ended::Finished
        };
        tokio::time::timeout(self.drain_timeout, wait)
            .await
            .unwrap_or(Ended::Lost)
    }
}

/// Forgets the in-flight entries acknowledged (`acked` = messages acknowledged).
fn settle(in_flight: &mut VecDeque<(u64, i64, u64)>, acked: u64) {
    while in_flight.front().is_some_and(|&(s, _, _)| s < acked) {
        in_flight.pop_front();
    }
}

/// Acknowledgements received on one stream.
#[derive(Default)]
struct Acks {
    /// Messages acknowledged (last acknowledged sequence + 1).
    acked: AtomicU64,
    /// The builder's last credit (0 = none yet).
    credits: std::sync::atomic::AtomicU32,
    notify: tokio::sync::Notify,
}

impl Acks {
    /// Messages that may be unacknowledged: the builder's credit, at most ours.
    fn window(&self, ours: u32) -> u32 {
        match self.credits.load(Ordering::Acquire) {
            0 => ours,
            theirs => theirs.min(ours),
        }
    }
}

/// Reads the builder's `PutResult`s; raises `lost` when the stream ends or fails.
async fn read_acks(
    mut responses: tonic::Streaming<arrow_flight::PutResult>,
    acks: Arc<Acks>,
    lost: tokio::sync::watch::Sender<bool>,
) {
    while let Ok(Some(put)) = responses.message().await {
        if let Ok(credit) = Credit::parse(&put.app_metadata) {
            acks.acked
                .fetch_max(credit.acked_sequence + 1, Ordering::AcqRel);
            acks.credits.store(credit.credits.max(1), Ordering::Release);
            acks.notify.notify_one();
        }
    }
    let _ = lost.send(true);
    acks.notify.notify_one();
}
