//! The node's event loop: feeds the machine its start, its timers, the requests and replies, one event
//! at a time, and carries out the `Ready` each leaves in the contract's order: persist (the state
//! file), send, withdraw ([`super::outbox`]), publish (the observers' view and the line to the
//! coordinator, [`super::follow`]).

use std::time::Duration;

use synclab_core::election::{Envelope, Machine, NodeId, Persist, Term};

use super::ElectionNode;
use crate::election::state::StateError;
use crate::lock::lock;
use crate::proto::election as pb;
use crate::server::Stop;

impl ElectionNode {
    /// Runs the node until `stop` turns true: an election at start, then heartbeats and suspicion.
    pub async fn run(self, stop: Stop) {
        self.event(|m, now| m.start(now)).await;
        loop {
            let next = self.lock().next_wakeup();
            // With no timer running the loop still looks in once a second; messages wake it sooner.
            let sleep = next.map_or(Duration::from_secs(1), |at| at.saturating_sub(self.now()));
            let sleep = sleep.clamp(Duration::from_millis(1), Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.shared.wake.notified() => {}
                () = stop.wait() => break,
            }
            self.thawed().await;
            if let Err(e) = self.apply(|m, now| m.tick(now)).await {
                self.shared.store_failures.refused("cannot store the term: messages held back", &e);
            }
        }
        // A coordinator says goodbye on its followers' lines, so they elect at once (a crash says nothing).
        if !self.shared.crashed.load(std::sync::atomic::Ordering::SeqCst) {
            self.shared.leave.stop();
        }
        if let Some((_, _, task)) = lock(&self.shared.following).take() {
            task.abort();
        }
        self.shared.halt.stop();
        tracing::info!(id = self.shared.id, "election node stopped");
    }

    /// Makes the node hold an election now, as if it had just suspected its coordinator (for experiments
    /// that choose the initiator).
    ///
    /// A hook for experiments (the election benchmark), built only with the `lab-runner` feature.
    #[cfg(feature = "lab-runner")]
    pub async fn hold_election(&self) {
        self.event(|m, now| m.hold_election(now, "asked to")).await;
    }

    /// The line to `coordinator` broke and it does not answer, or it said goodbye: hold an election if
    /// this node still follows it.
    async fn lost_coordinator(&self, coordinator: NodeId, why: &str) {
        let why = why.to_string();
        self.event(move |m, now| m.coordinator_lost(now, coordinator, &why)).await;
    }

    /// Feeds the machine an event from outside the timer loop ([`Self::apply`]), then wakes the loop:
    /// the machine's next deadline may have moved. A failure to store the term is logged.
    pub(super) async fn event(&self, event: impl FnOnce(&mut Machine, Duration) + Send + 'static) {
        if let Err(e) = self.apply(event).await {
            self.shared.store_failures.refused("cannot store the term: messages held back", &e);
        }
        self.shared.wake.notify_one();
    }

    /// Feeds the machine one event, then carries out its `Ready` in the order the contract sets:
    /// persists its term, sends its messages, withdraws what it withdrew, publishes what changed; and
    /// returns the event's result. A minted term is stored before anything leaves; if it cannot be,
    /// nothing leaves: the messages are dropped and the caller gets the error instead of the result (a
    /// request fails). A learned term is stored behind the messages.
    ///
    /// The work runs in a task of its own, so a caller that gives up (a request whose deadline passed
    /// drops its handler) cannot cut it short: once the machine has taken an event, its messages leave.
    /// Cut short between the machine and the network, a node would wait for answers to messages it
    /// never sent and, in Bully, take the silence for the death of every node above it.
    pub(super) async fn apply<T: Send + 'static>(
        &self,
        event: impl FnOnce(&mut Machine, Duration) -> T + Send + 'static,
    ) -> Result<T, StateError> {
        let node = self.clone();
        match tokio::spawn(async move { node.apply_to_the_end(event).await }).await {
            Ok(result) => result,
            Err(e) => Err(StateError {
                path: self.shared.state.as_ref().map(|s| s.path().to_path_buf()).unwrap_or_default(),
                reason: format!("the event was not carried out: {e}"),
            }),
        }
    }

    /// [`Self::apply`]'s work, which must not be dropped half-way.
    async fn apply_to_the_end<T>(&self, event: impl FnOnce(&mut Machine, Duration) -> T) -> Result<T, StateError> {
        let _turn = self.shared.turn.lock().await;
        let (result, ready, state) = {
            let mut machine = self.lock();
            let result = event(&mut machine, self.now());
            let ready = machine.ready();
            if ready.changed.leadership() {
                self.note_leadership(&machine);
            }
            let state = ready.changed.leadership().then(|| self.describe(&machine));
            (result, ready, state)
        };
        if let Some(reason) = ready.changed.began() {
            crate::observe::election_began(reason);
        }
        // Persist.
        match ready.persist {
            Some(Persist { term, before_send: true }) => self.store(term, true).await?,
            Some(Persist { term, before_send: false }) if self.shared.state.is_some() => {
                let node = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = node.store(term, false).await {
                        node.shared.store_failures.refused("cannot store a learned term", &e);
                    }
                });
            }
            Some(Persist { .. }) | None => {}
        }
        // Send.
        self.send(ready.messages);
        // Withdraw.
        self.shared.outbox.cancel(&ready.withdrawn);
        // Publish.
        if let Some(state) = state {
            tracing::info!(
                id = self.shared.id,
                role = role_name(state.role),
                term = state.term,
                coordinator = state.coordinator,
                "state changed"
            );
            self.follow_coordinator(&state);
            self.shared.leader.send_replace(state);
            self.shared.watchers.published();
            self.shared.lines.published();
        }
        Ok(result)
    }

    /// Sends a `Ready`'s messages; every answer goes back to the machine as an event of its own. (Not
    /// an `async fn`: the answers' events are futures of [`Self::apply`]'s kind, which an `async fn`
    /// of this loop could not name while its own type is being worked out.)
    fn send(&self, messages: Vec<Envelope>) {
        let node = self.clone();
        self.shared.outbox.send_all(messages, move |envelope, result| {
            let node = node.clone();
            async move {
                node.thawed().await;
                node.event(move |m, now| m.on_reply(now, envelope, result)).await;
            }
        });
    }

    /// Keeps the line to the coordinator the published `state` follows; a line that finds it dead or
    /// gone is an event for the machine. (Not an `async fn`, as [`Self::send`].)
    fn follow_coordinator(&self, state: &pb::NodeState) {
        let node = self.clone();
        self.refollow(state, move |coordinator, why| async move { node.lost_coordinator(coordinator, why).await });
    }

    /// Writes `term` to the state file (if the node has one and holds a lower term), off the async
    /// runtime, and tells the machine it is stored; `urgent`: messages wait for it.
    async fn store(&self, term: Term, urgent: bool) -> Result<(), StateError> {
        let Some(state) = self.shared.state.clone() else {
            self.lock().persisted(term);
            return Ok(());
        };
        let mut written = self.shared.written.lock().await;
        if term <= *written {
            self.lock().persisted(*written);
            return Ok(());
        }
        let path = state.path().to_path_buf();
        if urgent && tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            // On this thread: a write handed to the blocking pool is awaited, and the task that awaits it
            // waits its turn again behind every task queued meanwhile, which under an election storm is
            // tens of milliseconds before the announcement leaves.
            tokio::task::block_in_place(|| state.save(term))?;
        } else {
            match tokio::task::spawn_blocking(move || state.save(term)).await {
                Ok(result) => result?,
                Err(e) => return Err(StateError { path, reason: format!("the writer failed: {e}") }),
            }
        }
        *written = term;
        self.lock().persisted(term);
        Ok(())
    }
}

fn role_name(role: i32) -> &'static str {
    pb::Role::try_from(role).map_or("?", |r| r.as_str_name())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use synclab_core::election::{Algorithm, Message};

    use super::super::NodeConfig;
    use super::*;
    use crate::election::state::StateFile;
    use crate::proto::election::message_event::Direction;

    /// Node `id` of 1..=3, its peers at `addrs` (by default nobody listens there: what matters is that
    /// the sends start), slow timers if `slow`.
    fn node(name: &str, id: NodeId, addrs: &[(NodeId, String)], slow: bool) -> (ElectionNode, PathBuf) {
        let dir = std::env::temp_dir().join(format!("synclab-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut peers: BTreeMap<NodeId, String> = (1..=3).map(|id| (id, format!("127.0.0.1:{}", 1 + id))).collect();
        peers.extend(addrs.iter().cloned());
        let scale = if slow { 20 } else { 1 };
        let config = NodeConfig {
            id,
            peers,
            algorithm: Algorithm::Bully,
            heartbeat: Duration::from_millis(50 * scale),
            timeout: Duration::from_millis(200 * scale),
            detector: synclab_core::election::Detector::Fixed,
            rpc_timeout: Duration::from_millis(100 * scale),
            probe_timeout: Duration::from_millis(50 * scale),
            election_stagger: Duration::ZERO,
            state_dir: Some(dir.clone()),
            tls: None,
            lab: false,
        };
        (ElectionNode::new(config).unwrap(), dir)
    }

    async fn first_sent(sent: &mut tokio::sync::broadcast::Receiver<pb::MessageEvent>, to: i64, kind: &str) -> pb::MessageEvent {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let e = sent.recv().await.expect("the node's message events");
                if e.direction == Direction::Sent as i32 && e.peer == to && e.kind == kind {
                    return e;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind} to node {to} left"))
    }

    /// An event cut short by its caller (a request handler whose caller's deadline passed while the
    /// node stored the term it just won) must not take the event's messages with it: the group would
    /// never hear of the win. And the won term is in the state file before any of them leaves.
    #[tokio::test]
    async fn an_event_cut_short_by_its_caller_still_sends_its_messages_after_storing_its_won_term() {
        let (node, dir) = node("cut-short", 3, &[], false);
        let mut sent = node.shared.outbox.messages.subscribe();
        // Node 3, the highest, wins at once: it mints a term, stores it, announces it to nodes 1 and 2.
        // Polled once and dropped, as a handler is when its caller's deadline passes mid-event.
        let event = node.apply(|m, now| m.hold_election(now, "test"));
        assert!(futures::FutureExt::now_or_never(event).is_none(), "the event takes longer than one poll");
        let announcement = first_sent(&mut sent, 1, "Coordinator").await;
        assert!(announcement.term > 0);
        assert_eq!(StateFile::new(&dir, 3).load().unwrap(), announcement.term, "the won term was stored before it left");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A term learned from a message does not hold the node's messages back, and is stored all the same.
    #[tokio::test]
    async fn a_learned_term_is_stored_behind_the_messages() {
        // Node 3 accepts connections and never answers: node 2's Election to it waits out its 2 s
        // deadline, and node 2 wins (and stores the term it mints) only after that.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (node, dir) = node("learned", 2, &[(3, silent.local_addr().unwrap().to_string())], true);
        let mut sent = node.shared.outbox.messages.subscribe();
        // An Election from node 1 with term 7: node 2 answers OK and holds an election of its own.
        let reply = node.apply(|m, now| m.on_request(now, 1, Message::Election { term: 7 })).await.unwrap().unwrap();
        assert!(reply.ok);
        assert_eq!(first_sent(&mut sent, 3, "Election").await.term, 7);
        let stored = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match StateFile::new(&dir, 2).load().unwrap() {
                    0 => tokio::time::sleep(Duration::from_millis(2)).await,
                    term => return term,
                }
            }
        })
        .await;
        assert_eq!(stored, Ok(7), "the learned term, stored before the node's own election ended");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `Election`s the machine withdraws before their turn to leave never leave; the others do.
    #[tokio::test]
    async fn a_withdrawn_election_that_has_not_left_never_leaves() {
        let (node, dir) = node("withdrawn", 1, &[], false);
        let mut sent = node.shared.outbox.messages.subscribe();
        let election = |to, tag| Envelope { to, message: Message::Election { term: 0 }, tag };
        node.shared.outbox.send_paced(vec![election(3, 1001), election(2, 1002)], |_, _| async {});
        // On this single-threaded runtime the pacer has not run yet.
        node.shared.outbox.cancel(&[1002]);
        let mut to = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(e) = sent.recv().await {
                if e.direction == Direction::Sent as i32 {
                    to.push(e.peer);
                }
            }
        })
        .await;
        assert_eq!(to, vec![3]);
        assert!(node.shared.outbox.is_idle(), "nothing left in the table");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
