//! The line between a follower and its coordinator (`Follow`): how a follower learns of its
//! coordinator's death from the connection instead of from the suspicion timeout.
//!
//! - The coordinator's side ([`coordinator_line`]): answers `Leading` and holds the stream open while it
//!   rules that term; when it steps down or stops it sends `Goodbye` and ends the stream.
//! - The follower's side ([`follow`]): keeps a line open to the coordinator it follows. A `Goodbye`
//!   because the coordinator is stopping means elect now. A line that breaks without one (the
//!   coordinator's process died and the kernel closed its sockets, or something between them closed the
//!   connection) is probed at once by opening it again: a live coordinator answers within the probe
//!   timeout and nothing happens; otherwise the follower holds an election without waiting for the
//!   timeout. A coordinator that stepped down (it saw a newer term) ends the line too, but elects no one:
//!   the newer term's coordinator announces itself, and heartbeats carry it. What closes no connection
//!   (a paused container, a partition) is still found by the heartbeat timeout.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use synclab_core::election::{NodeId, Term};
use tokio::sync::watch;
use tonic::Status;

use super::node::ElectionNode;
use super::peer::Peer;
use crate::proto::election as pb;
use crate::server::Stop;
use crate::server::watch::Place;

fn leading(term: Term) -> pb::FollowEvent {
    pb::FollowEvent { event: Some(pb::follow_event::Event::Leading(pb::Leading { term })) }
}

fn goodbye(term: Term, reason: &str) -> pb::FollowEvent {
    pb::FollowEvent { event: Some(pb::follow_event::Event::Goodbye(pb::Goodbye { term, reason: reason.to_string() })) }
}

enum Phase {
    Start,
    Ruling(Term),
    Done,
}

fn rules(state: &pb::NodeState, id: i64) -> bool {
    state.role == pb::Role::Coordinator as i32 && state.coordinator == id
}

/// The coordinator's side of a follower's line: `Leading` while this node (`id`) rules, then `Goodbye`.
/// `leader` is the node's published state, `leaving` turns true when the node stops.
pub(super) fn coordinator_line(
    id: NodeId,
    mut leader: watch::Receiver<pb::NodeState>,
    leaving: Stop,
    permit: Place,
) -> impl Stream<Item = Result<pb::FollowEvent, Status>> + Send + 'static {
    let id = super::convert::wire_id(id);
    futures::stream::unfold((Phase::Start, permit), move |(phase, permit)| {
        let state = leader.borrow_and_update().clone();
        let mut leader = leader.clone();
        let leaving = leaving.clone();
        async move {
            match phase {
                Phase::Done => None,
                Phase::Start if leaving.is_stopping() => Some((Ok(goodbye(state.term, STOPPING)), (Phase::Done, permit))),
                Phase::Start if rules(&state, id) => Some((Ok(leading(state.term)), (Phase::Ruling(state.term), permit))),
                Phase::Start => Some((Ok(goodbye(state.term, "not the coordinator")), (Phase::Done, permit))),
                Phase::Ruling(term) => {
                    let reason = loop {
                        tokio::select! {
                            changed = leader.changed() => {
                                if changed.is_err() {
                                    break STOPPING;
                                }
                                let now = leader.borrow_and_update().clone();
                                if !(rules(&now, id) && now.term == term) {
                                    break "stepped down";
                                }
                            }
                            () = leaving.wait() => break STOPPING,
                        }
                    };
                    Some((Ok(goodbye(term, reason)), (Phase::Done, permit)))
                }
            }
        }
    })
}

/// The goodbye of a coordinator whose process is stopping.
const STOPPING: &str = "stopping";

/// How a line ended.
enum Ended {
    /// The coordinator said goodbye.
    Goodbye(String),
    /// It broke without one.
    Broke(String),
    /// It could not be opened (and was never open), or the peer does not rule now.
    Unopened(String),
}

/// Opens the line to `coordinator` for `term`; the first event must come within `probe`.
async fn open(node_id: NodeId, peer: &Peer, term: Term, probe: Duration) -> Result<(tonic::Streaming<pb::FollowEvent>, pb::FollowEvent), String> {
    let request = pb::FollowRequest { from: super::convert::wire_id(node_id), to: super::convert::wire_id(peer.id()), term };
    let attempt = async {
        let mut stream = peer.client().follow(request).await.map_err(|s| format!("{:?}: {}", s.code(), s.message()))?.into_inner();
        match stream.message().await {
            Ok(Some(event)) => Ok((stream, event)),
            Ok(None) => Err("the line ended before the first event".to_string()),
            Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
        }
    };
    match tokio::time::timeout(probe, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {probe:?}")),
    }
}

/// Waits on an open line until it ends.
async fn hold(mut stream: tonic::Streaming<pb::FollowEvent>) -> Ended {
    loop {
        match stream.message().await {
            Ok(Some(pb::FollowEvent { event: Some(pb::follow_event::Event::Goodbye(bye)) })) => return Ended::Goodbye(bye.reason),
            Ok(Some(_)) => continue,
            Ok(None) => return Ended::Broke("the line ended without a goodbye".into()),
            Err(s) => return Ended::Broke(format!("{:?}: {}", s.code(), s.message())),
        }
    }
}

/// The follower's side: keeps a line open to `coordinator` (which it follows in `term`) until the
/// coordinator stops or dies (then it tells the machine, which holds an election) or steps down. Runs
/// until then or until the task is aborted (the node follows someone else).
pub(super) async fn follow(node: ElectionNode, peer: Arc<Peer>, coordinator: NodeId, term: Term, probe: Duration) {
    let mut had_line = false;
    let mut backoff = Duration::from_millis(50);
    let mut opened = std::time::Instant::now();
    loop {
        let ended = match open(node.id(), &peer, term, probe).await {
            Ok((stream, pb::FollowEvent { event: Some(pb::follow_event::Event::Leading(_)) })) => {
                had_line = true;
                opened = std::time::Instant::now();
                peer.mark_up();
                hold(stream).await
            }
            Ok((_, pb::FollowEvent { event: Some(pb::follow_event::Event::Goodbye(bye)) })) if bye.reason == STOPPING => {
                Ended::Goodbye(bye.reason)
            }
            // Not (or not yet: it may still be storing its term) the coordinator: the heartbeats settle
            // who is; try the line again later.
            Ok(_) => Ended::Unopened("not the coordinator now".into()),
            Err(why) if had_line => {
                // The line broke and reopening it, the probe, found nobody.
                tracing::info!(coordinator, %why, "the coordinator's line broke and it does not answer");
                peer.mark_down("its line broke and it did not answer a probe");
                node.lost_coordinator(coordinator, "lost its connection").await;
                return;
            }
            Err(why) => Ended::Unopened(why),
        };
        match ended {
            Ended::Goodbye(reason) if reason == STOPPING => {
                tracing::info!(coordinator, "the coordinator said goodbye: it is stopping");
                peer.mark_down("it said goodbye: stopping");
                node.lost_coordinator(coordinator, "said goodbye").await;
                return;
            }
            Ended::Goodbye(reason) => {
                // It stepped down: a newer term's coordinator will announce itself.
                tracing::debug!(coordinator, %reason, "the coordinator ended the line");
                return;
            }
            // Probe at once (reopening is the probe), unless lines keep breaking as soon as they open.
            Ended::Broke(why) => {
                tracing::debug!(coordinator, %why, "the line to the coordinator broke; probing");
                if opened.elapsed() < Duration::from_secs(1) {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                } else {
                    backoff = Duration::from_millis(50);
                }
            }
            Ended::Unopened(why) => {
                tracing::debug!(coordinator, %why, retry_in = ?backoff, "no line to the coordinator yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
