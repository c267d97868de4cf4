//! Certificates that rotate without a restart: a running secure group (election nodes, a time server,
//! devices syncing from it) has every certificate replaced, then its CA (through a bundle of the old and
//! the new), with no election and no failed sync; new connections present the new certificates; a file
//! that fails a check keeps the one in use; SIGHUP reloads at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use synclab::clock::LiveClock;
use synclab::cristian::CristianClient;
use synclab::rpc::Dialer;
use synclab::server::{Stop, StopHandle};
use synclab::tls::{Tls, TlsFiles};
use synclab_core::clock::ClockConfig;
use synclab_core::cristian::Estimator;
use synclab_core::election::Algorithm;
use synclab_harness::cluster::LocalCluster;

const TIMEOUT: Duration = Duration::from_secs(2);
/// How often the watchers look at the files here (services default to 1 s).
const POLL: Duration = Duration::from_millis(100);

/// A fresh folder.
fn folder(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("synclab-rotation-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Certificates for `names` in a fresh folder: under a new CA, or under the CA of `under`.
fn issue(tag: &str, names: &[&str], under: Option<&Path>) -> PathBuf {
    let dir = folder(tag);
    if let Some(ca) = under {
        for file in ["ca.pem", "ca.key"] {
            std::fs::copy(ca.join(file), dir.join(file)).unwrap();
        }
    }
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    synclab::tls::certs::make(&dir, &names, under.is_none()).unwrap();
    dir
}

/// Replaces `to` with `from`'s bytes as deployment tools do: written aside, then renamed over it.
fn replace(from: &Path, to: &Path) {
    let aside = to.with_extension("new");
    std::fs::copy(from, &aside).unwrap();
    std::fs::rename(&aside, to).unwrap();
}

/// Puts `name`'s certificate and key from `source` in `live`.
fn install(source: &Path, live: &Path, name: &str) {
    replace(&source.join(format!("{name}.pem")), &live.join(format!("{name}.pem")));
    replace(&source.join(format!("{name}.key")), &live.join(format!("{name}.key")));
}

/// A folder of the files in use (the CA, and each of `names`' certificate and key) copied from `from`.
fn deploy(from: &Path, tag: &str, names: &[&str]) -> PathBuf {
    let live = folder(tag);
    std::fs::copy(from.join("ca.pem"), live.join("ca.pem")).unwrap();
    for name in names {
        install(from, &live, name);
    }
    live
}

fn files(live: &Path, name: &str) -> TlsFiles {
    TlsFiles { ca: live.join("ca.pem"), cert: live.join(format!("{name}.pem")), key: live.join(format!("{name}.key")) }
}

/// The first certificate in a PEM file.
fn pem(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path).unwrap().next().unwrap().unwrap()
}

/// Waits (bounded) until `check` holds.
async fn until(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The certificate the server at `addr` presents on a fresh handshake, to a client with `tls`.
async fn presented(addr: &str, tls: &Tls) -> CertificateDer<'static> {
    presented_with(addr, tls.client_config()).await
}

/// The certificate the server at `addr` presents on a fresh handshake, to a client with `config`.
async fn presented_with(addr: &str, config: Arc<rustls::ClientConfig>) -> CertificateDer<'static> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = tokio::time::timeout(TIMEOUT, tokio_rustls::TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("the handshake finishes")
        .unwrap_or_else(|e| panic!("handshake with {addr}: {e}"));
    stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

/// A time server over TLS on loopback.
async fn time_server(tls: &Tls) -> (String, StopHandle) {
    let clock = LiveClock::new("time-server", ClockConfig::default()).unwrap();
    let server = synclab::cristian::server(clock, 0, Some(tls)).await.unwrap();
    let listener = synclab::server::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (stop, stopped) = Stop::new();
    tokio::spawn(server.serve(listener, stopped));
    (addr, stop)
}

/// Syncs a device from `server` every 50 ms until `stop`, counting syncs and failures: over one kept
/// connection, or (`fresh`) a new connection, hence a new handshake, each time.
fn keep_syncing(server: String, dialer: Dialer, fresh: bool, stop: Stop) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (d, f) = (done.clone(), failed.clone());
    tokio::spawn(async move {
        let clock = LiveClock::new("laptop", ClockConfig::default()).unwrap();
        let mut client = CristianClient::dial(&server, TIMEOUT, &dialer).unwrap();
        while !stop.is_stopping() {
            if fresh {
                client = CristianClient::dial(&server, TIMEOUT, &dialer).unwrap();
            }
            match client.sync(&clock, 2, Estimator::Ntp).await {
                Ok(_) => d.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    eprintln!("a sync failed: {e}");
                    f.fetch_add(1, Ordering::Relaxed)
                }
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (done, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_certificate_and_the_ca_rotate_in_a_running_group_with_no_election_and_no_failed_sync() {
    let names = ["node-1", "node-2", "node-3", "time-server", "laptop", "observer"];
    let first = issue("first", &names, None);
    let live = deploy(&first, "live", &names);
    let (watching, watch_stop) = Stop::new();
    let tls: BTreeMap<&str, Tls> = names
        .iter()
        .map(|&name| {
            let tls = Tls::load(&files(&live, name)).unwrap();
            synclab::tls::reload::watch(tls.clone(), Some(POLL), watch_stop.clone());
            (name, tls)
        })
        .collect();

    // The group: three election nodes, a time server, and a device syncing from it twice over (on a
    // kept connection, and on a new one each time).
    let state = folder("state");
    let node_tls = tls.clone();
    let ms = Duration::from_millis;
    let cluster = LocalCluster::start_with(Algorithm::Bully, 3, ms(100), ms(1000), ms(300), state, move |node| {
        node.tls = Some(node_tls[format!("node-{}", node.id).as_str()].clone());
    })
    .await
    .unwrap();
    assert!(cluster.wait_for_agreement(&[1, 2, 3], 3, Duration::from_secs(10)).await.is_some(), "the group elects");
    let term = cluster.node(1).unwrap().snapshot().await.term;
    let (server, _server_stop) = time_server(&tls["time-server"]).await;
    let (syncing, sync_stop) = Stop::new();
    let laptop = Dialer::new(Some(tls["laptop"].clone()));
    let (kept, kept_failed) = keep_syncing(server.clone(), laptop.clone(), false, sync_stop.clone());
    let (fresh, fresh_failed) = keep_syncing(server.clone(), laptop, true, sync_stop.clone());
    until("syncs before the rotation", TIMEOUT * 5, || kept.load(Ordering::Relaxed) >= 3 && fresh.load(Ordering::Relaxed) >= 3).await;

    let servers: Vec<(&str, String)> = vec![
        ("node-1", cluster.address(1).to_string()),
        ("node-2", cluster.address(2).to_string()),
        ("node-3", cluster.address(3).to_string()),
        ("time-server", server.clone()),
    ];
    let observer = tls["observer"].clone();
    // Each step: new files in place, every process reloads them, and a fresh handshake with every
    // server shows its new certificate; syncs go on throughout.
    let rotate_certificates = async |source: &Path| {
        let before = (kept.load(Ordering::Relaxed), fresh.load(Ordering::Relaxed));
        let started = Instant::now();
        for name in names {
            install(source, &live, name);
        }
        for name in names {
            let want = pem(&source.join(format!("{name}.pem")));
            until(&format!("{name} reloading its certificate"), TIMEOUT * 5, || tls[name].certificate() == want).await;
        }
        let took = started.elapsed();
        for (name, addr) in &servers {
            assert_eq!(presented(addr, &observer).await, pem(&source.join(format!("{name}.pem"))), "{name} presents its new certificate");
        }
        until("syncs after the step", TIMEOUT * 5, || {
            kept.load(Ordering::Relaxed) > before.0 + 2 && fresh.load(Ordering::Relaxed) > before.1 + 2
        })
        .await;
        took
    };

    // 1. Every certificate, under the same CA.
    let second = issue("second", &names, Some(&first));
    let mut took = vec![rotate_certificates(&second).await];

    // 2. The CA: a bundle of the old and the new first, then certificates from the new, then the new alone.
    let third = issue("third", &names, None);
    let bundle = folder("bundle").join("ca.pem");
    let both = [std::fs::read(first.join("ca.pem")).unwrap(), std::fs::read(third.join("ca.pem")).unwrap()].concat();
    std::fs::write(&bundle, both).unwrap();
    let replace_ca = async |from: &Path, what: &str| {
        let reloaded: BTreeMap<&str, u64> = names.iter().map(|&n| (n, tls[n].reloads().ok)).collect();
        let started = Instant::now();
        replace(from, &live.join("ca.pem"));
        for name in names {
            until(&format!("{name} reloading {what}"), TIMEOUT * 5, || tls[name].reloads().ok > reloaded[name]).await;
        }
        started.elapsed()
    };
    took.push(replace_ca(&bundle, "the CA bundle").await);
    took.push(rotate_certificates(&third).await);
    took.push(replace_ca(&third.join("ca.pem"), "the new CA alone").await);
    let before = fresh.load(Ordering::Relaxed);
    until("syncs under the new CA alone", TIMEOUT * 5, || fresh.load(Ordering::Relaxed) > before + 2).await;
    // A client of the old CA alone is refused now.
    let stale = Tls::load(&files(&first, "observer")).unwrap();
    let mut refused =
        synclab::proto::time::time_service_client::TimeServiceClient::new(Dialer::new(Some(stale)).channel(&server, TIMEOUT).unwrap());
    assert!(
        refused.get_time(synclab::proto::time::GetTimeRequest::default()).await.is_err(),
        "the old CA's certificate still opens the door"
    );

    sync_stop_and_check(&syncing, &kept, &kept_failed, &fresh, &fresh_failed);
    // No election: the same term, and everyone still follows node 3.
    let states = cluster.states().await;
    let terms: Vec<u64> = states.values().map(|s| s.term).collect();
    // For BENCHMARKS.md's rotation figure (run with --no-capture).
    eprintln!(
        "rotation: syncs {} kept-connection + {} new-connection, failed {}, term {term} -> {terms:?}, steps reached all 6 processes in {:?} ms",
        kept.load(Ordering::Relaxed),
        fresh.load(Ordering::Relaxed),
        kept_failed.load(Ordering::Relaxed) + fresh_failed.load(Ordering::Relaxed),
        took.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    for (id, state) in &states {
        assert_eq!(state.term, term, "node {id} saw an election during the rotation");
        assert_eq!(state.coordinator, 3, "node {id}");
    }
    watching.stop();
    cluster.shutdown().await;
}

fn sync_stop_and_check(stop: &StopHandle, kept: &AtomicU64, kept_failed: &AtomicU64, fresh: &AtomicU64, fresh_failed: &AtomicU64) {
    stop.stop();
    assert_eq!(kept_failed.load(Ordering::Relaxed), 0, "syncs failed on the kept connection ({} done)", kept.load(Ordering::Relaxed));
    assert_eq!(fresh_failed.load(Ordering::Relaxed), 0, "syncs failed on new connections ({} done)", fresh.load(Ordering::Relaxed));
}

#[tokio::test]
async fn a_file_that_fails_a_check_keeps_the_certificate_in_use_and_says_why() {
    let names = ["time-server", "observer", "node-1"];
    let first = issue("bad-first", &names, None);
    let live = deploy(&first, "bad-live", &names);
    let tls = Tls::load(&files(&live, "time-server")).unwrap();
    let (_watching, watch_stop) = Stop::new();
    synclab::tls::reload::watch(tls.clone(), Some(POLL), watch_stop);
    let observer = Tls::load(&files(&live, "observer")).unwrap();
    let (server, _stop) = time_server(&tls).await;
    let original = pem(&first.join("time-server.pem"));

    let second = issue("bad-second", &names, Some(&first));
    let other_ca = issue("bad-other", &names, None);
    type Break<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Break, &str)> = vec![
        ("garbage", Box::new(|| std::fs::write(live.join("time-server.pem"), "not a certificate").unwrap()), "no certificate"),
        (
            "a new certificate with the old key",
            Box::new(|| replace(&second.join("time-server.pem"), &live.join("time-server.pem"))),
            "not the key",
        ),
        ("another CA's certificate", Box::new(|| install(&other_ca, &live, "time-server")), "not accepted under the CA"),
    ];
    for (what, break_it, why) in cases {
        install(&first, &live, "time-server");
        let failed = tls.reloads().failed;
        break_it();
        until(&format!("the watcher trying {what}"), TIMEOUT * 5, || tls.reloads().failed > failed).await;
        let err = tls.reload().unwrap_err().to_string();
        assert!(err.contains("time-server") && err.contains(why), "{what}: {err}");
        assert_eq!(tls.certificate(), original, "{what} replaced the certificate in use");
        assert_eq!(presented(&server, &observer).await, original, "{what}: new connections keep the old certificate");
    }
    // A certificate for another identity is refused too: what a process may do rests on its identity.
    std::fs::copy(second.join("node-1.pem"), live.join("time-server.pem")).unwrap();
    std::fs::copy(second.join("node-1.key"), live.join("time-server.key")).unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("'node-1'") && err.contains("'time-server'"), "{err}");
    assert_eq!(tls.certificate(), original);
    // Good files again take effect.
    install(&second, &live, "time-server");
    let want = pem(&second.join("time-server.pem"));
    until("the good certificate taking effect", TIMEOUT * 5, || tls.certificate() == want).await;
    assert_eq!(presented(&server, &observer).await, want);
}

#[tokio::test]
async fn sighup_reloads_at_once() {
    let names = ["time-server", "observer"];
    let first = issue("hup-first", &names, None);
    let live = deploy(&first, "hup-live", &names);
    let tls = Tls::load(&files(&live, "time-server")).unwrap();
    let (_watching, watch_stop) = Stop::new();
    // No polling: only SIGHUP reloads.
    synclab::tls::reload::watch(tls.clone(), None, watch_stop);
    let (_metrics_stop, stop) = Stop::new();
    let (metrics, _) = synclab::observe::serve("127.0.0.1:0".parse().unwrap(), Some(&tls), stop).await.unwrap();
    let observer = Tls::load(&files(&live, "observer")).unwrap();
    assert_eq!(presented_with(&metrics.to_string(), observer.http_client_config()).await, pem(&first.join("time-server.pem")));
    // NTS-KE as the time server serves it with TLS: each session takes the certificate in use.
    let master = synclab::ntp::nts::new_master_keys().unwrap();
    let ke_tls = tls.clone();
    let ke = synclab::ntp::NtsKeServer::bind("127.0.0.1:0", move || ke_tls.nts_ke_server_config(), master, 123, Default::default())
        .await
        .unwrap();
    let ke_addr = ke.local_addr().unwrap().to_string();
    let (_ke_stop, ke_stopped) = Stop::new();
    tokio::spawn(ke.serve(ke_stopped));
    let nts_client = synclab::tls::nts_ke_client_config(&live.join("ca.pem")).unwrap();
    assert_eq!(presented_with(&ke_addr, nts_client.clone()).await, pem(&first.join("time-server.pem")));
    let second = issue("hup-second", &names, Some(&first));
    install(&second, &live, "time-server");
    tokio::time::sleep(POLL * 3).await;
    assert_eq!(tls.certificate(), pem(&first.join("time-server.pem")), "no reload without SIGHUP when not polling");
    let sent = std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().unwrap();
    assert!(sent.success());
    let want = pem(&second.join("time-server.pem"));
    until("SIGHUP's reload", TIMEOUT, || tls.certificate() == want).await;
    // The HTTPS listeners take it too: /metrics, started before, presents it on the next handshake,
    // and counts the reload.
    assert_eq!(presented_with(&metrics.to_string(), observer.http_client_config()).await, want);
    assert_eq!(presented_with(&ke_addr, nts_client).await, want, "NTS-KE's next session presents the new certificate");
    let page = synclab::observe::web::get(&metrics.to_string(), "/metrics", Some(&observer), TIMEOUT, 1 << 20).await.unwrap();
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("synclab_tls_reloads_total{outcome=\"ok\"} 1"), "{page}");
}
