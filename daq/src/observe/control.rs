//! The control socket of a running acquisition: `RUN_DIR/control.sock`, a Unix stream socket
//! readable and writable by its owner only (0600), speaking JSON lines.
//!
//! | request | reply |
//! |---|---|
//! | `{"cmd":"status"}` | `{"ok":true,"snapshot":{...}}` (a [`StatsSnapshot`]) |
//! | `{"cmd":"subscribe"}` | a `{"ok":true,"snapshot":{...}}` line every 100 ms until either side closes |
//! | `{"cmd":"stop"}` | `{"ok":true,"stop":"requested"}`; the run drains, commits and writes its manifest |
//! | `{"cmd":"marker","text":"..."}` | `{"ok":true,"marker":{...}}` (the row written to `markers.parquet`) |
//! | anything else | `{"ok":false,"error":"..."}` |
//!
//! Each client has its own thread; a snapshot is taken when it is sent, so a slow viewer
//! simply gets fewer (always the latest), and a viewer that stops reading is dropped after a
//! 2 s write timeout. Taking a snapshot never blocks the acquisition (see `live_stats`), so
//! no viewer can slow it down.

use crate::observe::live_stats::{LiveStats, RunState, StatsSnapshot};
use crate::observe::markers::SharedMarkers;
use crate::observe::stop::StopFlag;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// File name of the socket in the run directory.
pub const SOCKET_NAME: &str = "control.sock";
/// Period of a subscription's snapshots.
pub const SUBSCRIBE_PERIOD: Duration = Duration::from_millis(100);
/// A client that does not take a line for this long is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the socket serves.
#[derive(Clone)]
pub struct ControlContext {
    /// The run's statistics.
    pub stats: Arc<LiveStats>,
    /// Set by `stop`.
    pub stop: StopFlag,
    /// Where `marker` writes.
    pub markers: SharedMarkers,
}

/// A control socket being served; dropping it (or [`ControlServer::shutdown`]) closes the
/// socket and removes its file.
pub struct ControlServer {
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    path: Arc<Mutex<Option<PathBuf>>>,
    clients: Arc<AtomicUsize>,
}

/// Binds `path` with owner-only permissions: bound under a temporary name, chmod 0600, then
/// renamed into place, so the socket is never reachable at `path` with wider permissions.
fn bind_private(path: &Path) -> Result<UnixListener> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".control-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)
        .with_context(|| format!("cannot create the control socket {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {} to its owner", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move the control socket to {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

impl ControlServer {
    /// Serves `path` now.
    pub fn bind(path: &Path, ctx: ControlContext) -> Result<Self> {
        let listener = bind_private(path)?;
        let mut server = Self::empty();
        *server.path.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.to_path_buf());
        let (shutdown, clients) = (server.shutdown.clone(), server.clients.clone());
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept_loop(listener, ctx, shutdown, clients))?;
        server.thread = Some(thread);
        Ok(server)
    }

    /// Serves `RUN_DIR/control.sock` as soon as the run has a directory (read from
    /// `ctx.stats`); gives up quietly if the run ends without one. A socket that cannot be
    /// created is reported on stderr and the run goes on without it.
    pub fn start_for_run(ctx: ControlContext) -> Self {
        let mut server = Self::empty();
        let (shutdown, clients, slot) = (
            server.shutdown.clone(),
            server.clients.clone(),
            server.path.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let dir = loop {
                    if shutdown.load(Ordering::Relaxed) {
                        return;
                    }
                    let info = ctx.stats.info.get();
                    if !info.run_dir.is_empty() {
                        break PathBuf::from(info.run_dir);
                    }
                    if matches!(ctx.stats.state(), RunState::Failed | RunState::Stopped) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                };
                let path = dir.join(SOCKET_NAME);
                match bind_private(&path) {
                    Ok(listener) => {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
                        accept_loop(listener, ctx, shutdown, clients);
                    }
                    Err(e) => eprintln!("warning: no control socket for this run: {e:#}"),
                }
            })
            .ok();
        server.thread = thread;
        server
    }

    fn empty() -> Self {
        Self {
            shutdown: Arc::new(AtomicBool::new(false)),
            thread: None,
            path: Arc::new(Mutex::new(None)),
            clients: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The socket's path once it is served.
    pub fn socket_path(&self) -> Option<PathBuf> {
        self.path.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops accepting, lets subscribers take a last snapshot (up to 300 ms), removes the
    /// socket file.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let deadline = Instant::now() + Duration::from_millis(300);
        while self.clients.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(p) = self.path.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn accept_loop(
    listener: UnixListener,
    ctx: ControlContext,
    shutdown: Arc<AtomicBool>,
    clients: Arc<AtomicUsize>,
) {
    while !shutdown.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (ctx, shutdown, clients) = (ctx.clone(), shutdown.clone(), clients.clone());
                clients.fetch_add(1, Ordering::Relaxed);
                let spawned = std::thread::Builder::new()
                    .name("control-client".into())
                    .spawn(move || {
                        let _ = serve_client(stream, &ctx, &shutdown);
                        clients.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    // Out of threads: the client is refused (its stream was moved and dropped).
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn snapshot_line(stats: &LiveStats) -> String {
    json!({"ok": true, "snapshot": stats.snapshot()}).to_string()
}

fn serve_client(stream: UnixStream, ctx: &ControlContext, shutdown: &AtomicBool) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut out = stream.try_clone()?;
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let request: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                writeln!(
                    out,
                    "{}",
                    json!({"ok": false, "error": format!("not JSON: {e}; send e.g. {{\"cmd\":\"status\"}}")})
                )?;
                continue;
            }
        };
        match request.get("cmd").and_then(Value::as_str) {
            Some("status") => writeln!(out, "{}", snapshot_line(&ctx.stats))?,
            Some("subscribe") => loop {
                writeln!(out, "{}", snapshot_line(&ctx.stats))?;
                if shutdown.load(Ordering::Relaxed) {
                    return Ok(());
                }
                std::thread::sleep(SUBSCRIBE_PERIOD);
            },
            Some("stop") => {
                ctx.stop.store(true, Ordering::Relaxed);
                writeln!(out, "{}", json!({"ok": true, "stop": "requested"}))?;
            }
            Some("marker") => {
                let text = request.get("text").and_then(Value::as_str).unwrap_or("");
                let marker = ctx.markers.add(text, "ctl");
                writeln!(out, "{}", json!({"ok": true, "marker": marker}))?;
            }
            other => {
                let what = match other {
                    Some(cmd) => format!("unknown command \"{cmd}\""),
                    None => "no \"cmd\" in the request".to_string(),
                };
                writeln!(
                    out,
                    "{}",
                    json!({"ok": false, "error": format!("{what}: use status, subscribe, stop or marker, e.g. {{\"cmd\":\"status\"}}")})
                )?
            }
        }
    }
    Ok(())
}

fn connect(socket: &Path) -> Result<UnixStream> {
    UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot connect to the control socket {} (is the run still going? is it yours?)",
            socket.display()
        )
    })
}

/// Sends one request and returns the reply (an error if the reply says `ok: false`).
pub fn request(socket: &Path, request: &Value) -> Result<Value> {
    let mut stream = connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    writeln!(stream, "{request}")?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .with_context(|| format!("no reply from {}", socket.display()))?;
    let reply: Value = serde_json::from_str(&line)
        .with_context(|| format!("{}: the reply is not JSON: {line:?}", socket.display()))?;
    if reply.get("ok") != Some(&Value::Bool(true)) {
        bail!(
            "{}: {}",
            socket.display(),
            reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("request refused")
        );
    }
    Ok(reply)
}

/// The run's statistics now.
pub fn status(socket: &Path) -> Result<StatsSnapshot> {
    let reply = request(socket, &json!({"cmd": "status"}))?;
    parse_snapshot(reply)
}

fn parse_snapshot(mut reply: Value) -> Result<StatsSnapshot> {
    let s = reply
        .get_mut("snapshot")
        .map(Value::take)
        .ok_or_else(|| anyhow!("the reply has no snapshot"))?;
    serde_json::from_value(s).context("the snapshot does not parse (different scandaq versions?)")
}

/// A stream of snapshots (`subscribe`).
pub struct Subscription {
    reader: BufReader<UnixStream>,
}

impl Subscription {
    /// Subscribes to `socket`.
    pub fn open(socket: &Path) -> Result<Self> {
        let mut stream = connect(socket)?;
        writeln!(stream, "{}", json!({"cmd": "subscribe"}))?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// The next snapshot; `None` once the acquisition closed the socket.
    pub fn next_snapshot(&mut self) -> Result<Option<StatsSnapshot>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let reply: Value =
            serde_json::from_str(&line).context("a subscription line is not JSON")?;
        parse_snapshot(reply).map(Some)
    }
}

fn is_socket(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// The socket to talk to: `arg` (a socket, or a run directory holding `control.sock`), or
/// else the newest run directory under `search` whose socket answers.
pub fn find_socket(arg: Option<&Path>, search: &[PathBuf]) -> Result<PathBuf> {
    if let Some(p) = arg {
        if is_socket(p) {
            return Ok(p.to_path_buf());
        }
        let inside = p.join(SOCKET_NAME);
        if is_socket(&inside) {
            return Ok(inside);
        }
        bail!(
            "{} is neither a control socket nor a run directory with a live {SOCKET_NAME} (has the run ended?)",
            p.display()
        );
    }
    let mut candidates = Vec::new();
    for dir in search {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let sock = e.path().join(SOCKET_NAME);
            if let Some(run) = scandaq_sinks::run_dir::run_number_of(&name)
                && is_socket(&sock)
            {
                candidates.push((run, sock));
            }
        }
    }
    // By run number, so runs an older scandaq named without the width mark (`run-1000000`)
    // are ordered right too.
    candidates.sort();
    for (_, sock) in candidates.into_iter().rev() {
        if UnixStream::connect(&sock).is_ok() {
            return Ok(sock);
        }
    }
    bail!(
        "no running acquisition found under {} (give a run directory or --socket PATH)",
        search
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
