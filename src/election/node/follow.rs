//! The node's streams: the line it keeps to the coordinator it follows, the line it holds open for each
//! follower while it rules (`Follow`), and the observers' feeds (`WatchLeader`, `WatchMessages`). The
//! protocol of a line itself is [`crate::election::line`]'s.

use std::future::Future;

use futures::StreamExt;
use synclab_core::election::NodeId;
use tonic::{Request, Status};

use super::ElectionNode;
use crate::election::convert::{to_id, wire_id};
use crate::election::line;
use crate::lock::lock;
use crate::proto::election as pb;
use crate::server::{WatchStream, Watched};
use crate::tls::authz::{Allowed, authorize};

impl ElectionNode {
    /// Keeps a line to the coordinator this node follows (and only to it), per its published state;
    /// `lost(coordinator, why)` when the line finds it dead or gone.
    pub(super) fn refollow<F, Fut>(&self, state: &pb::NodeState, lost: F)
    where
        F: FnOnce(NodeId, &'static str) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let target = (state.role == pb::Role::Follower as i32 && state.coordinator > 0 && state.coordinator != wire_id(self.shared.id))
            .then_some((state.coordinator as NodeId, state.term));
        let mut following = lock(&self.shared.following);
        if following.as_ref().map(|(c, t, _)| (*c, *t)) == target {
            return;
        }
        if let Some((_, _, task)) = following.take() {
            task.abort();
        }
        if let Some((coordinator, term)) = target
            && let Some(peer) = self.shared.outbox.peers().get(&coordinator).cloned()
            && !self.shared.halted.is_stopping()
        {
            let lost = move |why: &'static str| lost(coordinator, why);
            let task = tokio::spawn(line::follow(self.shared.id, peer, coordinator, term, self.shared.probe_timeout, lost));
            *following = Some((coordinator, term, task));
        }
    }

    /// `Follow`: a follower's line to this node, held open while it rules.
    pub(super) async fn open_line(&self, request: Request<pb::FollowRequest>) -> Result<WatchStream<pb::FollowEvent>, Status> {
        let from = to_id(request.get_ref().from, "from")?;
        authorize(&request, "ElectionService/Follow", Allowed::Node(from))?;
        self.cut_off(from).await?;
        let r = request.into_inner();
        if r.to != 0 && r.to != wire_id(self.shared.id) {
            return Err(Status::failed_precondition(format!("this is node {}, not node {}", self.shared.id, r.to)));
        }
        if !self.shared.outbox.peers().contains_key(&from) {
            return Err(Status::invalid_argument(format!("node {from} is not a member of this group")));
        }
        let permit = self.shared.lines.admit()?;
        let line = line::coordinator_line(self.shared.id, self.shared.leader.subscribe(), self.shared.leaving.clone(), permit);
        Ok(Box::pin(line))
    }

    /// `WatchMessages`: every message this node sends and receives, from now on.
    pub(super) fn message_feed(&self) -> Result<WatchStream<pb::MessageEvent>, Status> {
        use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
        let events = tokio_stream::wrappers::BroadcastStream::new(self.shared.outbox.messages.subscribe()).map(|e| match e {
            Ok(event) => Watched::Item(event),
            Err(BroadcastStreamRecvError::Lagged(missed)) => Watched::Lagged(missed),
        });
        self.shared.message_watchers.stream(events, self.shared.halted.clone())
    }

    /// `WatchLeader`: the node's published state, now and at every change. A watch channel keeps only
    /// the latest state: a slow watcher skips states, never piles them up.
    pub(super) fn leader_feed(&self) -> Result<WatchStream<pb::NodeState>, Status> {
        let states = tokio_stream::wrappers::WatchStream::new(self.shared.leader.subscribe()).map(Watched::Item);
        self.shared.watchers.stream(states, self.shared.halted.clone())
    }
}
