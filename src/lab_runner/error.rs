//! Why a lab run could not be made, each cause with the error it came from.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use synclab_core::clock::ClockError;
use synclab_core::election::NodeId;
use synclab_core::lab::PlanError;
use synclab_core::lab::history::HistoryError;

use crate::election::NodeError;
use crate::rpc::RpcError;
use crate::server::ServerError;

/// Why a run could not be made. Every variant but [`LabError::Io`] and [`LabError::History`] means the
/// group could not be reached, started or driven: the run's result is unknown.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The Docker engine could not be reached or refused a call (`what`: the call, e.g. `kill node-5`).
    #[error("{what}: {source}")]
    Docker {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// Services the scenario needs have no container in the compose project.
    #[error(
        "no running {services} in compose project '{project}': start the lab's stack with `SYNCLAB_LAB=1 scripts/compose up -d` (or name it with --project)"
    )]
    Missing { services: String, project: String },
    /// A host fault cannot be made on this node (`why`).
    #[error("no host fault on {node}: {why}")]
    NoHostFault { node: String, why: String },
    /// A service the run drives has no container.
    #[error("no container for {service}")]
    NoContainer { service: String },
    /// A program the run needs could not be started.
    #[error("cannot run {program}: {source}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// `scripts/compose up` ran and failed.
    #[error("scripts/compose up failed ({status})")]
    ComposeUp { status: ExitStatus },
    /// A started service did not pass its health check in time.
    #[error("{service} did not turn healthy within {limit:?}")]
    Unhealthy { service: String, limit: Duration },
    /// The in-process election nodes could not be started.
    #[error("cannot start the nodes: {source}")]
    Nodes {
        #[source]
        source: NodeError,
    },
    /// An in-process election node could not be started again.
    #[error("{source}")]
    Restart {
        node: NodeId,
        #[source]
        source: NodeError,
    },
    /// An in-process server of the clock scenarios could not be started.
    #[error("{source}")]
    Serve {
        #[source]
        source: ServerError,
    },
    /// A listener's address could not be read.
    #[error("{source}")]
    Listener {
        #[source]
        source: std::io::Error,
    },
    /// A clock of the clock scenarios could not be made.
    #[error("{source}")]
    Clock {
        #[source]
        source: ClockError,
    },
    /// A clock of the clock scenarios could not be stepped.
    #[error("{clock}: {source}")]
    Step {
        clock: String,
        #[source]
        source: ClockError,
    },
    /// A clock scenario names a line the group does not have.
    #[error("no such line: {0}")]
    NoLine(String),
    /// A Berkeley slave could not draw its random identity.
    #[error("{source}")]
    Random {
        #[source]
        source: getrandom::Error,
    },
    /// A node's address could not be dialled.
    #[error("{source}")]
    Dial {
        #[source]
        source: RpcError,
    },
    /// A node answered a lab call with an error.
    #[error("node {node}: {}", source.message())]
    Rpc {
        node: NodeId,
        #[source]
        source: tonic::Status,
    },
    /// A service answered `Lab/BumpClock` with an error.
    #[error("{addr}: {} (is the stack started with SYNCLAB_LAB=1?)", source.message())]
    Bump {
        addr: String,
        #[source]
        source: tonic::Status,
    },
    /// A node was started without `--lab`.
    #[error("node {node} serves no Lab service: start the nodes with --lab (SYNCLAB_LAB=1)")]
    NoLabService { node: NodeId },
    /// A node did not answer a lab call within its deadline.
    #[error("node {node} did not answer {call}")]
    NoAnswer { node: NodeId, call: &'static str },
    /// The backend serves no gRPC for this member and did not set its links itself.
    #[error("node {node} has no gRPC endpoint to set its links through")]
    NoEndpoint { node: NodeId },
    /// The backend cannot make this fault.
    #[error("the {backend} backend cannot make this fault: {what}")]
    Unsupported { what: String, backend: &'static str },
    /// A clock scenario asked of the simulator, which simulates election groups only.
    #[error("{scenario} is a clock scenario: the simulator runs election scenarios only")]
    NotSimulated { scenario: String },
    /// Several members failed the same step.
    #[error("{}", join(.0))]
    Several(Vec<LabError>),
    /// The group never elected a first coordinator.
    #[error("the group elected no coordinator within {within} s")]
    NoCoordinator { within: f64 },
    /// The Berkeley master never reported its first rounds.
    #[error("the master reported no three rounds within 60 s")]
    NoRounds,
    /// The scenario cannot be planned for this group.
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    History { path: PathBuf, source: HistoryError },
}

fn join(errors: &[LabError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl LabError {
    /// One error for a step some members failed: none, the one, or all of them.
    pub fn all(mut errors: Vec<LabError>) -> Result<(), LabError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(LabError::Several(errors)),
        }
    }

    /// Whether starting the compose project's services could help (the engine or containers missing).
    pub fn is_missing_stack(&self) -> bool {
        matches!(self, LabError::Docker { .. } | LabError::Missing { .. })
    }
}
