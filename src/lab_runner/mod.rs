//! `synclab lab run`: the fault lab's runner. It plays a scenario against a group — the compose stack
//! in Docker, or election nodes in this process (`--local`) — while recording every node's state and
//! messages, then checks the history and writes the run's folder.
//!
//! The rooms, each with one job (arrows point down only):
//! - [`run`] here: a run from its options to its results.
//! - `synclab_core::lab::plan`: an election scenario as a pure plan of steps, from (scenario, seed,
//!   members, duration); the history records the plan a run played.
//! - [`play`]: plays a plan against a backend (symbolic targets resolved, faults applied, settles).
//! - [`backend`]: the [`Backend`] trait, the seam where compose, local, a swarm of hosts and the next
//!   backends (a simulator in virtual time) plug in; its module doc says how.
//! - [`observe`]: the gRPC observers of each node's state and messages.
//! - [`record`]: the recorder and the run's folder (history, results, report).
//! - [`clocks`]: the clock scenarios (Berkeley, Cristian), which follow fixed scripts of their own.
//! - [`report`]: `report.html` and the terminal's summary.
//! - [`shiviz`]: `shiviz.log`, the run's election messages with vector clocks for ShiViz.
//! - [`sweep`]: `synclab lab sweep`, many runs into one table.
//! - [`sim`]: the simulator (the election cores on a network in virtual time) and its backend.
//! - [`error`]: why a run could not be made.

pub mod backend;
pub mod clocks;
pub mod error;
pub mod observe;
pub mod play;
pub mod record;
pub mod report;
pub mod shiviz;
pub mod sim;
pub mod sweep;

use std::path::PathBuf;
use std::time::Duration;

use synclab_core::election::Algorithm;
use synclab_core::lab::Scenario;
use synclab_core::lab::check::Results;
use synclab_core::lab::history::{Event, RunInfo};
use tokio::sync::watch;

pub use backend::compose::default_project;
pub use backend::{Backend, Target, Timers};
pub use error::LabError;
pub use record::check_dir;
pub use report::summary;

use backend::compose::{Compose, ELECTION_SERVICES};
use backend::local::Local;
use backend::swarm::Swarm;
use play::Player;
use record::{Recorder, RunClock, finish, write_history};
use sim::{SimBackend, SimConfig};

/// A run's settings.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: Scenario,
    pub out: PathBuf,
    pub seed: u64,
    pub algorithm: Algorithm,
    /// How long the scenario's main part lasts (each scenario has its own default).
    pub duration: Option<Duration>,
    pub target: Target,
    /// The group's size for the backends that make their group (`--local`, `--sim`); default: the
    /// scenario's size in one process.
    pub nodes: Option<u64>,
    /// The timers and failure detector of the groups the lab makes (`--local`, `--sim`).
    pub timers: Timers,
    pub dialer: crate::rpc::Dialer,
}

/// Runs a scenario, writes `history.jsonl`, `results.json` and `report.html` into `out`, and returns
/// the checkers' results. A run that fails before it has a history leaves no folder of its own making
/// behind (an empty `out` would make the next run with the same `--out` ask for `--force`).
pub async fn run(options: RunOptions) -> Result<Results, LabError> {
    let made = !options.out.exists();
    let result = run_into(&options).await;
    if result.is_err() && made && !options.out.join("history.jsonl").exists() {
        let _ = std::fs::remove_dir_all(&options.out);
    }
    result
}

async fn run_into(options: &RunOptions) -> Result<Results, LabError> {
    std::fs::create_dir_all(&options.out).map_err(|source| LabError::Io { path: options.out.clone(), source })?;
    if !options.scenario.is_election() && matches!(options.target, Target::Sim) {
        return Err(LabError::NotSimulated { scenario: options.scenario.to_string() });
    }
    if !options.scenario.is_election() {
        let rec = Recorder::new(RunClock::real());
        rec.push(Event::Run(clocks::run_info(options.scenario, options.seed, &options.target)));
        match options.scenario {
            Scenario::BerkeleyFaultyClock => clocks::berkeley(options.seed, &options.target, &options.dialer, &rec).await?,
            s => clocks::cristian(&options.target, &options.dialer, &rec, s == Scenario::CristianServerRestart).await?,
        }
        let events = rec.take();
        write_history(&options.out, &events)?;
        return finish(&options.out, &events);
    }
    let events = election_history(options).await?;
    write_history(&options.out, &events)?;
    finish(&options.out, &events)
}

/// Plays an election scenario on the target's group and returns its history, writing nothing (the
/// `--local` nodes keep their state files in `out/state` while they run).
pub async fn election_history(options: &RunOptions) -> Result<Vec<Event>, LabError> {
    match &options.target {
        Target::Local => {
            let state_dir = options.out.join("state");
            let n = options.nodes.unwrap_or(options.scenario.local_nodes());
            let local = Local::start(options.algorithm, n, state_dir, options.timers, options.dialer.clone()).await?;
            run_election(local, options).await
        }
        Target::Compose { project, start } => {
            let compose = Compose::connect(project, &ELECTION_SERVICES, *start, options.dialer.clone()).await?;
            run_election(compose, options).await
        }
        Target::Sim => {
            let n = options.nodes.unwrap_or(options.scenario.local_nodes());
            let config = SimConfig { timers: options.timers, ..SimConfig::measured(options.seed) };
            let sim = SimBackend::start(options.algorithm, n, config);
            run_election(sim, options).await
        }
        Target::Swarm { stack, engines } => {
            let swarm = Swarm::connect(stack, engines.clone(), options.dialer.clone()).await?;
            run_election(swarm, options).await
        }
    }
}

/// Plays the scenario's plan on `backend`'s group while observing it; then heals the group, ends the
/// backend and returns the history.
async fn run_election<B: Backend>(backend: B, options: &RunOptions) -> Result<Vec<Event>, LabError> {
    let members = backend.members();
    let plan = match synclab_core::lab::plan(options.scenario, options.seed, &members, options.duration) {
        Ok(plan) => plan,
        Err(e) => {
            backend.shutdown().await;
            return Err(e.into());
        }
    };
    let rec = Recorder::new(backend.clock());
    let made = matches!(options.target, Target::Local | Target::Sim);
    rec.push(Event::Run(RunInfo {
        scenario: options.scenario.to_string(),
        seed: options.seed,
        algorithm: synclab_core::Named::as_str(options.algorithm).into(),
        backend: backend.name().into(),
        nodes: members,
        settle_bound: 5.0,
        sync_interval: 0.0,
        spread_bound_nanos: 0,
        spread_rounds: 3,
        // Groups the lab makes run the options' timers; a deployment's own are not known here.
        detector: if made { synclab_core::Named::as_str(options.timers.detector).into() } else { String::new() },
        heartbeat: if made { options.timers.heartbeat.as_secs_f64() } else { 0.0 },
    }));
    rec.push(Event::Plan(plan.clone()));
    let (stop, stopped) = watch::channel(false);
    let observers = backend.observe(&rec, &stopped);
    let reused = backend.reused();
    let mut player = Player::new(backend, rec.clone(), options.seed);
    // A group that outlives runs starts healed.
    let healed = if reused { player.push_all_links().await } else { Ok(()) };
    let outcome = match healed {
        Ok(()) => player.play(&plan).await,
        Err(e) => Err(e),
    };
    // Leave the group as it was found: healed, every node running.
    player.restore().await;
    let _ = stop.send(true);
    for o in observers {
        let _ = tokio::time::timeout(Duration::from_secs(2), o).await;
    }
    player.into_backend().shutdown().await;
    outcome?;
    Ok(rec.take())
}
