//! Plays a plan against a backend: resolves its symbolic targets against the coordinator found, applies
//! each fault and records it, waits and settles on the backend's time, and keeps what is broken (who
//! is down, which links are cut or slow) so that links can be given back to a restarted member and
//! everything healed when the run ends.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use synclab_core::election::NodeId;
use synclab_core::lab::check;
use synclab_core::lab::history::{Event, Fault, Op, Role};
use synclab_core::lab::plan::{Plan, Step};

use super::backend::{Backend, Lifecycle, Link, LinkTable};
use super::error::LabError;
use super::observe::POLL;
use super::record::Recorder;

/// A run in progress: the backend, what is broken now, and the recorder.
pub struct Player<B: Backend> {
    backend: B,
    rec: Recorder,
    members: Vec<NodeId>,
    /// What [`synclab_core::lab::plan::Member::Coordinator`] names now.
    coordinator: NodeId,
    /// Members killed, stopped or paused by the run.
    down: BTreeSet<NodeId>,
    /// For each member, the peers it cannot reach.
    cut: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// Members whose links are slow or lossy.
    slow: BTreeMap<NodeId, Link>,
    seed: u64,
}

impl<B: Backend> Player<B> {
    /// A player for `backend`'s group; `seed` seeds the members' own random draws (link loss).
    pub fn new(backend: B, rec: Recorder, seed: u64) -> Self {
        let members = backend.members();
        let coordinator = members.last().copied().unwrap_or(0);
        Self { backend, rec, members, coordinator, down: BTreeSet::new(), cut: BTreeMap::new(), slow: BTreeMap::new(), seed }
    }

    /// The backend, for its shutdown.
    pub fn into_backend(self) -> B {
        self.backend
    }

    /// Plays every step of `plan`; fails only when the group never elects a first coordinator.
    pub async fn play(&mut self, plan: &Plan) -> Result<(), LabError> {
        for step in &plan.steps {
            match step {
                Step::AwaitCoordinator { limit } => {
                    self.settle(*limit).await;
                    if self.seen_coordinator().is_none() {
                        return Err(LabError::NoCoordinator { within: *limit });
                    }
                }
                Step::FindCoordinator => {
                    if let Some(c) = self.seen_coordinator() {
                        self.coordinator = c;
                    }
                }
                Step::Fault(action) => match action.resolve(&self.members, self.coordinator) {
                    Some(op) => self.fault(op).await,
                    None => tracing::warn!(?action, "lab: a planned fault names no member of this group"),
                },
                Step::Settle { limit } => self.settle(*limit).await,
                Step::Wait { seconds } => self.backend.sleep(Duration::from_secs_f64(*seconds)).await,
            }
        }
        Ok(())
    }

    /// Applies `op` and records it with its start and end (and its error, if it failed: the run goes
    /// on, and the checkers see what really happened).
    async fn fault(&mut self, op: Op) {
        let start = self.rec.now();
        let error = self.apply(&op).await.err();
        if let Some(e) = &error {
            tracing::warn!(op = %op.describe(), error = %e, "lab: fault failed");
        }
        self.rec.push(Event::Fault(Fault { start, end: self.rec.now(), op, error: error.map(|e| e.to_string()) }));
    }

    async fn apply(&mut self, op: &Op) -> Result<(), LabError> {
        let lifecycle = match op {
            Op::Kill { targets } => Some((Lifecycle::Kill, targets)),
            Op::Stop { targets } => Some((Lifecycle::Stop, targets)),
            Op::Start { targets } => Some((Lifecycle::Start, targets)),
            Op::Pause { targets } => Some((Lifecycle::Pause, targets)),
            Op::Unpause { targets } => Some((Lifecycle::Unpause, targets)),
            _ => None,
        };
        if let Some((action, targets)) = lifecycle {
            for id in targets.iter().filter_map(|t| check::node_id(t)) {
                self.backend.lifecycle(action, id).await?;
                if matches!(action, Lifecycle::Start | Lifecycle::Unpause) {
                    self.down.remove(&id);
                    // A restarted process has forgotten its link faults: give them back once it listens.
                    let table = self.table(id);
                    if action == Lifecycle::Start && !table.links.is_empty() {
                        let deadline = self.rec.now() + 10.0;
                        while let Err(e) = self.backend.set_links(id, &table).await {
                            if self.rec.now() > deadline {
                                return Err(e);
                            }
                            self.backend.sleep(Duration::from_millis(100)).await;
                        }
                    }
                } else {
                    self.down.insert(id);
                }
            }
            return Ok(());
        }
        match op {
            Op::Partition { groups, .. } => {
                self.cut = self
                    .members
                    .iter()
                    .map(|&n| {
                        let reach = |m: NodeId| groups.iter().any(|g| g.contains(&n) && g.contains(&m));
                        (n, self.members.iter().copied().filter(|&m| m != n && !reach(m)).collect())
                    })
                    .collect();
                self.push_all_links().await
            }
            Op::Heal => {
                self.cut.clear();
                self.slow.clear();
                self.push_all_links().await
            }
            Op::Link { node, delay_ms, jitter_ms, loss } => {
                let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1e3);
                // Node 0: every member's links.
                let targets = if *node == 0 { self.members.clone() } else { vec![*node] };
                for node in targets {
                    if *delay_ms > 0.0 || *jitter_ms > 0.0 || *loss > 0.0 {
                        self.slow.insert(node, Link { drop: false, delay: ms(*delay_ms), jitter: ms(*jitter_ms), loss: *loss });
                    } else {
                        self.slow.remove(&node);
                    }
                }
                self.push_all_links().await
            }
            // Lifecycle operations were applied above; clock faults are not planned for election groups.
            _ => Ok(()),
        }
    }

    /// Member `id`'s faulty links: its cuts, and delay/loss on links from or to a slow member.
    fn table(&self, id: NodeId) -> LinkTable {
        let links = self
            .members
            .iter()
            .filter(|&&peer| peer != id)
            .filter_map(|&peer| {
                let drop = self.cut.get(&id).is_some_and(|c| c.contains(&peer));
                let slow = self.slow.get(&id).or_else(|| self.slow.get(&peer)).copied();
                if !drop && slow.is_none() {
                    return None;
                }
                Some((peer, Link { drop, ..slow.unwrap_or_default() }))
            })
            .collect();
        LinkTable { seed: self.seed.wrapping_add(id), links }
    }

    /// Every running member's links; a member that is down gets its own when it starts.
    pub async fn push_all_links(&mut self) -> Result<(), LabError> {
        let mut errors = Vec::new();
        let up: Vec<NodeId> = self.members.iter().copied().filter(|n| !self.down.contains(n)).collect();
        for id in up {
            let table = self.table(id);
            if let Err(e) = self.backend.set_links(id, &table).await {
                errors.push(e);
            }
        }
        LabError::all(errors)
    }

    /// Heals and starts everything the run broke.
    pub async fn restore(&mut self) {
        let down: Vec<NodeId> = self.down.iter().copied().collect();
        for id in down {
            let _ = self.backend.lifecycle(Lifecycle::Unpause, id).await;
            let _ = self.backend.lifecycle(Lifecycle::Start, id).await;
            self.down.remove(&id);
        }
        self.cut.clear();
        self.slow.clear();
        let _ = self.push_all_links().await;
    }

    /// The coordinator the latest observations show (the highest term's claimer that is not down), if
    /// any.
    fn seen_coordinator(&self) -> Option<NodeId> {
        let latest = self.rec.latest_elections();
        latest.values().filter(|o| o.role == Role::Coordinator && !self.down.contains(&o.node)).max_by_key(|o| o.term).map(|o| o.node)
    }

    /// Waits until the running, connected members agree on one coordinator (or `limit` seconds pass).
    async fn settle(&self, limit: f64) {
        let deadline = self.rec.now() + limit;
        while self.rec.now() < deadline {
            if self.settled() {
                return;
            }
            self.backend.sleep(POLL).await;
        }
    }

    fn settled(&self) -> bool {
        let latest = self.rec.latest_elections();
        let up: Vec<_> = latest.values().filter(|o| !self.down.contains(&o.node)).collect();
        if up.len() + self.down.len() < self.members.len() {
            return false;
        }
        up.iter().all(|o| {
            let group: Vec<_> = up.iter().filter(|p| !self.cut.get(&o.node).is_some_and(|c| c.contains(&p.node))).collect();
            group.iter().all(|p| p.coordinator == o.coordinator && p.term == o.term && o.coordinator.is_some())
        })
    }
}
