//! The `fpga-sim` flags the packet-stream presets (`opm`, `us`) share: what to simulate for
//! how long, where the packets go, and the transport-level faults.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The flags `fpga-sim` shares between the stream presets.
#[derive(Clone, Debug, Default)]
pub struct CommonArgs {
    /// `--duration`: simulated time, s.
    pub duration_s: f64,
    /// `--seed`.
    pub seed: u64,
    /// `--out`: channel table / sequence, truth, summary.
    pub out: Option<PathBuf>,
    /// `--udp`: the receiver.
    pub udp: Option<SocketAddr>,
    /// `--tcp`: the listening address.
    pub tcp: Option<SocketAddr>,
    /// `--source-id-base`: the stream's source id.
    pub source_id: u32,
    /// `--lose-packets`: packet-loss probability.
    pub lose_packets: Option<f64>,
    /// `--max-packet-bytes`: largest packet.
    pub max_packet_bytes: Option<usize>,
    /// `--unpaced`: send as fast as possible.
    pub unpaced: bool,
    /// `--prerender`: generate everything first, then send it paced (us preset).
    pub prerender: bool,
}
