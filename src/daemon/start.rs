//! The start-up every service shares, written once: logging, the runtime, the stop signal, TLS, the
//! metrics listener and the lab switch ([`run`], [`Daemon`]).

use crate::cli::{LabArgs, LogArgs, MetricsArgs, TlsArgs};
use crate::clock::ClockSet;
use crate::lab::LabService;
use crate::server::{Services, Stop};
use crate::telemetry;
use crate::tls::Tls;

/// The flags every service takes, last in its `--help`: TLS, the lab switch, metrics and logging.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub lab: LabArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// A running service's shared part: its stop signal, TLS, lab switch and metrics listener.
pub struct Daemon {
    stop: Stop,
    tls: Option<Tls>,
    lab: bool,
    metrics_args: MetricsArgs,
    metrics: Option<tokio::task::JoinHandle<()>>,
}

/// Runs a service: logging, then a runtime (`worker_threads` 0: everything on one thread, which gives
/// the lowest and steadiest latency), then `service` on it with the stop signal set on SIGTERM or SIGINT
/// and the TLS files loaded. The service ends with [`Daemon::finish`].
pub fn run<F, Fut>(args: &ServiceArgs, worker_threads: usize, service: F) -> anyhow::Result<()>
where
    F: FnOnce(Daemon) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    telemetry::init(args.log.log_format, &args.log.log_level)?;
    // The metrics recorder is installed before anything else runs, and the Prometheus recorder behind
    // it is built on a thread of its own: its clock calibration (a busy loop of up to 200 ms) overlaps
    // the start instead of holding a runtime thread before the service's first step.
    if args.metrics.metrics_listen.is_some() {
        crate::observe::install();
    }
    let runtime = if worker_threads == 0 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(worker_threads).enable_all().build()
    };
    let runtime = anyhow::Context::context(runtime, "cannot start the runtime")?;
    runtime.block_on(async {
        let stop = Stop::on_signal();
        let tls = args.tls.start(&stop)?;
        let daemon = Daemon { stop, tls, lab: args.lab.lab, metrics_args: args.metrics, metrics: None };
        service(daemon).await
    })
}

impl Daemon {
    /// The stop signal: set on SIGTERM or SIGINT.
    pub fn stop(&self) -> Stop {
        self.stop.clone()
    }

    /// The TLS the service serves and dials with (`None`: plaintext).
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Whether the service takes faults from a lab (`--lab`).
    pub fn lab(&self) -> bool {
        self.lab
    }

    /// Starts the metrics listener when `--metrics-listen` asks for it (HTTPS with the service's TLS), with `clocks` read at each
    /// scrape; it closes on the stop signal. Returns whether it was started.
    pub async fn serve_metrics(&mut self, clocks: ClockSet) -> anyhow::Result<bool> {
        self.metrics = self.metrics_args.serve(clocks, self.tls.as_ref(), self.stop.clone()).await?;
        Ok(self.metrics.is_some())
    }

    /// Waits for the metrics listener, if any, to close (it does on the stop signal): the last step
    /// of a service, after its server has stopped.
    pub async fn finish(self) {
        if let Some(metrics) = self.metrics {
            let _ = metrics.await;
        }
    }

    /// `services` with the `Lab` service over `clocks` added when `--lab` is given, as any other
    /// service (the server itself knows nothing of the lab).
    pub fn with_lab(&self, services: Services, clocks: ClockSet) -> Services {
        with_lab(services, self.lab, clocks)
    }
}

/// `services` with the `Lab` service over `clocks` added when `on`.
pub fn with_lab(services: Services, on: bool, clocks: ClockSet) -> Services {
    if on { services.service(LabService::new(clocks, None).server()) } else { services }
}
