//! Cristian's algorithm over gRPC: the time server ([`service`]) and the client that syncs a device's
//! clock against it ([`client`]). The arithmetic is `synclab_core::cristian`.

pub mod client;
pub mod metrics;
pub mod service;

pub use client::{CristianClient, Sample, SyncError, SyncReport, apply_estimate, discipline_clock};
pub use service::{TimeServer, server, services};
