//! An election node: the thin I/O shell around a `synclab_core::election::Machine`.
//!
//! It serves `synclab.election.v1.ElectionService`, feeds the machine the requests that arrive, the
//! outcome of every message it sends (each RPC has a deadline shorter than the suspicion timeout; an
//! unreachable peer counts as dead for that message) and its timers. A term the machine minted (it won,
//! or completed a ring lap) is stored in the state file ([`super::state`]) before any of the event's
//! messages or answers leave: a term no message has revealed yet is one a restarted node cannot claim
//! twice. A term learned from a message is stored too, but behind the messages: the group knows it
//! already, and a group that all learn a new term at once would otherwise queue every announcement
//! behind a hundred `fsync`s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use synclab_core::election::{Algorithm, ConfigError, Envelope, GroupConfig, Kind, Machine, Message, NodeId, Role, SendError, Term};
use tokio::sync::{Notify, watch};
use tonic::{Request, Response, Status};

use super::convert::{Incoming, Timeline, node_state, wire_id, wire_reply};
use super::line;
use super::peer::Peer;
use super::state::{StateError, StateFile};
use crate::lab::{LabService, LinkFaults, Verdict};
use crate::lock::lock;
use crate::proto::election as pb;
use crate::proto::election::election_service_server::{ElectionService, ElectionServiceServer};
use crate::proto::election::message_event::Direction;
use crate::rpc::{Dialer, RpcError};
use crate::server::{Limits, Server, ServerError, Services, Stop, StopHandle, WatchStream, Watched, Watchers};
use crate::telemetry::Refusals;
use crate::tls::Tls;
use crate::tls::authz::{Allowed, authorize};

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
    /// The highest term written to the state file.
    saved: Term,
    /// The highest term a write was started for.
    requested: Term,
}

/// An `Election` not answered yet.
enum Slot {
    /// Its turn to leave has not come.
    Waiting,
    /// On its way, in this task.
    Running(tokio::task::AbortHandle),
}

/// What one event left to do once the machine has handled it.
struct Effects {
    outbox: Vec<Envelope>,
    /// Tags of sent messages whose answers no longer matter.
    withdrawn: Vec<u64>,
    /// A minted term to store before anything else leaves.
    store: Option<Term>,
    /// A learned term to store behind the messages.
    store_behind: Option<Term>,
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
    /// The highest term in the state file; held while writing it, so writes never go back.
    written: tokio::sync::Mutex<Term>,
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
    /// `Election`s not answered yet, by tag: cancelled when the machine withdraws them.
    inflight: Mutex<std::collections::HashMap<u64, Slot>>,
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
        let members = config.peers.iter().map(|(&id, address)| pb::Member { id: wire_id(id), address: address.clone() }).collect();
        let machine = Machine::new(config.algorithm, group, term);
        let timeline = Timeline::start();
        let (halt, halted) = Stop::new();
        let (leave, leaving) = Stop::new();
        let shared = Arc::new(Shared {
            id: config.id,
            algorithm: config.algorithm,
            inner: Mutex::new(Inner { machine, saved: term, requested: term }),
            turn: tokio::sync::Mutex::new(()),
            timeline,
            peers,
            members,
            state,
            written: tokio::sync::Mutex::new(term),
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
            inflight: Mutex::new(std::collections::HashMap::new()),
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
            .then_some((state.coordinator as NodeId, state.term));
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
    async fn apply<T: Send + 'static>(&self, event: impl FnOnce(&mut Machine, Duration) -> T + Send + 'static) -> Result<T, StateError> {
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
            let result = event(&mut inner.machine, self.now());
            if let Some(e) = inner.machine.core().last_election().filter(|e| Some(e.started) != election_before) {
                crate::observe::election_began(&e.reason);
            }
            let outbox = inner.machine.drain();
            let withdrawn = inner.machine.drain_withdrawn();
            let term = inner.machine.core().term();
            let minted = inner.machine.core().minted() > inner.saved;
            let store = (minted && term > inner.saved).then_some(term);
            let store_behind = (!minted && term > inner.requested && self.shared.state.is_some()).then_some(term);
            inner.requested = inner.requested.max(term);
            let changed = (leader_key(&inner.machine) != before).then(|| self.describe(&inner.machine));
            (result, Effects { outbox, withdrawn, store, store_behind, changed })
        };
        if let Some(term) = effects.store {
            self.store(term, true).await?;
        }
        if let Some(term) = effects.store_behind {
            let node = self.clone();
            tokio::spawn(async move {
                if let Err(e) = node.store(term, false).await {
                    node.shared.store_failures.refused("cannot store a learned term", &e);
                }
            });
        }
        if let Some(state) = effects.changed {
            tracing::info!(
                id = self.shared.id,
                role = role_name(state.role),
                term = state.term,
                coordinator = state.coordinator,
                "state changed"
            );
            self.refollow(&state);
            self.shared.leader.send_replace(state);
            self.shared.watchers.published();
            self.shared.lines.published();
        }
        self.cancel(&effects.withdrawn);
        if !self.shared.halted.is_stopping() {
            let (elections, others): (Vec<Envelope>, Vec<Envelope>) = effects
                .outbox
                .into_iter()
                .filter(|e| !effects.withdrawn.contains(&e.tag))
                .partition(|e| matches!(e.message, Message::Election { .. }));
            for envelope in others {
                self.send(envelope);
            }
            if !elections.is_empty() {
                self.send_paced(elections);
            }
        }
        Ok(result)
    }

    /// Writes `term` to the state file (if the node has one and holds a lower term), off the async
    /// runtime; `urgent`: messages wait for it.
    async fn store(&self, term: Term, urgent: bool) -> Result<(), StateError> {
        let Some(state) = self.shared.state.clone() else { return Ok(()) };
        let mut written = self.shared.written.lock().await;
        if term <= *written {
            let mut inner = self.lock();
            inner.saved = inner.saved.max(*written);
            return Ok(());
        }
        let path = state.path().to_path_buf();
        if urgent && tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            // On this thread: a write handed to the blocking pool is awaited, and the task that awaits it
            // waits its turn again behind every task queued meanwhile, which under an election storm is
            // tens of milliseconds before the announcement leaves.
            tokio::task::block_in_place(|| state.save(term))?;
        } else {
            match tokio::task::spawn_blocking(move || state.save(term)).await {
                Ok(result) => result?,
                Err(e) => return Err(StateError { path, reason: format!("the writer failed: {e}") }),
            }
        }
        *written = term;
        let mut inner = self.lock();
        inner.saved = inner.saved.max(term);
        Ok(())
    }

    /// Cancels the `Election`s among `tags` (the machine withdrew them) that are not answered yet: one
    /// not started is never sent, one on its way is reset, and the machine hears nothing of either.
    fn cancel(&self, tags: &[u64]) {
        if tags.is_empty() {
            return;
        }
        let mut inflight = lock(&self.shared.inflight);
        for tag in tags {
            if let Some(slot) = inflight.remove(tag) {
                if let Slot::Running(task) = slot {
                    task.abort();
                }
                crate::observe::election_message(Kind::Election.as_str(), "sent", "withdrawn");
            }
        }
    }

    /// Sends one event's `Election`s from one task, one at a time with a turn of the runtime between
    /// them (they do not wait for each other's answers). On an idle runtime a turn is microseconds and
    /// they all leave at once, as the algorithm has it. On a busy one (a group of n that all hold an
    /// election at once sends n²/2 of them) the machine's first OK usually comes back before the later
    /// ones have left, and withdraws them ([`Self::cancel`]): the work the group does shrinks with its
    /// load instead of growing with it.
    fn send_paced(&self, elections: Vec<Envelope>) {
        {
            let mut inflight = lock(&self.shared.inflight);
            for e in &elections {
                inflight.insert(e.tag, Slot::Waiting);
            }
        }
        let node = self.clone();
        tokio::spawn(async move {
            for (i, envelope) in elections.into_iter().enumerate() {
                if i > 0 {
                    tokio::task::yield_now().await;
                }
                let mut inflight = lock(&node.shared.inflight);
                if node.shared.halted.is_stopping() {
                    inflight.remove(&envelope.tag);
                    continue;
                }
                // Gone from the table: withdrawn while it waited.
                if inflight.get(&envelope.tag).is_some_and(|slot| matches!(slot, Slot::Waiting)) {
                    let tag = envelope.tag;
                    if let Some(task) = node.send(envelope) {
                        inflight.insert(tag, Slot::Running(task.abort_handle()));
                    } else {
                        inflight.remove(&tag);
                    }
                }
            }
        });
    }

    /// Sends one message in a task of its own, which feeds the outcome to the machine.
    fn send(&self, envelope: Envelope) -> Option<tokio::task::JoinHandle<()>> {
        let Some(peer) = self.shared.peers.get(&envelope.to).cloned() else {
            tracing::warn!(to = envelope.to, "no address for node");
            return None;
        };
        let node = self.clone();
        let cancellable = matches!(envelope.message, Message::Election { .. });
        Some(tokio::spawn(async move {
            node.record(Direction::Sent, envelope.to, &envelope.message, true, envelope.tag);
            let result = match node.shared.links.outgoing(envelope.to) {
                Verdict::Lost => {
                    // Lost on the way: the sender hears nothing before its deadline.
                    tokio::time::sleep(node.shared.rpc_timeout).await;
                    Err(SendError::NoAnswer(format!("node {}: lost on a faulty link (lab)", envelope.to)))
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
            // Answered: no longer to cancel (the pacer put it in the table before this task could run).
            if cancellable {
                lock(&node.shared.inflight).remove(&envelope.tag);
            }
            node.thawed().await;
            node.event(move |m, now| m.on_reply(now, envelope, result)).await;
        }))
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
    let services = Services::new().tls(node.shared.tls.as_ref()).service(node.service());
    let services = if node.shared.lab {
        services.service(LabService::new(crate::clock::ClockSet::default(), Some(node.shared.links.clone())).server())
    } else {
        services
    };
    services.build().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node `id` of 1..=3, its peers at `addrs` (by default nobody listens there: what matters is that
    /// the sends start), slow timers if `slow`.
    fn node(name: &str, id: NodeId, addrs: &[(NodeId, String)], slow: bool) -> (ElectionNode, PathBuf) {
        let dir = std::env::temp_dir().join(format!("synclab-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut peers: BTreeMap<NodeId, String> = (1..=3).map(|id| (id, format!("127.0.0.1:{}", 1 + id))).collect();
        peers.extend(addrs.iter().cloned());
        let scale = if slow { 20 } else { 1 };
        let config = NodeConfig {
            id,
            peers,
            algorithm: Algorithm::Bully,
            heartbeat: Duration::from_millis(50 * scale),
            timeout: Duration::from_millis(200 * scale),
            rpc_timeout: Duration::from_millis(100 * scale),
            probe_timeout: Duration::from_millis(50 * scale),
            election_stagger: Duration::ZERO,
            state_dir: Some(dir.clone()),
            tls: None,
            lab: false,
        };
        (ElectionNode::new(config).unwrap(), dir)
    }

    async fn first_sent(sent: &mut tokio::sync::broadcast::Receiver<pb::MessageEvent>, to: i64, kind: &str) -> pb::MessageEvent {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let e = sent.recv().await.expect("the node's message events");
                if e.direction == Direction::Sent as i32 && e.peer == to && e.kind == kind {
                    return e;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind} to node {to} left"))
    }

    /// An event cut short by its caller (a request handler whose caller's deadline passed while the
    /// node stored the term it just won) must not take the event's messages with it: the group would
    /// never hear of the win. And the won term is in the state file before any of them leaves.
    #[tokio::test]
    async fn an_event_cut_short_by_its_caller_still_sends_its_messages_after_storing_its_won_term() {
        let (node, dir) = node("cut-short", 3, &[], false);
        let mut sent = node.shared.messages.subscribe();
        // Node 3, the highest, wins at once: it mints a term, stores it, announces it to nodes 1 and 2.
        // Polled once and dropped, as a handler is when its caller's deadline passes mid-event.
        let event = node.apply(|m, now| m.hold_election(now, "test"));
        assert!(futures::FutureExt::now_or_never(event).is_none(), "the event takes longer than one poll");
        let announcement = first_sent(&mut sent, 1, "Coordinator").await;
        assert!(announcement.term > 0);
        assert_eq!(StateFile::new(&dir, 3).load().unwrap(), announcement.term, "the won term was stored before it left");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A term learned from a message does not hold the node's messages back, and is stored all the same.
    #[tokio::test]
    async fn a_learned_term_is_stored_behind_the_messages() {
        // Node 3 accepts connections and never answers: node 2's Election to it waits out its 2 s
        // deadline, and node 2 wins (and stores the term it mints) only after that.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (node, dir) = node("learned", 2, &[(3, silent.local_addr().unwrap().to_string())], true);
        let mut sent = node.shared.messages.subscribe();
        // An Election from node 1 with term 7: node 2 answers OK and holds an election of its own.
        let reply = node.apply(|m, now| m.on_request(now, 1, Message::Election { term: 7 })).await.unwrap().unwrap();
        assert!(reply.ok);
        assert_eq!(first_sent(&mut sent, 3, "Election").await.term, 7);
        let stored = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match StateFile::new(&dir, 2).load().unwrap() {
                    0 => tokio::time::sleep(Duration::from_millis(2)).await,
                    term => return term,
                }
            }
        })
        .await;
        assert_eq!(stored, Ok(7), "the learned term, stored before the node's own election ended");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `Election`s the machine withdraws before their turn to leave never leave; the others do.
    #[tokio::test]
    async fn a_withdrawn_election_that_has_not_left_never_leaves() {
        let (node, dir) = node("withdrawn", 1, &[], false);
        let mut sent = node.shared.messages.subscribe();
        let election = |to, tag| Envelope { to, message: Message::Election { term: 0 }, tag };
        node.send_paced(vec![election(3, 1001), election(2, 1002)]);
        // On this single-threaded runtime the pacer has not run yet.
        node.cancel(&[1002]);
        let mut to = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(e) = sent.recv().await {
                if e.direction == Direction::Sent as i32 {
                    to.push(e.peer);
                }
            }
        })
        .await;
        assert_eq!(to, vec![3]);
        assert!(lock(&node.shared.inflight).is_empty(), "nothing left in the table");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
