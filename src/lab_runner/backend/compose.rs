//! The compose stack as a lab backend: its containers found by their compose labels and driven through
//! the Docker engine's API (bollard), their gRPC ports as published on this host.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use synclab_core::election::NodeId;

use super::{Backend, Endpoint, Lifecycle};
use crate::lab_runner::error::LabError;
use crate::rpc::Dialer;

/// The compose project's services, through the Docker engine's API.
pub struct Compose {
    docker: bollard::Docker,
    /// Service name → (container id, the host port its gRPC listener is published on).
    services: BTreeMap<String, (String, u16)>,
    /// Election node id → (container id, host port).
    nodes: BTreeMap<NodeId, (String, u16)>,
    dialer: Dialer,
}

/// The services the election scenarios break.
pub const ELECTION_SERVICES: [&str; 5] = ["node-1", "node-2", "node-3", "node-4", "node-5"];

/// The gRPC ports of synclab's services inside their containers.
const SERVICE_PORTS: [u16; 5] = [50051, 50052, 50053, 50054, 50061];

/// The compose project name Docker Compose derives from a folder (lower case, letters and digits).
pub fn default_project(dir: &Path) -> String {
    let name = dir.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
}

impl Compose {
    /// The project's containers that serve synclab; `needs` names the services the scenario cannot do
    /// without. With `start`, missing ones are started (with the lab's switch on) when this is a synclab
    /// checkout, where `scripts/compose` builds the image and starts them; they must then turn healthy
    /// within two minutes. `dialer` reaches their gRPC.
    pub async fn connect(project: &str, needs: &[&str], start: bool, dialer: Dialer) -> Result<Self, LabError> {
        match Self::find(project, needs, dialer.clone()).await {
            Err(why) if why.is_missing_stack() && start && Path::new("scripts/compose").exists() => {
                eprintln!("{why}\nstarting them: SYNCLAB_LAB=1 scripts/compose up -d {}", needs.join(" "));
                let status = std::process::Command::new("scripts/compose")
                    .env("COMPOSE_PROJECT_NAME", project)
                    .env("SYNCLAB_LAB", "1")
                    .args(["up", "-d"])
                    .args(needs)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .map_err(|source| LabError::Start { program: "scripts/compose".into(), source })?;
                if !status.success() {
                    return Err(LabError::ComposeUp { status });
                }
                let compose = Self::find(project, needs, dialer).await?;
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
                    return Err(LabError::Unhealthy { service: service.to_string(), limit });
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(())
    }

    async fn find(project: &str, needs: &[&str], dialer: Dialer) -> Result<Self, LabError> {
        let docker = bollard::Docker::connect_with_local_defaults()
            .map_err(|source| LabError::Docker { what: "cannot reach the Docker engine".into(), source })?;
        let filters = HashMap::from([("label", vec![format!("com.docker.compose.project={project}")])]);
        let options = bollard::query_parameters::ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|source| LabError::Docker { what: "cannot list containers".into(), source })?;
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
            return Err(LabError::Missing { services: missing.join(", "), project: project.to_string() });
        }
        Ok(Self { docker, services, nodes, dialer })
    }

    /// Where `service` is published on this host.
    pub fn address(&self, service: &str) -> String {
        format!("127.0.0.1:{}", self.services.get(service).map_or(0, |s| s.1))
    }

    /// Kills, stops, starts, pauses or unpauses `service`'s container.
    pub async fn service_lifecycle(&self, action: Lifecycle, service: &str) -> Result<(), LabError> {
        let container = &self.services.get(service).ok_or_else(|| LabError::NoContainer { service: service.to_string() })?.0;
        let d = &self.docker;
        let result = match action {
            Lifecycle::Kill => {
                d.kill_container(container, Some(bollard::query_parameters::KillContainerOptionsBuilder::new().signal("SIGKILL").build()))
                    .await
            }
            Lifecycle::Stop => {
                d.stop_container(container, Some(bollard::query_parameters::StopContainerOptionsBuilder::new().t(10).build())).await
            }
            Lifecycle::Start => d.start_container(container, None::<bollard::query_parameters::StartContainerOptions>).await,
            Lifecycle::Pause => d.pause_container(container).await,
            Lifecycle::Unpause => d.unpause_container(container).await,
        };
        result.map_err(|source| LabError::Docker { what: format!("{} {service}", action.as_str()), source })
    }
}

impl Backend for Compose {
    fn name(&self) -> &'static str {
        "compose"
    }

    fn members(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    fn endpoint(&self, id: NodeId) -> Option<Endpoint> {
        let port = self.nodes.get(&id)?.1;
        Some(Endpoint { address: format!("127.0.0.1:{port}"), dialer: self.dialer.clone() })
    }

    fn reused(&self) -> bool {
        true
    }

    async fn lifecycle(&mut self, action: Lifecycle, id: NodeId) -> Result<(), LabError> {
        self.service_lifecycle(action, &format!("node-{id}")).await
    }
}
