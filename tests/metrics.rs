//! Prometheus metrics: what `/metrics` reports after real gRPC calls, and attacks on its listener
//! (wrong paths, oversized requests, bodies, slowloris, too many connections, stop with clients
//! holding connections).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, clock, free_port};
use synclab::clock::ClockSet;
use synclab::rpc::{Dialer, read_clock, request};
use synclab::server::{Stop, StopHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A metrics listener on 127.0.0.1:0 for `clocks`, with its stop handle and task.
async fn metrics(clocks: ClockSet) -> (SocketAddr, StopHandle, tokio::task::JoinHandle<()>) {
    let (handle, stop) = Stop::new();
    let (addr, task) = synclab::observe::serve("127.0.0.1:0".parse().unwrap(), None, stop).await.unwrap();
    synclab::observe::watch_clocks(clocks);
    (addr, handle, task)
}

/// Sends `request` as is and reads until the server closes or `within` passes: (status, whole answer).
async fn exchange(addr: SocketAddr, request: &[u8], within: Duration) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may close before it has read everything (a refused request): a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    exchange(addr, request.as_bytes(), Duration::from_secs(5)).await
}

/// The value of the sample whose line starts with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// Whether the connection is closed by the server within `within` (EOF or reset; no bytes expected).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn metrics_report_grpc_calls_by_known_method_and_clocks_read_at_scrape() {
    let device = clock("phone", 2_000_000_000, 0.0);
    let (addr, _stop, _task) = metrics(ClockSet::new(vec![device.clone()])).await;
    let server = TestServer::start().await;
    let dialer = Dialer::new(None);
    for _ in 0..3 {
        read_clock(&dialer, &server.url(), "", Duration::from_secs(1)).await.unwrap();
    }
    assert!(read_clock(&dialer, &server.url(), "no-such-clock", Duration::from_secs(1)).await.is_err());
    // A method this server does not serve, under two names: both count as `unknown`.
    let channel = dialer.channel(&server.url(), Duration::from_secs(1)).unwrap();
    let mut master = synclab::proto::berkeley::berkeley_master_client::BerkeleyMasterClient::new(channel);
    let status = master.status(request(synclab::proto::berkeley::StatusRequest {}, Duration::from_secs(1))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    let (code, text) = get(addr, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("content-type: text/plain; version=0.0.4"), "{text}");
    assert_eq!(sample(&text, r#"synclab_grpc_requests_total{method="/synclab.clock.v1.Clock/Read",code="OK"}"#), Some(3.0), "{text}");
    assert_eq!(
        sample(&text, r#"synclab_grpc_requests_total{method="/synclab.clock.v1.Clock/Read",code="NOT_FOUND"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, r#"synclab_grpc_requests_total{method="unknown",code="UNIMPLEMENTED"}"#), Some(1.0), "{text}");
    // The methods nobody called are there from the server's start, at 0 (`rate()` over a counter that
    // appears late misses its first requests).
    let uncalled = text
        .lines()
        .filter(|l| l.starts_with("synclab_grpc_requests_total{method=\"/") && l.contains("code=\"OK\"") && l.ends_with(" 0"))
        .count();
    assert!(uncalled >= 1, "{text}");
    assert!(!text.contains("BerkeleyMaster"), "an unserved method became a label:\n{text}");
    assert!(text.contains(r#"synclab_grpc_request_duration_seconds_bucket{method="/synclab.clock.v1.Clock/Read",le="0.001"}"#), "{text}");
    assert!(text.contains("# TYPE synclab_grpc_request_duration_seconds histogram"), "{text}");
    // The clock is read when scraped: its offset as it is now, in seconds.
    let offset = sample(&text, r#"synclab_clock_offset_seconds{clock="phone"}"#).unwrap();
    assert!((offset - 2.0).abs() < 1e-3, "{offset}");
    device.adjust(-2_000_000_000).unwrap();
    let (_, text) = get(addr, "/metrics").await;
    let offset = sample(&text, r#"synclab_clock_offset_seconds{clock="phone"}"#).unwrap();
    assert!(offset.abs() < 1e-3, "{offset}");
    assert_eq!(sample(&text, r#"synclab_clock_frequency_correction_ratio{clock="phone"}"#), Some(0.0), "{text}");
}

#[tokio::test]
async fn a_flood_of_made_up_method_names_adds_one_label_value() {
    let (addr, _stop, _task) = metrics(ClockSet::default()).await;
    let server = TestServer::start().await;
    // Raw HTTP/2 requests to 200 distinct paths, each unknown to the server.
    let channel = Dialer::new(None).channel(&server.url(), Duration::from_secs(1)).unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    for i in 0..200 {
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::try_from(format!("/evil.Service{i}/{}", "x".repeat(i * 10))).unwrap();
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        let result = grpc.unary(tonic::Request::new(()), path, codec).await;
        assert_eq!(result.unwrap_err().code(), tonic::Code::Unimplemented);
    }
    let (_, text) = get(addr, "/metrics").await;
    assert_eq!(sample(&text, r#"synclab_grpc_requests_total{method="unknown",code="UNIMPLEMENTED"}"#), Some(200.0), "{text}");
    assert!(!text.contains("evil"), "a client's path became a label");
}

#[tokio::test]
async fn wrong_paths_methods_and_bodies_are_refused() {
    let (addr, _stop, _task) = metrics(ClockSet::default()).await;
    let (code, text) = get(addr, "/").await;
    assert_eq!(code, 404, "{text}");
    let (code, _) = get(addr, "/metrics/../../etc/passwd").await;
    assert_eq!(code, 404);
    let (code, _) = get(addr, &format!("/{}", "a".repeat(4000))).await;
    assert_eq!(code, 404);
    let (code, _) = exchange(addr, b"DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Duration::from_secs(5)).await;
    assert_eq!(code, 405);
    // A body of 100 MB is announced: refused at once, without reading it.
    let started = Instant::now();
    let (code, _) =
        exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nxxxx", Duration::from_secs(5)).await;
    assert_eq!(code, 413);
    assert!(started.elapsed() < Duration::from_secs(1));
    let (code, _) =
        exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", Duration::from_secs(5))
            .await;
    assert_eq!(code, 413);
    // A head of 64 KiB: refused (431) or cut, never read whole.
    let huge = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n", "j".repeat(64 * 1024));
    let (code, text) = exchange(addr, huge.as_bytes(), Duration::from_secs(5)).await;
    assert!(code == 431 || text.is_empty(), "{code}: {text}");
    // Not HTTP at all.
    let (code, _) =
        exchange(addr, &[0x16, 0x03, 0x01, 0x00, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, b'\r', b'\n', b'\r', b'\n'], Duration::from_secs(5)).await;
    assert!(code == 400 || code == 0, "{code}");
    // And the listener still serves.
    let (code, _) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn slow_and_silent_clients_are_closed_and_connections_are_capped() {
    let (addr, _stop, _task) = metrics(ClockSet::default()).await;
    // Slowloris: half a head, then silence. Closed after the 2 s header timeout.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(4)).await, "a slowloris client was kept");
    assert!(closed_within(&mut silent, Duration::from_secs(4)).await, "a silent client was kept");
    assert!(started.elapsed() >= Duration::from_millis(1500), "closed before the header timeout: {:?}", started.elapsed());

    // 16 connections at most: the 17th is closed at once, and the listener serves again once they go.
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_millis(500)).await, "a 17th connection was kept");
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(addr, "/metrics").await.0, 200);
}

#[tokio::test]
async fn the_listener_stops_within_a_second_with_clients_holding_connections() {
    let (addr, stop, task) = metrics(ClockSet::default()).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /metr").await.unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    stop.stop();
    tokio::time::timeout(Duration::from_secs(1), task).await.expect("the listener ran on past a second after its stop").unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(closed_within(&mut slow, Duration::from_millis(200)).await);
    assert!(closed_within(&mut idle, Duration::from_millis(200)).await);
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting after the stop");
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Scrapes `addr` until `check` holds on the text (or 10 s pass); returns the last text.
async fn scrape_until(addr: SocketAddr, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = tokio::net::TcpStream::connect(addr).await.ok().map(|_| ());
        let text = match text {
            Some(()) => get(addr, "/metrics").await.1,
            None => String::new(),
        };
        if check(&text) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_election_node_reports_its_term_and_coordinatorship_and_stops_its_listener_on_sigterm() {
    let (grpc, metrics) = (free_port(), free_port());
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_election-node"))
            .args(["--id", "7", "--listen", &format!("127.0.0.1:{grpc}"), "--peers", &format!("7=127.0.0.1:{grpc}")])
            .env("SYNCLAB_METRICS_LISTEN", format!("127.0.0.1:{metrics}"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();
    let text = scrape_until(addr, |t| sample(t, "synclab_election_is_coordinator") == Some(1.0)).await;
    assert_eq!(sample(&text, "synclab_election_is_coordinator"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "synclab_election_coordinator"), Some(7.0), "{text}");
    assert!(sample(&text, "synclab_election_term").is_some_and(|t| t >= 1.0), "{text}");
    assert_eq!(sample(&text, r#"synclab_elections_total{reason="startup"}"#), Some(1.0), "{text}");
    // A group of one sends no message, yet every counter is there from the start, at 0 for each known
    // label: `rate()` over a counter that appears late misses its first events.
    for kind in ["Election", "Coordinator", "Alive", "RingElection", "RingCoordinator"] {
        for (direction, outcome) in [("sent", "answered"), ("sent", "failed"), ("received", "accepted"), ("received", "rejected")] {
            let series = format!(r#"synclab_election_messages_total{{kind="{kind}",direction="{direction}",outcome="{outcome}"}}"#);
            assert_eq!(sample(&text, &series), Some(0.0), "{series}: {text}");
        }
    }
    assert_eq!(sample(&text, r#"synclab_elections_total{reason="coordinator_silent"}"#), Some(0.0), "{text}");
    // It rules its group of one from its first election on: no leader change, and a coordinator for
    // (nearly) all the time since it started.
    assert_eq!(sample(&text, "synclab_election_leader_changes_total"), Some(0.0), "{text}");
    let text = scrape_until(addr, |t| sample(t, "synclab_election_availability").is_some_and(|a| a > 0.5)).await;
    let availability = sample(&text, "synclab_election_availability").unwrap_or(-1.0);
    assert!(availability > 0.5 && availability <= 1.0, "{text}");

    assert!(Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap().success());
    let started = Instant::now();
    loop {
        if child.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "the node did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn a_bad_metrics_address_is_an_error_naming_the_flag() {
    for binary in [env!("CARGO_BIN_EXE_time-server"), env!("CARGO_BIN_EXE_berkeley-master")] {
        let out = Command::new(binary).args(["--metrics-listen", "localhost:nine"]).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--metrics-listen") && err.contains("IP:PORT"), "{err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_time-server")).env("SYNCLAB_METRICS_LISTEN", "nonsense").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics-listen"));
}
