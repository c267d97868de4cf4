//! The fault lab. Inside the services: link faults ([`links`]) and the `Lab` service that sets them and
//! breaks clocks ([`service`]), both off unless a process is started with `--lab`. Around them: the
//! runner that plays a scenario against a group and records its history ([`run`], in Docker or on the
//! in-process [`cluster`]), and the run's report ([`report`]). The history's format and the checkers
//! are in `synclab_core::lab`.

#[cfg(feature = "lab-runner")]
pub mod clocks;
#[cfg(feature = "lab-runner")]
pub mod cluster;
pub mod links;
#[cfg(feature = "lab-runner")]
pub mod report;
#[cfg(feature = "lab-runner")]
pub mod run;
pub mod service;

pub use links::{LinkFault, LinkFaults, Verdict};
pub use service::LabService;
