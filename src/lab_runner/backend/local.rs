//! Election nodes in this process as a lab backend (`--local`): [`LocalCluster`], a group of real
//! election nodes, each a gRPC server on its own loopback port (what the integration tests and the
//! benchmarks run too), and [`Local`], the backend around it. Nodes can be killed (a crash: their server
//! goes away), stopped (with a goodbye), started again on the same port with the same state directory,
//! and frozen (as `docker pause`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Backend, Endpoint, Lifecycle, Timers};
use crate::election::state::StateError;
use crate::election::{ElectionNode, NodeConfig, NodeError, agreement};
use crate::lab_runner::error::LabError;
use crate::proto::election as pb;
use crate::rpc::Dialer;
use crate::server::{Connections, Stop, StopHandle};
use synclab_core::election::{Algorithm, NodeId};

struct Running {
    node: ElectionNode,
    stop: StopHandle,
    connections: Connections,
    server: JoinHandle<()>,
    runner: JoinHandle<()>,
}

/// Whether `states` are a settled group under `coordinator`: it rules, everyone else follows it, all in
/// one term.
pub fn agreed(states: &[pb::NodeState], coordinator: NodeId) -> bool {
    agreement(states).is_some_and(|(c, _)| c == coordinator)
}

/// Nodes `1..=n` on 127.0.0.1.
pub struct LocalCluster {
    template: NodeConfig,
    /// Applied to each node's settings as it is launched (with its id set).
    configure: std::sync::Arc<dyn Fn(&mut NodeConfig) + Send + Sync>,
    addresses: BTreeMap<NodeId, String>,
    running: BTreeMap<NodeId, Running>,
}

impl LocalCluster {
    /// Starts `n` nodes running `algorithm` with the given timers; each keeps its term in `state_dir`.
    pub async fn start(
        algorithm: Algorithm,
        n: u64,
        heartbeat: Duration,
        timeout: Duration,
        rpc_timeout: Duration,
        state_dir: PathBuf,
    ) -> Result<Self, NodeError> {
        Self::start_with(algorithm, n, heartbeat, timeout, rpc_timeout, state_dir, |_| {}).await
    }

    /// As [`LocalCluster::start`], with `configure` applied to every node's settings (its id set) each
    /// time it is launched.
    pub async fn start_with(
        algorithm: Algorithm,
        n: u64,
        heartbeat: Duration,
        timeout: Duration,
        rpc_timeout: Duration,
        state_dir: PathBuf,
        configure: impl Fn(&mut NodeConfig) + Send + Sync + 'static,
    ) -> Result<Self, NodeError> {
        let mut listeners = BTreeMap::new();
        let mut addresses = BTreeMap::new();
        for id in 1..=n {
            let listener = crate::server::bind("127.0.0.1:0").await?;
            let port = listener
                .local_addr()
                .map_err(|e| NodeError::Server(crate::server::ServerError::Bind { addr: "127.0.0.1:0".into(), source: e }))?
                .port();
            addresses.insert(id, format!("127.0.0.1:{port}"));
            listeners.insert(id, listener);
        }
        std::fs::create_dir_all(&state_dir).map_err(|e| NodeError::State(StateError { path: state_dir.clone(), reason: e.to_string() }))?;
        let template = NodeConfig {
            id: 0,
            peers: addresses.clone(),
            algorithm,
            heartbeat,
            timeout,
            detector: synclab_core::election::Detector::Fixed,
            rpc_timeout,
            probe_timeout: rpc_timeout.min(Duration::from_millis(25)),
            election_stagger: Duration::ZERO,
            state_dir: Some(state_dir),
            tls: None,
            lab: false,
        };
        let mut cluster = Self { template, configure: std::sync::Arc::new(configure), addresses, running: BTreeMap::new() };
        for (id, listener) in listeners {
            cluster.launch(id, listener).await?;
        }
        Ok(cluster)
    }

    /// The ids of the nodes.
    pub fn ids(&self) -> Vec<NodeId> {
        self.addresses.keys().copied().collect()
    }

    /// Where node `id` serves.
    pub fn address(&self, id: NodeId) -> &str {
        &self.addresses[&id]
    }

    /// The ids of the nodes running now.
    pub fn running(&self) -> Vec<NodeId> {
        self.running.keys().copied().collect()
    }

    /// Node `id`'s handle, if it runs.
    pub fn node(&self, id: NodeId) -> Option<&ElectionNode> {
        self.running.get(&id).map(|r| &r.node)
    }

    /// The state of every running node, by id.
    pub async fn states(&self) -> BTreeMap<NodeId, pb::NodeState> {
        let mut states = BTreeMap::new();
        for (&id, r) in &self.running {
            states.insert(id, r.node.snapshot().await);
        }
        states
    }

    async fn launch(&mut self, id: NodeId, listener: tokio::net::TcpListener) -> Result<(), NodeError> {
        let mut config = NodeConfig { id, ..self.template.clone() };
        (self.configure)(&mut config);
        let node = ElectionNode::new(config)?;
        let server = crate::election::server(&node).await?;
        let connections = server.connections();
        let (stop, stopped) = Stop::new();
        let server = tokio::spawn({
            let stopped = stopped.clone();
            async move {
                if let Err(e) = server.serve(listener, stopped).await {
                    tracing::warn!(id, error = %e, "node server failed");
                }
            }
        });
        let runner = tokio::spawn(node.clone().run(stopped));
        self.running.insert(id, Running { node, stop, connections, server, runner });
        Ok(())
    }

    /// Kills node `id` (as `docker kill` does): no goodbye, every connection closed at once.
    pub async fn kill(&mut self, id: NodeId) {
        if let Some(r) = self.running.remove(&id) {
            r.node.crash_on_stop();
            r.node.set_frozen(false);
            r.stop.stop();
            r.connections.close_all();
            let _ = r.runner.await;
            if tokio::time::timeout(Duration::from_secs(2), r.server).await.is_err() {
                tracing::warn!(id, "node server did not stop within 2 s");
            }
        }
    }

    /// Stops node `id` (as `docker stop` does): a coordinator says goodbye, then its server and timers
    /// end.
    pub async fn stop(&mut self, id: NodeId) {
        if let Some(r) = self.running.remove(&id) {
            r.node.set_frozen(false);
            r.stop.stop();
            let _ = r.runner.await;
            if tokio::time::timeout(Duration::from_secs(2), r.server).await.is_err() {
                tracing::warn!(id, "node server did not stop within 2 s");
            }
        }
    }

    /// Starts node `id` again on its port, with the term from its state file.
    pub async fn restart(&mut self, id: NodeId) -> Result<(), NodeError> {
        self.stop(id).await;
        let listener = crate::server::bind(&self.addresses[&id]).await?;
        self.launch(id, listener).await
    }

    /// Freezes (`true`) or thaws node `id`.
    pub fn freeze(&self, id: NodeId, frozen: bool) {
        if let Some(r) = self.running.get(&id) {
            r.node.set_frozen(frozen);
        }
    }

    /// Waits until every node in `ids` follows `coordinator` (which rules) in one term, or `limit`
    /// passes. Returns that term.
    pub async fn wait_for_agreement(&self, ids: &[NodeId], coordinator: NodeId, limit: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut states = Vec::with_capacity(ids.len());
            for node in ids.iter().filter_map(|id| self.node(*id)) {
                states.push(node.snapshot().await);
            }
            if states.len() == ids.len() && agreed(&states, coordinator) {
                return Some(states[0].term);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for id in self.running() {
            self.stop(id).await;
        }
    }
}

/// The lab's in-process group: `n` nodes with the lab's switch on and fast timers, their state files in
/// a folder of the run that goes when the run ends.
pub struct Local {
    cluster: LocalCluster,
    state_dir: PathBuf,
    dialer: Dialer,
}

impl Local {
    /// Starts `n` nodes running `algorithm` with `timers` (and a 100 ms RPC deadline), their state in
    /// `state_dir` (emptied first).
    pub async fn start(algorithm: Algorithm, n: u64, state_dir: PathBuf, timers: Timers, dialer: Dialer) -> Result<Self, LabError> {
        let _ = std::fs::remove_dir_all(&state_dir);
        let rpc_timeout = Duration::from_millis(100);
        let detector = timers.detector;
        let configure = move |c: &mut NodeConfig| {
            c.lab = true;
            c.detector = detector;
        };
        let cluster = LocalCluster::start_with(algorithm, n, timers.heartbeat, timers.timeout, rpc_timeout, state_dir.clone(), configure)
            .await
            .map_err(|source| LabError::Nodes { source })?;
        Ok(Self { cluster, state_dir, dialer })
    }
}

impl Backend for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn members(&self) -> Vec<NodeId> {
        self.cluster.ids()
    }

    fn endpoint(&self, id: NodeId) -> Option<Endpoint> {
        let address = self.cluster.addresses.get(&id)?.clone();
        Some(Endpoint { address, dialer: self.dialer.clone() })
    }

    async fn lifecycle(&mut self, action: Lifecycle, id: NodeId) -> Result<(), LabError> {
        let c = &mut self.cluster;
        match action {
            Lifecycle::Kill => c.kill(id).await,
            Lifecycle::Stop => c.stop(id).await,
            Lifecycle::Start => {
                if !c.running.contains_key(&id) {
                    c.restart(id).await.map_err(|source| LabError::Restart { node: id, source })?;
                }
            }
            Lifecycle::Pause => c.freeze(id, true),
            Lifecycle::Unpause => c.freeze(id, false),
        }
        Ok(())
    }

    async fn wipe(&mut self, id: NodeId) -> Result<(), LabError> {
        let path = crate::election::state::StateFile::new(&self.state_dir, id).path().to_path_buf();
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LabError::Io { path, source: e }),
            _ => Ok(()),
        }
    }

    async fn shutdown(self) {
        self.cluster.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
