//! The dashboard against real services in this process: a time server, an election group (one of
//! whose nodes is killed) and what the page's parts and event stream then say.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::TestServer;
use synclab::dashboard::{Dashboard, DashboardConfig};
use synclab::observe::web::{self, HttpLimits};
use synclab::rpc::Dialer;
use synclab::server::{Stop, StopHandle};
use synclab_core::election::Algorithm;
use synclab_harness::cluster::LocalCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer)).await.unwrap().unwrap();
    answer
}

async fn state(addr: SocketAddr) -> serde_json::Value {
    let answer = get(addr, "/state.json").await;
    serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap()
}

/// Polls the dashboard's state until `check` holds (or 10 s pass).
async fn state_until(addr: SocketAddr, what: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = state(addr).await;
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "the dashboard never showed {what}: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn dashboard(config: DashboardConfig) -> (SocketAddr, StopHandle, tokio::task::JoinHandle<()>) {
    let (handle, stop) = Stop::new();
    let dashboard = Dashboard::new(config);
    let listener = synclab::server::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(dashboard.clone().run(stop.clone()));
    let served = tokio::spawn(web::serve(listener, dashboard.router(), HttpLimits::dashboard(), stop));
    (addr, handle, served)
}

#[tokio::test]
async fn the_page_follows_clocks_and_a_failover_live() {
    let server = TestServer::with_clock(synclab_core::clock::ClockConfig { offset_nanos: 2_500_000, ..Default::default() }).await;
    let dir = std::env::temp_dir().join(format!("synclab-dashboard-{}", std::process::id()));
    let ms = Duration::from_millis;
    let mut cluster = LocalCluster::start(Algorithm::Bully, 3, ms(50), ms(200), ms(100), dir.clone()).await.unwrap();
    let nodes: Vec<String> = cluster.ids().iter().map(|&id| cluster.address(id).to_string()).collect();
    let (addr, stop, served) = dashboard(DashboardConfig {
        clocks: vec![("time-server".into(), server.url()), ("gone".into(), format!("127.0.0.1:{}", common::free_port()))],
        devices: vec![],
        master: format!("127.0.0.1:{}", common::free_port()),
        nodes,
        timeout: ms(300),
        dialer: Dialer::new(None),
    })
    .await;

    // The page: every asset in it, nothing from elsewhere, and its event stream.
    let page = get(addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("new EventSource(\"events\")"), "{page}");
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http") && !page.contains("@import"),
        "the page loads something from elsewhere"
    );

    // Clocks: the time server's offset in the table and a line in the chart; an unreachable clock says so.
    let s = state_until(addr, "the time server's offset", |s| s["parts"]["clock-table"].as_str().unwrap_or("").contains("+2.500 ms")).await;
    let table = s["parts"]["clock-table"].as_str().unwrap();
    assert!(table.contains("gone") && table.contains("unreachable"), "{table}");
    let chart = s["parts"]["clocks"].as_str().unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("time-server"), "{chart}");
    assert!(s["parts"]["round"].as_str().unwrap().contains("not reachable"));

    // Elections: node 3 rules; killed, node 2 takes over, and a failover row with its phases appears.
    let s = state_until(addr, "node 3 as coordinator", |s| s["coordinator"] == 3).await;
    let grid = s["parts"]["nodes"].as_str().unwrap();
    assert!(grid.contains(r#"data-id="3" data-role="coordinator""#), "{grid}");
    let first_term = s["term"].as_u64().unwrap();
    let killed = Instant::now();
    cluster.kill(3).await;
    let s = state_until(addr, "node 2 as coordinator", |s| s["coordinator"] == 2).await;
    assert!(killed.elapsed() < Duration::from_secs(2), "the new coordinator showed after {:?}", killed.elapsed());
    assert!(s["term"].as_u64().unwrap() > first_term);
    let s = state_until(addr, "node 3 unreachable", |s| {
        s["parts"]["nodes"].as_str().unwrap_or("").contains(r#"data-id="3" data-role="unreachable""#)
    })
    .await;
    let failovers = s["parts"]["failovers"].as_str().unwrap();
    assert!(failovers.contains("<td>2</td>") && failovers.contains("bully"), "{failovers}");
    assert!(s["parts"]["phases"].as_str().unwrap().contains("detection"));
    assert!(s["parts"]["timeline"].as_str().unwrap().starts_with("<svg"));

    // The event stream delivers the same parts.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !String::from_utf8_lossy(&seen).contains("event: update") && Instant::now() < deadline {
        let mut buf = [0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await.unwrap().unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("text/event-stream") && text.contains("event: update") && text.contains("\"coordinator\":2"), "{text}");

    // A stop ends the server within a second, the open event stream included.
    let started = Instant::now();
    stop.stop();
    tokio::time::timeout(Duration::from_secs(1), served).await.expect("the dashboard ran on past its stop").unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
