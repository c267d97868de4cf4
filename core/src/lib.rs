//! synclab's algorithms, with no I/O: no sockets, no clocks of their own, no threads, no sleeps.
//!
//! Time comes in as arguments and what is to be sent goes out as values, so every rule here is exactly
//! testable and the same code runs in the services, in the in-memory simulator and in the fuzzers.
//!
//! - [`clock`]: the virtual clock every synclab process keeps (host time plus offset, drift and the
//!   corrections applied), whose error is therefore always known.
//! - [`duration`]: signed durations as people type and read them.
//! - [`cristian`]: the offset arithmetic of Cristian's algorithm and NTP's four-timestamp refinement.
//! - [`sampler`]: a sync's exchanges as they complete, paired with the real transmit times later answers
//!   report (interleaved mode), and the choice of the sample; both time clients use it.
//! - [`discipline`]: the frequency discipline: learning a clock's frequency error from successive
//!   corrections and running it against it in between (Berkeley members and time clients alike).
//! - [`berkeley`]: the Berkeley round (the largest agreeing set, relative adjustments).
//! - [`detector`]: failure detection: the fixed timeout, and a φ-accrual detector that learns each
//!   peer's heartbeat inter-arrival times and suspects at a chosen false-suspicion probability.
//! - [`election`]: the Bully and Ring state machines: requests, replies and timer ticks in, messages out.
//! - [`ntp`]: NTPv4 packets, the server's per-datagram decision (interleaved mode, rate limit) and the
//!   client's requests and checks of a reply, each in a file of its own.
//! - [`name`]: what a clock or member name may be.
//! - [`lab`]: the fault lab's histories and the checkers that judge them.
//!
//! The gRPC services in the `synclab` crate are thin shells that feed these with real time and real
//! messages.

// Every public item is documented; clippy's `-D warnings` in scripts/test turns this into an error.
#![warn(missing_docs)]

pub mod berkeley;
pub mod clock;
pub mod cristian;
pub mod detector;
pub mod discipline;
pub mod duration;
pub mod election;
pub mod lab;
pub mod name;
pub mod ntp;
pub mod sampler;

/// An enum whose values have fixed lower-case names, as flags, logs and messages spell them (e.g.
/// `bully`, `ring`). The command line parses them with one generic parser.
pub trait Named: Sized + Copy + 'static {
    /// Every value, in the order help texts list them.
    const ALL: &'static [Self];

    /// The value's name.
    fn as_str(self) -> &'static str;

    /// The value with this name, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == name)
    }
}
