//! `election-node`: one member of a group that elects a coordinator with the Bully or the Ring algorithm.
//!
//! Serves `synclab.election.v1.ElectionService` (the protocol, `GetState` and `WatchLeader`), health and
//! reflection; runs an election at start, heartbeats its coordinator and suspects it after `--timeout` of
//! silence. Its highest term is kept in `--state-dir`, so a restarted node never claims a term twice.

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use std::collections::BTreeMap;

use synclab_core::election::{Algorithm, NodeId};

use super::{Daemon, ServiceArgs};
use anyhow::Context;
use std::sync::Arc;

use crate::cli::{TimerArgs, named, parse_duration, parse_id, parse_nonnegative_duration, parse_peers};
use crate::clock::ClockSet;
use crate::election::discovery::{DiscoverTarget, Discovery, Dns, GetState, id_from_name, keep_members, parse_discover};
use crate::election::{ElectionNode, NodeConfig};
use crate::rpc::Dialer;
use crate::server;
use crate::server::Stop;

/// A node of a leader election.
#[derive(Debug, Parser)]
#[command(name = "election-node", version)]
struct Args {
    /// This node's id: a positive integer, unique in the group (the highest live id is elected). On a
    /// Swarm, the task slot: `SYNCLAB_ID: "{{.Task.Slot}}"`. Exactly one of --id and --id-from-name.
    #[arg(long, env = "SYNCLAB_ID", value_parser = parse_id, allow_hyphen_values = true, required_unless_present = "id_from_name", conflicts_with = "id_from_name")]
    id: Option<NodeId>,
    /// This node's id from a StatefulSet pod name NAME-ORDINAL: the ordinal + 1 (election-3 is node 4).
    #[arg(long, env = "SYNCLAB_ID_FROM_NAME", value_name = "NAME", value_parser = id_from_name)]
    id_from_name: Option<NodeId>,
    /// Address to serve gRPC on.
    #[arg(long, env = "SYNCLAB_LISTEN", default_value = "0.0.0.0:50054")]
    listen: String,
    /// Every member of the group as ID=HOST:PORT, comma-separated (this node may be listed too), e.g.
    /// 1=node-1:50054,2=node-2:50054,3=node-3:50054.
    /// Exactly one of --peers and --discover.
    #[arg(long, env = "SYNCLAB_PEERS", value_name = "ID=HOST:PORT,...", value_parser = parse_peers, required_unless_present = "discover", conflicts_with = "discover")]
    peers: Option<BTreeMap<NodeId, String>>,
    /// The members from DNS instead: every address HOST resolves to is a member, its id asked of the node
    /// there (its GetState), looked up again every --discover-interval and after any failed send; e.g.
    /// tasks.election:50054 on a Swarm, the headless service election:50054 on Kubernetes.
    #[arg(long, env = "SYNCLAB_DISCOVER", value_name = "HOST:PORT", value_parser = parse_discover)]
    discover: Option<DiscoverTarget>,
    /// How often --discover looks the members up again when nothing fails.
    #[arg(long, env = "SYNCLAB_DISCOVER_INTERVAL", value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    discover_interval: Duration,
    /// With --discover: how long a member that is no longer found stays one, at its last address. A
    /// task that dies and is restarted (at a new address) within it only gets redialed; the group's ids,
    /// and so its coordinator, stay. 0 forgets at once (every change of the ids costs an election).
    #[arg(long, env = "SYNCLAB_FORGET_AFTER", value_name = "DURATION", default_value = "10s", value_parser = crate::cli::parse_nonnegative_duration)]
    forget_after: Duration,
    /// The election algorithm; every member of a group must run the same one.
    #[arg(long, env = "SYNCLAB_ALGORITHM", value_parser = named::<Algorithm>(), default_value = "bully")]
    algorithm: Algorithm,
    /// Directory of the state file that keeps this node's term across restarts (omit: memory only).
    #[arg(long, env = "SYNCLAB_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    timers: TimerArgs,
    /// Deadline of every message to a peer (must be below --timeout); a peer that misses it counts as
    /// dead for that message.
    #[arg(long, env = "SYNCLAB_RPC_TIMEOUT", value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    rpc_timeout: Duration,
    /// When the line to the coordinator breaks, how long it has to answer a probe before this node holds
    /// an election (at most --rpc-timeout).
    #[arg(long, env = "SYNCLAB_PROBE_TIMEOUT", value_name = "DURATION", default_value = "25ms", value_parser = parse_duration)]
    probe_timeout: Duration,
    /// Beyond the textbook, off unless given: after its coordinator's death a node waits this long for
    /// every member above it but one before holding its election, so the highest live node goes first
    /// (fewer messages in a large group; the winner is the same), e.g. 2ms.
    #[arg(long, env = "SYNCLAB_ELECTION_STAGGER", value_name = "DURATION", default_value = "0", value_parser = parse_nonnegative_duration)]
    election_stagger: Duration,
    #[command(flatten)]
    service: ServiceArgs,
}

/// Runs the election node (the `election-node` binary, or `synclab` invoked under that name).
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Err(e) = args.timers.timers() {
        Args::command().error(clap::error::ErrorKind::ArgumentConflict, e).exit();
    }
    super::run(&args.service.clone(), 0, |daemon| run(args, daemon))
}

/// How long a node with --discover waits at start for its first members before it starts alone (an
/// election in a group of one, until the others are found).
const FIRST_MEMBERS_WAIT: Duration = Duration::from_secs(5);

async fn run(args: Args, mut daemon: Daemon) -> anyhow::Result<()> {
    // Clap makes sure exactly one of each pair is given.
    let id = args.id.or(args.id_from_name).context("--id or --id-from-name is required")?;
    let peers = match (&args.peers, &args.discover) {
        (Some(peers), _) => peers.clone(),
        (None, Some(target)) => BTreeMap::from([(id, target.to_string())]),
        (None, None) => anyhow::bail!("--peers or --discover is required"),
    };
    let node = ElectionNode::new(NodeConfig {
        id,
        peers,
        algorithm: args.algorithm,
        heartbeat: args.timers.heartbeat,
        timeout: args.timers.timeout,
        detector: args.timers.detector,
        rpc_timeout: args.rpc_timeout,
        probe_timeout: args.probe_timeout,
        election_stagger: args.election_stagger,
        state_dir: args.state_dir.clone(),
        tls: daemon.tls().cloned(),
        // The node serves the `Lab` service itself: it lets a lab break its links to the peers too.
        lab: daemon.lab(),
    })?;
    let listener = server::bind(&args.listen).await?;
    tracing::info!(id, algorithm = %args.algorithm, addr = %listener.local_addr()?, "election node listening");
    let server = crate::election::server(&node).await?;
    let stop = daemon.stop();
    if daemon.serve_metrics(ClockSet::default()).await? {
        crate::observe::election_counters();
        let node = node.clone();
        crate::observe::on_scrape(move || {
            let node = node.clone();
            async move { crate::observe::election_state(&node.snapshot().await) }
        });
    }
    let serving = tokio::spawn(server.serve(listener, stop.clone()));
    let discovering = match args.discover.clone() {
        Some(target) => {
            let identify = GetState { dialer: Dialer::new(daemon.tls().cloned()), timeout: args.rpc_timeout };
            let mut discovery =
                Discovery::new(id, args.algorithm, target, Arc::new(Dns), Arc::new(identify)).forget_after(args.forget_after);
            first_members(&node, &mut discovery, &stop).await;
            let failed = node.peer_failures();
            Some(tokio::spawn(keep_members(node.clone(), discovery, args.discover_interval, failed, stop.clone())))
        }
        None => None,
    };
    let running = tokio::spawn(node.run(stop.clone()));
    serving.await??;
    let _ = running.await;
    if let Some(task) = discovering {
        task.abort();
    }
    daemon.finish().await;
    Ok(())
}

/// Waits (at most [`FIRST_MEMBERS_WAIT`]) until discovery finds a member besides this node, so the node
/// does not start as a group of one and rule it; then starts with whatever it found.
async fn first_members(node: &ElectionNode, discovery: &mut Discovery, stop: &Stop) {
    let deadline = tokio::time::Instant::now() + FIRST_MEMBERS_WAIT;
    loop {
        match discovery.round().await {
            Ok(round) if round.members.len() > 1 => {
                node.set_members(round.members).await;
                return;
            }
            Ok(_) => tracing::info!("no other member found yet"),
            Err(e) => tracing::warn!(error = %e, "no members found yet; trying again"),
        }
        if tokio::time::Instant::now() >= deadline || stop.is_stopping() {
            tracing::warn!(wait = ?FIRST_MEMBERS_WAIT, "starting without other members; they join as they are found");
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = stop.wait() => return,
        }
    }
}
