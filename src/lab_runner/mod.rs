//! `synclab lab run`: plays a scenario's faults against a group of election nodes — in Docker (the
//! compose stack, driven through the engine's API) or in this process (`--local`) — while recording every
//! node's state and messages, then checks the history and writes the run's folder.
//!
//! Both backends break links the same way: through each node's `Lab/SetLinks` (served with `--lab`),
//! which drops, delays or loses the node's own messages in its transport. Kills, stops and pauses are
//! the engine's in Docker and the in-process cluster's (a crash, a graceful stop, a freeze) locally.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use synclab_core::election::{Algorithm, NodeId};
use synclab_core::lab::Rng;
use synclab_core::lab::check::{self, Results};
use synclab_core::lab::history::{self, ElectionObservation, Event, Fault, MessageObservation, Op, Role, RunInfo};
use tokio::sync::watch;

use super::cluster::LocalCluster;
use crate::lock::lock;
use crate::proto::election as pb;
use crate::proto::election::election_service_client::ElectionServiceClient;
use crate::proto::lab::lab_client::LabClient;
use crate::proto::lab::{LinkFault, SetLinksRequest};
use crate::rpc::Dialer;

/// A built-in experiment.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// Election nodes it runs on in one process (in Docker: the compose file's five); 0 for the clock
    /// scenarios.
    pub local_nodes: u64,
}

/// Every built-in scenario.
pub const SCENARIOS: &[Scenario] = &[
    Scenario { name: "initial-election", about: "five nodes start; one coordinator, terms agree", local_nodes: 5 },
    Scenario {
        name: "re-election",
        about: "cut the coordinator off, reconnect it; cut it and one more off, reconnect them one by one",
        local_nodes: 5,
    },
    Scenario {
        name: "many-elections",
        about: "seven nodes (five in Docker); rounds of cutting off three (two) random nodes and reconnecting them",
        local_nodes: 7,
    },
    Scenario { name: "partition-heal", about: "split brain on purpose: two halves each elect, then heal to one", local_nodes: 5 },
    Scenario {
        name: "flaky-link",
        about: "delay and rising loss on the coordinator's links: false elections per loss rate",
        local_nodes: 5,
    },
    Scenario { name: "kill-coordinator", about: "kill the coordinator (no goodbye), then start it again", local_nodes: 5 },
    Scenario { name: "stop-coordinator", about: "stop the coordinator (SIGTERM: it says goodbye), then start it", local_nodes: 5 },
    Scenario { name: "pause-coordinator", about: "pause the coordinator (alive, silent), then unpause it", local_nodes: 5 },
    Scenario { name: "steady", about: "no faults at all: any election is a false one (default 60 s)", local_nodes: 5 },
    Scenario { name: "steady-loss", about: "1% loss on every link: the false elections it causes (default 60 s)", local_nodes: 5 },
    Scenario { name: "berkeley-faulty-clock", about: "bump a production line's clock by five minutes mid-run", local_nodes: 0 },
    Scenario {
        name: "cristian-server-restart",
        about: "stop the time server while the phone and the laptop sync, start it again",
        local_nodes: 0,
    },
    Scenario { name: "cristian-clock-bump", about: "the laptop's clock jumps five minutes between two syncs", local_nodes: 0 },
    Scenario {
        name: "nemesis",
        about: "random kills, stops, pauses, partitions (isolate, halves, bridge, majorities-ring) and link faults",
        local_nodes: 5,
    },
];

/// The scenario called `name`.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("no scenario '{0}' (see `synclab lab list`)")]
    UnknownScenario(String),
    /// The group could not be reached or started: the run's result is unknown.
    #[error("{0}")]
    Unreachable(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    History { path: PathBuf, source: history::HistoryError },
}

/// Where a run happens.
#[derive(Debug, Clone)]
pub enum Target {
    /// Nodes in this process, on loopback.
    Local,
    /// The compose project's containers (started with `--lab`); `start`: start the missing ones.
    Compose { project: String, start: bool },
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: String,
    pub out: PathBuf,
    pub seed: u64,
    pub algorithm: Algorithm,
    /// How long the scenario's main part lasts (each scenario has its own default).
    pub duration: Option<Duration>,
    pub target: Target,
    pub dialer: Dialer,
}

/// Runs a scenario, writes `history.jsonl`, `results.json` and `report.html` into `out`, and returns
/// the checkers' results.
pub async fn run(options: RunOptions) -> Result<Results, LabError> {
    let scenario = scenario(&options.scenario).ok_or_else(|| LabError::UnknownScenario(options.scenario.clone()))?;
    std::fs::create_dir_all(&options.out).map_err(|source| LabError::Io { path: options.out.clone(), source })?;
    if scenario.local_nodes == 0 {
        let rec = Recorder::new();
        rec.push(Event::Run(super::clocks::run_info(&options, scenario.name)));
        match scenario.name {
            "berkeley-faulty-clock" => super::clocks::berkeley(&options, &rec).await?,
            name => super::clocks::cristian(&options, &rec, name == "cristian-server-restart").await?,
        }
        let events = rec.take();
        write_history(&options.out, &events)?;
        return finish(&options.out, &events);
    }
    let state_dir = options.out.join("state");
    let backend = match &options.target {
        Target::Local => {
            let _ = std::fs::remove_dir_all(&state_dir);
            let ms = Duration::from_millis;
            let cluster =
                LocalCluster::start_with(options.algorithm, scenario.local_nodes, ms(50), ms(200), ms(100), state_dir.clone(), |c| {
                    c.lab = true
                })
                .await
                .map_err(|e| LabError::Unreachable(format!("cannot start the nodes: {e}")))?;
            Backend::Local(cluster)
        }
        Target::Compose { project, start } => Backend::Compose(Compose::connect(project, &ELECTION_SERVICES, *start).await?),
    };
    let nodes = backend.nodes();
    let rec = Recorder::new();
    rec.push(Event::Run(RunInfo {
        scenario: scenario.name.into(),
        seed: options.seed,
        algorithm: synclab_core::Named::as_str(options.algorithm).into(),
        backend: if matches!(options.target, Target::Local) { "local" } else { "compose" }.into(),
        nodes: nodes.clone(),
        settle_bound: 5.0,
        sync_interval: 0.0,
        spread_bound_nanos: 0,
        spread_rounds: 3,
    }));
    let (stop, stopped) = watch::channel(false);
    let addresses: BTreeMap<NodeId, String> = nodes.iter().map(|&n| (n, backend.address(n))).collect();
    let mut observers = Vec::new();
    for (&id, addr) in &addresses {
        observers.push(tokio::spawn(observe_state(options.dialer.clone(), id, addr.clone(), rec.clone(), stopped.clone())));
        observers.push(tokio::spawn(observe_messages(options.dialer.clone(), id, addr.clone(), rec.clone(), stopped.clone())));
    }
    let mut ctx = Ctx {
        backend,
        rec: rec.clone(),
        rng: Rng::new(options.seed),
        dialer: options.dialer.clone(),
        addresses,
        nodes,
        down: BTreeSet::new(),
        cut: BTreeMap::new(),
        slow: BTreeMap::new(),
        seed: options.seed,
    };
    if let Target::Compose { .. } = options.target {
        // A run starts from a healed group.
        ctx.push_all_links().await.map_err(LabError::Unreachable)?;
    }
    let outcome = play(&mut ctx, scenario.name, options.duration).await;
    // Leave the group as it was found: healed, every node running.
    ctx.restore().await;
    let _ = stop.send(true);
    for o in observers {
        let _ = tokio::time::timeout(Duration::from_secs(2), o).await;
    }
    if let Backend::Local(cluster) = ctx.backend {
        cluster.shutdown().await;
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    outcome?;
    let events = rec.take();
    write_history(&options.out, &events)?;
    finish(&options.out, &events)
}

/// Re-checks `dir/history.jsonl` and rewrites `results.json` and `report.html`.
pub fn check_dir(dir: &Path) -> Result<Results, LabError> {
    let path = dir.join("history.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|source| LabError::Io { path: path.clone(), source })?;
    let events = history::parse(&text).map_err(|source| LabError::History { path, source })?;
    finish(dir, &events)
}

pub(super) fn write_history(dir: &Path, events: &[Event]) -> Result<(), LabError> {
    let path = dir.join("history.jsonl");
    let text: String = events.iter().map(|e| history::line(e) + "\n").collect();
    std::fs::write(&path, text).map_err(|source| LabError::Io { path, source })
}

pub(super) fn finish(dir: &Path, events: &[Event]) -> Result<Results, LabError> {
    let results = check::check(events);
    let path = dir.join("results.json");
    let json = serde_json::to_string_pretty(&results).unwrap_or_default();
    std::fs::write(&path, json + "\n").map_err(|source| LabError::Io { path, source })?;
    let path = dir.join("report.html");
    std::fs::write(&path, super::report::html(events, &results)).map_err(|source| LabError::Io { path, source })?;
    Ok(results)
}

/// The history being recorded, with the run's clock.
#[derive(Clone)]
pub(super) struct Recorder {
    start: Instant,
    wall_start: SystemTime,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    pub(super) fn new() -> Self {
        Self { start: Instant::now(), wall_start: SystemTime::now(), events: Arc::new(Mutex::new(Vec::new())) }
    }

    pub(super) fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// A host timestamp (ns since the epoch) as run time.
    fn at_wall(&self, nanos: i128) -> f64 {
        let start = self.wall_start.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as i128;
        (nanos - start) as f64 / 1e9
    }

    pub(super) fn push(&self, event: Event) {
        lock(&self.events).push(event);
    }

    /// The events in time order.
    pub(super) fn take(&self) -> Vec<Event> {
        let mut events = std::mem::take(&mut *lock(&self.events));
        events.sort_by(|a, b| time_of(a).total_cmp(&time_of(b)));
        events
    }
}

fn time_of(e: &Event) -> f64 {
    match e {
        Event::Run(_) => f64::NEG_INFINITY,
        Event::Fault(f) => f.start,
        Event::Election(o) => o.time,
        Event::Message(m) => m.time,
        Event::Clock(c) => c.time,
        Event::Sync(s) => s.time,
        Event::Round(r) => r.time,
    }
}

/// How often each node's state is read.
const POLL: Duration = Duration::from_millis(20);
/// The deadline of each read: a node that misses it is recorded as unreachable.
const READ_DEADLINE: Duration = Duration::from_millis(150);

/// Records node `id`'s state each time it changes (and that it stopped answering).
async fn observe_state(dialer: Dialer, id: NodeId, addr: String, rec: Recorder, mut stop: watch::Receiver<bool>) {
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
async fn observe_messages(dialer: Dialer, id: NodeId, addr: String, rec: Recorder, mut stop: watch::Receiver<bool>) {
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

/// The group the faults act on.
enum Backend {
    Local(LocalCluster),
    Compose(Compose),
}

impl Backend {
    fn nodes(&self) -> Vec<NodeId> {
        match self {
            Backend::Local(c) => c.ids(),
            Backend::Compose(c) => c.nodes.keys().copied().collect(),
        }
    }

    fn address(&self, id: NodeId) -> String {
        match self {
            Backend::Local(c) => c.address(id).to_string(),
            Backend::Compose(c) => c.address(&format!("node-{id}")),
        }
    }

    /// Kills, stops, starts, pauses or unpauses node `id`.
    async fn lifecycle(&mut self, op: &str, id: NodeId) -> Result<(), String> {
        match self {
            Backend::Local(c) => {
                match op {
                    "kill" => c.kill(id).await,
                    "stop" => c.stop(id).await,
                    "start" => {
                        if !c.running().contains(&id) {
                            c.restart(id).await.map_err(|e| e.to_string())?;
                        }
                    }
                    "pause" => c.freeze(id, true),
                    _ => c.freeze(id, false),
                }
                Ok(())
            }
            Backend::Compose(c) => c.lifecycle(op, &format!("node-{id}")).await,
        }
    }
}

/// The compose project's services, through the Docker engine's API.
pub(super) struct Compose {
    docker: bollard::Docker,
    /// Service name → (container id, the host port its gRPC listener is published on).
    services: BTreeMap<String, (String, u16)>,
    /// Election node id → its service name.
    nodes: BTreeMap<NodeId, (String, u16)>,
}

/// The services the election scenarios break.
const ELECTION_SERVICES: [&str; 5] = ["node-1", "node-2", "node-3", "node-4", "node-5"];

/// The gRPC ports of synclab's services inside their containers.
const SERVICE_PORTS: [u16; 5] = [50051, 50052, 50053, 50054, 50061];

impl Compose {
    /// The project's containers that serve synclab; `needs` names the services the scenario cannot do
    /// without. With `start`, missing ones are started (with the lab's switch on) when this is a synclab checkout, where
    /// `scripts/compose` builds the image and starts them; they must then turn healthy within two minutes.
    pub(super) async fn connect(project: &str, needs: &[&str], start: bool) -> Result<Self, LabError> {
        match Self::find(project, needs).await {
            Err(LabError::Unreachable(why)) if start && std::path::Path::new("scripts/compose").exists() => {
                eprintln!("{why}\nstarting them: SYNCLAB_LAB=1 scripts/compose up -d {}", needs.join(" "));
                let status = std::process::Command::new("scripts/compose")
                    .env("COMPOSE_PROJECT_NAME", project)
                    .env("SYNCLAB_LAB", "1")
                    .args(["up", "-d"])
                    .args(needs)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .map_err(|e| LabError::Unreachable(format!("cannot run scripts/compose: {e}")))?;
                if !status.success() {
                    return Err(LabError::Unreachable(format!("scripts/compose up failed ({status})")));
                }
                let compose = Self::find(project, needs).await?;
                compose.wait_healthy(needs, Duration::from_secs(120)).await?;
                Ok(compose)
            }
            found => found,
        }
    }

    /// Waits until every one of `services` reports healthy.
    async fn wait_healthy(&self, services: &[&str], limit: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + limit;
        for service in services {
            let container = &self.services[*service].0;
            loop {
                let inspected = self.docker.inspect_container(container, None::<bollard::query_parameters::InspectContainerOptions>).await;
                let health = inspected.ok().and_then(|c| c.state).and_then(|s| s.health).and_then(|h| h.status);
                if health == Some(bollard::models::HealthStatusEnum::HEALTHY) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(LabError::Unreachable(format!("{service} did not turn healthy within {limit:?}")));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(())
    }

    async fn find(project: &str, needs: &[&str]) -> Result<Self, LabError> {
        let unreachable = |what: String| LabError::Unreachable(what);
        let docker =
            bollard::Docker::connect_with_local_defaults().map_err(|e| unreachable(format!("cannot reach the Docker engine: {e}")))?;
        let filters = HashMap::from([("label", vec![format!("com.docker.compose.project={project}")])]);
        let options = bollard::query_parameters::ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let containers = docker.list_containers(Some(options)).await.map_err(|e| unreachable(format!("cannot list containers: {e}")))?;
        let mut services = BTreeMap::new();
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let Some(service) = labels.get("com.docker.compose.service") else { continue };
            let port = c
                .ports
                .unwrap_or_default()
                .iter()
                .find(|p| SERVICE_PORTS.contains(&p.private_port) || p.private_port == 50062)
                .and_then(|p| p.public_port);
            let (Some(container), Some(port)) = (c.id, port) else { continue };
            services.insert(service.clone(), (container, port));
        }
        let nodes: BTreeMap<NodeId, (String, u16)> = services
            .iter()
            .filter_map(|(name, (c, port))| Some((name.strip_prefix("node-")?.parse::<NodeId>().ok()?, (c.clone(), *port))))
            .collect();
        let missing: Vec<&str> = needs.iter().copied().filter(|n| !services.contains_key(*n)).collect();
        if !missing.is_empty() {
            let what = missing.join(", ");
            return Err(unreachable(format!(
                "no running {what} in compose project '{project}': start the lab's stack with `SYNCLAB_LAB=1 scripts/compose up -d` (or name it with --project)"
            )));
        }
        Ok(Self { docker, services, nodes })
    }

    /// Where `service` is published on this host.
    pub(super) fn address(&self, service: &str) -> String {
        format!("127.0.0.1:{}", self.services.get(service).map_or(0, |s| s.1))
    }

    /// Kills, stops, starts, pauses or unpauses `service`'s container.
    pub(super) async fn lifecycle(&self, op: &str, service: &str) -> Result<(), String> {
        let container = &self.services.get(service).ok_or_else(|| format!("no container for {service}"))?.0;
        let d = &self.docker;
        let result = match op {
            "kill" => {
                d.kill_container(container, Some(bollard::query_parameters::KillContainerOptionsBuilder::new().signal("SIGKILL").build()))
                    .await
            }
            "stop" => d.stop_container(container, Some(bollard::query_parameters::StopContainerOptionsBuilder::new().t(10).build())).await,
            "start" => d.start_container(container, None::<bollard::query_parameters::StartContainerOptions>).await,
            "pause" => d.pause_container(container).await,
            _ => d.unpause_container(container).await,
        };
        result.map_err(|e| format!("{op} {service}: {e}"))
    }
}

/// A run in progress: the backend, what is broken now, and the recorder.
struct Ctx {
    backend: Backend,
    rec: Recorder,
    rng: Rng,
    dialer: Dialer,
    addresses: BTreeMap<NodeId, String>,
    nodes: Vec<NodeId>,
    /// Nodes killed, stopped or paused by the run.
    down: BTreeSet<NodeId>,
    /// For each node, the peers it cannot reach.
    cut: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// Nodes whose links are slow or lossy: (delay, jitter, loss).
    slow: BTreeMap<NodeId, (Duration, Duration, f64)>,
    seed: u64,
}

impl Ctx {
    /// Applies `op` and records it with its start and end.
    async fn fault(&mut self, op: Op) {
        let start = self.rec.now();
        let error = self.apply(&op).await.err();
        if let Some(e) = &error {
            tracing::warn!(op = %op.describe(), error = %e, "lab: fault failed");
        }
        self.rec.push(Event::Fault(Fault { start, end: self.rec.now(), op, error }));
    }

    async fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Kill { targets } | Op::Stop { targets } | Op::Start { targets } | Op::Pause { targets } | Op::Unpause { targets } => {
                for id in targets.iter().filter_map(|t| check::node_id(t)) {
                    self.backend.lifecycle(op.name(), id).await?;
                    if matches!(op, Op::Start { .. } | Op::Unpause { .. }) {
                        self.down.remove(&id);
                        // A restarted process has forgotten its link faults: give them back once it listens.
                        if matches!(op, Op::Start { .. }) && !self.links_of(id).is_empty() {
                            let deadline = Instant::now() + Duration::from_secs(10);
                            while let Err(e) = self.push_links(id).await {
                                if Instant::now() > deadline {
                                    return Err(e);
                                }
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    } else {
                        self.down.insert(id);
                    }
                }
                Ok(())
            }
            Op::Partition { groups, .. } => {
                self.cut = self
                    .nodes
                    .iter()
                    .map(|&n| {
                        let reach = |m: NodeId| groups.iter().any(|g| g.contains(&n) && g.contains(&m));
                        (n, self.nodes.iter().copied().filter(|&m| m != n && !reach(m)).collect())
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
                // Node 0: every node's links.
                let targets = if *node == 0 { self.nodes.clone() } else { vec![*node] };
                for node in targets {
                    if *delay_ms > 0.0 || *jitter_ms > 0.0 || *loss > 0.0 {
                        self.slow.insert(node, (ms(*delay_ms), ms(*jitter_ms), *loss));
                    } else {
                        self.slow.remove(&node);
                    }
                }
                self.push_all_links().await
            }
            Op::Bump { .. } | Op::Strobe { .. } | Op::Drift { .. } => Err("clock faults are not part of the election scenarios".into()),
        }
    }

    /// Node `id`'s link faults: its cuts, and delay/loss on links from or to a slow node.
    fn links_of(&self, id: NodeId) -> Vec<LinkFault> {
        let duration = |d: Duration| Some(prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 });
        self.nodes
            .iter()
            .filter(|&&peer| peer != id)
            .filter_map(|&peer| {
                let drop = self.cut.get(&id).is_some_and(|c| c.contains(&peer));
                let slow = self.slow.get(&id).or_else(|| self.slow.get(&peer)).copied();
                if !drop && slow.is_none() {
                    return None;
                }
                let (delay, jitter, loss) = slow.unwrap_or_default();
                Some(LinkFault { peer: peer as i64, drop, delay: duration(delay), jitter: duration(jitter), loss })
            })
            .collect()
    }

    async fn push_links(&self, id: NodeId) -> Result<(), String> {
        let addr = &self.addresses[&id];
        let channel = self.dialer.channel(addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
        let request = SetLinksRequest { links: self.links_of(id), seed: self.seed.wrapping_add(id) };
        let mut client = LabClient::new(channel);
        let call = client.set_links(crate::rpc::request(request, Duration::from_secs(1)));
        match tokio::time::timeout(Duration::from_secs(2), call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                Err(format!("node {id} serves no Lab service: start the nodes with --lab (SYNCLAB_LAB=1)"))
            }
            Ok(Err(s)) => Err(format!("node {id}: {}", s.message())),
            Err(_) => Err(format!("node {id} did not answer Lab/SetLinks")),
        }
    }

    /// Every running node's links; a node that is down gets its own when it starts.
    async fn push_all_links(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for &id in self.nodes.iter().filter(|n| !self.down.contains(n)) {
            if let Err(e) = self.push_links(id).await {
                errors.push(e);
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// Heals and starts everything the run broke.
    async fn restore(&mut self) {
        let down: Vec<NodeId> = self.down.iter().copied().collect();
        for id in down {
            let _ = self.backend.lifecycle("unpause", id).await;
            let _ = self.backend.lifecycle("start", id).await;
            self.down.remove(&id);
        }
        self.cut.clear();
        self.slow.clear();
        let _ = self.push_all_links().await;
    }

    /// The coordinator the latest observations show (the highest term's claimer), if any.
    fn coordinator(&self) -> Option<NodeId> {
        let events = lock(&self.rec.events);
        let mut latest: BTreeMap<NodeId, &ElectionObservation> = BTreeMap::new();
        for e in events.iter() {
            if let Event::Election(o) = e {
                latest.insert(o.node, o);
            }
        }
        latest.values().filter(|o| o.role == Role::Coordinator && !self.down.contains(&o.node)).max_by_key(|o| o.term).map(|o| o.node)
    }

    /// Waits until the running, connected nodes agree on one coordinator (or `limit` passes).
    async fn settle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.settled() {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn settled(&self) -> bool {
        let events = lock(&self.rec.events);
        let mut latest: BTreeMap<NodeId, &ElectionObservation> = BTreeMap::new();
        for e in events.iter() {
            if let Event::Election(o) = e {
                latest.insert(o.node, o);
            }
        }
        let up: Vec<&&ElectionObservation> = latest.values().filter(|o| !self.down.contains(&o.node)).collect();
        if up.len() + self.down.len() < self.nodes.len() {
            return false;
        }
        up.iter().all(|o| {
            let group: Vec<&&&ElectionObservation> =
                up.iter().filter(|p| !self.cut.get(&o.node).is_some_and(|c| c.contains(&p.node))).collect();
            group.iter().all(|p| p.coordinator == o.coordinator && p.term == o.term && o.coordinator.is_some())
        })
    }

    async fn wait(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    fn target(id: NodeId) -> Vec<String> {
        vec![format!("node-{id}")]
    }
}

/// Plays scenario `name`.
async fn play(ctx: &mut Ctx, name: &str, duration: Option<Duration>) -> Result<(), LabError> {
    let s = Duration::from_secs_f64;
    let settle = s(5.0);
    ctx.settle(s(10.0)).await;
    if ctx.coordinator().is_none() {
        return Err(LabError::Unreachable("the group elected no coordinator within 10 s".into()));
    }
    let nodes = ctx.nodes.clone();
    match name {
        "initial-election" => ctx.wait(duration.unwrap_or(s(3.0))).await,
        "re-election" => {
            let hold = duration.map_or(s(3.0), |d| d / 5);
            let c = ctx.coordinator().unwrap_or(nodes[nodes.len() - 1]);
            let others: Vec<NodeId> = nodes.iter().copied().filter(|&n| n != c).collect();
            ctx.fault(Op::Partition { shape: "isolate".into(), groups: vec![others.clone()] }).await;
            ctx.settle(settle).await;
            ctx.wait(hold).await;
            ctx.fault(Op::Heal).await;
            ctx.settle(settle).await;
            ctx.wait(hold).await;
            let c = ctx.coordinator().unwrap_or(c);
            let one = ctx.rng.choose(&nodes.iter().copied().filter(|&n| n != c).collect::<Vec<_>>(), 1)[0];
            let rest: Vec<NodeId> = nodes.iter().copied().filter(|&n| n != c && n != one).collect();
            ctx.fault(Op::Partition { shape: "isolate".into(), groups: vec![rest.clone()] }).await;
            ctx.settle(settle).await;
            ctx.wait(hold).await;
            let mut with_one = rest.clone();
            with_one.push(one);
            ctx.fault(Op::Partition { shape: "isolate".into(), groups: vec![with_one] }).await;
            ctx.settle(settle).await;
            ctx.wait(hold).await;
            ctx.fault(Op::Heal).await;
            ctx.settle(settle).await;
            ctx.wait(hold).await;
        }
        "many-elections" => {
            let rounds = duration.map_or(9, |d| (d.as_secs_f64() / 2.0).clamp(1.0, 9.0) as usize);
            let k = if nodes.len() >= 7 { 3 } else { 2 };
            for _ in 0..rounds {
                let cut = ctx.rng.choose(&nodes, k);
                let rest: Vec<NodeId> = nodes.iter().copied().filter(|n| !cut.contains(n)).collect();
                ctx.fault(Op::Partition { shape: "isolate".into(), groups: vec![rest] }).await;
                ctx.settle(settle).await;
                ctx.wait(s(0.5)).await;
                ctx.fault(Op::Heal).await;
                ctx.settle(settle).await;
                ctx.wait(s(0.5)).await;
            }
        }
        "partition-heal" => {
            let hold = duration.map_or(s(3.0), |d| d / 2);
            let mut shuffled = ctx.rng.choose(&nodes, nodes.len());
            let half = shuffled.split_off(nodes.len() / 2);
            ctx.fault(Op::Partition { shape: "halves".into(), groups: vec![shuffled, half] }).await;
            ctx.settle(settle).await;
            ctx.wait(hold).await;
            ctx.fault(Op::Heal).await;
            ctx.settle(settle).await;
            ctx.wait(hold).await;
        }
        "flaky-link" => {
            let hold = duration.map_or(s(6.0), |d| d / 4);
            let c = ctx.coordinator().unwrap_or(nodes[nodes.len() - 1]);
            for loss in [0.0, 0.1, 0.3, 0.5] {
                ctx.fault(Op::Link { node: c, delay_ms: 20.0, jitter_ms: 10.0, loss }).await;
                ctx.wait(hold).await;
            }
            ctx.fault(Op::Heal).await;
            ctx.settle(settle).await;
            ctx.wait(s(1.0)).await;
        }
        "kill-coordinator" | "stop-coordinator" | "pause-coordinator" => {
            let hold = duration.map_or(s(3.0), |d| d / 2);
            let c = ctx.coordinator().unwrap_or(nodes[nodes.len() - 1]);
            let targets = Ctx::target(c);
            let (down, up) = match name {
                "kill-coordinator" => (Op::Kill { targets: targets.clone() }, Op::Start { targets }),
                "stop-coordinator" => (Op::Stop { targets: targets.clone() }, Op::Start { targets }),
                _ => (Op::Pause { targets: targets.clone() }, Op::Unpause { targets }),
            };
            ctx.fault(down).await;
            ctx.settle(settle).await;
            ctx.wait(hold).await;
            ctx.fault(up).await;
            ctx.settle(settle).await;
            ctx.wait(hold).await;
        }
        "steady" => ctx.wait(duration.unwrap_or(s(60.0))).await,
        "steady-loss" => {
            ctx.fault(Op::Link { node: 0, delay_ms: 0.0, jitter_ms: 0.0, loss: 0.01 }).await;
            ctx.wait(duration.unwrap_or(s(60.0))).await;
            ctx.fault(Op::Heal).await;
            ctx.settle(settle).await;
        }
        "nemesis" => nemesis(ctx, duration.unwrap_or(s(30.0))).await,
        other => return Err(LabError::UnknownScenario(other.into())),
    }
    Ok(())
}

/// Random faults, each held for a while and then undone, until `length` has passed; then a heal and
/// time to settle.
async fn nemesis(ctx: &mut Ctx, length: Duration) {
    let nodes = ctx.nodes.clone();
    let end = Instant::now() + length;
    while Instant::now() < end {
        let pick = ctx.rng.below(8);
        let victim = ctx.rng.choose(&nodes, 1)[0];
        let targets = Ctx::target(victim);
        let undo = match pick {
            0 => {
                ctx.fault(Op::Kill { targets: targets.clone() }).await;
                Op::Start { targets }
            }
            1 => {
                ctx.fault(Op::Stop { targets: targets.clone() }).await;
                Op::Start { targets }
            }
            2 => {
                ctx.fault(Op::Pause { targets: targets.clone() }).await;
                Op::Unpause { targets }
            }
            3 => {
                let rest: Vec<NodeId> = nodes.iter().copied().filter(|&n| n != victim).collect();
                ctx.fault(Op::Partition { shape: "isolate".into(), groups: vec![rest] }).await;
                Op::Heal
            }
            4 => {
                let mut order = ctx.rng.choose(&nodes, nodes.len());
                let half = order.split_off(nodes.len() / 2);
                ctx.fault(Op::Partition { shape: "halves".into(), groups: vec![order, half] }).await;
                Op::Heal
            }
            5 => {
                // A bridge: two halves, and one node that sees both.
                let mut order = ctx.rng.choose(&nodes, nodes.len());
                let bridge = order.pop().unwrap_or(victim);
                let mut half = order.split_off(order.len() / 2);
                order.push(bridge);
                half.push(bridge);
                ctx.fault(Op::Partition { shape: "bridge".into(), groups: vec![order, half] }).await;
                Op::Heal
            }
            6 => {
                // Majorities in a ring: each node reaches only its two neighbours (with itself, a
                // majority of five), and no two nodes see the same majority.
                let order = ctx.rng.choose(&nodes, nodes.len());
                let pairs = (0..order.len()).map(|i| vec![order[i], order[(i + 1) % order.len()]]).collect();
                ctx.fault(Op::Partition { shape: "majorities-ring".into(), groups: pairs }).await;
                Op::Heal
            }
            _ => {
                let loss = [0.05, 0.2, 0.4][ctx.rng.below(3) as usize];
                let delay_ms = 10.0 + ctx.rng.below(30) as f64;
                ctx.fault(Op::Link { node: victim, delay_ms, jitter_ms: 10.0, loss }).await;
                Op::Heal
            }
        };
        let hold = Duration::from_millis(1000 + ctx.rng.below(2000));
        ctx.wait(hold).await;
        ctx.fault(undo).await;
        ctx.settle(Duration::from_secs(5)).await;
        let rest = Duration::from_millis(500 + ctx.rng.below(1000));
        ctx.wait(rest).await;
    }
    ctx.settle(Duration::from_secs(5)).await;
    ctx.wait(Duration::from_secs(1)).await;
}

/// The compose project name Docker Compose derives from a folder (lower case, letters and digits).
pub fn default_project(dir: &Path) -> String {
    let name = dir.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
}

/// One line per scenario, for `synclab lab list`.
pub fn list() -> String {
    let width = SCENARIOS.iter().map(|s| s.name.len()).max().unwrap_or(0);
    SCENARIOS.iter().map(|s| format!("{:<width$}  {}\n", s.name, s.about)).collect()
}

/// A summary of results, for the terminal.
pub fn summary(results: &Results) -> String {
    let mut out = String::new();
    for (name, r) in &results.checkers {
        let verdict = match r.valid {
            check::Validity::Valid => "valid",
            check::Validity::Invalid => "INVALID",
            check::Validity::Unknown => "unknown",
        };
        out.push_str(&format!("  {name:<18} {verdict:<8} {}\n", figures(r, "=").join(" ")));
        for v in &r.violations {
            out.push_str(&format!("      {v}\n"));
        }
        for w in r.figures.get("degraded_windows").and_then(|w| w.as_array()).into_iter().flatten() {
            let after = w["after"].as_str().unwrap_or("");
            out.push_str(&format!("      while {after}: {} elections in {:.1} s\n", w["elections"], w["seconds"].as_f64().unwrap_or(0.0)));
        }
    }
    let overall = match results.valid {
        check::Validity::Valid => "valid",
        check::Validity::Invalid => "INVALID",
        check::Validity::Unknown => "unknown",
    };
    out.push_str(&format!("  {:<18} {overall}\n", "overall"));
    out
}

/// A checker's single-valued figures as `name=value` (lists are left to the report's plots), fractions
/// to three decimals.
pub(crate) fn figures(result: &check::CheckResult, equals: &str) -> Vec<String> {
    result
        .figures
        .iter()
        .filter(|(_, v)| !v.is_array())
        .map(|(k, v)| match v.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{k}{equals}{f:.3}"),
            _ => format!("{k}{equals}{v}"),
        })
        .collect()
}
