//! The Bully and Ring machines of `synclab_core::election`, several nodes of one group fed an arbitrary
//! schedule: timer ticks, the group's own messages delivered, lost, refused, duplicated or replayed later,
//! answers forged, nodes crashed and restarted (with the term their state file holds: each node is
//! driven by its machine's `Ready`, persist then send, as the real node is), and forged requests from
//! members and strangers with any term (huge ones, `MAX_TERM` and beyond), any ids.
//!
//! Checked after every event, by the rules of `synclab_core::election::safety`: no two nodes ever rule
//! the same term, a coordinator rules a term it owns, no term passes `MAX_TERM`, a node's term never goes
//! back, and a request raises a term by at most `MAX_TERM_JUMP` (plus one round of terms for the election
//! it may win at once) and a refused one not at all. Then the faults stop:
//! crashed nodes come back, and on a reliable network the group must settle within a bound on its highest
//! id, as coordinator, with every node following it; unless forged answers used up the terms (the last
//! `MAX_TERM_JUMP` below `MAX_TERM`), where the module documents that no term is left to claim.

#![no_main]

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use synclab_core::election::safety::{self, Watch};
use synclab_core::election::{
    Algorithm, Envelope, GroupConfig, MAX_TERM, MAX_TERM_JUMP, Machine, Message, NodeId, Reply, Role, SendError, Term,
};

const HEARTBEAT: Duration = Duration::from_millis(20);
const TIMEOUT: Duration = Duration::from_millis(80);
const TICK: Duration = Duration::from_millis(5);
/// How long a healed group may take to settle: many election timeouts.
const SETTLE_WITHIN: Duration = Duration::from_secs(20);

#[derive(Debug, Arbitrary)]
enum Who {
    /// A member, by index.
    Member(u8),
    /// Any id: 0, strangers, `u64::MAX`.
    Any(u64),
}

#[derive(Debug, Arbitrary)]
enum ForgedTerm {
    /// The receiver's term plus or minus a little.
    Near(i16),
    /// Just past the jump a request may make.
    PastJump(u8),
    Any(u64),
    /// `MAX_TERM - k`.
    BelowMax(u16),
    /// `MAX_TERM + k`.
    AboveMax(u16),
}

#[derive(Debug, Arbitrary)]
enum Forged {
    Election(ForgedTerm),
    Coordinator(ForgedTerm),
    Alive(ForgedTerm, Option<Who>),
    RingElection(ForgedTerm, Who, Vec<Who>),
    RingCoordinator(ForgedTerm, Who, Who),
}

#[derive(Debug, Arbitrary)]
enum Fate {
    /// Delivered and answered.
    Deliver,
    /// Lost on the way: the sender hears nothing.
    LoseRequest,
    /// Handled, but the answer is lost.
    LoseReply,
    /// Delivered and answered, and delivered once more later (the sender hears one answer).
    Duplicate,
    /// The receiver refused it as malformed (as a peer of another version might).
    Refused,
    /// Not delivered; the sender gets a forged answer.
    ForgedReply { term: ForgedTerm, coordinator: Option<Who>, ok: bool },
}

#[derive(Debug, Arbitrary)]
enum Event {
    Tick { node: u8, advance_ms: u8 },
    TickAll { advance_ms: u8 },
    Deliver { pick: u16, fate: Fate },
    Forge { to: u8, from: Who, message: Forged },
    Crash { node: u8 },
    Restart { node: u8 },
    HoldElection { node: u8 },
    CoordinatorLost { node: u8, coordinator: Who },
}

#[derive(Debug, Arbitrary)]
struct Input {
    ring: bool,
    /// Member ids (0 and repeats dropped; fewer than two distinct: 1..=n).
    ids: [u8; 5],
    n: u8,
    stagger: bool,
    events: Vec<Event>,
}

/// A message in flight: its sender, and whether the sender still waits for its answer (a replayed copy
/// is answered to nobody).
struct InFlight {
    from: NodeId,
    envelope: Envelope,
    answered: bool,
}

struct Node {
    machine: Machine,
    up: bool,
    /// The term its state file holds: what its `Ready`s asked to persist.
    disk_term: Term,
}

struct Group {
    algorithm: Algorithm,
    members: Vec<NodeId>,
    stagger: bool,
    nodes: BTreeMap<NodeId, Node>,
    net: VecDeque<InFlight>,
    now: Duration,
    /// The safety rules, over every node.
    watch: Watch,
}

impl Group {
    fn new(algorithm: Algorithm, members: Vec<NodeId>, stagger: bool) -> Self {
        let mut group = Self {
            algorithm,
            members: members.clone(),
            stagger,
            nodes: BTreeMap::new(),
            net: VecDeque::new(),
            now: Duration::ZERO,
            watch: Watch::new(),
        };
        for id in members {
            group.restart(id);
        }
        group
    }

    fn config(&self, id: NodeId) -> GroupConfig {
        let stagger = if self.stagger { Duration::from_millis(10) } else { Duration::ZERO };
        GroupConfig::new(id, self.members.iter().copied(), HEARTBEAT, TIMEOUT).expect("a valid group").with_election_stagger(stagger)
    }

    /// (Re)starts a node with the term its state file holds.
    fn restart(&mut self, id: NodeId) {
        let disk_term = self.nodes.get(&id).map_or(0, |n| n.disk_term);
        let mut machine = Machine::new(self.algorithm, self.config(id), disk_term);
        machine.start(self.now);
        self.nodes.insert(id, Node { machine, up: true, disk_term });
        self.flush(id);
    }

    fn member(&self, who: &Who) -> NodeId {
        match *who {
            Who::Member(i) => self.at(i),
            Who::Any(id) => id,
        }
    }

    fn at(&self, i: u8) -> NodeId {
        self.members[usize::from(i) % self.members.len()]
    }

    fn term(&self, base: Term, t: &ForgedTerm) -> Term {
        match *t {
            ForgedTerm::Near(d) => base.saturating_add_signed(i64::from(d)),
            ForgedTerm::PastJump(k) => base.saturating_add(MAX_TERM_JUMP).saturating_add(u64::from(k)),
            ForgedTerm::Any(t) => t,
            ForgedTerm::BelowMax(k) => MAX_TERM - u64::from(k),
            ForgedTerm::AboveMax(k) => MAX_TERM.saturating_add(u64::from(k)),
        }
    }

    /// Carries out the node's `Ready`: persists its term (at once), then puts its messages in flight.
    fn flush(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("a node");
        let ready = node.machine.ready();
        if let Some(persist) = ready.persist {
            node.disk_term = node.disk_term.max(persist.term);
            node.machine.persisted(persist.term);
        }
        for envelope in ready.messages {
            self.net.push_back(InFlight { from: id, envelope, answered: true });
        }
    }

    fn reply(&mut self, to: NodeId, envelope: Envelope, result: Result<Reply, SendError>) {
        let node = self.nodes.get_mut(&to).expect("a node");
        if node.up {
            node.machine.on_reply(self.now, envelope, result);
            self.flush(to);
        }
    }

    /// A request to `to`: its result, after checking the term bound a request may move a term by.
    fn request(&mut self, to: NodeId, from: NodeId, message: Message) -> Result<Reply, SendError> {
        let now = self.now;
        let node = self.nodes.get_mut(&to).expect("a node");
        if !node.up {
            return Err(SendError::Unreachable(format!("node {to} is down")));
        }
        let before = node.machine.core().term();
        let result = node.machine.on_request(now, from, message);
        let after = node.machine.core().term();
        if let Err(violation) = safety::request_step(to, self.members.len(), before, after, result.is_err()) {
            panic!("{violation}");
        }
        self.flush(to);
        result.map_err(|e| SendError::Refused(e.to_string()))
    }

    fn deliver(&mut self, in_flight: InFlight, fate: &Fate) {
        let InFlight { from, envelope, answered } = in_flight;
        let to = envelope.to;
        let result = match fate {
            Fate::Deliver => self.request(to, from, envelope.message.clone()),
            Fate::LoseRequest => Err(SendError::Unreachable("lost".into())),
            Fate::LoseReply => {
                let _ = self.request(to, from, envelope.message.clone());
                Err(SendError::Unreachable("answer lost".into()))
            }
            Fate::Duplicate => {
                self.net.push_back(InFlight { from, envelope: envelope.clone(), answered: false });
                self.request(to, from, envelope.message.clone())
            }
            Fate::Refused => Err(SendError::Refused("refused".into())),
            Fate::ForgedReply { term, coordinator, ok } => {
                let base = self.nodes[&from].machine.core().term();
                let coordinator = coordinator.as_ref().map(|c| self.member(c));
                Ok(Reply { term: self.term(base, term), coordinator, ok: *ok })
            }
        };
        if answered {
            self.reply(from, envelope, result);
        }
    }

    fn forge(&mut self, to: NodeId, from: NodeId, forged: &Forged) {
        let base = self.nodes[&to].machine.core().term();
        let message = match forged {
            Forged::Election(t) => Message::Election { term: self.term(base, t) },
            Forged::Coordinator(t) => Message::Coordinator { term: self.term(base, t) },
            Forged::Alive(t, c) => Message::Alive { term: self.term(base, t), coordinator: c.as_ref().map(|c| self.member(c)) },
            Forged::RingElection(t, initiator, ids) => Message::RingElection {
                term: self.term(base, t),
                initiator: self.member(initiator),
                ids: ids.iter().take(16).map(|i| self.member(i)).collect(),
            },
            Forged::RingCoordinator(t, c, i) => {
                Message::RingCoordinator { term: self.term(base, t), coordinator: self.member(c), initiator: self.member(i) }
            }
        };
        let _ = self.request(to, from, message);
    }

    fn tick(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("a node");
        if node.up {
            node.machine.tick(self.now);
            self.flush(id);
        }
    }

    /// The safety invariants, over every node (a crashed node's last state included).
    fn check(&mut self) {
        for node in self.nodes.values() {
            let violations = self.watch.check(node.machine.core(), node.disk_term, true);
            assert!(violations.is_empty(), "{}", violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
        }
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::Tick { node, advance_ms } => {
                let id = self.at(*node);
                self.now += Duration::from_millis(u64::from(*advance_ms));
                self.tick(id);
            }
            Event::TickAll { advance_ms } => {
                self.now += Duration::from_millis(u64::from(*advance_ms));
                for id in self.members.clone() {
                    self.tick(id);
                }
            }
            Event::Deliver { pick, fate } => {
                if !self.net.is_empty() {
                    let i = usize::from(*pick) % self.net.len();
                    let in_flight = self.net.remove(i).expect("in range");
                    self.deliver(in_flight, fate);
                }
            }
            Event::Forge { to, from, message } => {
                let (to, from) = (self.at(*to), self.member(from));
                self.forge(to, from, message);
            }
            Event::Crash { node } => {
                let id = self.at(*node);
                self.nodes.get_mut(&id).expect("a node").up = false;
            }
            Event::Restart { node } => {
                let id = self.at(*node);
                self.restart(id);
            }
            Event::HoldElection { node } => {
                let id = self.at(*node);
                if self.nodes[&id].up {
                    self.nodes.get_mut(&id).expect("a node").machine.hold_election(self.now, "fuzz");
                    self.flush(id);
                }
            }
            Event::CoordinatorLost { node, coordinator } => {
                let (id, coordinator) = (self.at(*node), self.member(coordinator));
                if self.nodes[&id].up {
                    self.nodes.get_mut(&id).expect("a node").machine.coordinator_lost(self.now, coordinator, "lost (fuzz)");
                    self.flush(id);
                }
            }
        }
        self.check();
    }

    fn settled(&self) -> bool {
        let highest = *self.members.last().expect("members");
        self.nodes.iter().all(|(&id, n)| {
            let core = n.machine.core();
            let role = if id == highest { Role::Coordinator } else { Role::Follower };
            core.role() == role && core.coordinator() == Some(highest)
        })
    }

    /// The faults stop: every node up, nothing forged, every message delivered and answered at once.
    /// Returns how long the group took to settle.
    fn heal(&mut self) -> Option<Duration> {
        for id in self.members.clone() {
            if !self.nodes[&id].up {
                self.restart(id);
            }
        }
        self.net.retain(|m| m.answered);
        let start = self.now;
        while self.now - start < SETTLE_WITHIN {
            self.now += TICK;
            for id in self.members.clone() {
                self.tick(id);
            }
            let mut budget = 100_000;
            while let Some(in_flight) = self.net.pop_front() {
                budget -= 1;
                assert!(budget > 0, "a message storm: the group sends without end within one tick");
                self.deliver(in_flight, &Fate::Deliver);
            }
            self.check();
            if self.settled() {
                return Some(self.now - start);
            }
        }
        None
    }
}

fuzz_target!(|input: Input| {
    let mut ids: Vec<NodeId> = input.ids.iter().filter(|&&i| i > 0).map(|&i| NodeId::from(i)).collect();
    ids.sort_unstable();
    ids.dedup();
    let n = 2 + usize::from(input.n % 4);
    ids.truncate(n);
    if ids.len() < 2 {
        ids = (1..=n as NodeId).collect();
    }
    let algorithm = if input.ring { Algorithm::Ring } else { Algorithm::Bully };
    let mut group = Group::new(algorithm, ids, input.stagger);
    group.check();
    for event in input.events.iter().take(256) {
        group.apply(event);
    }
    let highest_term = group.nodes.values().map(|n| n.machine.core().term()).max().unwrap_or(0);
    if highest_term >= MAX_TERM - MAX_TERM_JUMP {
        // Forged answers took the group to the end of the terms: documented as unrecoverable.
        return;
    }
    let states: Vec<String> = group
        .nodes
        .iter()
        .map(|(id, n)| format!("{id}: {:?} t{} c{:?}", n.machine.core().role(), n.machine.core().term(), n.machine.core().coordinator()))
        .collect();
    assert!(
        group.heal().is_some(),
        "{algorithm} group {:?} never settled after the faults; it started healing as {states:?}",
        group.members
    );
});
