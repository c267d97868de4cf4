//! The Berkeley slave's services: its clock for the master to read (`synclab.time.v1.TimeService`), the
//! relative adjustments the master sends (`synclab.berkeley.v1.BerkeleySlave`), and the loop that keeps
//! it registered with the master.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::{Request, Response, Status};

use synclab_core::berkeley::FrequencyEstimator;
use synclab_core::clock::AdjustmentKind;
use synclab_core::duration::format_nanos;

use crate::clock::{ClockService, ClockSet, LiveClock, host_now};
use crate::cristian::TimeServer;
use crate::lock::lock;
use crate::proto::berkeley::berkeley_master_client::BerkeleyMasterClient;
use crate::proto::berkeley::berkeley_slave_server::{BerkeleySlave, BerkeleySlaveServer};
use crate::proto::berkeley::{AdjustRequest, AdjustResponse, RegisterRequest, RegisterResponse};
use crate::proto::clock::clock_server::ClockServer;
use crate::proto::time::time_service_server::TimeServiceServer;
use crate::rpc::{RpcError, channel, request, with_deadline};
use crate::server::{Server, ServerError, Services, Stop};

/// Largest frequency correction a slave learns, in ppm: real oscillators are within a few hundred.
const MAX_CORRECTION_PPM: f64 = 1000.0;

/// Takes the master's adjustments.
#[derive(Debug, Clone)]
pub struct SlaveService {
    clock: LiveClock,
    estimator: Arc<Mutex<FrequencyEstimator>>,
    max_adjustment_nanos: i64,
}

impl SlaveService {
    /// A slave correcting `clock`, refusing adjustments larger than `max_adjustment_nanos`.
    pub fn new(clock: LiveClock, max_adjustment_nanos: i64) -> Self {
        let estimator = Arc::new(Mutex::new(FrequencyEstimator::new(0.5, MAX_CORRECTION_PPM, 1_000_000_000)));
        Self { clock, estimator, max_adjustment_nanos }
    }
}

#[tonic::async_trait]
impl BerkeleySlave for SlaveService {
    async fn adjust(&self, request: Request<AdjustRequest>) -> Result<Response<AdjustResponse>, Status> {
        let AdjustRequest { adjustment_nanos: by, round } = request.into_inner();
        if by.unsigned_abs() > self.max_adjustment_nanos.unsigned_abs() {
            return Err(Status::invalid_argument(format!(
                "an adjustment of {} is beyond the ±{} this slave accepts (--max-adjustment)",
                format_nanos(by as f64),
                format_nanos(self.max_adjustment_nanos as f64).trim_start_matches('+')
            )));
        }
        let kind = self.clock.adjust(by).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let stepped = kind == AdjustmentKind::Step;
        let ppm = {
            let mut estimator = lock(&self.estimator);
            estimator.observe(host_now(), by as f64, stepped)
        };
        self.clock.with(|c, host| c.set_frequency_correction(host, ppm)).map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(
            clock = %self.clock.name(),
            round,
            adjustment = %format_nanos(by as f64),
            stepped,
            frequency_correction_ppm = ppm,
            true_offset_us = self.clock.settled_offset() / 1e3,
            "adjusted"
        );
        Ok(Response::new(AdjustResponse { stepped, frequency_correction_ppm: ppm }))
    }
}

/// Everything a slave serves: its clock over `TimeService` (for the master's reads), `Clock/Read`,
/// `BerkeleySlave`, health and reflection.
pub async fn server(clock: LiveClock, max_adjustment_nanos: i64) -> Result<Server, ServerError> {
    Services::new()
        .add(TimeServiceServer::new(TimeServer::new(clock.clone(), 0)))
        .add(ClockServer::new(ClockService::new(ClockSet::new(vec![clock.clone()]))))
        .add(BerkeleySlaveServer::new(SlaveService::new(clock, max_adjustment_nanos)))
        .build()
        .await
}

/// Registers once.
pub async fn register(master: &str, name: &str, advertise: &str, timeout: Duration) -> Result<RegisterResponse, RpcError> {
    let mut client = BerkeleyMasterClient::new(channel(master, timeout)?);
    let message = RegisterRequest { name: name.to_string(), address: advertise.to_string() };
    with_deadline(master, timeout, client.register(request(message, timeout))).await
}

/// Keeps the slave registered until `stop` turns true: retries with backoff (100 ms doubling to 5 s)
/// until the master answers, then registers again every round interval, so a master that restarted and
/// forgot its members has this one back within a round.
pub async fn keep_registered(master: String, name: String, advertise: String, timeout: Duration, stop: Stop) {
    let mut backoff = Duration::from_millis(100);
    let mut registered = false;
    loop {
        let wait = match register(&master, &name, &advertise, timeout).await {
            Ok(answer) => {
                if !registered || !answer.rejoined {
                    tracing::info!(master = %answer.master, rejoined = answer.rejoined, "registered");
                }
                registered = true;
                backoff = Duration::from_millis(100);
                Duration::from_nanos(answer.round_interval_nanos).clamp(Duration::from_millis(100), Duration::from_secs(60))
            }
            Err(e) => {
                if registered {
                    tracing::warn!(error = %e, "cannot re-register; retrying");
                } else {
                    tracing::info!(error = %e, retry_in = ?backoff, "master not reachable yet");
                }
                registered = false;
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            () = stop.wait() => return,
        }
    }
}
