//! The I/O edge of `synclab_core::clock`: virtual clocks driven by the host's real time, shared between
//! tasks, and `synclab.clock.v1.Clock` ([`service`]), which serves their ground truth.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use synclab_core::clock::{AdjustmentKind, ClockConfig, ClockError, VirtualClock};

use crate::lock::lock;

pub mod service;

pub use service::ClockService;

/// The host's real time (CLOCK_REALTIME) in nanoseconds since the Unix epoch: the ground truth.
pub fn host_now() -> i64 {
    // A host clock before 1970 or after 2262 is not a case synclab handles; saturate rather than panic.
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// A clock reading with its ground truth, taken at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockReading {
    /// The clock's name.
    pub name: String,
    /// The virtual clock's reading, ns since the epoch.
    pub clock: i64,
    /// The host's real time at the same instant.
    pub host: i64,
    /// The clock's exact error (fractional ns).
    pub true_offset: f64,
    /// Injected drift, ppm.
    pub drift_ppm: f64,
    /// Frequency correction in force, ppm.
    pub frequency_correction_ppm: f64,
    /// Adjustments applied.
    pub adjustments: u64,
    /// Of which steps.
    pub steps: u64,
    /// Slew still pending, ns.
    pub pending_slew: f64,
}

/// A named virtual clock that many tasks read and adjust.
#[derive(Debug, Clone)]
pub struct LiveClock {
    name: Arc<str>,
    inner: Arc<Mutex<VirtualClock>>,
}

impl LiveClock {
    /// Starts a clock now.
    pub fn new(name: impl Into<Arc<str>>, config: ClockConfig) -> Result<Self, ClockError> {
        let clock = VirtualClock::new(config, host_now())?;
        Ok(Self { name: name.into(), inner: Arc::new(Mutex::new(clock)) })
    }

    fn lock(&self) -> MutexGuard<'_, VirtualClock> {
        lock(&self.inner)
    }

    /// The clock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The clock's reading now.
    pub fn now(&self) -> i64 {
        let clock = self.lock();
        clock.read(host_now())
    }

    /// The clock's reading at an earlier host time (e.g. a packet's arrival).
    pub fn at(&self, host: i64) -> i64 {
        self.lock().read(host)
    }

    /// Reads the clock and the host's real time at one instant.
    pub fn read(&self) -> ClockReading {
        let clock = self.lock();
        let host = host_now();
        ClockReading {
            name: self.name.to_string(),
            clock: clock.read(host),
            host,
            true_offset: clock.offset_at(host),
            drift_ppm: clock.config().drift_ppm,
            frequency_correction_ppm: clock.frequency_correction_ppm(),
            adjustments: clock.adjustments(),
            steps: clock.steps(),
            pending_slew: clock.pending_slew(host),
        }
    }

    /// Corrects the clock by `by_nanos` now (step or slew, by the clock's threshold).
    pub fn adjust(&self, by_nanos: i64) -> Result<AdjustmentKind, ClockError> {
        self.lock().adjust(host_now(), by_nanos)
    }

    /// Where the clock's error will settle once any pending slew is done: its true residual error.
    pub fn settled_offset(&self) -> f64 {
        self.lock().settled_offset_at(host_now())
    }

    /// Runs `f` on the underlying clock with the current host time, for adjustments other than the above.
    pub fn with<R>(&self, f: impl FnOnce(&mut VirtualClock, i64) -> R) -> R {
        let mut clock = self.lock();
        f(&mut clock, host_now())
    }
}

/// The clocks a process keeps, by name, for `Clock/Read`.
#[derive(Debug, Clone, Default)]
pub struct ClockSet {
    clocks: Vec<LiveClock>,
}

/// No clock of that name, or a name needed and none given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockSetError {
    /// The name is not one of this process's clocks (`name` is an excerpt of what was asked).
    #[error("no clock named '{name}' here; this process keeps: {known}")]
    Unknown { name: String, known: String },
    /// Several clocks and no name given.
    #[error("this process keeps several clocks ({known}); name one")]
    Ambiguous { known: String },
    /// The process keeps no clock.
    #[error("this process keeps no clock")]
    Empty,
}

impl ClockSet {
    /// A set of the given clocks.
    pub fn new(clocks: Vec<LiveClock>) -> Self {
        Self { clocks }
    }

    /// The clocks, in order.
    pub fn clocks(&self) -> &[LiveClock] {
        &self.clocks
    }

    fn known(&self) -> String {
        self.clocks.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
    }

    /// The clock named `name`, or the only clock when `name` is empty.
    pub fn get(&self, name: &str) -> Result<&LiveClock, ClockSetError> {
        if name.is_empty() {
            return match self.clocks.as_slice() {
                [] => Err(ClockSetError::Empty),
                [only] => Ok(only),
                _ => Err(ClockSetError::Ambiguous { known: self.known() }),
            };
        }
        self.clocks
            .iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| ClockSetError::Unknown { name: crate::text::excerpt(name, 64), known: self.known() })
    }
}
