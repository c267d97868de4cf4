//! The Bully and Ring machines of `synclab_core::election`, several nodes of one group fed an arbitrary
//! schedule: timer ticks, the group's own messages delivered, lost, refused, duplicated or replayed later,
//! answers forged, nodes crashed and restarted (keeping their term, as the state file does), and forged
//! requests from members and strangers with any term (huge ones, `MAX_TERM` and beyond), any ids.
//!
//! Checked after every event: no two nodes ever rule the same term, a coordinator rules a term it owns,
//! no term passes `MAX_TERM`, a node's term never goes back, and a request raises a term by at most
//! `MAX_TERM_JUMP` (plus one round of terms for the election it may win at once). Then the faults stop:
//! crashed nodes come back, and on a reliable network the group must settle within a bound on its highest
//! id, as coordinator, with every node following it; unless forged answers used up the terms (the last
//! `MAX_TERM_JUMP` below `MAX_TERM`), where the module documents that no term is left to claim.

#![no_main]

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use synclab_core::election::{
    Algorithm, Envelope, GroupConfig, MAX_TERM, MAX_TERM_JUMP, Machine, Message, NodeId, Reply, Role, SendError, Term, owner,
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
}

struct Group {
    algorithm: Algorithm,
    members: Vec<NodeId>,
    stagger: bool,
    nodes: BTreeMap<NodeId, Node>,
    net: VecDeque<InFlight>,
    now: Duration,
    /// Who ruled each term.
    rulers: BTreeMap<Term, NodeId>,
    /// Each node's highest term so far.
    terms: BTreeMap<NodeId, Term>,
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
            rulers: BTreeMap::new(),
            terms: BTreeMap::new(),
        };
        for id in members {
            group.restart(id, 0);
        }
        group
    }

    fn config(&self, id: NodeId) -> GroupConfig {
        let stagger = if self.stagger { Duration::from_millis(10) } else { Duration::ZERO };
        GroupConfig::new(id, self.members.iter().copied(), HEARTBEAT, TIMEOUT).expect("a valid group").with_election_stagger(stagger)
    }

    /// (Re)starts a node with the term its state file holds.
    fn restart(&mut self, id: NodeId, term: Term) {
        let mut machine = Machine::new(self.algorithm, self.config(id), term);
        machine.start(self.now);
        self.nodes.insert(id, Node { machine, up: true });
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

    fn flush(&mut self, id: NodeId) {
        let outbox = self.nodes.get_mut(&id).expect("a node").machine.drain();
        for envelope in outbox {
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
        let bound = before.saturating_add(MAX_TERM_JUMP).saturating_add(self.members.len() as u64);
        assert!(after <= bound, "a request moved node {to}'s term from {before} to {after}");
        if result.is_err() {
            assert_eq!(after, before, "a refused request moved node {to}'s term");
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

    /// The safety invariants, over every node.
    fn check(&mut self) {
        for (&id, node) in &self.nodes {
            let core = node.machine.core();
            let term = core.term();
            assert!(term <= MAX_TERM, "node {id} reached term {term}, beyond MAX_TERM");
            let last = self.terms.entry(id).or_default();
            assert!(term >= *last, "node {id}'s term went back from {last} to {term}");
            *last = term;
            if core.role() == Role::Coordinator {
                assert_eq!(owner(&self.members, term), Some(id), "node {id} rules term {term}, which it does not own");
                assert_eq!(core.coordinator(), Some(id), "coordinator {id} follows someone else");
                let ruler = *self.rulers.entry(term).or_insert(id);
                assert_eq!(ruler, id, "nodes {ruler} and {id} both ruled term {term}");
            }
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
                let term = self.nodes[&id].machine.core().term();
                self.restart(id, term);
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
                let term = self.nodes[&id].machine.core().term();
                self.restart(id, term);
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
