//! The run's recording: the history being written (with the run's clock), and the run's folder written
//! from it (`history.jsonl`, `results.json`, `report.html`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use synclab_core::election::NodeId;
use synclab_core::lab::check::{self, Results};
use synclab_core::lab::history::{self, ElectionObservation, Event};

use super::error::LabError;
use crate::lock::lock;

/// The run's clock: seconds since the run began. Real time for the backends that run real processes; a
/// simulator hands the recorder its virtual time instead.
#[derive(Clone)]
pub enum RunClock {
    /// The host's monotonic clock, and the wall time the run began at (message timestamps the nodes
    /// take are wall times).
    Real { start: Instant, wall_start: SystemTime },
    /// Time as a backend keeps it (a simulator's virtual time since the run began).
    Virtual(Arc<dyn Fn() -> Duration + Send + Sync>),
}

impl RunClock {
    /// Real time, from now.
    pub fn real() -> Self {
        RunClock::Real { start: Instant::now(), wall_start: SystemTime::now() }
    }

    /// A clock `now` reads (time since the run began).
    pub fn virtual_time(now: impl Fn() -> Duration + Send + Sync + 'static) -> Self {
        RunClock::Virtual(Arc::new(now))
    }

    /// Seconds since the run began.
    pub fn now(&self) -> f64 {
        match self {
            RunClock::Real { start, .. } => start.elapsed().as_secs_f64(),
            RunClock::Virtual(now) => now().as_secs_f64(),
        }
    }

    /// A host timestamp (ns since the epoch) as run time; `None` on a virtual clock.
    pub fn at_wall(&self, nanos: i128) -> Option<f64> {
        match self {
            RunClock::Real { wall_start, .. } => {
                let start = wall_start.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as i128;
                Some((nanos - start) as f64 / 1e9)
            }
            RunClock::Virtual(_) => None,
        }
    }
}

/// The history being recorded, with the run's clock. Cloned into every observer.
#[derive(Clone)]
pub struct Recorder {
    clock: RunClock,
    events: Arc<Mutex<Vec<Event>>>,
    /// Each node's latest election observation (the last pushed), kept as they come: the player asks
    /// for it at every poll, and a run of 100 nodes records hundreds of thousands of events.
    latest: Arc<Mutex<BTreeMap<NodeId, ElectionObservation>>>,
}

impl Recorder {
    pub fn new(clock: RunClock) -> Self {
        Self { clock, events: Arc::new(Mutex::new(Vec::new())), latest: Arc::new(Mutex::new(BTreeMap::new())) }
    }

    /// Seconds since the run began.
    pub fn now(&self) -> f64 {
        self.clock.now()
    }

    /// A host timestamp (ns since the epoch) as run time (now, on a virtual clock).
    pub fn at_wall(&self, nanos: i128) -> f64 {
        self.clock.at_wall(nanos).unwrap_or_else(|| self.now())
    }

    pub fn push(&self, event: Event) {
        let mut events = lock(&self.events);
        if let Event::Election(o) = &event {
            lock(&self.latest).insert(o.node, o.clone());
        }
        events.push(event);
    }

    /// Each node's latest election observation so far (the last one recorded for it).
    pub fn latest_elections(&self) -> BTreeMap<NodeId, ElectionObservation> {
        lock(&self.latest).clone()
    }

    /// The events in time order (the run line and the plan first).
    pub fn take(&self) -> Vec<Event> {
        let mut events = std::mem::take(&mut *lock(&self.events));
        events.sort_by(|a, b| time_of(a).total_cmp(&time_of(b)));
        events
    }
}

fn time_of(e: &Event) -> f64 {
    match e {
        Event::Run(_) | Event::Plan(_) => f64::NEG_INFINITY,
        Event::Fault(f) => f.start,
        Event::Election(o) => o.time,
        Event::Message(m) => m.time,
        Event::Clock(c) => c.time,
        Event::Sync(s) => s.time,
        Event::Round(r) => r.time,
    }
}

/// Writes `dir/history.jsonl`.
pub fn write_history(dir: &Path, events: &[Event]) -> Result<(), LabError> {
    let path = dir.join("history.jsonl");
    let text: String = events.iter().map(|e| history::line(e) + "\n").collect();
    std::fs::write(&path, text).map_err(|source| LabError::Io { path, source })
}

/// Checks `events` and writes `dir/results.json` and `dir/report.html`, and `dir/shiviz.log` when the
/// run has election messages.
pub fn finish(dir: &Path, events: &[Event]) -> Result<Results, LabError> {
    let results = check::check(events);
    let shiviz = super::shiviz::log(events);
    if shiviz.events > 0 {
        let path = dir.join("shiviz.log");
        std::fs::write(&path, &shiviz.text).map_err(|source| LabError::Io { path, source })?;
    }
    let path = dir.join("results.json");
    let json = serde_json::to_string_pretty(&results).unwrap_or_default();
    std::fs::write(&path, json + "\n").map_err(|source| LabError::Io { path, source })?;
    let path = dir.join("report.html");
    std::fs::write(&path, super::report::html(events, &results)).map_err(|source| LabError::Io { path, source })?;
    Ok(results)
}

/// Re-checks `dir/history.jsonl` (old histories without a plan line too) and rewrites `results.json`
/// and `report.html`.
pub fn check_dir(dir: &Path) -> Result<Results, LabError> {
    let path = dir.join("history.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|source| LabError::Io { path: path.clone(), source })?;
    let events = history::parse(&text).map_err(|source| LabError::History { path, source })?;
    finish(dir, &events)
}
