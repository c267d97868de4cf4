//! The seam between the lab's runner and where a group runs: the [`Backend`] trait, and the two
//! backends behind it, the compose stack through the Docker engine ([`compose`]) and election nodes in
//! this process ([`local`]).
//!
//! A backend owns the members' lifecycles (kill, stop, start, pause, unpause: [`Lifecycle`]), knows
//! the members and how to reach them, and keeps the run's time. The player (`super::play`) resolves a
//! plan's symbolic targets and keeps what is broken; the backend only carries out one operation at a
//! time. The defaults are those of real processes that serve gRPC: links are set through each node's
//! `Lab/SetLinks`, observations come from `GetState` and `WatchMessages`, time is the host's.
//!
//! How the other backends plug in:
//! - **Swarm** (many hosts): like [`compose::Compose`], with the tasks found on whichever node runs
//!   them and each node's engine driven; [`Backend::members`] and [`Backend::endpoint`] from the tasks;
//!   host-wide faults are further [`Lifecycle`]-like operations of its own.
//! - **Simulator** (virtual time, no gRPC; `super::sim::backend`, `--sim`): overrides [`Backend::set_links`] to change its simulated
//!   network, [`Backend::observe`] to record the cores' state and messages itself, [`Backend::clock`]
//!   and [`Backend::sleep`] to read and advance virtual time (a sleep runs the simulation to that
//!   time), and returns `None` from [`Backend::endpoint`]. The player and the plan stay as they are.

pub mod compose;
pub mod local;
pub mod swarm;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use synclab_core::election::NodeId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::LabError;
use super::observe::{observe_messages, observe_state};
use super::record::{Recorder, RunClock};
use crate::proto::lab::lab_client::LabClient;
use crate::proto::lab::{LinkFault, SetLinksRequest};
use crate::rpc::Dialer;

/// Where a run happens.
#[derive(Debug, Clone)]
pub enum Target {
    /// Nodes in this process, on loopback.
    Local,
    /// The compose project's containers (started with `--lab`); `start`: start the missing ones.
    Compose { project: String, start: bool },
    /// A Docker Swarm stack's election tasks, on these nodes' engines.
    Swarm { stack: String, engines: Vec<Engine> },
    /// The election cores on a simulated network, in virtual time (`super::sim`).
    Sim,
}

impl Target {
    /// The backend's name, as `RunInfo.backend` records it.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Local => "local",
            Target::Compose { .. } => "compose",
            Target::Swarm { .. } => "swarm",
            Target::Sim => "sim",
        }
    }
}

/// One node of a swarm: its name, its engine's endpoint (`unix://PATH`, `tcp://HOST:PORT`) and the
/// address its published ports are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    pub name: String,
    pub endpoint: String,
    pub address: String,
}

/// What can happen to a member's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// SIGKILL: gone at once, no goodbye.
    Kill,
    /// SIGTERM: a coordinator says goodbye, then the process ends.
    Stop,
    /// Started again after a kill or a stop (nothing if it runs).
    Start,
    /// Frozen: alive, silent.
    Pause,
    Unpause,
}

impl Lifecycle {
    /// The name the history spells it with.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Kill => "kill",
            Lifecycle::Stop => "stop",
            Lifecycle::Start => "start",
            Lifecycle::Pause => "pause",
            Lifecycle::Unpause => "unpause",
        }
    }
}

/// What can happen to the node (host) a member runs on, and so to every member there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFault {
    /// Its network cut: every task on it gone at once, without a FIN.
    Down,
    /// Its network back.
    Up,
    /// Every container on it paused.
    Freeze,
    Thaw,
}

/// One link's fault, from a member to a peer (both ways, as the player sets them on both ends).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Link {
    /// Nothing crosses.
    pub drop: bool,
    pub delay: Duration,
    /// Up to this much more, at random (which reorders messages).
    pub jitter: Duration,
    /// The fraction of messages lost.
    pub loss: f64,
}

/// One member's faulty links: by peer (peers not listed are healthy), and the seed of its random
/// draws (loss, jitter).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkTable {
    pub seed: u64,
    pub links: BTreeMap<NodeId, Link>,
}

/// How to reach a member over gRPC.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: String,
    pub dialer: Dialer,
}

/// A group the lab can break. The player holds one and awaits one call at a time.
pub trait Backend: Send {
    /// Its name, as `RunInfo.backend` records it (`local`, `compose`).
    fn name(&self) -> &'static str;

    /// The election members, by id (sorted).
    fn members(&self) -> Vec<NodeId>;

    /// Where member `id` serves gRPC; `None` for a backend without gRPC (it then overrides
    /// [`Backend::set_links`] and [`Backend::observe`]).
    fn endpoint(&self, id: NodeId) -> Option<Endpoint>;

    /// Whether the group outlives a run (a stack started once and broken by many runs): a run then
    /// first heals whatever an earlier one may have left.
    fn reused(&self) -> bool {
        false
    }

    /// Kills, stops, starts, pauses or unpauses member `id`.
    fn lifecycle(&mut self, action: Lifecycle, id: NodeId) -> impl Future<Output = Result<(), LabError>> + Send;

    /// Breaks or mends the node member `id` runs on; returns the members that run there. Only a backend
    /// of several hosts has them.
    fn host_fault(&mut self, fault: HostFault, id: NodeId) -> impl Future<Output = Result<Vec<NodeId>, LabError>> + Send {
        let name = self.name();
        async move {
            let _ = (fault, id);
            Err(LabError::NoHostFault { node: name.to_string(), why: "this backend runs on one host".into() })
        }
    }

    /// Deletes (stopped) member `id`'s state file, so that it starts from term 0. Not every backend
    /// can: by default the fault fails (and the history says why).
    fn wipe(&mut self, id: NodeId) -> impl Future<Output = Result<(), LabError>> + Send {
        let backend = self.name();
        async move { Err(LabError::Unsupported { what: format!("deleting node {id}'s state file"), backend }) }
    }

    /// Makes member `id` slow (its timers and answers late by `by`, not dead; zero: normal). Not every
    /// backend can: by default the fault fails (and the history says why).
    fn slow(&mut self, id: NodeId, by: Duration) -> impl Future<Output = Result<(), LabError>> + Send {
        let backend = self.name();
        async move { Err(LabError::Unsupported { what: format!("slowing node {id} by {by:?}"), backend }) }
    }

    /// Sets every faulty link of member `id` (and heals the others): through its `Lab/SetLinks` by
    /// default.
    fn set_links(&mut self, id: NodeId, table: &LinkTable) -> impl Future<Output = Result<(), LabError>> + Send {
        let endpoint = self.endpoint(id);
        let table = table.clone();
        async move {
            match endpoint {
                Some(endpoint) => set_links_rpc(&endpoint, id, &table).await,
                None => Err(LabError::NoEndpoint { node: id }),
            }
        }
    }

    /// The run's clock, read when the run begins: the host's by default.
    fn clock(&self) -> RunClock {
        RunClock::real()
    }

    /// Lets `d` of the run's time pass: the host's by default.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }

    /// Starts recording every member's state and messages into `rec` until `stop` turns true; returns
    /// the tasks to await. By default: each member's `GetState`, polled, and `WatchMessages`.
    fn observe(&self, rec: &Recorder, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        for id in self.members() {
            let Some(Endpoint { address, dialer }) = self.endpoint(id) else { continue };
            tasks.push(tokio::spawn(observe_state(dialer.clone(), id, address.clone(), rec.clone(), stop.clone())));
            tasks.push(tokio::spawn(observe_messages(dialer, id, address, rec.clone(), stop.clone())));
        }
        tasks
    }

    /// Ends the group if the run made it (a stack it found is left running).
    fn shutdown(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

/// Sets member `id`'s links through its `Lab/SetLinks` (served with `--lab`).
pub async fn set_links_rpc(endpoint: &Endpoint, id: NodeId, table: &LinkTable) -> Result<(), LabError> {
    let duration = |d: Duration| Some(prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 });
    let links = table
        .links
        .iter()
        .map(|(&peer, l)| LinkFault { peer: peer as i64, drop: l.drop, delay: duration(l.delay), jitter: duration(l.jitter), loss: l.loss })
        .collect();
    let channel = endpoint.dialer.channel(&endpoint.address, Duration::from_secs(1)).map_err(|source| LabError::Dial { source })?;
    let request = SetLinksRequest { links, seed: table.seed };
    let mut client = LabClient::new(channel);
    let call = client.set_links(crate::rpc::request(request, Duration::from_secs(1)));
    match tokio::time::timeout(Duration::from_secs(2), call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => Err(LabError::NoLabService { node: id }),
        Ok(Err(source)) => Err(LabError::Rpc { node: id, source }),
        Err(_) => Err(LabError::NoAnswer { node: id, call: "Lab/SetLinks" }),
    }
}

/// The heartbeat, the fixed timeout and the failure detector of a group the lab makes itself (`--local`,
/// `--sim`); in Docker the deployment's settings decide (`SYNCLAB_HEARTBEAT`, `SYNCLAB_DETECTOR`).
pub use synclab_core::election::Timers;
