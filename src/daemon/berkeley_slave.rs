//! `berkeley-slave`: one of the clocks a Berkeley master keeps together.
//!
//! Serves its virtual clock to the master (`synclab.time.v1.TimeService`), takes the master's relative
//! adjustments (`synclab.berkeley.v1.BerkeleySlave`), learns its frequency error from them, and keeps
//! itself registered with the master. Also serves `synclab.clock.v1.Clock`, health and reflection.

use std::time::Duration;

use super::{Daemon, ServiceArgs};
use crate::berkeley::slave::Slave;
use crate::cli::{ClockArgs, parse_address, parse_duration, parse_name, parse_positive_nanos};
use crate::clock::{ClockSet, LiveClock};
use crate::rpc::Dialer;
use crate::server;
use anyhow::Context as _;
use clap::Parser;

/// A slave clock of the Berkeley algorithm.
#[derive(Debug, Parser)]
#[command(name = "berkeley-slave", version)]
struct Args {
    /// The slave's name, unique in its group (e.g. KMC).
    #[arg(long, env = "SYNCLAB_NAME", value_parser = parse_name)]
    name: String,
    /// The master, as host:port.
    #[arg(long, env = "SYNCLAB_MASTER", default_value = "berkeley-master:50052")]
    master: String,
    /// Address to serve gRPC on.
    #[arg(long, env = "SYNCLAB_LISTEN", default_value = "0.0.0.0:50053")]
    listen: String,
    /// The address the master dials, host:port (default: this host's name and the listen port).
    #[arg(long, env = "SYNCLAB_ADVERTISE", value_parser = parse_address)]
    advertise: Option<String>,
    /// Largest adjustment accepted from the master; larger ones are refused.
    #[arg(long, env = "SYNCLAB_MAX_ADJUSTMENT", value_name = "DURATION", default_value = "1h", value_parser = parse_positive_nanos)]
    max_adjustment: i64,
    /// Deadline of each registration call.
    #[arg(long, env = "SYNCLAB_TIMEOUT", value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    clock: ClockArgs,
    #[command(flatten)]
    service: ServiceArgs,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

/// Runs the berkeley slave (the `berkeley-slave` binary, or `synclab` invoked under that name).
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    super::run(&args.service.clone(), 0, |daemon| run(args, daemon))
}

async fn run(args: Args, mut daemon: Daemon) -> anyhow::Result<()> {
    let clock = LiveClock::new(args.name.clone(), args.clock.config())?;
    let listener = server::bind(&args.listen).await?;
    let port = listener.local_addr()?.port();
    let advertise = args.advertise.clone().unwrap_or_else(|| format!("{}:{port}", host_name()));
    synclab_core::name::check_address(&advertise).with_context(|| format!("invalid value '{advertise}' for '--advertise'"))?;
    let stop = daemon.stop();
    let clocks = ClockSet::new(vec![clock.clone()]);
    daemon.serve_metrics(clocks.clone()).await?;
    let slave = Slave::new(clock, args.max_adjustment, Dialer::new(daemon.tls().cloned())).context("cannot choose the slave's claim")?;
    let server = daemon.with_lab(slave.services(), clocks).build().await?;
    tracing::info!(name = %args.name, addr = %listener.local_addr()?, %advertise, master = %args.master, "berkeley slave listening");

    tokio::spawn(slave.keep_registered(args.master.clone(), args.name.clone(), advertise, args.timeout, stop.clone()));
    server.serve(listener, stop).await?;
    daemon.finish().await;
    tracing::info!("berkeley slave stopped");
    Ok(())
}
