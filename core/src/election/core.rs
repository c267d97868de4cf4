//! What the Bully and Ring state machines share: the term, the role, the coordinator, heartbeats and
//! suspicion, the counters and the outbox.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ready::{Handed, Ready, View};
use super::{Count, Counters, Envelope, GroupConfig, Kind, Message, NodeId, Rejection, Reply, Role, Term, next_owned_term, owner};
use crate::detector::{Arrivals, Detection};

/// Sends in a row to one peer that waited out their deadline without an answer
/// ([`super::SendError::NoAnswer`]) after which the peer counts as down for [`DOWN_FOR`]. A refused
/// connection costs no wait and does not count.
pub const MISSES_FOR_DOWN: u32 = 2;

/// How long a peer found down stays down unless it is heard from sooner: its line broke and a probe
/// found nobody, it said goodbye while this node followed another, or [`MISSES_FOR_DOWN`] sends to it
/// went unanswered. (The coordinator this node suspects stays down until it is heard from.)
pub const DOWN_FOR: Duration = Duration::from_secs(1);

/// The last election a node took part in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionTiming {
    /// When it started (suspicion, startup, or a message that drew the node in).
    pub started: Duration,
    /// When the node learned the outcome; `None` while it runs.
    pub finished: Option<Duration>,
    /// Why it started.
    pub reason: String,
}

/// Term, role, coordinator, heartbeat timers, counters and outbox.
#[derive(Debug, Clone)]
pub struct Core {
    config: GroupConfig,
    term: Term,
    role: Role,
    coordinator: Option<NodeId>,
    coordinator_since: Duration,
    /// When the coordinator was last heard from (a reply to our Alive, or its own Alive).
    last_heard: Duration,
    /// The heartbeat inter-arrival times learned of each coordinator followed (the adaptive detector's
    /// history; at most one entry per member).
    arrivals: BTreeMap<NodeId, Arrivals>,
    next_heartbeat: Duration,
    election: Option<ElectionTiming>,
    /// An election due later (staggered by rank), and why.
    deferred: Option<(Duration, String)>,
    /// The coordinator this node last found dead (silent for the timeout, its line broken and
    /// unanswered, or gone with a goodbye), until the node hears from it again. Elections send it
    /// nothing meanwhile (a Bully `Election`, a ring message passed on): such a message would only wait
    /// out its deadline, as the suspicion already did for longer. Kept past the new coordinator's
    /// election, as the ring's announcement still goes round after it; a node that comes back speaks
    /// first (it holds an election or rules), or is not the highest, so no election misses it.
    suspected: Option<NodeId>,
    /// Other peers found down, and until when (see [`DOWN_FOR`]).
    down_until: BTreeMap<NodeId, Duration>,
    /// Unanswered sends in a row, per peer (see [`MISSES_FOR_DOWN`]).
    misses: BTreeMap<NodeId, u32>,
    /// The highest term this node chose itself (see [`Core::minted`]).
    minted: Term,
    counters: Counters,
    outbox: Vec<Envelope>,
    /// Tags of sent messages whose answers no longer matter.
    withdrawn: Vec<u64>,
    next_tag: u64,
    /// What the `Ready`s handed out so far asked for, and what the shell stored.
    handed: Handed,
}

impl Core {
    pub(crate) fn new(config: GroupConfig, term: Term) -> Self {
        Self {
            config,
            term,
            role: Role::Follower,
            coordinator: None,
            coordinator_since: Duration::ZERO,
            last_heard: Duration::ZERO,
            arrivals: BTreeMap::new(),
            next_heartbeat: Duration::ZERO,
            election: None,
            deferred: None,
            suspected: None,
            down_until: BTreeMap::new(),
            misses: BTreeMap::new(),
            minted: 0,
            counters: Kind::ALL.iter().map(|&k| (k, Count::default())).collect(),
            outbox: Vec::new(),
            withdrawn: Vec::new(),
            next_tag: 0,
            handed: Handed::new(term),
        }
    }

    /// The node's settings.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }
    /// The highest term this node has seen (the state file keeps it: see [`super::Ready::persist`]).
    pub fn term(&self) -> Term {
        self.term
    }
    /// The highest term this node chose itself (a Bully win, a Ring lap it completed), as opposed to a
    /// term it learned from a message. No message has revealed a minted term before this node sends
    /// it, so it is the one to store before anything leaves: a node that restarted without it could
    /// mint it again. A learned term is known to the group already; storing it keeps a restarted node
    /// up to date, but nothing depends on it being stored first. [`super::Ready::persist`] applies this.
    #[cfg(test)]
    pub(crate) fn minted(&self) -> Term {
        self.minted
    }
    /// What the node does now.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The coordinator this node follows (itself, if it is the coordinator).
    pub fn coordinator(&self) -> Option<NodeId> {
        self.coordinator
    }
    /// When the current coordinator became known (or, for a coordinator, when it claimed its term).
    pub fn coordinator_since(&self) -> Duration {
        self.coordinator_since
    }
    /// The last election this node took part in.
    pub fn last_election(&self) -> Option<&ElectionTiming> {
        self.election.as_ref()
    }
    /// Messages by kind.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn count(&mut self, kind: Kind, f: impl FnOnce(&mut Count)) {
        f(self.counters.entry(kind).or_default());
    }

    /// What the events since the last call left to do (see [`Ready`]).
    pub(crate) fn ready(&mut self) -> Ready {
        let view = View { role: self.role, term: self.term, coordinator: self.coordinator, election: self.election.clone() };
        let outbox = std::mem::take(&mut self.outbox);
        let withdrawn = std::mem::take(&mut self.withdrawn);
        self.handed.ready(view, self.minted, outbox, withdrawn)
    }

    /// The shell stored `term` in the state file.
    pub(crate) fn persisted(&mut self, term: Term) {
        self.handed.persisted(term);
    }

    /// The answers to the messages tagged `tags` no longer matter to this node.
    pub(crate) fn withdraw(&mut self, tags: impl IntoIterator<Item = u64>) {
        self.withdrawn.extend(tags);
    }

    /// Queues a message; returns its tag.
    pub(crate) fn send(&mut self, to: NodeId, message: Message) -> u64 {
        self.next_tag += 1;
        self.count(message.kind(), |c| c.sent += 1);
        self.outbox.push(Envelope { to, message, tag: self.next_tag });
        self.next_tag
    }

    /// The reply this node gives now.
    pub(crate) fn reply(&self, ok: bool) -> Reply {
        Reply { term: self.term, coordinator: self.coordinator, ok }
    }

    /// Refuses a claim of `term` by anyone but its owner.
    pub(crate) fn check_owner(&self, term: Term, claimed: NodeId) -> Result<(), Rejection> {
        match owner(&self.config.members, term) {
            Some(owner) if owner == claimed => Ok(()),
            owner => Err(Rejection::NotOwner { term, owner: owner.unwrap_or(0), claimed }),
        }
    }

    /// Learns of `term` (and who rules it, if the message says). A higher term replaces ours: we follow
    /// its coordinator if we know it, and otherwise know none (a coordinator steps down). Returns whether
    /// the term rose.
    pub(crate) fn observe(&mut self, now: Duration, term: Term, coordinator: Option<NodeId>) -> bool {
        if term <= self.term {
            return false;
        }
        let from = self.term;
        self.term = term;
        match coordinator.filter(|&c| self.check_owner(term, c).is_ok()) {
            // A ring announcement naming us is on its way; a peer that already has it tells us first.
            Some(c) if c == self.config.id => self.rule(now, term),
            Some(c) => self.follow(now, c),
            None => {
                if self.role == Role::Coordinator {
                    tracing::info!(id = self.config.id, from, term, "saw a higher term: stepping down");
                    self.role = Role::Follower;
                }
                self.coordinator = None;
            }
        }
        true
    }

    /// The coordinator is dead (`reason`): the election to hold now, or `None` when it is deferred by
    /// the election stagger (it then comes from [`Core::tick`] when due, unless a coordinator announces
    /// itself first).
    pub(crate) fn suspect(&mut self, now: Duration, reason: String) -> Option<String> {
        self.suspected = self.coordinator.filter(|&c| c != self.config.id);
        let stagger = self.config.election_stagger;
        if stagger.is_zero() {
            return Some(reason);
        }
        let above = self.config.members.iter().filter(|&&m| m > self.config.id).count();
        let steps = u32::try_from(above.saturating_sub(1)).unwrap_or(u32::MAX);
        let due = now.saturating_add(stagger.saturating_mul(steps));
        if due <= now {
            self.deferred = None;
            return Some(reason);
        }
        if self.deferred.as_ref().is_none_or(|(at, _)| due < *at) {
            self.deferred = Some((due, reason));
        }
        None
    }

    /// Whether `peer` counts as dead at `now`: the coordinator this node suspects, or a peer found down
    /// less than [`DOWN_FOR`] ago; either way not heard from since. Elections send it nothing (a Bully
    /// `Election` or `Coordinator`, a ring message passed on): it would only wait out its deadline.
    /// Heartbeats still go to it, and any word from it ends this at once.
    pub fn is_down(&self, peer: NodeId, now: Duration) -> bool {
        self.suspected == Some(peer) || self.down_until.get(&peer).is_some_and(|&until| now < until)
    }

    /// The coordinator this node follows, or followed until it began an election, and when it counts as
    /// silent (its last word plus the timeout).
    pub(crate) fn silent_at(&self) -> Option<(NodeId, Duration)> {
        self.coordinator.filter(|&c| c != self.config.id).map(|c| (c, self.silence_deadline(c)))
    }

    /// When `coordinator`, last heard from at `last_heard`, counts as silent: after the fixed timeout, or
    /// when the adaptive detector says so from what it learned of `coordinator`'s heartbeats.
    fn silence_deadline(&self, coordinator: NodeId) -> Duration {
        self.config.detection.deadline(self.last_heard, self.arrivals.get(&coordinator))
    }

    /// The silence after which the coordinator this node follows counts as silent now (the fixed timeout,
    /// or what the adaptive detector learned); `None` when it follows none.
    pub fn suspicion_timeout(&self) -> Option<Duration> {
        let c = self.coordinator.filter(|&c| c != self.config.id)?;
        Some(self.silence_deadline(c).saturating_sub(self.last_heard))
    }

    /// The heartbeat inter-arrival times learned of `peer` (as a coordinator this node followed).
    pub fn arrivals(&self, peer: NodeId) -> Option<&Arrivals> {
        self.arrivals.get(&peer)
    }

    /// The coordinator `coordinator` was heard from at `now` (its heartbeat, or its answer to ours).
    fn heard_coordinator(&mut self, now: Duration, coordinator: NodeId) {
        let cap = match self.config.detection {
            Detection::Fixed(timeout) => timeout,
            Detection::Adaptive(adaptive) => adaptive.ceiling,
        };
        self.arrivals.entry(coordinator).or_default().heard(now, cap);
        self.last_heard = self.last_heard.max(now);
    }

    /// When a follower asks its coordinator whether it lives: once its heartbeats have stopped for one and
    /// a half periods, and not twice within a period.
    fn probe_at(&self) -> Duration {
        let heartbeat = self.config.heartbeat;
        self.next_heartbeat.max(self.last_heard.saturating_add(heartbeat.saturating_add(heartbeat / 2)))
    }

    /// Another node's election is a second opinion on the coordinator this node follows: if this node has
    /// missed two of its heartbeats too, it suspects it now, so the election's messages (a Ring lap, a
    /// Bully node's own `Election`s) skip it instead of waiting out a send deadline on a coordinator that
    /// is paused or cut off. Two heartbeats: fewer than any detector's own suspicion (the adaptive floor is
    /// 2.2, the fixed timeout at least one more), so every follower of a coordinator that went silent
    /// concurs with the first to suspect it; and more than one late heartbeat, so a follower that hears its
    /// coordinator does not take up another node's false suspicion. A coordinator in `seen` (on the
    /// election's lap, so alive) is left alone.
    pub(crate) fn second_opinion(&mut self, now: Duration, seen: &[NodeId]) {
        let Some(c) = self.coordinator.filter(|&c| c != self.config.id && !seen.contains(&c)) else { return };
        if now >= self.last_heard.saturating_add(self.config.heartbeat.saturating_mul(2)) {
            self.suspected = Some(c);
        }
    }

    /// `peer` counts as dead for the elections that follow (as if this node had suspected it).
    pub(crate) fn found_dead(&mut self, peer: NodeId) {
        self.suspected = Some(peer);
    }

    /// `peer` counts as down until [`DOWN_FOR`] after `now`, unless heard from sooner.
    pub(crate) fn found_down(&mut self, now: Duration, peer: NodeId) {
        self.down_until.retain(|_, until| now < *until);
        if peer != self.config.id {
            self.down_until.insert(peer, now.saturating_add(DOWN_FOR));
        }
    }

    /// A send to `peer` waited out its deadline; after [`MISSES_FOR_DOWN`] in a row it counts as down.
    pub(crate) fn unanswered(&mut self, now: Duration, peer: NodeId) {
        let misses = self.misses.entry(peer).or_default();
        *misses = misses.saturating_add(1);
        if *misses >= MISSES_FOR_DOWN {
            self.misses.remove(&peer);
            self.found_down(now, peer);
        }
    }

    /// `peer` answered, if only to refuse: its sends are no longer missing in a row.
    pub(crate) fn answered(&mut self, peer: NodeId) {
        self.misses.remove(&peer);
    }

    /// A message or an answer came from `peer`: it is alive after all.
    pub(crate) fn heard_from(&mut self, peer: NodeId) {
        if self.suspected == Some(peer) {
            self.suspected = None;
        }
        self.down_until.remove(&peer);
        self.misses.remove(&peer);
    }

    /// Follows `coordinator` in the current term.
    pub(crate) fn follow(&mut self, now: Duration, coordinator: NodeId) {
        self.deferred = None;
        self.last_heard = now;
        // Hearing of a coordinator is no heartbeat of it: the time since its last one is not learned.
        self.arrivals.entry(coordinator).or_default().restart(now);
        if self.role == Role::Follower && self.coordinator == Some(coordinator) {
            // A ring follower that joined a lap electing the coordinator it already follows learns the
            // outcome here: its election record ends (else the next election would not start one).
            self.finish_election(now);
            return;
        }
        if self.role == Role::Coordinator {
            tracing::info!(id = self.config.id, term = self.term, coordinator, "stepping down");
        }
        self.role = Role::Follower;
        self.coordinator = Some(coordinator);
        self.coordinator_since = now;
        self.next_heartbeat = now + self.config.heartbeat;
        self.finish_election(now);
        tracing::info!(id = self.config.id, term = self.term, coordinator, "following");
    }

    /// Claims `term` (ours: an election we ran or a ring announcement naming us) and rules it.
    pub(crate) fn rule(&mut self, now: Duration, term: Term) {
        debug_assert_eq!(owner(&self.config.members, term), Some(self.config.id));
        self.deferred = None;
        self.term = term;
        self.role = Role::Coordinator;
        self.coordinator = Some(self.config.id);
        self.coordinator_since = now;
        self.next_heartbeat = now + self.config.heartbeat;
        self.finish_election(now);
        tracing::info!(id = self.config.id, term, "coordinator");
    }

    /// The term `id` claims when it wins: the next one it owns above everything this node has seen;
    /// `None` if none is left below [`super::MAX_TERM`] (only forged terms lead there). The term is
    /// minted here: see [`Core::minted`].
    pub(crate) fn next_term_for(&mut self, id: NodeId) -> Option<Term> {
        let term = next_owned_term(&self.config.members, id, self.term);
        match term {
            Some(term) => self.minted = self.minted.max(term),
            None => tracing::error!(id = self.config.id, term = self.term, "no term left to claim below the largest valid term"),
        }
        term
    }

    /// Records that an election started (unless one is already running) and sets the role.
    pub(crate) fn begin_election(&mut self, now: Duration, reason: String, role: Role) {
        if self.election.as_ref().is_none_or(|e| e.finished.is_some()) {
            tracing::info!(id = self.config.id, term = self.term, %reason, "election");
            self.election = Some(ElectionTiming { started: now, finished: None, reason });
        }
        if role != Role::Follower {
            self.role = role;
        }
    }

    fn finish_election(&mut self, now: Duration) {
        if let Some(e) = self.election.as_mut().filter(|e| e.finished.is_none()) {
            e.finished = Some(now);
        }
    }

    /// Handles an `Alive` from `from`: learns its term and, from our coordinator, counts as hearing it.
    pub(crate) fn on_alive(&mut self, now: Duration, from: NodeId, term: Term, coordinator: Option<NodeId>) -> Reply {
        self.observe(now, term, coordinator);
        if self.role == Role::Follower && self.coordinator == Some(from) && term == self.term {
            self.heard_coordinator(now, from);
        }
        self.reply(true)
    }

    /// Handles the reply to one of our `Alive`s.
    pub(crate) fn on_alive_reply(&mut self, now: Duration, to: NodeId, reply: Reply) {
        self.observe(now, reply.term, reply.coordinator);
        if self.role == Role::Follower && self.coordinator == Some(to) && reply.coordinator == Some(to) && reply.term == self.term {
            self.heard_coordinator(now, to);
        }
    }

    /// Heartbeats. Returns why an election is due when a follower's coordinator has been silent for the
    /// timeout (or it knows none): the caller runs one.
    pub(crate) fn tick(&mut self, now: Duration) -> Option<String> {
        match self.role {
            Role::Follower => {
                if self.deferred.as_ref().is_some_and(|(at, _)| now >= *at) {
                    return self.deferred.take().map(|(_, reason)| reason);
                }
                let Some(coordinator) = self.coordinator else { return Some("no coordinator".into()) };
                if now >= self.silence_deadline(coordinator) {
                    if self.deferred.is_some() {
                        return None;
                    }
                    return self.suspect(now, format!("coordinator {coordinator} silent"));
                }
                // The coordinator's own heartbeats say what this follower's would ask (it lives, and its
                // term): the follower asks only once they have stopped for one and a half heartbeats
                // (one may arrive just after this tick), so a settled group sends half the messages. It
                // asks then, not at its own next heartbeat: the answer to a lost heartbeat must come
                // before the adaptive detector's floor.
                if now >= self.probe_at() {
                    self.next_heartbeat = now.saturating_add(self.config.heartbeat);
                    let message = Message::Alive { term: self.term, coordinator: Some(coordinator) };
                    self.send(coordinator, message);
                }
            }
            Role::Coordinator => {
                if now >= self.next_heartbeat {
                    self.next_heartbeat = now + self.config.heartbeat;
                    let others: Vec<NodeId> = self.others().collect();
                    for peer in others {
                        self.send(peer, Message::Alive { term: self.term, coordinator: Some(self.config.id) });
                    }
                }
            }
            Role::Candidate | Role::Waiting => {}
        }
        None
    }

    /// When [`Core::tick`] next has work; `None`: no timer of its own runs (an election's deadline
    /// belongs to the algorithm).
    pub(crate) fn next_wakeup(&self) -> Option<Duration> {
        match self.role {
            Role::Follower if self.coordinator.is_none() => Some(Duration::ZERO),
            // A deferred election is all that is left to do (the coordinator is dead).
            Role::Follower if self.deferred.is_some() => self.deferred.as_ref().map(|(at, _)| *at),
            Role::Follower => {
                let silent = self.coordinator.map_or(self.last_heard, |c| self.silence_deadline(c));
                Some(self.probe_at().min(silent))
            }
            Role::Coordinator => Some(self.next_heartbeat),
            Role::Candidate | Role::Waiting => None,
        }
    }

    /// Every member but this node, in id order.
    pub(crate) fn others(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.config.members.iter().copied().filter(move |&m| m != self.config.id)
    }
}
