//! `time-server`: the time server of Cristian's algorithm.
//!
//! Serves `synclab.time.v1.TimeService` (and the classroom baseline), `synclab.clock.v1.Clock`,
//! `grpc.health.v1.Health` and reflection, from a virtual clock (exact unless `--clock-offset` or
//! `--clock-drift-ppm` say otherwise). Stops cleanly on SIGTERM or SIGINT.

use anyhow::Context as _;
use clap::Parser;
use synclab_core::duration::format_nanos;

use super::{Daemon, ServiceArgs};
use crate::cli::{ClockArgs, NtpServerArgs, parse_nonnegative_nanos};
use crate::clock::{ClockSet, LiveClock};
use crate::cristian;
use crate::ntp::nts;
use crate::ntp::{KeLimits, NtpServer, NtsKeServer};
use crate::server;

/// synclab's time server for Cristian's algorithm.
#[derive(Debug, Parser)]
#[command(name = "time-server", version)]
struct Args {
    /// Address to serve gRPC on.
    #[arg(long, env = "SYNCLAB_LISTEN", default_value = "0.0.0.0:50051")]
    listen: String,
    /// The server's clock name, reported to clients.
    #[arg(long, env = "SYNCLAB_NAME", default_value = "time-server")]
    name: String,
    /// How far this server's clock may be from true time, as told to clients (added to their bound).
    #[arg(long, env = "SYNCLAB_ROOT_DISPERSION", value_name = "DURATION", default_value = "0", value_parser = parse_nonnegative_nanos)]
    root_dispersion: i64,
    /// Runtime worker threads; 0 runs everything on one thread, which gives the lowest and steadiest
    /// latency (and so the best sync accuracy).
    #[arg(long, env = "SYNCLAB_WORKER_THREADS", default_value_t = 0)]
    worker_threads: usize,
    #[command(flatten)]
    ntp: NtpServerArgs,
    #[command(flatten)]
    clock: ClockArgs,
    #[command(flatten)]
    service: ServiceArgs,
}

/// Runs the time server (the `time-server` binary, or `synclab` invoked under that name).
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    super::run(&args.service.clone(), args.worker_threads, |daemon| run(args, daemon))
}

async fn run(args: Args, mut daemon: Daemon) -> anyhow::Result<()> {
    let clock = LiveClock::new(args.name.clone(), args.clock.config())?;
    let listener = server::bind(&args.listen).await?;
    let stop = daemon.stop();
    let clocks = ClockSet::new(vec![clock.clone()]);
    daemon.serve_metrics(clocks.clone()).await?;
    let services = cristian::services(clock.clone(), args.root_dispersion.unsigned_abs(), daemon.tls());
    let server = daemon.with_lab(services, clocks).build().await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        name = %args.name,
        clock_offset = %format_nanos(args.clock.clock_offset as f64),
        clock_drift_ppm = args.clock.clock_drift_ppm,
        "time server listening"
    );
    let mut ke_task = None;
    let ntp = match &args.ntp.ntp_listen {
        Some(addr) => {
            let config = synclab_core::ntp::ServerConfig {
                root_dispersion_nanos: args.root_dispersion.unsigned_abs(),
                rate_per_sec: args.ntp.ntp_rate_limit,
                burst: args.ntp.ntp_burst,
                ..Default::default()
            };
            let mut ntp = NtpServer::bind(addr, clock.clone(), config)
                .await
                .with_context(|| format!("cannot serve NTP on '{addr}' (--ntp-listen)"))?;
            let ntp_addr = ntp.local_addr()?;
            if let Some(ke_addr) = args.ntp.nts_ke_addr() {
                let tls = &args.service.tls;
                let (Some(cert), Some(key)) = (tls.tls_cert.as_deref(), tls.tls_key.as_deref()) else {
                    anyhow::bail!("NTS (--nts, --nts-ke-listen or --ntp-require-nts) needs --tls-cert and --tls-key");
                };
                let master = nts::new_master_keys().context("cannot make the NTS master key")?;
                let ke = match daemon.tls().cloned() {
                    // The service's TLS rotates (--tls-reload-interval, SIGHUP): each session takes the
                    // certificate in use when it begins.
                    Some(tls) => {
                        NtsKeServer::bind(
                            &ke_addr,
                            move || tls.nts_ke_server_config(),
                            master.clone(),
                            ntp_addr.port(),
                            KeLimits::default(),
                        )
                        .await
                    }
                    None => {
                        let config = crate::tls::nts_ke_server_config(cert, key)?;
                        NtsKeServer::bind(&ke_addr, config, master.clone(), ntp_addr.port(), KeLimits::default()).await
                    }
                }
                .with_context(|| format!("cannot serve NTS-KE on '{ke_addr}' (--nts-ke-listen)"))?;
                tracing::info!(addr = %ke.local_addr()?, require = args.ntp.ntp_require_nts, "serving NTS-KE");
                ntp = ntp.with_nts(master, args.ntp.ntp_require_nts);
                ke_task = Some(tokio::spawn(ke.serve(stop.clone())));
            }
            tracing::info!(addr = %ntp_addr, "answering NTP");
            Some(tokio::spawn(ntp.serve(stop.clone())))
        }
        None if args.ntp.nts_ke_addr().is_some() => anyhow::bail!("NTS needs --ntp-listen (the NTP it authenticates)"),
        None => None,
    };
    server.serve(listener, stop).await?;
    if let Some(ntp) = ntp {
        ntp.await.context("the NTP task failed")?.context("the NTP server failed")?;
    }
    if let Some(ke) = ke_task {
        ke.await.context("the NTS-KE task failed")?.context("the NTS-KE server failed")?;
    }
    daemon.finish().await;
    tracing::info!("time server stopped");
    Ok(())
}
