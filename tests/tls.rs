//! Mutual TLS, end to end on loopback: certificates from `synclab certs`, refused handshakes, start-up
//! errors that name the file, and the authorization table (who may call what).

mod common;

use common::tls;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use synclab::berkeley::master::{Master, MasterConfig};
use synclab::berkeley::slave::Slave;
use synclab::clock::LiveClock;
use synclab::cristian::CristianClient;
use synclab::proto::berkeley::berkeley_master_client::BerkeleyMasterClient;
use synclab::proto::berkeley::berkeley_slave_client::BerkeleySlaveClient;
use synclab::proto::berkeley::{AdjustRequest, RegisterRequest, StatusRequest};
use synclab::proto::election as pb;
use synclab::proto::election::election_service_client::ElectionServiceClient;
use synclab::proto::time::GetTimeRequest;
use synclab::proto::time::time_service_client::TimeServiceClient;
use synclab::rpc::{Dialer, RpcError, read_clock};
use synclab::server::{Stop, StopHandle};
use synclab::tls::{Tls, TlsError, TlsFiles};
use synclab_core::clock::ClockConfig;
use synclab_core::cristian::Estimator;
use synclab_core::election::Algorithm;
use synclab_harness::cluster::LocalCluster;
use tonic::Code;

const SEC: i64 = 1_000_000_000;
const TIMEOUT: Duration = Duration::from_secs(2);

/// A folder of certificates from `synclab certs` for these names, fresh per test.
fn certs(tag: &str, names: &[&str]) -> PathBuf {
    common::certs("tls", tag, names)
}

fn files(dir: &Path, name: &str) -> TlsFiles {
    common::tls_files(dir, name)
}

fn dialer(dir: &Path, name: &str) -> Dialer {
    Dialer::new(Some(tls(dir, name)))
}

/// A time server over TLS on loopback; stops when dropped.
struct Served {
    addr: String,
    _stop: StopHandle,
}

async fn time_server(dir: &Path) -> Served {
    let clock = LiveClock::new("time-server", ClockConfig::default()).unwrap();
    let server = synclab::cristian::server(clock, 0, Some(&tls(dir, "time-server"))).await.unwrap();
    let listener = synclab::server::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (stop, stopped) = Stop::new();
    tokio::spawn(server.serve(listener, stopped));
    Served { addr, _stop: stop }
}

async fn get_time(dialer: &Dialer, addr: &str) -> Result<(), RpcError> {
    let mut client = TimeServiceClient::new(dialer.channel(addr, TIMEOUT)?);
    synclab::rpc::with_deadline(addr, TIMEOUT, client.get_time(GetTimeRequest::default())).await.map(|_| ())
}

#[tokio::test]
async fn a_device_syncs_over_tls_and_its_bound_holds() {
    let dir = certs("sync", &["time-server", "laptop", "observer"]);
    let server = time_server(&dir).await;
    let clock = LiveClock::new("laptop", ClockConfig { offset_nanos: 5 * SEC, ..ClockConfig::default() }).unwrap();
    let mut client = CristianClient::dial(&server.addr, TIMEOUT, &dialer(&dir, "laptop")).unwrap();
    let report = client.sync(&clock, 8, Estimator::Ntp).await.unwrap();
    assert!(report.true_error_us.abs() <= report.error_bound_us, "{report:?}");
    assert!(report.true_error_us.abs() < 1000.0, "{report:?}");
    // Reads are for any identity the CA signed.
    let reading = read_clock(&dialer(&dir, "observer"), &server.addr, "", TIMEOUT).await.unwrap();
    assert_eq!(reading.clock, "time-server");
}

#[tokio::test]
async fn handshakes_without_a_good_client_certificate_are_refused() {
    let dir = certs("handshake", &["time-server", "observer"]);
    let server = time_server(&dir).await;
    assert!(get_time(&dialer(&dir, "observer"), &server.addr).await.is_ok());

    // Plaintext against a TLS server.
    assert!(get_time(&Dialer::plaintext(), &server.addr).await.is_err());

    // TLS that trusts the server but presents no client certificate.
    let config = common::without_certificate(&dir, &[b"h2"]);
    let tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await;
    // TLS 1.3 finishes the client side before the server checks; the refusal shows on first use.
    if let Ok(mut stream) = handshake {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(TIMEOUT, stream.read(&mut buf)).await.expect("the server answers or closes");
        assert!(matches!(read, Err(_) | Ok(0)), "a server answered a client without a certificate: {read:?}");
    }

    // A certificate from another CA, and an expired one from the right CA.
    let other = certs("other-ca", &["observer"]);
    assert!(get_time(&dialer(&other, "observer"), &server.addr).await.is_err(), "a certificate from another CA was accepted");
    let expired = expired_certificate(&dir, "stale");
    let tls = Tls::load(&expired);
    assert!(matches!(&tls, Err(TlsError::Bad { problem, .. }) if problem.contains("expired")), "{tls:?}");
}

/// A certificate for `name` signed by the CA in `dir`, expired yesterday.
fn expired_certificate(dir: &Path, name: &str) -> TlsFiles {
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(dir.join("ca.pem")).unwrap(), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    files(dir, name)
}

#[test]
fn bad_tls_settings_are_start_up_errors_that_name_the_file() {
    let dir = certs("startup", &["time-server", "observer"]);
    let other = certs("startup-other", &["observer"]);
    let ca = dir.join("ca.pem");
    // Half a set.
    let half = Tls::from_flags(Some(&ca), None, None).unwrap_err().to_string();
    assert!(half.contains("--tls-ca") && half.contains("--tls-cert and --tls-key"), "{half}");
    assert!(Tls::from_flags(None, None, None).unwrap().is_none(), "no flag: plaintext");
    let cases: Vec<(TlsFiles, &str, &str)> = vec![
        (TlsFiles { ca: dir.join("missing.pem"), ..files(&dir, "observer") }, "missing.pem", "cannot read"),
        (TlsFiles { key: dir.join("time-server.key"), ..files(&dir, "observer") }, "time-server.key", "not the key"),
        (TlsFiles { ca: dir.join("observer.key"), ..files(&dir, "observer") }, "observer.key", "no certificate"),
        (TlsFiles { ca: ca.clone(), ..files(&other, "observer") }, "observer.pem", "not accepted under the CA"),
        (expired_certificate(&dir, "old"), "old.pem", "expired"),
    ];
    for (files, file, problem) in cases {
        let err = Tls::load(&files).unwrap_err().to_string();
        assert!(err.contains(file) && err.contains(problem), "expected {file} and '{problem}' in: {err}");
    }
    // The binary refuses to start the same way.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_time-server"))
        .args(["--listen", "127.0.0.1:0", "--tls-ca"])
        .arg(&ca)
        .args(["--tls-cert"])
        .arg(dir.join("observer.pem"))
        .args(["--tls-key"])
        .arg(dir.join("time-server.key"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("time-server.key") && stderr.contains("not the key"), "{stderr}");
}

async fn berkeley(dir: &Path) -> (Arc<Master>, String, StopHandle) {
    let clock = LiveClock::new("berkeley-master", ClockConfig::default()).unwrap();
    let config = MasterConfig {
        interval: Duration::from_secs(5),
        tolerance_nanos: SEC as f64,
        samples: 4,
        timeout: Duration::from_millis(500),
        max_missed: 2,
        max_members: 8,
        dialer: dialer(dir, "berkeley-master"),
    };
    let master = Master::new(clock, config);
    let (stop, stopped) = Stop::new();
    let server = synclab::berkeley::master::server(master.clone(), "berkeley-master", stopped.clone()).await.unwrap();
    let listener = synclab::server::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(server.serve(listener, stopped));
    (master, addr, stop)
}

#[tokio::test]
async fn each_identity_may_do_only_what_the_table_says() {
    let dir = certs("authz", &["berkeley-master", "kmc", "observer", "node-1", "node-2", "node-3"]);
    let (master, master_addr, _stop) = berkeley(&dir).await;

    // A real slave (kmc) registers as KMC over TLS and takes the master's rounds.
    let clock = LiveClock::new("KMC", ClockConfig { offset_nanos: 400_000_000, ..ClockConfig::default() }).unwrap();
    let slave = Slave::new(clock.clone(), 3600 * SEC, dialer(&dir, "kmc")).unwrap();
    let server = slave.server().await.unwrap();
    let listener = synclab::server::bind("127.0.0.1:0").await.unwrap();
    let slave_addr = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (_slave_stop, stopped) = Stop::new();
    tokio::spawn(server.serve(listener, stopped));
    slave.register(&master_addr, "KMC", &slave_addr, TIMEOUT).await.unwrap();
    let round = master.run_round().await;
    assert!(round.members.iter().all(|m| m.answered && m.adjusted), "{round:?}");
    let adjusted = clock.read().adjustments;

    let denied = |status: tonic::Status, who: &str, rpc: &str| {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains(who) && status.message().contains(rpc), "{}", status.message());
    };
    let observer = dialer(&dir, "observer");
    let kmc = dialer(&dir, "kmc");
    // kmc registering as MIT; the observer registering anything.
    let register = |name: &str| RegisterRequest { name: name.into(), address: "127.0.0.1:1".into(), claim: vec![7; 32] };
    let mut as_kmc = BerkeleyMasterClient::new(kmc.channel(&master_addr, TIMEOUT).unwrap());
    denied(as_kmc.register(register("MIT")).await.unwrap_err(), "'kmc'", "Register");
    let mut as_observer = BerkeleyMasterClient::new(observer.channel(&master_addr, TIMEOUT).unwrap());
    denied(as_observer.register(register("KMC")).await.unwrap_err(), "'observer'", "Register");
    // Anyone but the master calling Adjust, even with the right claim.
    for (who, d) in [("observer", &observer), ("kmc", &kmc)] {
        let mut client = BerkeleySlaveClient::new(d.channel(&slave_addr, TIMEOUT).unwrap());
        let request = AdjustRequest { adjustment_nanos: 3600 * SEC, round: 99, epoch: master.epoch(), claim: slave.claim() };
        denied(client.adjust(request).await.unwrap_err(), who, "Adjust");
    }
    assert_eq!(clock.read().adjustments, adjusted, "a refused adjustment moved the slave's clock");
    // Reads are open to the observer.
    assert!(as_observer.status(StatusRequest {}).await.is_ok());
    assert!(read_clock(&observer, &slave_addr, "", TIMEOUT).await.is_ok());

    // Elections: a group over TLS; node-2 sending Alive as node 3, the observer sending Alive.
    let certs_dir = dir.clone();
    let state = std::env::temp_dir().join(format!("synclab-tls-election-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let heartbeat = Duration::from_millis(50);
    let cluster = LocalCluster::start_with(
        Algorithm::Bully,
        3,
        heartbeat,
        Duration::from_millis(200),
        Duration::from_millis(100),
        state,
        move |node| {
            node.tls = Some(tls(&certs_dir, &format!("node-{}", node.id)));
        },
    )
    .await
    .unwrap();
    assert!(cluster.wait_for_agreement(&[1, 2, 3], 3, Duration::from_secs(10)).await.is_some(), "a TLS group elects");
    let term = cluster.node(1).unwrap().snapshot().await.term;
    let alive = |from: i64| pb::AliveRequest { from, term, coordinator: 3, to: 1 };
    let mut as_node2 = ElectionServiceClient::new(dialer(&dir, "node-2").channel(cluster.address(1), TIMEOUT).unwrap());
    denied(as_node2.alive(alive(3)).await.unwrap_err(), "'node-2'", "Alive");
    assert!(as_node2.alive(alive(2)).await.is_ok(), "node-2 may speak for itself");
    let mut as_observer = ElectionServiceClient::new(observer.channel(cluster.address(1), TIMEOUT).unwrap());
    denied(as_observer.alive(alive(2)).await.unwrap_err(), "'observer'", "Alive");
    assert!(as_observer.get_state(pb::GetStateRequest {}).await.is_ok(), "reads are open");
    cluster.shutdown().await;
}

#[tokio::test]
async fn only_the_lab_identity_may_break_things() {
    let dir = certs("lab", &["time-server", "observer", "lab", "node-1"]);
    let clock = LiveClock::new("time-server", ClockConfig::default()).unwrap();
    let services = synclab::cristian::services(clock.clone(), 0, Some(&tls(&dir, "time-server")));
    let server = synclab::daemon::with_lab(services, true, synclab::clock::ClockSet::new(vec![clock.clone()])).build().await.unwrap();
    let listener = synclab::server::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (_stop, stopped) = Stop::new();
    tokio::spawn(server.serve(listener, stopped));
    let bump = synclab::proto::lab::BumpClockRequest { clock: String::new(), by_nanos: 1_000_000_000 };
    for who in ["observer", "node-1", "time-server"] {
        let mut client = synclab::proto::lab::lab_client::LabClient::new(dialer(&dir, who).channel(&addr, TIMEOUT).unwrap());
        let e = client.bump_clock(bump.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{who}: {e:?}");
        assert!(e.message().contains(who) && e.message().contains("BumpClock"), "{}", e.message());
    }
    assert!(clock.read().true_offset.abs() < 1e6, "a refused bump moved the clock");
    let mut lab = synclab::proto::lab::lab_client::LabClient::new(dialer(&dir, "lab").channel(&addr, TIMEOUT).unwrap());
    lab.bump_clock(bump).await.unwrap();
    assert!((clock.read().true_offset - 1e9).abs() < 1e6);
}
