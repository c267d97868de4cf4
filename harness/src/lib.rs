//! Test support for synclab, kept out of the product's API.
//!
//! - [`sim`]: the deterministic in-memory network for the election state machines of `synclab_core`
//!   (latency, per-link faults, jitter, loss, duplication, forged requests, crashes, restarts, pauses
//!   and cut-off nodes, with the safety invariants checked after every event); the fault lab's `--sim`
//!   backend runs on it too, so it lives in `synclab::lab_runner::sim`.
//! - [`attack`]: attacks on the servers (connection, request and stream floods, forged messages) and
//!   the probes that measure what they cost (memory, a legitimate call's latency, exit time).
//! - [`cpu`]: how much CPU a process has used, for the benchmarks and the tests.
//! - [`cluster`]: real election nodes in one process, each a gRPC server on its own loopback port, for
//!   the integration tests and the benchmarks (the fault lab's `--local` mode runs on it too, so it lives
//!   in `synclab::lab_runner::backend::local`).

pub mod attack;
pub mod cpu;
pub mod cluster {
    pub use synclab::lab_runner::backend::local::{LocalCluster, agreed};
}
pub mod sim {
    pub use synclab::lab_runner::sim::network::*;
}
