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

use super::backend::{Backend, HostFault, Lifecycle, Link, LinkTable};
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
    /// Hosts cut off or frozen by the run: by the member named, the members there.
    hosts: BTreeMap<NodeId, (HostFault, Vec<NodeId>)>,
    /// One-way cuts: requests from the first to the second are lost.
    blocked: BTreeSet<(NodeId, NodeId)>,
    seed: u64,
}

impl<B: Backend> Player<B> {
    /// A player for `backend`'s group; `seed` seeds the members' own random draws (link loss).
    pub fn new(backend: B, rec: Recorder, seed: u64) -> Self {
        let members = backend.members();
        let coordinator = members.last().copied().unwrap_or(0);
        Self {
            backend,
            rec,
            members,
            coordinator,
            down: BTreeSet::new(),
            cut: BTreeMap::new(),
            slow: BTreeMap::new(),
            hosts: BTreeMap::new(),
            blocked: BTreeSet::new(),
            seed,
        }
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
    async fn fault(&mut self, mut op: Op) {
        let start = self.rec.now();
        let error = match self.host(&mut op).await {
            Some(result) => result.err(),
            None => self.apply(&op).await.err(),
        };
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
                self.blocked.clear();
                self.push_all_links().await
            }
            Op::Block { from, to } => {
                self.blocked.extend(from.iter().flat_map(|&f| to.iter().map(move |&t| (f, t))));
                self.push_all_links().await
            }
            Op::Wipe { targets } => {
                for id in targets.iter().filter_map(|t| check::node_id(t)) {
                    self.backend.wipe(id).await?;
                }
                Ok(())
            }
            Op::Slow { targets, delay_ms } => {
                let by = Duration::from_secs_f64(delay_ms.max(0.0) / 1e3);
                for id in targets.iter().filter_map(|t| check::node_id(t)) {
                    self.backend.slow(id, by).await?;
                }
                Ok(())
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

    /// Carries out a host fault (`None` for any other `op`), and names in `op` every member on the host.
    async fn host(&mut self, op: &mut Op) -> Option<Result<(), LabError>> {
        let (fault, targets) = match op {
            Op::HostDown { targets } => (HostFault::Down, targets),
            Op::HostUp { targets } => (HostFault::Up, targets),
            Op::HostFreeze { targets } => (HostFault::Freeze, targets),
            Op::HostThaw { targets } => (HostFault::Thaw, targets),
            _ => return None,
        };
        let id = targets.first().and_then(|t| check::node_id(t))?;
        let result = self.backend.host_fault(fault, id).await;
        Some(result.map(|mut on_host| {
            // The member named first, then the others on its host.
            on_host.retain(|&n| n != id);
            on_host.insert(0, id);
            *targets = on_host.iter().map(|n| format!("node-{n}")).collect();
            match fault {
                HostFault::Down | HostFault::Freeze => {
                    self.down.extend(on_host.iter().copied());
                    self.hosts.insert(id, (fault, on_host));
                }
                HostFault::Up | HostFault::Thaw => {
                    if let Some((_, was)) = self.hosts.remove(&id) {
                        for n in was {
                            self.down.remove(&n);
                        }
                    }
                }
            }
        }))
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
                // One way: this member's requests to the peer are lost; the peer's still arrive.
                let blocked = self.blocked.contains(&(id, peer));
                if !drop && slow.is_none() && !blocked {
                    return None;
                }
                let link = Link { drop, ..slow.unwrap_or_default() };
                Some((peer, if blocked { Link { loss: 1.0, ..link } } else { link }))
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
        for (id, (fault, on_host)) in std::mem::take(&mut self.hosts) {
            let undo = if fault == HostFault::Down { HostFault::Up } else { HostFault::Thaw };
            let _ = self.backend.host_fault(undo, id).await;
            for n in on_host {
                self.down.remove(&n);
            }
        }
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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use synclab_core::lab::history::ElectionObservation;
    use synclab_core::lab::{Scenario, plan};

    use super::*;
    use crate::lab_runner::backend::Endpoint;
    use crate::lab_runner::record::RunClock;

    /// A backend with no process, no gRPC and no real time, as a simulator would be: it keeps what it
    /// was asked to do, and its clock moves only when the player sleeps.
    #[derive(Clone, Default)]
    struct Fake {
        calls: Arc<Mutex<Vec<(Lifecycle, NodeId)>>>,
        /// Host faults asked for; members 4 and 5 share a host.
        hosts: Arc<Mutex<Vec<(HostFault, NodeId)>>>,
        links: Arc<Mutex<BTreeMap<NodeId, LinkTable>>>,
        nanos: Arc<AtomicU64>,
    }

    impl Backend for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }

        fn members(&self) -> Vec<NodeId> {
            vec![1, 2, 3, 4, 5]
        }

        fn endpoint(&self, _: NodeId) -> Option<Endpoint> {
            None
        }

        async fn lifecycle(&mut self, action: Lifecycle, id: NodeId) -> Result<(), LabError> {
            self.calls.lock().unwrap().push((action, id));
            Ok(())
        }

        async fn host_fault(&mut self, fault: HostFault, id: NodeId) -> Result<Vec<NodeId>, LabError> {
            self.hosts.lock().unwrap().push((fault, id));
            Ok(if id >= 4 { vec![4, 5] } else { vec![id] })
        }

        async fn set_links(&mut self, id: NodeId, table: &LinkTable) -> Result<(), LabError> {
            self.links.lock().unwrap().insert(id, table.clone());
            Ok(())
        }

        fn clock(&self) -> RunClock {
            let nanos = self.nanos.clone();
            RunClock::virtual_time(move || Duration::from_nanos(nanos.load(Ordering::SeqCst)))
        }

        fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
            self.nanos.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
            std::future::ready(())
        }
    }

    /// A recorder on the fake's clock that has seen node 5 rule the group in term 1.
    fn settled_group(fake: &Fake) -> Recorder {
        let rec = Recorder::new(fake.clock());
        for node in 1..=5 {
            let role = if node == 5 { Role::Coordinator } else { Role::Follower };
            rec.push(Event::Election(ElectionObservation { time: 0.0, node, role, term: 1, coordinator: Some(5) }));
        }
        rec
    }

    fn faults(rec: &Recorder) -> Vec<Fault> {
        rec.take().into_iter().filter_map(|e| if let Event::Fault(f) = e { Some(f) } else { None }).collect()
    }

    /// Pins that a plan plays through the backend alone: the coordinator found is the one killed and
    /// started, each planned fault is one recorded fault, and the waits pass on the backend's clock
    /// (exactly the plan's two holds, with no real sleeping).
    #[tokio::test]
    async fn a_plan_plays_through_the_backend_and_its_clock() {
        let fake = Fake::default();
        let rec = settled_group(&fake);
        let plan = plan(Scenario::KillCoordinator, 1, &fake.members(), Some(Duration::from_secs(2))).unwrap();
        let mut player = Player::new(fake.clone(), rec.clone(), 1);
        player.play(&plan).await.unwrap();
        assert_eq!(*fake.calls.lock().unwrap(), [(Lifecycle::Kill, 5), (Lifecycle::Start, 5)]);
        assert_eq!(rec.now(), 2.0, "two holds of 1 s on the virtual clock");
        let faults = faults(&rec);
        assert_eq!(faults.len(), plan.faults());
        assert!(faults.iter().all(|f| f.error.is_none()), "{faults:?}");
    }

    /// Pins that the nemesis records exactly its planned faults and that the player's restore leaves
    /// every member's links healed and every member it broke started again.
    #[tokio::test]
    async fn the_nemesis_records_its_planned_faults_and_restore_heals_all() {
        let fake = Fake::default();
        let rec = settled_group(&fake);
        let plan = plan(Scenario::Nemesis, 3, &fake.members(), Some(Duration::from_secs(60))).unwrap();
        let mut player = Player::new(fake.clone(), rec.clone(), 3);
        player.play(&plan).await.unwrap();
        player.restore().await;
        assert_eq!(faults(&rec).len(), plan.faults());
        let links = fake.links.lock().unwrap();
        assert_eq!(links.len(), 5, "every member's links were set");
        assert!(links.values().all(|t| t.links.is_empty()), "healed: {links:?}");
    }

    /// Pins that a host fault hits the coordinator's host, names every member there in the history,
    /// and that a run cut short leaves no host down: restore brings it back.
    #[tokio::test]
    async fn a_host_fault_names_every_member_on_the_host_and_restore_undoes_it() {
        let fake = Fake::default();
        let rec = settled_group(&fake);
        let plan = plan(Scenario::HostDown, 1, &fake.members(), Some(Duration::from_secs(2))).unwrap();
        let mut player = Player::new(fake.clone(), rec.clone(), 1);
        player.play(&plan).await.unwrap();
        assert_eq!(*fake.hosts.lock().unwrap(), [(HostFault::Down, 5), (HostFault::Up, 5)]);
        let faults = faults(&rec);
        assert_eq!(faults[0].op, Op::HostDown { targets: vec!["node-5".into(), "node-4".into()] });
        assert!(faults.iter().all(|f| f.error.is_none()), "{faults:?}");

        // Frozen and never thawed by the plan: restore thaws it.
        let fake = Fake::default();
        let mut player = Player::new(fake.clone(), settled_group(&fake), 1);
        let mut op = Op::HostFreeze { targets: vec!["node-4".into()] };
        assert!(player.host(&mut op).await.unwrap().is_ok());
        player.restore().await;
        assert_eq!(*fake.hosts.lock().unwrap(), [(HostFault::Freeze, 4), (HostFault::Thaw, 4)]);
        assert!(player.down.is_empty());
    }

    /// Pins the start's failure: a group that shows no coordinator fails the run after the plan's
    /// limit, measured on the backend's clock.
    #[tokio::test]
    async fn no_first_coordinator_fails_the_run_on_the_backends_clock() {
        let fake = Fake::default();
        let rec = Recorder::new(fake.clock());
        let plan = plan(Scenario::Steady, 1, &fake.members(), None).unwrap();
        let e = Player::new(fake.clone(), rec.clone(), 1).play(&plan).await.unwrap_err();
        assert!(matches!(e, LabError::NoCoordinator { .. }), "{e}");
        assert!(rec.now() >= 10.0 && rec.now() < 10.1, "{}", rec.now());
        assert!(fake.calls.lock().unwrap().is_empty());
    }
}
