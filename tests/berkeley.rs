//! The Berkeley algorithm over real gRPC on 127.0.0.1: a real master and real slaves in this process,
//! ground truth from their virtual clocks.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use synclab::berkeley::master::{Master, MasterConfig};
use synclab::clock::LiveClock;
use synclab::proto::berkeley::berkeley_master_client::BerkeleyMasterClient;
use synclab::proto::berkeley::berkeley_slave_client::BerkeleySlaveClient;
use synclab::proto::berkeley::{AdjustRequest, RegisterRequest, StatusRequest, WatchRoundsRequest};
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

struct Slave {
    name: &'static str,
    clock: LiveClock,
    server: Option<Serving>,
}

/// Clocks as compose runs them: corrections of 1 ms or more stepped, smaller ones slewed at 5%.
fn group_clock(offset_nanos: i64, drift_ppm: f64) -> ClockConfig {
    ClockConfig { offset_nanos, drift_ppm, step_threshold_nanos: MS, max_slew_ppm: 50_000.0 }
}

async fn start_slave(name: &'static str, offset: i64, drift_ppm: f64) -> Slave {
    let clock = LiveClock::new(name, group_clock(offset, drift_ppm)).unwrap();
    let server = synclab::berkeley::slave::server(clock.clone(), 3600 * SEC).await.unwrap();
    let server = serve(server, "127.0.0.1:0", Stop::new()).await;
    Slave { name, clock, server: Some(server) }
}

fn config(interval: Duration) -> MasterConfig {
    MasterConfig { interval, tolerance_nanos: SEC as f64, samples: 4, timeout: Duration::from_millis(300), max_missed: 2 }
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
async fn four_lines() -> Vec<Slave> {
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
        master.register(s.name, &s.server.as_ref().unwrap().addr.to_string()).unwrap();
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
    let mut addrs: Vec<String> = slaves.iter().map(|s| s.server.as_ref().unwrap().addr.to_string()).collect();
    addrs.push(server.addr.to_string());
    tokio::time::sleep(Duration::from_millis(50)).await; // the last round's slews done
    let mut offsets = Vec::new();
    for addr in &addrs {
        offsets.push(synclab::rpc::read_clock(addr, "", Duration::from_secs(1)).await.unwrap().true_offset_nanos as f64);
    }
    let observed = offsets.iter().copied().fold(f64::MIN, f64::max) - offsets.iter().copied().fold(f64::MAX, f64::min);
    assert!(observed <= allowed_spread(&round), "Clock/Read shows offsets {offsets:?} after {round:?}");
}

#[tokio::test]
async fn a_slave_that_dies_is_skipped_then_dropped_and_rejoins_when_back() {
    let (master, _server) = start_master(Duration::from_secs(5), "127.0.0.1:0").await;
    let mut slaves = four_lines().await;
    for s in &slaves {
        master.register(s.name, &s.server.as_ref().unwrap().addr.to_string()).unwrap();
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
    assert!(!master.register("MIT", &mit.server.as_ref().unwrap().addr.to_string()).unwrap(), "dropped, so it joins anew");
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
        let advertise = s.server.as_ref().unwrap().addr.to_string();
        tokio::spawn(synclab::berkeley::slave::keep_registered(addr.clone(), s.name.into(), advertise, Duration::from_millis(300), stop_rx.clone()));
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
async fn bad_registrations_and_adjustments_are_refused_without_harm() {
    let (master, server) = start_master(Duration::from_secs(5), "127.0.0.1:0").await;
    let mut client = BerkeleyMasterClient::new(synclab::rpc::channel(&server.addr.to_string(), Duration::from_secs(1)).unwrap());
    for (name, address) in [("", "127.0.0.1:1"), ("a b", "127.0.0.1:1"), (&*"x".repeat(65), "127.0.0.1:1"), ("KMC", "not an address")] {
        let status = client.register(RegisterRequest { name: name.into(), address: address.into() }).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name:?} {address:?}: {status:?}");
    }
    assert!(master.members().is_empty(), "nothing refused was added");
    // Registering twice is a re-registration, not a second member.
    let slave = start_slave("KMC", 0, 0.0).await;
    let addr = slave.server.as_ref().unwrap().addr.to_string();
    assert!(!client.register(RegisterRequest { name: "KMC".into(), address: addr.clone() }).await.unwrap().into_inner().rejoined);
    assert!(client.register(RegisterRequest { name: "KMC".into(), address: addr.clone() }).await.unwrap().into_inner().rejoined);
    assert_eq!(master.members().len(), 1);
    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.members.len(), 1);
    // Once KMC answers rounds, another slave cannot take its name from elsewhere.
    master.run_round().await;
    let status = client.register(RegisterRequest { name: "KMC".into(), address: "127.0.0.1:9".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(master.members()[0].address, addr, "the live member keeps its name and address");

    // A slave refuses an adjustment beyond its bound (1 h here) and keeps its clock.
    let mut slave_client = BerkeleySlaveClient::new(synclab::rpc::channel(&addr, Duration::from_secs(1)).unwrap());
    let before = slave.clock.read();
    let status = slave_client.adjust(AdjustRequest { adjustment_nanos: 2 * 3600 * SEC, round: 1 }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("--max-adjustment"), "{}", status.message());
    let after = slave.clock.read();
    assert_eq!(after.adjustments, before.adjustments);
    assert!((after.true_offset - before.true_offset).abs() < 1e6, "the clock was moved: {before:?} -> {after:?}");
}

#[tokio::test]
async fn watchers_see_every_round() {
    let (master, server) = start_master(Duration::from_secs(5), "127.0.0.1:0").await;
    let slave = start_slave("SOLS", 200 * MS, 0.0).await;
    master.register("SOLS", &slave.server.as_ref().unwrap().addr.to_string()).unwrap();
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
