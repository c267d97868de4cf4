//! synclab: clock synchronization and leader election as real, networked gRPC services.
//!
//! This crate is the I/O shell around the algorithms of `synclab_core`, which take time as an argument
//! and never touch a socket. Each algorithm is readable in two places: its rules in the core crate and
//! its service here, in one folder.
//!
//! - [`cristian`]: the time server (`TimeService`) and the client that syncs a device's clock.
//! - [`berkeley`]: the master that runs the rounds and the slaves it keeps together.
//! - [`election`]: the election node that feeds a Bully or Ring machine from gRPC, and its state file.
//! - [`clock`]: virtual clocks driven by the host's real time, and `Clock/Read`, their ground truth.
//! - [`net`]: timestamps taken at the socket (HTTP/2 frame heads, the stamp bookkeeping, the kernel's
//!   receive timestamps).
//! - [`server`] and [`rpc`]: what every server and every client shares (reflection, health, shutdown;
//!   channels and deadlines).
//! - [`cli`]: every flag and its validation, named alike across the binaries.
//! - [`daemon`]: each service's `main` (the binaries in `src/bin/` and `src/main.rs` call them), and the
//!   start-up they share; [`cmd`]: the `synclab` CLI's `main` and its subcommands.
//! - [`proto`]: the generated gRPC code; [`telemetry`]: logging; [`observe`]: Prometheus metrics.

pub mod berkeley;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod cristian;
pub mod daemon;
pub mod dashboard;
pub mod election;
pub mod lab;
mod lock;
pub mod net;
pub mod ntp;
pub mod observe;
pub mod plot;
pub mod proto;
pub mod random;
pub mod rpc;
pub mod server;
pub mod telemetry;
pub mod tls;
