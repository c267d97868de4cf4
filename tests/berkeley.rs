//! The Berkeley algorithm over real gRPC on 127.0.0.1: a real master and real slaves in this process,
//! ground truth from their virtual clocks.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use synclab::berkeley::master::{Master, MasterConfig};
use synclab::berkeley::slave::Slave;
use synclab::clock::LiveClock;
use synclab::proto::berkeley::berkeley_master_client::BerkeleyMasterClient;
use synclab::proto::berkeley::berkeley_slave_client::BerkeleySlaveClient;
use synclab::proto::berkeley::{AdjustRequest, RegisterRequest, StatusRequest, WatchRoundsRequest};
use synclab::rpc::Dialer;
use synclab::server::{Stop, StopHandle};
use synclab_core::clock::ClockConfig;
use tonic::Code;

const MS: i64 = 1_000_000;
const SEC: i64 = 1_000_000_000;

/// A server task that stops when dropped.
struct Serving {
    addr: SocketAddr,
    _stop: StopHandle,
}

async fn serve(server: synclab::server::Server, addr: &str, stop: (StopHandle, Stop)) -> Serving {
    let listener = synclab::server::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (handle, stop) = stop;
    tokio::spawn(server.serve(listener, stop));
    Serving { addr, _stop: handle }
}

struct TestSlave {
    name: &'static str,
    clock: LiveClock,
    slave: Arc<Slave>,
    server: Option<Serving>,
}

impl TestSlave {
    fn addr(&self) -> String {
        self.server.as_ref().unwrap().addr.to_string()
    }

    /// Registers with the master at `master` (as the slave's own loop does, once).
    async fn join(&self, master: &Serving) -> bool {
        self.slave.register(&master.addr.to_string(), self.name, &self.addr(), Duration::from_secs(1)).await.unwrap().rejoined
    }
}

/// Clocks as compose runs them: corrections of 1 ms or more stepped, smaller ones slewed at 5%.
fn group_clock(offset_nanos: i64, drift_ppm: f64) -> ClockConfig {
    ClockConfig { offset_nanos, drift_ppm, step_threshold_nanos: MS, max_slew_ppm: 50_000.0 }
}

async fn start_slave(name: &'static str, offset: i64, drift_ppm: f64) -> TestSlave {
    let clock = LiveClock::new(name, group_clock(offset, drift_ppm)).unwrap();
    let slave = Slave::new(clock.clone(), 3600 * SEC, Dialer::plaintext()).unwrap();
    let server = serve(slave.server().await.unwrap(), "127.0.0.1:0", Stop::new()).await;
    TestSlave { name, clock, slave, server: Some(server) }
}

fn config(interval: Duration) -> MasterConfig {
    MasterConfig {
        interval,
        tolerance_nanos: SEC as f64,
        samples: 4,
        timeout: Duration::from_millis(300),
        max_missed: 2,
        max_members: 8,
        dialer: Dialer::plaintext(),
    }
}

async fn start_master(interval: Duration, addr: &str) -> (Arc<Master>, Serving) {
    let clock = LiveClock::new("berkeley-master", group_clock(0, 0.0)).unwrap();
    let master = Master::new(clock, config(interval));
    let (handle, stop) = Stop::new();
    let server = synclab::berkeley::master::server(master.clone(), "berkeley-master", stop.clone()).await.unwrap();
    let server = serve(server, addr, (handle, stop)).await;
    (master, server)
}

/// max − min of the true offsets of these clocks, in ns.
fn spread(clocks: &[&LiveClock]) -> f64 {
    let offsets: Vec<f64> = clocks.iter().map(|c| c.settled_offset()).collect();
    offsets.iter().copied().fold(f64::MIN, f64::max) - offsets.iter().copied().fold(f64::MAX, f64::min)
}

/// How far apart a round may leave two clocks: each slave ends within its measurement's error bound of
/// the master, so two of them within the sum of the two largest bounds (plus drift and slew slack).
fn allowed_spread(round: &synclab::proto::berkeley::Round) -> f64 {
    let mut bounds: Vec<f64> = round.members.iter().map(|m| m.error_bound_nanos as f64).collect();
    bounds.sort_by(|a, b| b.total_cmp(a));
    bounds.iter().take(2).sum::<f64>() + 100_000.0
}

/// The four production lines, TAPMI's clock five minutes out.
async fn four_lines() -> Vec<TestSlave> {
    vec![
        start_slave("KMC", 400 * MS, 60.0).await,
        start_slave("MIT", -300 * MS, -100.0).await,
        start_slave("TAPMI", 300 * SEC, 20.0).await,
        start_slave("SOLS", 150 * MS, 100.0).await,
    ]
}

#[tokio::test]
async fn four_lines_converge_and_the_wild_clock_is_left_out_of_the_average() {
    let (master, server) = start_master(Duration::from_secs(5), "127.0.0.1:0").await;
    let slaves = four_lines().await;
    for s in &slaves {
        s.join(&server).await;
    }
    let round = master.run_round().await;
    assert_eq!(round.members.len(), 4);
    assert!(round.members.iter().all(|m| m.answered && m.adjusted), "{round:?}");
    let excluded: Vec<&str> = round.members.iter().filter(|m| m.excluded).map(|m| m.name.as_str()).collect();
    assert_eq!(excluded, ["TAPMI"]);
    // The average of 0, +400, −300 and +150 ms, not dragged five minutes off by TAPMI.
    assert!((round.average_nanos - 62_500_000).abs() < MS, "{}", round.average_nanos);

    // Everyone, TAPMI too, now sits at the average: their true offsets agree.
    let mut clocks: Vec<&LiveClock> = slaves.iter().map(|s| &s.clock).collect();
    clocks.push(master.clock());
    assert!(spread(&clocks) <= allowed_spread(&round), "spread {} ns after round 1: {round:?}", spread(&clocks));
    let mut round = round;
    for _ in 0..3 {
        round = master.run_round().await;
        assert!(round.members.iter().all(|m| m.answered && !m.excluded), "{round:?}");
    }
    assert!(spread(&clocks) <= allowed_spread(&round), "spread {} ns after round 4: {round:?}", spread(&clocks));

    // The same through every node's Clock/Read, as an observer sees it.
    let mut addrs: Vec<String> = slaves.iter().map(TestSlave::addr).collect();
    addrs.push(server.addr.to_string());
    tokio::time::sleep(Duration::from_millis(50)).await; // the last round's slews done
    let mut offsets = Vec::new();
    for addr in &addrs {
        offsets.push(
            synclab::rpc::read_clock(&synclab::rpc::Dialer::plaintext(), addr, "", Duration::from_secs(1)).await.unwrap().true_offset_nanos
                as f64,
        );
    }
    let observed = offsets.iter().copied().fold(f64::MIN, f64::max) - offsets.iter().copied().fold(f64::MAX, f64::min);
    assert!(observed <= allowed_spread(&round), "Clock/Read shows offsets {offsets:?} after {round:?}");
}

#[tokio::test]
async fn a_slave_that_dies_is_skipped_then_dropped_and_rejoins_when_back() {
    let (master, server) = start_master(Duration::from_secs(5), "127.0.0.1:0").await;
    let mut slaves = four_lines().await;
    for s in &slaves {
        s.join(&server).await;
    }
    master.run_round().await;
    // MIT's server goes away: rounds go on without waiting for it longer than the deadline.
    slaves[1].server = None;
    for missed in 1..=3u32 {
        let started = Instant::now();
        let round = master.run_round().await;
        assert!(started.elapsed() < Duration::from_secs(2), "round took {:?}", started.elapsed());
        let mit = round.members.iter().find(|m| m.name == "MIT").expect("MIT is still in the round");
        assert!(!mit.answered && mit.reason.starts_with("skipped"), "{mit:?}");
        assert!(round.members.iter().filter(|m| m.name != "MIT").all(|m| m.answered));
        let members = master.members();
        if missed <= 2 {
            assert_eq!(members.iter().find(|m| m.name == "MIT").unwrap().missed_rounds, missed);
        } else {
            assert!(members.iter().all(|m| m.name != "MIT"), "MIT should be dropped after 3 missed rounds");
        }
    }
    // MIT restarts (new address, its clock wrong again) and registers again: it is back and corrected.
    let mit = start_slave("MIT", -700 * MS, -100.0).await;
    assert!(!mit.join(&server).await, "dropped, so it joins anew");
    let round = master.run_round().await;
    assert!(round.members.iter().find(|m| m.name == "MIT").unwrap().adjusted);
    let clocks: Vec<&LiveClock> = [&slaves[0].clock, &mit.clock, &slaves[3].clock, master.clock()].into();
    assert!(spread(&clocks) <= allowed_spread(&round), "spread {} ns: {round:?}", spread(&clocks));
}

#[tokio::test]
async fn slaves_register_themselves_and_find_a_restarted_master() {
    let (master, server) = start_master(Duration::from_millis(200), "127.0.0.1:0").await;
    let addr = server.addr.to_string();
    let slaves = four_lines().await;
    let (stop_tx, stop_rx) = Stop::new();
    for s in &slaves {
        let task = s.slave.clone().keep_registered(addr.clone(), s.name.into(), s.addr(), Duration::from_millis(300), stop_rx.clone());
        tokio::spawn(task);
    }
    wait_for(|| master.members().len() == 4, "all four registered").await;

    // The master restarts on the same address with no memory of its members.
    drop(server);
    drop(master);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (master, _server) = start_master(Duration::from_millis(200), &addr).await;
    wait_for(|| master.members().len() == 4, "all four registered again").await;
    let round = master.run_round().await;
    assert!(round.members.iter().all(|m| m.answered && m.adjusted), "{round:?}");
    stop_tx.stop();
}

async fn wait_for(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bad_registrations_are_refused_without_harm() {
    let (master, server) = start_master(Duration::from_secs(5), "127.0.0.1:0").await;
    let mut client = BerkeleyMasterClient::new(synclab::rpc::channel(&server.addr.to_string(), Duration::from_secs(1)).unwrap());
    let claim = vec![7u8; 32];
    let register =
        |name: &str, address: &str, claim: &[u8]| RegisterRequest { name: name.into(), address: address.into(), claim: claim.to_vec() };
    let long = "x".repeat(10_000);
    let cases = [
        register("", "127.0.0.1:1", &claim),
        register("a b", "127.0.0.1:1", &claim),
        register(&long, "127.0.0.1:1", &claim),
        register("KMC", "not an address", &claim),
        register("KMC", &format!("{long}:1"), &claim),
        register("KMC", "127.0.0.1:0", &claim),
        register("KMC", "127.0.0.1:1", &[1; 8]),
        register("KMC", "127.0.0.1:1", &[]),
    ];
    for request in cases {
        let what = format!(
            "{:?} {:?} {} bytes of claim",
            synclab::server::excerpt(&request.name, 10),
            synclab::server::excerpt(&request.address, 20),
            request.claim.len()
        );
        let status = client.register(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(status.message().len() < 300, "{what}: the error echoes the input: {} bytes", status.message().len());
    }
    // Past the request size limit the request is refused before it is decoded.
    let status = client.register(register(&"x".repeat(100_000), "127.0.0.1:1", &claim)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(master.members().is_empty(), "nothing refused was added");

    // Registering twice is a re-registration, not a second member.
    let slave = start_slave("KMC", 0, 0.0).await;
    let addr = slave.addr();
    assert!(!slave.join(&server).await);
    assert!(slave.join(&server).await);
    assert_eq!(master.members().len(), 1);
    assert_eq!(client.status(StatusRequest {}).await.unwrap().into_inner().members.len(), 1);

    // Once KMC answers rounds, another slave cannot take its name, from elsewhere or from its address.
    master.run_round().await;
    for address in ["127.0.0.1:9", addr.as_str()] {
        let status = client.register(register("KMC", address, &claim)).await.unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    }
    assert_eq!(master.members()[0].address, addr, "the live member keeps its name and address");
}

#[tokio::test]
async fn a_slave_takes_only_its_masters_adjustments_once() {
    let (master, server) = start_master(Duration::from_secs(5), "127.0.0.1:0").await;
    let slave = start_slave("KMC", 0, 0.0).await;
    let mut client = BerkeleySlaveClient::new(synclab::rpc::channel(&slave.addr(), Duration::from_secs(1)).unwrap());
    let hour = 3600 * SEC;
    let adjust = |by: i64, round: u64, epoch: u64, claim: Vec<u8>| AdjustRequest { adjustment_nanos: by, round, epoch, claim };

    // Before it has registered, nothing is taken.
    let status = client.adjust(adjust(hour, 1, master.epoch(), slave.slave.claim())).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    slave.join(&server).await;

    // A forged adjustment (no claim, or someone else's) is refused, whatever its round and epoch.
    for claim in [vec![], vec![0; 32], vec![7; 64]] {
        let status = client.adjust(adjust(hour, 99, master.epoch(), claim)).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    // With the claim but another master's epoch: refused.
    let status = client.adjust(adjust(hour, 99, master.epoch() ^ 1, slave.slave.claim())).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    // Beyond --max-adjustment: refused.
    let status = client.adjust(adjust(2 * hour, 99, master.epoch(), slave.slave.claim())).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("--max-adjustment"), "{}", status.message());
    assert_eq!(slave.clock.read().adjustments, 0, "no refused adjustment touched the clock");
    assert!(slave.clock.read().true_offset.abs() < 1e6);

    // The master's own rounds are taken, each once; a replay of an applied round is refused.
    let round = master.run_round().await;
    assert!(round.members[0].adjusted, "{round:?}");
    let applied = slave.clock.read().adjustments;
    for replay in [round.number, round.number - 1, 0] {
        let status = client.adjust(adjust(hour, replay, master.epoch(), slave.slave.claim())).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "round {replay}: {status:?}");
    }
    assert_eq!(slave.clock.read().adjustments, applied);
    assert!(slave.clock.read().true_offset.abs() < 1e6, "the clock was moved");
    assert!(master.run_round().await.members[0].adjusted);
}

#[tokio::test]
async fn a_member_that_refuses_its_adjustments_is_dropped_and_the_group_stays_bounded() {
    // Fake members pointing at a time server: it answers the reads, but no adjustment.
    let time_server = common::TestServer::start().await;
    let (master, server) = start_master(Duration::from_secs(5), "127.0.0.1:0").await;
    let mut client = BerkeleyMasterClient::new(synclab::rpc::channel(&server.addr.to_string(), Duration::from_secs(1)).unwrap());
    for i in 0..8 {
        let request = RegisterRequest { name: format!("FAKE{i}"), address: time_server.url(), claim: vec![i; 32] };
        client.register(request).await.unwrap();
    }
    // The group is full (max_members = 8 here): a ninth name is refused.
    let status =
        client.register(RegisterRequest { name: "NINTH".into(), address: time_server.url(), claim: vec![9; 32] }).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    for _ in 0..3 {
        let round = master.run_round().await;
        assert!(round.members.iter().all(|m| m.answered && !m.adjusted), "{round:?}");
    }
    assert!(master.members().is_empty(), "members that never took an adjustment are dropped: {:?}", master.members());
    // And then a real slave finds room.
    let slave = start_slave("KMC", 0, 0.0).await;
    slave.join(&server).await;
    assert!(master.run_round().await.members[0].adjusted);
}

#[tokio::test]
async fn watchers_see_every_round() {
    let (master, server) = start_master(Duration::from_secs(5), "127.0.0.1:0").await;
    let slave = start_slave("SOLS", 200 * MS, 0.0).await;
    slave.join(&server).await;
    let mut client = BerkeleyMasterClient::new(synclab::rpc::channel(&server.addr.to_string(), Duration::from_secs(5)).unwrap());
    let mut rounds = client.watch_rounds(WatchRoundsRequest {}).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(50)).await;
    master.run_round().await;
    master.run_round().await;
    let first = rounds.message().await.unwrap().unwrap();
    let second = rounds.message().await.unwrap().unwrap();
    assert_eq!((first.number, second.number), (1, 2));
    assert_eq!(first.members[0].name, "SOLS");
    assert!((first.average_nanos - 100 * MS).abs() < MS, "{first:?}");
}

async fn start_slave_at(name: &'static str, offset: i64, drift_ppm: f64, addr: &str) -> TestSlave {
    let clock = LiveClock::new(name, group_clock(offset, drift_ppm)).unwrap();
    let slave = Slave::new(clock.clone(), 3600 * SEC, Dialer::plaintext()).unwrap();
    let server = serve(slave.server().await.unwrap(), addr, Stop::new()).await;
    TestSlave { name, clock, slave, server: Some(server) }
}

/// Every clock's true offset, in ns.
fn offsets(clocks: &[&LiveClock]) -> Vec<f64> {
    clocks.iter().map(|c| c.settled_offset()).collect()
}

#[tokio::test]
async fn a_restarted_line_is_brought_to_the_group_without_moving_the_others() {
    let (master, server) = start_master(Duration::from_secs(5), "127.0.0.1:0").await;
    let mut slaves = four_lines().await;
    for s in &slaves {
        s.join(&server).await;
    }
    // The group settles: round 1 brings everyone to +62.5 ms, the next ones only follow drift.
    let mut usual = 0.0f64;
    for round in 1..=3 {
        let clocks = [&slaves[0].clock, &slaves[2].clock, &slaves[3].clock, master.clock()];
        let before = offsets(&clocks);
        master.run_round().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after = offsets(&clocks);
        if round > 1 {
            usual = before.iter().zip(&after).map(|(b, a)| (a - b).abs()).fold(usual, f64::max);
        }
    }
    // MIT is killed, misses a round, and comes back in place with its starting offset (−300 ms).
    let mit_addr = slaves[1].addr();
    slaves[1].server = None;
    master.run_round().await;
    slaves[1] = start_slave_at("MIT", -300 * MS, -100.0, &mit_addr).await;
    assert!(slaves[1].join(&server).await, "MIT rejoins under its name, in place");
    let clocks: Vec<&LiveClock> = vec![&slaves[0].clock, &slaves[2].clock, &slaves[3].clock, master.clock()];
    let before = offsets(&clocks);
    let round = master.run_round().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = offsets(&clocks);
    let moved = before.iter().zip(&after).map(|(b, a)| (a - b).abs()).fold(0.0, f64::max);
    // The usual round-to-round change, with room for a busy machine; MIT's −362 ms counted in would move
    // everyone by about 72 ms.
    let allowed = usual.max(0.0) + 2.0 * MS as f64;
    assert!(moved <= allowed, "the others moved by {moved} ns when MIT came back (usual {usual} ns): {round:?}");
    // MIT itself is brought to the group this round.
    let mit = round.members.iter().find(|m| m.name == "MIT").unwrap();
    assert!(mit.answered && mit.adjusted, "{mit:?}");
    let group = after[0];
    assert!(
        (slaves[1].clock.settled_offset() - group).abs() < 2.0 * MS as f64,
        "MIT is at {} ns, the group at {group} ns",
        slaves[1].clock.settled_offset()
    );
    // And from the next round on it counts like any other line.
    let round = master.run_round().await;
    assert!(round.members.iter().all(|m| m.answered && m.adjusted && !m.excluded), "{round:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squatters_with_silent_addresses_do_not_keep_a_real_line_out_or_stretch_rounds() {
    use synclab_core::berkeley::RosterRules;
    // Addresses that accept connections and never answer.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = silent.accept().await {
            keep.lock().unwrap().push(conn);
        }
    });
    let clock = LiveClock::new("berkeley-master", group_clock(0, 0.0)).unwrap();
    let timeout = Duration::from_millis(300);
    let rules = RosterRules {
        max_members: 8,
        reserved: ["KMC", "MIT", "TAPMI", "SOLS"].iter().map(|n| n.to_string()).collect(),
        ..RosterRules::default()
    };
    let master = Master::with_rules(clock, MasterConfig { timeout, ..config(Duration::from_secs(1)) }, rules);
    let (handle, stop) = Stop::new();
    let server = synclab::berkeley::master::server(master.clone(), "berkeley-master", stop.clone()).await.unwrap();
    let server = serve(server, "127.0.0.1:0", (handle, stop)).await;
    // 200 names re-registered continuously, each at a silent address.
    let squatting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let squatter = {
        let (addr, squatting) = (server.addr.to_string(), squatting.clone());
        tokio::spawn(async move {
            let mut client = BerkeleyMasterClient::new(synclab::rpc::channel(&addr, Duration::from_secs(1)).unwrap());
            let mut refused = 0u64;
            while squatting.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..200u32 {
                    let request =
                        RegisterRequest { name: format!("SQUAT{i}"), address: silent_addr.clone(), claim: i.to_be_bytes().repeat(8) };
                    refused += u64::from(client.register(request).await.is_err());
                }
            }
            refused
        })
    };
    // The squatters fill the open places and miss a round.
    wait_for(|| master.members().len() == 8, "the squatters fill the group").await;
    let round = master.run_round().await;
    assert!(round.members.iter().all(|m| !m.answered), "{round:?}");
    // The real line joins at once, and its first round completes.
    let tapmi = start_slave("TAPMI", 300 * SEC, 20.0).await;
    tapmi.join(&server).await;
    let mut longest = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        let round = master.run_round().await;
        longest = longest.max(started.elapsed());
        let line = round.members.iter().find(|m| m.name == "TAPMI").expect("TAPMI is in the round");
        assert!(line.answered && line.adjusted, "{line:?}");
    }
    assert!(tapmi.clock.settled_offset().abs() < 10.0 * MS as f64, "TAPMI was not brought to the master: {}", tapmi.clock.settled_offset());
    // A round waits for silent members at most the read deadline, then the adjustments': never
    // 2 × --timeout, far below the round interval.
    assert!(longest < 2 * timeout, "a round took {longest:?}");
    squatting.store(false, std::sync::atomic::Ordering::Relaxed);
    let refused = squatter.await.unwrap();
    assert!(refused > 0, "the squatters were never refused");
    assert!(master.members().iter().filter(|m| m.name.starts_with("SQUAT")).count() <= 8);
}
