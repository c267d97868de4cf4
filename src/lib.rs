//! synclab: clock synchronization and leader election as real, networked gRPC services.
//!
//! The algorithms are sans-I/O: [`clock`] and [`cristian`] are pure state and maths with time passed
//! in. The modules around them are thin: [`live_clock`] feeds the clocks the host's real time,
//! [`server`], [`time_service`] and [`clock_service`] serve them over gRPC, [`wire`] takes timestamps at
//! the socket, and [`client`] syncs a clock against a time server.

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
