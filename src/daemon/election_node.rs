//! `election-node`: one member of a group that elects a coordinator with the Bully or the Ring algorithm.
//!
//! Serves `synclab.election.v1.ElectionService` (the protocol, `GetState` and `WatchLeader`), health and
//! reflection; runs an election at start, heartbeats its coordinator and suspects it after `--timeout` of
//! silence. Its highest term is kept in `--state-dir`, so a restarted node never claims a term twice.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use std::collections::BTreeMap;

use synclab_core::election::{Algorithm, Detector, NodeId};

use super::{Daemon, ServiceArgs};
use crate::cli::{named, parse_duration, parse_id, parse_nonnegative_duration, parse_peers};
use crate::clock::ClockSet;
use crate::election::{ElectionNode, NodeConfig};
use crate::server;

/// A node of a leader election.
#[derive(Debug, Parser)]
#[command(name = "election-node", version)]
struct Args {
    /// This node's id: a positive integer, unique in the group (the highest live id is elected).
    #[arg(long, env = "SYNCLAB_ID", value_parser = parse_id, allow_hyphen_values = true)]
    id: NodeId,
    /// Address to serve gRPC on.
    #[arg(long, env = "SYNCLAB_LISTEN", default_value = "0.0.0.0:50054")]
    listen: String,
    /// Every member of the group as ID=HOST:PORT, comma-separated (this node may be listed too), e.g.
    /// 1=node-1:50054,2=node-2:50054,3=node-3:50054.
    #[arg(long, env = "SYNCLAB_PEERS", value_name = "ID=HOST:PORT,...", value_parser = parse_peers)]
    peers: BTreeMap<NodeId, String>,
    /// The election algorithm; every member of a group must run the same one.
    #[arg(long, env = "SYNCLAB_ALGORITHM", value_parser = named::<Algorithm>(), default_value = "bully")]
    algorithm: Algorithm,
    /// Directory of the state file that keeps this node's term across restarts (omit: memory only).
    #[arg(long, env = "SYNCLAB_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// How often the coordinator sends Alive to its followers (a follower that has not heard from it for
    /// one and a half of these asks it with an Alive of its own).
    #[arg(long, env = "SYNCLAB_HEARTBEAT", value_name = "DURATION", default_value = "50ms", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Silence from the coordinator after which a follower suspects it and holds an election.
    #[arg(long, env = "SYNCLAB_TIMEOUT", value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    timeout: Duration,
    /// How a follower finds its coordinator silent: `fixed`, the textbook's, after --timeout of silence;
    /// or `adaptive`, a φ-accrual detector that learns the coordinator's heartbeat inter-arrival times and
    /// suspects it at a false-suspicion probability of 10^-8 per heartbeat, never sooner than 2.2
    /// heartbeats of silence nor later than 20. The default stays `fixed` until the adaptive detector's
    /// false elections and failover are measured against it (BENCHMARKS.md gives the commands).
    #[arg(long, env = "SYNCLAB_DETECTOR", value_parser = named::<Detector>(), default_value = "fixed")]
    detector: Detector,
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
    super::run(&args.service.clone(), 0, |daemon| run(args, daemon))
}

async fn run(args: Args, mut daemon: Daemon) -> anyhow::Result<()> {
    let node = ElectionNode::new(NodeConfig {
        id: args.id,
        peers: args.peers.clone(),
        algorithm: args.algorithm,
        heartbeat: args.heartbeat,
        timeout: args.timeout,
        detector: args.detector,
        rpc_timeout: args.rpc_timeout,
        probe_timeout: args.probe_timeout,
        election_stagger: args.election_stagger,
        state_dir: args.state_dir.clone(),
        tls: daemon.tls().cloned(),
        // The node serves the `Lab` service itself: it lets a lab break its links to the peers too.
        lab: daemon.lab(),
    })?;
    let listener = server::bind(&args.listen).await?;
    tracing::info!(id = args.id, algorithm = %args.algorithm, addr = %listener.local_addr()?, "election node listening");
    let server = crate::election::server(&node).await?;
    let stop = daemon.stop();
    if daemon.serve_metrics(ClockSet::default()).await? {
        let node = node.clone();
        crate::observe::on_scrape(move || {
            let node = node.clone();
            async move { crate::observe::election_state(&node.snapshot().await) }
        });
    }
    let running = tokio::spawn(node.run(stop.clone()));
    server.serve(listener, stop).await?;
    let _ = running.await;
    daemon.finish().await;
    Ok(())
}
