//! The clock scenarios: a Berkeley group whose line is bumped by minutes, and Cristian devices whose
//! server restarts or whose clock jumps.
//!
//! Locally the master, the slaves and the time server run in this process. In Docker they are the
//! compose stack's containers (a slave is bumped through its `Lab/BumpClock`, the time server restarted
//! through the engine). The Cristian devices are the lab's own in both cases: two clocks in this process
//! (the phone's and the laptop's, as compose starts them) that sync with the server every interval and
//! report each sync's bound and true error, which the compose devices do not expose.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use synclab_core::clock::ClockConfig;
use synclab_core::cristian::Estimator;
use synclab_core::discipline::Discipline;
use synclab_core::lab::Rng;
use synclab_core::lab::Scenario;
use synclab_core::lab::history::{ClockObservation, Event, Fault, Op, RoundObservation, RunInfo, SyncObservation};
use tokio::sync::watch;

use super::backend::compose::Compose;
use super::backend::{Lifecycle, Target};
use super::error::LabError;
use super::record::Recorder;
use crate::berkeley::master::{Master, MasterConfig};
use crate::berkeley::slave::Slave;
use crate::clock::LiveClock;
use crate::cristian::CristianClient;
use crate::proto::berkeley::WatchRoundsRequest;
use crate::proto::berkeley::berkeley_master_client::BerkeleyMasterClient;
use crate::proto::lab::BumpClockRequest;
use crate::proto::lab::lab_client::LabClient;
use crate::rpc::Dialer;
use crate::server::{Stop, StopHandle};

const MS: i64 = 1_000_000;
const SEC: i64 = 1_000_000_000;
/// Five minutes: the bump of the clock scenarios.
const BUMP: i64 = 300 * SEC;

/// The four production lines as compose starts them: (name, offset, drift ppm).
const LINES: [(&str, i64, f64); 4] =
    [("KMC", 400 * MS, 60.0), ("MIT", -300 * MS, -100.0), ("TAPMI", 300 * SEC, 20.0), ("SOLS", 150 * MS, 100.0)];

/// Compose's slave clocks: corrections of 1 ms or more stepped, smaller ones slewed at 5%.
fn line_clock(offset_nanos: i64, drift_ppm: f64) -> ClockConfig {
    ClockConfig { offset_nanos, drift_ppm, step_threshold_nanos: MS, max_slew_ppm: 50_000.0 }
}

async fn serve(server: crate::server::Server, addr: &str) -> Result<(String, StopHandle), LabError> {
    let listener = crate::server::bind(addr).await.map_err(|source| LabError::Serve { source })?;
    let bound = listener.local_addr().map_err(|source| LabError::Listener { source })?;
    let (handle, stop) = Stop::new();
    tokio::spawn(server.serve(listener, stop));
    Ok((bound.to_string(), handle))
}

/// Runs `berkeley-faulty-clock`: rounds until the group is together, a line bumped by five minutes, and
/// rounds until it is back.
pub async fn berkeley(seed: u64, target: &Target, dialer: &Dialer, rec: &Recorder) -> Result<(), LabError> {
    let interval = Duration::from_secs(1);
    let mut rng = Rng::new(seed);
    // The line to bump; TAPMI starts five minutes out already, so another one.
    let victim = [LINES[0].0, LINES[1].0, LINES[3].0][rng.below(3) as usize];
    // Local: the group in this process. Docker: the compose stack's.
    let mut local: Vec<StopHandle> = Vec::new();
    let mut clocks: Vec<LiveClock> = Vec::new();
    let (master_addr, reads, compose): (String, Vec<String>, Option<Compose>) = match target {
        Target::Local => {
            let clock = LiveClock::new("berkeley-master", line_clock(0, 15.0)).map_err(|source| LabError::Clock { source })?;
            let config = MasterConfig {
                interval,
                tolerance_nanos: SEC as f64,
                samples: 4,
                timeout: Duration::from_millis(300),
                max_missed: 2,
                max_members: 8,
                dialer: Dialer::plaintext(),
            };
            let master = Master::new(clock.clone(), config);
            let (stop_handle, stop) = Stop::new();
            let server = crate::berkeley::master::server(master.clone(), "berkeley-master", stop.clone())
                .await
                .map_err(|source| LabError::Serve { source })?;
            let (master_addr, handle) = serve(server, "127.0.0.1:0").await?;
            local.push(handle);
            local.push(stop_handle);
            clocks.push(clock);
            for (name, offset, drift) in LINES {
                let clock = LiveClock::new(name, line_clock(offset, drift)).map_err(|source| LabError::Clock { source })?;
                let slave = Slave::new(clock.clone(), 3600 * SEC, Dialer::plaintext()).map_err(|source| LabError::Random { source })?;
                let server = slave.server().await.map_err(|source| LabError::Serve { source })?;
                let (addr, handle) = serve(server, "127.0.0.1:0").await?;
                local.push(handle);
                let (keep, stop) = Stop::new();
                tokio::spawn(slave.clone().keep_registered(master_addr.clone(), name.to_string(), addr, Duration::from_millis(500), stop));
                local.push(keep);
                clocks.push(clock);
            }
            tokio::spawn(master.run(stop));
            (master_addr, Vec::new(), None)
        }
        Target::Sim => return Err(LabError::NotSimulated { scenario: "a clock scenario".into() }),
        Target::Compose { project, start } => {
            let services = ["berkeley-master", "kmc", "mit", "tapmi", "sols"];
            let compose = Compose::connect(project, &services, *start, dialer.clone()).await?;
            let reads = services.iter().map(|s| compose.address(s)).collect();
            (compose.address("berkeley-master"), reads, Some(compose))
        }
        Target::Swarm { .. } => {
            return Err(LabError::NoHostFault { node: "swarm".into(), why: "the clock scenarios run on compose or --local".into() });
        }
    };
    let (stop, stopped) = watch::channel(false);
    let (counted, mut rounds) = watch::channel(0u64);
    let watcher =
        tokio::spawn(watch_rounds(dialer.clone(), master_addr, clocks.clone(), reads.clone(), rec.clone(), counted, stopped.clone()));
    let sampler = tokio::spawn(sample_clocks(dialer.clone(), clocks.clone(), reads.clone(), rec.clone(), stopped));
    // Three rounds together, the bump, then five rounds to come back (a round every second locally;
    // in Docker, every SYNCLAB_BERKELEY_INTERVAL).
    let enough = |n: u64| move |seen: &u64| *seen >= n;
    if tokio::time::timeout(Duration::from_secs(60), rounds.wait_for(enough(3))).await.is_err() {
        let _ = stop.send(true);
        return Err(LabError::NoRounds);
    }
    let start = rec.now();
    let error = match &compose {
        None => {
            let clock = clocks.iter().find(|c| c.name() == victim).cloned();
            clock
                .map(|c| c.with(|v, host| v.step(host, BUMP)).map(|_| ()).map_err(|source| LabError::Step { clock: victim.into(), source }))
                .unwrap_or_else(|| Err(LabError::NoLine(victim.into())))
        }
        Some(c) => bump(dialer, &c.address(&victim.to_lowercase()), BUMP).await,
    };
    rec.push(Event::Fault(Fault {
        start,
        end: rec.now(),
        op: Op::Bump { target: victim.to_lowercase(), by_nanos: BUMP },
        error: error.err().map(|e| e.to_string()),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(120), rounds.wait_for(enough(8))).await;
    let _ = stop.send(true);
    let _ = watcher.await;
    let _ = sampler.await;
    drop(local);
    Ok(())
}

/// Records every round the master reports, with the spread of all the group's true offsets read just
/// after it (the slaves' corrections applied).
async fn watch_rounds(
    dialer: Dialer,
    master: String,
    local: Vec<LiveClock>,
    reads: Vec<String>,
    rec: Recorder,
    counted: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(channel) = dialer.channel(&master, Duration::from_secs(1)) else { return };
    let mut client = BerkeleyMasterClient::new(channel);
    while !*stop.borrow() {
        let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(1), client.watch_rounds(WatchRoundsRequest {})).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = stop.changed() => return,
            };
            let Some(Ok(round)) = next else { break };
            // Let the slews of the round's small corrections finish before reading.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let offsets = read_all(&dialer, &local, &reads).await;
            let time = rec.now();
            let max = offsets.iter().map(|o| o.1).max().unwrap_or(0);
            let min = offsets.iter().map(|o| o.1).min().unwrap_or(0);
            rec.push(Event::Round(RoundObservation {
                time,
                round: round.number,
                excluded: round.members.iter().filter(|m| m.excluded).map(|m| m.name.clone()).collect(),
                spread_nanos: max.saturating_sub(min).unsigned_abs(),
            }));
            counted.send_modify(|n| *n += 1);
        }
    }
}

/// Every clock's true offset: the local ones directly, the others through `Clock/Read`.
async fn read_all(dialer: &Dialer, local: &[LiveClock], reads: &[String]) -> Vec<(String, i64)> {
    let mut offsets: Vec<(String, i64)> = local.iter().map(|c| (c.name().to_string(), c.read().true_offset.round() as i64)).collect();
    for addr in reads {
        if let Ok(r) = crate::rpc::read_clock(dialer, addr, "", Duration::from_millis(500)).await {
            offsets.push((r.clock.clone(), r.true_offset_nanos));
        }
    }
    offsets
}

/// Records every clock's true offset four times a second, so a bump and its correction show.
async fn sample_clocks(dialer: Dialer, local: Vec<LiveClock>, reads: Vec<String>, rec: Recorder, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let offsets = read_all(&dialer, &local, &reads).await;
        let time = rec.now();
        for (clock, offset) in offsets {
            rec.push(Event::Clock(ClockObservation { time, clock, true_offset_nanos: offset }));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn bump(dialer: &Dialer, addr: &str, by: i64) -> Result<(), LabError> {
    let channel = dialer.channel(addr, Duration::from_secs(1)).map_err(|source| LabError::Dial { source })?;
    let call = LabClient::new(channel).bump_clock(BumpClockRequest { clock: String::new(), by_nanos: by }).await;
    call.map(|_| ()).map_err(|source| LabError::Bump { addr: addr.to_string(), source })
}

/// The server of the Cristian scenarios, which can be restarted.
enum TimeServer {
    Local { clock: LiveClock, addr: String, handle: Option<StopHandle> },
    Compose(Compose),
}

impl TimeServer {
    fn address(&self) -> String {
        match self {
            TimeServer::Local { addr, .. } => addr.clone(),
            TimeServer::Compose(c) => c.address("time-server"),
        }
    }

    async fn stop(&mut self) -> Result<(), LabError> {
        match self {
            TimeServer::Local { handle, .. } => {
                drop(handle.take());
                Ok(())
            }
            TimeServer::Compose(c) => c.service_lifecycle(Lifecycle::Stop, "time-server").await,
        }
    }

    async fn start(&mut self) -> Result<(), LabError> {
        match self {
            TimeServer::Local { clock, addr, handle } => {
                let server = crate::cristian::server(clock.clone(), 0, None).await.map_err(|source| LabError::Serve { source })?;
                let (bound, h) = serve(server, addr).await?;
                // The first start takes a free port; later ones take it again.
                *addr = bound;
                *handle = Some(h);
                Ok(())
            }
            TimeServer::Compose(c) => c.service_lifecycle(Lifecycle::Start, "time-server").await,
        }
    }
}

/// Runs `cristian-server-restart` or `cristian-clock-bump`: the phone and the laptop sync every second;
/// the server stops and starts again, or the laptop's clock jumps five minutes.
pub async fn cristian(target: &Target, dialer: &Dialer, rec: &Recorder, restart: bool) -> Result<(), LabError> {
    let interval = Duration::from_secs(1);
    let mut server = match target {
        Target::Local => {
            let clock = LiveClock::new("time-server", ClockConfig::default()).map_err(|source| LabError::Clock { source })?;
            let mut s = TimeServer::Local { clock, addr: "127.0.0.1:0".into(), handle: None };
            s.start().await?;
            s
        }
        Target::Sim => return Err(LabError::NotSimulated { scenario: "a clock scenario".into() }),
        Target::Compose { project, start } => {
            TimeServer::Compose(Compose::connect(project, &["time-server"], *start, dialer.clone()).await?)
        }
        Target::Swarm { .. } => {
            return Err(LabError::NoHostFault { node: "swarm".into(), why: "the clock scenarios run on compose or --local".into() });
        }
    };
    let devices = [("mobile", 3_200 * MS, 45.0), ("laptop", -1_700 * MS, -30.0)];
    let clocks: Vec<LiveClock> = devices
        .iter()
        .map(|(name, offset, drift)| {
            LiveClock::new(*name, ClockConfig { offset_nanos: *offset, drift_ppm: *drift, ..ClockConfig::default() })
        })
        .collect::<Result<_, _>>()
        .map_err(|source| LabError::Clock { source })?;
    let (stop, stopped) = watch::channel(false);
    let addr = Arc::new(std::sync::Mutex::new(server.address()));
    let mut tasks = Vec::new();
    for clock in &clocks {
        tasks.push(tokio::spawn(sync_every(dialer.clone(), addr.clone(), clock.clone(), interval, rec.clone(), stopped.clone())));
    }
    tokio::time::sleep(interval * 3).await;
    let start = rec.now();
    if restart {
        let error = server.stop().await.err().map(|e| e.to_string());
        rec.push(Event::Fault(Fault { start, end: rec.now(), op: Op::Stop { targets: vec!["time-server".into()] }, error }));
        tokio::time::sleep(interval * 2).await;
        let start = rec.now();
        let error = server.start().await.err().map(|e| e.to_string());
        rec.push(Event::Fault(Fault { start, end: rec.now(), op: Op::Start { targets: vec!["time-server".into()] }, error }));
    } else {
        let laptop = &clocks[1];
        let error = laptop.with(|c, host| c.step(host, BUMP)).map(|_| ()).err().map(|e| e.to_string());
        rec.push(Event::Fault(Fault { start, end: rec.now(), op: Op::Bump { target: "laptop".into(), by_nanos: BUMP }, error }));
    }
    tokio::time::sleep(interval * 4).await;
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    match &server {
        TimeServer::Local { .. } => {
            let _ = server.stop().await;
        }
        // Leave the stack as it was found.
        TimeServer::Compose(c) => {
            let _ = c.service_lifecycle(Lifecycle::Start, "time-server").await;
        }
    }
    Ok(())
}

/// Syncs `clock` with the server every `interval`, recording each sync's bound and true error; the
/// clock's frequency is disciplined between syncs, as `synclab cristian --interval` does.
async fn sync_every(
    dialer: Dialer,
    addr: Arc<std::sync::Mutex<String>>,
    clock: LiveClock,
    interval: Duration,
    rec: Recorder,
    mut stop: watch::Receiver<bool>,
) {
    let mut discipline = Discipline::new();
    while !*stop.borrow() {
        let server = crate::lock::lock(&addr).clone();
        if let Ok(mut client) = CristianClient::dial(&server, Duration::from_millis(500), &dialer)
            && let Ok(report) = client.sync(&clock, 4, Estimator::Ntp).await
        {
            // A correction out of range (none the discipline gives) would leave the frequency as it was.
            let _ = crate::cristian::discipline_clock(&clock, &mut discipline, &report);
            rec.push(Event::Sync(SyncObservation {
                time: rec.now(),
                device: clock.name().to_string(),
                error_bound_nanos: (report.error_bound_us * 1e3).round().max(0.0) as u64,
                true_error_nanos: (report.true_error_us * 1e3).round() as i64,
            }));
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The run line of a clock scenario.
pub fn run_info(scenario: Scenario, seed: u64, target: &Target) -> RunInfo {
    RunInfo {
        scenario: scenario.to_string(),
        seed,
        algorithm: String::new(),
        backend: target.name().into(),
        nodes: Vec::new(),
        settle_bound: 5.0,
        sync_interval: 1.0,
        // A round leaves each line within its measurement's bound of the master (tens to hundreds of
        // µs on loopback, more through Docker's network); a millisecond is a generous group bound.
        spread_bound_nanos: 1_000_000,
        spread_rounds: 3,
        detector: String::new(),
        heartbeat: 0.0,
    }
}
