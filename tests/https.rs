//! `/metrics` and the dashboard over TLS: every `/metrics` answers HTTPS only, and only to a client
//! certificate allowed to scrape (`prometheus`, `observer`, `dashboard`); the dashboard serves HTTPS
//! without asking browsers for a certificate and calls the services with its own; Chromium opens it
//! trusting the lab CA (and refuses it under another CA); Prometheus scrapes over mutual TLS through
//! `scripts/observe`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::browser::{Browser, Child, http_get, https_get, promql_value};
use common::{free_port, require, tls};
use rustls_pki_types::ServerName;
use synclab::clock::LiveClock;
use synclab::dashboard::{Dashboard, DashboardConfig};
use synclab::observe::web::{self, HttpLimits, HttpTls};
use synclab::rpc::Dialer;
use synclab::server::{Stop, StopHandle};
use synclab::tls::Tls;
use synclab_core::clock::ClockConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(2);

fn certs(tag: &str, names: &[&str]) -> PathBuf {
    common::certs("https", tag, names)
}

/// What a browser does: trusts the CA in `dir`, presents no certificate.
fn browser_like(dir: &Path) -> Arc<rustls::ClientConfig> {
    common::without_certificate(dir, &[b"h2", b"http/1.1"])
}

/// GET `path` over TLS with `config` as the client: the answer, or the error that ended it.
async fn get_with(addr: SocketAddr, path: &str, config: Arc<rustls::ClientConfig>) -> std::io::Result<String> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut stream = tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok(String::from_utf8_lossy(&answer).to_string())
    };
    tokio::time::timeout(TIMEOUT * 2, exchange).await.expect("the server answers or closes")
}

/// GET `path` in plaintext: what came back before the server closed.
async fn get_plain(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT * 2, stream.read_to_end(&mut answer)).await.expect("the server closes");
    answer
}

/// GET `path` over HTTPS presenting `tls`'s certificate: the whole answer.
async fn get(addr: SocketAddr, path: &str, tls: &Tls) -> String {
    let answer = web::get(&addr.to_string(), path, Some(tls), TIMEOUT, 1 << 20).await.unwrap_or_else(|e| panic!("{}: {e}", tls.identity()));
    String::from_utf8_lossy(&answer).to_string()
}

/// A metrics listener over TLS with `tls`, on 127.0.0.1:0.
async fn metrics(tls: &Tls) -> (SocketAddr, StopHandle) {
    let (handle, stop) = Stop::new();
    let (addr, _) = synclab::observe::serve("127.0.0.1:0".parse().unwrap(), Some(tls), stop).await.unwrap();
    (addr, handle)
}

/// The status code of an HTTP answer (0: none).
fn status(answer: &str) -> u16 {
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// `answer` is no HTTP answer: the server refused before speaking HTTP.
fn refused(answer: &[u8]) -> bool {
    !answer.starts_with(b"HTTP/")
}

#[tokio::test]
async fn metrics_over_tls_answer_only_https_with_a_certificate_allowed_to_scrape() {
    let dir = certs("metrics", &["laptop", "prometheus", "observer", "dashboard", "node-1"]);
    let (addr, _stop) = metrics(&tls(&dir, "laptop")).await;
    synclab::observe::sync_done("laptop", 12.0, 345.0, 100.0);

    for who in ["prometheus", "observer", "dashboard"] {
        let answer = get(addr, "/metrics", &tls(&dir, who)).await;
        assert!(status(&answer) == 200, "{who}: {answer}");
        assert!(answer.contains("synclab_sync_error_bound_seconds{clock=\"laptop\"} 0.000345"), "{who}: {answer}");
    }
    // A certificate the CA signed, for an identity that does not scrape.
    let answer = get(addr, "/metrics", &tls(&dir, "node-1")).await;
    assert!(status(&answer) == 403 && answer.contains("'node-1' may not read /metrics") && answer.contains("prometheus"), "{answer}");

    // Plain HTTP, TLS without a client certificate, a certificate from another CA: no answer.
    let plain = get_plain(addr, "/metrics").await;
    assert!(refused(&plain), "plain HTTP was answered: {}", String::from_utf8_lossy(&plain));
    match get_with(addr, "/metrics", browser_like(&dir)).await {
        Ok(answer) => assert!(refused(answer.as_bytes()), "a client without a certificate was answered: {answer}"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    let other = certs("metrics-other", &["prometheus"]);
    let answer = web::get(&addr.to_string(), "/metrics", Some(&tls(&other, "prometheus")), TIMEOUT, 1 << 20).await;
    assert!(answer.is_err(), "another CA's prometheus was answered: {answer:?}");

    // A client that opens a connection and never finishes its handshake is closed (the head's deadline).
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(HttpLimits::metrics().header_timeout + TIMEOUT, silent.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a silent connection was kept: {closed:?}");
    // And the listener still answers.
    assert!(status(&get(addr, "/metrics", &tls(&dir, "prometheus")).await) == 200);
}

/// A dashboard over HTTPS with the `dashboard` identity in `dir`, following a time server (over TLS,
/// named `laptop` on the page) and the device metrics at `device_metrics`.
async fn dashboard(dir: &Path, clock: &str, device_metrics: SocketAddr) -> (SocketAddr, StopHandle) {
    let tls = tls(dir, "dashboard");
    let (handle, stop) = Stop::new();
    let dashboard = Dashboard::new(DashboardConfig {
        clocks: vec![("laptop".into(), clock.to_string())],
        devices: vec![("laptop".into(), device_metrics.to_string())],
        master: format!("127.0.0.1:{}", free_port()),
        nodes: vec![],
        timeout: Duration::from_millis(500),
        dialer: Dialer::new(Some(tls.clone())),
    });
    let listener = synclab::server::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(dashboard.clone().run(stop.clone()));
    tokio::spawn(web::serve_with(listener, dashboard.router(), HttpLimits::dashboard(), Some(HttpTls::web(&tls)), stop));
    (addr, handle)
}

/// A time server over TLS with `time-server`'s certificate in `dir`.
async fn time_server(dir: &Path) -> (String, StopHandle) {
    let clock = LiveClock::new("time-server", ClockConfig { offset_nanos: 2_500_000, ..ClockConfig::default() }).unwrap();
    let server = synclab::cristian::server(clock, 0, Some(&tls(dir, "time-server"))).await.unwrap();
    let listener = synclab::server::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (stop, stopped) = Stop::new();
    tokio::spawn(server.serve(listener, stopped));
    (addr, stop)
}

#[tokio::test]
async fn the_dashboard_serves_https_to_browsers_without_a_certificate_and_reads_the_services_with_its_own() {
    let dir = certs("dashboard", &["dashboard", "time-server", "laptop", "observer"]);
    let (clock, _clock_stop) = time_server(&dir).await;
    let (device, _device_stop) = metrics(&tls(&dir, "laptop")).await;
    synclab::observe::sync_done("laptop", 12.0, 345.0, 100.0);
    let (addr, _stop) = dashboard(&dir, &clock, device).await;

    // A browser: the CA trusted, no certificate.
    let page = get_with(addr, "/", browser_like(&dir)).await.unwrap();
    assert!(status(&page) == 200 && page.contains("new EventSource(\"events\")"), "{page}");
    // What it shows came over mutual TLS: the time server's clock (gRPC) and the device's error bound
    // (its /metrics, which answers the dashboard's identity only over HTTPS).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get_with(addr, "/state.json", browser_like(&dir)).await.unwrap();
        let state: serde_json::Value = serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
        let table = state["parts"]["clock-table"].as_str().unwrap_or("").to_string();
        if table.contains("+2.500 ms") && table.contains('±') {
            break;
        }
        assert!(Instant::now() < deadline, "the dashboard never showed the clock and the device's bound over TLS: {table}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Plain HTTP is refused.
    let plain = get_plain(addr, "/").await;
    assert!(refused(&plain), "plain HTTP was answered: {}", String::from_utf8_lossy(&plain));

    // The container health check speaks HTTPS when given the TLS files, and fails without them.
    let certs_dir = dir.clone();
    let check = move |with_tls: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_synclab"));
        command.args(["dashboard", "--check", "--listen", &addr.to_string()]);
        if with_tls {
            command.arg("--tls-ca").arg(certs_dir.join("ca.pem"));
            command.arg("--tls-cert").arg(certs_dir.join("dashboard.pem"));
            command.arg("--tls-key").arg(certs_dir.join("dashboard.key"));
        }
        command.output().unwrap()
    };
    let out = tokio::task::spawn_blocking(move || (check(true), check(false))).await.unwrap();
    assert!(out.0.status.success(), "{}", String::from_utf8_lossy(&out.0.stderr));
    assert!(!out.1.status.success(), "a plaintext check passed against HTTPS");
}

/// A HOME whose NSS database (what Chromium on Linux takes local trust anchors from) trusts the CA in `dir`.
fn home_trusting(dir: &Path) -> PathBuf {
    let home = dir.join("home");
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let db = format!("sql:{}", db.display());
    common::ok(Command::new("certutil").args(["-N", "--empty-password", "-d", &db]));
    common::ok(Command::new("certutil").args(["-A", "-d", &db, "-n", "synclab lab CA", "-t", "C,,", "-i"]).arg(dir.join("ca.pem")));
    home
}

#[test]
fn chromium_opens_the_dashboard_over_https_trusting_the_lab_ca_and_refuses_another_ca() {
    let chromium = Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success());
    let certutil = Command::new("certutil").arg("-H").output().is_ok();
    if !require(chromium, "chromium (apt-get install chromium)") || !require(certutil, "certutil (apt-get install libnss3-tools)") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = certs("chromium", &["dashboard", "time-server", "laptop"]);
    let other = certs("chromium-other", &["dashboard"]);
    // Served on the runtime's threads while this one drives the browser; each stops when its handle drops.
    let (trusted, untrusted, _clock, _device) = runtime.block_on(async {
        let clock = time_server(&dir).await;
        let device = metrics(&tls(&dir, "laptop")).await;
        let trusted = dashboard(&dir, &clock.0, device.0).await;
        let untrusted = dashboard(&other, &clock.0, device.0).await;
        (trusted, untrusted, clock, device)
    });
    let _enter = runtime.enter();
    // What the compose test reads the page's state with: HTTPS trusting the CA; plain HTTP gets nothing.
    let state = https_get(trusted.0.port(), "/state.json", &dir).expect("the dashboard answers HTTPS");
    assert!(serde_json::from_str::<serde_json::Value>(&state).is_ok_and(|s| s.get("parts").is_some()), "{state}");
    assert_eq!(http_get(trusted.0.port(), "/state.json"), None);
    let home = home_trusting(&dir);
    let mut browser = Browser::start_with(&[("HOME", &home)]).expect("cannot start chromium");
    let wait = |browser: &mut Browser, what: &str, expression: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if browser.eval(expression) == serde_json::Value::Bool(true) {
                return;
            }
            let text = browser.eval("document.body ? document.body.innerText : ''");
            assert!(Instant::now() < deadline, "the page never showed {what}:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The lab CA's dashboard, at the names its certificate carries: the page, live.
    for host in ["localhost", "127.0.0.1"] {
        browser.call("Page.navigate", serde_json::json!({ "url": format!("https://{host}:{}/", trusted.0.port()) }));
        wait(
            &mut browser,
            "live updates",
            "document.getElementById('live') !== null && document.getElementById('live').textContent === 'live'",
        );
        wait(&mut browser, "the clock over TLS", "document.getElementById('clock-table').innerText.includes('+2.500 ms')");
        assert_eq!(browser.eval("location.protocol"), "https:");
    }
    // Under a CA the browser does not trust: Chromium's certificate error, not the page.
    browser.call("Page.navigate", serde_json::json!({ "url": format!("https://localhost:{}/", untrusted.0.port()) }));
    wait(&mut browser, "the certificate error", "document.body !== null && document.body.innerText.includes('ERR_CERT_AUTHORITY_INVALID')");
    assert_eq!(browser.eval("document.getElementById('live') === null"), true, "the page under an untrusted CA was shown");
}

#[test]
fn prometheus_scrapes_over_mutual_tls_through_scripts_observe() {
    let available = Command::new("prometheus").arg("--version").output().is_ok_and(|o| o.status.success());
    if !require(available, "prometheus (apt-get install prometheus)") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = certs("prometheus", &["time-server", "prometheus"]);
    let (addr, _stop) = runtime.block_on(async {
        let served = metrics(&tls(&dir, "time-server")).await;
        synclab::observe::sync_done("laptop", 12.0, 345.0, 100.0);
        served
    });
    let _enter = runtime.enter();
    let port = free_port();
    let mut observe = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/observe"));
    observe
        .env("SYNCLAB_TLS", "1")
        .env("SYNCLAB_CERTS", &dir)
        .env("SYNCLAB_PROMETHEUS_PORT", port.to_string())
        .env("SYNCLAB_TIME_SERVER_METRICS_PORT", addr.port().to_string())
        .stdout(std::process::Stdio::null());
    let _prometheus = Child(observe.spawn().expect("cannot run scripts/observe"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = promql_value(port, "up{job=\"time-server\"}");
        let bound = promql_value(port, "synclab_sync_error_bound_seconds{job=\"time-server\",clock=\"laptop\"}");
        if up == Some(1.0) && bound == Some(0.000345) {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus did not scrape over mutual TLS: up {up:?}, bound {bound:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}
