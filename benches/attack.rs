//! The attack benchmark: every attack of `synclab_harness::attack` against fresh processes of the
//! release binaries, on loopback, each bounded in count and time. For each it prints what the attacked
//! process paid and what a user saw: peak RSS, a legitimate call's latency during the attack (median /
//! p99), elections the group began because of it, the time to exit after SIGTERM with the attack's
//! connections and streams still held, and how the attack's calls ended.
//!
//!   cargo bench --bench attack -- [--bin-dir DIR] [--label NAME] [--only TEXT]
//!
//! `--bin-dir` runs the binaries in DIR (e.g. an older build's target/release) instead of this build's;
//! older binaries lack some fields and flags, and the attacks only use what both have (fields an older
//! server does not know it ignores). `--only` runs the attacks whose name contains TEXT.
//! `scripts/bench-attack` runs it against an older commit's build and this one.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use synclab_harness::attack::{
    self, CallError, Conn, ElectionGroup, ElectionWatch, Empty, FakeMaster, PeakWatch, Prober, Process, Stalled, Tally, code, path,
};

const STEP: Duration = Duration::from_secs(3);
/// How long an attack's connections and streams are held after it, with the probes running.
const HOLD: Duration = Duration::from_millis(600);
/// How long a process may take to exit after SIGTERM before it is killed.
const EXIT_LIMIT: Duration = Duration::from_secs(5);
const FITS: u32 = 16 * 1024 - 5;

struct Bins {
    time_server: String,
    election_node: String,
    berkeley_master: String,
    berkeley_slave: String,
    synclab: String,
}

impl Bins {
    fn new(dir: Option<&str>) -> Bins {
        let pick = |name: &str, built: &str| match dir {
            Some(d) => PathBuf::from(d).join(name).to_string_lossy().into_owned(),
            None => built.to_string(),
        };
        Bins {
            time_server: pick("time-server", env!("CARGO_BIN_EXE_time-server")),
            election_node: pick("election-node", env!("CARGO_BIN_EXE_election-node")),
            berkeley_master: pick("berkeley-master", env!("CARGO_BIN_EXE_berkeley-master")),
            berkeley_slave: pick("berkeley-slave", env!("CARGO_BIN_EXE_berkeley-slave")),
            synclab: pick("synclab", env!("CARGO_BIN_EXE_synclab")),
        }
    }
}

/// One line of the table.
struct Row {
    attack: String,
    memory: String,
    latency: String,
    elections: String,
    exit: String,
    outcome: String,
}

fn local() -> String {
    format!("127.0.0.1:{}", attack::free_port().expect("a free port"))
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn spawn(bin: &str, list: &[&str], addr: &str) -> Process {
    let mut p = Process::spawn(bin, &strings(list), addr).unwrap_or_else(|e| panic!("{bin}: {e}"));
    if let Err(e) = p.wait_ready(true, Duration::from_secs(10)).await {
        panic!("{bin}: {e}");
    }
    p
}

async fn time_server(b: &Bins) -> Process {
    let addr = local();
    spawn(&b.time_server, &["--listen", &addr], &addr).await
}

/// A lone election node (id 2; its peer 1 does not run), keeping its term in a fresh directory.
async fn lone_node(b: &Bins) -> (Process, PathBuf) {
    let (addr, dead) = (local(), local());
    let dir = std::env::temp_dir().join(format!("synclab-bench-attack-{}-{}", std::process::id(), addr.replace([':', '.'], "-")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("state dir");
    let peers = format!("1={dead},2={addr}");
    let p =
        spawn(&b.election_node, &["--id", "2", "--listen", &addr, "--peers", &peers, "--state-dir", &dir.to_string_lossy()], &addr).await;
    (p, dir)
}

async fn master(b: &Bins, extra: &[&str]) -> Process {
    let addr = local();
    let mut list = vec!["--listen", addr.as_str()];
    list.extend_from_slice(extra);
    spawn(&b.berkeley_master, &list, &addr).await
}

async fn group(b: &Bins, algorithm: &str) -> ElectionGroup {
    let dir = std::env::temp_dir().join(format!("synclab-bench-attack-group-{}-{}", std::process::id(), attack::free_port().unwrap_or(0)));
    let g = ElectionGroup::start(&b.election_node, 5, algorithm, dir).await.expect("group starts");
    g.wait_agreement(Duration::from_secs(10)).await.expect("the group agrees");
    // Let the start-up messages settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    g
}

/// The probes and watchers running during one attack on one process.
struct Measure {
    prober: Option<Prober>,
    mem: PeakWatch,
    elections: Option<ElectionWatch>,
    term_before: Option<u64>,
}

async fn measure(target: &Process, probe_path: &'static str, group: Option<&ElectionGroup>) -> Measure {
    let prober = Prober::start(&target.addr, probe_path, attack::encode(&Empty {}), Duration::from_millis(20), STEP).await.ok();
    let (elections, term_before) = match group {
        Some(g) => (Some(ElectionWatch::start(g.addrs.clone())), g.wait_agreement(Duration::from_secs(1)).await.map(|(_, t)| t)),
        None => (None, None),
    };
    Measure { prober, mem: PeakWatch::rss_kb(target.pid()), elections, term_before }
}

fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

/// Ends the measurement: holds the attack a moment with the probes running, then SIGTERM to the target
/// (the attack still held), and fills in the row.
async fn finish(m: Measure, target: &mut Process, attack: &str, outcome: String) -> Row {
    tokio::time::sleep(HOLD).await;
    let latency = match m.prober {
        Some(p) => p.finish().await.summary(),
        None => "no answer".into(),
    };
    let elections = match m.elections {
        Some(w) => {
            let count = w.finish().await;
            let before = m.term_before.map_or("?".to_string(), |t| t.to_string());
            format!("{} begun, term {before} to {}", count.begun, count.max_term)
        }
        None => "-".into(),
    };
    let hwm = attack::memory(target.pid()).map_or(0, |m| m.hwm_kb);
    let peak = m.mem.stop().max(hwm);
    let memory = if target.exited().is_some() { format!("{} (exited: {:?})", mb(peak), target.exited()) } else { mb(peak) };
    let exit = match target.exited() {
        Some(status) => format!("had exited ({status})"),
        None => match target.terminate(EXIT_LIMIT) {
            Some(d) => format!("{:.0} ms", d.as_secs_f64() * 1e3),
            None => format!("> {} s (killed)", EXIT_LIMIT.as_secs()),
        },
    };
    Row { attack: attack.to_string(), memory, latency, elections, exit, outcome }
}

fn codes(tally: &Tally) -> String {
    tally.to_string()
}

// ---------------------------------------------------------------------------------------------------
// The attacks
// ---------------------------------------------------------------------------------------------------

async fn idle_tcp(b: &Bins) -> Row {
    let mut server = time_server(b).await;
    let m = measure(&server, path::GET_TIME, None).await;
    let mut idle = attack::idle_tcp(&server.addr, 1000, STEP).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outcome = format!("{} of 1000 held open by the server, {} refused", idle.still_open(), idle.failed);
    let row = finish(m, &mut server, "1000 idle TCP connections", outcome).await;
    drop(idle);
    row
}

async fn idle_h2(b: &Bins) -> Row {
    let mut server = time_server(b).await;
    let m = measure(&server, path::GET_TIME, None).await;
    let idle = attack::idle_h2(&server.addr, 500, STEP).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outcome = format!("{} of 500 held open by the server, {} failed", idle.still_open(), idle.failed);
    let row = finish(m, &mut server, "500 idle HTTP/2 connections", outcome).await;
    drop(idle);
    row
}

async fn rapid_reset(b: &Bins) -> Row {
    let mut server = time_server(b).await;
    let m = measure(&server, path::GET_TIME, None).await;
    let r = attack::rapid_reset(&server.addr, path::GET_TIME, 20, 5_000, STEP).await;
    let outcome = format!("{} requests reset; the server closed {} of {} connections", r.reset, r.closed, r.conns);
    finish(m, &mut server, "rapid reset (20 conns × up to 5000 cancelled requests)", outcome).await
}

async fn unfinished(b: &Bins, conns: usize) -> Row {
    let mut server = time_server(b).await;
    let m = measure(&server, path::GET_TIME, None).await;
    let held = attack::unfinished_bodies(&server.addr, path::GET_TIME, conns, 16, 15_000, FITS, STEP).await;
    let outcome = format!("{} streams open, {} not opened; answered so far: {}", held.opened, held.not_opened, codes(&held.answered()));
    let what = format!("{} unfinished bodies ({conns} conns × 16 streams × 15 KB)", conns * 16);
    let row = finish(m, &mut server, &what, outcome).await;
    drop(held);
    row
}

/// `count` messages of just under 4 MiB (the gRPC default limit, so a server without a limit of its own
/// decodes them) at 20 per second, 4 at a time.
async fn oversized(b: &Bins, kind: attack::Oversized) -> Row {
    let (mut target, probe, _dir) = match kind {
        attack::Oversized::RingElection => {
            let (p, dir) = lone_node(b).await;
            (p, path::GET_STATE, Some(dir))
        }
        _ => (master(b, &[]).await, path::STATUS, None),
    };
    let m = measure(&target, probe, None).await;
    let (p, message) = attack::oversized(kind, (4 << 20) - 64);
    let outcome = match attack::send_at_rate(&target.addr, p, message, 30, 20.0, 4, Duration::from_secs(5)).await {
        Ok(f) => codes(&f.tally),
        Err(e) => format!("cannot connect: {e}"),
    };
    finish(m, &mut target, &format!("30 × 4 MiB {kind:?} at 20/s"), outcome).await
}

async fn million_ids(b: &Bins) -> Row {
    let (mut node, _dir) = lone_node(b).await;
    let m = measure(&node, path::GET_STATE, None).await;
    let forgery = attack::election_forgeries(2, 1, 1).into_iter().find(|f| f.label.contains("1,000,000")).expect("the forgery");
    let outcome = match attack::send_at_rate(&node.addr, forgery.path, forgery.message, 20, 10.0, 4, Duration::from_secs(5)).await {
        Ok(f) => codes(&f.tally),
        Err(e) => format!("cannot connect: {e}"),
    };
    finish(m, &mut node, "20 × RingElection with 1,000,000 ids", outcome).await
}

/// No attack: a group left alone as long as an attack row lasts, for the elections that load alone
/// causes (the heartbeat is 50 ms and the timeout 200 ms; a starved process misses them).
async fn control(b: &Bins) -> Row {
    let mut g = group(b, "bully").await;
    let mut target = g.nodes.remove(2);
    let m = measure(&target, path::GET_STATE, Some(&g)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcome = agreement(&g).await;
    finish(m, &mut target, "no attack (control: a 5-node group, 1.6 s)", outcome).await
}

/// After an attack on a group: does it agree within 1 s, and on what.
async fn agreement(g: &ElectionGroup) -> String {
    match g.wait_agreement(Duration::from_secs(1)).await {
        Some((c, t)) => format!("agreed on {c} in term {t} within 1 s"),
        None => "no agreement within 1 s".into(),
    }
}

/// Every forged election message, cycled `rounds` times, to node 3 of a 5-node Bully group.
async fn forgeries(b: &Bins, rounds: usize) -> Row {
    let mut g = group(b, "bully").await;
    let term = g.wait_agreement(Duration::from_secs(1)).await.map_or(1, |(_, t)| t);
    let target = g.nodes.remove(2);
    let m = measure(&target, path::GET_STATE, Some(&g)).await;
    let list = attack::election_forgeries(3, 1, term);
    let kinds = list.len();
    let mut tally = Tally::default();
    let mut as_hardened = 0;
    match Conn::connect(&target.addr, STEP).await {
        Ok(conn) => {
            for round in 0..rounds {
                for f in &list {
                    let result = conn.call_raw(f.path, f.message.clone(), Duration::from_secs(5)).await;
                    if round == 0 && result.as_ref().err().and_then(CallError::code) == Some(f.expected) {
                        as_hardened += 1;
                    }
                    tally.add(&result);
                }
            }
        }
        Err(e) => return failed_row("forged election messages", &e),
    }
    let mut target = target;
    let outcome = format!("{}; {as_hardened} of {kinds} kinds refused as specified; {}", codes(&tally), agreement(&g).await);
    finish(m, &mut target, &format!("{} forged election messages ({kinds} kinds × {rounds})", kinds * rounds), outcome).await
}

fn failed_row(what: &str, e: &dyn std::fmt::Display) -> Row {
    Row {
        attack: what.into(),
        memory: "-".into(),
        latency: "-".into(),
        elections: "-".into(),
        exit: "-".into(),
        outcome: format!("attack failed: {e}"),
    }
}

/// A heartbeat with `term` (default: node 4's next term), as node 4 (as node 5 to node 4), to every
/// node of a 5-node Bully group.
async fn forged_heartbeat(b: &Bins, term: Option<u64>, what: &str) -> Row {
    let g = group(b, "bully").await;
    let current = g.wait_agreement(Duration::from_secs(1)).await.map_or(1, |(_, t)| t);
    let forged = term.unwrap_or_else(|| synclab_core::election::next_owned_term(&[1, 2, 3, 4, 5], 4, current).unwrap_or(current + 1));
    let mut g = g;
    let mut target = g.nodes.remove(2);
    let m = measure(&target, path::GET_STATE, Some(&g)).await;
    let mut tally = Tally::default();
    for (i, addr) in g.addrs.iter().enumerate() {
        let to = i as i64 + 1;
        let from = if to == 4 { 5 } else { 4 };
        if let Ok(conn) = Conn::connect(addr, STEP).await {
            tally.add(&conn.call_raw(path::ALIVE, attack::forged_alive(from, forged, to), STEP).await);
        }
    }
    let outcome = format!("{}; {}", codes(&tally), agreement(&g).await);
    finish(m, &mut target, &format!("forged heartbeat to all 5 nodes, {what}"), outcome).await
}

async fn misdirected(b: &Bins) -> Row {
    let mut g = group(b, "bully").await;
    let term = g.wait_agreement(Duration::from_secs(1)).await.map_or(1, |(_, t)| t);
    let mut target = g.nodes.remove(2);
    let m = measure(&target, path::GET_STATE, Some(&g)).await;
    let messages = [attack::encode(&synclab::proto::election::ElectionRequest { from: 1, term, to: 1003 })];
    let outcome = match attack::flood(&target.addr, path::ELECTION, &messages, 100, 4, STEP).await {
        Ok(f) => format!("{}; {}", codes(&f.tally), agreement(&g).await),
        Err(e) => format!("cannot connect: {e}"),
    };
    finish(m, &mut target, "100 Election messages for another node (`to`)", outcome).await
}

async fn log_flood(b: &Bins) -> Row {
    let (mut node, _dir) = lone_node(b).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = measure(&node, path::GET_STATE, None).await;
    let before = node.stderr_lines();
    let forged = attack::invalid_alives(2, 1);
    let tally = match attack::flood(&node.addr, path::ALIVE, &forged, 10_000, 32, STEP).await {
        Ok(f) => codes(&f.tally),
        Err(e) => format!("cannot connect: {e}"),
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outcome = format!("{tally}; log: {} lines", node.stderr_lines().saturating_sub(before));
    finish(m, &mut node, "10,000 invalid Alive (5 kinds)", outcome).await
}

/// 300 connections (the cap is 256) calling GetState on the coordinator every 3 s for 10 s, shed ones
/// connecting again; the group's timers relaxed (heartbeat 200 ms, timeout 2 s) so the machine's own
/// load causes no election: what is measured is what the connection cap costs the group.
async fn reader_crowd(b: &Bins) -> Row {
    let dir = std::env::temp_dir().join(format!("synclab-bench-attack-readers-{}", std::process::id()));
    let extra = ["--heartbeat", "200ms", "--timeout", "2s"];
    let mut g = match ElectionGroup::start_with(&b.election_node, 5, "bully", dir, &extra).await {
        Ok(g) => g,
        Err(e) => return failed_row("300 readers of GetState on the coordinator", &e),
    };
    if g.wait_agreement(Duration::from_secs(10)).await.is_none() {
        return failed_row("300 readers of GetState on the coordinator", &"the group did not agree");
    }
    let m = measure(&g.nodes[4], path::GET_STATE, Some(&g)).await;
    let fds_before = attack::open_fds(g.nodes[4].pid()).unwrap_or(0);
    let seen = attack::readers(&g.addrs[4], path::GET_STATE, 300, Duration::from_secs(3), Duration::from_secs(10), STEP).await;
    let fds_after = attack::open_fds(g.nodes[4].pid()).unwrap_or(0);
    let after = agreement(&g).await;
    let outcome = format!(
        "{} answered, {} failed, {} reconnects; fds {fds_before} before, {fds_after} at the end; agreement after: {after}",
        seen.answered, seen.failed, seen.reconnects
    );
    finish(m, &mut g.nodes[4], "300 readers of GetState on the coordinator", outcome).await
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReadRequest {
    #[prost(string, tag = "1")]
    clock: String,
}

async fn adjustments(addr: &str) -> String {
    let Ok(conn) = Conn::connect(addr, STEP).await else { return "?".into() };
    match conn.call::<synclab::proto::clock::ReadResponse>(path::CLOCK_READ, &ReadRequest { clock: String::new() }, STEP).await {
        Ok(r) => format!("{} adjustments, true offset {:+.3} s", r.adjustments, r.true_offset_nanos as f64 / 1e9),
        Err(e) => format!("? ({e})"),
    }
}

/// A slave registered with a master that records its claim.
async fn slave(b: &Bins) -> (Process, FakeMaster) {
    let fake = FakeMaster::start(0x5eed).await.expect("fake master");
    let addr = local();
    let p = spawn(&b.berkeley_slave, &["--name", "KMC", "--listen", &addr, "--advertise", &addr, "--master", &fake.addr], &addr).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.last().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The slave takes the master's epoch once the answer is back.
    tokio::time::sleep(Duration::from_millis(100)).await;
    (p, fake)
}

async fn forged_adjust(b: &Bins) -> Row {
    let (mut slave, fake) = slave(b).await;
    let m = measure(&slave, path::GET_TIME, None).await;
    let minute = 60_000_000_000i64;
    let forged = [attack::adjust_request(minute, 7, fake.epoch, &[]), attack::adjust_request(minute, 8, fake.epoch, &[0; 32])];
    let tally = match attack::flood(&slave.addr, path::ADJUST, &forged, 1000, 8, STEP).await {
        Ok(f) => codes(&f.tally),
        Err(e) => format!("cannot connect: {e}"),
    };
    let outcome = format!("{tally}; clock: {}", adjustments(&slave.addr).await);
    finish(m, &mut slave, "1000 forged Adjust (+1 min, no or wrong claim)", outcome).await
}

async fn replayed_adjust(b: &Bins) -> Row {
    let (mut slave, fake) = slave(b).await;
    let m = measure(&slave, path::GET_TIME, None).await;
    let claim = fake.last().map(|r| r.claim).unwrap_or_default();
    let genuine = attack::adjust_request(60_000_000_000, 1, fake.epoch, &claim);
    let outcome = match Conn::connect(&slave.addr, STEP).await {
        Ok(conn) => {
            let first = conn.call_raw(path::ADJUST, genuine.clone(), STEP).await;
            let mut replays = Tally::default();
            for _ in 0..100 {
                replays.add(&conn.call_raw(path::ADJUST, genuine.clone(), STEP).await);
            }
            let first = if first.is_ok() { "OK".to_string() } else { format!("{first:?}") };
            format!("genuine: {first}; 100 replays: {}; clock: {}", codes(&replays), adjustments(&slave.addr).await)
        }
        Err(e) => format!("cannot connect: {e}"),
    };
    finish(m, &mut slave, "a captured Adjust (+1 min) replayed 100 times", outcome).await
}

async fn register_flood(b: &Bins) -> Row {
    let mut master = master(b, &[]).await;
    let m = measure(&master, path::STATUS, None).await;
    let names: Vec<Bytes> = (0..10_000).map(|i| attack::register_request(&format!("flood-{i}"), "127.0.0.1:9", &[i as u8; 32])).collect();
    let tally = match attack::flood(&master.addr, path::REGISTER, &names, names.len(), 32, STEP).await {
        Ok(f) => codes(&f.tally),
        Err(e) => format!("cannot connect: {e}"),
    };
    let members = match Conn::connect(&master.addr, STEP).await {
        Ok(c) => c.call::<synclab::proto::berkeley::StatusResponse>(path::STATUS, &Empty {}, STEP).await.map_or(0, |s| s.members.len()),
        Err(_) => 0,
    };
    finish(m, &mut master, "10,000 Register (new names)", format!("{tally}; {members} members")).await
}

async fn long_addresses(b: &Bins) -> Row {
    let mut master = master(b, &[]).await;
    let m = measure(&master, path::STATUS, None).await;
    let list: Vec<Bytes> =
        (0..50).map(|i| attack::register_request(&format!("far-{i}"), &format!("{}:9", "a".repeat(60_000)), &[1; 32])).collect();
    let outcome = match attack::flood(&master.addr, path::REGISTER, &list, 50, 8, STEP).await {
        Ok(f) => format!("{}; longest error {} bytes", codes(&f.tally), f.longest_message()),
        Err(e) => format!("cannot connect: {e}"),
    };
    finish(m, &mut master, "50 Register with 60 KB addresses", outcome).await
}

async fn takeover(b: &Bins) -> Row {
    let mut master = master(b, &[]).await;
    let m = measure(&master, path::STATUS, None).await;
    let outcome = match Conn::connect(&master.addr, STEP).await {
        Ok(conn) => {
            let first = conn.call_raw(path::REGISTER, attack::register_request("KMC", "127.0.0.1:9", &[1; 32]), STEP).await;
            let mut tries = Tally::default();
            for i in 0..100u8 {
                tries.add(
                    &conn
                        .call_raw(
                            path::REGISTER,
                            attack::register_request("KMC", &format!("127.0.0.{}:10", 2 + i % 50), &[2 + i; 32]),
                            STEP,
                        )
                        .await,
                );
            }
            let holder = conn
                .call::<synclab::proto::berkeley::StatusResponse>(path::STATUS, &Empty {}, STEP)
                .await
                .ok()
                .and_then(|s| s.members.into_iter().find(|m| m.name == "KMC"))
                .map_or("-".to_string(), |m| m.address);
            format!("holder: {}; 100 takeovers: {}; KMC now at {holder}", if first.is_ok() { "OK" } else { "refused" }, codes(&tries))
        }
        Err(e) => format!("cannot connect: {e}"),
    };
    finish(m, &mut master, "taking a member's name from other addresses", outcome).await
}

async fn huge_name(b: &Bins) -> Row {
    let mut master = master(b, &[]).await;
    let m = measure(&master, path::STATUS, None).await;
    let outcome = match Conn::connect(&master.addr, STEP).await {
        Ok(conn) => {
            match conn.call_raw(path::REGISTER, attack::register_request(&"x".repeat(3_000_000), "127.0.0.1:9", &[1; 32]), STEP).await {
                Ok(_) => "accepted".into(),
                Err(CallError::Status(s)) => format!("{}; error of {} bytes", code::name(s.code), s.message.len()),
                Err(e) => e.to_string(),
            }
        }
        Err(e) => format!("cannot connect: {e}"),
    };
    finish(m, &mut master, "Register with a 3 MB name", outcome).await
}

async fn watch_leader(b: &Bins) -> Row {
    let (mut node, _dir) = lone_node(b).await;
    let m = measure(&node, path::GET_STATE, None).await;
    let watches = attack::never_read_streams(&node.addr, path::WATCH_LEADER, 500, 16, 0, STEP).await;
    // Churn: heartbeats forged as node 1 in its next terms make node 2 step down and take over again.
    if let Ok(conn) = Conn::connect(&node.addr, STEP).await {
        for _ in 0..100 {
            let Ok(state) = conn.call::<synclab::proto::election::NodeState>(path::GET_STATE, &Empty {}, STEP).await else { break };
            let term = synclab_core::election::next_owned_term(&[1, 2], 1, state.term).unwrap_or(state.term + 1);
            let _ = conn.call_raw(path::ALIVE, attack::forged_alive(1, term, 2), STEP).await;
        }
    }
    let outcome = format!("{} opened, refused: {}; 100 forced state changes", watches.opened(), codes(&watches.refused));
    let row = finish(m, &mut node, "500 WatchLeader streams never read", outcome).await;
    drop(watches);
    row
}

async fn watch_rounds(b: &Bins) -> Row {
    let mut master = master(b, &["--interval", "100ms"]).await;
    let m = measure(&master, path::STATUS, None).await;
    let watches = attack::never_read_streams(&master.addr, path::WATCH_ROUNDS, 500, 16, 0, STEP).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcome = format!("{} opened, refused: {}", watches.opened(), codes(&watches.refused));
    let row = finish(m, &mut master, "500 WatchRounds streams never read (a round every 100 ms)", outcome).await;
    drop(watches);
    row
}

async fn garbage(b: &Bins) -> Row {
    let mut server = time_server(b).await;
    let m = measure(&server, path::GET_TIME, None).await;
    let r = attack::garbage(&server.addr, 300, 64 * 1024, 7, 32, STEP).await;
    let outcome = format!("{} closed by the server, {} left open, {} failed", r.closed, r.still_open, r.failed);
    finish(m, &mut server, "64 KiB of garbage on 300 connections", outcome).await
}

async fn stalled_server(b: &Bins) -> Row {
    let stalled = Stalled::start().await.expect("stalled server");
    let addr = local();
    let list = ["cristian", "--server", &stalled.addr, "--interval", "100ms", "--timeout", "3s", "--listen", &addr];
    let mut client = spawn(&b.synclab, &list, &addr).await;
    let m = measure(&client, path::CLOCK_READ, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    finish(m, &mut client, "SIGTERM to `synclab cristian --interval` whose server stalls (--timeout 3s)", "-".into()).await
}

async fn stalled_member(b: &Bins) -> Row {
    let stalled = Stalled::start().await.expect("stalled server");
    let mut master = master(b, &["--interval", "100ms", "--timeout", "3s"]).await;
    let m = measure(&master, path::STATUS, None).await;
    let outcome = match Conn::connect(&master.addr, STEP).await {
        Ok(conn) => codes(&{
            let mut t = Tally::default();
            t.add(&conn.call_raw(path::REGISTER, attack::register_request("STALLED", &stalled.addr, &[3; 32]), STEP).await);
            t
        }),
        Err(e) => format!("cannot connect: {e}"),
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    finish(m, &mut master, "SIGTERM to a master mid-round with a member that never answers (--timeout 3s)", outcome).await
}

/// Every process besieged (idle TCP and HTTP/2 connections, unfinished requests, watch streams) and
/// then told to stop.
async fn besieged(b: &Bins, which: &str) -> Row {
    let fake = FakeMaster::start(9).await.expect("fake master");
    let server = time_server(b).await;
    let (mut target, probe, watch, _dir) = match which {
        "time-server" => (time_server(b).await, path::GET_TIME, None, None),
        "election-node" => {
            let (p, d) = lone_node(b).await;
            (p, path::GET_STATE, Some(path::WATCH_LEADER), Some(d))
        }
        "berkeley-master" => (master(b, &["--interval", "200ms"]).await, path::STATUS, Some(path::WATCH_ROUNDS), None),
        "berkeley-slave" => {
            let addr = local();
            (
                spawn(&b.berkeley_slave, &["--name", "KMC", "--listen", &addr, "--advertise", &addr, "--master", &fake.addr], &addr).await,
                path::GET_TIME,
                None,
                None,
            )
        }
        _ => {
            let addr = local();
            (
                spawn(&b.synclab, &["cristian", "--server", &server.addr, "--interval", "100ms", "--listen", &addr], &addr).await,
                path::CLOCK_READ,
                None,
                None,
            )
        }
    };
    let m = measure(&target, probe, None).await;
    let health = Conn::connect(&target.addr, STEP).await.ok();
    let statuses = match &health {
        Some(h) => h.open_stream(path::HEALTH_WATCH, &attack::HealthCheckRequest { service: String::new() }, STEP).await.ok(),
        None => None,
    };
    let tcp = attack::idle_tcp(&target.addr, 20, STEP).await;
    let h2 = attack::idle_h2(&target.addr, 20, STEP).await;
    let unfinished = attack::unfinished_bodies(&target.addr, path::CLOCK_READ, 1, 4, 1000, FITS, STEP).await;
    let watches = match watch {
        Some(p) => Some(attack::never_read_streams(&target.addr, p, 8, 8, 0, STEP).await),
        None => None,
    };
    let seen = tokio::spawn(async move {
        let mut seen = Vec::new();
        if let Some(mut s) = statuses {
            while let Ok(Some(r)) = s.next::<attack::HealthCheckResponse>(Duration::from_secs(6)).await {
                seen.push(match r.status {
                    attack::SERVING => "SERVING",
                    attack::NOT_SERVING => "NOT_SERVING",
                    _ => "other",
                });
            }
        }
        seen
    });
    let watched = watches.as_ref().map_or(0, |w| w.opened());
    let mut row = finish(
        m,
        &mut target,
        &format!("SIGTERM to {which} holding 20 idle TCP + 20 idle HTTP/2 conns, 4 unfinished requests, {watched} watch streams"),
        String::new(),
    )
    .await;
    let seen = seen.await.unwrap_or_default();
    row.outcome = format!("health watcher saw {}", if seen.is_empty() { "nothing".to_string() } else { seen.join(" → ") });
    drop((tcp, h2, unfinished, watches, health));
    row
}

// ---------------------------------------------------------------------------------------------------
// Round 2: stalled TLS handshakes, silent event-stream clients, squatters, accepted forgeries, a
// victim's NTP. Each of these measures the open fds before, at the peak and after the attack's
// connections are dropped, so the exit after SIGTERM is timed with the attack gone.
// ---------------------------------------------------------------------------------------------------

/// "fds 12 before, 1 130 peak, 12 after": `after` read once the attack's connections have been closed
/// for 1.5 s (longer than any handshake or write deadline).
async fn fds_after(pid: u32, before: usize, watch: PeakWatch) -> String {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let peak = watch.stop();
    let after = attack::open_fds(pid).unwrap_or(0);
    format!("fds {before} before, {peak} peak, {after} after")
}

/// Whether `bin --help` names `flag` (an older build may lack it).
fn supports(bin: &str, flag: &str) -> bool {
    std::process::Command::new(bin).arg("--help").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
}

/// No gRPC prober (the target speaks TLS, or HTTP): memory alone, the latency column filled by the row.
fn memory_only(target: &Process) -> Measure {
    Measure { prober: None, mem: PeakWatch::rss_kb(target.pid()), elections: None, term_before: None }
}

/// 300 handshakes begun and never finished (the first 11 bytes of a ClientHello), then 100 more every
/// step while a real TLS client calls `GetTime` on a connection of its own (2 s each), 12 steps.
async fn stalled_tls(b: &Bins) -> Row {
    const WHAT: &str = "1,500 stalled TLS handshakes (11 bytes of a ClientHello each)";
    let dir = std::env::temp_dir().join(format!("synclab-bench-attack-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = synclab::tls::certs::make(&dir, &strings(&["time-server", "laptop"]), false) {
        return failed_row(WHAT, &e);
    }
    let file = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let tls = synclab::tls::Tls::load(&synclab::tls::TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("laptop.pem"),
        key: dir.join("laptop.key"),
    });
    let dialer = match tls {
        Ok(t) => synclab::rpc::Dialer::new(Some(t)),
        Err(e) => return failed_row(WHAT, &e),
    };
    let addr = local();
    let list =
        ["--listen", &addr, "--tls-ca", &file("ca.pem"), "--tls-cert", &file("time-server.pem"), "--tls-key", &file("time-server.key")];
    let mut server = match Process::spawn(&b.time_server, &strings(&list), &addr) {
        Ok(p) => p,
        Err(e) => return failed_row(WHAT, &e),
    };
    let ready = Instant::now();
    while attack::tls_get_time(&dialer, &addr, Duration::from_millis(500)).await.is_err() {
        if ready.elapsed() > Duration::from_secs(10) {
            return failed_row(WHAT, &"no TLS answer within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = memory_only(&server);
    let (before, fds) = (attack::open_fds(server.pid()).unwrap_or(0), PeakWatch::fds(server.pid()));
    let lines = server.stderr_lines();
    let connect = Duration::from_millis(300);
    let mut held = vec![attack::stalled_handshakes(&addr, 300, connect).await];
    let mut calls = attack::Latencies::default();
    for _ in 0..12 {
        let (more, call) =
            tokio::join!(attack::stalled_handshakes(&addr, 100, connect), attack::tls_get_time(&dialer, &addr, Duration::from_secs(2)));
        held.push(more);
        match call {
            Ok(took) => calls.samples.push(took),
            Err(e) => calls.failures.push(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let opened: usize = held.iter().map(|h| h.len()).sum();
    drop(held);
    let fds = fds_after(server.pid(), before, fds).await;
    let outcome = format!(
        "{} of 12 real TLS calls answered within 2 s; {opened} handshakes opened; {fds}; log: {} lines",
        calls.samples.len(),
        server.stderr_lines().saturating_sub(lines)
    );
    let mut row = finish(m, &mut server, WHAT, outcome).await;
    row.latency = format!("TLS calls {}", calls.summary());
    let _ = std::fs::remove_dir_all(&dir);
    row
}

/// 1,000 `GET /events` clients that never read a byte, held while 10 page loads and 10 new readers
/// (2 s each) come; the dashboard follows nothing that runs (its page still renders and streams).
async fn silent_streams(b: &Bins) -> Row {
    const WHAT: &str = "1,000 event-stream clients that never read (dashboard)";
    let (addr, dead) = (local(), local());
    let (clock, device) = (format!("time-server={dead}"), format!("time-server={dead}"));
    let list = ["dashboard", "--listen", &addr, "--clock", &clock, "--device-metrics", &device, "--master", &dead, "--nodes", &dead];
    let mut dashboard = match Process::spawn(&b.synclab, &strings(&list), &addr) {
        Ok(p) => p,
        Err(e) => return failed_row(WHAT, &e),
    };
    let ready = Instant::now();
    let page = loop {
        match attack::http_get(&addr, "/", Duration::from_millis(500)).await {
            Ok(p) if p.status == 200 => break p.body,
            _ if ready.elapsed() > Duration::from_secs(10) => return failed_row(WHAT, &"the dashboard did not answer within 10 s"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let m = memory_only(&dashboard);
    let (before, fds) = (attack::open_fds(dashboard.pid()).unwrap_or(0), PeakWatch::fds(dashboard.pid()));
    let lines = dashboard.stderr_lines();
    let silent = attack::silent_stream_clients(&addr, 1000, STEP).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut pages, mut readers) = (attack::Latencies::default(), attack::Latencies::default());
    let mut whole = 0;
    for _ in 0..10 {
        match attack::http_get(&addr, "/", Duration::from_secs(2)).await {
            Ok(p) => {
                whole += usize::from(p.status == 200 && p.body == page);
                pages.samples.push(p.took);
            }
            Err(e) => pages.failures.push(e),
        }
        match attack::first_event(&addr, Duration::from_secs(2)).await {
            Ok(took) => readers.samples.push(took),
            Err(e) => readers.failures.push(e),
        }
    }
    let held = silent.len();
    drop(silent);
    let fds = fds_after(dashboard.pid(), before, fds).await;
    let outcome = format!(
        "{whole} of 10 page loads whole; {} of 10 new readers updated within 2 s (first update {}); {held} held; {fds}; log: {} lines",
        readers.samples.len(),
        readers.summary(),
        dashboard.stderr_lines().saturating_sub(lines)
    );
    let mut row = finish(m, &mut dashboard, WHAT, outcome).await;
    row.latency = format!("page loads {}", pages.summary());
    row
}

/// 200 names re-registered without pause for 12 s, each at an address that accepts and never answers,
/// on a master with room for 8 (rounds every second, 300 ms to answer); after 2 s the real TAPMI
/// starts. The master's reserved names are KMC, MIT, TAPMI and SOLS where it has `--reserved`, as
/// compose configures it.
async fn squatters(b: &Bins) -> Row {
    const WHAT: &str = "200 squatters at silent addresses, then TAPMI joins (Berkeley)";
    let silent = match Stalled::start().await {
        Ok(s) => s,
        Err(e) => return failed_row(WHAT, &e),
    };
    let mut extra = vec!["--interval", "1s", "--timeout", "300ms", "--max-members", "8"];
    if supports(&b.berkeley_master, "--reserved") {
        extra.extend(["--reserved", "KMC,MIT,TAPMI,SOLS"]);
    }
    let mut master = master(b, &extra).await;
    let m = measure(&master, path::STATUS, None).await;
    let until = Instant::now() + Duration::from_secs(12);
    let squatting = {
        let (addr, silent) = (master.addr.clone(), silent.addr.clone());
        tokio::spawn(async move {
            let mut tally = Tally::default();
            let Ok(conn) = Conn::connect(&addr, STEP).await else { return tally };
            while Instant::now() < until {
                for i in 0..200u32 {
                    let request = attack::register_request(&format!("SQUAT{i}"), &silent, &i.to_be_bytes().repeat(8));
                    tally.add(&conn.call_raw(path::REGISTER, request, STEP).await);
                }
            }
            tally
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tapmi_addr = local();
    let list = ["--name", "TAPMI", "--listen", &tapmi_addr, "--advertise", &tapmi_addr, "--master", &master.addr];
    let joining = Instant::now();
    let tapmi = spawn(&b.berkeley_slave, &list, &tapmi_addr).await;
    let (mut joined, mut rounds, mut seen) = (None, attack::Latencies::default(), std::collections::BTreeSet::new());
    if let Ok(conn) = Conn::connect(&master.addr, STEP).await {
        while Instant::now() < until {
            if let Ok(status) = conn.call::<synclab::proto::berkeley::StatusResponse>(path::STATUS, &Empty {}, STEP).await {
                if joined.is_none() && status.members.iter().any(|m| m.name == "TAPMI") {
                    joined = Some(joining.elapsed());
                }
                if let Some(r) = status.last_round
                    && seen.insert(r.number)
                {
                    rounds.samples.push(Duration::from_nanos(r.duration_nanos));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let tally = squatting.await.unwrap_or_default();
    let joined = joined.map_or("never a member in 10 s".to_string(), |d| format!("a member {:.2} s after it started", d.as_secs_f64()));
    let ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.0}", d.as_secs_f64() * 1e3));
    let outcome = format!(
        "TAPMI {joined}, clock: {}; rounds median / max {} / {} ms ({}); squatters: {}",
        adjustments(&tapmi.addr).await,
        ms(rounds.median()),
        ms(rounds.max()),
        rounds.samples.len(),
        codes(&tally)
    );
    drop(tapmi);
    finish(m, &mut master, WHAT, outcome).await
}

/// 300 plausible forged heartbeats (each in the next term of node 4, which plaintext cannot tell from
/// node 4's own) to the other nodes of a group, as fast as they are answered: the log lines the five
/// nodes write for them.
async fn accepted_forgeries(b: &Bins) -> Row {
    const WHAT: &str = "300 plausible forged heartbeats (node 4's next term), logs";
    let mut g = group(b, "bully").await;
    let m = measure(&g.nodes[4], path::GET_STATE, Some(&g)).await;
    let before: usize = g.nodes.iter().map(|n| n.stderr_lines()).sum();
    let started = Instant::now();
    let mut conns = Vec::new();
    for a in &g.addrs {
        match Conn::connect(a, STEP).await {
            Ok(c) => conns.push(c),
            Err(e) => return failed_row(WHAT, &e),
        }
    }
    let members = [1, 2, 3, 4, 5];
    let (mut accepted, mut sent, mut term) = (0, 0, 0);
    for i in 0..300 {
        let to = (i % 5) as i64 + 1;
        if to == 4 {
            continue;
        }
        let conn = &conns[to as usize - 1];
        let Ok(state) = conn.call::<synclab::proto::election::NodeState>(path::GET_STATE, &Empty {}, STEP).await else { continue };
        let Some(next) = synclab_core::election::next_owned_term(&members, 4, state.term.max(term)) else { break };
        term = next;
        sent += 1;
        accepted += usize::from(conn.call_raw(path::ALIVE, attack::forged_alive(4, term, to), STEP).await.is_ok());
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = g.nodes.iter().map(|n| n.stderr_lines()).sum::<usize>().saturating_sub(before);
    let outcome = format!(
        "{accepted} of {sent} accepted in {:.1} s; {lines} log lines across 5 nodes ({:.0} per s)",
        took.as_secs_f64(),
        lines as f64 / started.elapsed().as_secs_f64()
    );
    finish(m, &mut g.nodes[4], WHAT, outcome).await
}

/// A flood from the victim's own address (as a spoofed one would be: here another socket on
/// 127.0.0.1) far over the NTP rate limit (4 per second, burst 4), while the victim asks 40 times
/// (100 ms each).
async fn ntp_victim(b: &Bins) -> Row {
    const WHAT: &str = "an NTP flood from the victim's address (rate limit 4/s)";
    let (addr, ntp) = (local(), local());
    let mut server =
        spawn(&b.time_server, &["--listen", &addr, "--ntp-listen", &ntp, "--ntp-rate-limit", "4", "--ntp-burst", "4"], &addr).await;
    let m = measure(&server, path::GET_TIME, None).await;
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flood = tokio::spawn({
        let (ntp, flooding) = (ntp.clone(), flooding.clone());
        async move {
            let Ok(socket) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else { return 0 };
            let mut sent = 0u64;
            while flooding.load(std::sync::atomic::Ordering::Relaxed) && sent < 200_000 {
                for _ in 0..20 {
                    sent += 1;
                    let _ = socket.send_to(&attack::ntp_request(sent, &[]), &ntp).await;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            sent
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut victim = attack::Latencies::default();
    match tokio::net::UdpSocket::bind("127.0.0.1:0").await {
        Ok(socket) => {
            for i in 0..40u64 {
                match attack::ntp_ask(&socket, &ntp, &attack::ntp_request(0xAAAA_0000_0000_0000 + i, &[]), Duration::from_millis(100)).await
                {
                    Some((stratum, took)) if stratum != 0 => victim.samples.push(took),
                    _ => victim.failures.push("no answer".into()),
                }
            }
        }
        Err(e) => victim.failures.push(e.to_string()),
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.await.unwrap_or(0);
    let outcome = format!(
        "{} of 40 of the victim's requests answered (NTP {}) under {sent} flooding requests",
        victim.samples.len(),
        victim.summary()
    );
    finish(m, &mut server, WHAT, outcome).await
}

// ---------------------------------------------------------------------------------------------------

async fn run(name: &str, only: &Option<String>, rows: &mut Vec<Row>, attack: impl Future<Output = Row>) {
    if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
        return;
    }
    eprintln!("attack: {name}");
    let started = Instant::now();
    let row = attack.await;
    eprintln!(
        "  {:.1} s: {} | {} | {} | {} | {}",
        started.elapsed().as_secs_f64(),
        row.memory,
        row.latency,
        row.elections,
        row.exit,
        row.outcome
    );
    rows.push(row);
}

fn main() {
    let mut bin_dir = None;
    let mut label = "this build".to_string();
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bin-dir" => bin_dir = args.next(),
            "--label" => label = args.next().unwrap_or(label),
            "--only" => only = args.next(),
            _ => {} // cargo bench passes --bench
        }
    }
    let b = Bins::new(bin_dir.as_deref());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let started = Instant::now();
    let rows = runtime.block_on(async {
        let mut rows = Vec::new();
        let o = &only;
        run("idle-tcp", o, &mut rows, idle_tcp(&b)).await;
        run("idle-h2", o, &mut rows, idle_h2(&b)).await;
        run("rapid-reset", o, &mut rows, rapid_reset(&b)).await;
        run("unfinished-64", o, &mut rows, unfinished(&b, 64)).await;
        run("unfinished-256", o, &mut rows, unfinished(&b, 256)).await;
        run("oversized-ring", o, &mut rows, oversized(&b, attack::Oversized::RingElection)).await;
        run("oversized-register", o, &mut rows, oversized(&b, attack::Oversized::Register)).await;
        run("million-ids", o, &mut rows, million_ids(&b)).await;
        run("control", o, &mut rows, control(&b)).await;
        run("forgeries", o, &mut rows, forgeries(&b, 20)).await;
        run("heartbeat-max", o, &mut rows, forged_heartbeat(&b, Some(u64::MAX), "term 2^64-1")).await;
        run("heartbeat-2^53", o, &mut rows, forged_heartbeat(&b, Some(attack::MAX_TERM - 1), "term 2^53-1")).await;
        run("heartbeat-plausible", o, &mut rows, forged_heartbeat(&b, None, "node 4's next term (plausible)")).await;
        run("misdirected", o, &mut rows, misdirected(&b)).await;
        run("log-flood", o, &mut rows, log_flood(&b)).await;
        run("reader-crowd", o, &mut rows, reader_crowd(&b)).await;
        run("forged-adjust", o, &mut rows, forged_adjust(&b)).await;
        run("replayed-adjust", o, &mut rows, replayed_adjust(&b)).await;
        run("register-flood", o, &mut rows, register_flood(&b)).await;
        run("long-addresses", o, &mut rows, long_addresses(&b)).await;
        run("takeover", o, &mut rows, takeover(&b)).await;
        run("huge-name", o, &mut rows, huge_name(&b)).await;
        run("watch-leader", o, &mut rows, watch_leader(&b)).await;
        run("watch-rounds", o, &mut rows, watch_rounds(&b)).await;
        run("garbage", o, &mut rows, garbage(&b)).await;
        for which in ["time-server", "election-node", "berkeley-master", "berkeley-slave", "synclab-cristian"] {
            run(&format!("sigterm-{which}"), o, &mut rows, besieged(&b, which)).await;
        }
        run("stalled-server", o, &mut rows, stalled_server(&b)).await;
        run("stalled-member", o, &mut rows, stalled_member(&b)).await;
        run("stalled-tls", o, &mut rows, stalled_tls(&b)).await;
        run("silent-streams", o, &mut rows, silent_streams(&b)).await;
        run("squatters", o, &mut rows, squatters(&b)).await;
        run("accepted-forgeries", o, &mut rows, accepted_forgeries(&b)).await;
        run("ntp-victim", o, &mut rows, ntp_victim(&b)).await;
        rows
    });
    println!("## {label}");
    println!();
    println!(
        "Binaries: {}. {} CPUs, {:.0} s.",
        bin_dir.as_deref().unwrap_or("this build"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "| attack | memory (RSS peak, MB) | legitimate call latency median / p99 | false elections | exit after SIGTERM | outcome (status) |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let cell = |s: &str| s.replace('|', "\\|");
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            cell(&r.attack),
            cell(&r.memory),
            cell(&r.latency),
            cell(&r.elections),
            cell(&r.exit),
            cell(&r.outcome)
        );
    }
}
