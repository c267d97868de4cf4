//! The Berkeley master: keeps the group's membership, runs the rounds and serves
//! `synclab.berkeley.v1.BerkeleyMaster` to slaves and observers.
//!
//! A round has four steps, each its own function: read every member concurrently (`read_all`),
//! plan with `synclab_core::berkeley::plan_round`, send each member its adjustment
//! (`send_adjustments`), and correct the master's own clock (`correct_self`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use synclab_core::berkeley::{
    AdmitError, Admitted, Exclusion, FrequencyEstimator, Reading, Roster, RosterRules, RoundPlan, plan_round_joining,
};
use synclab_core::clock::AdjustmentKind;
use synclab_core::cristian::{CristianError, Estimator, estimate};
use synclab_core::duration::format_nanos;
use synclab_core::name::{AddressError, NameError, check_address, check_name};
use tokio::sync::broadcast;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::clock::{ClockService, ClockSet, LiveClock, host_now};
use crate::cristian::{CristianClient, SyncError};
use crate::lock::lock;
use crate::proto::berkeley::berkeley_master_server::{BerkeleyMaster, BerkeleyMasterServer};
use crate::proto::berkeley::berkeley_slave_client::BerkeleySlaveClient;
use crate::proto::berkeley::{
    AdjustRequest, Member, MemberResult, RegisterRequest, RegisterResponse, Round, StatusRequest, StatusResponse, WatchRoundsRequest,
};
use crate::proto::clock::clock_server::ClockServer;
use crate::proto::nanos_to_timestamp;
use crate::rpc::{Dialer, RpcError, request, with_deadline};
use crate::server::{Server, ServerError, Services, Stop, WatchStream, Watched, Watchers, excerpt};
use crate::telemetry::Refusals;
use crate::tls::authz::{Allowed, authorize};

/// How a master runs its rounds.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Time between rounds.
    pub interval: Duration,
    /// Clocks within this of each other agree.
    pub tolerance_nanos: f64,
    /// Exchanges per slave per round (the minimum round trip is kept).
    pub samples: usize,
    /// Deadline for reading one slave (all its samples) and for one adjustment.
    pub timeout: Duration,
    /// A member that misses more rounds in a row than this is dropped.
    pub max_missed: u32,
    /// Members at most; a new name beyond them is refused.
    pub max_members: usize,
    /// How the master dials its members (plaintext or TLS); with TLS it also serves over TLS.
    pub dialer: Dialer,
}

/// The shortest and longest claim a slave may register with, in bytes.
pub const MIN_CLAIM_LEN: usize = 16;
pub const MAX_CLAIM_LEN: usize = 64;

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The name breaks the naming rule (`name` is an excerpt of what was sent).
    #[error("invalid name {name:?}: {source}")]
    BadName { name: String, source: NameError },
    /// The address breaks the address rule (`address` is an excerpt).
    #[error("invalid address {address:?}: {source}")]
    BadAddress { address: String, source: AddressError },
    /// The address passes the rule but cannot be dialled.
    #[error(transparent)]
    Undialable(RpcError),
    /// The claim is too short or too long.
    #[error("a claim is {MIN_CLAIM_LEN} to {MAX_CLAIM_LEN} bytes, not {0}")]
    BadClaim(usize),
    /// The group's rules refuse it: full, the name held, not a reserved name, or its source holds
    /// as many places as it may.
    #[error(transparent)]
    Refused(#[from] AdmitError),
}

impl RegisterError {
    /// A fixed name for the kind of refusal, for counters and log summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            RegisterError::BadName { .. } => "bad name",
            RegisterError::BadAddress { .. } | RegisterError::Undialable(_) => "bad address",
            RegisterError::BadClaim(_) => "bad claim",
            RegisterError::Refused(AdmitError::Full(_)) => "group full",
            RegisterError::Refused(AdmitError::NameTaken { .. }) => "name taken",
            RegisterError::Refused(AdmitError::NotReserved(_)) => "not reserved",
            RegisterError::Refused(AdmitError::SourceFull { .. }) => "source full",
        }
    }
}

impl From<RegisterError> for Status {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::Refused(AdmitError::NameTaken { .. }) => Status::already_exists(e.to_string()),
            RegisterError::Refused(AdmitError::Full(_) | AdmitError::SourceFull { .. }) => Status::resource_exhausted(e.to_string()),
            RegisterError::Refused(AdmitError::NotReserved(_)) => Status::permission_denied(e.to_string()),
            RegisterError::BadName { .. }
            | RegisterError::BadAddress { .. }
            | RegisterError::Undialable(_)
            | RegisterError::BadClaim(_) => Status::invalid_argument(e.to_string()),
        }
    }
}

/// Why a member could not be read this round.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// An exchange failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The member's samples did not all come back within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The samples gave no estimate.
    #[error(transparent)]
    Estimate(#[from] CristianError),
}

/// What the master keeps with each member's place: its clients to read and adjust it.
#[derive(Clone)]
struct Links {
    time: CristianClient,
    slave: BerkeleySlaveClient<Channel>,
}

/// One member as a round sees it: its name, its claim and the clients to read and adjust it.
#[derive(Clone)]
struct Polled {
    name: String,
    claim: Vec<u8>,
    /// It did not answer its reads in its last round: its read gets [`SILENT_READ_SHARE`] of the deadline.
    silent: bool,
    time: CristianClient,
    slave: BerkeleySlaveClient<Channel>,
}

/// A member that did not answer its last round is read with this share of `--timeout` (a quarter), so that
/// silent members (a crashed line, or squatters whose addresses never answer) cost each round at most a
/// quarter of the deadline once they have missed one: a round takes at most `2 × --timeout` (reads, then
/// adjustments, each concurrent), and then `1.25 × --timeout`.
pub const SILENT_READ_SHARE: u32 = 4;

struct Group {
    roster: Roster<Links>,
    rounds: u64,
    last_round: Option<Round>,
}

/// A Berkeley master.
pub struct Master {
    config: MasterConfig,
    /// This incarnation of the master, chosen at random at start.
    epoch: u64,
    clock: LiveClock,
    estimator: Mutex<FrequencyEstimator>,
    group: Mutex<Group>,
    rounds_tx: broadcast::Sender<Round>,
    /// The open `WatchRounds` streams.
    watchers: Watchers,
}

impl Master {
    /// A master running rounds on `clock`.
    pub fn new(clock: LiveClock, config: MasterConfig) -> Arc<Self> {
        let rules = RosterRules { max_members: config.max_members, ..RosterRules::default() };
        Self::with_rules(clock, config, rules)
    }

    /// A master whose group follows `rules` (reserved names, places per source); `rules.max_members`
    /// wins over `config.max_members`.
    pub fn with_rules(clock: LiveClock, config: MasterConfig, rules: RosterRules) -> Arc<Self> {
        let group = Mutex::new(Group { roster: Roster::new(rules), rounds: 0, last_round: None });
        let (rounds_tx, _) = broadcast::channel(64);
        let estimator = Mutex::new(FrequencyEstimator::new(0.5, 1000.0, 1_000_000_000));
        let epoch = crate::random::nonce();
        let watchers = Watchers::new(crate::server::Limits::default().max_watchers);
        Arc::new(Self { config, epoch, clock, estimator, group, rounds_tx, watchers })
    }

    /// The master's clock.
    pub fn clock(&self) -> &LiveClock {
        &self.clock
    }

    /// The time between rounds.
    pub fn interval(&self) -> Duration {
        self.config.interval
    }

    /// This master's epoch (adjustments carry it).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Adds a member, or updates the address of one that registers again with its claim; returns
    /// whether the name was known. Name, address and claim are checked before anything else.
    ///
    /// A name belongs to the claim that registered it. Another claim may take it only once the holder
    /// has been dropped, or, at the holder's own address, once the holder has missed a round (a slave
    /// restarted in place). So a live slave's name cannot be taken over, and a briefly silent one's
    /// cannot be locked away from it: whoever takes a silent slave's address must also take its
    /// adjustments, which only the slave at that address can accept.
    pub fn register(&self, name: &str, address: &str, claim: &[u8]) -> Result<bool, RegisterError> {
        self.register_from(address, name, address, claim)
    }

    /// [`Master::register`] for a registration that came from `source` (the caller's IP address, or
    /// its identity under TLS), which holds at most `max_per_source` open places. A new member that
    /// finds the group full takes the place of one that missed its last round; a reserved name always
    /// has a place ([`synclab_core::berkeley::Roster`]).
    pub fn register_from(&self, source: &str, name: &str, address: &str, claim: &[u8]) -> Result<bool, RegisterError> {
        check_name(name).map_err(|source| RegisterError::BadName { name: excerpt(name, 64), source })?;
        check_address(address).map_err(|source| RegisterError::BadAddress { address: excerpt(address, 64), source })?;
        if !(MIN_CLAIM_LEN..=MAX_CLAIM_LEN).contains(&claim.len()) {
            return Err(RegisterError::BadClaim(claim.len()));
        }
        let mut group = lock(&self.group);
        let admitted = group.roster.check(name, address, claim, source)?;
        if admitted == Admitted::Known {
            return Ok(true);
        }
        let dialer = &self.config.dialer;
        let time = CristianClient::dial(address, self.config.timeout, dialer).map_err(RegisterError::Undialable)?;
        let slave = BerkeleySlaveClient::new(dialer.channel(address, self.config.timeout).map_err(RegisterError::Undialable)?);
        group.roster.seat(name, &admitted, address, claim, source, Links { time, slave });
        let rejoined = admitted == Admitted::Rejoined;
        match &admitted {
            Admitted::Joined { evicted: Some(evicted) } => {
                tracing::info!(member = name, address, evicted = %evicted, "member registered in the place of one that missed its round")
            }
            _ => tracing::info!(member = name, address, rejoined, "member registered; it counts in the average from its second round"),
        }
        Ok(rejoined)
    }

    /// The current members.
    pub fn members(&self) -> Vec<Member> {
        let group = lock(&self.group);
        group
            .roster
            .members()
            .iter()
            .map(|(name, m)| Member { name: name.clone(), address: m.address.clone(), missed_rounds: m.missed })
            .collect()
    }

    /// The last completed round.
    pub fn last_round(&self) -> Option<Round> {
        lock(&self.group).last_round.clone()
    }

    /// Every round from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Round> {
        self.rounds_tx.subscribe()
    }

    /// Runs one round and returns what it did.
    pub async fn run_round(&self) -> Round {
        let started = Instant::now();
        let started_clock = self.clock.now();
        let (number, members, joining) = self.begin_round();
        let (mut results, readings) = self.read_all(&members).await;
        let mut round = Round { number, started: Some(nanos_to_timestamp(started_clock)), master_included: true, ..Default::default() };
        let planned = match plan_round_joining(&readings, &joining, self.config.tolerance_nanos) {
            Ok(plan) => {
                self.send_adjustments(number, &members, &plan, &mut results).await;
                self.correct_self(&plan);
                round.average_nanos = plan.average_nanos.round() as i64;
                round.master_adjustment_nanos = plan.master_adjustment_nanos.round() as i64;
                round.master_included = plan.master_included;
                true
            }
            // Names are unique and readings finite, so planning cannot fail; a failure is reported.
            Err(e) => {
                tracing::error!(round = number, error = %e, "cannot plan the round");
                false
            }
        };
        round.members = results;
        round.duration_nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.finish(round, planned)
    }

    /// Numbers the round and takes the members to poll, and the names of those (re)joining.
    fn begin_round(&self) -> (u64, Vec<Polled>, std::collections::BTreeSet<String>) {
        let mut group = lock(&self.group);
        group.rounds += 1;
        // Silent: it did not answer its reads last round (one that answered but refused its adjustment
        // is not; it missed the round all the same).
        let unanswered: std::collections::BTreeSet<&str> =
            group.last_round.iter().flat_map(|r| r.members.iter()).filter(|m| !m.answered).map(|m| m.name.as_str()).collect();
        let members = group
            .roster
            .members()
            .iter()
            .map(|(name, m)| Polled {
                name: name.clone(),
                claim: m.claim.clone(),
                silent: m.missed > 0 && unanswered.contains(name.as_str()),
                time: m.link.time.clone(),
                slave: m.link.slave.clone(),
            })
            .collect();
        (group.rounds, members, group.roster.joining())
    }

    /// Reads every member concurrently: a result per member, and the readings of those that answered.
    async fn read_all(&self, members: &[Polled]) -> (Vec<MemberResult>, Vec<Reading>) {
        let timeout = self.config.timeout;
        let reads =
            join_all(members.iter().map(|m| self.read(m.time.clone(), if m.silent { timeout / SILENT_READ_SHARE } else { timeout }))).await;
        let mut results = Vec::with_capacity(members.len());
        let mut readings = Vec::with_capacity(members.len());
        for (member, read) in members.iter().zip(reads) {
            let mut result = MemberResult { name: member.name.clone(), ..Default::default() };
            match read {
                Ok((offset, bound)) => {
                    result.answered = true;
                    result.offset_nanos = offset.round() as i64;
                    result.error_bound_nanos = bound.round() as u64;
                    readings.push(Reading { member: member.name.clone(), offset_nanos: offset });
                }
                Err(e) => result.reason = format!("skipped: {e}"),
            }
            results.push(result);
        }
        (results, readings)
    }

    /// Reads one member: `samples` exchanges within one deadline; its offset from the master and bound.
    async fn read(&self, mut client: CristianClient, timeout: Duration) -> Result<(f64, f64), ReadError> {
        let samples = self.config.samples.max(1);
        let reading = async {
            let mut exchanges = Vec::with_capacity(samples);
            for _ in 0..samples {
                exchanges.push(client.sample(&self.clock).await?.exchange);
            }
            let est = estimate(&exchanges, Estimator::Ntp, 0)?;
            Ok((est.offset_nanos, est.error_bound_nanos))
        };
        match tokio::time::timeout(timeout, reading).await {
            Ok(result) => result,
            Err(_) => Err(ReadError::Timeout(timeout)),
        }
    }

    /// Sends every planned adjustment concurrently and records the outcome in `results`.
    async fn send_adjustments(&self, round: u64, members: &[Polled], plan: &RoundPlan, results: &mut [MemberResult]) {
        let (timeout, epoch) = (self.config.timeout, self.epoch);
        let sends = plan.adjustments.iter().map(|a| {
            let member = members.iter().find(|m| m.name == a.member).cloned();
            let by = a.by_nanos.round() as i64;
            async move {
                let Polled { mut slave, claim, .. } = member?;
                let call = slave.adjust(request(AdjustRequest { adjustment_nanos: by, round, epoch, claim }, timeout));
                Some(with_deadline(&a.member, timeout, call).await)
            }
        });
        let sent = join_all(sends).await;
        for (a, outcome) in plan.adjustments.iter().zip(sent) {
            let Some(result) = results.iter_mut().find(|r| r.name == a.member) else { continue };
            result.adjustment_nanos = a.by_nanos.round() as i64;
            match &a.excluded {
                Some(Exclusion::OutsideTolerance { distance_nanos }) => {
                    result.excluded = true;
                    result.reason = format!("outside the tolerance by {}", format_nanos(*distance_nanos).trim_start_matches('+'));
                }
                Some(Exclusion::Joining) => {
                    result.excluded = true;
                    result.reason = "joining: brought to the group, counted from the next round".into();
                }
                None => {}
            }
            match outcome {
                Some(Ok(_)) => result.adjusted = true,
                Some(Err(e)) => result.reason = format!("adjustment failed: {e}"),
                None => {}
            }
        }
    }

    /// The master's own correction, and what it teaches about its own frequency.
    fn correct_self(&self, plan: &RoundPlan) {
        let by = plan.master_adjustment_nanos.round() as i64;
        match self.clock.adjust(by) {
            Ok(kind) => {
                let ppm = lock(&self.estimator).observe(host_now(), by as f64, kind == AdjustmentKind::Step);
                if let Err(e) = self.clock.with(|c, host| c.set_frequency_correction(host, ppm)) {
                    tracing::warn!(error = %e, "cannot set the master's frequency correction");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot correct the master's own clock"),
        }
    }

    /// Updates the members' miss counts (dropping those that missed too many), records the round and
    /// tells the watchers. A member completed the round if it answered and took its adjustment: one that
    /// answers reads but refuses adjustments is not a slave of this master, whatever it points at.
    fn finish(&self, round: Round, planned: bool) -> Round {
        {
            let mut group = lock(&self.group);
            let outcomes = round.members.iter().map(|r| (r.name.as_str(), r.answered && (r.adjusted || !planned)));
            for name in group.roster.finish_round(outcomes, self.config.max_missed) {
                tracing::warn!(member = %name, missed = self.config.max_missed + 1, "member dropped after missing rounds");
            }
            group.last_round = Some(round.clone());
            crate::observe::berkeley_round(&round, group.roster.members().len());
        }
        let answered = round.members.iter().filter(|m| m.answered).count();
        let excluded: Vec<&str> = round.members.iter().filter(|m| m.excluded).map(|m| m.name.as_str()).collect();
        tracing::info!(
            round = round.number,
            members = round.members.len(),
            answered,
            average = %format_nanos(round.average_nanos as f64),
            ?excluded,
            duration_ms = round.duration_nanos as f64 / 1e6,
            "round done"
        );
        // Nobody watching is fine.
        let _ = self.rounds_tx.send(round.clone());
        self.watchers.published();
        round
    }

    /// Runs rounds every interval until `stop` turns true (a round in progress is abandoned).
    pub async fn run(self: Arc<Self>, stop: Stop) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate: give slaves one interval to register
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.wait() => return,
            }
            // A round waits on its members up to the timeout, twice: a stop does not wait for it.
            tokio::select! {
                _ = self.run_round() => {}
                () = stop.wait() => return,
            }
        }
    }
}

/// `BerkeleyMaster` over a [`Master`].
#[derive(Clone)]
pub struct MasterService {
    master: Arc<Master>,
    name: String,
    watchers: Watchers,
    stop: Stop,
    refusals: Arc<Refusals>,
}

impl MasterService {
    /// Serves `master` under `name`; at most `watchers` open `WatchRounds` streams, ended at `stop`.
    pub fn new(master: Arc<Master>, name: impl Into<String>, watchers: Watchers, stop: Stop) -> Self {
        Self { master, name: name.into(), watchers, stop, refusals: Arc::new(Refusals::new("registration")) }
    }
}

#[tonic::async_trait]
impl BerkeleyMaster for MasterService {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        authorize(&request, "BerkeleyMaster/Register", Allowed::Slave(&request.get_ref().name))?;
        // Under TLS the caller's identity is the source; else its IP address.
        let source = crate::tls::authz::caller(&request)
            .map(str::to_string)
            .or_else(|| request.remote_addr().map(|a| a.ip().to_string()))
            .unwrap_or_default();
        let RegisterRequest { name, address, claim } = request.into_inner();
        let rejoined = self.master.register_from(&source, &name, &address, &claim).inspect_err(|e| {
            self.refusals.refused(e.kind(), &format_args!("{}: {e}", excerpt(&name, 64)));
        })?;
        Ok(Response::new(RegisterResponse {
            master: self.name.clone(),
            round_interval_nanos: u64::try_from(self.master.interval().as_nanos()).unwrap_or(u64::MAX),
            rejoined,
            epoch: self.master.epoch(),
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            master: self.name.clone(),
            members: self.master.members(),
            last_round: self.master.last_round(),
        }))
    }

    type WatchRoundsStream = WatchStream<Round>;

    async fn watch_rounds(&self, _: Request<WatchRoundsRequest>) -> Result<Response<WatchStream<Round>>, Status> {
        let rounds = tokio_stream::wrappers::BroadcastStream::new(self.master.subscribe()).map(|r| match r {
            Ok(round) => Watched::Item(round),
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(missed)) => Watched::Lagged(missed),
        });
        Ok(Response::new(self.watchers.stream(rounds, self.stop.clone())?))
    }
}

/// Everything a master serves: `BerkeleyMaster` under `name`, `Clock/Read` for its clock, health and
/// reflection. Watch streams end when `stop` is set.
pub async fn server(master: Arc<Master>, name: &str, stop: Stop) -> Result<Server, ServerError> {
    services(master, name, stop).build().await
}

/// The services of [`server`], before they are built, for a caller that adds more (e.g. the lab's).
pub fn services(master: Arc<Master>, name: &str, stop: Stop) -> Services {
    let services = Services::new().tls(master.config.dialer.tls());
    let watchers = master.watchers.clone();
    let clock = master.clock().clone();
    services
        .service(BerkeleyMasterServer::new(MasterService::new(master, name, watchers, stop)))
        .service(ClockServer::new(ClockService::new(ClockSet::new(vec![clock]))))
}
