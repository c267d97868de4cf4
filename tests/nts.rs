//! NTS (RFC 8915) on loopback: chronyd as an NTS client of synclab's time server and as the NTS server
//! synclab's client syncs from, certificates that must fail (another CA, another name) on both sides,
//! and NTS-KE sessions and NTP packets meant to hurt the server.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::chrony::{ChronyDir, Chronyd, free_udp_port};
use common::clock;
use synclab::clock::LiveClock;
use synclab::cristian::SyncError;
use synclab::ntp::nts::{KeOutcome, KeSessionError, NtsError, establish, raw_exchange};
use synclab::ntp::{KeLimits, KeTarget, NtpClient, NtpMode, NtpServer, NtpStats, NtsKeServer, NtsKeStats};
use synclab::server::{Stop, StopHandle};
use synclab_core::clock::ClockConfig;
use synclab_core::cristian::Estimator;
use synclab_core::ntp::nts::ke::{self, Record};
use synclab_core::ntp::nts::{MasterKeys, NtsReplyError, fields};
use synclab_core::ntp::{NtpTimestamp, Packet, ServerConfig};

const SEC: i64 = 1_000_000_000;

/// A lab CA and a `time-server` certificate (SANs time-server, localhost, 127.0.0.1) in a fresh folder.
struct Certs(PathBuf);

impl Certs {
    fn new(tag: &str) -> Self {
        let dir = common::out_dir("nts-certs", &format!("{tag}-{}", synclab::random::nonce()));
        synclab::tls::certs::make(&dir, &["time-server".to_string()], false).unwrap();
        Self(dir)
    }

    fn ca(&self) -> PathBuf {
        self.0.join("ca.pem")
    }

    fn cert(&self) -> PathBuf {
        self.0.join("time-server.pem")
    }

    fn key(&self) -> PathBuf {
        self.0.join("time-server.key")
    }

    fn target(&self, addr: &str) -> KeTarget {
        KeTarget {
            addr: addr.to_string(),
            config: synclab::tls::nts_ke_client_config(&self.ca()).unwrap(),
            timeout: Duration::from_secs(5),
        }
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// synclab's NTP server with NTS on `ip`, stopped when dropped.
struct NtsServer {
    ntp: SocketAddr,
    ke: SocketAddr,
    stats: Arc<NtpStats>,
    ke_stats: Arc<NtsKeStats>,
    master: Arc<MasterKeys>,
    _stop: StopHandle,
}

struct Options<'a> {
    ip: &'a str,
    offset: i64,
    require: bool,
    limits: KeLimits,
    /// The NTP port NTS-KE names, when not the server's own (a proxy's).
    ntp_port: Option<u16>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self { ip: "127.0.0.1", offset: 0, require: false, limits: KeLimits::default(), ntp_port: None }
    }
}

impl NtsServer {
    async fn start(certs: &Certs, o: Options<'_>) -> Self {
        let clock = LiveClock::new("time-server", ClockConfig { offset_nanos: o.offset, ..ClockConfig::default() }).unwrap();
        let master = synclab::ntp::nts::new_master_keys().unwrap();
        let ntp =
            NtpServer::bind(&format!("{}:0", o.ip), clock, ServerConfig::default()).await.unwrap().with_nts(master.clone(), o.require);
        let ntp_addr = ntp.local_addr().unwrap();
        let config = synclab::tls::nts_ke_server_config(&certs.cert(), &certs.key()).unwrap();
        let port = o.ntp_port.unwrap_or(ntp_addr.port());
        let ke = NtsKeServer::bind(&format!("{}:0", o.ip), config, master.clone(), port, o.limits).await.unwrap();
        let (ke_addr, stats, ke_stats) = (ke.local_addr().unwrap(), ntp.stats(), ke.stats());
        let (stop, stopped) = Stop::new();
        tokio::spawn(ntp.serve(stopped.clone()));
        tokio::spawn(ke.serve(stopped));
        Self { ntp: ntp_addr, ke: ke_addr, stats, ke_stats, master, _stop: stop }
    }
}

/// The counter's value once it reaches `want`, or after 3 s if it never does.
async fn when_reached(read: impl Fn() -> u64, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = read();
        if now >= want || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `chronyd -Q` (measure once, never set the clock) with `lines` as its config; its exit status
/// and what it printed.
async fn chronyd_q(lines: String, seconds: u32) -> (bool, String) {
    let dir = ChronyDir::new("nts-q");
    let conf = dir.config(&lines);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("chronyd")
            .args(["-Q", "-u", "root", "-t", &seconds.to_string(), "-f"])
            .arg(conf)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    drop(dir);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The seconds chronyd -Q found the clock wrong by.
fn wrong_by(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.split("System clock wrong by ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chronyd_syncs_from_synclab_over_nts_and_plain_requests_are_refused_when_nts_is_required() {
    let certs = Certs::new("chrony-client");
    let server = NtsServer::start(&certs, Options { offset: 3 * SEC / 2, require: true, ..Options::default() }).await;
    let lines = format!(
        "server 127.0.0.1 port {} nts ntsport {} iburst maxsamples 4\nntstrustedcerts {}",
        server.ntp.port(),
        server.ke.port(),
        certs.ca().display()
    );
    let (ok, text) = chronyd_q(lines, 20).await;
    let wrong = wrong_by(&text).unwrap_or_else(|| panic!("no measurement from chronyd -Q over NTS: {text}"));
    assert!(ok && (wrong - 1.5).abs() < 1e-3, "chronyd -Q: clock wrong by {wrong} s, not 1.5 s: {text}");
    assert!(server.ke_stats.established.load(Ordering::Relaxed) >= 1, "chronyd ran NTS-KE");
    let authenticated = server.stats.nts_answered.load(Ordering::Relaxed);
    assert!(authenticated >= 2, "{authenticated} NTS replies");
    assert_eq!(server.stats.answered.load(Ordering::Relaxed), authenticated, "every reply was authenticated");
    // The same chronyd without NTS gets nothing from a server that requires it.
    let plain = format!("server 127.0.0.1 port {} iburst maxsamples 4", server.ntp.port());
    let (_, text) = chronyd_q(plain, 3).await;
    assert_eq!(wrong_by(&text), None, "a plain client was answered: {text}");
    assert!(when_reached(|| server.stats.dropped("nts_required"), 1).await >= 1);
    assert_eq!(server.stats.answered.load(Ordering::Relaxed), authenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chronyd_xleave_nts_client_runs_interleaved_and_authenticated_within_50_us() {
    let certs = Certs::new("chrony-xleave");
    let offset = 250_000; // the server is 250 µs ahead of true time
    let server = NtsServer::start(&certs, Options { offset, require: true, ..Options::default() }).await;
    let (port, ke) = (server.ntp.port(), server.ke.port());
    let chronyd = Chronyd::start(
        "nts-xleave",
        &format!(
            "server 127.0.0.1 port {port} nts ntsport {ke} minpoll -6 maxpoll -6 iburst xleave\nntstrustedcerts {}\nport 0",
            certs.ca().display()
        ),
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    // As in tests/ntp.rs: read until a sample passes all ten of chrony's tests, the packet tests always.
    let mut ntpdata = String::new();
    for _ in 0..20 {
        ntpdata = chronyd.chronyc("ntpdata");
        let tests = common::chrony::field(&ntpdata, "NTP tests").unwrap_or_else(|| panic!("{ntpdata}\n{}", chronyd.log())).to_string();
        assert!(tests.starts_with("111 111 "), "a packet test failed: {ntpdata}");
        if tests == "111 111 1111" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(common::chrony::field(&ntpdata, "Authenticated"), Some("Yes"), "{ntpdata}");
    assert_eq!(common::chrony::field(&ntpdata, "Interleaved"), Some("Yes"), "{ntpdata}");
    let tracking = chronyd.chronyc("tracking");
    let ahead = common::chrony::server_ahead_secs(&tracking).unwrap_or_else(|| panic!("{tracking}"));
    assert!((ahead * 1e9 - offset as f64).abs() < 50_000.0, "chronyd sees the server {ahead} s ahead, truly {offset} ns: {tracking}");
    assert!(server.stats.interleaved.load(Ordering::Relaxed) > 0);
    assert_eq!(server.stats.answered.load(Ordering::Relaxed), server.stats.nts_answered.load(Ordering::Relaxed));
}

/// chronyd as an NTS server on `ip`: NTP on `port`, NTS-KE on `ke_port`, the certificate from `certs`.
fn chronyd_nts_server(certs: &Certs, ip: &str, port: u16, ke_port: u16) -> Chronyd {
    let dump = std::env::temp_dir().join(format!("synclab-ntsdump-{}-{}", std::process::id(), synclab::random::nonce()));
    std::fs::create_dir_all(&dump).unwrap();
    Chronyd::start(
        "nts-server",
        &format!(
            "port {port}\nntsport {ke_port}\nntsservercert {}\nntsserverkey {}\nntsdumpdir {}\nbindaddress {ip}\nallow 127.0.0.0/8\nlocal stratum 1",
            certs.cert().display(),
            certs.key().display(),
            dump.display()
        ),
    )
}

/// Whether a sync failed because the server is not listening yet.
fn not_up_yet(e: &SyncError) -> bool {
    match e {
        SyncError::Io { .. } => true,
        SyncError::Nts { source, .. } => matches!(source.downcast_ref::<NtsError>(), Some(NtsError::Ke(KeSessionError::Io { .. }))),
        _ => false,
    }
}

/// Syncs `device` through `client`, retrying for 5 s while the server starts.
async fn sync_retrying(client: &mut NtpClient, device: &LiveClock) -> Result<synclab::cristian::SyncReport, SyncError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client.sync(device, 8, Estimator::Ntp).await {
            Err(e) if Instant::now() < deadline && not_up_yet(&e) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synclab_syncs_from_chronyd_over_nts_within_50_us() {
    let certs = Certs::new("chrony-server");
    let (port, ke_port) = (free_udp_port(), common::free_port());
    let chronyd = chronyd_nts_server(&certs, "127.0.0.1", port, ke_port);
    for mode in [NtpMode::Interleaved, NtpMode::Basic] {
        let device = clock("laptop", -3 * SEC / 2, 30.0);
        // The NTP port comes from NTS-KE: --server's is not used.
        let mut client =
            NtpClient::new("127.0.0.1:9", Duration::from_secs(2), mode).with_nts(certs.target(&format!("127.0.0.1:{ke_port}")));
        let report = sync_retrying(&mut client, &device).await.unwrap_or_else(|e| panic!("{mode:?}: {e}\n{}", chronyd.log()));
        assert!(report.true_error_us.abs() < 50.0, "{mode:?}: {report:?}");
        assert!(report.true_error_us.abs() <= report.error_bound_us + 1.0, "{mode:?}: {report:?}");
        assert!(report.server_name.starts_with("NTP stratum 1"), "{report:?}");
        // A second sync spends the cookies the first one's replies brought.
        let again = client.sync(&device, 8, Estimator::Ntp).await.unwrap();
        assert!(again.true_error_us.abs() < 50.0, "{again:?}");
    }
    let authdata = chronyd.chronyc("serverstats");
    assert!(authdata.contains("Authenticated NTP packets"), "{authdata}");
    let authenticated: u64 = common::chrony::field(&authdata, "Authenticated NTP packets").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(authenticated >= 32, "chronyd answered {authenticated} NTS requests: {authdata}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_name_fails_both_ways_with_a_clear_message() {
    let (certs, stranger) = (Certs::new("right"), Certs::new("stranger"));
    // chronyd trusting another CA, then reaching synclab by a name its certificate does not carry.
    let server = NtsServer::start(&certs, Options::default()).await;
    let lines = |ip: &str, ntp: u16, ke: u16, ca: &Path| {
        format!("server {ip} port {ntp} nts ntsport {ke} iburst\nntstrustedcerts {}", ca.display())
    };
    let (ok, text) = chronyd_q(lines("127.0.0.1", server.ntp.port(), server.ke.port(), &stranger.ca()), 5).await;
    assert!(!ok && wrong_by(&text).is_none(), "{text}");
    assert!(text.contains("certificate") && text.contains("NOT trusted"), "chronyd names the certificate: {text}");
    let other = NtsServer::start(&certs, Options { ip: "127.0.0.2", ..Options::default() }).await;
    let (ok, text) = chronyd_q(lines("127.0.0.2", other.ntp.port(), other.ke.port(), &certs.ca()), 5).await;
    assert!(!ok && wrong_by(&text).is_none(), "{text}");
    assert!(text.contains("name in the certificate does not match"), "{text}");
    assert!(when_reached(|| server.ke_stats.refused("handshake"), 1).await >= 1, "the refused handshake is counted");
    assert_eq!(server.stats.answered.load(Ordering::Relaxed) + other.stats.answered.load(Ordering::Relaxed), 0);

    // synclab's client against chronyd: another CA, then a name the certificate does not carry.
    let (port, ke_port) = (free_udp_port(), common::free_port());
    let chronyd = chronyd_nts_server(&certs, "127.0.0.2", port, ke_port);
    let device = clock("laptop", 0, 0.0);
    let addr = format!("127.0.0.2:{ke_port}");
    let fail = |e: SyncError| e.to_string();
    let mut wrong_ca = NtpClient::new(&addr, Duration::from_secs(1), NtpMode::Basic).with_nts(stranger.target(&addr));
    let text = fail(sync_retrying(&mut wrong_ca, &device).await.unwrap_err());
    assert!(text.contains("TLS handshake") && text.contains("invalid peer certificate"), "{text}\n{}", chronyd.log());
    let mut wrong_name = NtpClient::new(&addr, Duration::from_secs(1), NtpMode::Basic).with_nts(certs.target(&addr));
    let text = fail(sync_retrying(&mut wrong_name, &device).await.unwrap_err());
    assert!(text.contains("TLS handshake") && text.contains("not valid for name"), "{text}");
    // With the right CA and a name it carries (chronyd listens on 127.0.0.2 only, so "localhost" does
    // not reach it; the name check came before anything else).
}

/// NTS-KE with the server by hand: keys, cookies and the NTP address.
async fn ke_session(certs: &Certs, server: &NtsServer) -> KeOutcome {
    establish(&certs.target(&server.ke.to_string())).await.unwrap()
}

/// An NTS request with `cookie` and identifier `uid`, authenticated under `c2s`.
fn nts_request(transmit: u64, uid: u8, cookie: &[u8], c2s: &[u8; 32]) -> Vec<u8> {
    let header = Packet::request(NtpTimestamp::ZERO, NtpTimestamp::ZERO, NtpTimestamp(transmit), 0).to_bytes();
    fields::client_request(&header, &[uid; 32], cookie, 0, c2s, &[7; 16])
}

/// Sends `bytes` and returns the reply, if one comes within 300 ms.
fn ask(socket: &UdpSocket, bytes: &[u8]) -> Option<Vec<u8>> {
    socket.send(bytes).unwrap();
    let mut buf = [0u8; 2048];
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_foreign_and_truncated_nts_requests_get_a_nak_or_nothing_and_are_counted() {
    let certs = Certs::new("hostile-ntp");
    let server = NtsServer::start(&certs, Options::default()).await;
    let outcome = ke_session(&certs, &server).await;
    assert_eq!(outcome.cookies.len(), 8);
    assert_eq!(outcome.ntp_addr, server.ntp.to_string());
    let (ntp, keys, cookies) = (server.ntp, outcome.keys.clone(), outcome.cookies.clone());
    let foreign = MasterKeys::new(server.master.current_id(), [1; 32], 1, 1).cookie(&keys);
    tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(ntp).unwrap();
        // A valid request is answered, authenticated, with a new cookie.
        let good = nts_request(100, 1, &cookies[0], &keys.c2s);
        let reply = ask(&socket, &good).expect("an answer");
        assert_eq!(fields::check_reply(&reply, &[1; 32], &keys.s2c).map(|c| c.len()), Ok(1));
        // Replayed, it is answered again (the server keeps no state), but only to that identifier: a
        // client waiting on another request refuses it, and it carries nothing a forger can change.
        let replayed = ask(&socket, &good).expect("an answer");
        assert_eq!(fields::check_reply(&replayed, &[2; 32], &keys.s2c), Err(NtsReplyError::UnknownUid));
        // One flipped bit of the authenticator's ciphertext: a NAK.
        let mut tampered = nts_request(101, 3, &cookies[1], &keys.c2s);
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let nak = ask(&socket, &tampered).expect("a NAK");
        assert_eq!(fields::check_reply(&nak, &[3; 32], &keys.s2c), Err(NtsReplyError::Nak));
        assert_eq!(&Packet::parse(&nak).unwrap().reference_id, b"NTSN");
        // A cookie of another server's key, and one cut short: NAKs.
        let nak = ask(&socket, &nts_request(102, 4, &foreign, &keys.c2s)).expect("a NAK");
        assert_eq!(fields::check_reply(&nak, &[4; 32], &keys.s2c), Err(NtsReplyError::Nak));
        let nak = ask(&socket, &nts_request(103, 5, &cookies[2][..96], &keys.c2s)).expect("a NAK");
        assert_eq!(fields::check_reply(&nak, &[5; 32], &keys.s2c), Err(NtsReplyError::Nak));
        // A request whose authenticator is cut off: malformed, no answer at all.
        let cut = nts_request(104, 6, &cookies[3], &keys.c2s);
        assert_eq!(ask(&socket, &cut[..cut.len() - 40]), None);
    })
    .await
    .unwrap();
    let stats = &server.stats;
    assert_eq!(when_reached(|| stats.dropped("nts_bad_authenticator"), 1).await, 1);
    assert_eq!(when_reached(|| stats.dropped("nts_bad_cookie"), 2).await, 2);
    assert_eq!(when_reached(|| stats.dropped("nts_malformed"), 1).await, 1);
    assert_eq!(when_reached(|| stats.nts_naks.load(Ordering::Relaxed), 3).await, 3);
    assert_eq!(when_reached(|| stats.nts_answered.load(Ordering::Relaxed), 2).await, 2);
}

/// A man in the middle between synclab's client and its NTP server: before passing each reply on it
/// sends the client the previous reply (a replay) and a copy of this one with one bit of the
/// authenticator flipped. The client must take neither, and still sync right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_refuses_replayed_and_forged_replies_and_still_syncs() {
    let certs = Certs::new("mitm");
    let proxy = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server =
        NtsServer::start(&certs, Options { offset: SEC, ntp_port: Some(proxy.local_addr().unwrap().port()), ..Options::default() }).await;
    let (upstream, forged) = (server.ntp, Arc::new(AtomicU64::new(0)));
    let counted = forged.clone();
    std::thread::spawn(move || {
        let up = UdpSocket::bind("127.0.0.1:0").unwrap();
        up.connect(upstream).unwrap();
        proxy.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut previous: Option<Vec<u8>> = None;
        let mut buf = [0u8; 2048];
        while let Ok((n, client)) = proxy.recv_from(&mut buf) {
            up.send(&buf[..n]).unwrap();
            let n = up.recv(&mut buf).unwrap();
            let reply = buf[..n].to_vec();
            if let Some(old) = previous.replace(reply.clone()) {
                proxy.send_to(&old, client).unwrap();
            }
            let mut bad = reply.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            proxy.send_to(&bad, client).unwrap();
            counted.fetch_add(1, Ordering::Relaxed);
            proxy.send_to(&reply, client).unwrap();
        }
    });
    let device = clock("laptop", -SEC, 20.0);
    let mut client =
        NtpClient::new("127.0.0.1:9", Duration::from_secs(2), NtpMode::Interleaved).with_nts(certs.target(&server.ke.to_string()));
    let report = client.sync(&device, 8, Estimator::Ntp).await.unwrap();
    assert!(forged.load(Ordering::Relaxed) >= 8, "the proxy forged a reply per request");
    assert!((device.settled_offset() - SEC as f64).abs() <= report.error_bound_us * 1e3 + 1e3, "{report:?}");
    assert!(report.interleaved, "{report:?}");
}

/// A raw TLS session with the NTS-KE server.
async fn raw_ke(certs: &Certs, addr: SocketAddr) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(synclab::tls::nts_ke_client_config(&certs.ca()).unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_nts_ke_requests_get_an_error_record_and_stalled_or_flooding_sessions_are_dropped() {
    let certs = Certs::new("hostile-ke");
    let limits = KeLimits { timeout: Duration::from_secs(1), max_pending: 16 };
    let server = NtsServer::start(&certs, Options { limits, ..Options::default() }).await;
    let ke_addr = server.ke;
    let error_of = |bytes: &[u8]| ke::parse_message(bytes, ke::MAX_RESPONSE_LEN).unwrap();
    // An unknown critical record: error 0.
    let unknown = ke::encode(&[
        Record::NextProtocol(vec![0]),
        Record::Aead(vec![15]),
        Record::Unknown { record_type: 0x4321, critical: true },
        Record::EndOfMessage,
    ]);
    let answer = raw_exchange(&mut raw_ke(&certs, ke_addr).await, &unknown, 4096).await.unwrap();
    assert_eq!(error_of(&answer), vec![Record::Error(0), Record::EndOfMessage]);
    // An oversized message (records that never end): error 1, before the client is done sending.
    let mut huge = Vec::new();
    for _ in 0..100 {
        huge.extend(ke::encode(&[Record::Unknown { record_type: 0x0999, critical: false }]));
    }
    huge.extend(std::iter::repeat_n(0x11u8, 2000));
    let answer = raw_exchange(&mut raw_ke(&certs, ke_addr).await, &huge, 4096).await.unwrap_or_default();
    assert_eq!(error_of(&answer), vec![Record::Error(1), Record::EndOfMessage]);
    // A truncated request (no end of message), then the close: counted, no answer.
    let mut truncated = raw_ke(&certs, ke_addr).await;
    use tokio::io::AsyncWriteExt;
    truncated.write_all(&ke::client_request()[..6]).await.unwrap();
    truncated.shutdown().await.unwrap();
    drop(truncated);
    assert!(when_reached(|| server.ke_stats.refused("unknown_critical"), 1).await == 1);
    assert!(when_reached(|| server.ke_stats.refused("oversized"), 1).await == 1);
    assert!(when_reached(|| server.ke_stats.refused("closed"), 1).await == 1);

    // A connection that never starts its handshake: dropped at the deadline, and counted.
    let stalled = tokio::net::TcpStream::connect(ke_addr).await.unwrap();
    assert!(when_reached(|| server.ke_stats.refused("timeout"), 1).await >= 1);
    drop(stalled);
    // 200 stalled connections at once (far over the 16 pending allowed): the oldest are dropped, a
    // real client still gets its cookies, and the NTP path keeps answering.
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(tokio::net::TcpStream::connect(ke_addr).await.unwrap());
    }
    let outcome = ke_session(&certs, &server).await;
    assert_eq!(outcome.cookies.len(), 8);
    let device = clock("phone", SEC / 2, 0.0);
    let mut client =
        NtpClient::new("127.0.0.1:9", Duration::from_secs(2), NtpMode::Interleaved).with_nts(certs.target(&ke_addr.to_string()));
    let report = client.sync(&device, 4, Estimator::Ntp).await.unwrap();
    assert!(report.true_error_us.abs() <= report.error_bound_us + 1.0, "{report:?}");
    // Every stalled session ends, evicted by a newer one or at its deadline; most by eviction.
    let dropped = when_reached(|| server.ke_stats.refused("evicted") + server.ke_stats.refused("timeout"), 201).await;
    assert_eq!(dropped, 201, "the stalled sessions (1 + 200) all dropped");
    let evicted = server.ke_stats.refused("evicted");
    assert!(evicted >= 100, "{evicted} of 200 stalled sessions evicted");
    drop(flood);
    assert!(server.ke_stats.established.load(Ordering::Relaxed) >= 2);
}

/// Runs `cmd` and returns its standard error (it must fail).
fn failing(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{cmd:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_binaries_take_the_nts_flags_refuse_what_cannot_work_and_stop_on_sigterm() {
    let (server_bin, client_bin) = (env!("CARGO_BIN_EXE_time-server"), env!("CARGO_BIN_EXE_synclab"));
    let certs = Certs::new("binaries");
    let (grpc, ntp, ke) = (common::free_port(), free_udp_port(), common::free_port());
    let (grpc, ntp, ke) = (format!("127.0.0.1:{grpc}"), format!("127.0.0.1:{ntp}"), format!("127.0.0.1:{ke}"));
    // NTS without a certificate, or without the NTP it authenticates: a clear refusal at start.
    let text = failing(Command::new(server_bin).args(["--listen", &grpc, "--ntp-listen", &ntp, "--nts"]));
    assert!(text.contains("needs --tls-cert and --tls-key"), "{text}");
    let text = failing(Command::new(server_bin).args(["--listen", &grpc, "--nts-ke-listen", &ke]));
    assert!(text.contains("needs --ntp-listen"), "{text}");
    // A client asked for NTS without a CA, or for NTS over gRPC.
    let text =
        failing(Command::new(client_bin).args(["cristian", "--protocol", "ntp", "--server", &ntp, "--nts"]).env_remove("SYNCLAB_TLS_CA"));
    assert!(text.contains("--nts-ca"), "{text}");
    let text = failing(Command::new(client_bin).args(["cristian", "--server", &grpc, "--nts"]).arg("--nts-ca").arg(certs.ca()));
    assert!(text.contains("--nts needs --protocol ntp"), "{text}");

    let tls = |flag: &str, path: PathBuf| [flag.to_string(), path.display().to_string()];
    let mut server = Command::new(server_bin)
        .args(["--listen", &grpc, "--ntp-listen", &ntp, "--ntp-require-nts", "--clock-offset", "+1.5s"])
        .env("SYNCLAB_NTS_KE_LISTEN", &ke)
        .args(tls("--tls-ca", certs.ca()))
        .args(tls("--tls-cert", certs.cert()))
        .args(tls("--tls-key", certs.key()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sync = |extra: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = Command::new(client_bin)
                .args(["cristian", "--protocol", "ntp", "--server", &ntp, "--timeout", "300ms", "--json"])
                .args(extra)
                .output()
                .unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            if out.status.success() || Instant::now() >= deadline || !text.contains("refused") {
                return (out.status.success(), text);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let ca = certs.ca().display().to_string();
    let (ok, text) = sync(&["--nts", "--nts-ke", &ke, "--nts-ca", &ca]);
    assert!(ok, "{text}");
    let report: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!((report["true_error_us"].as_f64().unwrap() - 1.5e6).abs() < 1e3, "{report}");
    assert_eq!(report["server"], ntp.as_str(), "the NTP address NTS-KE named");
    // Plain NTP gets no answer from a server that requires NTS.
    let (ok, text) = sync(&[]);
    assert!(!ok && text.contains("no valid reply"), "{text}");
    // SIGTERM stops it, NTS-KE listener included, within a second.
    assert!(Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if let Some(status) = server.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        if Instant::now() >= deadline {
            let _ = server.kill();
            panic!("time server still running a second after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
