//! A Docker Swarm stack as a lab backend (`synclab lab run --swarm`): the election service's tasks found
//! on whichever node's engine runs them (their slot is the member's id), each driven through that
//! engine's API, reached on the port its node publishes in host mode. A killed or stopped task comes
//! back when the swarm restarts it, in a new container at a new address: `Start` waits for it. Two
//! faults exist only here, on the node a member runs on: the node's link cut (every task on it gone
//! without a FIN) and every container on it paused ([`HostFault`]).
//!
//! The engines default to those `scripts/swarm up` made (the host's, and one per worker in
//! `/run/synclab-swarm`); on real hosts, `--engines` lists them. Cutting a node's link is done on the
//! veth pair `scripts/swarm` made, so only there.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use synclab_core::election::NodeId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use super::Engine;
use super::{Backend, Endpoint, HostFault, Lifecycle};
use crate::lab_runner::error::LabError;
use crate::lab_runner::observe::{observe_messages, observe_state};
use crate::lab_runner::record::Recorder;
use crate::rpc::Dialer;

/// The election nodes' gRPC port inside their containers.
const ELECTION_PORT: u16 = 50054;
/// How long `Start` waits for the swarm to restart a task.
const RESTART_WAIT: Duration = Duration::from_secs(30);

/// Parses `--engines`: `NAME=ENDPOINT@ADDRESS,...`, e.g.
/// `a=tcp://10.0.0.1:2376@10.0.0.1,b=unix:///var/run/docker.sock@10.0.0.2`.
pub fn parse_engines(text: &str) -> Result<Vec<Engine>, String> {
    let mut engines = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, rest) = entry.split_once('=').ok_or_else(|| format!("'{entry}' is not NAME=ENDPOINT@ADDRESS"))?;
        let (endpoint, address) = rest.rsplit_once('@').ok_or_else(|| format!("'{entry}' is not NAME=ENDPOINT@ADDRESS"))?;
        if name.is_empty() || address.is_empty() || !(endpoint.starts_with("unix://") || endpoint.starts_with("tcp://")) {
            return Err(format!("'{entry}': the endpoint must be unix://PATH or tcp://HOST:PORT, with a name and an address"));
        }
        engines.push(Engine { name: name.into(), endpoint: endpoint.into(), address: address.into() });
    }
    if engines.is_empty() {
        return Err("no engines given".into());
    }
    Ok(engines)
}

/// The engines `scripts/swarm up` made: the host's (z0) and one per worker.
pub fn local_engines() -> Vec<Engine> {
    let mut engines = vec![Engine { name: "z0".into(), endpoint: "unix:///var/run/docker.sock".into(), address: "10.231.0.1".into() }];
    let workers = std::fs::read_to_string("/run/synclab-swarm/workers").unwrap_or_default();
    for k in workers.split_whitespace().filter_map(|k| k.parse::<u8>().ok()) {
        engines.push(Engine {
            name: format!("z{k}"),
            endpoint: format!("unix:///run/synclab-sw{k}/docker.sock"),
            address: format!("10.231.0.1{k}"),
        });
    }
    engines
}

/// One election task: the engine (index) that runs it, its container, its published port.
#[derive(Debug, Clone)]
struct Task {
    engine: usize,
    container: String,
    port: u16,
}

/// The stack's election service, through every node's engine.
pub struct Swarm {
    stack: String,
    engines: Vec<Engine>,
    dockers: Vec<bollard::Docker>,
    tasks: BTreeMap<NodeId, Task>,
    /// Every member's address now, for the observers (a restarted task moves).
    addresses: Arc<Mutex<BTreeMap<NodeId, String>>>,
    dialer: Dialer,
}

impl Swarm {
    /// The running tasks of `stack`'s election service on `engines`.
    pub async fn connect(stack: &str, engines: Vec<Engine>, dialer: Dialer) -> Result<Self, LabError> {
        let mut dockers = Vec::new();
        for e in &engines {
            let docker = match e.endpoint.strip_prefix("unix://") {
                Some(path) => bollard::Docker::connect_with_unix(path, 30, bollard::API_DEFAULT_VERSION),
                None => bollard::Docker::connect_with_http(&e.endpoint, 30, bollard::API_DEFAULT_VERSION),
            }
            .map_err(|source| LabError::Docker { what: format!("cannot reach the engine of {} ({})", e.name, e.endpoint), source })?;
            dockers.push(docker);
        }
        let addresses = Arc::new(Mutex::new(BTreeMap::new()));
        let mut swarm = Self { stack: stack.to_string(), engines, dockers, tasks: BTreeMap::new(), addresses, dialer };
        swarm.refresh().await?;
        if swarm.tasks.len() < 2 {
            return Err(LabError::Missing {
                services: format!("{stack}_election tasks (found {})", swarm.tasks.len()),
                project: stack.into(),
            });
        }
        Ok(swarm)
    }

    /// Finds the running election tasks again (a restarted task has a new container and port).
    async fn refresh(&mut self) -> Result<(), LabError> {
        let service = format!("{}_election", self.stack);
        let filters =
            HashMap::from([("label", vec![format!("com.docker.swarm.service.name={service}")]), ("status", vec!["running".into()])]);
        let mut tasks = BTreeMap::new();
        for (i, docker) in self.dockers.iter().enumerate() {
            let options = bollard::query_parameters::ListContainersOptionsBuilder::new().filters(&filters).build();
            let containers = match docker.list_containers(Some(options)).await {
                Ok(c) => c,
                // A node whose engine does not answer has no task the lab can drive.
                Err(e) => {
                    tracing::warn!(engine = %self.engines[i].name, error = %e, "lab: cannot list the node's containers");
                    continue;
                }
            };
            for c in containers {
                let labels = c.labels.unwrap_or_default();
                // synclab_election.3.<task id>: slot 3 is node 3.
                let slot =
                    labels.get("com.docker.swarm.task.name").and_then(|n| n.split('.').nth(1)).and_then(|s| s.parse::<NodeId>().ok());
                let port = c.ports.unwrap_or_default().iter().find(|p| p.private_port == ELECTION_PORT).and_then(|p| p.public_port);
                if let (Some(slot), Some(port), Some(container)) = (slot, port, c.id) {
                    tasks.insert(slot, Task { engine: i, container, port });
                }
            }
        }
        let addresses = tasks.iter().map(|(&id, t)| (id, format!("{}:{}", self.engines[t.engine].address, t.port))).collect();
        *crate::lock::lock(&self.addresses) = addresses;
        self.tasks = tasks;
        Ok(())
    }

    /// The node that runs member `id`.
    pub fn node_of(&self, id: NodeId) -> Option<&str> {
        Some(self.engines[self.tasks.get(&id)?.engine].name.as_str())
    }

    fn task(&self, id: NodeId) -> Result<&Task, LabError> {
        self.tasks.get(&id).ok_or_else(|| LabError::NoContainer { service: format!("{}_election slot {id}", self.stack) })
    }

    /// Waits until the swarm runs a task for `id` again.
    async fn restarted(&mut self, id: NodeId, old: Option<String>) -> Result<(), LabError> {
        let deadline = Instant::now() + RESTART_WAIT;
        loop {
            self.refresh().await?;
            if self.tasks.get(&id).is_some_and(|t| Some(&t.container) != old.as_ref()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LabError::Unhealthy {
                    service: format!("{}_election slot {id} (not restarted: restarts off? SYNCLAB_RESTART_CONDITION)", self.stack),
                    limit: RESTART_WAIT,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `ip link set DEV up|down` (the veth pair `scripts/swarm` made for a worker).
    fn link(&self, engine: usize, up: bool) -> Result<(), LabError> {
        let name = &self.engines[engine].name;
        let Some(k) = name.strip_prefix('z').filter(|k| *k != "0" && k.parse::<u8>().is_ok()) else {
            return Err(LabError::NoHostFault { node: name.clone(), why: "only a worker of scripts/swarm can be cut off here".into() });
        };
        let dev = format!("slv{k}");
        let status = std::process::Command::new("ip")
            .args(["link", "set", &dev, if up { "up" } else { "down" }])
            .status()
            .map_err(|source| LabError::Start { program: "ip".into(), source })?;
        if !status.success() {
            return Err(LabError::NoHostFault { node: name.clone(), why: format!("ip link set {dev} failed ({status})") });
        }
        Ok(())
    }
}

impl Backend for Swarm {
    fn name(&self) -> &'static str {
        "swarm"
    }

    fn members(&self) -> Vec<NodeId> {
        self.tasks.keys().copied().collect()
    }

    fn endpoint(&self, id: NodeId) -> Option<Endpoint> {
        let task = self.tasks.get(&id)?;
        Some(Endpoint { address: format!("{}:{}", self.engines[task.engine].address, task.port), dialer: self.dialer.clone() })
    }

    fn reused(&self) -> bool {
        true
    }

    /// As by default, but each member's observers move with it when the swarm restarts its task at a
    /// new address.
    fn observe(&self, rec: &Recorder, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        self.members()
            .into_iter()
            .map(|id| {
                let (addresses, dialer, rec, mut stop) = (self.addresses.clone(), self.dialer.clone(), rec.clone(), stop.clone());
                tokio::spawn(async move {
                    let now = || crate::lock::lock(&addresses).get(&id).cloned();
                    while !*stop.borrow() {
                        // A task that is down (killed, or between the swarm's restarts) has no address
                        // for a while: wait for its next one rather than stop observing the node.
                        let Some(address) = now() else {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                                _ = stop.changed() => {}
                            }
                            continue;
                        };
                        let (halt, halted) = watch::channel(false);
                        let state = tokio::spawn(observe_state(dialer.clone(), id, address.clone(), rec.clone(), halted.clone()));
                        let messages = tokio::spawn(observe_messages(dialer.clone(), id, address.clone(), rec.clone(), halted));
                        while !*stop.borrow() && now().as_deref() == Some(address.as_str()) {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                                _ = stop.changed() => {}
                            }
                        }
                        let _ = halt.send(true);
                        let _ = tokio::join!(state, messages);
                    }
                })
            })
            .collect()
    }

    async fn lifecycle(&mut self, action: Lifecycle, id: NodeId) -> Result<(), LabError> {
        if action == Lifecycle::Start {
            // The swarm restarts a task that ended; one that runs is left as it is.
            let old = self.tasks.get(&id).map(|t| t.container.clone());
            return self.restarted(id, old).await;
        }
        let task = self.task(id)?.clone();
        let d = &self.dockers[task.engine];
        let c = &task.container;
        let result = match action {
            Lifecycle::Kill => {
                d.kill_container(c, Some(bollard::query_parameters::KillContainerOptionsBuilder::new().signal("SIGKILL").build())).await
            }
            Lifecycle::Stop => d.stop_container(c, Some(bollard::query_parameters::StopContainerOptionsBuilder::new().t(10).build())).await,
            Lifecycle::Pause => d.pause_container(c).await,
            Lifecycle::Unpause => d.unpause_container(c).await,
            Lifecycle::Start => Ok(()),
        };
        result.map_err(|source| LabError::Docker {
            what: format!("{} node {id} on {}", action.as_str(), self.engines[task.engine].name),
            source,
        })
    }

    async fn host_fault(&mut self, fault: HostFault, id: NodeId) -> Result<Vec<NodeId>, LabError> {
        let engine = self.task(id)?.engine;
        let on_it: Vec<NodeId> = self.tasks.iter().filter(|(_, t)| t.engine == engine).map(|(&i, _)| i).collect();
        match fault {
            HostFault::Down => self.link(engine, false)?,
            HostFault::Up => self.link(engine, true)?,
            HostFault::Freeze | HostFault::Thaw => {
                let d = &self.dockers[engine];
                let filters = HashMap::from([("label", vec![format!("com.docker.stack.namespace={}", self.stack)])]);
                let options = bollard::query_parameters::ListContainersOptionsBuilder::new().filters(&filters).build();
                let what = |source| LabError::Docker { what: format!("list containers on {}", self.engines[engine].name), source };
                for c in d.list_containers(Some(options)).await.map_err(what)? {
                    let Some(container) = c.id else { continue };
                    let result = if fault == HostFault::Freeze {
                        d.pause_container(&container).await
                    } else {
                        d.unpause_container(&container).await
                    };
                    if let Err(e) = result {
                        tracing::warn!(container, error = %e, "lab: cannot pause or unpause a container");
                    }
                }
            }
        }
        Ok(on_it)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_are_name_endpoint_and_address() {
        let engines = parse_engines("a=tcp://10.0.0.1:2376@10.0.0.1, b=unix:///var/run/docker.sock@10.0.0.2").unwrap();
        assert_eq!(engines[1], Engine { name: "b".into(), endpoint: "unix:///var/run/docker.sock".into(), address: "10.0.0.2".into() });
        for bad in ["", "a", "a=tcp://x", "a=http://x@y", "=tcp://x@y", "a=tcp://x@"] {
            assert!(parse_engines(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
