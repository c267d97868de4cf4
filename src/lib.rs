//! synclab: clock synchronization and leader election as real, networked gRPC services.
//!
//! The algorithms are sans-I/O: [`clock`], [`cristian`], [`berkeley`] and [`election`] are pure state and
//! maths with time passed in (the election state machines take messages and timer ticks and return the
//! messages to send). The modules around them are thin: [`live_clock`] feeds the clocks the host's real
//! time, [`server`], [`time_service`], [`clock_service`], [`berkeley_master`], [`berkeley_slave`] and
//! [`election_node`] serve them over gRPC, [`wire`] takes timestamps at the socket, [`client`] syncs a
//! clock against a time server, and [`election_cluster`] runs a group of election nodes in one process.

pub mod berkeley;
pub mod berkeley_master;
pub mod berkeley_slave;
pub mod client;
pub mod clock;
pub mod clock_service;
pub mod config;
pub mod cristian;
pub mod duration;
pub mod election;
pub mod election_cluster;
pub mod election_node;
pub mod live_clock;
pub mod proto;
pub mod server;
pub mod telemetry;
pub mod time_service;
pub mod wire;
