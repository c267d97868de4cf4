//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;

use synclab::clock::LiveClock;
use synclab::server::{Stop, StopHandle};
use synclab_core::clock::ClockConfig;

/// A time server running in this process on 127.0.0.1:0; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub clock: LiveClock,
    _stop: StopHandle,
}

impl TestServer {
    /// Starts a time server whose clock is exact.
    pub async fn start() -> Self {
        Self::with_clock(ClockConfig::default()).await
    }

    /// Starts a time server with the given clock.
    pub async fn with_clock(config: ClockConfig) -> Self {
        let clock = LiveClock::new("time-server", config).unwrap();
        let listener = synclab::server::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = synclab::cristian::server(clock.clone(), 0, None).await.unwrap();
        let (stop, stopped) = Stop::new();
        tokio::spawn(server.serve(listener, stopped));
        Self { addr, clock, _stop: stop }
    }

    pub fn url(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }
}

/// A clock `offset` ns off true time, with `drift_ppm`.
pub fn clock(name: &str, offset: i64, drift_ppm: f64) -> LiveClock {
    LiveClock::new(name, ClockConfig { offset_nanos: offset, drift_ppm, ..ClockConfig::default() }).unwrap()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
