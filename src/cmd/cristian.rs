//! `synclab cristian`: syncs one or more devices' clocks with a time server, once or every interval.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{ClockArgs, Device, LabArgs, LogArgs, MetricsArgs, Protocol, TlsArgs, named, parse_device, parse_duration};
use crate::clock::{ClockService, ClockSet, LiveClock};
use crate::cristian::{CristianClient, SyncError, SyncReport, discipline_clock};
use crate::ntp::nts::host_of;
use crate::ntp::{KeTarget, NtpClient, NtpMode};
use crate::proto::clock::clock_server::ClockServer;
use crate::server::{self, Services, Stop};
use crate::telemetry;
use anyhow::Context as _;
use futures::future::join_all;
use synclab_core::clock::AdjustmentKind;
use synclab_core::cristian::Estimator;
use synclab_core::discipline::Discipline;
use synclab_core::duration::format_nanos;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

#[derive(Debug, clap::Args)]
pub struct CristianArgs {
    /// The time server, as host:port or http://host:port (with --protocol ntp: any NTP server, host:port).
    #[arg(long, env = "SYNCLAB_SERVER", default_value = "localhost:50051")]
    server: String,
    /// The protocol to sync over: synclab's gRPC TimeService, or NTPv4 over UDP.
    #[arg(long, env = "SYNCLAB_PROTOCOL", value_parser = named::<Protocol>(), default_value = "grpc")]
    protocol: Protocol,
    /// With --protocol ntp: ask for interleaved replies (falling back to basic where the server does not
    /// interleave), or basic mode only.
    #[arg(long, env = "SYNCLAB_NTP_MODE", value_parser = named::<NtpMode>(), default_value = "interleaved")]
    ntp_mode: NtpMode,
    /// With --protocol ntp: authenticate every exchange with Network Time Security (RFC 8915): keys and
    /// cookies from NTS-KE (TLS 1.3, the certificate checked against --nts-ca), NTP to the server and
    /// port NTS-KE names. SYNCLAB_NTS takes 1/0, true/false, yes/no or on/off.
    #[arg(long, env = "SYNCLAB_NTS", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    nts: bool,
    /// With --nts: the NTS-KE server, host:port (default: --server's host, port 4460). Its certificate
    /// must name the host.
    #[arg(long, env = "SYNCLAB_NTS_KE", value_name = "HOST:PORT", requires = "nts")]
    nts_ke: Option<String>,
    /// With --nts: the CA that signed the NTS-KE server's certificate (PEM; default: --tls-ca).
    #[arg(long, env = "SYNCLAB_NTS_CA", value_name = "FILE", requires = "nts")]
    nts_ca: Option<std::path::PathBuf>,
    /// A device to sync, as NAME or NAME=OFFSET[/DRIFT_PPM] to give it its own wrong clock (e.g.
    /// mobile=+3s/40). Repeat to sync several devices at once; without it one device, "device", is synced.
    #[arg(long = "device", env = "SYNCLAB_DEVICE", value_name = "NAME[=OFFSET[/PPM]]", value_delimiter = ',', value_parser = parse_device)]
    devices: Vec<Device>,
    /// Exchanges per sync; the one with the smallest round trip is used.
    #[arg(long, env = "SYNCLAB_SAMPLES", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1000))]
    samples: u16,
    /// Which offset to apply: NTP's four-timestamp one or Cristian's T3 + RTT/2. Both are reported.
    #[arg(long, env = "SYNCLAB_ESTIMATOR", value_parser = named::<Estimator>(), default_value = "ntp")]
    estimator: Estimator,
    /// Deadline of each call to the server.
    #[arg(long, env = "SYNCLAB_TIMEOUT", value_name = "DURATION", default_value = "1s", value_parser = parse_duration, allow_hyphen_values = true)]
    timeout: Duration,
    /// Keep syncing at this interval instead of once.
    #[arg(long, env = "SYNCLAB_INTERVAL", value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    interval: Option<Duration>,
    /// With --interval: stop after this many syncs (default: until SIGTERM).
    #[arg(long, env = "SYNCLAB_COUNT", requires = "interval")]
    count: Option<u64>,
    /// With --interval: serve Clock/Read and health on this address (health turns SERVING once every
    /// device has synced).
    #[arg(long, env = "SYNCLAB_LISTEN", requires = "interval")]
    listen: Option<String>,
    /// Print each sync as one JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    clock: ClockArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    lab: LabArgs,
    /// With --interval: the devices' clocks and syncs as Prometheus metrics.
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    log: LogArgs,
}

fn print_report(report: &SyncReport, json: bool) {
    if json {
        match serde_json::to_string(report) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("error: cannot encode the report: {e}"),
        }
        return;
    }
    let us = |v: f64| format_nanos(v * 1e3);
    println!("{}: synced with {} ({}), {} samples", report.device, report.server_name, report.server, report.samples);
    println!("  server time   {}", report.server_time);
    println!("  round trip    {} ({} on the wire)", us(report.rtt_us).trim_start_matches('+'), us(report.delay_us).trim_start_matches('+'));
    println!(
        "  offset        {} by {} (NTP {}, Cristian {}), applied as a {}",
        us(report.offset_us),
        match report.estimator {
            Estimator::Ntp => "NTP",
            Estimator::Cristian => "Cristian",
        },
        us(report.ntp_offset_us),
        us(report.cristian_offset_us),
        match report.adjustment {
            AdjustmentKind::Step => "step",
            AdjustmentKind::Slew => "slew",
        }
    );
    println!("  error bound   ±{}", us(report.error_bound_us).trim_start_matches('+'));
    println!("  synced time   {}", report.synced_time);
    println!("  true error    {} (was {})", us(report.true_error_us), us(report.true_offset_before_us));
}

fn log_report(report: &SyncReport) {
    tracing::info!(
        device = %report.device,
        server_time = %report.server_time,
        rtt_us = report.rtt_us,
        offset_us = report.offset_us,
        error_bound_us = report.error_bound_us,
        adjustment = ?report.adjustment,
        synced_time = %report.synced_time,
        true_error_us = report.true_error_us,
        "synced"
    );
}

/// The devices' true disagreement: max − min of their true errors, in ns.
fn disagreement(clocks: &[LiveClock]) -> f64 {
    let offsets: Vec<f64> = clocks.iter().map(|c| c.settled_offset()).collect();
    let max = offsets.iter().copied().fold(f64::MIN, f64::max);
    let min = offsets.iter().copied().fold(f64::MAX, f64::min);
    max - min
}

/// One clock per device, each with its own offset and drift where `--device` gave them.
fn device_clocks(args: &CristianArgs) -> anyhow::Result<Vec<LiveClock>> {
    let devices =
        if args.devices.is_empty() { vec![Device { name: "device".into(), offset: None, drift_ppm: None }] } else { args.devices.clone() };
    let mut names = std::collections::HashSet::new();
    let mut clocks = Vec::new();
    for d in &devices {
        anyhow::ensure!(names.insert(d.name.clone()), "invalid value for '--device': '{}' is named twice", d.name);
        let mut config = args.clock.config();
        config.offset_nanos = d.offset.unwrap_or(config.offset_nanos);
        config.drift_ppm = d.drift_ppm.unwrap_or(config.drift_ppm);
        clocks.push(LiveClock::new(d.name.clone(), config).with_context(|| format!("device '{}'", d.name))?);
    }
    Ok(clocks)
}

/// A device's client, of either protocol.
enum Client {
    Grpc(CristianClient),
    Ntp(NtpClient),
}

impl Client {
    async fn sync(&mut self, clock: &LiveClock, samples: usize, estimator: Estimator) -> Result<SyncReport, SyncError> {
        match self {
            Client::Grpc(c) => c.sync(clock, samples, estimator).await,
            Client::Ntp(c) => c.sync(clock, samples, estimator).await,
        }
    }
}

/// Syncs every device at once, each over its own connection.
async fn sync_all(clients: &mut [Client], clocks: &[LiveClock], args: &CristianArgs) -> Vec<Result<SyncReport, SyncError>> {
    join_all(clients.iter_mut().zip(clocks).map(|(c, clock)| c.sync(clock, args.samples.into(), args.estimator))).await
}

pub async fn run(args: CristianArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(args.log.log_format, &args.log.log_level)?;
    let clocks = device_clocks(&args)?;
    // With --nts, --tls-ca alone may name NTS-KE's CA (--nts-ca's default): TLS for the device's own
    // services (--interval) only when the three flags are given.
    let tls = if args.nts && args.tls.tls_cert.is_none() && args.tls.tls_key.is_none() { None } else { args.tls.load()? };
    let dialer = crate::rpc::Dialer::new(tls.clone());
    let nts = nts_target(&args)?;
    let mut clients = Vec::new();
    for _ in &clocks {
        clients.push(match args.protocol {
            Protocol::Grpc => {
                Client::Grpc(CristianClient::dial(&args.server, args.timeout, &dialer).context("invalid value for '--server'")?)
            }
            Protocol::Ntp => Client::Ntp(match &nts {
                Some(target) => NtpClient::new(&args.server, args.timeout, args.ntp_mode).with_nts(target.clone()),
                None => NtpClient::new(&args.server, args.timeout, args.ntp_mode),
            }),
        });
    }
    match args.interval {
        None => sync_once(&mut clients, &clocks, &args).await,
        Some(interval) => sync_every(interval, &mut clients, &clocks, tls.as_ref(), &args).await,
    }
}

/// With --nts: where NTS-KE runs and the CA its certificate must chain to.
fn nts_target(args: &CristianArgs) -> anyhow::Result<Option<KeTarget>> {
    if !args.nts {
        return Ok(None);
    }
    anyhow::ensure!(args.protocol == Protocol::Ntp, "--nts needs --protocol ntp");
    let ca = args
        .nts_ca
        .as_ref()
        .or(args.tls.tls_ca.as_ref())
        .context("--nts needs --nts-ca (or --tls-ca): the CA of the NTS-KE server's certificate")?;
    let config = crate::tls::nts_ke_client_config(ca)?;
    let addr = match &args.nts_ke {
        Some(addr) => addr.clone(),
        None => match host_of(&args.server) {
            v6 if v6.contains(':') => format!("[{v6}]:{}", synclab_core::ntp::nts::ke::DEFAULT_KE_PORT),
            host => format!("{host}:{}", synclab_core::ntp::nts::ke::DEFAULT_KE_PORT),
        },
    };
    // The whole session (connect, handshake, request, response) within the sync's deadline or 5 s.
    Ok(Some(KeTarget { addr, config, timeout: args.timeout.max(std::time::Duration::from_secs(5)) }))
}

/// One sync of every device: a report each, then their disagreement; exit 1 if any failed.
async fn sync_once(clients: &mut [Client], clocks: &[LiveClock], args: &CristianArgs) -> anyhow::Result<ExitCode> {
    let results = sync_all(clients, clocks, args).await;
    let mut failed = false;
    for (result, clock) in results.iter().zip(clocks) {
        match result {
            Ok(report) => print_report(report, args.json),
            Err(e) => {
                eprintln!("error: {}: {e}", clock.name());
                failed = true;
            }
        }
    }
    if clocks.len() > 1 && !failed {
        let d = disagreement(clocks);
        if args.json {
            println!("{}", serde_json::json!({ "devices": clocks.len(), "disagreement_us": d / 1e3 }));
        } else {
            println!("{} devices now disagree by {} (true)", clocks.len(), format_nanos(d).trim_start_matches('+'));
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Serves the devices' clocks (`Clock/Read`) and health, NOT_SERVING until the first sync succeeds.
async fn serve_clocks(
    listen: &str,
    clocks: &[LiveClock],
    tls: Option<&crate::tls::Tls>,
    lab: bool,
    stop: Stop,
) -> anyhow::Result<(tokio::task::JoinHandle<Result<(), server::ServerError>>, HealthReporter)> {
    let listener = server::bind(listen).await?;
    let services = Services::new().tls(tls).service(ClockServer::new(ClockService::new(ClockSet::new(clocks.to_vec()))));
    let server = crate::daemon::with_lab(services, lab, ClockSet::new(clocks.to_vec())).build().await?;
    let reporter = server.health();
    reporter.set_service_status("", ServingStatus::NotServing).await;
    tracing::info!(addr = %listener.local_addr()?, "serving Clock/Read and health");
    Ok((tokio::spawn(server.serve(listener, stop)), reporter))
}

/// Syncs every `interval` until SIGTERM (or `--count` syncs), logging each sync. Until every device
/// has synced once it retries sooner (doubling from 100 ms up to the interval), so a client started
/// before its server syncs as soon as the server is up.
async fn sync_every(
    interval: Duration,
    clients: &mut [Client],
    clocks: &[LiveClock],
    tls: Option<&crate::tls::Tls>,
    args: &CristianArgs,
) -> anyhow::Result<ExitCode> {
    let (stop_handle, stop_rx) = Stop::new();
    tokio::spawn({
        let stop_handle = stop_handle.clone();
        async move {
            server::shutdown_signal().await;
            stop_handle.stop();
        }
    });
    // A device that runs until stopped is a service: its certificates rotate as every service's do.
    args.tls.keep_current(tls, &stop_rx);
    let serving = match &args.listen {
        Some(listen) => Some(serve_clocks(listen, clocks, tls, args.lab.lab, stop_rx.clone()).await?),
        None => None,
    };
    let metrics = args.metrics.serve(ClockSet::new(clocks.to_vec()), tls, stop_rx.clone()).await?;
    let stop = stop_rx.clone();
    let mut rounds = 0u64;
    let mut all_synced = false;
    let mut next = tokio::time::Instant::now();
    let mut retry = Duration::from_millis(100).min(interval);
    // Frequency discipline: each sync's correction over the time since the last one is the clock's
    // frequency error, which the discipline learns (as Berkeley slaves do), so the clock drifts less
    // between syncs. The true error just before a sync (true_offset_before) is the holdover.
    let mut disciplines: Vec<Discipline> = clocks.iter().map(|_| Discipline::new()).collect();
    for clock in clocks {
        crate::cristian::metrics::start(clock.name());
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            () = stop.wait() => break,
        }
        // A sync waits on the server up to --timeout per sample: a stop does not wait for it.
        let results = tokio::select! {
            results = sync_all(clients, clocks, args) => results,
            () = stop.wait() => break,
        };
        let mut ok = true;
        for ((result, clock), discipline) in results.iter().zip(clocks).zip(&mut disciplines) {
            crate::cristian::metrics::record_sync(clock.name(), result.as_ref());
            match result {
                Ok(report) => {
                    let ppm = discipline_clock(clock, discipline, report).unwrap_or_else(|e| {
                        tracing::warn!(device = %clock.name(), error = %e, "cannot correct the frequency");
                        discipline.correction_ppm()
                    });
                    log_report(report);
                    tracing::info!(device = %report.device, holdover_us = report.true_offset_before_us, frequency_correction_ppm = ppm, "frequency");
                    if args.json {
                        print_report(report, true);
                    }
                }
                Err(e) => {
                    ok = false;
                    tracing::warn!(device = %clock.name(), error = %e, "sync failed; will retry");
                }
            }
        }
        if ok && !all_synced {
            all_synced = true;
            if let Some((_, health)) = &serving {
                health.set_service_status("", ServingStatus::Serving).await;
            }
        }
        next += if all_synced { interval } else { retry };
        next = next.max(tokio::time::Instant::now());
        retry = (retry * 2).min(interval);
        rounds += 1;
        if args.count.is_some_and(|n| rounds >= n) {
            break;
        }
    }
    if let Some((task, _)) = serving {
        // Stop the server too when the loop ended by --count.
        stop_handle.stop();
        let _ = task.await;
    }
    if let Some(metrics) = metrics {
        stop_handle.stop();
        let _ = metrics.await;
    }
    tracing::info!(rounds, "stopped");
    Ok(ExitCode::SUCCESS)
}
