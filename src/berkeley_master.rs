//! The Berkeley master: keeps the group's membership, runs the rounds (read every slave concurrently,
//! plan with [`crate::berkeley::plan_round`], send the adjustments, correct itself) and serves
//! `synclab.berkeley.v1.BerkeleyMaster` to slaves and observers.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::{Stream, StreamExt};
use tokio::sync::{broadcast, watch};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::berkeley::{FrequencyEstimator, Reading, plan_round};
use crate::client::{CristianClient, channel, with_deadline};
use crate::clock::AdjustmentKind;
use crate::cristian::{Estimator, estimate};
use crate::live_clock::{LiveClock, host_now};
use crate::proto::berkeley::berkeley_master_server::BerkeleyMaster;
use crate::proto::berkeley::berkeley_slave_client::BerkeleySlaveClient;
use crate::proto::berkeley::{
    AdjustRequest, Member, MemberResult, RegisterRequest, RegisterResponse, Round, StatusRequest, StatusResponse, WatchRoundsRequest,
};
use crate::proto::nanos_to_timestamp;

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
}

struct MemberState {
    address: String,
    missed: u32,
    /// Rounds it has answered since it (re)joined.
    answered: u64,
    time: CristianClient,
    slave: BerkeleySlaveClient<Channel>,
}

#[derive(Default)]
struct Group {
    members: BTreeMap<String, MemberState>,
    rounds: u64,
    last_round: Option<Round>,
}

/// A Berkeley master.
pub struct Master {
    config: MasterConfig,
    clock: LiveClock,
    estimator: Mutex<FrequencyEstimator>,
    group: Mutex<Group>,
    rounds_tx: broadcast::Sender<Round>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks a slave's name: letters, digits, '-', '_' or '.', 1 to 64 characters.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl Master {
    /// A master running rounds on `clock`.
    pub fn new(clock: LiveClock, config: MasterConfig) -> Arc<Self> {
        let (rounds_tx, _) = broadcast::channel(64);
        Arc::new(Self { config, clock, estimator: Mutex::new(FrequencyEstimator::new(0.5, 1000.0, 1_000_000_000)), group: Mutex::default(), rounds_tx })
    }

    /// The master's clock.
    pub fn clock(&self) -> &LiveClock {
        &self.clock
    }

    /// Adds a member, or updates the address of one that registers again. A name that a live member
    /// (one that answered the last round) holds at another address is refused: two slaves under one name
    /// would take turns being polled. Once the holder misses a round, the name can be taken over.
    pub fn register(&self, name: &str, address: &str) -> Result<bool, Status> {
        if !valid_name(name) {
            return Err(Status::invalid_argument(format!("name '{name}' must be 1 to 64 letters, digits, '-', '_' or '.'")));
        }
        let mut group = lock(&self.group);
        if let Some(member) = group.members.get_mut(name) {
            if member.address == address {
                return Ok(true);
            }
            if member.missed == 0 && member.answered > 0 {
                return Err(Status::already_exists(format!(
                    "'{name}' is registered from {} and answering; a slave restarted elsewhere can take the name once that one misses a round",
                    member.address
                )));
            }
        }
        let time = CristianClient::new(address, self.config.timeout).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let slave = BerkeleySlaveClient::new(channel(address, self.config.timeout).map_err(|e| Status::invalid_argument(e.to_string()))?);
        let member = MemberState { address: address.to_string(), missed: 0, answered: 0, time, slave };
        let rejoined = group.members.insert(name.to_string(), member).is_some();
        tracing::info!(member = name, address, rejoined, "member registered");
        Ok(rejoined)
    }

    /// The current members.
    pub fn members(&self) -> Vec<Member> {
        lock(&self.group).members.iter().map(|(name, m)| Member { name: name.clone(), address: m.address.clone(), missed_rounds: m.missed }).collect()
    }

    /// The last completed round.
    pub fn last_round(&self) -> Option<Round> {
        lock(&self.group).last_round.clone()
    }

    /// Every round from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Round> {
        self.rounds_tx.subscribe()
    }

    /// Reads one slave: `samples` exchanges within one deadline; its offset from the master and bound.
    async fn read(&self, mut client: CristianClient) -> Result<(f64, f64), String> {
        let samples = self.config.samples.max(1);
        let reading = async {
            let mut exchanges = Vec::with_capacity(samples);
            for _ in 0..samples {
                exchanges.push(client.sample(&self.clock).await.map_err(|e| e.to_string())?.exchange);
            }
            let est = estimate(&exchanges, Estimator::Ntp, 0).map_err(|e| e.to_string())?;
            Ok((est.offset_nanos, est.error_bound_nanos))
        };
        match tokio::time::timeout(self.config.timeout, reading).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.config.timeout)),
        }
    }

    /// Runs one round and returns what it did.
    pub async fn run_round(&self) -> Round {
        let started = Instant::now();
        let started_clock = self.clock.now();
        let (number, members) = {
            let mut group = lock(&self.group);
            group.rounds += 1;
            let members: Vec<(String, CristianClient, BerkeleySlaveClient<Channel>)> =
                group.members.iter().map(|(n, m)| (n.clone(), m.time.clone(), m.slave.clone())).collect();
            (group.rounds, members)
        };

        let reads = join_all(members.iter().map(|(_, time, _)| self.read(time.clone()))).await;
        let mut results: Vec<MemberResult> = Vec::with_capacity(members.len());
        let mut readings = Vec::new();
        for ((name, _, _), read) in members.iter().zip(&reads) {
            let mut result = MemberResult { name: name.clone(), ..Default::default() };
            match read {
                Ok((offset, bound)) => {
                    result.answered = true;
                    result.offset_nanos = offset.round() as i64;
                    result.error_bound_nanos = bound.round() as u64;
                    readings.push(Reading { member: name.clone(), offset_nanos: *offset });
                }
                Err(e) => result.reason = format!("skipped: {e}"),
            }
            results.push(result);
        }

        // Names are unique and readings finite, so planning cannot fail; a failure is reported, not hidden.
        let plan = match plan_round(&readings, self.config.tolerance_nanos) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::error!(round = number, error = %e, "cannot plan the round");
                return self.finish(number, started_clock, started, 0.0, 0.0, true, results);
            }
        };
        let sends = plan.adjustments.iter().map(|a| {
            let slave = members.iter().find(|(n, _, _)| *n == a.member).map(|(_, _, s)| s.clone());
            let by = a.by_nanos.round() as i64;
            async move {
                let mut slave = slave?;
                let mut request = Request::new(AdjustRequest { adjustment_nanos: by, round: number });
                request.set_timeout(self.config.timeout);
                Some(with_deadline(&a.member, self.config.timeout, slave.adjust(request)).await)
            }
        });
        let sent = join_all(sends).await;
        for (a, outcome) in plan.adjustments.iter().zip(sent) {
            if let Some(result) = results.iter_mut().find(|r| r.name == a.member) {
                result.adjustment_nanos = a.by_nanos.round() as i64;
                if let Some(exclusion) = &a.excluded {
                    result.excluded = true;
                    let crate::berkeley::Exclusion::OutsideTolerance { distance_nanos } = exclusion;
                    result.reason = format!(
                        "outside the tolerance by {}",
                        crate::duration::format_nanos(*distance_nanos).trim_start_matches('+')
                    );
                }
                match outcome {
                    Some(Ok(_)) => result.adjusted = true,
                    Some(Err(e)) => result.reason = format!("adjustment failed: {e}"),
                    None => {}
                }
            }
        }

        // The master's own correction, and what it teaches about its own frequency.
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
        self.finish(number, started_clock, started, plan.average_nanos, plan.master_adjustment_nanos, plan.master_included, results)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(&self, number: u64, started_clock: i64, started: Instant, average: f64, own: f64, master_included: bool, results: Vec<MemberResult>) -> Round {
        let round = Round {
            number,
            started: Some(nanos_to_timestamp(started_clock)),
            duration_nanos: started.elapsed().as_nanos() as u64,
            average_nanos: average.round() as i64,
            master_adjustment_nanos: own.round() as i64,
            master_included,
            members: results,
        };
        {
            let mut group = lock(&self.group);
            for r in &round.members {
                let drop = match group.members.get_mut(&r.name) {
                    Some(m) if r.answered => {
                        m.missed = 0;
                        m.answered += 1;
                        false
                    }
                    Some(m) => {
                        m.missed += 1;
                        m.missed > self.config.max_missed
                    }
                    None => false,
                };
                if drop {
                    group.members.remove(&r.name);
                    tracing::warn!(member = %r.name, missed = self.config.max_missed + 1, "member dropped after missing rounds");
                }
            }
            group.last_round = Some(round.clone());
        }
        let answered = round.members.iter().filter(|m| m.answered).count();
        let excluded: Vec<&str> = round.members.iter().filter(|m| m.excluded).map(|m| m.name.as_str()).collect();
        tracing::info!(
            round = number,
            members = round.members.len(),
            answered,
            average = %crate::duration::format_nanos(average),
            ?excluded,
            duration_ms = round.duration_nanos as f64 / 1e6,
            "round done"
        );
        // Nobody watching is fine.
        let _ = self.rounds_tx.send(round.clone());
        round
    }

    /// Runs rounds every interval until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate: give slaves one interval to register
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.run_round().await;
        }
    }
}

/// `BerkeleyMaster` over a [`Master`].
#[derive(Clone)]
pub struct MasterService {
    master: Arc<Master>,
    name: String,
}

impl MasterService {
    /// Serves `master` under `name`.
    pub fn new(master: Arc<Master>, name: impl Into<String>) -> Self {
        Self { master, name: name.into() }
    }
}

type RoundStream = Pin<Box<dyn Stream<Item = Result<Round, Status>> + Send>>;

#[tonic::async_trait]
impl BerkeleyMaster for MasterService {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        let RegisterRequest { name, address } = request.into_inner();
        let rejoined = self.master.register(&name, &address)?;
        Ok(Response::new(RegisterResponse {
            master: self.name.clone(),
            round_interval_nanos: self.master.config.interval.as_nanos() as u64,
            rejoined,
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse { master: self.name.clone(), members: self.master.members(), last_round: self.master.last_round() }))
    }

    type WatchRoundsStream = RoundStream;

    async fn watch_rounds(&self, _: Request<WatchRoundsRequest>) -> Result<Response<RoundStream>, Status> {
        let rounds = tokio_stream::wrappers::BroadcastStream::new(self.master.subscribe()).filter_map(|r| async move {
            // A watcher too slow for the rounds misses some; it is not cut off.
            r.ok().map(Ok)
        });
        Ok(Response::new(Box::pin(rounds)))
    }
}
