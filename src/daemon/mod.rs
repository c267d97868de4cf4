//! The services' `main`s, as library functions: [`time_server`], [`berkeley_master`],
//! [`berkeley_slave`] and [`election_node`], and the start-up they share ([`run`], [`Daemon`], in `start.rs`).
//!
//! This is binaries' code (as ntpd-rs's `daemon_main`): `src/bin/*.rs` and `src/main.rs` are a few
//! lines that call it, so each service is compiled once, in the library. It is therefore the one place
//! besides [`crate::cmd`] where errors are `anyhow` (each names the flag or file at fault and ends the
//! process); the modules below it return typed errors.
//!
//! Every service starts alike: logging from `--log-format`/`--log-level`, then a runtime (one thread
//! unless the service has more workers), the stop signal (SIGTERM or SIGINT), the TLS files checked,
//! metrics served when `--metrics-listen` is given, the `Lab` service added when `--lab` is given; and it
//! ends alike, its metrics listener closed after its server. Each service keeps only what is its own.

pub mod berkeley_master;
pub mod berkeley_slave;
pub mod election_node;
mod start;
pub mod time_server;

use std::process::ExitCode;

pub use start::{Daemon, ServiceArgs, run, with_lab};

/// A service's `main`.
pub type Main = fn() -> anyhow::Result<()>;

/// The service named `invoked_as` (a path's file name: `time-server`, `berkeley-master`,
/// `berkeley-slave`, `election-node`), for a binary that runs every service under its name.
pub fn by_name(invoked_as: &std::ffi::OsStr) -> Option<Main> {
    let name = std::path::Path::new(invoked_as).file_name()?.to_str()?;
    match name {
        "time-server" => Some(time_server::main),
        "berkeley-master" => Some(berkeley_master::main),
        "berkeley-slave" => Some(berkeley_slave::main),
        "election-node" => Some(election_node::main),
        _ => None,
    }
}

/// How a service's process ends: status 0, or its error (with its causes) and status 1.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}
