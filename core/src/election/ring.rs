//! The Ring algorithm (the variant in Tanenbaum's *Distributed Systems*), sans-I/O, with Chang and
//! Roberts' suppression of concurrent elections.
//!
//! The members form a ring in id order. A node that suspects its coordinator (or starts) sends
//! `RingElection` with its own id to its successor; each node appends its id and passes it on, skipping
//! successors that cannot be reached. When the message returns to its initiator, the highest collected id
//! is the coordinator: the initiator claims that node's next term and sends `RingCoordinator` once around.
//!
//! A node drawn into an election that has missed two of its coordinator's heartbeats suspects it too
//! ([`Core::second_opinion`]): the lap skips it at once instead of waiting out a send deadline on it,
//! which would otherwise make the lap's time depend on which follower suspected first.
//!
//! Suppression: a node that has already passed on (or started) an election with a higher initiator drops
//! a lower initiator's message, so of several concurrent elections only the highest initiator's goes all
//! the way round. A message that comes back to a node already listed in it lost its initiator on the way:
//! that node completes the election instead.

use std::time::Duration;

use super::{Core, Envelope, GroupConfig, Message, NodeId, Reply, Role, SendError, Term};

/// A Ring node.
#[derive(Debug, Clone)]
pub struct Ring {
    pub(crate) core: Core,
    /// The highest initiator whose election this node has started or passed on, until a coordinator is
    /// announced or the election timeout passes.
    participant: Option<(NodeId, Duration)>,
    /// Candidate: when to give up on the message coming back and start again.
    deadline: Option<Duration>,
    /// The last announcement this node passed on (term, coordinator, initiator): seeing it again means
    /// it has been all the way round.
    announced: Option<(Term, NodeId, NodeId)>,
}

impl Ring {
    /// A node that has seen terms up to `term`.
    pub fn new(config: GroupConfig, term: Term) -> Self {
        Self { core: Core::new(config, term), participant: None, deadline: None, announced: None }
    }

    /// When [`Ring::tick`] next has work of its own: now, for a node above its coordinator and in no
    /// election (it holds one); else the candidate's deadline, or the end of its part in an election
    /// (a lower initiator's message is no longer dropped then, and a node above its coordinator holds
    /// one).
    pub(crate) fn deadline(&self) -> Option<Duration> {
        let core = &self.core;
        if matches!(core.role(), Role::Follower | Role::Coordinator)
            && self.participant.is_none()
            && core.coordinator().is_some_and(|c| c < core.id())
        {
            return Some(Duration::ZERO);
        }
        let until = self.participant.map(|(_, until)| until);
        match (self.deadline, until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next member after `after` in ring order, other than this node and those found down (a
    /// message to one would only time out); `None` if the ring has wrapped around to this node.
    fn successor_after(&self, now: Duration, after: NodeId) -> Option<NodeId> {
        let members = &self.core.config().members;
        let start = members.iter().position(|&m| m == after)?;
        (1..members.len())
            .map(|step| members[(start + step) % members.len()])
            .take_while(|&next| next != self.core.id())
            .find(|&next| !self.core.is_down(next, now))
    }

    /// Starts an election: sends our id to our successor.
    pub(crate) fn start_election(&mut self, now: Duration, reason: String) {
        let id = self.core.id();
        self.core.begin_election(now, reason, Role::Candidate);
        self.join(now, id);
        self.deadline = Some(now + self.core.config().election_timeout);
        let message = Message::RingElection { term: self.core.term(), initiator: id, ids: vec![id] };
        self.forward(now, id, message);
    }

    /// Takes part in `initiator`'s election, for one election timeout.
    fn join(&mut self, now: Duration, initiator: NodeId) {
        let highest = self.participant.map_or(initiator, |(p, _)| p.max(initiator));
        self.participant = Some((highest, now + self.core.config().election_timeout));
    }

    /// Sends `message` to the first member after `after`; with none left, finishes it here.
    fn forward(&mut self, now: Duration, after: NodeId, message: Message) {
        match self.successor_after(now, after) {
            Some(next) => {
                self.core.send(next, message);
            }
            // Nobody else answers: the election is over with the ids we have.
            None => {
                if let Message::RingElection { term, ids, .. } = message {
                    self.complete(now, term, &ids);
                }
            }
        }
    }

    /// The election message came round: the highest id rules the next term it owns.
    fn complete(&mut self, now: Duration, term: Term, ids: &[NodeId]) {
        self.core.observe(now, term, None);
        let coordinator = ids.iter().copied().max().unwrap_or(self.core.id()).max(self.core.id());
        let Some(term) = self.core.next_term_for(coordinator) else { return };
        self.accept(now, term, coordinator);
        self.announced = Some((term, coordinator, self.core.id()));
        let message = Message::RingCoordinator { term, coordinator, initiator: self.core.id() };
        self.forward(now, self.core.id(), message);
    }

    /// Takes `coordinator` as ruling `term` (which it owns).
    fn accept(&mut self, now: Duration, term: Term, coordinator: NodeId) {
        if coordinator == self.core.id() {
            self.core.rule(now, term);
        } else {
            self.core.observe(now, term, Some(coordinator));
            self.core.follow(now, coordinator);
        }
        self.participant = None;
        self.deadline = None;
    }

    pub(crate) fn tick(&mut self, now: Duration) {
        if self.participant.is_some_and(|(_, until)| now >= until) {
            self.participant = None;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            self.participant = None;
            if self.core.role() == Role::Candidate {
                self.start_election(now, "ring election timed out".into());
                return;
            }
        }
        if !matches!(self.core.role(), Role::Follower | Role::Coordinator) {
            return;
        }
        if let Some(reason) = self.core.tick(now) {
            self.start_election(now, reason);
        } else if let Some(c) = self.core.coordinator().filter(|&c| c < self.core.id())
            && self.participant.is_none()
        {
            // Every ring election elects the highest live id: a node that came back above its
            // coordinator holds one.
            self.start_election(now, format!("lower coordinator {c}"));
        }
    }

    pub(crate) fn on_request(&mut self, now: Duration, from: NodeId, message: Message) -> Reply {
        let id = self.core.id();
        match message {
            Message::RingElection { term, initiator, mut ids } => {
                self.core.observe(now, term, None);
                // Every node on the lap so far lives: one this node found dead has come back, and the
                // lap goes to it again instead of around it (else a returning node that started the
                // lap would only learn from a later heartbeat that it won).
                for &member in &ids {
                    self.core.heard_from(member);
                }
                if initiator == id {
                    // Our own message came back.
                    if self.deadline.is_some() {
                        self.complete(now, term, &ids);
                    }
                } else if ids.contains(&id) {
                    // A second lap: its initiator died on the way. Finish it for them.
                    if self.participant.is_some() {
                        self.complete(now, term, &ids);
                    }
                } else if self.participant.is_some_and(|(p, _)| p > initiator) {
                    tracing::debug!(id, initiator, "dropped a lower initiator's ring election");
                } else {
                    self.join(now, initiator);
                    self.core.begin_election(now, format!("ring election from {initiator}"), Role::Follower);
                    self.core.second_opinion(now, &ids);
                    ids.push(id);
                    let message = Message::RingElection { term: term.max(self.core.term()), initiator, ids };
                    self.forward(now, id, message);
                }
                self.core.reply(true)
            }
            Message::RingCoordinator { term, coordinator, initiator } => {
                if term < self.core.term() {
                    tracing::debug!(id, from, term, current = self.core.term(), "refused a stale RingCoordinator");
                    return self.core.reply(false);
                }
                if initiator == id || self.announced == Some((term, coordinator, initiator)) {
                    // Back where it started (or, its initiator gone, around once more): it stops here.
                    return self.core.reply(true);
                }
                self.announced = Some((term, coordinator, initiator));
                self.accept(now, term, coordinator);
                self.forward(now, id, Message::RingCoordinator { term, coordinator, initiator });
                self.core.reply(true)
            }
            Message::Alive { term, coordinator } => self.core.on_alive(now, from, term, coordinator),
            Message::Election { .. } | Message::Coordinator { .. } => unreachable!("checked by Machine"),
        }
    }

    pub(crate) fn on_reply(&mut self, now: Duration, envelope: Envelope, result: Result<Reply, SendError>) {
        let Envelope { to, message, .. } = envelope;
        match result {
            Ok(reply) => {
                if !reply.ok {
                    tracing::info!(id = self.core.id(), peer = to, term = reply.term, "a peer has a newer term");
                }
                self.core.on_alive_reply(now, to, reply);
            }
            Err(_) => {
                self.core.count(message.kind(), |c| c.failed += 1);
                // A dead successor is skipped; the message goes on to the next one.
                if matches!(message, Message::RingElection { .. } | Message::RingCoordinator { .. }) {
                    self.forward(now, to, message);
                }
            }
        }
    }
}
