//! Leader election, sans-I/O: the [`bully`] and [`ring`] state machines behind one interface, [`Machine`].
//!
//! A state machine takes requests from peers ([`Machine::on_request`]), the outcome of its own sends
//! ([`Machine::on_reply`]) and timer ticks ([`Machine::tick`]), always with the time passed in, and
//! leaves what it wants done in a [`Ready`] ([`Machine::ready`]). It never touches a socket, a clock or
//! a thread: the `synclab` crate's election node feeds it from gRPC, and the `synclab-harness` crate's
//! simulator from an in-memory network.
//!
//! The caller's contract ([`ready`]), as raft-rs's `Ready` orders it: after every event, take the
//! [`Ready`] and persist, then send (or answer with the [`Reply`] the event gave), then withdraw, then
//! publish. The invariants every shell and checker holds the machines to are written once, in
//! [`safety`].
//!
//! Every message carries a term. Each term has one possible owner ([`owner`]): with the group's ids
//! sorted, the node of rank `r` may only claim terms `t` with `t % n == r`. A node only ever raises its
//! term, refuses announcements older than its term, and a coordinator steps down when it sees a higher
//! one. So no two nodes are ever coordinator in the same term, whatever the network loses.

pub mod availability;
pub mod bully;
pub mod ready;
pub mod ring;
pub mod safety;

mod core;

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::detector::{Adaptive, Detection, Detector};

pub use self::core::{Core, DOWN_FOR, ElectionTiming, MISSES_FOR_DOWN};
pub use self::ready::{Changed, Persist, Ready};

/// A node's id: a positive integer, unique in its group.
pub type NodeId = u64;
/// An epoch: every coordinator rules for one term, and terms only grow.
pub type Term = u64;

/// The largest term any message may carry (2^53, also the largest integer a JSON number holds exactly).
/// A group that elects a coordinator every millisecond reaches it after 285 000 years; a larger term can
/// only be forged or corrupt, and is refused.
pub const MAX_TERM: Term = 1 << 53;

/// How far above a node's own term a request's or a reply's term may be. A node that far behind (a
/// million terms: weeks of elections at their fastest) climbs towards the group's term by this much per
/// reply to its own messages instead (see [`Machine::on_reply`]), so no single message can throw a
/// node's term arbitrarily far ahead.
pub const MAX_TERM_JUMP: Term = 1 << 20;

/// The most members a group may have.
pub const MAX_MEMBERS: usize = 1024;

/// Which election algorithm a group runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Garcia-Molina's Bully algorithm: the highest live id bullies its way to coordinator.
    Bully,
    /// The Ring algorithm: an election message collects the live ids once around the ring.
    Ring,
}

impl crate::Named for Algorithm {
    const ALL: &'static [Self] = &[Algorithm::Bully, Algorithm::Ring];

    /// The name used in flags, logs and `GetState`.
    fn as_str(self) -> &'static str {
        match self {
            Algorithm::Bully => "bully",
            Algorithm::Ring => "ring",
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(crate::Named::as_str(*self))
    }
}

/// What a node does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a coordinator (or, briefly, knows none and is about to run an election).
    Follower,
    /// Runs an election.
    Candidate,
    /// Bully: a higher node answered OK; waits for its announcement.
    Waiting,
    /// Is the coordinator.
    Coordinator,
}

impl Role {
    /// Lower-case name for logs and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Waiting => "waiting",
            Role::Coordinator => "coordinator",
        }
    }
}

/// A protocol message, as a request from one node to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Bully: "I hold an election" (to every higher id); the reply is the OK answer.
    Election {
        /// The sender's term.
        term: Term,
    },
    /// Bully: "I am the coordinator of `term`".
    Coordinator {
        /// The term the sender claims; it must own it (see [`owner`]).
        term: Term,
    },
    /// The heartbeat: the sender's term and the coordinator it follows.
    Alive {
        /// The sender's term.
        term: Term,
        /// The coordinator the sender follows (itself, when the sender is the coordinator); `None` if it
        /// knows none.
        coordinator: Option<NodeId>,
    },
    /// Ring: the election message, with the ids collected so far (initiator first).
    RingElection {
        /// The highest term among the nodes the message has passed so far (the initiator's at the start).
        term: Term,
        /// The node that started this election.
        initiator: NodeId,
        /// The ids collected so far, in the order the message passed them: the initiator first, the
        /// sender last, none twice.
        ids: Vec<NodeId>,
    },
    /// Ring: the coordinator announcement.
    RingCoordinator {
        /// The term the new coordinator rules; it must own it (see [`owner`]).
        term: Term,
        /// The new coordinator: the highest id the election collected.
        coordinator: NodeId,
        /// The node that completed the election and sent this announcement around; the announcement
        /// stops when it comes back to it.
        initiator: NodeId,
    },
}

impl Message {
    /// The message's type, for counters.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Election { .. } => Kind::Election,
            Message::Coordinator { .. } => Kind::Coordinator,
            Message::Alive { .. } => Kind::Alive,
            Message::RingElection { .. } => Kind::RingElection,
            Message::RingCoordinator { .. } => Kind::RingCoordinator,
        }
    }

    /// The term the message carries.
    pub fn term(&self) -> Term {
        match self {
            Message::Election { term }
            | Message::Coordinator { term }
            | Message::Alive { term, .. }
            | Message::RingElection { term, .. }
            | Message::RingCoordinator { term, .. } => *term,
        }
    }
}

/// Message types, for counters. `Ok` is the Bully algorithm's OK answer (an Election reply that said ok).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A Bully [`Message::Election`].
    Election,
    /// The Bully OK answer: a reply to an `Election` that said ok.
    Ok,
    /// A Bully [`Message::Coordinator`] announcement.
    Coordinator,
    /// A [`Message::Alive`] heartbeat (both algorithms).
    Alive,
    /// A Ring [`Message::RingElection`].
    RingElection,
    /// A Ring [`Message::RingCoordinator`] announcement.
    RingCoordinator,
}

impl Kind {
    /// Every kind, in display order.
    pub const ALL: [Kind; 6] = [Kind::Election, Kind::Ok, Kind::Coordinator, Kind::Alive, Kind::RingElection, Kind::RingCoordinator];

    /// The name used in `GetState` and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Election => "Election",
            Kind::Ok => "Ok",
            Kind::Coordinator => "Coordinator",
            Kind::Alive => "Alive",
            Kind::RingElection => "RingElection",
            Kind::RingCoordinator => "RingCoordinator",
        }
    }
}

/// The answer to every protocol message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The receiver's term after handling the message.
    pub term: Term,
    /// The coordinator the receiver follows.
    pub coordinator: Option<NodeId>,
    /// Election: OK. Coordinator announcements: accepted (false: stale). Otherwise true.
    pub ok: bool,
}

/// A message a state machine wants sent. `tag` is opaque: hand it back with the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node to send it to.
    pub to: NodeId,
    /// What to send.
    pub message: Message,
    /// A number unique among this machine's sends: the outcome goes back with it ([`Machine::on_reply`]),
    /// and a [`Ready`] withdraws sends by it.
    pub tag: u64,
}

/// Why a send produced no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No answer came before the deadline (the message or its answer was lost, or the peer is silent or
    /// too slow): it counts as dead for this message, and after [`MISSES_FOR_DOWN`] in a row as down.
    #[error("no answer: {0}")]
    NoAnswer(String),
    /// The peer could not be reached at once (its connection was refused, or its address is another
    /// node's): it counts as dead for this message. That cost no wait, so it marks nothing down.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The peer refused the message as malformed.
    #[error("refused: {0}")]
    Refused(String),
}

/// A message refused as malformed or misdirected. The receiver's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The sender is not in this node's group.
    #[error("node {0} is not a member of this group")]
    UnknownSender(NodeId),
    /// A node named itself as the sender.
    #[error("node {0} does not send messages to itself")]
    FromSelf(NodeId),
    /// A message of the other algorithm.
    #[error("{kind} is not a message of the {algorithm} algorithm this group runs")]
    WrongAlgorithm {
        /// The message's type, as [`Kind::as_str`] names it.
        kind: &'static str,
        /// The algorithm the receiver runs.
        algorithm: Algorithm,
    },
    /// Bully election messages only go up.
    #[error("election messages go to higher ids: {from} is not below {to}")]
    ElectionFromHigher {
        /// The sender.
        from: NodeId,
        /// The receiver, whose id is lower than the sender's.
        to: NodeId,
    },
    /// A coordinator claimed a term it does not own.
    #[error("term {term} belongs to node {owner}, not to node {claimed}")]
    NotOwner {
        /// The term claimed.
        term: Term,
        /// The member that owns the term (see [`owner`]).
        owner: NodeId,
        /// The node named as its coordinator.
        claimed: NodeId,
    },
    /// A ring election message without ids.
    #[error("the ring election message carries no ids")]
    EmptyRing,
    /// A ring message naming a node outside the group.
    #[error("the ring message names node {0}, which is not a member of this group")]
    UnknownMember(NodeId),
    /// A ring election message whose ids are not a proper path (initiator first, sender last, no repeats).
    #[error("malformed ring election message: {0}")]
    MalformedRing(String),
    /// A term beyond [`MAX_TERM`].
    #[error("term {0} is beyond the largest valid term ({MAX_TERM})")]
    TermTooLarge(Term),
    /// A term implausibly far above this node's.
    #[error("term {term} is more than {MAX_TERM_JUMP} above this node's term {current}; refused as implausible")]
    TermJump {
        /// The message's term.
        term: Term,
        /// The receiver's term.
        current: Term,
    },
}

impl Rejection {
    /// A fixed name for the kind of refusal, for counters and log summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::UnknownSender(_) => "unknown sender",
            Rejection::FromSelf(_) => "sender is the receiver",
            Rejection::WrongAlgorithm { .. } => "wrong algorithm",
            Rejection::ElectionFromHigher { .. } => "election from a higher id",
            Rejection::NotOwner { .. } => "term not owned",
            Rejection::EmptyRing => "empty ring",
            Rejection::UnknownMember(_) => "unknown member",
            Rejection::MalformedRing(_) => "malformed ring",
            Rejection::TermTooLarge(_) => "term too large",
            Rejection::TermJump { .. } => "implausible term",
        }
    }
}

/// A group configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The node's id or a member's is 0.
    #[error("node ids must be positive; 0 is not an id")]
    ZeroId,
    /// A member is listed more than once.
    #[error("node {0} is listed twice")]
    Duplicate(NodeId),
    /// The node's own id is not among the members.
    #[error("this node's id {0} is not in the group")]
    NotMember(NodeId),
    /// The heartbeat is not shorter than the timeout.
    #[error("the heartbeat ({heartbeat:?}) must be shorter than the timeout ({timeout:?})")]
    HeartbeatNotBelowTimeout {
        /// The heartbeat asked for.
        heartbeat: Duration,
        /// The timeout asked for.
        timeout: Duration,
    },
    /// A duration that must be positive is zero; the text names it (e.g. "the heartbeat").
    #[error("{0} must be positive")]
    ZeroDuration(&'static str),
    /// More than [`MAX_MEMBERS`] members ([`GroupConfig::new`] stops counting at one past the limit).
    #[error("a group has at most {MAX_MEMBERS} members, not {0}")]
    TooManyMembers(usize),
}

/// The rule between a group's two timers: a positive heartbeat, shorter than the timeout (else a follower
/// would suspect a live coordinator between two of its heartbeats).
pub fn check_timers(heartbeat: Duration, timeout: Duration) -> Result<(), ConfigError> {
    if heartbeat.is_zero() {
        return Err(ConfigError::ZeroDuration("the heartbeat"));
    }
    if heartbeat >= timeout {
        return Err(ConfigError::HeartbeatNotBelowTimeout { heartbeat, timeout });
    }
    Ok(())
}

/// A group's heartbeat, fixed timeout and failure detector: what `election-node`'s flags, the groups the
/// lab makes itself (`--local`, `--sim`) and the simulator are configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// How often the coordinator sends `Alive` to every follower.
    pub heartbeat: Duration,
    /// The silence after which the fixed detector suspects the coordinator.
    pub timeout: Duration,
    /// How a follower finds its coordinator silent.
    pub detector: Detector,
}

impl Timers {
    /// The rule between the two timers ([`check_timers`]).
    pub fn check(&self) -> Result<(), ConfigError> {
        check_timers(self.heartbeat, self.timeout)
    }

    /// How a follower with these timers finds its coordinator silent.
    pub fn detection(&self) -> Detection {
        self.detector.detection(self.heartbeat, self.timeout)
    }
}

impl Default for Timers {
    /// The election nodes' defaults: a heartbeat every 50 ms, the fixed 200 ms timeout.
    fn default() -> Self {
        Self { heartbeat: Duration::from_millis(50), timeout: Duration::from_millis(200), detector: Detector::Fixed }
    }
}

/// A node's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// This node.
    pub id: NodeId,
    /// Every member of the group, this node included, sorted.
    pub members: Vec<NodeId>,
    /// How often the coordinator sends `Alive` to every follower, and a follower that has not heard
    /// from its coordinator for one and a half of these sends `Alive` to it.
    pub heartbeat: Duration,
    /// Silence from the coordinator after which a follower suspects it and runs an election, with the
    /// fixed detector (the default, and the textbook's); the adaptive one stays between its own floor and
    /// ceiling. Also the base of the election timeout.
    pub timeout: Duration,
    /// How a follower decides that its coordinator is silent: the fixed `timeout` ([`GroupConfig::new`]'s
    /// choice), or a φ-accrual detector learned from the coordinator's heartbeats
    /// ([`GroupConfig::with_detection`]).
    pub detection: Detection,
    /// How long an election may take before it is started again: Bully waits this long for the
    /// announcement after an OK, Ring for its message to come back.
    pub election_timeout: Duration,
    /// Not in the textbook, and zero (off) unless asked for: a node that finds its coordinator dead waits
    /// this long for every member above it but one before it holds its election. The highest live node
    /// then goes first and announces itself before the others start, so a large group does not hold
    /// one election per node at once; who wins is unchanged.
    pub election_stagger: Duration,
}

impl GroupConfig {
    /// Checks a group: positive, distinct ids including `id`, and a heartbeat below the timeout. The
    /// election timeout defaults to twice the timeout.
    pub fn new(id: NodeId, members: impl IntoIterator<Item = NodeId>, heartbeat: Duration, timeout: Duration) -> Result<Self, ConfigError> {
        let mut sorted: Vec<NodeId> = members.into_iter().take(MAX_MEMBERS + 1).collect();
        if sorted.len() > MAX_MEMBERS {
            return Err(ConfigError::TooManyMembers(sorted.len()));
        }
        sorted.sort_unstable();
        if sorted.first() == Some(&0) || id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Duplicate(w[0]));
        }
        if sorted.binary_search(&id).is_err() {
            return Err(ConfigError::NotMember(id));
        }
        check_timers(heartbeat, timeout)?;
        Ok(Self {
            id,
            members: sorted,
            heartbeat,
            timeout,
            detection: Detection::Fixed(timeout),
            election_timeout: timeout * 2,
            election_stagger: Duration::ZERO,
        })
    }

    /// The same group with another failure detector (see [`GroupConfig::detection`]).
    pub fn with_detection(mut self, detection: Detection) -> Self {
        self.detection = detection;
        self
    }

    /// The same group with the φ-accrual detector's settings for its heartbeat
    /// ([`Adaptive::for_heartbeat`]).
    pub fn adaptive(self) -> Self {
        let heartbeat = self.heartbeat;
        self.with_detection(Detection::Adaptive(Adaptive::for_heartbeat(heartbeat)))
    }

    /// The same group with elections staggered by rank (see [`GroupConfig::election_stagger`]).
    pub fn with_election_stagger(mut self, stagger: Duration) -> Self {
        self.election_stagger = stagger;
        self
    }

    /// Whether `id` is in the group.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.members.binary_search(&id).is_ok()
    }
}

/// The one node that may be coordinator in `term`: the member of rank `term % n` (`None` for an empty
/// group, which a [`GroupConfig`] never is).
pub fn owner(members: &[NodeId], term: Term) -> Option<NodeId> {
    let n = u64::try_from(members.len()).ok().filter(|&n| n > 0)?;
    members.get(usize::try_from(term % n).ok()?).copied()
}

/// The term `id` claims when it wins, having seen terms up to `after`: the one it owns in the *round* after
/// `after`'s (terms `r·n .. r·n + n − 1` form round `r`), i.e. `(after / n + 1)·n + rank`; `None` if `id` is
/// not a member or that term would pass [`MAX_TERM`].
///
/// Not the smallest owned term above `after`: of any nodes that win against the same past, the higher id
/// then always claims the higher term. That matters when a lower node wins by mistake (the answers from
/// above came after its deadline, as under overload): the true winner's term supersedes the mistaken
/// claim wherever the two meet, and the nodes above the mistaken one never see it as a newer term to
/// bully (a new round of elections for every mistake, which at 100 nodes kept a group from settling).
pub fn next_owned_term(members: &[NodeId], id: NodeId, after: Term) -> Option<Term> {
    let n = u64::try_from(members.len()).ok().filter(|&n| n > 0)?;
    let rank = u64::try_from(members.iter().position(|&m| m == id)?).ok()?;
    let term = (after / n).checked_add(1)?.checked_mul(n)?.checked_add(rank)?;
    (term <= MAX_TERM).then_some(term)
}

/// Messages of one kind a node sent, received, failed to send and refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Messages this node queued to send, and (for [`Kind::Ok`]) OK answers it gave.
    pub sent: u64,
    /// Requests that passed the checks every message must satisfy, and (for [`Kind::Ok`]) OK answers
    /// it got.
    pub received: u64,
    /// Sends that got no reply (any [`SendError`]).
    pub failed: u64,
    /// Requests refused: as malformed or misdirected (a [`Rejection`]), or answered with `ok` false
    /// (e.g. a stale announcement).
    pub rejected: u64,
}

/// A node's counters by message kind.
pub type Counters = BTreeMap<Kind, Count>;

/// A Bully or a Ring state machine, behind one interface.
#[derive(Debug, Clone)]
pub enum Machine {
    /// A node of a group that runs the Bully algorithm.
    Bully(bully::Bully),
    /// A node of a group that runs the Ring algorithm.
    Ring(ring::Ring),
}

impl Machine {
    /// A node of `algorithm` that has seen terms up to `term` (from its state file).
    pub fn new(algorithm: Algorithm, config: GroupConfig, term: Term) -> Self {
        match algorithm {
            Algorithm::Bully => Machine::Bully(bully::Bully::new(config, term)),
            Algorithm::Ring => Machine::Ring(ring::Ring::new(config, term)),
        }
    }

    /// Which algorithm this is.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Machine::Bully(_) => Algorithm::Bully,
            Machine::Ring(_) => Algorithm::Ring,
        }
    }

    /// The state every algorithm shares: term, role, coordinator, counters.
    pub fn core(&self) -> &Core {
        match self {
            Machine::Bully(m) => &m.core,
            Machine::Ring(m) => &m.core,
        }
    }

    fn core_mut(&mut self) -> &mut Core {
        match self {
            Machine::Bully(m) => &mut m.core,
            Machine::Ring(m) => &mut m.core,
        }
    }

    /// The node (re)starts: it runs an election.
    pub fn start(&mut self, now: Duration) {
        self.hold_election(now, "startup");
    }

    /// Runs an election now, whatever the node's state (as on suspicion).
    pub fn hold_election(&mut self, now: Duration, reason: &str) {
        match self {
            Machine::Bully(m) => m.start_election(now, reason.into()),
            Machine::Ring(m) => m.start_election(now, reason.into()),
        }
    }

    /// The line to the coordinator `coordinator` broke and the coordinator did not answer a probe, or it
    /// said goodbye: it counts as down (see [`Core::is_down`]), and if this node follows it, it holds an
    /// election now instead of waiting for the suspicion timeout. `why` is the reason recorded for the
    /// election.
    pub fn coordinator_lost(&mut self, now: Duration, coordinator: NodeId, why: &str) {
        self.core_mut().found_down(now, coordinator);
        let core = self.core();
        if core.role() == Role::Follower && core.coordinator() == Some(coordinator) {
            let reason = format!("coordinator {coordinator} {why}");
            if let Some(reason) = self.core_mut().suspect(now, reason) {
                self.hold_election(now, &reason);
            }
        }
    }

    /// Timers: heartbeats, suspicion, election deadlines.
    pub fn tick(&mut self, now: Duration) {
        match self {
            Machine::Bully(m) => m.tick(now),
            Machine::Ring(m) => m.tick(now),
        }
    }

    /// When [`Machine::tick`] next has something to do; `None` when no timer runs (the node waits for
    /// messages alone).
    pub fn next_wakeup(&self) -> Option<Duration> {
        let deadline = match self {
            Machine::Bully(m) => m.deadline(),
            Machine::Ring(m) => m.deadline(),
        };
        match (self.core().next_wakeup(), deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A message from `from`. A [`Rejection`] leaves the state untouched (only the counter moves).
    pub fn on_request(&mut self, now: Duration, from: NodeId, message: Message) -> Result<Reply, Rejection> {
        let kind = message.kind();
        if let Err(e) = self.check(from, &message) {
            self.core_mut().count(kind, |c| c.rejected += 1);
            return Err(e);
        }
        self.core_mut().count(kind, |c| c.received += 1);
        self.core_mut().heard_from(from);
        let reply = match self {
            Machine::Bully(m) => m.on_request(now, from, message),
            Machine::Ring(m) => m.on_request(now, from, message),
        };
        if !reply.ok {
            self.core_mut().count(kind, |c| c.rejected += 1);
        }
        Ok(reply)
    }

    /// The outcome of a send this machine asked for. A reply's term is bounded as a request's is: beyond
    /// [`MAX_TERM`] the reply counts as a refusal; more than [`MAX_TERM_JUMP`] above this node's term it
    /// counts as a refusal too, and the node's term rises by [`MAX_TERM_JUMP`] only (knowing no
    /// coordinator of it). A node far behind its group still catches up, a jump per reply, while no single
    /// reply (a forged or corrupt one) can throw its term next to [`MAX_TERM`], where it could claim no
    /// term any more.
    pub fn on_reply(&mut self, now: Duration, envelope: Envelope, result: Result<Reply, SendError>) {
        let current = self.core().term();
        let result = match result {
            Ok(reply) if reply.term > MAX_TERM => Err(SendError::Refused(Rejection::TermTooLarge(reply.term).to_string())),
            Ok(reply) if reply.term > current.saturating_add(MAX_TERM_JUMP) => {
                self.core_mut().observe(now, current.saturating_add(MAX_TERM_JUMP), None);
                Err(SendError::Refused(Rejection::TermJump { term: reply.term, current }.to_string()))
            }
            other => other,
        };
        match &result {
            Ok(_) => self.core_mut().heard_from(envelope.to),
            Err(SendError::Refused(_)) => self.core_mut().answered(envelope.to),
            Err(SendError::NoAnswer(_)) => self.core_mut().unanswered(now, envelope.to),
            Err(SendError::Unreachable(_)) => {}
        }
        match self {
            Machine::Bully(m) => m.on_reply(now, envelope, result),
            Machine::Ring(m) => m.on_reply(now, envelope, result),
        }
    }

    /// What the events since the last call left to do: the term to persist, the messages to send, the
    /// sends to withdraw and what observers see that changed (see [`Ready`] for the order a shell carries
    /// them out in). Withdrawn sends are those whose answers no longer matter (a Bully candidate that got
    /// its first OK, or that follows a coordinator now, needs no more answers to its `Election`s): under
    /// load, cancelling them spares the receivers work that can no longer change the outcome (in a group
    /// of n that all suspect at once, n²/2 `Election`s, most of them moot once each candidate has one OK).
    pub fn ready(&mut self) -> Ready {
        self.core_mut().ready()
    }

    /// The shell stored `term` in the state file (the [`Persist`] of a [`Ready`], or a higher one).
    pub fn persisted(&mut self, term: Term) {
        self.core_mut().persisted(term);
    }

    /// The messages of the next [`Ready`] (tests that look at nothing else).
    #[cfg(test)]
    fn drain(&mut self) -> Vec<Envelope> {
        self.ready().messages
    }

    /// Checks what every message must satisfy before the algorithm sees it.
    fn check(&self, from: NodeId, message: &Message) -> Result<(), Rejection> {
        let core = self.core();
        let config = core.config();
        if from == config.id {
            return Err(Rejection::FromSelf(from));
        }
        if !config.is_member(from) {
            return Err(Rejection::UnknownSender(from));
        }
        let term = message.term();
        if term > MAX_TERM {
            return Err(Rejection::TermTooLarge(term));
        }
        if term > core.term().saturating_add(MAX_TERM_JUMP) {
            return Err(Rejection::TermJump { term, current: core.term() });
        }
        let algorithm = self.algorithm();
        let wrong = Err(Rejection::WrongAlgorithm { kind: message.kind().as_str(), algorithm });
        match (algorithm, message) {
            (_, Message::Alive { coordinator: Some(c), .. }) if !config.is_member(*c) => Err(Rejection::UnknownMember(*c)),
            (_, Message::Alive { .. }) => Ok(()),
            (Algorithm::Bully, Message::Election { .. }) if from > config.id => Err(Rejection::ElectionFromHigher { from, to: config.id }),
            (Algorithm::Bully, Message::Election { .. }) => Ok(()),
            (Algorithm::Bully, Message::Coordinator { term }) => core.check_owner(*term, from),
            (Algorithm::Ring, Message::RingElection { initiator, ids, .. }) => {
                let Some(&first) = ids.first() else { return Err(Rejection::EmptyRing) };
                if let Some(&stranger) = ids.iter().find(|&&i| !config.is_member(i)) {
                    return Err(Rejection::UnknownMember(stranger));
                }
                if first != *initiator {
                    return Err(Rejection::MalformedRing(format!("the initiator {initiator} is not the first id {first}")));
                }
                if ids.last() != Some(&from) {
                    return Err(Rejection::MalformedRing(format!("the sender {from} is not the last id")));
                }
                let mut seen = ids.clone();
                seen.sort_unstable();
                if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
                    return Err(Rejection::MalformedRing(format!("id {} appears twice", w[0])));
                }
                Ok(())
            }
            (Algorithm::Ring, Message::RingCoordinator { term, coordinator, initiator }) => {
                for id in [*coordinator, *initiator] {
                    if !config.is_member(id) {
                        return Err(Rejection::UnknownMember(id));
                    }
                }
                core.check_owner(*term, *coordinator)
            }
            _ => wrong,
        }
    }
}

#[cfg(test)]
mod tests;
