//! Attacks on synclab's servers, and the probes that tell what they cost: for the attack tests
//! (`tests/attack.rs`) and the attack benchmark (`benches/attack.rs`).
//!
//! The attacker speaks HTTP/2 itself ([`Conn`], on `h2`), so it can do what a well-behaved client
//! cannot: stop a request body half-way, send 4 MiB where 16 KiB is allowed, open streams and never read
//! them, forge any field of any message. Messages are encoded with the project's own protobuf types, so
//! a field an older server does not know is simply ignored by it.
//!
//! Every attack is bounded: a count of connections, streams or messages given by the caller, and a
//! deadline on every step. Targets are loopback addresses of servers the caller started.
//!
//! One file per kind, everything used from here (`attack::NAME`):
//! - `grpc`: the attacker's client ([`Conn`], [`Streaming`]), [`CallError`], [`Tally`], [`code`], [`frame`].
//! - `services`: the RPC paths ([`path`]) and the health-check and empty messages.
//! - `connections`: connection floods: [`idle_tcp`], [`idle_h2`], [`garbage`], [`stalled_handshakes`],
//!   [`readers`] (a crowd of read-only callers).
//! - `floods`: request floods: [`rapid_reset`], [`unfinished_bodies`], [`oversized`] + [`send_at_rate`],
//!   [`flood`].
//! - `forgeries`: forged messages: [`election_forgeries`], [`forged_alive`], [`invalid_alives`],
//!   [`register_request`], [`adjust_request`].
//! - `streams`: streams nobody reads: [`never_read_streams`].
//! - `ntp`: an NTP client's request and its answer: [`ntp_request`], [`ntp_ask`].
//! - `http`: the dashboard's HTTP side: [`http_get`] (a page load), [`first_event`] (an event stream's
//!   first update), [`silent_stream_clients`] (event-stream clients that never read).
//! - `servers`: servers that misbehave: [`Stalled`] (accepts, never answers) and [`FakeMaster`] (a
//!   Berkeley master that records the claim a slave registers with, so its adjustments can be forged and
//!   replayed as someone who reads the traffic could).
//! - `probes`: what an attack costs: [`Prober`] (a legitimate call's latency during an attack),
//!   [`tls_get_time`] (a real TLS client's call), [`memory`], [`open_fds`] and [`PeakWatch`] (their peaks),
//!   [`health`].
//! - `processes`: binaries under attack: [`Process`] (stderr lines, health, exit time after SIGTERM),
//!   [`ElectionGroup`], [`ElectionWatch`].

mod connections;
mod floods;
mod forgeries;
mod grpc;
mod http;
mod ntp;
mod probes;
mod processes;
mod servers;
mod services;
mod streams;

pub use connections::{
    CLIENT_HELLO_START, GarbageReport, IdleH2, IdleTcp, Readers, garbage, idle_h2, idle_tcp, readers, stalled_handshakes,
};
pub use floods::{Flood, Oversized, RapidReset, Unfinished, flood, oversized, rapid_reset, send_at_rate, unfinished_bodies};
pub use forgeries::{Forgery, MAX_TERM, adjust_request, election_forgeries, forged_alive, invalid_alives, register_request};
pub use grpc::{CallError, Conn, Status, Streaming, Tally, code, encode, frame};
pub use http::{Page, first_event, http_get, silent_stream_clients};
pub use ntp::{ntp_ask, ntp_request};
pub use probes::{Latencies, Mem, PeakWatch, Prober, health, memory, open_fds, tls_get_time};
pub use processes::{ElectionCount, ElectionGroup, ElectionWatch, Process, free_port};
pub use servers::{FakeMaster, Stalled};
pub use services::{Empty, HealthCheckRequest, HealthCheckResponse, NOT_SERVING, SERVING, path};
pub use streams::{NeverRead, never_read_streams};
