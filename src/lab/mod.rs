//! The fault lab's hooks inside every service, off unless a process is started with `--lab`: link faults
//! in the node's own transport ([`links`]) and the `Lab` service that sets them and breaks clocks
//! ([`service`]). The runner that plays scenarios against a group from the host is
//! [`crate::lab_runner`]; the history's format, the plans and the checkers are in `synclab_core::lab`.

pub mod links;
pub mod service;

pub use links::{LinkFault, LinkFaults, Verdict};
pub use service::LabService;
