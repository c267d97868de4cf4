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
async fn open(
    node_id: NodeId,
    peer: &Peer,
    term: Term,
    probe: Duration,
) -> Result<(tonic::Streaming<pb::FollowEvent>, pb::FollowEvent), String> {
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

/// The follower's side: node `id` keeps a line open to `coordinator` (which it follows in `term`) until
/// the coordinator stops or dies (then it calls `lost` with why, and the node's machine holds an
/// election) or steps down. Runs until then or until the task is aborted (the node follows someone else).
pub(super) async fn follow<F, Fut>(id: NodeId, peer: Arc<Peer>, coordinator: NodeId, term: Term, probe: Duration, lost: F)
where
    F: FnOnce(&'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut had_line = false;
    let mut reopen = Reopen::default();
    let mut opened = std::time::Instant::now();
    loop {
        let ended = match open(id, &peer, term, probe).await {
            Ok((stream, pb::FollowEvent { event: Some(pb::follow_event::Event::Leading(_)) })) => {
                had_line = true;
                opened = std::time::Instant::now();
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
                lost("lost its connection").await;
                return;
            }
            Err(why) => Ended::Unopened(why),
        };
        match ended {
            Ended::Goodbye(reason) if reason == STOPPING => {
                tracing::info!(coordinator, "the coordinator said goodbye: it is stopping");
                lost("said goodbye").await;
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
                if let Some(wait) = reopen.after_break(opened.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            Ended::Unopened(why) => {
                let wait = reopen.after_unopened();
                tracing::debug!(coordinator, %why, retry_in = ?wait, "no line to the coordinator yet");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// When to open a follower's line again. A line that breaks is reopened at once (the probe): a
/// coordinator that died is then found within the probe timeout, however recently the line was opened.
/// Only lines that keep breaking as soon as they open (something between the two closes every
/// connection) are reopened after a wait that doubles, from 50 ms to 1 s; so are lines that cannot
/// be opened.
#[derive(Debug)]
struct Reopen {
    /// Breaks in a row of lines that had been open for less than [`Reopen::HELD`].
    quick_breaks: u32,
    backoff: Duration,
}

impl Default for Reopen {
    fn default() -> Self {
        Self { quick_breaks: 0, backoff: Self::FIRST }
    }
}

impl Reopen {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(1);
    /// A line open this long counts as one that held.
    const HELD: Duration = Duration::from_secs(1);

    /// A line that had been open for `held` broke: how long to wait before reopening it (`None`: now).
    fn after_break(&mut self, held: Duration) -> Option<Duration> {
        if held >= Self::HELD {
            *self = Self::default();
            return None;
        }
        self.quick_breaks = self.quick_breaks.saturating_add(1);
        if self.quick_breaks == 1 {
            return None;
        }
        Some(self.next_wait())
    }

    /// A line could not be opened: how long to wait before trying again.
    fn after_unopened(&mut self) -> Duration {
        self.next_wait()
    }

    fn next_wait(&mut self) -> Duration {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(Self::MAX);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_line_that_breaks_once_is_probed_at_once_however_young() {
        // The coordinator died 300 ms after its followers opened their lines: no wait before the probe.
        assert_eq!(Reopen::default().after_break(300 * MS), None);
        assert_eq!(Reopen::default().after_break(Duration::ZERO), None);
        assert_eq!(Reopen::default().after_break(Duration::from_secs(60)), None);
    }

    #[test]
    fn lines_that_keep_breaking_as_they_open_are_reopened_ever_more_slowly() {
        let mut r = Reopen::default();
        let waits: Vec<Option<Duration>> = (0..8).map(|_| r.after_break(5 * MS)).collect();
        assert_eq!(
            waits,
            [None, Some(50 * MS), Some(100 * MS), Some(200 * MS), Some(400 * MS), Some(800 * MS), Some(1000 * MS), Some(1000 * MS)]
        );
        // A line that then holds for a second starts the count again.
        assert_eq!(r.after_break(Duration::from_secs(2)), None);
        assert_eq!(r.after_break(5 * MS), None);
        assert_eq!(r.after_break(5 * MS), Some(50 * MS));
    }

    #[test]
    fn lines_that_cannot_be_opened_are_retried_with_a_doubling_wait() {
        let mut r = Reopen::default();
        let waits: Vec<Duration> = (0..6).map(|_| r.after_unopened()).collect();
        assert_eq!(waits, [50 * MS, 100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS]);
    }
}
