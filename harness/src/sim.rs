//! A deterministic in-memory network for the election state machines: latency, per-link delay, random
//! jitter (messages overtake each other), random loss and duplication, forged requests, crashes, restarts
//! (a restarted node keeps the term its state file holds), pauses and cut-off nodes. Every node is
//! driven as the real node drives its machine: after each input it takes the machine's `Ready` and
//! persists, sends, withdraws (nothing to cancel on this network: a withdrawn message's answer is
//! handled like any late one) and publishes. It checks the safety invariants
//! (`synclab_core::election::safety`) after every event and counts every message.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

pub use synclab_core::election::safety::Violation;
use synclab_core::election::safety::Watch;
use synclab_core::election::{Algorithm, Envelope, GroupConfig, Kind, Machine, Message, NodeId, Rejection, Reply, Role, SendError, Term};
use synclab_core::lab::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Up,
    Down,
    Paused,
}

#[derive(Debug)]
struct SimNode {
    machine: Machine,
    health: Health,
    /// Cut off from every other node (its timers still run).
    cut: bool,
    /// Receives but cannot send: its requests and its replies are lost (a one-way link).
    mute: bool,
    /// Bumped on restart, so replies meant for the old process are dropped.
    incarnation: u64,
    /// The term in its "state file".
    disk_term: Term,
}

#[derive(Debug)]
enum Event {
    Tick,
    /// A request; `copy`: a duplicate, whose answer goes nowhere (the sender hears the original's).
    Deliver {
        from: NodeId,
        incarnation: u64,
        envelope: Envelope,
        copy: bool,
    },
    Reply {
        to: NodeId,
        incarnation: u64,
        envelope: Envelope,
        result: Result<Reply, SendError>,
    },
}

/// Settings of a simulated network.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// One-way latency of every message.
    pub latency: Duration,
    /// How long a sender waits for an answer that never comes (the RPC deadline).
    pub deadline: Duration,
    /// How often every node's timers are ticked.
    pub tick: Duration,
    /// Probability that a message (request or answer) is lost.
    pub loss: f64,
    /// Seed of the loss, jitter and duplication generator.
    pub seed: u64,
    /// Extra one-way delay of each message, uniform in `[0, jitter)`: later messages may overtake
    /// earlier ones.
    pub jitter: Duration,
    /// Probability that a request arrives twice (the copy after its own latency and jitter); the
    /// sender hears one answer.
    pub duplicate: f64,
    pub heartbeat: Duration,
    pub timeout: Duration,
    /// Elections staggered by rank (zero: off).
    pub election_stagger: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_micros(500),
            deadline: Duration::from_millis(100),
            tick: Duration::from_millis(5),
            loss: 0.0,
            seed: 1,
            jitter: Duration::ZERO,
            duplicate: 0.0,
            heartbeat: Duration::from_millis(50),
            timeout: Duration::from_millis(200),
            election_stagger: Duration::ZERO,
        }
    }
}

/// A group of nodes on an in-memory network.
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    algorithm: Algorithm,
    now: Duration,
    nodes: BTreeMap<NodeId, SimNode>,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    /// The loss, jitter and duplication generator: the same seed, the same run.
    rng: Rng,
    /// Extra one-way delay on links, by (from, to).
    delays: BTreeMap<(NodeId, NodeId), Duration>,
    /// The safety rules, over every node.
    watch: Watch,
    /// Requests sent by kind (failed ones included), and OK answers.
    sent: BTreeMap<Kind, u64>,
    /// Requests a live node received and accepted, by kind.
    delivered: BTreeMap<Kind, u64>,
    violations: Vec<Violation>,
    /// Elections each node took part in.
    elections: BTreeMap<NodeId, u64>,
    /// When each node's last election started, at the last check, to count them.
    election_starts: BTreeMap<NodeId, Duration>,
}

impl Sim {
    /// Nodes with ids `1..=n`, none started yet.
    pub fn new(algorithm: Algorithm, n: u64, config: SimConfig) -> Self {
        let ids: Vec<NodeId> = (1..=n).collect();
        let nodes = ids
            .iter()
            .map(|&id| {
                let machine = Machine::new(algorithm, Self::node_config(&config, id, &ids), 0);
                (id, SimNode { machine, health: Health::Down, cut: false, mute: false, incarnation: 0, disk_term: 0 })
            })
            .collect();
        let rng = Rng::new(config.seed);
        let mut sim = Self {
            config,
            algorithm,
            now: Duration::ZERO,
            nodes,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            rng,
            delays: BTreeMap::new(),
            watch: Watch::new(),
            sent: BTreeMap::new(),
            delivered: BTreeMap::new(),
            violations: Vec::new(),
            elections: BTreeMap::new(),
            election_starts: BTreeMap::new(),
        };
        sim.schedule(Duration::ZERO, Event::Tick);
        sim
    }

    fn node_config(config: &SimConfig, id: NodeId, ids: &[NodeId]) -> GroupConfig {
        GroupConfig::new(id, ids.iter().copied(), config.heartbeat, config.timeout)
            .expect("valid group")
            .with_election_stagger(config.election_stagger)
    }

    /// The current simulated time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// A node's state machine.
    pub fn node(&self, id: NodeId) -> &Machine {
        &self.nodes[&id].machine
    }

    /// Ids of the nodes that are up, not paused and not cut off.
    pub fn live(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, n)| n.health == Health::Up && !n.cut).map(|(&id, _)| id).collect()
    }

    /// Starts (or restarts, with its saved term) a node; it runs an election.
    pub fn start(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let config = Self::node_config(&self.config, id, &ids);
        let algorithm = self.algorithm;
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("known node");
        node.machine = Machine::new(algorithm, config, node.disk_term);
        node.health = Health::Up;
        node.incarnation += 1;
        node.machine.start(now);
        self.flush(id);
    }

    /// Starts every node at once.
    pub fn start_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.start(id);
        }
    }

    /// Crashes a node: messages to it fail at once (connection refused), its timers stop.
    pub fn kill(&mut self, id: NodeId) {
        self.nodes.get_mut(&id).expect("known node").health = Health::Down;
    }

    /// Freezes a node (`docker pause`): messages to it time out, its timers stop, its state stays.
    pub fn pause(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if node.health == Health::Up {
            node.health = Health::Paused;
        }
    }

    /// Thaws a paused node.
    pub fn unpause(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if node.health == Health::Paused {
            node.health = Health::Up;
        }
    }

    /// Cuts a node off from all others (its messages time out both ways), or restores it.
    pub fn set_cut(&mut self, id: NodeId, cut: bool) {
        self.nodes.get_mut(&id).expect("known node").cut = cut;
    }

    /// Makes a node mute (it receives and handles messages, but nothing it sends arrives: its own
    /// requests and its replies are lost), or restores it.
    pub fn set_mute(&mut self, id: NodeId, mute: bool) {
        self.nodes.get_mut(&id).expect("known node").mute = mute;
    }

    /// How many elections a node has taken part in so far (started, or been drawn into).
    pub fn elections(&self, id: NodeId) -> u64 {
        self.elections.get(&id).copied().unwrap_or(0)
    }

    /// Adds `delay` to every message from `from` to `to`.
    pub fn delay(&mut self, from: NodeId, to: NodeId, delay: Duration) {
        self.delays.insert((from, to), delay);
    }

    /// Sets the probability of losing each message.
    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    /// Sets the probability of delivering each request twice.
    pub fn set_duplicate(&mut self, duplicate: f64) {
        self.config.duplicate = duplicate;
    }

    /// Sets the random extra delay of each message.
    pub fn set_jitter(&mut self, jitter: Duration) {
        self.config.jitter = jitter;
    }

    /// Delivers a forged request to `to` now, as if `from` (any id, a member or not) had sent it; its
    /// answer goes nowhere. `None` if `to` is not up and reachable.
    pub fn forge(&mut self, to: NodeId, from: NodeId, message: Message) -> Option<Result<Reply, Rejection>> {
        if !self.reachable(to) {
            return None;
        }
        let now = self.now;
        let result = self.nodes.get_mut(&to).expect("known node").machine.on_request(now, from, message);
        self.flush(to);
        self.check();
        Some(result)
    }

    /// Requests sent so far by kind (`Ok` counts OK answers).
    pub fn sent(&self) -> &BTreeMap<Kind, u64> {
        &self.sent
    }

    /// Requests that reached a live node and were not refused, by kind (`Ok` counts OK answers).
    pub fn delivered(&self) -> &BTreeMap<Kind, u64> {
        &self.delivered
    }

    /// How many `kind` messages were delivered.
    pub fn delivered_of(&self, kind: Kind) -> u64 {
        self.delivered.get(&kind).copied().unwrap_or(0)
    }

    /// Forgets the message counts (to count one election).
    pub fn reset_counts(&mut self) {
        self.sent.clear();
        self.delivered.clear();
    }

    /// Makes a node run an election now, as if it had just suspected its coordinator.
    pub fn suspect(&mut self, id: NodeId) {
        let now = self.now;
        self.nodes.get_mut(&id).expect("known node").machine.hold_election(now, "suspicion (test)");
        self.flush(id);
    }

    /// Makes a node find its coordinator dead now, as a broken line (a closed connection and an
    /// unanswered probe) tells it: it suspects it and holds an election.
    pub fn lose_coordinator(&mut self, id: NodeId) {
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(coordinator) = node.machine.core().coordinator() {
            node.machine.coordinator_lost(now, coordinator, "lost its connection (test)");
        }
        self.flush(id);
    }

    /// Safety violations seen so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// The coordinator every live node agrees on, if they all agree.
    pub fn agreed(&self) -> Option<NodeId> {
        let live = self.live();
        let first = self.nodes[live.first()?].machine.core().coordinator()?;
        live.iter().all(|id| self.nodes[id].machine.core().coordinator() == Some(first)).then_some(first)
    }

    /// The live nodes that consider themselves coordinator.
    pub fn coordinators(&self) -> Vec<NodeId> {
        self.live().into_iter().filter(|id| self.nodes[id].machine.core().role() == Role::Coordinator).collect()
    }

    /// Whether the group is settled: every live node follows the highest live id, which rules.
    pub fn settled(&self) -> bool {
        let live = self.live();
        let Some(&highest) = live.last() else { return true };
        self.agreed() == Some(highest)
            && self.coordinators() == vec![highest]
            && live.iter().all(|id| matches!(self.nodes[id].machine.core().role(), Role::Follower | Role::Coordinator))
    }

    /// Runs until `now + span`.
    pub fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        while let Some(&Reverse((at, seq))) = self.queue.peek() {
            if at > end {
                break;
            }
            self.queue.pop();
            self.now = at;
            let event = self.events.remove(&seq).expect("scheduled event");
            self.handle(event);
            self.check();
        }
        self.now = end;
    }

    /// Runs until the group is settled (checked every tick) or `limit` passes; returns the time taken.
    pub fn run_until_settled(&mut self, limit: Duration) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            self.run_for(self.config.tick);
            if self.settled() {
                return Some(self.now - start);
            }
        }
        None
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.events.insert(self.seq, event);
        self.queue.push(Reverse((at, self.seq)));
    }

    /// A uniform number in [0, 1): the generator's top 53 bits.
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (the generator only moves when `p` is positive).
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.uniform() <= p
    }

    fn lost(&mut self) -> bool {
        self.chance(self.config.loss)
    }

    /// A message's random extra delay.
    fn jitter(&mut self) -> Duration {
        if self.config.jitter.is_zero() {
            return Duration::ZERO;
        }
        self.config.jitter.mul_f64(self.uniform())
    }

    fn reachable(&self, id: NodeId) -> bool {
        let node = &self.nodes[&id];
        node.health == Health::Up && !node.cut
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick => {
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                for id in ids {
                    let node = self.nodes.get_mut(&id).expect("node");
                    if node.health == Health::Up {
                        node.machine.tick(self.now);
                        self.flush(id);
                    }
                }
                self.schedule(self.now + self.config.tick, Event::Tick);
            }
            Event::Deliver { from, incarnation, envelope, copy } => {
                let to = envelope.to;
                if copy {
                    // A duplicate: handled again if it gets through; its answer goes nowhere.
                    if self.reachable(to) && !self.nodes[&from].cut && !self.nodes[&from].mute && !self.lost() {
                        let _ = self.nodes.get_mut(&to).expect("node").machine.on_request(self.now, from, envelope.message);
                        self.flush(to);
                    }
                    return;
                }
                let down = self.nodes[&to].health == Health::Down;
                let fail_at = self.now + self.config.deadline.saturating_sub(self.config.latency);
                if down && !self.nodes[&from].cut {
                    // Connection refused comes back at once.
                    let result = Err(SendError::Unreachable(format!("node {to} is down")));
                    self.schedule(self.now + self.config.latency, Event::Reply { to: from, incarnation, envelope, result });
                    return;
                }
                if !self.reachable(to) || self.nodes[&from].cut || self.nodes[&from].mute || self.lost() {
                    let result = Err(SendError::NoAnswer(format!("no answer from node {to}")));
                    self.schedule(fail_at, Event::Reply { to: from, incarnation, envelope, result });
                    return;
                }
                let node = self.nodes.get_mut(&to).expect("node");
                let result = node.machine.on_request(self.now, from, envelope.message.clone());
                if result.is_ok() {
                    *self.delivered.entry(envelope.message.kind()).or_default() += 1;
                }
                if matches!(result, Ok(Reply { ok: true, .. })) && envelope.message.kind() == Kind::Election {
                    *self.sent.entry(Kind::Ok).or_default() += 1;
                    *self.delivered.entry(Kind::Ok).or_default() += 1;
                }
                self.flush(to);
                let result = result.map_err(|e| SendError::Refused(e.to_string()));
                if self.nodes[&to].mute || self.lost() {
                    let result = Err(SendError::NoAnswer(format!("the answer from node {to} was lost")));
                    self.schedule(fail_at, Event::Reply { to: from, incarnation, envelope, result });
                } else {
                    let at = self.now + self.link_latency(to, from) + self.jitter();
                    self.schedule(at, Event::Reply { to: from, incarnation, envelope, result });
                }
            }
            Event::Reply { to, incarnation, envelope, result } => {
                let node = self.nodes.get_mut(&to).expect("node");
                if node.incarnation != incarnation || node.health != Health::Up {
                    return;
                }
                node.machine.on_reply(self.now, envelope, result);
                self.flush(to);
            }
        }
    }

    fn link_latency(&self, from: NodeId, to: NodeId) -> Duration {
        self.config.latency + self.delays.get(&(from, to)).copied().unwrap_or_default()
    }

    /// Carries out the node's `Ready` as the real node does: persists its term (at once: this network
    /// has no disk to wait for, so before the messages whether or not they must wait), then puts its
    /// messages on the network. Withdrawn sends need nothing (their answers are handled like any late
    /// answer), and nobody watches the published state but [`Sim::check`].
    fn flush(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node");
        let ready = node.machine.ready();
        if let Some(persist) = ready.persist {
            node.disk_term = node.disk_term.max(persist.term);
            node.machine.persisted(persist.term);
        }
        let incarnation = node.incarnation;
        for envelope in ready.messages {
            *self.sent.entry(envelope.message.kind()).or_default() += 1;
            let at = self.now + self.link_latency(id, envelope.to) + self.jitter();
            if self.chance(self.config.duplicate) {
                let again = self.now + self.link_latency(id, envelope.to) + self.jitter();
                self.schedule(again, Event::Deliver { from: id, incarnation, envelope: envelope.clone(), copy: true });
            }
            self.schedule(at, Event::Deliver { from: id, incarnation, envelope, copy: false });
        }
    }

    fn check(&mut self) {
        for (&id, node) in &self.nodes {
            let core = node.machine.core();
            if let Some(started) = core.last_election().map(|e| e.started)
                && self.election_starts.insert(id, started) != Some(started)
            {
                *self.elections.entry(id).or_default() += 1;
            }
            self.violations.extend(self.watch.check(core, node.disk_term, node.health != Health::Down));
        }
    }
}
