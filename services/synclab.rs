//! `synclab`: the user CLI. Syncs clocks with Cristian's algorithm, checks health, reads clocks.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::future::join_all;
use synclab::client::{CristianClient, SyncReport, check_health, read_clock};
use synclab::clock_service::ClockService;
use synclab::config::{ClockArgs, LogArgs, parse_duration};
use synclab::cristian::Estimator;
use synclab::duration::{format_nanos, parse_signed_nanos};
use synclab::live_clock::{ClockSet, LiveClock};
use synclab::proto::clock::clock_server::ClockServer;
use synclab::proto::{format_rfc3339, timestamp_to_nanos};
use synclab::{server, telemetry};
use tonic_health::ServingStatus;

#[path = "synclab/berkeley.rs"]
mod berkeley;
#[path = "synclab/election.rs"]
mod election;

/// synclab: clock synchronization and leader election you can run, probe and break.
#[derive(Debug, Parser)]
#[command(name = "synclab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sync one or more devices' clocks with a time server (Cristian's algorithm).
    Cristian(CristianArgs),
    /// Exit 0 if a server reports SERVING, 1 otherwise (for container health checks).
    Healthcheck(HealthArgs),
    /// Read a node's virtual clock next to true time (synclab.clock.v1.Clock/Read).
    Clock(ClockReadArgs),
    /// Follow a Berkeley group: `status` once, `watch` after every round.
    Berkeley(berkeley::BerkeleyArgs),
    /// Follow an election group: `status` once, `watch` on every change.
    Election(election::ElectionArgs),
}

#[derive(Debug, clap::Args)]
struct CristianArgs {
    /// The time server, as host:port or http://host:port.
    #[arg(long, env = "SYNCLAB_SERVER", default_value = "localhost:50051")]
    server: String,
    /// A device to sync, as NAME or NAME=OFFSET[/DRIFT_PPM] to give it its own wrong clock (e.g.
    /// mobile=+3s/40). Repeat to sync several devices at once; without it one device, "device", is synced.
    #[arg(long = "device", env = "SYNCLAB_DEVICE", value_name = "NAME[=OFFSET[/PPM]]", value_delimiter = ',', value_parser = parse_device)]
    devices: Vec<Device>,
    /// Exchanges per sync; the one with the smallest round trip is used.
    #[arg(long, env = "SYNCLAB_SAMPLES", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1000))]
    samples: u16,
    /// Which offset to apply: NTP's four-timestamp one or Cristian's T3 + RTT/2. Both are reported.
    #[arg(long, env = "SYNCLAB_ESTIMATOR", value_enum, default_value_t = Estimator::Ntp)]
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
    log: LogArgs,
}

#[derive(Debug, Clone)]
struct Device {
    name: String,
    offset: Option<i64>,
    drift_ppm: Option<f64>,
}

fn parse_device(text: &str) -> Result<Device, String> {
    let (name, clock) = match text.split_once('=') {
        Some((name, clock)) => (name.trim(), Some(clock)),
        None => (text.trim(), None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("device name '{name}' must be non-empty letters, digits, '-', '_' or '.'"));
    }
    let mut device = Device { name: name.to_string(), offset: None, drift_ppm: None };
    if let Some(clock) = clock {
        let (offset, drift) = match clock.split_once('/') {
            Some((o, d)) => (o, Some(d)),
            None => (clock, None),
        };
        device.offset = Some(parse_signed_nanos(offset).map_err(|e| format!("device '{name}': {e}"))?);
        if let Some(d) = drift {
            let ppm: f64 = d.trim().parse().map_err(|_| format!("device '{name}': drift '{d}' is not a number of ppm"))?;
            if !ppm.is_finite() || ppm.abs() > synclab::clock::MAX_DRIFT_PPM {
                return Err(format!("device '{name}': drift {d} ppm is outside ±{} ppm", synclab::clock::MAX_DRIFT_PPM));
            }
            device.drift_ppm = Some(ppm);
        }
    }
    Ok(device)
}

#[derive(Debug, clap::Args)]
struct HealthArgs {
    /// The server, as host:port or http://host:port.
    #[arg(long, env = "SYNCLAB_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// The service to ask about; empty asks about the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
    /// Deadline of the check.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration, allow_hyphen_values = true)]
    timeout: Duration,
}

#[derive(Debug, clap::Args)]
struct ClockReadArgs {
    /// The node, as host:port or http://host:port.
    #[arg(long, env = "SYNCLAB_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// The clock's name, for a node that keeps several.
    #[arg(long, default_value = "")]
    name: String,
    /// Deadline of the call.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration, allow_hyphen_values = true)]
    timeout: Duration,
    /// Print the reading as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Cristian(args) => cristian(args).await,
            Command::Healthcheck(args) => healthcheck(args).await,
            Command::Clock(args) => clock(args).await,
            Command::Berkeley(args) => berkeley::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Election(args) => election::run(args).await.map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn healthcheck(args: HealthArgs) -> anyhow::Result<ExitCode> {
    match check_health(&args.addr, &args.service, args.timeout).await {
        Ok(status) if status == tonic_health::pb::health_check_response::ServingStatus::Serving => Ok(ExitCode::SUCCESS),
        Ok(status) => {
            eprintln!("{}: {}", args.addr, status.as_str_name());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn clock(args: ClockReadArgs) -> anyhow::Result<ExitCode> {
    let r = read_clock(&args.addr, &args.name, args.timeout).await?;
    if args.json {
        let value = serde_json::json!({
            "clock": r.clock,
            "clock_time": timestamp_to_nanos(r.clock_time.as_ref(), "clock_time").map(format_rfc3339).ok(),
            "true_time": timestamp_to_nanos(r.true_time.as_ref(), "true_time").map(format_rfc3339).ok(),
            "true_offset_us": r.true_offset_nanos as f64 / 1e3,
            "drift_ppm": r.drift_ppm,
            "frequency_correction_ppm": r.frequency_correction_ppm,
            "adjustments": r.adjustments,
            "steps": r.steps,
            "pending_slew_us": r.pending_slew_nanos as f64 / 1e3,
        });
        println!("{value}");
    } else {
        let time = |ts: Option<&prost_types::Timestamp>| timestamp_to_nanos(ts, "time").map(format_rfc3339).unwrap_or_else(|e| e.to_string());
        println!("{} at {}", r.clock, args.addr);
        println!("  clock time   {}", time(r.clock_time.as_ref()));
        println!("  true time    {}", time(r.true_time.as_ref()));
        println!("  true offset  {}", format_nanos(r.true_offset_nanos as f64));
        println!("  drift        {:+} ppm (correction {:+} ppm)", r.drift_ppm, r.frequency_correction_ppm);
        println!("  adjustments  {} (steps: {}), pending slew {}", r.adjustments, r.steps, format_nanos(r.pending_slew_nanos as f64));
    }
    Ok(ExitCode::SUCCESS)
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
            synclab::clock::AdjustmentKind::Step => "step",
            synclab::clock::AdjustmentKind::Slew => "slew",
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

async fn cristian(args: CristianArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(args.log.log_format, &args.log.log_level)?;
    let devices = if args.devices.is_empty() {
        vec![Device { name: "device".into(), offset: None, drift_ppm: None }]
    } else {
        args.devices.clone()
    };
    let mut names = std::collections::HashSet::new();
    let mut clocks = Vec::new();
    for d in &devices {
        anyhow::ensure!(names.insert(d.name.clone()), "invalid value for '--device': '{}' is named twice", d.name);
        let mut config = args.clock.config();
        config.offset_nanos = d.offset.unwrap_or(config.offset_nanos);
        config.drift_ppm = d.drift_ppm.unwrap_or(config.drift_ppm);
        clocks.push(LiveClock::new(d.name.clone(), config).with_context(|| format!("device '{}'", d.name))?);
    }
    let mut clients = Vec::new();
    for _ in &clocks {
        clients.push(CristianClient::new(&args.server, args.timeout).context("invalid value for '--server'")?);
    }

    let Some(interval) = args.interval else {
        let results = join_all(clients.iter_mut().zip(&clocks).map(|(c, clock)| c.sync(clock, args.samples.into(), args.estimator))).await;
        let mut failed = false;
        for (result, clock) in results.iter().zip(&clocks) {
            match result {
                Ok(report) => print_report(report, args.json),
                Err(e) => {
                    eprintln!("error: {}: {e}", clock.name());
                    failed = true;
                }
            }
        }
        if clocks.len() > 1 && !failed {
            let d = disagreement(&clocks);
            if args.json {
                println!("{}", serde_json::json!({ "devices": clocks.len(), "disagreement_us": d / 1e3 }));
            } else {
                println!("{} devices now disagree by {} (true)", clocks.len(), format_nanos(d).trim_start_matches('+'));
            }
        }
        return Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS });
    };

    let stop_rx = server::stop_on_signal();
    let mut health = None;
    let mut serving = None;
    if let Some(listen) = &args.listen {
        let listener = server::bind(listen).await?;
        let (mut routes, reporter) = server::base_routes()?;
        routes.add_service(ClockServer::new(ClockService::new(ClockSet::new(clocks.clone()))));
        reporter.set_service_status("", ServingStatus::NotServing).await;
        tracing::info!(addr = %listener.local_addr()?, "serving Clock/Read and health");
        serving = Some(tokio::spawn(server::serve(listener, routes.routes(), server::stopped(stop_rx.clone()))));
        health = Some(reporter);
    }

    let mut stop = stop_rx.clone();
    let mut rounds = 0u64;
    let mut all_synced = false;
    let mut next = tokio::time::Instant::now();
    // Until every device has synced once, retry soon (doubling from 100 ms up to the interval), so a
    // client started before its server syncs as soon as the server is up.
    let mut retry = Duration::from_millis(100).min(interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let results = join_all(clients.iter_mut().zip(&clocks).map(|(c, clock)| c.sync(clock, args.samples.into(), args.estimator))).await;
        let mut ok = true;
        for (result, clock) in results.iter().zip(&clocks) {
            match result {
                Ok(report) => {
                    log_report(report);
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
            if let Some(h) = &health {
                h.set_service_status("", ServingStatus::Serving).await;
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
    if let Some(task) = serving {
        // Stop the server too when the loop ended by --count.
        drop(stop_rx);
        task.abort();
        let _ = task.await;
    }
    tracing::info!(rounds, "stopped");
    Ok(ExitCode::SUCCESS)
}
