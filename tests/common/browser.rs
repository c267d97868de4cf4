//! Tools the tests drive from outside: a process stopped when dropped, a small HTTP client, Prometheus's
//! query API, and a headless Chromium over the DevTools protocol.

use std::process::Command;
use std::time::{Duration, Instant};

use super::free_port;

/// A process the test started; SIGTERM and wait when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET http://127.0.0.1:PORT/PATH` over HTTP/1.0: the body, or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    exchange(stream, port, path)
}

/// `GET https://127.0.0.1:PORT/PATH` as a browser does (trusting the CA in `certs`, no client
/// certificate): the body, or None if nothing answers over TLS.
pub fn https_get(port: u16, path: &str, certs: &std::path::Path) -> Option<String> {
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").ok()?;
    let connection = rustls::ClientConnection::new(super::without_certificate(certs, &[b"http/1.1"]), name).ok()?;
    exchange(rustls::StreamOwned::new(connection, tcp), port, path)
}

fn exchange(mut stream: impl std::io::Read + std::io::Write, port: u16, path: &str) -> Option<String> {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    stream.flush().ok()?;
    // Read to the end, or to the Content-Length (a server may keep the connection open regardless).
    let mut answer = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()));
            if length.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer).to_string();
    answer.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// One PromQL query's samples as (labels, value).
pub fn promql(port: u16, query: &str) -> Vec<(serde_json::Value, f64)> {
    let encoded: String = query
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let Some(body) = http_get(port, &format!("/api/v1/query?query={encoded}")) else { return Vec::new() };
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let results = answer["data"]["result"].as_array().cloned().unwrap_or_default();
    results.into_iter().map(|r| (r["metric"].clone(), r["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN))).collect()
}

/// The single value of a query that sums up to one sample.
pub fn promql_value(port: u16, query: &str) -> Option<f64> {
    promql(port, query).first().map(|(_, v)| *v)
}

/// A headless Chromium driven over the DevTools protocol: one page, scripts evaluated in it.
pub struct Browser {
    _process: Child,
    page: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
    _profile: tempdir::Dir,
}

mod tempdir {
    /// A folder removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Browser {
    /// Starts Chromium (Debian's `chromium`) headless on a free DevTools port with a fresh profile.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// As [`Browser::start`], with these environment variables set (e.g. a HOME whose NSS database
    /// trusts a CA: Chromium on Linux takes its local trust anchors from `$HOME/.pki/nssdb`).
    pub fn start_with(envs: &[(&str, &std::path::Path)]) -> Option<Self> {
        let port = free_port();
        let profile = tempdir::Dir(std::env::temp_dir().join(format!("synclab-chromium-{}-{port}", std::process::id())));
        let process = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1400,1800", "--hide-scrollbars"])
            .arg(format!("--remote-debugging-port={port}"))
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let process = Child(process);
        let deadline = Instant::now() + Duration::from_secs(20);
        let ws = loop {
            let targets: serde_json::Value = http_get(port, "/json/list").and_then(|b| serde_json::from_str(&b).ok()).unwrap_or_default();
            let page =
                targets.as_array().and_then(|t| t.iter().find(|t| t["type"] == "page")).and_then(|t| t["webSocketDebuggerUrl"].as_str());
            if let Some(url) = page {
                break url.to_string();
            }
            assert!(Instant::now() < deadline, "Chromium's DevTools did not come up");
            std::thread::sleep(Duration::from_millis(200));
        };
        let (page, _) = tungstenite::connect(ws.as_str()).expect("cannot reach the page over DevTools");
        Some(Self { _process: process, page, next_id: 0, _profile: profile })
    }

    /// Calls a DevTools method and returns its result.
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = serde_json::json!({ "id": id, "method": method, "params": params });
        self.page.send(tungstenite::Message::text(message.to_string())).unwrap();
        loop {
            let answer = self.page.read().unwrap();
            let Ok(text) = answer.to_text() else { continue };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else { continue };
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    pub fn eval(&mut self, expression: &str) -> serde_json::Value {
        self.call("Runtime.evaluate", serde_json::json!({ "expression": expression, "returnByValue": true }))["result"]["value"].clone()
    }
}
