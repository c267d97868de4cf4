//! The Bully algorithm (Garcia-Molina, 1982), sans-I/O.
//!
//! A node that suspects its coordinator (or starts) sends `Election` to every node with a higher id. Any
//! live higher node answers OK and takes the election over; a node that gets no OK from anyone claims the
//! next term it owns and announces itself with `Coordinator` to every lower node. A node that finds itself
//! following a lower coordinator (it just came back) runs an election and so takes over: the highest live
//! id always wins.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Core, Envelope, GroupConfig, Kind, Message, NodeId, Reply, Role, SendError, Term};

/// A Bully node.
#[derive(Debug, Clone)]
pub struct Bully {
    pub(crate) core: Core,
    /// Higher nodes whose answer to the current election has not come back yet.
    pending: BTreeSet<NodeId>,
    /// Tags of the current election's messages (older answers are ignored).
    tags: BTreeSet<u64>,
    /// Candidate: when to stop waiting for answers. Waiting: when to stop waiting for the announcement.
    deadline: Option<Duration>,
}

impl Bully {
    /// A node that has seen terms up to `term`.
    pub fn new(config: GroupConfig, term: Term) -> Self {
        Self { core: Core::new(config, term), pending: BTreeSet::new(), tags: BTreeSet::new(), deadline: None }
    }

    /// The election's deadline, or sooner the moment the coordinator it still waits on counts as
    /// silent (see [`Bully::tick`]).
    pub(crate) fn deadline(&self) -> Option<Duration> {
        let silent = self.waits_on_silent_coordinator().map(|(_, at)| at);
        match (self.deadline, silent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A candidate still waiting for its old coordinator's answer: that coordinator, and when its
    /// silence reaches the suspicion timeout.
    fn waits_on_silent_coordinator(&self) -> Option<(NodeId, Duration)> {
        self.core.silent_at().filter(|(c, _)| self.core.role() == Role::Candidate && self.pending.contains(c))
    }

    /// Holds an election: asks every higher node, or wins at once if there is none.
    pub(crate) fn start_election(&mut self, now: Duration, reason: String) {
        self.core.begin_election(now, reason, Role::Candidate);
        // A node found down (the coordinator this node just found dead, say) gets no Election: it would
        // only time out. Highest first: the highest live node is the one whose OK every candidate gets
        // (it answers them all), so a shell that cannot send them all at once asks it before the rest.
        let mut higher: Vec<NodeId> = self.core.others().filter(|&m| m > self.core.id() && !self.core.is_down(m, now)).collect();
        higher.reverse();
        self.pending.clear();
        self.withdraw_all();
        if higher.is_empty() {
            self.win(now);
            return;
        }
        for peer in higher {
            let tag = self.core.send(peer, Message::Election { term: self.core.term() });
            self.tags.insert(tag);
            self.pending.insert(peer);
        }
        self.deadline = Some(now + self.core.config().election_timeout);
    }

    /// The current election's outstanding `Election`s no longer need answers.
    fn withdraw_all(&mut self) {
        let tags = std::mem::take(&mut self.tags);
        self.core.withdraw(tags);
    }

    /// No higher node answered: claim the next owned term and tell every lower node.
    fn win(&mut self, now: Duration) {
        self.pending.clear();
        self.withdraw_all();
        self.deadline = None;
        let Some(term) = self.core.next_term_for(self.core.id()) else {
            // Try again after an election timeout rather than at every tick.
            self.deadline = Some(now + self.core.config().election_timeout);
            return;
        };
        self.core.rule(now, term);
        // Nodes found down are not told: they learn it from the heartbeats once they answer again.
        let lower: Vec<NodeId> = self.core.others().filter(|&m| m < self.core.id() && !self.core.is_down(m, now)).collect();
        for peer in lower {
            self.core.send(peer, Message::Coordinator { term });
        }
    }

    /// Bully's rule: a live node never follows a lower one; it runs an election and takes over.
    fn bully_lower_coordinator(&mut self, now: Duration) {
        if let (Role::Follower, Some(c)) = (self.core.role(), self.core.coordinator())
            && c < self.core.id()
        {
            self.start_election(now, format!("lower coordinator {c}"));
        }
    }

    /// Clears election state once the node follows or rules.
    fn settle(&mut self) {
        if matches!(self.core.role(), Role::Follower | Role::Coordinator) {
            self.pending.clear();
            self.withdraw_all();
            self.deadline = None;
        }
    }

    pub(crate) fn tick(&mut self, now: Duration) {
        match self.core.role() {
            Role::Candidate if self.deadline.is_some_and(|d| now >= d) => {
                // Answers that never came count as dead nodes.
                self.pending.clear();
                self.win(now);
            }
            Role::Candidate => {
                // Drawn into an election by a lower node before suspecting the coordinator itself, this
                // node asked it too; once its silence reaches the suspicion timeout, it is dead by the
                // rule every follower uses, and its answer is not waited for any longer.
                if let Some((coordinator, at)) = self.waits_on_silent_coordinator()
                    && now >= at
                {
                    self.pending.remove(&coordinator);
                    self.core.found_dead(coordinator);
                    if self.pending.is_empty() {
                        self.win(now);
                    }
                }
            }
            Role::Waiting if self.deadline.is_some_and(|d| now >= d) => {
                self.start_election(now, "no announcement after OK".into());
            }
            Role::Follower | Role::Coordinator => {
                if let Some(reason) = self.core.tick(now) {
                    self.start_election(now, reason);
                }
            }
            Role::Waiting => {}
        }
    }

    pub(crate) fn on_request(&mut self, now: Duration, from: NodeId, message: Message) -> Reply {
        let reply = match message {
            Message::Election { term } => {
                // A sender behind our term missed an announcement rather than lost a coordinator: our
                // OK carries the term and coordinator, which it adopts. Holding an election for it would
                // start a new round for every late message (an O(n²) storm each).
                let behind = term < self.core.term() && self.core.coordinator().is_some();
                self.core.observe(now, term, None);
                self.settle();
                self.core.count(Kind::Ok, |c| c.sent += 1);
                let reply = self.core.reply(true);
                match self.core.role() {
                    Role::Coordinator if !behind => {
                        let term = self.core.term();
                        self.core.send(from, Message::Coordinator { term });
                    }
                    Role::Follower if !behind => {
                        // The sender's election is a second opinion on our coordinator: quiet here too,
                        // it gets no Election of ours (it would only wait out the deadline).
                        self.core.second_opinion(now, &[from]);
                        self.start_election(now, format!("election from {from}"))
                    }
                    Role::Coordinator | Role::Follower | Role::Candidate | Role::Waiting => {}
                }
                return reply;
            }
            Message::Coordinator { term } => {
                if term < self.core.term() {
                    tracing::debug!(id = self.core.id(), from, term, current = self.core.term(), "refused a stale Coordinator");
                    return self.core.reply(false);
                }
                self.core.observe(now, term, Some(from));
                self.core.follow(now, from);
                self.settle();
                self.core.reply(true)
            }
            Message::Alive { term, coordinator } => {
                let reply = self.core.on_alive(now, from, term, coordinator);
                // The owner of this node's term says it rules it: as good as its `Coordinator` of this
                // term, which would be followed. A node that suspected it falsely (a busy coordinator
                // late with its heartbeats) and is still asking, or waiting for an announcement, follows
                // it at its next heartbeat instead of after the election timeout. A higher node only: a
                // candidate bullying a lower coordinator goes on.
                if matches!(self.core.role(), Role::Candidate | Role::Waiting)
                    && coordinator == Some(from)
                    && term == self.core.term()
                    && from > self.core.id()
                    && self.core.check_owner(term, from).is_ok()
                {
                    self.core.follow(now, from);
                }
                self.settle();
                reply
            }
            Message::RingElection { .. } | Message::RingCoordinator { .. } => unreachable!("checked by Machine"),
        };
        self.bully_lower_coordinator(now);
        reply
    }

    pub(crate) fn on_reply(&mut self, now: Duration, envelope: Envelope, result: Result<Reply, SendError>) {
        let Envelope { to, message, tag } = envelope;
        let reply = match result {
            Ok(reply) => reply,
            Err(_) => {
                self.core.count(message.kind(), |c| c.failed += 1);
                if matches!(message, Message::Election { .. }) && self.tags.contains(&tag) {
                    self.pending.remove(&to);
                    if self.core.role() == Role::Candidate && self.pending.is_empty() {
                        self.win(now);
                    }
                }
                return;
            }
        };
        match message {
            Message::Election { .. } => {
                if reply.ok {
                    self.core.count(Kind::Ok, |c| c.received += 1);
                }
                self.core.observe(now, reply.term, reply.coordinator);
                self.settle();
                if !self.tags.contains(&tag) || self.core.role() != Role::Candidate {
                    self.bully_lower_coordinator(now);
                    return;
                }
                self.pending.remove(&to);
                if reply.ok {
                    // A live higher node took over: wait for its announcement.
                    self.core.begin_election(now, String::new(), Role::Waiting);
                    self.pending.clear();
                    // One OK decides this node's part: the other higher nodes' answers cannot change it.
                    self.withdraw_all();
                    self.deadline = Some(now + self.core.config().election_timeout);
                } else if self.pending.is_empty() {
                    self.win(now);
                }
            }
            Message::Coordinator { .. } | Message::Alive { .. } => {
                if !reply.ok {
                    tracing::info!(id = self.core.id(), peer = to, term = reply.term, "a peer has a newer term");
                }
                self.core.on_alive_reply(now, to, reply);
                self.settle();
                self.bully_lower_coordinator(now);
            }
            Message::RingElection { .. } | Message::RingCoordinator { .. } => {}
        }
    }
}
