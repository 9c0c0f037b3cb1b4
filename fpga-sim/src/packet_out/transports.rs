//! Where the packets go ([`Destination`]) and how each kind of destination takes a batch:
//! UDP datagrams through `sendmmsg`, a TCP connection served to one receiver (optionally
//! across its reconnections, with the injected disconnect), a `.sdq` raw archive, or a
//! closure.

use super::packetizer::Batch;
use super::{PacketOutOptions, STREAM_BATCH_BYTES};
use crate::config::SimError;
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg, setsockopt, sockopt,
};
use scandaq_sinks::FileRecord;
use scandaq_sinks::archive::RawArchiveWriter;
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a TCP destination waits for the receiver to connect.
pub const TCP_ACCEPT_WAIT: Duration = Duration::from_secs(60);
/// How long a TCP destination serving reconnections waits for the receiver to come back
/// after a disconnect.
pub const TCP_REACCEPT_WAIT: Duration = Duration::from_secs(10);
/// A TCP client that reads nothing for this long ends the run with an error.
pub const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// UDP send buffer requested.
const UDP_SEND_BUFFER: usize = 4 << 20;

/// A closure receiving `(source_id, packet bytes)`; false stops the emitter.
pub type PacketSink<'a> = Box<dyn FnMut(u32, &[u8]) -> bool + 'a>;

/// Where the packets go.
pub enum Destination<'a> {
    /// Datagrams from an ephemeral socket to this address.
    Udp {
        /// Receiver address.
        target: SocketAddr,
    },
    /// Listen here and serve one client (the receiver connects).
    Tcp {
        /// Listening address (port 0 picks a free port; see [`super::PacketOut::local_addr`]).
        listen: SocketAddr,
    },
    /// A `.sdq` raw archive file.
    Archive {
        /// The file to create (its directory must exist).
        path: PathBuf,
        /// Metadata JSON stored after the archive header (run number, configuration...).
        metadata_json: String,
    },
    /// A closure per packet.
    Closure(PacketSink<'a>),
}

impl std::fmt::Debug for Destination<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Udp { target } => write!(f, "UDP to {target}"),
            Self::Tcp { listen } => write!(f, "TCP served on {listen}"),
            Self::Archive { path, .. } => write!(f, "archive {}", path.display()),
            Self::Closure(_) => write!(f, "closure"),
        }
    }
}

pub(crate) fn net(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> SimError {
    let action = action.into();
    move |source| SimError::Network { action, source }
}

/// An open destination.
pub(crate) enum Sink<'a> {
    Udp(UdpSink),
    Tcp(TcpSink),
    Archive(RawArchiveWriter),
    Closure(PacketSink<'a>),
}

/// How many packets or bytes a sink takes at once.
pub(crate) struct BatchLimits {
    pub(crate) packets: usize,
    pub(crate) bytes: usize,
}

/// What a write or a close tells the emitter beyond success.
#[derive(Debug, Default)]
pub(crate) struct SinkReport {
    /// The closure asked to stop.
    pub(crate) stopped: bool,
}

impl<'a> Sink<'a> {
    /// Opens the destination: binds the UDP socket, starts listening on TCP, creates the
    /// archive's `.inprogress` file.
    pub(crate) fn open(
        destination: Destination<'a>,
        options: &PacketOutOptions,
    ) -> Result<(Self, BatchLimits), SimError> {
        let per_packet = BatchLimits {
            packets: 1,
            bytes: usize::MAX,
        };
        let streamed = BatchLimits {
            packets: usize::MAX,
            bytes: STREAM_BATCH_BYTES,
        };
        Ok(match destination {
            Destination::Udp { target } => {
                let limits = BatchLimits {
                    packets: options.udp_batch,
                    bytes: usize::MAX,
                };
                (Sink::Udp(UdpSink::open(target, options.udp_batch)?), limits)
            }
            Destination::Tcp { listen } => {
                let sink = TcpSink::open(listen, options)?;
                // Serving reconnections, packets go one at a time: a client that leaves loses
                // only the packet in flight.
                let limits = if options.tcp_reconnect {
                    per_packet
                } else {
                    streamed
                };
                (Sink::Tcp(sink), limits)
            }
            Destination::Archive {
                path,
                metadata_json,
            } => (
                Sink::Archive(open_archive(&path, &metadata_json)?),
                streamed,
            ),
            Destination::Closure(f) => (Sink::Closure(f), per_packet),
        })
    }

    pub(crate) fn is_network(&self) -> bool {
        matches!(self, Sink::Udp(_) | Sink::Tcp(_))
    }

    pub(crate) fn is_udp(&self) -> bool {
        matches!(self, Sink::Udp(_))
    }

    /// The TCP listening address.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Sink::Tcp(t) => t.listener.local_addr().ok(),
            _ => None,
        }
    }

    /// TCP: waits for the receiver now rather than at the first packet.
    pub(crate) fn wait_for_receiver(&mut self) -> Result<(), SimError> {
        if let Sink::Tcp(t) = self {
            t.connection()?;
        }
        Ok(())
    }

    /// Hands the whole batch to the destination.
    pub(crate) fn write(&mut self, batch: &Batch) -> Result<SinkReport, SimError> {
        let mut report = SinkReport::default();
        match self {
            Sink::Udp(u) => u.send(batch)?,
            Sink::Tcp(t) => t.write(batch)?,
            Sink::Archive(w) => w.write_packets(&batch.bytes, batch.wire_packets())?,
            Sink::Closure(f) => {
                for span in &batch.spans {
                    if !f(span.source_id, batch.packet(span)) {
                        report.stopped = true;
                        break;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Closes the destination: TCP lets the client read everything (`graceful`), the archive
    /// is committed. Returns the archive's record and the TCP disconnect accounting.
    pub(crate) fn close(self, graceful: bool) -> Result<Closed, SimError> {
        Ok(match self {
            Sink::Tcp(t) => t.close(graceful),
            Sink::Archive(w) => Closed {
                archive: Some(w.commit()?),
                ..Closed::default()
            },
            _ => Closed::default(),
        })
    }
}

/// What closing a destination reports.
#[derive(Debug, Default)]
pub(crate) struct Closed {
    pub(crate) archive: Option<FileRecord>,
    /// The injected TCP disconnect: the cut packet's source and hits.
    pub(crate) cut: Option<(u32, u64)>,
    /// TCP clients that went away without being told to.
    pub(crate) client_disconnects: u64,
}

fn open_archive(path: &std::path::Path, metadata_json: &str) -> Result<RawArchiveWriter, SimError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            SimError::OutputDir(format!("archive path {} has no file name", path.display()))
        })?;
    Ok(RawArchiveWriter::create(&dir, &name, metadata_json)?)
}

/// Datagrams from an ephemeral socket.
pub(crate) struct UdpSink {
    socket: UdpSocket,
    target: SockaddrStorage,
    target_text: String,
    headers: MultiHeaders<SockaddrStorage>,
    /// Datagrams per `sendmmsg` call.
    batch: usize,
}

impl UdpSink {
    fn open(target: SocketAddr, batch: usize) -> Result<Self, SimError> {
        let bind = if target.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let socket = UdpSocket::bind(bind).map_err(net("binding a UDP socket"))?;
        // A larger buffer absorbs bursts; the kernel may cap it (not an error).
        let _ = setsockopt(&socket, sockopt::SndBuf, &UDP_SEND_BUFFER);
        Ok(Self {
            socket,
            target: SockaddrStorage::from(target),
            target_text: target.to_string(),
            headers: MultiHeaders::preallocate(batch, None),
            batch,
        })
    }

    fn send(&mut self, batch: &Batch) -> Result<(), SimError> {
        let packets: Vec<&[u8]> = batch
            .spans
            .iter()
            .flat_map(|s| std::iter::repeat_n(batch.packet(s), s.copies))
            .collect();
        for chunk in packets.chunks(self.batch.max(1)) {
            send_datagrams(&self.socket, &mut self.headers, &self.target, chunk)
                .map_err(net(format!("sending datagrams to {}", self.target_text)))?;
        }
        Ok(())
    }
}

/// Sends the packets as datagrams, `sendmmsg` at a time; a partial send continues with the
/// rest, a full buffer is retried (1 ms apart, up to 1 s).
fn send_datagrams(
    socket: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    target: &SockaddrStorage,
    packets: &[&[u8]],
) -> std::io::Result<()> {
    let mut done = 0;
    let mut retries = 0;
    while done < packets.len() {
        let slices: Vec<[IoSlice<'_>; 1]> =
            packets[done..].iter().map(|p| [IoSlice::new(p)]).collect();
        let addrs = vec![Some(*target); slices.len()];
        let cmsgs: [ControlMessage<'_>; 0] = [];
        match sendmmsg(
            socket.as_raw_fd(),
            headers,
            &slices,
            &addrs,
            cmsgs,
            MsgFlags::empty(),
        ) {
            Ok(results) => {
                let n = results.count();
                if n == 0 {
                    retries += 1;
                    if retries > 1000 {
                        return Err(ErrorKind::WriteZero.into());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                done += n;
            }
            Err(Errno::EAGAIN | Errno::ENOBUFS | Errno::EINTR) if retries < 1000 => {
                retries += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            // The receiver's port was not open yet (an ICMP reply to an earlier datagram):
            // UDP does not care, and neither does a sender that streams before anyone listens.
            Err(Errno::ECONNREFUSED) => {}
            Err(e) => return Err(std::io::Error::from(e)),
        }
    }
    Ok(())
}

/// One receiver served over TCP.
pub(crate) struct TcpSink {
    listener: TcpListener,
    conn: Option<TcpStream>,
    /// A receiver has connected once (later accepts are reconnections).
    accepted: bool,
    /// Serve the receiver's reconnections (a client that leaves is not an error).
    reconnect: bool,
    disconnect_after: Option<u64>,
    /// Packets written on the current connection.
    on_connection: u64,
    cut: Option<(u32, u64)>,
    client_disconnects: u64,
}

impl TcpSink {
    fn open(listen: SocketAddr, options: &PacketOutOptions) -> Result<Self, SimError> {
        let listener =
            TcpListener::bind(listen).map_err(net(format!("listening on TCP {listen}")))?;
        listener
            .set_nonblocking(true)
            .map_err(net("configuring the TCP listener"))?;
        Ok(Self {
            listener,
            conn: None,
            accepted: false,
            reconnect: options.tcp_reconnect,
            disconnect_after: options.faults.disconnect_after,
            on_connection: 0,
            cut: None,
            client_disconnects: 0,
        })
    }

    /// The connection, accepting the receiver (or its reconnection) first if needed.
    fn connection(&mut self) -> Result<&mut TcpStream, SimError> {
        if self.conn.is_none() {
            let c = match self.accepted {
                false => accept(&self.listener, TCP_ACCEPT_WAIT, "connected")?,
                true => accept(&self.listener, TCP_REACCEPT_WAIT, "reconnected")?,
            };
            self.accepted = true;
            self.on_connection = 0;
            self.conn = Some(c);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| SimError::OutputDir("the TCP connection vanished".into()))
    }

    fn write(&mut self, batch: &Batch) -> Result<(), SimError> {
        if !self.reconnect {
            return self
                .connection()?
                .write_all(&batch.bytes)
                .map_err(net("writing to the TCP client"));
        }
        for span in &batch.spans {
            self.write_packet(batch.packet(span), span.source_id, span.hits, span.cuttable)?;
        }
        Ok(())
    }

    /// Writes one packet, or cuts the connection in its middle when the injected disconnect
    /// is due; a client that went away is served again from the next packet on.
    fn write_packet(
        &mut self,
        bytes: &[u8],
        source_id: u32,
        hits: u64,
        cuttable: bool,
    ) -> Result<(), SimError> {
        let due = self.cut.is_none()
            && cuttable
            && self
                .disconnect_after
                .is_some_and(|n| self.on_connection >= n);
        let c = self.connection()?;
        if due {
            // Injected disconnect: half the packet, then close.
            let _ = c.write_all(&bytes[..bytes.len() / 2]);
            let _ = c.flush();
            let _ = c.shutdown(Shutdown::Both);
            self.conn = None;
            self.cut = Some((source_id, hits));
            return Ok(());
        }
        match c.write_all(bytes) {
            Ok(()) => self.on_connection += 1,
            Err(e) if client_gone(&e) => {
                self.client_disconnects += 1;
                self.conn = None;
            }
            Err(e) => return Err(net("writing to the TCP client")(e)),
        }
        Ok(())
    }

    fn close(self, graceful: bool) -> Closed {
        if let (true, Some(mut c)) = (graceful, self.conn) {
            // Let the client read everything, then wait (briefly) for it to close.
            let _ = c.flush();
            let _ = c.shutdown(Shutdown::Write);
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut sink = [0u8; 256];
            while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
        }
        Closed {
            archive: None,
            cut: self.cut,
            client_disconnects: self.client_disconnects,
        }
    }
}

/// Waits up to `wait` for a client on the (non-blocking) listener.
pub(crate) fn accept(
    listener: &TcpListener,
    wait: Duration,
    what: &str,
) -> Result<TcpStream, SimError> {
    let deadline = Instant::now() + wait;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)
                    .map_err(net("configuring the TCP connection"))?;
                s.set_write_timeout(Some(TCP_WRITE_TIMEOUT))
                    .map_err(net("configuring the TCP connection"))?;
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                if Instant::now() >= deadline {
                    let addr = listener
                        .local_addr()
                        .map_or_else(|_| "?".to_string(), |a| a.to_string());
                    return Err(SimError::Network {
                        action: format!(
                            "no client {what} on {addr} within {} s",
                            wait.as_secs_f64()
                        ),
                        source: ErrorKind::TimedOut.into(),
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            // A client that gave up before being accepted: wait for the next one.
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
            Err(e) => return Err(net("accepting a TCP client")(e)),
        }
    }
}

fn client_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::UnexpectedEof
    )
}
