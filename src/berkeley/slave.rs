//! The Berkeley slave: its clock for the master to read (`synclab.time.v1.TimeService`), the relative
//! adjustments the master sends (`synclab.berkeley.v1.BerkeleySlave`), and the loop that keeps it
//! registered with the master.
//!
//! A slave applies an adjustment only if it comes from its master's current round, once: it carries the
//! claim (a secret the slave chose at start and gave the master when it registered), the epoch of the
//! master it last registered with, and a round after the last one applied. Anything else is refused and
//! leaves the clock alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use synclab_core::berkeley::FrequencyEstimator;
use synclab_core::clock::{AdjustmentKind, ClockError};
use synclab_core::duration::format_nanos;
use tonic::{Request, Response, Status};

use crate::clock::{ClockService, ClockSet, LiveClock, host_now};
use crate::cristian::TimeServer;
use crate::lock::lock;
use crate::proto::berkeley::berkeley_master_client::BerkeleyMasterClient;
use crate::proto::berkeley::berkeley_slave_server::{BerkeleySlave, BerkeleySlaveServer};
use crate::proto::berkeley::{AdjustRequest, AdjustResponse, RegisterRequest, RegisterResponse};
use crate::proto::clock::clock_server::ClockServer;
use crate::proto::time::time_service_server::TimeServiceServer;
use crate::random::{same_secret, secret};
use crate::rpc::{Dialer, RpcError, request, with_deadline};
use crate::server::{Server, ServerError, Services, Stop};
use crate::telemetry::Refusals;
use crate::tls::authz::{Allowed, authorize};

/// Largest frequency correction a slave learns, in ppm: real oscillators are within a few hundred.
const MAX_CORRECTION_PPM: f64 = 1000.0;

/// Why an adjustment was refused. The clock is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum AdjustError {
    /// The adjustment does not carry this slave's claim.
    #[error("this adjustment does not carry this slave's claim: it does not come from the master this slave registered with")]
    NotFromMaster,
    /// No master has answered this slave's registration yet.
    #[error("this slave has not registered with a master yet")]
    NotRegistered,
    /// The adjustment comes from another incarnation of the master.
    #[error(
        "epoch {got} is not that of the master this slave registered with ({expected}); a restarted master's adjustments are taken once the slave has registered with it again"
    )]
    OtherEpoch { got: u64, expected: u64 },
    /// The round is not after the last one applied.
    #[error("round {round} is not after round {last}, the last this slave applied: each round is applied once")]
    Replayed { round: u64, last: u64 },
    /// Larger than `--max-adjustment`.
    #[error("an adjustment of {by} is beyond the ±{max} this slave accepts (--max-adjustment)")]
    TooLarge { by: String, max: String },
    /// The clock cannot take it.
    #[error(transparent)]
    Clock(#[from] ClockError),
}

impl AdjustError {
    /// A fixed name for the kind of refusal, for counters and log summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            AdjustError::NotFromMaster => "not from the master",
            AdjustError::NotRegistered => "not registered",
            AdjustError::OtherEpoch { .. } => "other epoch",
            AdjustError::Replayed { .. } => "replayed round",
            AdjustError::TooLarge { .. } => "too large",
            AdjustError::Clock(_) => "clock refused",
        }
    }
}

impl From<AdjustError> for Status {
    fn from(e: AdjustError) -> Self {
        match e {
            AdjustError::NotFromMaster => Status::permission_denied(e.to_string()),
            AdjustError::NotRegistered | AdjustError::OtherEpoch { .. } | AdjustError::Replayed { .. } => {
                Status::failed_precondition(e.to_string())
            }
            AdjustError::TooLarge { .. } | AdjustError::Clock(_) => Status::invalid_argument(e.to_string()),
        }
    }
}

/// What ties a slave to its master.
#[derive(Debug)]
struct Session {
    /// The secret this slave registers with; its master's adjustments carry it.
    claim: [u8; 32],
    /// The epoch of the master this slave last registered with.
    epoch: Option<u64>,
    /// The last round applied (of that epoch).
    last_round: u64,
}

/// A Berkeley slave.
#[derive(Debug)]
pub struct Slave {
    clock: LiveClock,
    /// How it dials its master (plaintext or TLS); with TLS it also serves over TLS.
    dialer: Dialer,
    max_adjustment_nanos: i64,
    session: Mutex<Session>,
    estimator: Mutex<FrequencyEstimator>,
    refusals: Refusals,
}

impl Slave {
    /// A slave correcting `clock`, refusing adjustments larger than `max_adjustment_nanos`. It chooses
    /// its claim now, from the operating system's randomness.
    pub fn new(clock: LiveClock, max_adjustment_nanos: i64, dialer: Dialer) -> Result<Arc<Self>, getrandom::Error> {
        let session = Session { claim: secret()?, epoch: None, last_round: 0 };
        Ok(Arc::new(Self {
            clock,
            dialer,
            max_adjustment_nanos,
            session: Mutex::new(session),
            estimator: Mutex::new(FrequencyEstimator::new(0.5, MAX_CORRECTION_PPM, 1_000_000_000)),
            refusals: Refusals::new("adjustment"),
        }))
    }

    /// The slave's clock.
    pub fn clock(&self) -> &LiveClock {
        &self.clock
    }

    /// The claim this slave registers with.
    pub fn claim(&self) -> Vec<u8> {
        lock(&self.session).claim.to_vec()
    }

    /// A master of epoch `epoch` has accepted this slave: from now on only its adjustments count.
    pub fn registered(&self, epoch: u64) {
        let mut session = lock(&self.session);
        if session.epoch != Some(epoch) {
            session.epoch = Some(epoch);
            session.last_round = 0;
        }
    }

    /// Applies an adjustment from the master's current round, once; refuses anything else.
    pub fn adjust(&self, request: &AdjustRequest) -> Result<AdjustResponse, AdjustError> {
        let by = request.adjustment_nanos;
        let mut session = lock(&self.session);
        if !same_secret(&request.claim, &session.claim) {
            return Err(AdjustError::NotFromMaster);
        }
        let expected = session.epoch.ok_or(AdjustError::NotRegistered)?;
        if request.epoch != expected {
            return Err(AdjustError::OtherEpoch { got: request.epoch, expected });
        }
        if request.round <= session.last_round {
            return Err(AdjustError::Replayed { round: request.round, last: session.last_round });
        }
        if by.unsigned_abs() > self.max_adjustment_nanos.unsigned_abs() {
            return Err(AdjustError::TooLarge {
                by: format_nanos(by as f64),
                max: format_nanos(self.max_adjustment_nanos as f64).trim_start_matches('+').to_string(),
            });
        }
        let kind = self.clock.adjust(by)?;
        session.last_round = request.round;
        drop(session);
        let stepped = kind == AdjustmentKind::Step;
        let ppm = lock(&self.estimator).observe(host_now(), by as f64, stepped);
        self.clock.with(|c, host| c.set_frequency_correction(host, ppm))?;
        tracing::info!(
            clock = %self.clock.name(),
            round = request.round,
            adjustment = %format_nanos(by as f64),
            stepped,
            frequency_correction_ppm = ppm,
            true_offset_us = self.clock.settled_offset() / 1e3,
            "adjusted"
        );
        Ok(AdjustResponse { stepped, frequency_correction_ppm: ppm })
    }

    /// Everything a slave serves: its clock over `TimeService` (for the master's reads), `Clock/Read`,
    /// `BerkeleySlave`, health and reflection.
    pub async fn server(self: &Arc<Self>) -> Result<Server, ServerError> {
        self.services().build().await
    }

    /// The services of [`Slave::server`], before they are built, for a caller that adds more (e.g. the
    /// lab's).
    pub fn services(self: &Arc<Self>) -> Services {
        Services::new()
            .tls(self.dialer.tls())
            .service(TimeServiceServer::new(TimeServer::new(self.clock.clone(), 0)))
            .service(ClockServer::new(ClockService::new(ClockSet::new(vec![self.clock.clone()]))))
            .service(BerkeleySlaveServer::new(SlaveService { slave: self.clone() }))
    }

    /// Registers once with `master` as `name`, reachable at `advertise`.
    pub async fn register(&self, master: &str, name: &str, advertise: &str, timeout: Duration) -> Result<RegisterResponse, RpcError> {
        let mut client = BerkeleyMasterClient::new(self.dialer.channel(master, timeout)?);
        let message = RegisterRequest { name: name.to_string(), address: advertise.to_string(), claim: self.claim() };
        let answer = with_deadline(master, timeout, client.register(request(message, timeout))).await?;
        self.registered(answer.epoch);
        Ok(answer)
    }

    /// Keeps the slave registered until `stop`: retries with backoff (100 ms doubling to 5 s) until the
    /// master answers, then registers again every round interval, so a master that restarted and forgot
    /// its members has this one back within a round.
    pub async fn keep_registered(self: Arc<Self>, master: String, name: String, advertise: String, timeout: Duration, stop: Stop) {
        let mut backoff = Duration::from_millis(100);
        let mut registered = false;
        loop {
            let wait = match self.register(&master, &name, &advertise, timeout).await {
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
}

/// `BerkeleySlave` over a [`Slave`]: the gRPC edge.
#[derive(Debug, Clone)]
pub struct SlaveService {
    slave: Arc<Slave>,
}

#[tonic::async_trait]
impl BerkeleySlave for SlaveService {
    async fn adjust(&self, request: Request<AdjustRequest>) -> Result<Response<AdjustResponse>, Status> {
        authorize(&request, "BerkeleySlave/Adjust", Allowed::Identity("berkeley-master"))?;
        let request = request.into_inner();
        match self.slave.adjust(&request) {
            Ok(answer) => Ok(Response::new(answer)),
            Err(e) => {
                self.slave.refusals.refused(e.kind(), &format_args!("round {}: {e}", request.round));
                Err(e.into())
            }
        }
    }
}
