//! `time-server`: the time server of Cristian's algorithm.
//!
//! Serves `synclab.time.v1.TimeService` (and the classroom baseline), `synclab.clock.v1.Clock`,
//! `grpc.health.v1.Health` and reflection, from a virtual clock (exact unless `--clock-offset` or
//! `--clock-drift-ppm` say otherwise). Stops cleanly on SIGTERM or SIGINT.

use anyhow::Context as _;
use clap::Parser;
use synclab::cli::{ClockArgs, LabArgs, LogArgs, MetricsArgs, NtpServerArgs, TlsArgs, parse_nonnegative_nanos};
use synclab::clock::ClockSet;
use synclab::clock::LiveClock;
use synclab::ntp::NtpServer;
use synclab::server::{self, Stop};
use synclab::{cristian, telemetry};
use synclab_core::duration::format_nanos;

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
    tls: TlsArgs,
    #[command(flatten)]
    lab: LabArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    log: LogArgs,
}

/// Runs the time server (the `time-server` binary, or `synclab` invoked under that name).
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log.log_format, &args.log.log_level)?;
    let runtime = if args.worker_threads == 0 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.worker_threads).enable_all().build()
    }
    .context("cannot start the runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let clock = LiveClock::new(args.name.clone(), args.clock.config())?;
    let listener = server::bind(&args.listen).await?;
    let tls = args.tls.load()?;
    let stop = Stop::on_signal();
    let metrics = args.metrics.serve(ClockSet::new(vec![clock.clone()]), stop.clone()).await?;
    let server = cristian::server(clock.clone(), args.root_dispersion.unsigned_abs(), tls.as_ref(), args.lab.lab).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        name = %args.name,
        clock_offset = %format_nanos(args.clock.clock_offset as f64),
        clock_drift_ppm = args.clock.clock_drift_ppm,
        "time server listening"
    );
    let ntp = match &args.ntp.ntp_listen {
        Some(addr) => {
            let config = synclab_core::ntp::ServerConfig {
                root_dispersion_nanos: args.root_dispersion.unsigned_abs(),
                rate_per_sec: args.ntp.ntp_rate_limit,
                burst: args.ntp.ntp_burst,
                ..Default::default()
            };
            let ntp = NtpServer::bind(addr, clock.clone(), config)
                .await
                .with_context(|| format!("cannot serve NTP on '{addr}' (--ntp-listen)"))?;
            tracing::info!(addr = %ntp.local_addr()?, "answering NTP");
            Some(tokio::spawn(ntp.serve(stop.clone())))
        }
        None => None,
    };
    server.serve(listener, stop).await?;
    if let Some(ntp) = ntp {
        ntp.await.context("the NTP task failed")?.context("the NTP server failed")?;
    }
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    tracing::info!("time server stopped");
    Ok(())
}
