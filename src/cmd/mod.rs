//! `synclab`'s user CLI, as a library function ([`main`]): syncs clocks with Cristian's algorithm, checks
//! health, reads clocks, follows the Berkeley and election groups, serves the dashboard, makes
//! certificates and runs the fault lab. One module per subcommand that needs more than a few lines.
//!
//! This is binaries' code (`src/main.rs` calls [`main`]; invoked under a service's name that binary runs
//! the service instead, [`crate::daemon`]), so its errors are `anyhow`, printed once at exit.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use synclab_core::duration::format_nanos;

use crate::cli::{TlsArgs, parse_duration};
use crate::proto::{format_rfc3339, timestamp_to_nanos};
use crate::rpc::{check_health, read_clock};

/// `println!` for every subcommand (this definition shadows std's in this module and those below it): a
/// line to stdout that, when stdout's reader has gone (`synclab ... | head`), ends the process quietly with
/// status 0 instead of panicking. The CLI leaves SIGPIPE ignored, as Rust starts it: a default SIGPIPE
/// would also kill it on a write to a socket whose peer hung up (a plaintext client meeting a TLS
/// server, a browser leaving the dashboard), silently, with status 141.
macro_rules! println {
    () => {
        $crate::cmd::print_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cmd::print_line(format_args!($($arg)*))
    };
}

/// `print!` likewise (for text that ends its own lines). Only `lab` uses it, which a build without the
/// `lab-runner` feature leaves out.
#[allow(unused_macros)]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::cmd::print_text(format_args!($($arg)*), false)
    };
}

/// Writes one line to stdout; see [`println!`] above.
#[doc(hidden)]
pub fn print_line(line: std::fmt::Arguments<'_>) {
    print_text(line, true);
}

/// Writes `text` to stdout, and a newline if `newline`; see [`println!`] above.
#[doc(hidden)]
pub fn print_text(text: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let end: &[u8] = if newline { b"\n" } else { b"" };
    match out.write_fmt(text).and_then(|()| out.write_all(end)).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

pub mod berkeley;
pub mod cristian;
pub mod dashboard;
pub mod election;
#[cfg(feature = "lab-runner")]
pub mod lab;

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
    Cristian(cristian::CristianArgs),
    /// Exit 0 if a server reports SERVING, 1 otherwise (for container health checks).
    Healthcheck(HealthArgs),
    /// Read a node's virtual clock next to true time (synclab.clock.v1.Clock/Read).
    Clock(ClockReadArgs),
    /// Follow a Berkeley group: `status` once, `watch` after every round.
    Berkeley(berkeley::BerkeleyArgs),
    /// Follow an election group: `status` once, `watch` on every change.
    Election(election::ElectionArgs),
    /// Serve a live web page of the lab: clocks, Berkeley rounds and elections.
    Dashboard(dashboard::DashboardArgs),
    /// Make a lab CA and a certificate and key for each name (every compose service, observer and lab
    /// when none is given), for mutual TLS.
    Certs(CertsArgs),
    /// Break a group on purpose: seeded fault scenarios, a recorded history, checkers and a report.
    #[cfg(feature = "lab-runner")]
    Lab(lab::LabArgs),
}

#[derive(Debug, clap::Args)]
struct CertsArgs {
    /// The folder to write ca.pem, ca.key, NAME.pem and NAME.key into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: std::path::PathBuf,
    /// Replace an existing CA (and so invalidate every certificate it signed) instead of reusing it.
    #[arg(long)]
    new_ca: bool,
    /// The identities to make certificates for (each certificate's Common Name).
    names: Vec<String>,
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
    #[command(flatten)]
    tls: TlsArgs,
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
    #[command(flatten)]
    tls: TlsArgs,
}

/// Runs the CLI on the process's arguments (what `synclab` does when not invoked as a service).
pub fn main() -> ExitCode {
    // SIGPIPE stays ignored (see `println!` above): a peer that hangs up costs one call, never the process.
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
            Command::Cristian(args) => cristian::run(args).await,
            Command::Healthcheck(args) => healthcheck(args).await,
            Command::Clock(args) => clock(args).await,
            Command::Berkeley(args) => berkeley::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Election(args) => election::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Certs(args) => certs(args),
            #[cfg(feature = "lab-runner")]
            Command::Lab(args) => lab::run(args).await,
            Command::Dashboard(args) => dashboard::run(args).await.map(|()| ExitCode::SUCCESS),
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

fn certs(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let made = crate::tls::certs::make(&args.out, &args.names, args.new_ca)?;
    let dir = args.out.display();
    if made.new_ca {
        println!("created the CA: {dir}/ca.pem (its key {dir}/ca.key: keep it apart from the services)");
    } else {
        println!("kept the CA in {dir}/ca.pem (--new-ca replaces it)");
    }
    for name in &made.names {
        println!("{name}: {dir}/{name}.pem, {dir}/{name}.key");
    }
    Ok(ExitCode::SUCCESS)
}

async fn healthcheck(args: HealthArgs) -> anyhow::Result<ExitCode> {
    // A container's health check runs beside the service it checks, on the same CPUs: at the least
    // priority it gives way whenever the service wants a CPU, so a check that lands in a failover does
    // not delay it (it waits instead; its deadline is seconds, a failover's tens of milliseconds).
    #[cfg(target_os = "linux")]
    if let Err(e) = crate::net::yield_to_services() {
        tracing::debug!(error = %e, "cannot lower the health check's priority");
    }
    match check_health(&args.tls.dialer()?, &args.addr, &args.service, args.timeout).await {
        Ok(tonic_health::pb::health_check_response::ServingStatus::Serving) => Ok(ExitCode::SUCCESS),
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
    let r = read_clock(&args.tls.dialer()?, &args.addr, &args.name, args.timeout).await?;
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
        let time =
            |ts: Option<&prost_types::Timestamp>| timestamp_to_nanos(ts, "time").map(format_rfc3339).unwrap_or_else(|e| e.to_string());
        println!("{} at {}", r.clock, args.addr);
        println!("  clock time   {}", time(r.clock_time.as_ref()));
        println!("  true time    {}", time(r.true_time.as_ref()));
        println!("  true offset  {}", format_nanos(r.true_offset_nanos as f64));
        println!("  drift        {:+} ppm (correction {:+} ppm)", r.drift_ppm, r.frequency_correction_ppm);
        println!("  adjustments  {} (steps: {}), pending slew {}", r.adjustments, r.steps, format_nanos(r.pending_slew_nanos as f64));
    }
    Ok(ExitCode::SUCCESS)
}
