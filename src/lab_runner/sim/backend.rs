//! The simulator as a lab backend (`--sim`): a [`Sim`] behind a lock, its virtual time the run's clock.
//! A sleep runs the simulation to the time it wakes at and hands what the observers would have seen
//! to the recorder; faults and links change the simulated processes and network at once.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synclab_core::election::{Algorithm, NodeId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::network::{LinkFault, Sim, SimConfig};
use crate::lab_runner::backend::{Backend, Endpoint, Lifecycle, LinkTable};
use crate::lab_runner::error::LabError;
use crate::lab_runner::record::{Recorder, RunClock};
use crate::lock::lock;

struct Shared {
    sim: Sim,
    /// Where observations go once the run observes.
    rec: Option<Recorder>,
}

impl Shared {
    fn flush(&mut self) {
        let trace = self.sim.take_trace();
        if let Some(rec) = &self.rec {
            for event in trace {
                rec.push(event);
            }
        }
    }
}

/// `n` simulated election nodes, all started at virtual time 0.
#[derive(Clone)]
pub struct SimBackend {
    shared: Arc<Mutex<Shared>>,
    members: Vec<NodeId>,
}

impl SimBackend {
    /// A group of `n` nodes running `algorithm` on the network `config` describes, every node started
    /// at once (a cold start).
    pub fn start(algorithm: Algorithm, n: u64, config: SimConfig) -> Self {
        let mut sim = Sim::new(algorithm, n, config);
        sim.record();
        sim.start_all();
        let members = sim.ids();
        Self { shared: Arc::new(Mutex::new(Shared { sim, rec: None })), members }
    }

    /// Whether `id` is a member (the simulation knows no other node).
    fn known(&self, id: NodeId) -> Result<(), LabError> {
        if self.members.contains(&id) { Ok(()) } else { Err(LabError::NoEndpoint { node: id }) }
    }

    /// Runs `f` on the simulation, then hands its observations to the recorder.
    fn with<T>(&self, f: impl FnOnce(&mut Sim) -> T) -> T {
        let mut shared = lock(&self.shared);
        let out = f(&mut shared.sim);
        shared.flush();
        out
    }
}

impl Backend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn members(&self) -> Vec<NodeId> {
        self.members.clone()
    }

    fn endpoint(&self, _: NodeId) -> Option<Endpoint> {
        None
    }

    async fn lifecycle(&mut self, action: Lifecycle, id: NodeId) -> Result<(), LabError> {
        self.known(id)?;
        self.with(|sim| match action {
            Lifecycle::Kill => sim.kill(id),
            Lifecycle::Stop => sim.stop(id),
            Lifecycle::Start => {
                if !sim.running(id) {
                    sim.start(id);
                }
            }
            Lifecycle::Pause => sim.pause(id),
            Lifecycle::Unpause => sim.unpause(id),
        });
        Ok(())
    }

    async fn wipe(&mut self, id: NodeId) -> Result<(), LabError> {
        self.known(id)?;
        self.with(|sim| sim.wipe(id));
        Ok(())
    }

    async fn slow(&mut self, id: NodeId, by: Duration) -> Result<(), LabError> {
        self.known(id)?;
        self.with(|sim| sim.set_slow(id, by));
        Ok(())
    }

    async fn set_links(&mut self, id: NodeId, table: &LinkTable) -> Result<(), LabError> {
        let members = self.members.clone();
        self.with(|sim| {
            for peer in members.into_iter().filter(|&p| p != id) {
                let fault = table.links.get(&peer).map_or_else(LinkFault::default, |l| LinkFault {
                    drop: l.drop,
                    delay: l.delay,
                    jitter: l.jitter,
                    loss: l.loss.clamp(0.0, 1.0),
                });
                sim.set_link(id, peer, fault);
            }
        });
        Ok(())
    }

    fn clock(&self) -> RunClock {
        // Virtual time since the simulation began, as the observations are stamped.
        let shared = self.shared.clone();
        RunClock::virtual_time(move || lock(&shared).sim.now())
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        self.with(|sim| sim.run_for(d));
        std::future::ready(())
    }

    fn observe(&self, rec: &Recorder, _stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let mut shared = lock(&self.shared);
        shared.rec = Some(rec.clone());
        shared.flush();
        Vec::new()
    }
}
