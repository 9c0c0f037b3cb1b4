//! Arrow Flight `DoPut` over the loopback with scandaq's own transport: an acquisition node's
//! `Sender` (slicer thread, one credit-limited link) sends 65 536-row singles batches to a
//! builder's `NodeService`, whose inbound queue a thread drains (counting rows, no sorting).
//! Prints singles/s for each of 5 runs of 160 batches (10.5 M singles; the sender's buffer
//! holds them all, so nothing is dropped: the time is until the last acknowledgement) and the
//! median.
//! `cargo run --release -p scandaq-benches --bin flight_loopback`

use scandaq::acquire::cluster::sender::{Sender, SenderSettings};
use scandaq::acquire::cluster::service::{Inbound, NodeService};
use scandaq::process::cluster::slices::cluster_spec;
use scandaq::process::coinc_stage::{CoincidenceOptions, SorterInput};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROWS: usize = 65_536;
const BATCHES: usize = 160;
const RUNS: usize = 5;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Inbound>(16);
    let service = NodeService::builder(Arc::new(|| serde_json::json!({})), tx, 8);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = service.serve(runtime.handle(), "127.0.0.1:0".parse()?, async {
        let _ = stop_rx.await;
    })?;
    let drained = std::thread::spawn(move || {
        let mut rows = 0u64;
        while let Some(i) = rx.blocking_recv() {
            if let Inbound::Piece { rows: r, .. } = i {
                rows += r.len() as u64;
            }
        }
        rows
    });
    // One slice of an hour: every batch is one body piece for the one builder.
    let spec = cluster_spec(3_600_000_000_000_000, 1, &CoincidenceOptions::default())?;
    let mut rates = Vec::new();
    for run in 0..RUNS {
        let settings = SenderSettings {
            run: run as u64,
            source: format!("bench-{run}"),
            source_id: 0,
            spec,
            builders: vec![("b0".into(), addr)],
            credits: 8,
            // Room for every batch: the figure is the transport's, with nothing dropped.
            buffer_batches: BATCHES + 8,
            batch_rows: ROWS,
            reconnect_every: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(60),
            energy_in_kev: true,
        };
        let mut sender = Sender::start(settings, runtime.handle().clone())?;
        let tap = sender.tap.take().expect("a fresh sender has its tap");
        let t0 = Instant::now();
        for b in 0..BATCHES {
            let base = (b * ROWS) as i64 * 1000;
            let batch = SorterInput {
                t_ps: (0..ROWS as i64).map(|i| base + i * 1000).collect(),
                channel: (0..ROWS as u32).map(|i| i % 4096).collect(),
                energy_kev: vec![511.0; ROWS],
                flags: vec![0; ROWS],
            };
            tap.send(batch)?;
        }
        drop(tap);
        let links = sender.finish()?;
        let seconds = t0.elapsed().as_secs_f64();
        let lost: u64 = links
            .iter()
            .map(|l| l.rows_buffer_full + l.rows_unreachable)
            .sum();
        let sent: u64 = links.iter().map(|l| l.rows_sent).sum();
        let rate = sent as f64 / seconds;
        println!(
            "run {run}: {sent} singles in {seconds:.3} s: {:.1} M singles/s ({:.0} MB/s of columns), lost {lost}",
            rate / 1e6,
            rate * 18.0 / 1e6
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!("median: {:.1} M singles/s", rates[RUNS / 2] / 1e6);
    let _ = stop.send(());
    let _ = runtime.block_on(server);
    drop(runtime);
    println!(
        "builder side counted {} singles",
        drained.join().unwrap_or(0)
    );
    Ok(())
}
