//! A deterministic in-memory network for the election state machines, in virtual time: latency (fixed,
//! or drawn from a distribution per message), per-link faults (drop one way or both, delay, jitter,
//! loss), random jitter (messages overtake each other), random loss and duplication, forged requests,
//! crashes, goodbyes (a stop), restarts (a restarted node keeps the term its state file holds, or lost
//! it), pauses, slow nodes and cut-off nodes. Every node is driven as the real node drives its machine:
//! after each input it takes the machine's `Ready` and persists, sends, withdraws (nothing to cancel on
//! this network: a withdrawn message's answer is handled like any late one) and publishes. It checks the
//! safety invariants (`synclab_core::election::safety`) after every event and counts every message; with
//! [`Sim::record`] on, it also writes what the lab's observers would see (each node's state as it
//! changes, every message sent, received, answered or failed) as history events.
//!
//! A node's timers run only when its machine has something due (its next wake-up, on a 1 ms grain, as
//! a timer wheel runs them), not every node at every tick: the same runs, byte for byte, at a fraction
//! of the cost for large groups. (Over 700 lines: one network and its event loop; split, the order of
//! events that makes a run reproducible would be spread over files.)

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

pub use synclab_core::election::safety::Violation;
use synclab_core::election::safety::Watch;
use synclab_core::election::{
    Algorithm, Envelope, GroupConfig, Kind, Machine, Message, NodeId, Rejection, Reply, Role, SendError, Term, Timers,
};
use synclab_core::lab::Rng;
use synclab_core::lab::history::{self, ElectionObservation, Event as HistoryEvent, MessageObservation};

/// How long a node whose machine runs no timer goes before its timers are looked in on (the real
/// node's loop wakes once a second then).
const IDLE: Duration = Duration::from_secs(1);

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
    /// Slow (not dead): every request and timer it handles waits this long first.
    slow: Duration,
    /// When its timers last ran.
    last_tick: Duration,
    /// The tick its timers next run at (see [`Sim::rearm`]).
    wake: Option<Duration>,
}

#[derive(Debug)]
enum Event {
    /// The timers of the nodes due at this tick ([`Sim::due`]) run, in id order.
    Tick,
    /// A request; `copy`: a duplicate, whose answer goes nowhere (the sender hears the original's).
    /// `late`: already held back once by a slow receiver.
    Deliver {
        from: NodeId,
        incarnation: u64,
        envelope: Envelope,
        copy: bool,
        sent: Duration,
        late: bool,
    },
    Reply {
        to: NodeId,
        incarnation: u64,
        envelope: Envelope,
        result: Result<Reply, SendError>,
    },
    /// The line from `node` to the coordinator it follows broke (a crash) or carried a goodbye (a stop).
    Lost {
        node: NodeId,
        incarnation: u64,
        coordinator: NodeId,
        why: &'static str,
    },
}

/// A node's fault on its link to a peer, as the real node's lab links apply it (`synclab::lab`):
/// delay, jitter and loss hit the requests it sends to the peer (not the answers it gives), and a
/// drop also refuses the peer's requests to it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkFault {
    /// Nothing crosses: its requests to the peer are lost, and the peer's to it unanswered.
    pub drop: bool,
    /// Added to each request it sends the peer.
    pub delay: Duration,
    /// Up to this much more, uniform at random.
    pub jitter: Duration,
    /// The probability that a request it sends the peer is lost.
    pub loss: f64,
}

/// Settings of a simulated network.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// One-way latency of every message (the least, when `latency_tail` is not zero).
    pub latency: Duration,
    /// The mean of an exponential tail added to each message's latency (zero: the latency is fixed).
    pub latency_tail: Duration,
    /// How long a sender waits for an answer that never comes (the RPC deadline).
    pub deadline: Duration,
    /// The grain of every node's timers: a node's timers run at the first multiple of it at or after
    /// the machine's next wake-up (as a timer wheel of this resolution would run them).
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
    /// Every node's heartbeat, timeout and failure detector.
    pub timers: Timers,
    /// Elections staggered by rank (zero: off).
    pub election_stagger: Duration,
    /// Model the real node's shell around the machine: a follower's line to its coordinator (a crash
    /// breaks it, a stop carries a goodbye: the follower holds an election at once instead of waiting
    /// for its timeout), and the RPC deadline (an answer later than it is no answer).
    pub shell: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_micros(500),
            latency_tail: Duration::ZERO,
            deadline: Duration::from_millis(100),
            tick: Duration::from_millis(5),
            loss: 0.0,
            seed: 1,
            jitter: Duration::ZERO,
            duplicate: 0.0,
            timers: Timers::default(),
            election_stagger: Duration::ZERO,
            shell: false,
        }
    }
}

impl SimConfig {
    /// The lab's network: the `--local` nodes' timers (50 ms heartbeats, 200 ms timeout, 100 ms RPC
    /// deadline), the shell modelled, and a latency from measurement: half the loopback `GetTime` round
    /// trip BENCHMARKS.md states (median 122.9 µs, p99 221.4 µs, 2026-11-26), as a shifted exponential
    /// with the same median and p99 one way (52.8 µs plus a tail of mean 12.6 µs: 61.5 µs median,
    /// 110.7 µs p99).
    pub fn measured(seed: u64) -> Self {
        Self {
            latency: Duration::from_nanos(52_800),
            latency_tail: Duration::from_nanos(12_600),
            tick: Duration::from_millis(1),
            seed,
            shell: true,
            ..Self::default()
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
    /// Events by (time, class, sequence): at one instant, messages and losses (class 0) come before
    /// the timers (class 1), then in the order they were scheduled.
    queue: BinaryHeap<Reverse<(Duration, u8, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    /// The nodes whose timers run at each tick still to come (each node at one tick at most).
    due: BTreeMap<Duration, BTreeSet<NodeId>>,
    /// The last tick that has passed (its timers ran, or the simulation ran past it).
    ticked: Option<Duration>,
    /// The loss, jitter and duplication generator: the same seed, the same run.
    rng: Rng,
    /// Faulty links, by (from, to): the lab's, on requests.
    links: BTreeMap<(NodeId, NodeId), LinkFault>,
    /// Extra one-way delay of every message (requests and answers), by (from, to).
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
    /// Nodes an event may have changed since the last check.
    touched: BTreeSet<NodeId>,
    /// What the lab's observers would have seen, when recording.
    trace: Option<Vec<HistoryEvent>>,
    /// Each node's last recorded (role, term, coordinator).
    shown: BTreeMap<NodeId, (history::Role, Term, Option<NodeId>)>,
}

impl Sim {
    /// Nodes with ids `1..=n`, none started yet.
    pub fn new(algorithm: Algorithm, n: u64, config: SimConfig) -> Self {
        let ids: Vec<NodeId> = (1..=n).collect();
        let nodes = ids
            .iter()
            .map(|&id| {
                let machine = Machine::new(algorithm, Self::node_config(&config, id, &ids), 0);
                let node = SimNode {
                    machine,
                    health: Health::Down,
                    cut: false,
                    mute: false,
                    incarnation: 0,
                    disk_term: 0,
                    slow: Duration::ZERO,
                    last_tick: Duration::ZERO,
                    wake: None,
                };
                (id, node)
            })
            .collect();
        let rng = Rng::new(config.seed);
        Self {
            config,
            algorithm,
            now: Duration::ZERO,
            nodes,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            due: BTreeMap::new(),
            ticked: None,
            rng,
            links: BTreeMap::new(),
            delays: BTreeMap::new(),
            watch: Watch::new(),
            sent: BTreeMap::new(),
            delivered: BTreeMap::new(),
            violations: Vec::new(),
            elections: BTreeMap::new(),
            election_starts: BTreeMap::new(),
            touched: BTreeSet::new(),
            trace: None,
            shown: BTreeMap::new(),
        }
    }

    fn node_config(config: &SimConfig, id: NodeId, ids: &[NodeId]) -> GroupConfig {
        GroupConfig::new(id, ids.iter().copied(), config.timers.heartbeat, config.timers.timeout)
            .expect("valid group")
            .with_election_stagger(config.election_stagger)
            .with_detection(config.timers.detection())
    }

    /// Starts recording what the lab's observers would see ([`Sim::take_trace`]).
    pub fn record(&mut self) {
        self.trace.get_or_insert_with(Vec::new);
    }

    /// The observations recorded since the last call, in the order they happened (times in seconds
    /// of virtual time).
    pub fn take_trace(&mut self) -> Vec<HistoryEvent> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The current simulated time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The ids of every node.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// A node's state machine.
    pub fn node(&self, id: NodeId) -> &Machine {
        &self.nodes[&id].machine
    }

    /// Whether a node's process runs (up or paused).
    pub fn running(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.health != Health::Down)
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
        node.last_tick = now;
        node.machine.start(now);
        self.flush(id);
        self.check();
    }

    /// Starts every node at once.
    pub fn start_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.start(id);
        }
    }

    /// Crashes a node: messages to it fail at once (connection refused), its timers stop. With the
    /// shell modelled, the lines its followers keep to it break: they learn it at once.
    pub fn kill(&mut self, id: NodeId) {
        self.go_down(id, "lost its connection");
    }

    /// Stops a node as SIGTERM does: it says goodbye on its followers' lines (with the shell
    /// modelled), then it is down.
    pub fn stop(&mut self, id: NodeId) {
        self.go_down(id, "said goodbye");
    }

    fn go_down(&mut self, id: NodeId, why: &'static str) {
        self.caught_up(id);
        let node = self.nodes.get_mut(&id).expect("known node");
        let was_running = node.health != Health::Down;
        node.health = Health::Down;
        self.touched.insert(id);
        if self.config.shell && was_running {
            let followers: Vec<(NodeId, u64)> = self
                .nodes
                .iter()
                .filter(|&(&n, node)| {
                    n != id
                        && node.health == Health::Up
                        && node.machine.core().role() == Role::Follower
                        && node.machine.core().coordinator() == Some(id)
                })
                .map(|(&n, node)| (n, node.incarnation))
                .collect();
            for (n, incarnation) in followers {
                if self.blocked(id, n) {
                    continue;
                }
                // A goodbye crosses the line once; a broken line is noticed, then confirmed by a
                // probe the dead process refuses (a round trip).
                let trips = if why == "said goodbye" { 1 } else { 2 };
                let at = self.now + self.config.latency * trips;
                self.schedule(at, Event::Lost { node: n, incarnation, coordinator: id, why });
            }
        }
        self.check();
    }

    /// Forgets a node's state file (its term back to 0): the next start begins from nothing.
    pub fn wipe(&mut self, id: NodeId) {
        self.nodes.get_mut(&id).expect("known node").disk_term = 0;
    }

    /// Freezes a node (`docker pause`): messages to it time out, its timers stop, its state stays.
    pub fn pause(&mut self, id: NodeId) {
        self.caught_up(id);
        let node = self.nodes.get_mut(&id).expect("known node");
        if node.health == Health::Up {
            node.health = Health::Paused;
        }
        self.touched.insert(id);
        self.check();
    }

    /// Thaws a paused node.
    pub fn unpause(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if node.health == Health::Paused {
            node.health = Health::Up;
        }
        self.touched.insert(id);
        self.check();
    }

    /// Makes a node slow (not dead): each request it receives and each run of its timers waits `by`
    /// first (zero: back to normal).
    pub fn set_slow(&mut self, id: NodeId, by: Duration) {
        self.caught_up(id);
        self.nodes.get_mut(&id).expect("known node").slow = by;
        self.touched.insert(id);
        self.check();
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

    /// Adds `delay` to every message from `from` to `to`, requests and answers alike.
    pub fn delay(&mut self, from: NodeId, to: NodeId, delay: Duration) {
        self.delays.insert((from, to), delay);
    }

    /// Sets the fault of the link from `from` to `to` (the default: healthy).
    pub fn set_link(&mut self, from: NodeId, to: NodeId, fault: LinkFault) {
        if fault == LinkFault::default() {
            self.links.remove(&(from, to));
        } else {
            self.links.insert((from, to), fault);
        }
    }

    /// The fault of the link from `from` to `to`.
    pub fn link(&self, from: NodeId, to: NodeId) -> LinkFault {
        self.links.get(&(from, to)).copied().unwrap_or_default()
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
        self.check();
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
        self.check();
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
        while let Some(&Reverse((at, _, seq))) = self.queue.peek() {
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
        // Every tick up to `end` has passed: a node woken now (a thaw, a start) runs its timers at
        // the next one.
        let grain = self.config.tick.as_nanos().max(1);
        let passed = Duration::from_nanos((end.as_nanos() / grain * grain) as u64);
        self.ticked = Some(self.ticked.map_or(passed, |t| t.max(passed)));
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
        let class = u8::from(matches!(event, Event::Tick));
        self.seq += 1;
        self.events.insert(self.seq, event);
        self.queue.push(Reverse((at, class, self.seq)));
    }

    /// Brings a node's last run of its timers up to the last tick that has passed, if it is up and not
    /// slow: its timers are due at every tick then (they only run when they have work, which is the
    /// same), and a slowness set now counts from that tick.
    fn caught_up(&mut self, id: NodeId) {
        let ticked = self.ticked;
        let node = self.nodes.get_mut(&id).expect("known node");
        if node.health == Health::Up
            && node.slow.is_zero()
            && let Some(t) = ticked
        {
            node.last_tick = node.last_tick.max(t);
        }
    }

    /// Schedules the next run of `id`'s timers: at the first tick at or after the machine's next
    /// wake-up (for a slow node, its slowness after its last run) that has not run yet; a machine
    /// with no timer running is looked in on after [`IDLE`], as the real node's loop does. A
    /// node keeps an earlier tick it already has (its timers then find nothing to do, and it is
    /// scheduled again); a node that is not up has none (it is scheduled again when it starts or
    /// thaws). Only the nodes with something due are ticked: a tick of every node every millisecond
    /// was most of the simulator's time at n = 100.
    fn rearm(&mut self, id: NodeId) {
        let node = &self.nodes[&id];
        if node.health != Health::Up {
            return;
        }
        let grain = self.config.tick.as_nanos().max(1);
        // A slow node's timers run every `slow` (at the first tick after each period), whether they
        // have work or not, as a busy process gets to them.
        let want = if node.slow.is_zero() { node.machine.next_wakeup().unwrap_or(self.now + IDLE) } else { node.last_tick + node.slow };
        let want = want.max(self.now);
        let mut at = Duration::from_nanos((want.as_nanos().div_ceil(grain) * grain) as u64);
        if let Some(ticked) = self.ticked
            && at <= ticked
        {
            at = ticked + Duration::from_nanos(grain as u64);
        }
        if node.wake.is_some_and(|w| w <= at) {
            return;
        }
        if let Some(w) = node.wake
            && let Some(set) = self.due.get_mut(&w)
        {
            set.remove(&id);
        }
        self.nodes.get_mut(&id).expect("node").wake = Some(at);
        let set = self.due.entry(at).or_default();
        let first = set.is_empty();
        set.insert(id);
        if first {
            self.schedule(at, Event::Tick);
        }
    }

    /// A uniform number in [0, 1): the generator's top 53 bits.
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (the generator only moves when `p` is positive).
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.uniform() <= p
    }

    /// Whether a message is lost at random on the network.
    fn lost(&mut self) -> bool {
        self.chance(self.config.loss)
    }

    /// Whether nothing crosses from `from` to `to` (a cut either end, a mute sender, or a link either
    /// end dropped).
    fn blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.nodes[&from].cut || self.nodes[&to].cut || self.nodes[&from].mute || self.link(from, to).drop || self.link(to, from).drop
    }

    /// A uniform fraction of `span` (the generator only moves when `span` is not zero).
    fn spread(&mut self, span: Duration) -> Duration {
        if span.is_zero() {
            return Duration::ZERO;
        }
        span.mul_f64(self.uniform())
    }

    /// One message's one-way latency on the network from `from` to `to`: the least, its tail, the
    /// network's jitter and the pair's delay.
    fn latency(&mut self, from: NodeId, to: NodeId) -> Duration {
        let mut at = self.config.latency + self.delays.get(&(from, to)).copied().unwrap_or_default();
        if !self.config.latency_tail.is_zero() {
            // Exponential: -ln(1 - u) times the mean, u in [0, 1).
            let u = self.uniform();
            at += self.config.latency_tail.mul_f64(-(1.0 - u).ln());
        }
        at + self.spread(self.config.jitter)
    }

    /// A request's latency from `from` to `to`: the network's, and the sender's link delay and jitter.
    fn request_latency(&mut self, from: NodeId, to: NodeId) -> Duration {
        let at = self.latency(from, to);
        let link = self.link(from, to);
        at + link.delay + self.spread(link.jitter)
    }

    fn reachable(&self, id: NodeId) -> bool {
        let node = &self.nodes[&id];
        node.health == Health::Up && !node.cut
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick => {
                let now = self.now;
                self.ticked = Some(now);
                for id in self.due.remove(&now).unwrap_or_default() {
                    let node = self.nodes.get_mut(&id).expect("node");
                    node.wake = None;
                    self.touched.insert(id);
                    if node.health == Health::Up && now.saturating_sub(node.last_tick) >= node.slow {
                        node.last_tick = now;
                        node.machine.tick(now);
                        self.flush(id);
                    }
                }
            }
            Event::Deliver { from, incarnation, envelope, copy, sent, late } => {
                let to = envelope.to;
                let slow = self.nodes[&to].slow;
                if !late && !slow.is_zero() && self.nodes[&to].health == Health::Up {
                    // A slow receiver gets to it later.
                    self.schedule(self.now + slow, Event::Deliver { from, incarnation, envelope, copy, sent, late: true });
                    return;
                }
                // The sender's link first (as the real node's outbox does): a drop or a loss there is
                // silence until the deadline.
                let fail_at = self.now.max(sent + self.config.deadline);
                let link = self.link(from, to);
                let sender_cut = self.nodes[&from].cut || self.nodes[&from].mute || link.drop;
                if sender_cut || self.chance(link.loss) {
                    if !copy {
                        let result = Err(SendError::NoAnswer(format!("no answer from node {to}")));
                        self.schedule(fail_at, Event::Reply { to: from, incarnation, envelope, result });
                    }
                    return;
                }
                if copy {
                    // A duplicate: handled again if it gets through; its answer goes nowhere.
                    if self.reachable(to) && !self.blocked(from, to) && !self.lost() {
                        let _ = self.nodes.get_mut(&to).expect("node").machine.on_request(self.now, from, envelope.message);
                        self.flush(to);
                    }
                    return;
                }
                if self.nodes[&to].health == Health::Down {
                    // Connection refused comes back at once.
                    let result = Err(SendError::Unreachable(format!("node {to} is down")));
                    let at = self.now + self.config.latency;
                    self.schedule(at, Event::Reply { to: from, incarnation, envelope, result });
                    return;
                }
                if !self.reachable(to) || self.blocked(from, to) || self.lost() {
                    let result = Err(SendError::NoAnswer(format!("no answer from node {to}")));
                    self.schedule(fail_at, Event::Reply { to: from, incarnation, envelope, result });
                    return;
                }
                let node = self.nodes.get_mut(&to).expect("node");
                let result = node.machine.on_request(self.now, from, envelope.message.clone());
                self.message(to, from, "received", &envelope.message);
                if result.is_ok() {
                    *self.delivered.entry(envelope.message.kind()).or_default() += 1;
                }
                if matches!(result, Ok(Reply { ok: true, .. })) && envelope.message.kind() == Kind::Election {
                    *self.sent.entry(Kind::Ok).or_default() += 1;
                    *self.delivered.entry(Kind::Ok).or_default() += 1;
                }
                self.flush(to);
                let result = result.map_err(|e| SendError::Refused(e.to_string()));
                let back = if self.nodes[&to].mute || self.lost() { None } else { Some(self.now + self.latency(to, from)) };
                match back {
                    Some(at) if !self.config.shell || at <= sent + self.config.deadline => {
                        self.schedule(at, Event::Reply { to: from, incarnation, envelope, result });
                    }
                    _ => {
                        let result = Err(SendError::NoAnswer(format!("the answer from node {to} was lost or late")));
                        self.schedule(fail_at, Event::Reply { to: from, incarnation, envelope, result });
                    }
                }
            }
            Event::Reply { to, incarnation, envelope, result } => {
                let node = self.nodes.get_mut(&to).expect("node");
                if node.incarnation != incarnation || node.health != Health::Up {
                    return;
                }
                let direction = if result.is_ok() { "answered" } else { "failed" };
                let message = envelope.message.clone();
                let peer = envelope.to;
                node.machine.on_reply(self.now, envelope, result);
                self.message(to, peer, direction, &message);
                self.flush(to);
            }
            Event::Lost { node, incarnation, coordinator, why } => {
                let now = self.now;
                let n = self.nodes.get_mut(&node).expect("node");
                if n.incarnation != incarnation || n.health != Health::Up {
                    return;
                }
                n.machine.coordinator_lost(now, coordinator, why);
                self.flush(node);
            }
        }
    }

    /// Records a message one node saw (when recording).
    fn message(&mut self, node: NodeId, peer: NodeId, direction: &str, message: &Message) {
        if let Some(trace) = &mut self.trace {
            trace.push(HistoryEvent::Message(MessageObservation {
                time: self.now.as_secs_f64(),
                node,
                peer,
                direction: direction.into(),
                kind: message.kind().as_str().into(),
                term: message.term(),
            }));
        }
    }

    /// Carries out the node's `Ready` as the real node does: persists its term (at once: this network
    /// has no disk to wait for, so before the messages whether or not they must wait), then puts its
    /// messages on the network. Withdrawn sends need nothing (their answers are handled like any late
    /// answer), and nobody watches the published state but [`Sim::check`] and the trace.
    fn flush(&mut self, id: NodeId) {
        self.touched.insert(id);
        let node = self.nodes.get_mut(&id).expect("node");
        let ready = node.machine.ready();
        if let Some(persist) = ready.persist {
            node.disk_term = node.disk_term.max(persist.term);
            node.machine.persisted(persist.term);
        }
        let incarnation = node.incarnation;
        let now = self.now;
        for envelope in ready.messages {
            *self.sent.entry(envelope.message.kind()).or_default() += 1;
            self.message(id, envelope.to, "sent", &envelope.message);
            let at = now + self.request_latency(id, envelope.to);
            if self.chance(self.config.duplicate) {
                let again = now + self.request_latency(id, envelope.to);
                let copy = Event::Deliver { from: id, incarnation, envelope: envelope.clone(), copy: true, sent: now, late: false };
                self.schedule(again, copy);
            }
            self.schedule(at, Event::Deliver { from: id, incarnation, envelope, copy: false, sent: now, late: false });
        }
    }

    /// The safety rules and the election counts over the nodes an event touched, and their state in
    /// the trace.
    fn check(&mut self) {
        let touched = std::mem::take(&mut self.touched);
        for &id in &touched {
            self.rearm(id);
        }
        for id in touched {
            let node = &self.nodes[&id];
            let core = node.machine.core();
            if let Some(started) = core.last_election().map(|e| e.started)
                && self.election_starts.insert(id, started) != Some(started)
            {
                *self.elections.entry(id).or_default() += 1;
            }
            self.violations.extend(self.watch.check(core, node.disk_term, node.health != Health::Down));
            if let Some(trace) = &mut self.trace {
                let seen = if node.health == Health::Up {
                    let role = match core.role() {
                        Role::Follower => history::Role::Follower,
                        Role::Candidate => history::Role::Candidate,
                        Role::Waiting => history::Role::Waiting,
                        Role::Coordinator => history::Role::Coordinator,
                    };
                    (role, core.term(), core.coordinator())
                } else {
                    (history::Role::Unreachable, self.shown.get(&id).map_or(0, |s| s.1), None)
                };
                if self.shown.get(&id) != Some(&seen) {
                    self.shown.insert(id, seen);
                    let (role, term, coordinator) = seen;
                    let time = self.now.as_secs_f64();
                    trace.push(HistoryEvent::Election(ElectionObservation { time, node: id, role, term, coordinator }));
                }
            }
        }
    }
}
