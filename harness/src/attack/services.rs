//! The services' RPC paths, and the few messages the attacks send that the project's crates do not
//! export (the standard health check, an empty message).

/// The RPC paths the attacks use.
pub mod path {
    pub const GET_TIME: &str = "/synclab.time.v1.TimeService/GetTime";
    pub const CLOCK_READ: &str = "/synclab.clock.v1.Clock/Read";
    pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
    pub const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";
    pub const ELECTION: &str = "/synclab.election.v1.ElectionService/Election";
    pub const COORDINATOR: &str = "/synclab.election.v1.ElectionService/Coordinator";
    pub const ALIVE: &str = "/synclab.election.v1.ElectionService/Alive";
    pub const RING_ELECTION: &str = "/synclab.election.v1.ElectionService/RingElection";
    pub const RING_COORDINATOR: &str = "/synclab.election.v1.ElectionService/RingCoordinator";
    pub const GET_STATE: &str = "/synclab.election.v1.ElectionService/GetState";
    pub const WATCH_LEADER: &str = "/synclab.election.v1.ElectionService/WatchLeader";
    pub const WATCH_MESSAGES: &str = "/synclab.election.v1.ElectionService/WatchMessages";
    pub const REGISTER: &str = "/synclab.berkeley.v1.BerkeleyMaster/Register";
    pub const STATUS: &str = "/synclab.berkeley.v1.BerkeleyMaster/Status";
    pub const WATCH_ROUNDS: &str = "/synclab.berkeley.v1.BerkeleyMaster/WatchRounds";
    pub const ADJUST: &str = "/synclab.berkeley.v1.BerkeleySlave/Adjust";
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`: 1 SERVING, 2 NOT_SERVING.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

pub const SERVING: i32 = 1;
pub const NOT_SERVING: i32 = 2;

/// An empty message (`GetTimeRequest {}`, `GetStateRequest {}`, `WatchLeaderRequest {}`, ...).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}
