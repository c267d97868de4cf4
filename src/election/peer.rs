//! A node's link to one peer: a channel that is dialled afresh (resolving the peer's name again) on the
//! first call that fails, misses its deadline or reaches another node. An HTTP/2 connection whose
//! address went away (a container reconnected with a new address, a partition that dropped packets) is
//! never closed by a deadline alone: each call is cancelled, the connection stays, and every later call
//! on it is lost too. So the link drops the connection and dials again at once, not on a timer, and
//! tells whoever keeps the members (`super::discovery`) to look the group up again: a heal that swapped
//! two nodes' addresses settles within a round trip.
//!
//! Whether the peer is down is not the link's to judge: the state machine decides that from the
//! outcomes of its sends and what the node tells it (`Core::is_down`), and sends a down peer nothing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synclab_core::election::{Message, NodeId, Reply, SendError};
use tokio::sync::Notify;
use tonic::Code;
use tonic::transport::Channel;

use super::convert::{Outgoing, reply_from_wire, wire_id};
use crate::lock::lock;
use crate::proto::election::election_service_client::ElectionServiceClient;
use crate::rpc::{Dialer, RpcError, request, with_deadline};

/// Deadlines missed in a row after which the connection is dropped and dialled again: the first.
pub const REDIAL_AFTER_MISSES: u32 = 1;

/// One peer of a node.
#[derive(Debug)]
pub struct Peer {
    id: NodeId,
    address: String,
    timeout: Duration,
    dialer: Dialer,
    client: Mutex<ElectionServiceClient<Channel>>,
    misses: AtomicU32,
    /// Told of every failed call (members found by discovery: look them up again).
    failed: Option<Arc<Notify>>,
}

impl Peer {
    /// A link to node `id` at `address`; every call has `timeout` as its deadline.
    pub fn new(id: NodeId, address: &str, timeout: Duration, dialer: Dialer) -> Result<Self, RpcError> {
        let client = ElectionServiceClient::new(dialer.channel(address, timeout)?);
        let (address, client, misses) = (address.to_string(), Mutex::new(client), AtomicU32::new(0));
        Ok(Self { id, address, timeout, dialer, client, misses, failed: None })
    }

    /// The same link, telling `failed` of every call that fails.
    pub fn on_failure(mut self, failed: Arc<Notify>) -> Self {
        self.failed = Some(failed);
        self
    }

    /// The address it dials.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A client for this peer (on the current connection).
    pub fn client(&self) -> ElectionServiceClient<Channel> {
        lock(&self.client).clone()
    }

    /// The peer's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Drops the connection and dials the peer's address again (resolving its name again).
    pub fn redial(&self, why: &str) {
        match self.dialer.channel(&self.address, self.timeout) {
            Ok(channel) => {
                *lock(&self.client) = ElectionServiceClient::new(channel);
                tracing::debug!(peer = self.id, address = %self.address, why, "dialling the peer again");
            }
            Err(e) => tracing::warn!(peer = self.id, error = %e, "cannot dial the peer again"),
        }
        self.misses.store(0, Ordering::Relaxed);
        if let Some(failed) = &self.failed {
            failed.notify_one();
        }
    }

    /// Sends `message` from node `from`, with the deadline. A peer that does not answer in time, cannot
    /// be reached, or turns out to be another node counts as dead for this message.
    pub async fn call(&self, from: NodeId, message: Message) -> Result<Reply, SendError> {
        let mut client = lock(&self.client).clone();
        let (addr, timeout) = (self.address.as_str(), self.timeout);
        let answer = match Outgoing::new(from, self.id, message) {
            Outgoing::Election(m) => with_deadline(addr, timeout, client.election(request(m, timeout))).await,
            Outgoing::Coordinator(m) => with_deadline(addr, timeout, client.coordinator(request(m, timeout))).await,
            Outgoing::Alive(m) => with_deadline(addr, timeout, client.alive(request(m, timeout))).await,
            Outgoing::RingElection(m) => with_deadline(addr, timeout, client.ring_election(request(m, timeout))).await,
            Outgoing::RingCoordinator(m) => with_deadline(addr, timeout, client.ring_coordinator(request(m, timeout))).await,
        };
        match answer {
            Ok(reply) if reply.from != 0 && reply.from != wire_id(self.id) => {
                let why = format!("{addr} answered as node {}, not node {}", reply.from, self.id);
                self.redial(&why);
                Err(SendError::Unreachable(why))
            }
            Ok(reply) => {
                self.misses.store(0, Ordering::Relaxed);
                Ok(reply_from_wire(reply))
            }
            Err(RpcError::Rpc { code: Code::InvalidArgument, message, .. }) => {
                self.misses.store(0, Ordering::Relaxed);
                Err(SendError::Refused(message))
            }
            Err(RpcError::Rpc { code: Code::FailedPrecondition, message, .. }) => {
                // The receiver is another node: the address now belongs to someone else.
                self.redial(&message);
                Err(SendError::Unreachable(message))
            }
            Err(e @ RpcError::Timeout { .. }) => {
                if self.misses.fetch_add(1, Ordering::Relaxed) + 1 >= REDIAL_AFTER_MISSES {
                    self.redial("deadlines missed in a row");
                }
                Err(SendError::NoAnswer(e.to_string()))
            }
            Err(e) => {
                let why = e.to_string();
                self.redial(&why);
                Err(SendError::Unreachable(why))
            }
        }
    }
}
