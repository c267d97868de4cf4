//! synclab: clock synchronization and leader election as real, networked gRPC services.
//!
//! This crate is the I/O shell around the algorithms of `synclab_core`, which take time as an argument
//! and never touch a socket. Each algorithm is readable in two places: its rules in the core crate and
//! its service here, in one folder. The binaries (`src/main.rs`, `src/bin/`) are a few lines each that
//! call [`daemon`] or [`cmd`].
//!
//! # Layers
//!
//! Every module sits in one layer and imports only from its own layer and the layers below it; no two
//! files, and no two modules, import each other, directly or around a circle. `tests/architecture.rs`
//! reads this list, and fails on an import that goes up, on a cycle, and on a module that is not listed
//! here: a new module is placed in a layer before it is used.
//!
//! 1. Foundation: what every other part stands on; nothing here knows of a server or an algorithm.
//!    - `lock` (private): locks whose data stays good after a panic elsewhere.
//!    - [`stop`]: the stop signal a process's server, loops and streams share (SIGTERM, SIGINT).
//!    - [`text`]: text a peer sent, cut to a safe excerpt for errors and logs.
//!    - [`random`]: nonces and secrets from the operating system.
//!    - [`proto`]: the generated gRPC code, and timestamps to and from nanoseconds.
//!    - [`plot`]: charts as SVG (the dashboard's and the benchmarks').
//!    - `log_budget` (private): a budget of log lines per callsite and period, under `telemetry`'s logging.
//!    - [`telemetry`]: logging, and refusals counted and logged sparingly.
//!    - [`clock`]: virtual clocks driven by the host's real time, and `Clock/Read`, their ground truth.
//!    - [`net`]: timestamps taken at the socket (HTTP/2 frame ends, the stamp bookkeeping, the kernel's
//!      receive timestamps), and the registry of a server's connections.
//!    - [`tls`]: mutual TLS: certificates (reloaded when they change), identities, and what each
//!      identity may call.
//! 2. Serving: what every server and every client shares.
//!    - [`observe`]: Prometheus metrics: recorded, served at `/metrics`, counted per gRPC request.
//!    - [`server`]: one way to serve gRPC (limits, reflection, health, a shutdown that never hangs).
//!    - [`rpc`]: channels, deadlines, and the health and `Clock/Read` probes.
//! 3. Services: the algorithms' shells, the lab's hooks, the dashboard.
//!    - [`cristian`]: the time server (`TimeService`) and the client that syncs a device's clock.
//!    - [`ntp`]: NTPv4 over UDP: a server from the same clock, and a client.
//!    - [`berkeley`]: the master that runs the rounds and the slaves it keeps together.
//!    - [`election`]: the election node that feeds a Bully or Ring machine from gRPC, and its state file.
//!    - [`lab`]: the fault lab's hooks inside a service started with `--lab` (its `Lab` service, link
//!      faults).
//!    - [`dashboard`]: a live web page of the lab's clocks, rounds and elections.
//! 4. Host-side tools: what drives a group from outside.
//!    - `lab_runner` (the `lab-runner` feature): plays a scenario's plan against a group through a
//!      `Backend` (the compose stack, or nodes in this process), records its history, checks and reports.
//! 5. Binaries: what the binaries run; errors are `anyhow` here, and only here.
//!    - [`cli`]: every flag and its validation, named alike across the binaries.
//!    - [`daemon`]: each service's `main`, and the start-up they share.
//!    - [`cmd`]: the `synclab` CLI's `main` and its subcommands.

pub mod berkeley;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod cristian;
pub mod daemon;
pub mod dashboard;
pub mod election;
pub mod lab;
#[cfg(feature = "lab-runner")]
pub mod lab_runner;
mod lock;
mod log_budget;
pub mod net;
pub mod ntp;
pub mod observe;
pub mod plot;
pub mod proto;
pub mod random;
pub mod rpc;
pub mod server;
pub mod stop;
pub mod telemetry;
pub mod text;
pub mod tls;
