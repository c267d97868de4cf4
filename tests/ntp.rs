//! NTP on loopback: synclab's NTP server measured by chrony (the reference implementation, as a client
//! that never touches the host clock: `chronyd -Q` and `chronyd -x`), synclab's NTP client against
//! chronyd, and datagrams meant to hurt the server.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::chrony::{ChronyDir, Chronyd, field, free_udp_port, server_ahead_secs};
use common::clock;
use synclab::clock::LiveClock;
use synclab::cristian::SyncError;
use synclab::ntp::{NtpClient, NtpMode, NtpServer, NtpStats};
use synclab::server::{Stop, StopHandle};
use synclab_core::clock::ClockConfig;
use synclab_core::cristian::Estimator;
use synclab_core::ntp::{Mode, NtpTimestamp, Packet, ServerConfig};

const SEC: i64 = 1_000_000_000;

/// synclab's NTP server on 127.0.0.1, stopped when dropped.
struct TestNtpServer {
    addr: SocketAddr,
    stats: Arc<NtpStats>,
    stop: StopHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestNtpServer {
    async fn start(offset_nanos: i64, config: ServerConfig) -> Self {
        let clock = LiveClock::new("time-server", ClockConfig { offset_nanos, ..ClockConfig::default() }).unwrap();
        let server = NtpServer::bind("127.0.0.1:0", clock, config).await.unwrap();
        let (addr, stats) = (server.local_addr().unwrap(), server.stats());
        let (stop, stopped) = Stop::new();
        let task = tokio::spawn(server.serve(stopped));
        Self { addr, stats, stop, task }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chronyd_q_sees_a_server_one_and_a_half_seconds_ahead() {
    let server = TestNtpServer::start(3 * SEC / 2, ServerConfig::default()).await;
    let dir = ChronyDir::new("q");
    let conf = dir.config(&format!("server 127.0.0.1 port {} iburst maxsamples 4", server.addr.port()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("chronyd").args(["-Q", "-u", "root", "-t", "20", "-f"]).arg(conf).stdin(Stdio::null()).output().unwrap()
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let wrong: f64 = text
        .lines()
        .find_map(|l| l.split("System clock wrong by ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no measurement from chronyd -Q: {text}"));
    assert!((wrong - 1.5).abs() < 1e-3, "chronyd -Q: clock wrong by {wrong} s, not 1.5 s: {text}");
    assert!(when_reached(&server.stats.answered, 1).await >= 1);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chronyd_xleave_client_runs_interleaved_and_within_50_us() {
    let offset = 250_000; // the server is 250 µs ahead of true time
    let server = TestNtpServer::start(offset, ServerConfig::default()).await;
    let port = server.addr.port();
    let chronyd = Chronyd::start("xleave", &format!("server 127.0.0.1 port {port} minpoll -6 maxpoll -6 iburst xleave\nport 0"));
    tokio::time::sleep(Duration::from_secs(8)).await;
    // chrony's tests of the last reply: the first six check the packet (duplicate, bogus origin,
    // timestamps, root distance, leap, stratum) and must always pass; the last four check the sample's
    // delay against the ones before (maxdelay, maxdelayratio, maxdelaydevratio) and the sync loop, so a
    // delay spike on a loaded machine fails one of them for that sample alone. Read until a sample
    // passes all ten (a few readings, 1/64 s of polling apart), every reading's packet tests passing.
    let mut ntpdata = String::new();
    for _ in 0..20 {
        ntpdata = chronyd.chronyc("ntpdata");
        let tests = field(&ntpdata, "NTP tests").unwrap_or_else(|| panic!("{ntpdata}")).to_string();
        assert!(tests.starts_with("111 111 "), "a packet test failed: {ntpdata}");
        if tests == "111 111 1111" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let tracking = chronyd.chronyc("tracking");
    assert_eq!(field(&ntpdata, "Interleaved"), Some("Yes"), "{ntpdata}\n{}", chronyd.log());
    assert_eq!(field(&ntpdata, "NTP tests"), Some("111 111 1111"), "no sample of 20 passed every test: {ntpdata}");
    assert_eq!(field(&ntpdata, "Mode"), Some("Server"));
    assert_eq!(field(&ntpdata, "Stratum"), Some("1"));
    let ahead = server_ahead_secs(&tracking).unwrap_or_else(|| panic!("{tracking}"));
    assert!((ahead * 1e9 - offset as f64).abs() < 50_000.0, "chronyd sees the server {ahead} s ahead, truly {offset} ns: {tracking}");
    assert!(server.stats.interleaved.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synclab_syncs_from_chronyd_within_50_us_in_both_modes() {
    let port = free_udp_port();
    let _chronyd = Chronyd::start("server", &format!("port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 1"));
    let server = format!("127.0.0.1:{port}");
    for (mode, interleaved) in [(NtpMode::Interleaved, true), (NtpMode::Basic, false)] {
        let device = clock("laptop", -3 * SEC / 2, 30.0);
        let mut client = NtpClient::new(&server, Duration::from_secs(2), mode);
        // chronyd answers once it has bound its socket; the first tries may find nothing there.
        let deadline = Instant::now() + Duration::from_secs(5);
        let report = loop {
            match client.sync(&device, 8, Estimator::Ntp).await {
                Ok(r) => break r,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert!(report.true_error_us.abs() < 50.0, "{mode:?}: {report:?}");
        assert!(report.true_error_us.abs() <= report.error_bound_us + 1.0, "{mode:?}: {report:?}");
        assert_eq!(report.interleaved, interleaved, "{report:?}");
        // The request's departure and the reply's arrival both stamped by the kernel.
        assert!(report.kernel_timestamps, "{mode:?}: {report:?}");
        assert!(report.server_name.starts_with("NTP stratum 1"), "{report:?}");
    }
}

#[tokio::test]
async fn synclab_syncs_from_its_own_ntp_server_interleaved_and_follows_its_clock() {
    let server = TestNtpServer::start(SEC, ServerConfig::default()).await;
    let device = clock("laptop", -2 * SEC, -30.0);
    let mut client = NtpClient::new(&server.addr.to_string(), Duration::from_secs(2), NtpMode::Interleaved);
    let report = client.sync(&device, 8, Estimator::Ntp).await.unwrap();
    assert!(report.interleaved && report.kernel_timestamps, "{report:?}");
    assert_eq!(report.samples, 8);
    assert!((device.settled_offset() - SEC as f64).abs() <= report.error_bound_us * 1e3 + 1e3, "{report:?}");
    assert!(server.stats.kernel_tx_stamps.load(Ordering::Relaxed) > 0, "the kernel stamped the replies");
}

/// A basic client's replies are sent without a kernel transmit stamp (it would never use one, and each
/// costs the server a read of its error queue); an interleaved client's are stamped from its first
/// interleaved request on.
#[tokio::test]
async fn only_replies_to_interleaved_clients_are_stamped_by_the_kernel() {
    let server = TestNtpServer::start(SEC, ServerConfig::default()).await;
    let stats = &server.stats;
    let device = clock("phone", SEC / 2, 10.0);
    let mut basic = NtpClient::new(&server.addr.to_string(), Duration::from_secs(2), NtpMode::Basic);
    let report = basic.sync(&device, 8, Estimator::Ntp).await.unwrap();
    assert!(!report.interleaved, "{report:?}");
    // The server counts a request before it answers it, so `received` is exact once the client has its
    // replies; `answered` is counted after the send and the kernel's stamps after they are read back,
    // so those two may trail the client by a moment.
    assert_eq!(stats.received.load(Ordering::Relaxed), 8);
    assert_eq!(when_reached(&stats.answered, 8).await, 8);
    assert_eq!(stats.kernel_tx_stamps.load(Ordering::Relaxed), 0, "no basic reply stamped");
    let mut interleaved = NtpClient::new(&server.addr.to_string(), Duration::from_secs(2), NtpMode::Interleaved);
    let report = interleaved.sync(&device, 8, Estimator::Ntp).await.unwrap();
    assert!(report.interleaved, "{report:?}");
    // The first request is basic (there is no previous exchange yet); every one after it asks for
    // interleaved mode.
    let requests = stats.received.load(Ordering::Relaxed) - 8;
    assert!(requests >= 8, "{requests} requests for 8 interleaved samples");
    assert_eq!(when_reached(&stats.answered, 8 + requests).await, 8 + requests);
    assert_eq!(when_reached(&stats.kernel_tx_stamps, requests - 1).await, requests - 1);
    // And no stamp more comes later.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(stats.kernel_tx_stamps.load(Ordering::Relaxed), requests - 1);
}

/// The counter's value once it reaches `want`, or after a second if it never does.
async fn when_reached(counter: &std::sync::atomic::AtomicU64, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let now = counter.load(Ordering::Relaxed);
        if now >= want || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Sends `bytes` from `socket` and returns the reply, if one comes within 300 ms.
fn ask(socket: &UdpSocket, bytes: &[u8]) -> Option<Vec<u8>> {
    socket.send(bytes).unwrap();
    let mut buf = [0u8; 2048];
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

fn raw(version: u8, mode: u8, transmit: u64) -> Vec<u8> {
    let mut b = vec![0u8; 48];
    b[0] = version << 3 | mode;
    b[40..48].copy_from_slice(&transmit.to_be_bytes());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_datagrams_get_no_answer_or_a_correct_one_and_valid_clients_still_sync() {
    let server = TestNtpServer::start(0, ServerConfig::default()).await;
    let addr = server.addr;
    let stats = server.stats.clone();
    tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(addr).unwrap();
        let silent: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("47 bytes", vec![0x23; 47]),
            ("1 kB", {
                let mut b = raw(4, 3, 7);
                b.resize(1024, 0);
                b
            }),
            ("64 kB", {
                let mut b = raw(4, 3, 7);
                b.resize(65_000, 0xFF);
                b
            }),
            ("mode 6 (control)", raw(2, 6, 7)),
            ("mode 7 (private)", raw(2, 7, 7)),
            ("mode 4 (a reply)", raw(4, 4, 7)),
            ("mode 1 (symmetric)", raw(4, 1, 7)),
            ("version 5", raw(5, 3, 7)),
            ("version 0", raw(0, 3, 7)),
            ("zero transmit timestamp", raw(4, 3, 0)),
            ("unaligned", {
                let mut b = raw(4, 3, 7);
                b.push(0);
                b
            }),
        ];
        for (what, bytes) in &silent {
            assert_eq!(ask(&socket, bytes), None, "{what} got an answer");
        }
        // A request with a spoofed origin (none of our receive timestamps) gets a correct basic reply.
        let spoofed = Packet::request(NtpTimestamp(0xDEAD_BEEF_0000_0001), NtpTimestamp(5), NtpTimestamp(0x1234_5678_9ABC_DEF0), 0);
        let reply = ask(&socket, &spoofed.to_bytes()).expect("a reply");
        assert_eq!(reply.len(), 48, "a reply is never larger than its request");
        let p = Packet::parse(&reply).unwrap();
        assert_eq!((p.mode, p.version, p.stratum, p.leap), (Mode::Server, 4, 1, 0));
        assert_eq!(p.origin, spoofed.transmit, "basic mode: the request's transmit timestamp echoed");
        // A v3 request is answered in v3, and no larger than the request.
        let p = Packet::parse(&ask(&socket, &raw(3, 3, 99)).unwrap()).unwrap();
        assert_eq!((p.version, p.origin), (3, NtpTimestamp(99)));
    })
    .await
    .unwrap();
    for (kind, n) in
        [("truncated", 2), ("oversized", 2), ("not_client_mode", 4), ("bad_version", 2), ("zero_transmit", 1), ("unaligned", 1)]
    {
        assert_eq!(stats.dropped(kind), n, "{kind}");
    }
    let device = clock("phone", SEC, 0.0);
    let report =
        NtpClient::new(&addr.to_string(), Duration::from_secs(2), NtpMode::Interleaved).sync(&device, 4, Estimator::Ntp).await.unwrap();
    assert!(report.true_error_us.abs() <= report.error_bound_us + 1.0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_gets_a_rate_kiss_and_the_client_reports_it() {
    // Without the leak (one in four requests over the limit answered anyway by default), so the count of
    // answers is the limit's alone.
    let config = ServerConfig { rate_per_sec: 20, burst: 10, leak: 0, ..ServerConfig::default() };
    let server = TestNtpServer::start(0, config).await;
    let addr = server.addr;
    let (answered, kisses) = tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(addr).unwrap();
        for i in 0..300u64 {
            socket.send(&raw(4, 3, 1000 + i)).unwrap();
        }
        socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let (mut answered, mut kisses) = (0, 0);
        let mut buf = [0u8; 128];
        while let Ok(n) = socket.recv(&mut buf) {
            let p = Packet::parse(&buf[..n]).unwrap();
            if p.kiss_code() == Some(*b"RATE") {
                assert_eq!(p.leap, 3);
                kisses += 1;
            } else {
                answered += 1;
            }
        }
        (answered, kisses)
    })
    .await
    .unwrap();
    assert!((10..=16).contains(&answered), "{answered} answered");
    assert!(kisses >= 1, "no RATE kiss-o'-death");
    // Every request the socket took (a burst this size may overflow its buffer) was answered, kissed or
    // dropped for the rate.
    let (received, replied) = (server.stats.received.load(Ordering::Relaxed), server.stats.answered.load(Ordering::Relaxed));
    assert!(received >= 100, "{received}");
    assert_eq!(server.stats.dropped("rate_limited"), received - replied);
    // The flooder's own client now hears the kiss and fails, naming it.
    let device = clock("phone", 0, 0.0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut client = NtpClient::new(&addr.to_string(), Duration::from_millis(500), NtpMode::Basic);
    let mut kissed = false;
    for _ in 0..40 {
        match client.sync(&device, 8, Estimator::Ntp).await {
            Err(SyncError::Ntp { source, .. }) => {
                assert!(source.to_string().contains("RATE"), "{source}");
                kissed = true;
                break;
            }
            _ => continue,
        }
    }
    assert!(kissed, "the client never saw the kiss-o'-death");
}

#[tokio::test]
async fn the_server_stops_within_a_second_of_the_stop() {
    let server = TestNtpServer::start(0, ServerConfig::default()).await;
    server.stop.stop();
    tokio::time::timeout(Duration::from_secs(1), server.task).await.expect("stopped in time").unwrap().unwrap();
}

#[tokio::test]
async fn a_silent_server_fails_the_sync_with_a_timeout() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let device = clock("phone", 0, 0.0);
    let err = NtpClient::new(&silent.local_addr().unwrap().to_string(), Duration::from_millis(200), NtpMode::Interleaved)
        .sync(&device, 2, Estimator::Ntp)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no valid reply"), "{err}");
    assert_eq!(device.read().adjustments, 0, "nothing applied");
}

const SYNCLAB: &str = env!("CARGO_BIN_EXE_synclab");
const TIME_SERVER: &str = env!("CARGO_BIN_EXE_time-server");

/// A child process killed when dropped (if still running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The inodes of the UDP sockets process `pid` holds.
fn udp_sockets_of(pid: u32) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    let table =
        std::fs::read_to_string("/proc/net/udp").unwrap_or_default() + &std::fs::read_to_string("/proc/net/udp6").unwrap_or_default();
    table.lines().skip(1).filter(|l| l.split_whitespace().nth(9).is_some_and(|i| inodes.iter().any(|x| x == i))).count()
}

fn wait_for_line(child: &mut Child, what: &str) {
    use std::io::BufRead;
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains(what) {
            // Keep draining so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return;
        }
    }
    panic!("the process ended before logging '{what}'");
}

#[test]
fn the_time_server_answers_ntp_only_when_asked_and_both_protocols_report_alike() {
    // A bad address is an error that names the flag.
    let out = Command::new(TIME_SERVER).args(["--ntp-listen", "nonsense"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ntp-listen"), "{}", String::from_utf8_lossy(&out.stderr));

    // Without --ntp-listen: no UDP socket.
    let grpc = format!("127.0.0.1:{}", common::free_port());
    let mut plain = Running(
        Command::new(TIME_SERVER).args(["--listen", &grpc]).env_remove("SYNCLAB_NTP_LISTEN").stderr(Stdio::piped()).spawn().unwrap(),
    );
    wait_for_line(&mut plain.0, "time server listening");
    assert_eq!(udp_sockets_of(plain.0.id()), 0);
    drop(plain);

    let grpc = format!("127.0.0.1:{}", common::free_port());
    let ntp = format!("127.0.0.1:{}", free_udp_port());
    let mut server = Running(
        Command::new(TIME_SERVER)
            .args(["--listen", &grpc, "--clock-offset", "+1.5s"])
            .env("SYNCLAB_NTP_LISTEN", &ntp)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_line(&mut server.0, "answering NTP");
    assert_eq!(udp_sockets_of(server.0.id()), 1);

    let run = |args: &[&str]| {
        let out = Command::new(SYNCLAB).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let by_ntp: serde_json::Value = serde_json::from_str(&run(&["cristian", "--protocol", "ntp", "--server", &ntp, "--json"])).unwrap();
    let by_grpc: serde_json::Value = serde_json::from_str(&run(&["cristian", "--server", &grpc, "--json"])).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&by_ntp), keys(&by_grpc), "the two protocols report the same fields");
    for v in [&by_ntp, &by_grpc] {
        let err = v["true_error_us"].as_f64().unwrap();
        assert!((err - 1.5e6).abs() < 1e3, "{v}");
    }
    assert_eq!(by_ntp["interleaved"], true);
    let human = run(&["cristian", "--protocol", "ntp", "--server", &ntp]);
    assert!(human.contains("synced with NTP stratum 1 (SLAB)") && human.contains("true error"), "{human}");
    let bad = Command::new(SYNCLAB).args(["cristian", "--protocol", "smoke-signals"]).output().unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--protocol"));

    // SIGTERM stops the NTP task with the rest, within a second.
    assert!(Command::new("kill").args(["-TERM", &server.0.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "time server still running a second after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn with_an_interval_the_client_learns_its_frequency_and_holds_over_for_both_protocols() {
    let grpc = format!("127.0.0.1:{}", common::free_port());
    let ntp = format!("127.0.0.1:{}", free_udp_port());
    let mut server =
        Running(Command::new(TIME_SERVER).args(["--listen", &grpc, "--ntp-listen", &ntp]).stderr(Stdio::piped()).spawn().unwrap());
    wait_for_line(&mut server.0, "answering NTP");
    for (protocol, addr) in [("ntp", &ntp), ("grpc", &grpc)] {
        // 200 ppm slow: 100 µs lost per 500 ms interval without a frequency correction.
        let out = Command::new(SYNCLAB)
            .args([
                "cristian",
                "--protocol",
                protocol,
                "--server",
                addr,
                "--json",
                "--interval",
                "500ms",
                "--count",
                "8",
                "--clock-drift-ppm",
                "-200",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let holdover: Vec<f64> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["true_offset_before_us"].as_f64().unwrap())
            .collect();
        assert_eq!(holdover.len(), 8);
        // The second sync sees the whole drift of an interval; the last ones a small part of it.
        assert!(holdover[1] < -80.0, "{protocol}: {holdover:?}");
        let last = holdover[5..].iter().map(|h| h.abs()).fold(0.0, f64::max);
        assert!(last < 20.0, "{protocol}: holdover still {last} µs: {holdover:?}");
    }
}
