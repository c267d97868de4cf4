//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod browser;
pub mod chrony;

use std::net::SocketAddr;
use std::process::{Command, Output};

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

/// Whether this runs under CI (`CI=true`), where a missing tool fails a test instead of skipping it.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (or, under CI, fails) when `what` is missing: false means the test returns without checking.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(!under_ci(), "{what} is required under CI");
    eprintln!("SKIPPED: {what} is not available on this machine");
    false
}

/// Runs `cmd` to its end.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd`, which must succeed, and returns its standard output.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// An empty folder under the temporary directory for a test's output, unique to this process.
pub fn out_dir(prefix: &str, tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("synclab-{prefix}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `synclab lab ARGS`; returns its exit code and what it printed.
pub fn lab(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_synclab")).arg("lab").args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// A folder of certificates from `synclab certs` for these names under a new CA, fresh per test.
pub fn certs(prefix: &str, tag: &str, names: &[&str]) -> std::path::PathBuf {
    let dir = out_dir(prefix, tag);
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    synclab::tls::certs::make(&dir, &names, false).unwrap();
    dir
}

/// `name`'s TLS files in a folder from [`certs`].
pub fn tls_files(dir: &std::path::Path, name: &str) -> synclab::tls::TlsFiles {
    synclab::tls::TlsFiles { ca: dir.join("ca.pem"), cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) }
}

/// `name`'s TLS, loaded from a folder from [`certs`].
pub fn tls(dir: &std::path::Path, name: &str) -> synclab::tls::Tls {
    synclab::tls::Tls::load(&tls_files(dir, name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A TLS client that trusts the CA in `dir` (a folder from [`certs`]) and presents no certificate,
/// offering the ALPN protocols `alpn`.
pub fn without_certificate(dir: &std::path::Path, alpn: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    std::sync::Arc::new(config)
}
