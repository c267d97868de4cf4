//! `synclab dashboard`: serves a live web page of the lab (clocks, Berkeley rounds, elections).

use std::time::Duration;

use crate::cli::{LogArgs, TlsArgs, parse_duration, parse_member};
use crate::dashboard::{Dashboard, DashboardConfig};
use crate::observe::web::{self, HttpLimits};
use crate::server::{self, Stop};
use crate::telemetry;

#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Address to serve the page on.
    #[arg(long, env = "SYNCLAB_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// A clock to follow through Clock/Read, as NAME=HOST:PORT, comma-separated or repeated (default: the
    /// compose clocks as published on this host).
    #[arg(
        long = "clock",
        env = "SYNCLAB_CLOCKS",
        value_name = "NAME=HOST:PORT",
        value_delimiter = ',',
        value_parser = parse_member,
        default_value = "time-server=127.0.0.1:50051,mobile=127.0.0.1:50061,laptop=127.0.0.1:50062,berkeley-master=127.0.0.1:50052,KMC=127.0.0.1:50053,MIT=127.0.0.1:50054,TAPMI=127.0.0.1:50055,SOLS=127.0.0.1:50056"
    )]
    clocks: Vec<(String, String)>,
    /// A Cristian device whose error bound to show, as CLOCK=HOST:PORT of its metrics listener.
    #[arg(
        long = "device-metrics",
        env = "SYNCLAB_DEVICE_METRICS",
        value_name = "NAME=HOST:PORT",
        value_delimiter = ',',
        value_parser = parse_member,
        default_value = "mobile=127.0.0.1:9102,laptop=127.0.0.1:9103"
    )]
    devices: Vec<(String, String)>,
    /// The Berkeley master, as host:port (as `synclab berkeley watch`).
    #[arg(long, env = "SYNCLAB_MASTER", default_value = "127.0.0.1:50052")]
    master: String,
    /// The election nodes, as host:port, comma-separated (as `synclab election watch`).
    #[arg(
        long,
        env = "SYNCLAB_NODES",
        value_delimiter = ',',
        default_value = "127.0.0.1:50071,127.0.0.1:50072,127.0.0.1:50073,127.0.0.1:50074,127.0.0.1:50075"
    )]
    nodes: Vec<String>,
    /// Deadline of each call.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    log: LogArgs,
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    telemetry::init(args.log.log_format, &args.log.log_level)?;
    let dashboard = Dashboard::new(DashboardConfig {
        clocks: args.clocks.clone(),
        devices: args.devices.clone(),
        master: args.master.clone(),
        nodes: args.nodes.clone(),
        timeout: args.timeout,
        dialer: args.tls.dialer()?,
    });
    let listener = server::bind(&args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "dashboard at http://{}/", listener.local_addr()?);
    let stop = Stop::on_signal();
    let following = tokio::spawn(dashboard.clone().run(stop.clone()));
    web::serve(listener, dashboard.router(), HttpLimits::dashboard(), stop).await;
    let _ = following.await;
    tracing::info!("dashboard stopped");
    Ok(())
}
