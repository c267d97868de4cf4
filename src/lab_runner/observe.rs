//! The gRPC observers of a run: each election node's state, polled, and its messages, streamed, both
//! recorded into the history until the run stops them.

use std::time::Duration;

use futures::StreamExt;
use synclab_core::election::NodeId;
use synclab_core::lab::history::{ElectionObservation, Event, MessageObservation, Role};
use tokio::sync::watch;

use super::record::Recorder;
use crate::proto::election as pb;
use crate::proto::election::election_service_client::ElectionServiceClient;
use crate::rpc::Dialer;

/// How often each node's state is read.
pub const POLL: Duration = Duration::from_millis(20);
/// The deadline of each read: a node that misses it is recorded as unreachable.
const READ_DEADLINE: Duration = Duration::from_millis(150);

/// Records node `id`'s state each time it changes (and that it stopped answering).
pub async fn observe_state(dialer: Dialer, id: NodeId, addr: String, rec: Recorder, mut stop: watch::Receiver<bool>) {
    let Ok(channel) = dialer.channel(&addr, READ_DEADLINE) else { return };
    let mut client = ElectionServiceClient::new(channel);
    let mut last: Option<(Role, u64, Option<NodeId>)> = None;
    while !*stop.borrow() {
        let read = tokio::time::timeout(READ_DEADLINE, client.get_state(pb::GetStateRequest {})).await;
        let seen = match read {
            Ok(Ok(state)) => {
                let s = state.into_inner();
                (role(s.role), s.term, (s.coordinator > 0).then_some(s.coordinator as NodeId))
            }
            _ => (Role::Unreachable, last.map_or(0, |l| l.1), None),
        };
        if last != Some(seen) {
            last = Some(seen);
            rec.push(Event::Election(ElectionObservation { time: rec.now(), node: id, role: seen.0, term: seen.1, coordinator: seen.2 }));
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

fn role(r: i32) -> Role {
    match pb::Role::try_from(r) {
        Ok(pb::Role::Coordinator) => Role::Coordinator,
        Ok(pb::Role::Candidate) => Role::Candidate,
        Ok(pb::Role::Waiting) => Role::Waiting,
        _ => Role::Follower,
    }
}

/// Records every message node `id` reports, reconnecting when it restarts.
pub async fn observe_messages(dialer: Dialer, id: NodeId, addr: String, rec: Recorder, mut stop: watch::Receiver<bool>) {
    let Ok(channel) = dialer.channel(&addr, Duration::from_secs(1)) else { return };
    let mut client = ElectionServiceClient::new(channel);
    while !*stop.borrow() {
        let stream = tokio::select! {
            s = tokio::time::timeout(READ_DEADLINE, client.watch_messages(pb::WatchMessagesRequest {})) => s,
            _ = stop.changed() => return,
        };
        if let Ok(Ok(stream)) = stream {
            let mut stream = stream.into_inner();
            loop {
                let next = tokio::select! {
                    n = stream.next() => n,
                    _ = stop.changed() => return,
                };
                let Some(Ok(m)) = next else { break };
                let direction = match pb::message_event::Direction::try_from(m.direction) {
                    Ok(pb::message_event::Direction::Sent) => "sent",
                    Ok(pb::message_event::Direction::Received) => "received",
                    Ok(pb::message_event::Direction::Answered) => "answered",
                    _ => "failed",
                };
                let time = crate::proto::timestamp_to_nanos(m.time.as_ref(), "time").map_or(rec.now(), |t| rec.at_wall(t as i128));
                rec.push(Event::Message(MessageObservation {
                    time,
                    node: id,
                    peer: m.peer.max(0) as NodeId,
                    direction: direction.into(),
                    kind: m.kind,
                    term: m.term,
                }));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return,
        }
    }
}
