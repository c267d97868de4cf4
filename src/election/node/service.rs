//! The node's gRPC service: `ElectionService`'s handlers. A protocol request is checked (its sender's
//! identity too, with TLS), fed to the machine as one event, and answered once the event's `Ready` is
//! carried out as far as the answer must wait (a minted term stored).

use synclab_core::election::Message;
use tonic::{Request, Response, Status};

use super::ElectionNode;
use crate::election::convert::{Incoming, to_id, wire_id, wire_reply};
use crate::proto::election as pb;
use crate::proto::election::election_service_server::ElectionService;
use crate::proto::election::message_event::Direction;
use crate::server::WatchStream;
use crate::tls::authz::{Allowed, authorize};

impl ElectionNode {
    /// Handles a protocol request: checks it (its sender's identity too, with TLS), feeds it to the
    /// machine, answers once the term is stored.
    async fn handle<T: Incoming>(&self, request: Request<T>, rpc: &str) -> Result<Response<pb::Reply>, Status> {
        let from = to_id(request.get_ref().from(), "from")?;
        authorize(&request, rpc, Allowed::Node(from))?;
        let remote = request.remote_addr();
        let request = request.into_inner();
        self.thawed().await;
        self.cut_off(from).await?;
        if self.shared.halted.is_stopping() {
            return Err(Status::unavailable("the node is stopping"));
        }
        let to = request.to();
        if to != 0 && to != wire_id(self.shared.id) {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {to}: the message reached the wrong node (has an address changed?)",
                self.shared.id
            )));
        }
        let message = request.message()?;
        let kind = message.kind();
        let seen: Message = message.clone();
        let outcome = self.apply(move |m, now| m.on_request(now, from, message)).await;
        self.shared.outbox.record(Direction::Received, from, &seen, matches!(outcome, Ok(Ok(_))), 0);
        self.shared.wake.notify_one();
        match outcome {
            Ok(Ok(reply)) => Ok(Response::new(wire_reply(self.shared.id, reply))),
            Ok(Err(rejection)) => {
                if let (synclab_core::election::Rejection::UnknownSender(_), Some(remote)) = (&rejection, remote) {
                    self.stranger(remote.ip());
                }
                self.shared.refusals.refused(rejection.kind(), &format_args!("{} from {from}: {rejection}", kind.as_str()));
                Err(Status::invalid_argument(rejection.to_string()))
            }
            Err(e) => Err(Status::unavailable(format!("cannot store the term, so this message is not answered: {e}"))),
        }
    }
}

#[tonic::async_trait]
impl ElectionService for ElectionNode {
    async fn election(&self, request: Request<pb::ElectionRequest>) -> Result<Response<pb::Reply>, Status> {
        self.handle(request, "ElectionService/Election").await
    }

    async fn coordinator(&self, request: Request<pb::CoordinatorRequest>) -> Result<Response<pb::Reply>, Status> {
        self.handle(request, "ElectionService/Coordinator").await
    }

    async fn alive(&self, request: Request<pb::AliveRequest>) -> Result<Response<pb::Reply>, Status> {
        self.handle(request, "ElectionService/Alive").await
    }

    async fn ring_election(&self, request: Request<pb::RingElectionRequest>) -> Result<Response<pb::Reply>, Status> {
        self.handle(request, "ElectionService/RingElection").await
    }

    async fn ring_coordinator(&self, request: Request<pb::RingCoordinatorRequest>) -> Result<Response<pb::Reply>, Status> {
        self.handle(request, "ElectionService/RingCoordinator").await
    }

    async fn get_state(&self, _request: Request<pb::GetStateRequest>) -> Result<Response<pb::NodeState>, Status> {
        self.thawed().await;
        Ok(Response::new(self.snapshot().await))
    }

    type FollowStream = WatchStream<pb::FollowEvent>;

    async fn follow(&self, request: Request<pb::FollowRequest>) -> Result<Response<Self::FollowStream>, Status> {
        Ok(Response::new(self.open_line(request).await?))
    }

    type WatchMessagesStream = WatchStream<pb::MessageEvent>;

    async fn watch_messages(&self, _request: Request<pb::WatchMessagesRequest>) -> Result<Response<Self::WatchMessagesStream>, Status> {
        Ok(Response::new(self.message_feed()?))
    }

    type WatchLeaderStream = WatchStream<pb::NodeState>;

    async fn watch_leader(&self, _request: Request<pb::WatchLeaderRequest>) -> Result<Response<Self::WatchLeaderStream>, Status> {
        Ok(Response::new(self.leader_feed()?))
    }
}
