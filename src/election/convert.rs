//! Between the wire (`synclab.election.v1`) and the state machine's types: requests into
//! [`Message`]s (refusing what is not an id), [`Message`]s into requests, replies both ways, and a
//! machine's state into `NodeState`.
//!
//! Why five [`Incoming`] impls, one per request type, and not one generic or a macro: prost generates
//! five unrelated structs with no trait in common, so any generic code needs a trait implemented for
//! each of them anyway, and that trait is [`Incoming`]. What differs between the impls is the real
//! content, [`Incoming::message`] (which fields make the [`Message`], and which of them must be ids);
//! `from` and `to` are one-line field reads that Rust cannot share between structs without a macro,
//! which would hide twenty plain lines behind a second language. The `requests` fuzz target round-trips
//! every request type through this trait and [`Outgoing`], so each impl is exercised on its own.

use std::time::{Duration, Instant};

use synclab_core::Named;
use synclab_core::election::{Algorithm, MAX_MEMBERS, Machine, Message, NodeId, Reply, Role};
use tonic::Status;

use crate::proto::election as pb;
use crate::proto::nanos_to_timestamp;

/// A node id from the wire: positive (one rule for every service that names nodes, in [`crate::proto`]).
pub use crate::proto::to_id;

/// An optional id from the wire: 0 for none.
pub fn optional_id(id: i64) -> Option<NodeId> {
    (id > 0).then_some(id as NodeId)
}

/// An id for the wire (ids fit in `i64`: `--peers` refuses larger ones).
pub fn wire_id(id: NodeId) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// An optional id for the wire: 0 for none.
pub fn wire_optional_id(id: Option<NodeId>) -> i64 {
    id.map_or(0, wire_id)
}

/// The request's sender, receiver and message.
pub trait Incoming {
    /// The sender's id as sent.
    fn from(&self) -> i64;
    /// The receiver's id as sent; 0: unspecified.
    fn to(&self) -> i64;
    /// The message, or why it is not one.
    fn message(&self) -> Result<Message, Status>;
}

impl Incoming for pb::ElectionRequest {
    fn from(&self) -> i64 {
        self.from
    }
    fn to(&self) -> i64 {
        self.to
    }
    fn message(&self) -> Result<Message, Status> {
        Ok(Message::Election { term: self.term })
    }
}

impl Incoming for pb::CoordinatorRequest {
    fn from(&self) -> i64 {
        self.from
    }
    fn to(&self) -> i64 {
        self.to
    }
    fn message(&self) -> Result<Message, Status> {
        Ok(Message::Coordinator { term: self.term })
    }
}

impl Incoming for pb::AliveRequest {
    fn from(&self) -> i64 {
        self.from
    }
    fn to(&self) -> i64 {
        self.to
    }
    fn message(&self) -> Result<Message, Status> {
        let coordinator = match self.coordinator {
            0 => None,
            c => Some(to_id(c, "coordinator")?),
        };
        Ok(Message::Alive { term: self.term, coordinator })
    }
}

impl Incoming for pb::RingElectionRequest {
    fn from(&self) -> i64 {
        self.from
    }
    fn to(&self) -> i64 {
        self.to
    }
    fn message(&self) -> Result<Message, Status> {
        let initiator = to_id(self.initiator, "initiator")?;
        // Checked before anything else is done with them: a ring never carries more ids than a group
        // may have members.
        if self.ids.len() > MAX_MEMBERS {
            return Err(Status::invalid_argument(format!("{} ids: a ring message carries at most {MAX_MEMBERS}", self.ids.len())));
        }
        let ids = self.ids.iter().map(|&i| to_id(i, "ids")).collect::<Result<Vec<_>, _>>()?;
        Ok(Message::RingElection { term: self.term, initiator, ids })
    }
}

impl Incoming for pb::RingCoordinatorRequest {
    fn from(&self) -> i64 {
        self.from
    }
    fn to(&self) -> i64 {
        self.to
    }
    fn message(&self) -> Result<Message, Status> {
        let coordinator = to_id(self.coordinator, "coordinator")?;
        let initiator = to_id(self.initiator, "initiator")?;
        Ok(Message::RingCoordinator { term: self.term, coordinator, initiator })
    }
}

/// A message as the request that carries it, from node `from`.
pub enum Outgoing {
    Election(pb::ElectionRequest),
    Coordinator(pb::CoordinatorRequest),
    Alive(pb::AliveRequest),
    RingElection(pb::RingElectionRequest),
    RingCoordinator(pb::RingCoordinatorRequest),
}

impl Outgoing {
    /// The request for `message`, sent by `from` to `to`.
    pub fn new(from: NodeId, to: NodeId, message: Message) -> Self {
        let (from, to) = (wire_id(from), wire_id(to));
        match message {
            Message::Election { term } => Outgoing::Election(pb::ElectionRequest { from, term, to }),
            Message::Coordinator { term } => Outgoing::Coordinator(pb::CoordinatorRequest { from, term, to }),
            Message::Alive { term, coordinator } => {
                Outgoing::Alive(pb::AliveRequest { from, term, coordinator: wire_optional_id(coordinator), to })
            }
            Message::RingElection { term, initiator, ids } => Outgoing::RingElection(pb::RingElectionRequest {
                from,
                term,
                initiator: wire_id(initiator),
                ids: ids.into_iter().map(wire_id).collect(),
                to,
            }),
            Message::RingCoordinator { term, coordinator, initiator } => Outgoing::RingCoordinator(pb::RingCoordinatorRequest {
                from,
                term,
                coordinator: wire_id(coordinator),
                initiator: wire_id(initiator),
                to,
            }),
        }
    }
}

/// A machine's reply for the wire, from node `from`.
pub fn wire_reply(from: NodeId, reply: Reply) -> pb::Reply {
    pb::Reply { term: reply.term, coordinator: wire_optional_id(reply.coordinator), ok: reply.ok, from: wire_id(from) }
}

/// A reply from the wire.
pub fn reply_from_wire(reply: pb::Reply) -> Reply {
    Reply { term: reply.term, coordinator: optional_id(reply.coordinator), ok: reply.ok }
}

/// Converts the machine's clock (time since the node started) to wall-clock timestamps observers can
/// compare across nodes.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// Instant 0 of the machine's time.
    pub epoch: Instant,
    /// The host's real time then, ns since the Unix epoch.
    pub wall_epoch: i64,
}

impl Timeline {
    /// A timeline starting now.
    pub fn start() -> Self {
        Self { epoch: Instant::now(), wall_epoch: crate::clock::host_now() }
    }

    /// The machine's time now.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Machine time `at` as a wall-clock timestamp.
    pub fn wall(&self, at: Duration) -> prost_types::Timestamp {
        let nanos = i64::try_from(at.as_nanos()).unwrap_or(i64::MAX);
        nanos_to_timestamp(self.wall_epoch.saturating_add(nanos))
    }
}

fn wire_role(role: Role) -> pb::Role {
    match role {
        Role::Follower => pb::Role::Follower,
        Role::Candidate => pb::Role::Candidate,
        Role::Waiting => pb::Role::Waiting,
        Role::Coordinator => pb::Role::Coordinator,
    }
}

fn wire_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanos: d.subsec_nanos() as i32 }
}

/// The node's state as `GetState` reports it.
pub fn node_state(id: NodeId, algorithm: Algorithm, machine: &Machine, members: &[pb::Member], timeline: &Timeline) -> pb::NodeState {
    let core = machine.core();
    let last_election = core.last_election().map(|e| pb::ElectionTiming {
        started: Some(timeline.wall(e.started)),
        finished: e.finished.map(|f| timeline.wall(f)),
        duration: e.finished.map(|f| wire_duration(f.saturating_sub(e.started))),
        reason: e.reason.clone(),
    });
    let messages = core
        .counters()
        .iter()
        .map(|(kind, c)| pb::MessageCount {
            kind: kind.as_str().to_string(),
            sent: c.sent,
            received: c.received,
            failed: c.failed,
            rejected: c.rejected,
        })
        .collect();
    pb::NodeState {
        id: wire_id(id),
        algorithm: algorithm.as_str().to_string(),
        role: wire_role(core.role()) as i32,
        term: core.term(),
        coordinator: wire_optional_id(core.coordinator()),
        coordinator_since: core.coordinator().map(|_| timeline.wall(core.coordinator_since())),
        last_election,
        messages,
        members: members.to_vec(),
        now: Some(nanos_to_timestamp(crate::clock::host_now())),
        // The node's shell keeps these (the machine does not): it fills them in.
        leader_changes: 0,
        availability: 0.0,
    }
}
