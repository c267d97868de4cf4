//! The node's outbox: sends what the machine's `Ready` hands out (each message in a task of its own,
//! through the lab's link faults, with the RPC deadline), paces a burst of `Election`s, withdraws those
//! the machine no longer needs, and tells the message watchers about every message.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synclab_core::election::{Envelope, Kind, Message, NodeId, Reply, SendError};
use tokio::sync::broadcast;

use crate::election::convert::wire_id;
use crate::election::peer::Peer;
use crate::lab::{LinkFaults, Verdict};
use crate::lock::lock;
use crate::proto::election as pb;
use crate::proto::election::message_event::Direction;
use crate::server::Stop;

/// An `Election` not answered yet.
enum Slot {
    /// Its turn to leave has not come.
    Waiting,
    /// On its way, in this task.
    Running(tokio::task::AbortHandle),
}

/// Where a node's messages leave from.
pub(super) struct Outbox {
    id: NodeId,
    /// The peers, by id (replaced as a whole when discovery finds other members).
    peers: Mutex<Arc<BTreeMap<NodeId, Arc<Peer>>>>,
    /// Faults a lab set on the links to the peers.
    links: Arc<LinkFaults>,
    /// How long a message lost on a faulty link keeps its sender waiting: the RPC deadline.
    rpc_timeout: Duration,
    /// Set when the node stops: nothing more leaves.
    halted: Stop,
    /// Every message sent and received, for `WatchMessages` (nothing is built while nobody watches).
    pub(super) messages: broadcast::Sender<pb::MessageEvent>,
    /// `Election`s not answered yet, by tag: cancelled when the machine withdraws them.
    inflight: Mutex<HashMap<u64, Slot>>,
}

impl Outbox {
    pub(super) fn new(id: NodeId, peers: BTreeMap<NodeId, Arc<Peer>>, links: Arc<LinkFaults>, rpc_timeout: Duration, halted: Stop) -> Self {
        Self {
            id,
            peers: Mutex::new(Arc::new(peers)),
            links,
            rpc_timeout,
            halted,
            messages: broadcast::channel(1024).0,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The peers, by id, as they are now.
    pub(super) fn peers(&self) -> Arc<BTreeMap<NodeId, Arc<Peer>>> {
        lock(&self.peers).clone()
    }

    /// Replaces the peers (discovery found other members, or the same at other addresses).
    pub(super) fn set_peers(&self, peers: BTreeMap<NodeId, Arc<Peer>>) {
        *lock(&self.peers) = Arc::new(peers);
    }

    /// Tells the message watchers about one message, if any is watching.
    pub(super) fn record(&self, direction: Direction, peer: NodeId, message: &Message, ok: bool, tag: u64) {
        crate::observe::election_message_event(direction, message.kind().as_str(), ok);
        if self.messages.receiver_count() == 0 {
            return;
        }
        let event = pb::MessageEvent {
            time: Some(crate::proto::nanos_to_timestamp(crate::clock::host_now())),
            node: wire_id(self.id),
            direction: direction as i32,
            peer: wire_id(peer),
            kind: message.kind().as_str().to_string(),
            term: message.term(),
            ok,
            tag,
        };
        let _ = self.messages.send(event);
    }

    /// Sends a `Ready`'s messages, unless the node is stopping: `Election`s paced ([`Self::send_paced`]),
    /// the others each at once. `outcome` gets every message's result.
    pub(super) fn send_all<F, Fut>(self: &Arc<Self>, messages: Vec<Envelope>, outcome: F)
    where
        F: Fn(Envelope, Result<Reply, SendError>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if self.halted.is_stopping() {
            return;
        }
        let (elections, others): (Vec<Envelope>, Vec<Envelope>) =
            messages.into_iter().partition(|e| matches!(e.message, Message::Election { .. }));
        for envelope in others {
            self.send(envelope, outcome.clone());
        }
        if !elections.is_empty() {
            self.send_paced(elections, outcome);
        }
    }

    /// Cancels the `Election`s among `tags` (the machine withdrew them) that are not answered yet: one
    /// not started is never sent, one on its way is reset, and the machine hears nothing of either.
    pub(super) fn cancel(&self, tags: &[u64]) {
        if tags.is_empty() {
            return;
        }
        let mut inflight = lock(&self.inflight);
        for tag in tags {
            if let Some(slot) = inflight.remove(tag) {
                if let Slot::Running(task) = slot {
                    task.abort();
                }
                crate::observe::election_message(Kind::Election.as_str(), "sent", "withdrawn");
            }
        }
    }

    /// Sends one event's `Election`s from one task, one at a time with a turn of the runtime between
    /// them (they do not wait for each other's answers). On an idle runtime a turn is microseconds and
    /// they all leave at once, as the algorithm has it. On a busy one (a group of n that all hold an
    /// election at once sends n²/2 of them) the machine's first OK usually comes back before the later
    /// ones have left, and withdraws them ([`Self::cancel`]): the work the group does shrinks with its
    /// load instead of growing with it.
    pub(super) fn send_paced<F, Fut>(self: &Arc<Self>, elections: Vec<Envelope>, outcome: F)
    where
        F: Fn(Envelope, Result<Reply, SendError>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        {
            let mut inflight = lock(&self.inflight);
            for e in &elections {
                inflight.insert(e.tag, Slot::Waiting);
            }
        }
        let outbox = self.clone();
        tokio::spawn(async move {
            for (i, envelope) in elections.into_iter().enumerate() {
                if i > 0 {
                    tokio::task::yield_now().await;
                }
                let mut inflight = lock(&outbox.inflight);
                if outbox.halted.is_stopping() {
                    inflight.remove(&envelope.tag);
                    continue;
                }
                // Gone from the table: withdrawn while it waited.
                if inflight.get(&envelope.tag).is_some_and(|slot| matches!(slot, Slot::Waiting)) {
                    let tag = envelope.tag;
                    if let Some(task) = outbox.send(envelope, outcome.clone()) {
                        inflight.insert(tag, Slot::Running(task.abort_handle()));
                    } else {
                        inflight.remove(&tag);
                    }
                }
            }
        });
    }

    /// Sends one message in a task of its own, which hands the result to `outcome`.
    fn send<F, Fut>(self: &Arc<Self>, envelope: Envelope, outcome: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: FnOnce(Envelope, Result<Reply, SendError>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(peer) = self.peers().get(&envelope.to).cloned() else {
            tracing::warn!(to = envelope.to, "no address for node");
            return None;
        };
        let outbox = self.clone();
        let cancellable = matches!(envelope.message, Message::Election { .. });
        Some(tokio::spawn(async move {
            outbox.record(Direction::Sent, envelope.to, &envelope.message, true, envelope.tag);
            let result = match outbox.links.outgoing(envelope.to) {
                Verdict::Lost => {
                    // Lost on the way: the sender hears nothing before its deadline.
                    tokio::time::sleep(outbox.rpc_timeout).await;
                    Err(SendError::NoAnswer(format!("node {}: lost on a faulty link (lab)", envelope.to)))
                }
                Verdict::Pass(delay) => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    peer.call(outbox.id, envelope.message.clone()).await
                }
            };
            match &result {
                Ok(reply) => outbox.record(Direction::Answered, envelope.to, &envelope.message, reply.ok, envelope.tag),
                Err(e) => {
                    outbox.record(Direction::Failed, envelope.to, &envelope.message, false, envelope.tag);
                    tracing::debug!(to = envelope.to, kind = envelope.message.kind().as_str(), error = %e, "send failed");
                }
            }
            // Answered: no longer to cancel (the pacer put it in the table before this task could run).
            if cancellable {
                lock(&outbox.inflight).remove(&envelope.tag);
            }
            outcome(envelope, result).await;
        }))
    }

    /// Nothing waits in the table (for tests).
    #[cfg(test)]
    pub(super) fn is_idle(&self) -> bool {
        lock(&self.inflight).is_empty()
    }
}
