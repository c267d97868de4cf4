//! An election node: the thin I/O shell around an [`election::Machine`](crate::election::Machine).
//!
//! It serves `synclab.election.v1.ElectionService`, feeds the machine the requests that arrive, the
//! outcome of every message it sends (each RPC has a deadline shorter than the suspicion timeout; an
//! unreachable peer counts as dead for that message) and its timers, and keeps the node's highest term
//! in a state file, written before any message that depends on it leaves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::{Notify, watch};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::client::{ClientError, channel, request, with_deadline};
use crate::election::{Algorithm, Config, ConfigError, Envelope, Machine, Message, NodeId, Reply, Role, SendError, Term};
use crate::live_clock::host_now;
use crate::proto::election as pb;
use crate::proto::election::election_service_client::ElectionServiceClient;
use crate::proto::election::election_service_server::{ElectionService, ElectionServiceServer};
use crate::proto::nanos_to_timestamp;
use crate::server::{ServerError, base_routes};

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// `--peers` did not parse.
    #[error("invalid value for '--peers': {0}")]
    Peers(String),
    /// The group does not work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The RPC deadline is not below the timeout.
    #[error("--rpc-timeout ({rpc:?}) must be shorter than --timeout ({timeout:?})")]
    RpcTimeout { rpc: Duration, timeout: Duration },
    /// A peer's address is unusable.
    #[error("peer {id}: {source}")]
    PeerAddress { id: NodeId, source: ClientError },
    /// The state file could not be read or written.
    #[error("state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
    /// Serving failed.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// Parses `--peers`: `ID=HOST:PORT` entries separated by commas, e.g. `1=node-1:50054,2=node-2:50054`.
/// Ids are positive and listed once; the node itself must be among them.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, String>, NodeError> {
    let mut peers = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((id, addr)) = entry.split_once('=') else {
            return Err(NodeError::Peers(format!("'{entry}' is not ID=HOST:PORT")));
        };
        let id = parse_id(id.trim()).map_err(|e| NodeError::Peers(format!("'{entry}': {e}")))?;
        let addr = addr.trim();
        if addr.is_empty() || !addr.contains(':') {
            return Err(NodeError::Peers(format!("'{entry}': the address must be HOST:PORT")));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(NodeError::Peers(format!("node {id} is listed twice")));
        }
    }
    if peers.is_empty() {
        return Err(NodeError::Peers("no peers given".into()));
    }
    Ok(peers)
}

/// Parses a node id: a positive integer.
pub fn parse_id(text: &str) -> Result<NodeId, String> {
    match text.parse::<i128>() {
        Ok(n) if n > 0 && n <= i64::MAX as i128 => Ok(n as NodeId),
        Ok(n) => Err(format!("node id {n} is not positive")),
        Err(_) => Err(format!("node id '{text}' is not a number")),
    }
}

/// A node's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Every member's address, by id, this node included (its own entry is not dialled).
    pub peers: BTreeMap<NodeId, String>,
    pub algorithm: Algorithm,
    pub heartbeat: Duration,
    pub timeout: Duration,
    /// Deadline of every message to a peer; below `timeout`.
    pub rpc_timeout: Duration,
    /// Where the term is kept across restarts; `None` keeps it in memory only.
    pub state_dir: Option<PathBuf>,
}

/// The term a node keeps across restarts.
#[derive(Debug)]
struct StateFile {
    path: PathBuf,
    id: NodeId,
}

impl StateFile {
    fn new(dir: &Path, id: NodeId) -> Self {
        Self { path: dir.join(format!("election-node-{id}.json")), id }
    }

    fn error(&self, reason: impl ToString) -> NodeError {
        NodeError::State { path: self.path.clone(), reason: reason.to_string() }
    }

    /// The saved term; 0 if there is no file yet. A file that does not parse stops the node: starting
    /// from 0 could claim a term again.
    fn load(&self) -> Result<Term, NodeError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(self.error(e)),
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| self.error(format!("not JSON: {e}")))?;
        let id = value.get("id").and_then(|v| v.as_u64());
        if id != Some(self.id) {
            return Err(self.error(format!("belongs to node {id:?}, not {}", self.id)));
        }
        value.get("term").and_then(|v| v.as_u64()).ok_or_else(|| self.error("has no term"))
    }

    /// Saves `term` atomically (a new file renamed over the old one).
    fn save(&self, term: Term) -> Result<(), NodeError> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::json!({ "id": self.id, "term": term }).to_string();
        std::fs::write(&tmp, text).map_err(|e| self.error(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.error(e))
    }
}

struct Inner {
    machine: Machine,
    /// The term last written to the state file.
    saved: Term,
}

struct Shared {
    id: NodeId,
    algorithm: Algorithm,
    inner: Mutex<Inner>,
    /// Instant 0 of the machine's time, and the host time then (for timestamps observers read).
    epoch: Instant,
    wall_epoch: i64,
    clients: BTreeMap<NodeId, ElectionServiceClient<Channel>>,
    addresses: BTreeMap<NodeId, String>,
    rpc_timeout: Duration,
    state: Option<StateFile>,
    /// The observers' view, republished when role, term or coordinator change.
    leader: watch::Sender<pb::NodeState>,
    /// Wakes the timer loop when the machine's next deadline may have moved.
    wake: Notify,
    /// A frozen node (as `docker pause` freezes a container): it handles nothing until thawed.
    frozen: watch::Sender<bool>,
    /// Set when the node stops: answers still in flight change nothing and send nothing.
    halted: std::sync::atomic::AtomicBool,
}

/// A running node's handle: its gRPC service, its timer loop, and test hooks.
#[derive(Clone)]
pub struct ElectionNode {
    shared: Arc<Shared>,
}

impl ElectionNode {
    /// A node with its term loaded from the state file. Call [`ElectionNode::run`] to start it.
    pub fn new(config: NodeConfig) -> Result<Self, NodeError> {
        if config.rpc_timeout >= config.timeout {
            return Err(NodeError::RpcTimeout { rpc: config.rpc_timeout, timeout: config.timeout });
        }
        let machine_config = Config::new(config.id, config.peers.keys().copied(), config.heartbeat, config.timeout)?;
        let state = config.state_dir.as_deref().map(|dir| StateFile::new(dir, config.id));
        let term = match &state {
            Some(state) => state.load()?,
            None => 0,
        };
        let mut clients = BTreeMap::new();
        for (&id, addr) in config.peers.iter().filter(|(id, _)| **id != config.id) {
            let channel = channel(addr, config.rpc_timeout).map_err(|source| NodeError::PeerAddress { id, source })?;
            clients.insert(id, ElectionServiceClient::new(channel));
        }
        let machine = Machine::new(config.algorithm, machine_config, term);
        let shared = Arc::new(Shared {
            id: config.id,
            algorithm: config.algorithm,
            inner: Mutex::new(Inner { machine, saved: term }),
            epoch: Instant::now(),
            wall_epoch: host_now(),
            clients,
            addresses: config.peers.clone(),
            rpc_timeout: config.rpc_timeout,
            state,
            leader: watch::channel(pb::NodeState::default()).0,
            wake: Notify::new(),
            frozen: watch::channel(false).0,
            halted: std::sync::atomic::AtomicBool::new(false),
        });
        let node = Self { shared };
        let snapshot = node.snapshot();
        node.shared.leader.send_replace(snapshot);
        tracing::info!(id = config.id, algorithm = %config.algorithm, term, "election node ready");
        Ok(node)
    }

    /// The gRPC service, for a server's routes.
    pub fn service(&self) -> ElectionServiceServer<ElectionNode> {
        ElectionServiceServer::new(self.clone())
    }

    /// Runs the node until `stop` turns true: an election at start, then heartbeats and suspicion.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        self.update(|m, now| m.start(now));
        loop {
            let next = {
                let inner = self.lock();
                inner.machine.next_wakeup()
            };
            let now = self.now();
            let sleep = next.saturating_sub(now).clamp(Duration::from_millis(1), Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.shared.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            self.thawed().await;
            self.apply(|m, now| m.tick(now));
        }
        self.shared.halted.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(id = self.shared.id, "election node stopped");
    }

    /// Freezes or thaws the node, as `docker pause` / `unpause` do to a container: while frozen it
    /// answers nothing (callers hit their deadline) and its timers do not fire.
    pub fn set_frozen(&self, frozen: bool) {
        self.shared.frozen.send_replace(frozen);
    }

    /// Makes the node hold an election now, as if it had just suspected its coordinator (for experiments
    /// that choose the initiator).
    pub fn hold_election(&self) {
        self.update(|m, now| m.hold_election(now, "asked to"));
    }

    /// The node's state as `GetState` reports it.
    pub fn snapshot(&self) -> pb::NodeState {
        let inner = self.lock();
        self.describe(&inner.machine)
    }

    fn now(&self) -> Duration {
        self.shared.epoch.elapsed()
    }

    fn wall(&self, at: Duration) -> prost_types::Timestamp {
        nanos_to_timestamp(self.shared.wall_epoch + at.as_nanos() as i64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn thawed(&self) {
        if !*self.shared.frozen.borrow() {
            return;
        }
        let mut frozen = self.shared.frozen.subscribe();
        let _ = frozen.wait_for(|f| !*f).await;
    }

    /// Feeds the machine an event from outside the timer loop ([`Self::apply`]), then wakes the loop:
    /// the machine's next deadline may have moved.
    fn update<T>(&self, event: impl FnOnce(&mut Machine, Duration) -> T) -> T {
        let result = self.apply(event);
        self.shared.wake.notify_one();
        result
    }

    /// Feeds the machine one event, saves a raised term, republishes the state, sends the outbox.
    fn apply<T>(&self, event: impl FnOnce(&mut Machine, Duration) -> T) -> T {
        let (result, outbox) = {
            let mut inner = self.lock();
            let now = self.now();
            let before = leader_key(&inner.machine);
            let result = event(&mut inner.machine, now);
            let mut outbox = inner.machine.drain();
            let term = inner.machine.core().term();
            if term > inner.saved {
                match self.shared.state.as_ref().map(|s| s.save(term)) {
                    Some(Err(e)) => {
                        // Sending now could claim the term again after a restart: hold the messages.
                        tracing::error!(error = %e, "cannot save the term; messages held back");
                        outbox.clear();
                    }
                    _ => inner.saved = term,
                }
            }
            if leader_key(&inner.machine) != before {
                let core = inner.machine.core();
                tracing::info!(
                    id = self.shared.id,
                    role = core.role().as_str(),
                    term = core.term(),
                    coordinator = core.coordinator().unwrap_or(0),
                    "state changed"
                );
                self.shared.leader.send_replace(self.describe(&inner.machine));
            }
            (result, outbox)
        };
        if self.shared.halted.load(std::sync::atomic::Ordering::SeqCst) {
            return result;
        }
        for envelope in outbox {
            self.send(envelope);
        }
        result
    }

    fn send(&self, envelope: Envelope) {
        let Some(client) = self.shared.clients.get(&envelope.to).cloned() else {
            tracing::warn!(to = envelope.to, "no address for node");
            return;
        };
        let node = self.clone();
        tokio::spawn(async move {
            let result = node.call(client, &envelope).await;
            if let Err(e) = &result {
                tracing::debug!(to = envelope.to, kind = envelope.message.kind().as_str(), error = %e, "send failed");
            }
            node.thawed().await;
            node.update(|m, now| m.on_reply(now, envelope, result));
        });
    }

    async fn call(&self, mut client: ElectionServiceClient<Channel>, envelope: &Envelope) -> Result<Reply, SendError> {
        let from = self.shared.id as i64;
        let timeout = self.shared.rpc_timeout;
        let addr = self.shared.addresses.get(&envelope.to).map(String::as_str).unwrap_or("?");
        let answer = match envelope.message.clone() {
            Message::Election { term } => {
                with_deadline(addr, timeout, client.election(request(pb::ElectionRequest { from, term }, timeout))).await
            }
            Message::Coordinator { term } => {
                with_deadline(addr, timeout, client.coordinator(request(pb::CoordinatorRequest { from, term }, timeout))).await
            }
            Message::Alive { term, coordinator } => {
                let message = pb::AliveRequest { from, term, coordinator: coordinator.map_or(0, |c| c as i64) };
                with_deadline(addr, timeout, client.alive(request(message, timeout))).await
            }
            Message::RingElection { term, initiator, ids } => {
                let ids = ids.into_iter().map(|i| i as i64).collect();
                let message = pb::RingElectionRequest { from, term, initiator: initiator as i64, ids };
                with_deadline(addr, timeout, client.ring_election(request(message, timeout))).await
            }
            Message::RingCoordinator { term, coordinator, initiator } => {
                let message = pb::RingCoordinatorRequest { from, term, coordinator: coordinator as i64, initiator: initiator as i64 };
                with_deadline(addr, timeout, client.ring_coordinator(request(message, timeout))).await
            }
        };
        match answer {
            Ok(reply) => Ok(Reply { term: reply.term, coordinator: optional_id(reply.coordinator), ok: reply.ok }),
            Err(ClientError::Rpc { code: tonic::Code::InvalidArgument, message, .. }) => Err(SendError::Refused(message)),
            Err(e) => Err(SendError::Unreachable(e.to_string())),
        }
    }

    /// Handles a protocol request: checks it, feeds it to the machine, answers.
    async fn handle(&self, from: i64, message: Result<Message, Status>) -> Result<Response<pb::Reply>, Status> {
        self.thawed().await;
        if self.shared.halted.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Status::unavailable("the node is stopping"));
        }
        let from = to_id(from, "from")?;
        let message = message?;
        let kind = message.kind();
        match self.update(|m, now| m.on_request(now, from, message)) {
            Ok(reply) => {
                Ok(Response::new(pb::Reply { term: reply.term, coordinator: reply.coordinator.map_or(0, |c| c as i64), ok: reply.ok }))
            }
            Err(rejection) => {
                tracing::warn!(id = self.shared.id, from, kind = kind.as_str(), reason = %rejection, "refused a message");
                Err(Status::invalid_argument(rejection.to_string()))
            }
        }
    }

    fn describe(&self, machine: &Machine) -> pb::NodeState {
        let core = machine.core();
        let role = match core.role() {
            Role::Follower => pb::Role::Follower,
            Role::Candidate => pb::Role::Candidate,
            Role::Waiting => pb::Role::Waiting,
            Role::Coordinator => pb::Role::Coordinator,
        };
        let last_election = core.last_election().map(|e| pb::ElectionTiming {
            started: Some(self.wall(e.started)),
            finished: e.finished.map(|f| self.wall(f)),
            duration: e.finished.map(|f| {
                let d = f.saturating_sub(e.started);
                prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
            }),
            reason: e.reason.clone(),
        });
        let messages = core
            .counters()
            .iter()
            .map(|(kind, c)| pb::MessageCount {
                kind: kind.as_str().to_string(),
                sent: c.sent,
                received: c.received,
                failed: c.failed,
                rejected: c.rejected,
            })
            .collect();
        pb::NodeState {
            id: self.shared.id as i64,
            algorithm: self.shared.algorithm.as_str().to_string(),
            role: role as i32,
            term: core.term(),
            coordinator: core.coordinator().map_or(0, |c| c as i64),
            coordinator_since: core.coordinator().map(|_| self.wall(core.coordinator_since())),
            last_election,
            messages,
            members: self.shared.addresses.iter().map(|(&id, address)| pb::Member { id: id as i64, address: address.clone() }).collect(),
            now: Some(nanos_to_timestamp(host_now())),
        }
    }
}

fn leader_key(machine: &Machine) -> (Role, Term, Option<NodeId>) {
    let core = machine.core();
    (core.role(), core.term(), core.coordinator())
}

fn optional_id(id: i64) -> Option<NodeId> {
    (id > 0).then_some(id as NodeId)
}

/// A node id from the wire: positive.
fn to_id(id: i64, field: &str) -> Result<NodeId, Status> {
    if id <= 0 {
        return Err(Status::invalid_argument(format!("{field} = {id} is not a node id (ids are positive)")));
    }
    Ok(id as NodeId)
}

type StateStream = Pin<Box<dyn Stream<Item = Result<pb::NodeState, Status>> + Send>>;

#[tonic::async_trait]
impl ElectionService for ElectionNode {
    async fn election(&self, request: Request<pb::ElectionRequest>) -> Result<Response<pb::Reply>, Status> {
        let r = request.into_inner();
        self.handle(r.from, Ok(Message::Election { term: r.term })).await
    }

    async fn coordinator(&self, request: Request<pb::CoordinatorRequest>) -> Result<Response<pb::Reply>, Status> {
        let r = request.into_inner();
        self.handle(r.from, Ok(Message::Coordinator { term: r.term })).await
    }

    async fn alive(&self, request: Request<pb::AliveRequest>) -> Result<Response<pb::Reply>, Status> {
        let r = request.into_inner();
        let coordinator = match r.coordinator {
            0 => Ok(None),
            c => to_id(c, "coordinator").map(Some),
        };
        self.handle(r.from, coordinator.map(|coordinator| Message::Alive { term: r.term, coordinator })).await
    }

    async fn ring_election(&self, request: Request<pb::RingElectionRequest>) -> Result<Response<pb::Reply>, Status> {
        let r = request.into_inner();
        let message = (|| {
            let initiator = to_id(r.initiator, "initiator")?;
            let ids = r.ids.iter().map(|&i| to_id(i, "ids")).collect::<Result<Vec<_>, _>>()?;
            Ok(Message::RingElection { term: r.term, initiator, ids })
        })();
        self.handle(r.from, message).await
    }

    async fn ring_coordinator(&self, request: Request<pb::RingCoordinatorRequest>) -> Result<Response<pb::Reply>, Status> {
        let r = request.into_inner();
        let message = (|| {
            let coordinator = to_id(r.coordinator, "coordinator")?;
            let initiator = to_id(r.initiator, "initiator")?;
            Ok(Message::RingCoordinator { term: r.term, coordinator, initiator })
        })();
        self.handle(r.from, message).await
    }

    async fn get_state(&self, _request: Request<pb::GetStateRequest>) -> Result<Response<pb::NodeState>, Status> {
        self.thawed().await;
        Ok(Response::new(self.snapshot()))
    }

    type WatchLeaderStream = StateStream;

    async fn watch_leader(&self, _request: Request<pb::WatchLeaderRequest>) -> Result<Response<Self::WatchLeaderStream>, Status> {
        let stream = tokio_stream::wrappers::WatchStream::new(self.shared.leader.subscribe());
        Ok(Response::new(Box::pin(futures::StreamExt::map(stream, Ok))))
    }
}

/// Everything a node serves: `ElectionService`, health and reflection.
pub async fn routes(node: &ElectionNode) -> Result<tonic::service::Routes, ServerError> {
    let (mut routes, health) = base_routes()?;
    routes.add_service(node.service());
    health.set_serving::<ElectionServiceServer<ElectionNode>>().await;
    Ok(routes.routes())
}
