//! `berkeley-master`: the master clock of the Berkeley algorithm.
//!
//! Every `--interval` it reads every registered slave concurrently (NTP exchanges, minimum round trip),
//! counts its own clock in, averages the largest set of clocks that agree within `--tolerance`, and sends
//! each slave its relative adjustment, correcting itself too. Serves `synclab.berkeley.v1.BerkeleyMaster`,
//! `synclab.clock.v1.Clock`, health and reflection; stops cleanly on SIGTERM or SIGINT.

use anyhow::Context as _;
use clap::Parser;
use std::time::Duration;

use super::{Daemon, ServiceArgs};
use crate::berkeley::master::{self, Master, MasterConfig};
use crate::cli::{ClockArgs, parse_duration, parse_name};
use crate::clock::{ClockSet, LiveClock};
use crate::rpc::Dialer;
use crate::server;
use synclab_core::berkeley::RosterRules;

/// The master clock of the Berkeley algorithm.
#[derive(Debug, Parser)]
#[command(name = "berkeley-master", version)]
struct Args {
    /// Address to serve gRPC on.
    #[arg(long, env = "SYNCLAB_LISTEN", default_value = "0.0.0.0:50052")]
    listen: String,
    /// The master's clock name.
    #[arg(long, env = "SYNCLAB_NAME", default_value = "berkeley-master", value_parser = parse_name)]
    name: String,
    /// Time between rounds.
    #[arg(long, env = "SYNCLAB_INTERVAL", value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    interval: Duration,
    /// Clocks within this of each other agree; the largest such set is averaged.
    #[arg(long, env = "SYNCLAB_TOLERANCE", value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    tolerance: Duration,
    /// Exchanges per slave per round; the one with the smallest round trip is used.
    #[arg(long, env = "SYNCLAB_SAMPLES", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=100))]
    samples: u16,
    /// Deadline for reading one slave and for sending it its adjustment.
    #[arg(long, env = "SYNCLAB_TIMEOUT", value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    timeout: Duration,
    /// A slave that misses more rounds in a row than this is dropped (it rejoins by registering again).
    #[arg(long, env = "SYNCLAB_MAX_MISSED", default_value_t = 3)]
    max_missed: u32,
    /// Members at most; a new name beyond them is refused (RESOURCE_EXHAUSTED).
    #[arg(long, env = "SYNCLAB_MAX_MEMBERS", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    max_members: u16,
    /// Names with a place of their own, outside --max-members (the configured lines, e.g.
    /// KMC,MIT,TAPMI,SOLS): they always find a place, whatever other names hold.
    #[arg(long, env = "SYNCLAB_RESERVED", value_name = "NAME,...", value_delimiter = ',', value_parser = parse_name)]
    reserved: Vec<String>,
    /// Only the --reserved names may join.
    #[arg(long, env = "SYNCLAB_RESERVED_ONLY")]
    reserved_only: bool,
    /// Open places one source may hold (its IP address; its identity under TLS); 0: no limit.
    #[arg(long, env = "SYNCLAB_MAX_MEMBERS_PER_SOURCE", default_value_t = 0)]
    max_members_per_source: u16,
    #[command(flatten)]
    clock: ClockArgs,
    #[command(flatten)]
    service: ServiceArgs,
}

/// Runs the berkeley master (the `berkeley-master` binary, or `synclab` invoked under that name).
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    super::run(&args.service.clone(), 0, |daemon| run(args, daemon))
}

async fn run(args: Args, mut daemon: Daemon) -> anyhow::Result<()> {
    let clock = LiveClock::new(args.name.clone(), args.clock.config())?;
    let config = MasterConfig {
        interval: args.interval,
        tolerance_nanos: args.tolerance.as_nanos() as f64,
        samples: args.samples.into(),
        timeout: args.timeout,
        max_missed: args.max_missed,
        max_members: args.max_members.into(),
        dialer: Dialer::new(daemon.tls().cloned()),
    };
    if args.reserved_only && args.reserved.is_empty() {
        anyhow::bail!("--reserved-only needs the names in --reserved (SYNCLAB_RESERVED)");
    }
    let rules = RosterRules {
        max_members: args.max_members.into(),
        reserved: args.reserved.iter().cloned().collect(),
        reserved_only: args.reserved_only,
        max_per_source: if args.max_members_per_source == 0 { usize::MAX } else { args.max_members_per_source.into() },
    };
    let master = Master::with_rules(clock.clone(), config, rules);
    let listener = server::bind(&args.listen).await?;
    let stop = daemon.stop();
    let clocks = ClockSet::new(vec![clock.clone()]);
    daemon.serve_metrics(clocks.clone()).await?;
    crate::observe::berkeley_counters();
    let server = daemon.with_lab(master::services(master.clone(), &args.name, stop.clone()), clocks).build().await?;
    tracing::info!(addr = %listener.local_addr()?, interval = ?args.interval, tolerance = ?args.tolerance, "berkeley master listening");

    let rounds = tokio::spawn(master.run(stop.clone()));
    server.serve(listener, stop).await?;
    rounds.await.context("the round loop failed")?;
    daemon.finish().await;
    tracing::info!("berkeley master stopped");
    Ok(())
}
