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
    /// Do not serve: check that a dashboard at --listen serves its page (exit 0) or not (exit 1), for
    /// container health checks.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    log: LogArgs,
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    if args.check {
        return check(&args.listen, args.tls.load()?.as_ref(), args.timeout.max(Duration::from_secs(1))).await;
    }
    telemetry::init(args.log.log_format, &args.log.log_level)?;
    let stop = Stop::on_signal();
    // With TLS the page is served over HTTPS with the dashboard's certificate (no client certificate
    // asked of browsers), and the services are called with the same identity.
    let tls = args.tls.start(&stop)?;
    let dashboard = Dashboard::new(DashboardConfig {
        clocks: args.clocks.clone(),
        devices: args.devices.clone(),
        master: args.master.clone(),
        nodes: args.nodes.clone(),
        timeout: args.timeout,
        dialer: crate::rpc::Dialer::new(tls.clone()),
    });
    let listener = server::bind(&args.listen).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %listener.local_addr()?, "dashboard at {scheme}://{}/", listener.local_addr()?);
    let following = tokio::spawn(dashboard.clone().run(stop.clone()));
    web::serve_with(listener, dashboard.router(), HttpLimits::dashboard(), tls.as_ref().map(web::HttpTls::web), stop).await;
    let _ = following.await;
    tracing::info!("dashboard stopped");
    Ok(())
}

/// Fetches `/` from the dashboard at `addr` (over HTTPS with `tls`) within `timeout`: Ok if it answers 200.
async fn check(addr: &str, tls: Option<&crate::tls::Tls>, timeout: Duration) -> anyhow::Result<()> {
    // A dashboard listening on every address is asked on loopback, a name its certificate carries.
    let addr = match addr.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        _ => addr.to_string(),
    };
    let answer = web::get(&addr, "/", tls, timeout, 12).await.map_err(|e| anyhow::anyhow!("the dashboard at {addr}: {e}"))?;
    match answer.as_slice() {
        [b'H', b'T', b'T', b'P', b'/', _, _, _, b' ', b'2', b'0', b'0'] => Ok(()),
        _ => anyhow::bail!("the dashboard at {addr} answered {:?}", String::from_utf8_lossy(&answer)),
    }
}
