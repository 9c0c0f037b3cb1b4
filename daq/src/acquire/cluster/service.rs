//! Every node's Arrow Flight service: `DoAction("stats")` answers the node's statistics
//! snapshot as JSON (any Flight client, pyarrow included, can read it); `ListActions` lists
//! it; on a builder `DoPut` takes one long-lived singles stream per acquisition node and
//! acknowledges each message with a credit. Everything else is `unimplemented`.
//!
//! Runs on the node's tokio runtime; a received piece goes to the builder's assembly thread
//! through a bounded channel, so a slow builder holds its acknowledgements back (credits),
//! and HTTP/2 flow control holds the sender's socket.

use crate::process::cluster::protocol::{
    Credit, PieceMeta, PieceRole, STATS_ACTION, from_record_batch,
};
use crate::process::coinc_stage::SorterInput;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt, TryStreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// Largest Flight message accepted (a 65 k-row batch is 1.2 MB).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// HTTP/2 windows: a stream may have this much unacknowledged at the transport level.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// The connection's window.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// What the builder's assembly thread receives from the Flight streams.
#[derive(Debug)]
pub enum Inbound {
    /// A piece (rows may be empty for a marker).
    Piece {
        /// Its metadata.
        meta: PieceMeta,
        /// Its rows.
        rows: SorterInput,
        /// The DoPut stream it came on (numbered from 1 per process).
        stream: u64,
    },
    /// A source's stream ended without end-of-stream (the node died or the link broke).
    SourceLost {
        /// The acquisition node.
        source: String,
        /// The stream that broke.
        stream: u64,
    },
}

/// Gives a node's statistics snapshot as JSON.
pub type StatsFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// A node's Flight service.
#[derive(Clone)]
pub struct NodeService {
    stats: StatsFn,
    /// Builders: where received pieces go; None on acquisition nodes.
    inbound: Option<tokio::sync::mpsc::Sender<Inbound>>,
    credits: u32,
}

impl NodeService {
    /// An acquisition node's service (stats only).
    pub fn stats_only(stats: StatsFn) -> Self {
        Self {
            stats,
            inbound: None,
            credits: 0,
        }
    }

    /// A builder's service: pieces go to `inbound`, each acknowledged with `credits`.
    pub fn builder(
        stats: StatsFn,
        inbound: tokio::sync::mpsc::Sender<Inbound>,
        credits: u32,
    ) -> Self {
        Self {
            stats,
            inbound: Some(inbound),
            credits,
        }
    }

    /// Binds `addr` now, so a port in use is an error here and not a server that stops later,
    /// then serves on `runtime` until `shutdown` resolves. Returns the address bound (the port
    /// the system chose for port 0) and the server's task.
    pub fn serve(
        self,
        runtime: &tokio::runtime::Handle,
        addr: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(SocketAddr, ServerTask), ListenError> {
        // The listener registers with the runtime's reactor.
        let _in_runtime = runtime.enter();
        let listen_error = |source| ListenError { addr, source };
        let incoming = tonic::transport::server::TcpIncoming::bind(addr)
            .map_err(listen_error)?
            .with_nodelay(Some(true));
        let bound = incoming.local_addr().map_err(listen_error)?;
        let server = FlightServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let serving = tonic::transport::Server::builder()
            .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
            .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
            .add_service(server)
            .serve_with_incoming_shutdown(incoming, shutdown);
        Ok((bound, runtime.spawn(serving)))
    }
}

/// A node's Flight server running on its runtime; it ends with the server's error, if any.
pub type ServerTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// A node could not listen on its Flight address.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} (another process may hold the port, a node of an earlier run \
     still running?, or the address is not this machine's: stop it, or change this node's \
     `listen` in the cluster file)"
)]
pub struct ListenError {
    /// The address in the cluster file.
    pub addr: SocketAddr,
    /// What the operating system said.
    #[source]
    pub source: std::io::Error,
}

/// Numbers the DoPut streams a builder takes (so a stream that breaks is told from another
/// claiming the same name).
static NEXT_STREAM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Reads one DoPut stream into `inbound`, acknowledging every message.
async fn take_stream(
    stream: Streaming<FlightData>,
    inbound: tokio::sync::mpsc::Sender<Inbound>,
    mut acks: futures::channel::mpsc::Sender<Result<PutResult, Status>>,
    credits: u32,
) {
    let id = NEXT_STREAM.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut decoder = FlightDataDecoder::new(stream.map_err(FlightError::from));
    let mut source: Option<String> = None;
    let mut ended = false;
    while let Some(item) = decoder.next().await {
        let decoded = match item {
            Ok(d) => d,
            Err(e) => {
                eprintln!("scandaq builder: a singles stream ended with an error: {e}");
                break;
            }
        };
        let metadata = decoded.app_metadata();
        let rows = match decoded.payload {
            DecodedPayload::Schema(_) => continue,
            DecodedPayload::None => SorterInput::default(),
            DecodedPayload::RecordBatch(batch) => match from_record_batch(&batch) {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = acks
                        .send(Err(Status::invalid_argument(format!("{e:#}"))))
                        .await;
                    break;
                }
            },
        };
        let meta = match PieceMeta::parse(&metadata) {
            Ok(m) => m,
            Err(e) => {
                let _ = acks
                    .send(Err(Status::invalid_argument(format!("{e:#}"))))
                    .await;
                break;
            }
        };
        source.get_or_insert_with(|| meta.source.clone());
        ended |= meta.role == PieceRole::EndOfStream;
        let credit = Credit {
            acked_sequence: meta.sequence,
            credits,
        };
        let piece = Inbound::Piece {
            meta,
            rows,
            stream: id,
        };
        if inbound.send(piece).await.is_err() {
            let _ = acks
                .send(Err(Status::unavailable("the builder is stopping")))
                .await;
            return;
        }
        let ack = PutResult {
            app_metadata: credit.to_bytes(),
        };
        if acks.send(Ok(ack)).await.is_err() {
            break;
        }
        if ended {
            break;
        }
    }
    if let (Some(source), false) = (source, ended) {
        let _ = inbound
            .send(Inbound::SourceLost { source, stream: id })
            .await;
    }
}

type Stream<T> = BoxStream<'static, Result<T, Status>>;

#[tonic::async_trait]
impl FlightService for NodeService {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoExchangeStream = Stream<FlightData>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type != STATS_ACTION {
            return Err(Status::invalid_argument(format!(
                "unknown action {:?}: this node answers \"{STATS_ACTION}\"",
                action.r#type
            )));
        }
        let body =
            serde_json::to_vec(&(self.stats)()).map_err(|e| Status::internal(e.to_string()))?;
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(futures::stream::iter([Ok(result)]).boxed()))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let action = ActionType {
            r#type: STATS_ACTION.into(),
            description: "the node's statistics snapshot, JSON".into(),
        };
        Ok(Response::new(futures::stream::iter([Ok(action)]).boxed()))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let Some(inbound) = self.inbound.clone() else {
            return Err(Status::unimplemented("DoPut: this node is not a builder"));
        };
        let (acks, acks_rx) = futures::channel::mpsc::channel(self.credits as usize + 1);
        tokio::spawn(take_stream(
            request.into_inner(),
            inbound,
            acks,
            self.credits,
        ));
        Ok(Response::new(acks_rx.boxed()))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("handshake: no authentication"))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("list_flights"))
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("get_flight_info"))
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info"))
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("get_schema"))
    }

    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        Err(Status::unimplemented(
            "do_get: the tables are Parquet files under the output root",
        ))
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
}

/// Asks the node at `addr` for its statistics (`DoAction("stats")`).
pub async fn fetch_stats(addr: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {addr}: {e}"))?;
    let mut client = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
    let mut results = client
        .do_action(Action::new(STATS_ACTION, ""))
        .await
        .map_err(|e| anyhow::anyhow!("{addr}: DoAction(stats): {e}"))?
        .into_inner();
    let first = results
        .message()
        .await
        .map_err(|e| anyhow::anyhow!("{addr}: DoAction(stats): {e}"))?
        .ok_or_else(|| anyhow::anyhow!("{addr}: DoAction(stats) returned nothing"))?;
    Ok(serde_json::from_slice(&first.body)?)
}
