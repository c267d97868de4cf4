//! An election node: the thin I/O shell around a `synclab_core::election::Machine`, its settings and
//! its start.
//!
//! It serves `synclab.election.v1.ElectionService` ([`service`]), feeds the machine the requests that
//! arrive, the outcome of every message it sends (each RPC has a deadline shorter than the suspicion
//! timeout; an unreachable peer counts as dead for that message) and its timers ([`run`]), and carries
//! out the `Ready` the machine leaves after each: persist (the state file, [`super::state`]), send and
//! withdraw ([`outbox`]), publish (the observers' view, and the line to the coordinator, [`follow`]).
//!
//! The files depend on each other one way: `outbox` on nothing here, `mod` (this file) on `outbox`,
//! `run` and `follow` on `mod` and `outbox`, `service` on all of them.

mod follow;
mod outbox;
mod run;
mod service;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use synclab_core::election::availability::Availability;
use synclab_core::election::{Algorithm, ConfigError, Detector, GroupConfig, Machine, NodeId, Term};
use tokio::sync::{Notify, watch};

use self::outbox::Outbox;
use super::convert::{Timeline, node_state, wire_id};
use super::peer::Peer;
use super::state::{StateError, StateFile};
use crate::lab::{LabService, LinkFaults};
use crate::lock::lock;
use crate::proto::election as pb;
use crate::proto::election::election_service_server::ElectionServiceServer;
use crate::rpc::{Dialer, RpcError};
use crate::server::{Limits, Server, ServerError, Services, Stop, StopHandle, Watchers};
use crate::telemetry::Refusals;
use crate::tls::Tls;

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
    /// How a follower finds its coordinator silent: after `timeout` (fixed), or by the φ-accrual detector
    /// learned from its heartbeats (adaptive; see `synclab_core::detector`).
    pub detector: Detector,
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

struct Shared {
    id: NodeId,
    algorithm: Algorithm,
    machine: Mutex<Machine>,
    /// One event at a time, from the machine through the state file to the network.
    turn: tokio::sync::Mutex<()>,
    timeline: Timeline,
    /// Every member's address (replaced when discovery finds other members).
    members: Mutex<Vec<pb::Member>>,
    /// Told of every failed send to a discovered member: look the members up again.
    peer_failed: Arc<Notify>,
    /// Addresses that sent messages as a node this one does not know (a member that DNS does not list
    /// here yet): discovery asks them who they are.
    strangers: Mutex<std::collections::BTreeSet<std::net::IpAddr>>,
    state: Option<StateFile>,
    /// The highest term in the state file; held while writing it, so writes never go back.
    written: tokio::sync::Mutex<Term>,
    /// The observers' view, republished when role, term or coordinator change.
    leader: watch::Sender<pb::NodeState>,
    /// When this node had a coordinator, and its leader changes (from the published states).
    availability: Mutex<Availability>,
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
    /// The peers, the messages on their way to them, and the message watchers' feed.
    outbox: Arc<Outbox>,
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
            .with_election_stagger(config.election_stagger)
            .with_detection(config.detector.detection(config.heartbeat, config.timeout));
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
        let links = Arc::new(LinkFaults::new(config.peers.keys().copied().filter(|&p| p != config.id)));
        let outbox = Arc::new(Outbox::new(config.id, peers, links.clone(), config.rpc_timeout, halted.clone()));
        let shared = Arc::new(Shared {
            id: config.id,
            algorithm: config.algorithm,
            machine: Mutex::new(machine),
            turn: tokio::sync::Mutex::new(()),
            members: Mutex::new(members),
            peer_failed: Arc::new(Notify::new()),
            strangers: Mutex::new(std::collections::BTreeSet::new()),
            state,
            written: tokio::sync::Mutex::new(term),
            leader: watch::channel(pb::NodeState::default()).0,
            availability: Mutex::new(Availability::new(timeline.now())),
            wake: Notify::new(),
            frozen: watch::channel(false).0,
            halt,
            halted,
            watchers: Watchers::new(Limits::default().max_watchers),
            refusals: Refusals::new("election message"),
            store_failures: Refusals::new("state file write"),
            leave,
            leaving,
            // Discovery may grow the group: room for the lines of a few dozen followers at least.
            lines: Watchers::new(config.peers.len().max(64) * 4),
            following: Mutex::new(None),
            probe_timeout: config.probe_timeout,
            rpc_timeout: config.rpc_timeout,
            tls: config.tls.clone(),
            lab: config.lab,
            links,
            outbox,
            message_watchers: Watchers::new(Limits::default().max_watchers),
            crashed: std::sync::atomic::AtomicBool::new(false),
            timeline,
        });
        let node = Self { shared };
        let state = node.describe(&node.lock());
        node.shared.leader.send_replace(state);
        tracing::info!(id = config.id, algorithm = %config.algorithm, term, "election node ready");
        Ok(node)
    }

    /// The gRPC service, for a server's routes.
    pub fn service(&self) -> ElectionServiceServer<ElectionNode> {
        ElectionServiceServer::new(self.clone())
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// Makes the node's coming stop a crash: no goodbye to its followers (as `docker kill` would).
    ///
    /// A hook of the lab's in-process backend, built only with the `lab-runner` feature (not in the image).
    #[cfg(feature = "lab-runner")]
    pub fn crash_on_stop(&self) {
        self.shared.crashed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Freezes or thaws the node, as `docker pause` / `unpause` do to a container: while frozen it
    /// answers nothing (callers hit their deadline) and its timers do not fire.
    ///
    /// A hook of the lab's in-process backend, built only with the `lab-runner` feature (not in the image).
    #[cfg(feature = "lab-runner")]
    pub fn set_frozen(&self, frozen: bool) {
        self.shared.frozen.send_replace(frozen);
    }

    /// Told of every failed send to a member that discovery found ([`super::discovery::keep_members`]
    /// looks the members up again at once).
    pub fn peer_failures(&self) -> Arc<Notify> {
        self.shared.peer_failed.clone()
    }

    /// A message came from `ip` as a node that is not a member here: remembered (at most 64) for
    /// discovery to ask, and discovery woken.
    pub(super) fn stranger(&self, ip: std::net::IpAddr) {
        let mut strangers = lock(&self.shared.strangers);
        if strangers.len() < 64 && strangers.insert(ip) {
            self.shared.peer_failed.notify_one();
        }
    }

    /// The addresses that sent messages as unknown nodes since the last call.
    pub fn take_strangers(&self) -> Vec<std::net::IpAddr> {
        std::mem::take(&mut *lock(&self.shared.strangers)).into_iter().collect()
    }

    /// Makes `members` (every member's address by id, this node's own entry included or not) the group,
    /// as discovery found it. The same ids at other addresses only redial those peers. Other ids
    /// rebuild the machine for the new group, keeping the term it has seen (so no term is claimed
    /// twice), and hold an election: Bully's highest id takes over, a Ring closes over the new members.
    /// Returns whether the ids changed.
    pub async fn set_members(&self, members: BTreeMap<NodeId, String>) -> bool {
        let own = self.shared.id;
        let (changed, ids) = {
            let _turn = self.shared.turn.lock().await;
            let old = self.shared.outbox.peers();
            let mut peers = BTreeMap::new();
            for (&id, address) in members.iter().filter(|(id, _)| **id != own) {
                match old.get(&id) {
                    Some(peer) if peer.address() == address => {
                        peers.insert(id, peer.clone());
                    }
                    _ => match Peer::new(id, address, self.shared.rpc_timeout, Dialer::new(self.shared.tls.clone())) {
                        Ok(peer) => {
                            tracing::info!(id = own, peer = id, %address, "member found");
                            peers.insert(id, Arc::new(peer.on_failure(self.shared.peer_failed.clone())));
                        }
                        Err(e) => tracing::warn!(id = own, peer = id, %address, error = %e, "cannot dial a member found"),
                    },
                }
            }
            let mut ids: Vec<NodeId> = peers.keys().copied().chain(std::iter::once(own)).collect();
            ids.sort_unstable();
            let listed =
                ids.iter().map(|id| pb::Member { id: wire_id(*id), address: members.get(id).cloned().unwrap_or_default() }).collect();
            self.shared.links.set_peers(peers.keys().copied());
            self.shared.outbox.set_peers(peers);
            *lock(&self.shared.members) = listed;
            let mut machine = self.lock();
            let config = machine.core().config().clone();
            if config.members == ids {
                (false, ids)
            } else {
                match GroupConfig::new(own, ids.iter().copied(), config.heartbeat, config.timeout) {
                    Ok(checked) => {
                        // Every other setting (timeouts, stagger, detection) as before.
                        let mut group = config.clone();
                        group.members = checked.members;
                        let term = machine.core().term();
                        *machine = Machine::new(self.shared.algorithm, group, term);
                        (true, ids)
                    }
                    Err(e) => {
                        tracing::warn!(id = own, error = %e, "the members found do not make a group: kept the old one");
                        (false, ids)
                    }
                }
            }
        };
        if changed {
            tracing::info!(id = own, members = ?ids, "the members changed: holding an election");
            self.event(|m, now| m.hold_election(now, "the members changed")).await;
        }
        changed
    }

    /// The node's state as `GetState` reports it: after any event in progress, so it shows no term
    /// that is not stored yet, and matches what `WatchLeader` has published.
    pub async fn snapshot(&self) -> pb::NodeState {
        let _turn = self.shared.turn.lock().await;
        self.describe(&self.lock())
    }

    fn now(&self) -> Duration {
        self.shared.timeline.now()
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        lock(&self.shared.machine)
    }

    fn describe(&self, machine: &Machine) -> pb::NodeState {
        let mut state = node_state(self.shared.id, self.shared.algorithm, machine, &lock(&self.shared.members), &self.shared.timeline);
        let availability = lock(&self.shared.availability);
        state.leader_changes = availability.leader_changes();
        state.availability = availability.fraction(self.now());
        state
    }

    /// Notes the machine's role, term and coordinator now in the availability record.
    fn note_leadership(&self, machine: &Machine) {
        let core = machine.core();
        lock(&self.shared.availability).observe(self.now(), core.role(), core.term(), core.coordinator());
    }

    /// A message from `from` over a link a lab cut: it goes unanswered, as a dropped packet would, until
    /// the caller's deadline has surely passed.
    async fn cut_off(&self, from: NodeId) -> Result<(), tonic::Status> {
        if self.shared.links.incoming_dropped(from) {
            tokio::time::sleep(self.shared.rpc_timeout * 2).await;
            return Err(tonic::Status::unavailable("dropped on a cut link (lab)"));
        }
        Ok(())
    }

    /// Returns once the node is not frozen.
    async fn thawed(&self) {
        if !*self.shared.frozen.borrow() {
            return;
        }
        let mut frozen = self.shared.frozen.subscribe();
        let _ = frozen.wait_for(|f| !*f).await;
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
