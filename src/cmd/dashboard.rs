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
        return check(&args.listen, args.timeout.max(Duration::from_secs(1))).await;
    }
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

/// Fetches `/` from the dashboard at `addr` within `timeout`: Ok if it answers 200.
async fn check(addr: &str, timeout: Duration) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| anyhow::anyhow!("the dashboard at {addr} did not answer within {timeout:?}"))?
        .map_err(|e| anyhow::anyhow!("the dashboard at {addr}: {e}"))?;
    match &head {
        [b'H', b'T', b'T', b'P', b'/', _, _, _, b' ', b'2', b'0', b'0'] => Ok(()),
        _ => anyhow::bail!("the dashboard at {addr} answered {:?}", String::from_utf8_lossy(&head)),
    }
}
