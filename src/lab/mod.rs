//! The fault lab's pieces inside the services: link faults ([`links`]) and the `Lab` service that sets
//! them and breaks clocks ([`service`]), both off unless a process is started with `--lab`.

pub mod links;
pub mod service;

pub use links::{LinkFault, LinkFaults, Verdict};
pub use service::LabService;
