//! An election node: the thin I/O shell around a `synclab_core::election::Machine`.
//!
//! It serves `synclab.election.v1.ElectionService`, feeds the machine the requests that arrive, the
//! outcome of every message it sends (each RPC has a deadline shorter than the suspicion timeout; an
//! unreachable peer counts as dead for that message) and its timers. After every event it stores a raised
//! term in the state file ([`super::state`]) and only then sends the machine's messages or answers: a
//! term no message has revealed yet is one a restarted node cannot claim twice.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use synclab_core::election::{Algorithm, ConfigError, Envelope, GroupConfig, Machine, Message, NodeId, Role, SendError, Term};
use tokio::sync::{Notify, watch};
use tonic::{Request, Response, Status};

use super::convert::{Incoming, Timeline, node_state, wire_id, wire_reply};
use super::line;
use super::peer::Peer;
use super::state::{StateError, StateFile};
use crate::lock::lock;
use crate::proto::election as pb;
use crate::proto::election::election_service_server::{ElectionService, ElectionServiceServer};
use crate::rpc::{Dialer, RpcError};
use crate::tls::Tls;
use crate::tls::authz::{Allowed, authorize};
use crate::lab::{LabService, LinkFaults, Verdict};
use crate::proto::election::message_event::Direction;
use crate::telemetry::Refusals;
use crate::server::{Limits, Server, ServerError, Services, Stop, StopHandle, Watched, WatchStream, Watchers};

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The group does not work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The RPC deadline is not below the timeout.
    #[error("--rpc-timeout ({rpc:?}) must be shorter than --timeout ({timeout:?})")]
    RpcTimeout { rpc: Duration, timeout: Duration },
    /// The probe timeout is longer than the RPC deadline.
    #[error("--probe-timeout ({probe:?}) must not be longer than --rpc-timeout ({rpc:?})")]
    ProbeTimeout { probe: Duration, rpc: Duration },
    /// A peer's address is unusable.
    #[error("peer {id}: {source}")]
    PeerAddress { id: NodeId, source: RpcError },
    /// The state file could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// Serving failed.
    #[error(transparent)]
    Server(#[from] ServerError),
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
    /// How long a coordinator whose line broke has to answer a probe before it counts as dead; at most
    /// `rpc_timeout`.
    pub probe_timeout: Duration,
    /// Elections staggered by rank after a coordinator's death (zero: off, as the textbook has it; see
    /// `synclab_core::election::GroupConfig::election_stagger`).
    pub election_stagger: Duration,
    /// Where the term is kept across restarts; `None` keeps it in memory only.
    pub state_dir: Option<PathBuf>,
    /// Mutual TLS for serving and dialing; `None`: plaintext.
    pub tls: Option<Tls>,
    /// Serve the `Lab` service (link faults), for experiments.
    pub lab: bool,
}

struct Inner {
    machine: Machine,
    /// The term last written to the state file.
    saved: Term,
}

/// What one event left to do once the machine has handled it.
struct Effects {
    outbox: Vec<Envelope>,
    /// A raised term to store before anything else leaves.
    store: Option<Term>,
    /// The new observers' view, if role, term or coordinator changed.
    changed: Option<pb::NodeState>,
}

struct Shared {
    id: NodeId,
    algorithm: Algorithm,
    inner: Mutex<Inner>,
    /// One event at a time, from the machine through the state file to the network.
    turn: tokio::sync::Mutex<()>,
    timeline: Timeline,
    peers: BTreeMap<NodeId, Arc<Peer>>,
    members: Vec<pb::Member>,
    state: Option<StateFile>,
    /// The observers' view, republished when role, term or coordinator change.
    leader: watch::Sender<pb::NodeState>,
    /// Wakes the timer loop when the machine's next deadline may have moved.
    wake: Notify,
    /// A frozen node (as `docker pause` freezes a container): it handles nothing until thawed.
    frozen: watch::Sender<bool>,
    /// Set when the node stops: answers still in flight change nothing and send nothing, and watch
    /// streams end.
    halt: StopHandle,
    halted: Stop,
    watchers: Watchers,
    /// Refused messages, counted and logged sparingly.
    refusals: Refusals,
    /// Failures to store the term, likewise.
    store_failures: Refusals,
    /// Turns true when the node stops: a coordinator says goodbye on its followers' lines.
    leave: StopHandle,
    leaving: Stop,
    /// Open lines from followers (this node as coordinator).
    lines: Watchers,
    /// The line this node keeps to its coordinator: (coordinator, term, the task holding it).
    following: Mutex<Option<(NodeId, Term, tokio::task::JoinHandle<()>)>>,
    probe_timeout: Duration,
    rpc_timeout: Duration,
    tls: Option<Tls>,
    lab: bool,
    /// Faults a lab set on the links to the peers.
    links: Arc<LinkFaults>,
    /// Every message sent and received, for `WatchMessages` (nothing is built while nobody watches).
    messages: tokio::sync::broadcast::Sender<pb::MessageEvent>,
    message_watchers: Watchers,
    /// Set to stop as a crash does: without a goodbye (for experiments).
    crashed: std::sync::atomic::AtomicBool,
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
        if config.probe_timeout > config.rpc_timeout {
            return Err(NodeError::ProbeTimeout { probe: config.probe_timeout, rpc: config.rpc_timeout });
        }
        let group = GroupConfig::new(config.id, config.peers.keys().copied(), config.heartbeat, config.timeout)?
            .with_election_stagger(config.election_stagger);
        let state = config.state_dir.as_deref().map(|dir| StateFile::new(dir, config.id));
        let term = match &state {
            // Written back at once: a state file that cannot be written stops the node now, not at its
            // first election.
            Some(state) => {
                let term = state.load()?;
                state.save(term)?;
                term
            }
            None => 0,
        };
        let mut peers = BTreeMap::new();
        for (&id, addr) in config.peers.iter().filter(|(id, _)| **id != config.id) {
            let dialer = Dialer::new(config.tls.clone());
            let peer = Peer::new(id, addr, config.rpc_timeout, dialer).map_err(|source| NodeError::PeerAddress { id, source })?;
            peers.insert(id, Arc::new(peer));
        }
        let members = config
            .peers
            .iter()
            .map(|(&id, address)| pb::Member { id: wire_id(id), address: address.clone() })
            .collect();
        let machine = Machine::new(config.algorithm, group, term);
        let timeline = Timeline::start();
        let (halt, halted) = Stop::new();
        let (leave, leaving) = Stop::new();
        let shared = Arc::new(Shared {
            id: config.id,
            algorithm: config.algorithm,
            inner: Mutex::new(Inner { machine, saved: term }),
            turn: tokio::sync::Mutex::new(()),
            timeline,
            peers,
            members,
            state,
            leader: watch::channel(pb::NodeState::default()).0,
            wake: Notify::new(),
            frozen: watch::channel(false).0,
            halt,
            halted,
            watchers: Watchers::new(Limits::default().max_watchers),
            refusals: Refusals::new("election message"),
            store_failures: Refusals::new("state file write"),
            leave,
            leaving,
            lines: Watchers::new(config.peers.len().max(1) * 4),
            following: Mutex::new(None),
            probe_timeout: config.probe_timeout,
            rpc_timeout: config.rpc_timeout,
            tls: config.tls.clone(),
            lab: config.lab,
            links: Arc::new(LinkFaults::new(config.peers.keys().copied().filter(|&p| p != config.id))),
            messages: tokio::sync::broadcast::channel(1024).0,
            message_watchers: Watchers::new(Limits::default().max_watchers),
            crashed: std::sync::atomic::AtomicBool::new(false),
        });
        let node = Self { shared };
        let state = node.describe(&node.lock().machine);
        node.shared.leader.send_replace(state);
        tracing::info!(id = config.id, algorithm = %config.algorithm, term, "election node ready");
        Ok(node)
    }

    /// The gRPC service, for a server's routes.
    pub fn service(&self) -> ElectionServiceServer<ElectionNode> {
        ElectionServiceServer::new(self.clone())
    }

    /// Runs the node until `stop` turns true: an election at start, then heartbeats and suspicion.
    pub async fn run(self, stop: Stop) {
        self.event(|m, now| m.start(now)).await;
        loop {
            let next = self.lock().machine.next_wakeup();
            // With no timer running the loop still looks in once a second; messages wake it sooner.
            let sleep = next.map_or(Duration::from_secs(1), |at| at.saturating_sub(self.now()));
            let sleep = sleep.clamp(Duration::from_millis(1), Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.shared.wake.notified() => {}
                () = stop.wait() => break,
            }
            self.thawed().await;
            if let Err(e) = self.apply(|m, now| m.tick(now)).await {
                self.shared.store_failures.refused("cannot store the term: messages held back", &e);
            }
        }
        // A coordinator says goodbye on its followers' lines, so they elect at once (a crash says nothing).
        if !self.shared.crashed.load(std::sync::atomic::Ordering::SeqCst) {
            self.shared.leave.stop();
        }
        if let Some((_, _, task)) = lock(&self.shared.following).take() {
            task.abort();
        }
        self.shared.halt.stop();
        tracing::info!(id = self.shared.id, "election node stopped");
    }

    /// A message from `from` over a link a lab cut: it goes unanswered, as a dropped packet would, until
    /// the caller's deadline has surely passed.
    async fn cut_off(&self, from: NodeId) -> Result<(), Status> {
        if self.shared.links.incoming_dropped(from) {
            tokio::time::sleep(self.shared.rpc_timeout * 2).await;
            return Err(Status::unavailable("dropped on a cut link (lab)"));
        }
        Ok(())
    }

    /// Tells the message watchers about one message, if any is watching.
    fn record(&self, direction: Direction, peer: NodeId, message: &Message, ok: bool, tag: u64) {
        crate::observe::election_message_event(direction, message.kind().as_str(), ok);
        if self.shared.messages.receiver_count() == 0 {
            return;
        }
        let event = pb::MessageEvent {
            time: Some(crate::proto::nanos_to_timestamp(crate::clock::host_now())),
            node: wire_id(self.shared.id),
            direction: direction as i32,
            peer: wire_id(peer),
            kind: message.kind().as_str().to_string(),
            term: message.term(),
            ok,
            tag,
        };
        let _ = self.shared.messages.send(event);
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The line to `coordinator` broke and it does not answer, or it said goodbye: hold an election if
    /// this node still follows it.
    pub(super) async fn lost_coordinator(&self, coordinator: NodeId, why: &str) {
        let why = why.to_string();
        self.event(move |m, now| m.coordinator_lost(now, coordinator, &why)).await;
    }

    /// Keeps a line to the coordinator this node follows (and only to it), per its published state.
    fn refollow(&self, state: &pb::NodeState) {
        let target = (state.role == pb::Role::Follower as i32 && state.coordinator > 0 && state.coordinator != wire_id(self.shared.id))
            .then(|| (state.coordinator as NodeId, state.term));
        let mut following = lock(&self.shared.following);
        if following.as_ref().map(|(c, t, _)| (*c, *t)) == target {
            return;
        }
        if let Some((_, _, task)) = following.take() {
            task.abort();
        }
        if let Some((coordinator, term)) = target
            && let Some(peer) = self.shared.peers.get(&coordinator).cloned()
            && !self.shared.halted.is_stopping()
        {
            let task = tokio::spawn(line::follow(self.clone(), peer, coordinator, term, self.shared.probe_timeout));
            *following = Some((coordinator, term, task));
        }
    }

    /// Makes the node's coming stop a crash: no goodbye to its followers (as `docker kill` would).
    pub fn crash_on_stop(&self) {
        self.shared.crashed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Freezes or thaws the node, as `docker pause` / `unpause` do to a container: while frozen it
    /// answers nothing (callers hit their deadline) and its timers do not fire.
    pub fn set_frozen(&self, frozen: bool) {
        self.shared.frozen.send_replace(frozen);
    }

    /// Makes the node hold an election now, as if it had just suspected its coordinator (for experiments
    /// that choose the initiator).
    pub async fn hold_election(&self) {
        self.event(|m, now| m.hold_election(now, "asked to")).await;
    }

    /// The node's state as `GetState` reports it: after any event in progress, so it shows no term
    /// that is not stored yet, and matches what `WatchLeader` has published.
    pub async fn snapshot(&self) -> pb::NodeState {
        let _turn = self.shared.turn.lock().await;
        self.describe(&self.lock().machine)
    }

    fn now(&self) -> Duration {
        self.shared.timeline.now()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared.inner)
    }

    fn describe(&self, machine: &Machine) -> pb::NodeState {
        node_state(self.shared.id, self.shared.algorithm, machine, &self.shared.members, &self.shared.timeline)
    }

    async fn thawed(&self) {
        if !*self.shared.frozen.borrow() {
            return;
        }
        let mut frozen = self.shared.frozen.subscribe();
        let _ = frozen.wait_for(|f| !*f).await;
    }

    /// Feeds the machine an event from outside the timer loop ([`Self::apply`]), then wakes the loop:
    /// the machine's next deadline may have moved. A failure to store the term is logged.
    async fn event(&self, event: impl FnOnce(&mut Machine, Duration) + Send + 'static) {
        if let Err(e) = self.apply(event).await {
            self.shared.store_failures.refused("cannot store the term: messages held back", &e);
        }
        self.shared.wake.notify_one();
    }

    /// Feeds the machine one event, then, in this order: stores a raised term, publishes the new state,
    /// sends the outbox, and returns the event's result. If the term cannot be stored nothing leaves:
    /// the outbox is dropped and the caller gets the error instead of the result (a request fails).
    ///
    /// The work runs in a task of its own, so a caller that gives up (a request whose deadline passed
    /// drops its handler) cannot cut it short: once the machine has taken an event, its messages leave.
    /// Cut short between the machine and the network, a node would wait for answers to messages it
    /// never sent and, in Bully, take the silence for the death of every node above it.
    async fn apply<T: Send + 'static>(
        &self,
        event: impl FnOnce(&mut Machine, Duration) -> T + Send + 'static,
    ) -> Result<T, StateError> {
        let node = self.clone();
        match tokio::spawn(async move { node.apply_to_the_end(event).await }).await {
            Ok(result) => result,
            Err(e) => Err(StateError {
                path: self.shared.state.as_ref().map(|s| s.path().to_path_buf()).unwrap_or_default(),
                reason: format!("the event was not carried out: {e}"),
            }),
        }
    }

    /// [`Self::apply`]'s work, which must not be dropped half-way.
    async fn apply_to_the_end<T>(&self, event: impl FnOnce(&mut Machine, Duration) -> T) -> Result<T, StateError> {
        let _turn = self.shared.turn.lock().await;
        let (result, effects) = {
            let mut inner = self.lock();
            let before = leader_key(&inner.machine);
            let election_before = inner.machine.core().last_election().map(|e| e.started);
            let suspected_before = inner.machine.core().suspected();
            let result = event(&mut inner.machine, self.now());
            // The machine learned that a node it had found dead lives (a message, an answer, a ring lap
            // that names it): messages to it go out again at once, not only after the peer's down mark
            // runs out.
            if let Some(revived) = suspected_before.filter(|_| inner.machine.core().suspected().is_none())
                && let Some(peer) = self.shared.peers.get(&revived)
            {
                peer.mark_up();
            }
            if let Some(e) = inner.machine.core().last_election().filter(|e| Some(e.started) != election_before) {
                crate::observe::election_began(&e.reason);
            }
            let outbox = inner.machine.drain();
            let term = inner.machine.core().term();
            let store = (term > inner.saved).then_some(term);
            let changed = (leader_key(&inner.machine) != before).then(|| self.describe(&inner.machine));
            (result, Effects { outbox, store, changed })
        };
        if let Some(term) = effects.store {
            self.store(term).await?;
            self.lock().saved = term;
        }
        if let Some(state) = effects.changed {
            tracing::info!(id = self.shared.id, role = role_name(state.role), term = state.term, coordinator = state.coordinator, "state changed");
            self.refollow(&state);
            self.shared.leader.send_replace(state);
            self.shared.watchers.published();
            self.shared.lines.published();
        }
        if !self.shared.halted.is_stopping() {
            for envelope in effects.outbox {
                self.send(envelope);
            }
        }
        Ok(result)
    }

    /// Writes `term` to the state file (if the node has one), off the async runtime.
    async fn store(&self, term: Term) -> Result<(), StateError> {
        let Some(state) = self.shared.state.clone() else { return Ok(()) };
        let path = state.path().to_path_buf();
        match tokio::task::spawn_blocking(move || state.save(term)).await {
            Ok(result) => result,
            Err(e) => Err(StateError { path, reason: format!("the writer failed: {e}") }),
        }
    }

    fn send(&self, envelope: Envelope) {
        let Some(peer) = self.shared.peers.get(&envelope.to).cloned() else {
            tracing::warn!(to = envelope.to, "no address for node");
            return;
        };
        let node = self.clone();
        tokio::spawn(async move {
            node.record(Direction::Sent, envelope.to, &envelope.message, true, envelope.tag);
            let result = match node.shared.links.outgoing(envelope.to) {
                Verdict::Lost => {
                    // Lost on the way: the sender hears nothing before its deadline.
                    tokio::time::sleep(node.shared.rpc_timeout).await;
                    Err(SendError::Unreachable(format!("node {}: lost on a faulty link (lab)", envelope.to)))
                }
                Verdict::Pass(delay) => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    peer.call(node.shared.id, envelope.message.clone()).await
                }
            };
            match &result {
                Ok(reply) => node.record(Direction::Answered, envelope.to, &envelope.message, reply.ok, envelope.tag),
                Err(e) => {
                    node.record(Direction::Failed, envelope.to, &envelope.message, false, envelope.tag);
                    tracing::debug!(to = envelope.to, kind = envelope.message.kind().as_str(), error = %e, "send failed");
                }
            }
            node.thawed().await;
            node.event(move |m, now| m.on_reply(now, envelope, result)).await;
        });
    }

    /// Handles a protocol request: checks it (its sender's identity too, with TLS), feeds it to the
    /// machine, answers once the term is stored.
    async fn handle<T: Incoming>(&self, request: Request<T>, rpc: &str) -> Result<Response<pb::Reply>, Status> {
        let from = super::convert::to_id(request.get_ref().from(), "from")?;
        authorize(&request, rpc, Allowed::Node(from))?;
        let request = request.into_inner();
        self.thawed().await;
        self.cut_off(from).await?;
        if self.shared.halted.is_stopping() {
            return Err(Status::unavailable("the node is stopping"));
        }
        let to = request.to();
        if to != 0 && to != wire_id(self.shared.id) {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {to}: the message reached the wrong node (has an address changed?)",
                self.shared.id
            )));
        }
        let message = request.message()?;
        if let Some(peer) = self.shared.peers.get(&from) {
            peer.mark_up();
        }
        let kind = message.kind();
        let seen = message.clone();
        let outcome = self.apply(move |m, now| m.on_request(now, from, message)).await;
        self.record(Direction::Received, from, &seen, matches!(outcome, Ok(Ok(_))), 0);
        self.shared.wake.notify_one();
        match outcome {
            Ok(Ok(reply)) => Ok(Response::new(wire_reply(self.shared.id, reply))),
            Ok(Err(rejection)) => {
                self.shared.refusals.refused(rejection.kind(), &format_args!("{} from {from}: {rejection}", kind.as_str()));
                Err(Status::invalid_argument(rejection.to_string()))
            }
            Err(e) => Err(Status::unavailable(format!("cannot store the term, so this message is not answered: {e}"))),
        }
    }
}

fn leader_key(machine: &Machine) -> (Role, Term, Option<NodeId>) {
    let core = machine.core();
    (core.role(), core.term(), core.coordinator())
}

fn role_name(role: i32) -> &'static str {
    pb::Role::try_from(role).map_or("?", |r| r.as_str_name())
}

#[tonic::async_trait]
impl ElectionService for ElectionNode {
    async fn election(&self, request: Request<pb::ElectionRequest>) -> Result<Response<pb::Reply>, Status> {
        self.handle(request, "ElectionService/Election").await
    }

    async fn coordinator(&self, request: Request<pb::CoordinatorRequest>) -> Result<Response<pb::Reply>, Status> {
        self.handle(request, "ElectionService/Coordinator").await
    }

    async fn alive(&self, request: Request<pb::AliveRequest>) -> Result<Response<pb::Reply>, Status> {
        self.handle(request, "ElectionService/Alive").await
    }

    async fn ring_election(&self, request: Request<pb::RingElectionRequest>) -> Result<Response<pb::Reply>, Status> {
        self.handle(request, "ElectionService/RingElection").await
    }

    async fn ring_coordinator(&self, request: Request<pb::RingCoordinatorRequest>) -> Result<Response<pb::Reply>, Status> {
        self.handle(request, "ElectionService/RingCoordinator").await
    }

    async fn get_state(&self, _request: Request<pb::GetStateRequest>) -> Result<Response<pb::NodeState>, Status> {
        self.thawed().await;
        Ok(Response::new(self.snapshot().await))
    }

    type FollowStream = WatchStream<pb::FollowEvent>;

    async fn follow(&self, request: Request<pb::FollowRequest>) -> Result<Response<Self::FollowStream>, Status> {
        let from = super::convert::to_id(request.get_ref().from, "from")?;
        authorize(&request, "ElectionService/Follow", Allowed::Node(from))?;
        self.cut_off(from).await?;
        let r = request.into_inner();
        if r.to != 0 && r.to != wire_id(self.shared.id) {
            return Err(Status::failed_precondition(format!("this is node {}, not node {}", self.shared.id, r.to)));
        }
        if !self.shared.peers.contains_key(&from) {
            return Err(Status::invalid_argument(format!("node {from} is not a member of this group")));
        }
        let permit = self.shared.lines.admit()?;
        let line = line::coordinator_line(self.shared.id, self.shared.leader.subscribe(), self.shared.leaving.clone(), permit);
        Ok(Response::new(Box::pin(line)))
    }

    type WatchMessagesStream = WatchStream<pb::MessageEvent>;

    async fn watch_messages(&self, _request: Request<pb::WatchMessagesRequest>) -> Result<Response<Self::WatchMessagesStream>, Status> {
        use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
        let events = tokio_stream::wrappers::BroadcastStream::new(self.shared.messages.subscribe()).map(|e| match e {
            Ok(event) => Watched::Item(event),
            Err(BroadcastStreamRecvError::Lagged(missed)) => Watched::Lagged(missed),
        });
        Ok(Response::new(self.shared.message_watchers.stream(events, self.shared.halted.clone())?))
    }

    type WatchLeaderStream = WatchStream<pb::NodeState>;

    async fn watch_leader(&self, _request: Request<pb::WatchLeaderRequest>) -> Result<Response<Self::WatchLeaderStream>, Status> {
        // A watch channel keeps only the latest state: a slow watcher skips states, never piles them up.
        let states = tokio_stream::wrappers::WatchStream::new(self.shared.leader.subscribe()).map(Watched::Item);
        Ok(Response::new(self.shared.watchers.stream(states, self.shared.halted.clone())?))
    }
}

/// Everything a node serves: `ElectionService`, health and reflection.
pub async fn server(node: &ElectionNode) -> Result<Server, ServerError> {
    let services = Services::new().tls(node.shared.tls.as_ref()).add(node.service());
    let services = if node.shared.lab {
        services.add(LabService::new(crate::clock::ClockSet::default(), Some(node.shared.links.clone())).server())
    } else {
        services
    };
    services.build().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request handler that gives up while the node stores a raised term (its caller's deadline
    /// passed) must not take the event's messages with it: the node would wait for answers to messages
    /// it never sent and, in Bully, take the silence for the death of every node above it.
    #[tokio::test]
    async fn an_event_cut_short_by_its_caller_still_sends_its_messages() {
        let dir = std::env::temp_dir().join(format!("synclab-cut-short-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Nobody listens at the peers' addresses: what matters is that the sends start.
        let peers = (1..=3).map(|id| (id, format!("127.0.0.1:{}", 1 + id))).collect();
        let config = NodeConfig {
            id: 2,
            peers,
            algorithm: Algorithm::Bully,
            heartbeat: Duration::from_millis(50),
            timeout: Duration::from_millis(200),
            rpc_timeout: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(50),
            election_stagger: Duration::ZERO,
            state_dir: Some(dir.clone()),
            tls: None,
            lab: false,
        };
        let node = ElectionNode::new(config).unwrap();
        let mut sent = node.shared.messages.subscribe();
        // An Election from node 1 with a higher term: node 2 stores the term, answers OK and holds an
        // election of its own (an Election to node 3). The caller waits for none of it.
        // Polled once and dropped, as a handler is when its caller's deadline passes mid-event.
        let event = node.apply(|m, now| m.on_request(now, 1, Message::Election { term: 7 }));
        assert!(futures::FutureExt::now_or_never(event).is_none(), "the store takes longer than one poll");
        let to_3 = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let e = sent.recv().await.expect("the node's message events");
                if e.direction == Direction::Sent as i32 && e.peer == 3 && e.kind == "Election" {
                    return e;
                }
            }
        })
        .await
        .expect("the Election to node 3 left although the caller gave up");
        assert_eq!(to_3.term, 7);
        assert_eq!(StateFile::new(&dir, 2).load().unwrap(), 7, "the term was stored");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
