//! Election benchmarks.
//!
//!     cargo bench --bench election -- [--mode all|failover|failover-kill|failover-stop|failover-pause|steady|messages|scale]
//!         [--trials 25] [--steady 10m] [--stagger 1ms] [--algorithms bully,ring]
//!         [--sizes 50,100] [--faults kill,stop] [--state disk|memory] [--via cli|api] [--detectors fixed,adaptive]
//!         [--heartbeats 50ms,25ms]
//!
//! With RUST_LOG set (e.g. `RUST_LOG=info`), the nodes log to stderr as JSON lines.
//!
//! - failover (compose, needs the image: scripts/build-images): five nodes per failure detector (--detectors,
//!   passed as SYNCLAB_DETECTOR) and heartbeat (--heartbeats, passed as SYNCLAB_HEARTBEAT; 50 ms by
//!   default), with the other defaults (timeout 200 ms, RPC deadline 100 ms, probe 25 ms); each trial takes the coordinator's
//!   container away (`docker kill`, `docker stop` or `docker pause`) and waits until every survivor
//!   follows one new coordinator, then brings it back and waits for its takeover. Each failover says which
//!   path detected the death: the broken line (connection), the coordinator's goodbye, or the timeout.
//!   Times come from the nodes' own timestamps (GetState) and the moment the docker command started: one
//!   kernel clock, so they compare exactly. Detection = the command → first suspicion;
//!   election = first suspicion → first node to know the winner; announcement = that → last survivor to know.
//!   `--via api` sends each fault as one request to the engine's API (bollard on its unix socket, one
//!   connection for the run, as `synclab lab run` does) instead of running the `docker` command, whose
//!   own start-up (~15 ms) is in the figures otherwise.
//! - steady: five nodes per algorithm in this process for --steady, per failure detector (--detectors,
//!   both by default: A/B in one run); counts elections (with no fault, every one is a false suspicion).
//! - messages: one election after the coordinator stops, with a chosen initiator, n = 5, 20, 50, in process.
//! - scale: failover times with n = 50 and 100 nodes in this process, per failure detector; the cold start
//!   of all n at once on the two worker threads (both cores busy) must settle within 60 s.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use synclab::clock::host_now;
use synclab::proto::election as pb;
use synclab::proto::election::election_service_client::ElectionServiceClient;
use synclab::proto::timestamp_to_nanos;
use synclab_core::election::{Algorithm, Detector, NodeId};
use synclab_harness::cluster::{LocalCluster, agreed};

mod common;

const MS: Duration = Duration::from_millis(1);

struct Options {
    mode: String,
    trials: usize,
    steady: Duration,
    /// The election stagger for the scale trials (zero: the textbook).
    stagger: Duration,
    /// The algorithms of the scale trials.
    algorithms: Vec<Algorithm>,
    /// The group sizes of the scale trials.
    sizes: Vec<u64>,
    /// The faults of the scale trials: kill (no goodbye) and/or stop (goodbye).
    kills: Vec<bool>,
    /// Whether the scale trials' nodes keep their terms in state files (as deployed) or in memory.
    disk: bool,
    /// Whether the failover trials send their faults to the engine's API instead of running `docker`.
    via_api: bool,
    /// The failure detectors of the in-process runs (steady, scale), each in turn: A/B in one run.
    detectors: Vec<Detector>,
    /// The heartbeats of the compose failover runs, each in turn (with each detector).
    heartbeats: Vec<Duration>,
}

fn options() -> Options {
    let mut o = Options {
        mode: "all".into(),
        trials: 25,
        steady: Duration::from_secs(600),
        stagger: Duration::ZERO,
        algorithms: vec![Algorithm::Bully, Algorithm::Ring],
        sizes: vec![50, 100],
        kills: vec![true, false],
        disk: true,
        via_api: false,
        detectors: vec![Detector::Fixed, Detector::Adaptive],
        heartbeats: vec![Duration::from_millis(50)],
    };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).unwrap_or_else(|| panic!("{} needs a value", pair[0]));
        match pair[0].as_str() {
            "--mode" => o.mode = value.clone(),
            "--trials" => o.trials = value.parse().expect("--trials: a number"),
            "--steady" => o.steady = synclab_core::duration::parse_positive(value).expect("--steady: a duration"),
            "--stagger" => o.stagger = synclab_core::duration::parse_positive(value).expect("--stagger: a duration"),
            "--algorithms" => {
                o.algorithms = value
                    .split(',')
                    .map(|a| match a {
                        "bully" => Algorithm::Bully,
                        "ring" => Algorithm::Ring,
                        other => panic!("--algorithms: bully and/or ring, not {other}"),
                    })
                    .collect()
            }
            "--sizes" => o.sizes = value.split(',').map(|n| n.parse().expect("--sizes: numbers, e.g. 50,100")).collect(),
            "--faults" => {
                o.kills = value
                    .split(',')
                    .map(|f| match f {
                        "kill" => true,
                        "stop" => false,
                        other => panic!("--faults: kill and/or stop, not {other}"),
                    })
                    .collect()
            }
            "--state" => {
                o.disk = match value.as_str() {
                    "disk" => true,
                    "memory" => false,
                    other => panic!("--state: disk or memory, not {other}"),
                }
            }
            "--via" => {
                o.via_api = match value.as_str() {
                    "cli" => false,
                    "api" => true,
                    other => panic!("--via: cli or api, not {other}"),
                }
            }
            "--heartbeats" => {
                o.heartbeats = value
                    .split(',')
                    .map(|d| synclab_core::duration::parse_positive(d).expect("--heartbeats: durations, e.g. 50ms,25ms"))
                    .collect()
            }
            "--detectors" => {
                o.detectors = value
                    .split(',')
                    .map(|d| synclab_core::Named::from_name(d).unwrap_or_else(|| panic!("--detectors: fixed and/or adaptive, not {d}")))
                    .collect()
            }
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// Median and p99 (nearest rank) of `xs`, in ms.
fn stats(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.5), rank(0.99), *v.last().unwrap())
}

fn ts(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    timestamp_to_nanos(t.as_ref(), "t").ok()
}

/// Which path detected a failover: the first survivor to suspect says why.
fn path(died: i64, states: &[pb::NodeState]) -> &'static str {
    let first = states
        .iter()
        .filter_map(|s| s.last_election.as_ref())
        .filter_map(|e| Some((ts(&e.started)?, e.reason.as_str())))
        .filter(|(t, _)| *t >= died)
        .min_by_key(|(t, _)| *t);
    match first.map(|(_, reason)| reason) {
        Some(r) if r.contains("lost its connection") => "connection",
        Some(r) if r.contains("said goodbye") => "goodbye",
        Some(r) if r.contains("silent") => "timeout",
        Some(_) => "other",
        None => "?",
    }
}

fn print_paths(paths: &[&str]) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for p in paths {
        *counts.entry(p).or_default() += 1;
    }
    let text: Vec<String> = counts.iter().map(|(p, n)| format!("{p} {n}")).collect();
    println!("  detected by: {}", text.join(", "));
}

/// Splits one failover from the survivors' states: (detection, election, announcement, total) in ms.
fn split(died: i64, states: &[pb::NodeState]) -> Option<[f64; 4]> {
    let suspected = states.iter().filter_map(|s| ts(&s.last_election.as_ref()?.started)).filter(|&t| t >= died).min()?;
    let known: Vec<i64> = states.iter().filter_map(|s| ts(&s.coordinator_since)).collect();
    let first = *known.iter().min()?;
    let last = *known.iter().max()?;
    let ms = |d: i64| d as f64 / 1e6;
    Some([ms(suspected - died), ms(first - suspected), ms(last - first), ms(last - died)])
}

/// Draws each trial's phases as a stacked bar to target/plots/NAME.svg and says where.
fn plot_split(name: &str, title: &str, samples: &[[f64; 4]]) {
    let labels: Vec<String> = (1..=samples.len()).map(|i| i.to_string()).collect();
    let parts: Vec<(String, Vec<f64>)> = ["detection", "election", "announcement"]
        .iter()
        .enumerate()
        .map(|(k, part)| (part.to_string(), samples.iter().map(|s| s[k]).collect()))
        .collect();
    let chart = synclab::plot::Chart::new(title, "trial", "ms").size(720, 300);
    println!("  {}", common::write_plot(name, &synclab::plot::stacked_bars(&chart, &labels, &parts)));
}

fn print_split(label: &str, samples: &[[f64; 4]]) {
    println!("{label}: {} trials", samples.len());
    for (i, part) in ["detection", "election", "announcement", "total"].iter().enumerate() {
        let xs: Vec<f64> = samples.iter().map(|s| s[i]).collect();
        let (median, p99, max) = stats(&xs);
        println!("  {part:<13} median {median:7.1} ms   p99 {p99:7.1} ms   max {max:7.1} ms");
    }
}

// ---------------------------------------------------------------------------------------------- compose

struct Compose {
    project: String,
    files: &'static str,
    ports: Vec<u16>,
    /// The nodes' failure detector (`SYNCLAB_DETECTOR`, which the compose file passes on).
    detector: Detector,
    /// The nodes' heartbeat (`SYNCLAB_HEARTBEAT`, likewise).
    heartbeat: Duration,
}

impl Compose {
    fn cmd(&self) -> Command {
        let mut cmd = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/compose"));
        cmd.env("COMPOSE_PROJECT_NAME", &self.project).env("COMPOSE_FILE", self.files).env("SYNCLAB_BUILD", "none");
        cmd.env("SYNCLAB_DETECTOR", self.detector.to_string());
        cmd.env("SYNCLAB_HEARTBEAT", format!("{:?}", self.heartbeat));
        for (i, port) in self.ports.iter().enumerate() {
            cmd.env(format!("SYNCLAB_NODE_{}_PORT", i + 1), port.to_string());
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("compose runs");
        assert!(out.status.success(), "compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn container(&self, node: usize) -> String {
        self.run(&["ps", "-q", &format!("node-{node}")])
    }

    async fn states(&self, nodes: &[usize]) -> Vec<pb::NodeState> {
        let mut out = Vec::new();
        for &n in nodes {
            let Ok(mut client) = ElectionServiceClient::connect(format!("http://127.0.0.1:{}", self.ports[n - 1])).await else { continue };
            let mut request = tonic::Request::new(pb::GetStateRequest {});
            request.set_timeout(Duration::from_millis(500));
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(600), client.get_state(request)).await {
                out.push(s.into_inner());
            }
        }
        out
    }

    async fn wait_agreed(&self, nodes: &[usize], coordinator: NodeId) -> Vec<pb::NodeState> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let states = self.states(nodes).await;
            if states.len() == nodes.len() && agreed(&states, coordinator) {
                return states;
            }
            assert!(Instant::now() < deadline, "no agreement on {coordinator}: {states:?}");
            tokio::time::sleep(10 * MS).await;
        }
    }
}

fn docker_time(container: &str, field: &str) -> i64 {
    let out = Command::new("docker").args(["inspect", "-f", &format!("{{{{.State.{field}}}}}"), container]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let t = humantime::parse_rfc3339(&text).unwrap_or_else(|e| panic!("docker {field} '{text}': {e}"));
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// When the node in `container` logged that SIGTERM reached it, at or after `after` (host ns): the time
/// `docker stop` took to deliver the signal ends there, and the node's own work begins.
fn sigterm_time(container: &str, after: i64) -> Option<i64> {
    let out = Command::new("docker").args(["logs", container]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .filter(|l| l.contains("SIGTERM: shutting down"))
        .filter_map(|l| {
            // Text logs start with the RFC 3339 time (after colour codes, if any); JSON logs carry it
            // in "timestamp".
            let plain: String = strip_ansi(l);
            let stamp = match plain.find("\"timestamp\":\"") {
                Some(i) => plain[i + 13..].split('"').next()?.to_string(),
                None => plain.split_whitespace().next()?.to_string(),
            };
            let t = humantime::parse_rfc3339(&stamp).ok()?;
            Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos() as i64)
        })
        .filter(|&t| t >= after)
        .min()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How a trial takes the coordinator's container away, and brings it back.
#[derive(Clone, Copy)]
enum Fault {
    Kill,
    Stop,
    Pause,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Stop => "stop",
            Fault::Pause => "pause",
        }
    }
}

/// Takes the coordinator's container away with the `docker` command.
fn fault_via_cli(fault: Fault, id: &str) {
    match fault {
        Fault::Kill => Command::new("docker").args(["kill", id]).output().unwrap(),
        Fault::Stop => Command::new("docker").args(["stop", "--time", "5", id]).output().unwrap(),
        Fault::Pause => Command::new("docker").args(["pause", id]).output().unwrap(),
    };
}

/// Brings the coordinator's container back after `fault`.
fn bring_back(fault: Fault, id: &str) {
    match fault {
        Fault::Kill | Fault::Stop => Command::new("docker").args(["start", id]).output().unwrap(),
        Fault::Pause => Command::new("docker").args(["unpause", id]).output().unwrap(),
    };
}

/// Takes the coordinator's container away with one request to the engine's API.
#[cfg(feature = "lab-runner")]
async fn fault_via_api(docker: &bollard::Docker, fault: Fault, id: &str) {
    use bollard::query_parameters::{KillContainerOptionsBuilder, StopContainerOptionsBuilder};
    let result = match fault {
        Fault::Kill => docker.kill_container(id, Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build())).await,
        Fault::Stop => docker.stop_container(id, Some(StopContainerOptionsBuilder::new().t(5).build())).await,
        Fault::Pause => docker.pause_container(id).await,
    };
    result.unwrap_or_else(|e| panic!("docker {} {id} through the engine's API: {e}", fault.name()));
}

#[cfg(not(feature = "lab-runner"))]
async fn fault_via_api(_: &(), _: Fault, _: &str) {
    panic!("--via api needs the lab-runner feature (bollard)");
}

async fn failover(trials: usize, faults: &[Fault], via_api: bool, detectors: &[Detector], heartbeats: &[Duration]) {
    #[cfg(feature = "lab-runner")]
    let docker = bollard::Docker::connect_with_local_defaults().expect("the Docker engine's socket");
    #[cfg(not(feature = "lab-runner"))]
    let docker = ();
    if via_api {
        // One request first, so the trials do not pay for the connection.
        #[cfg(feature = "lab-runner")]
        docker.ping().await.expect("the Docker engine answers");
    }
    let via = if via_api { "the engine's API" } else { "the docker command" };
    let runs = [("bully", "docker-compose.yml"), ("ring", "docker-compose.yml:docker-compose.ring.yml")];
    let settings: Vec<(Detector, Duration)> = heartbeats.iter().flat_map(|&h| detectors.iter().map(move |&d| (d, h))).collect();
    for ((algorithm, files), (detector, heartbeat)) in runs.into_iter().flat_map(|r| settings.iter().map(move |&s| (r, s))) {
        let compose =
            Compose { project: format!("synclab-bench-{algorithm}"), files, ports: (50171..=50175).collect(), detector, heartbeat };
        // The default heartbeat keeps the labels earlier runs (and scripts/bench-ab) know.
        let setting = if heartbeat == Duration::from_millis(50) {
            format!("{detector} detector")
        } else {
            format!("{detector} detector, heartbeat {heartbeat:?}")
        };
        let _ = compose.cmd().args(["down", "--volumes", "--timeout", "2"]).output();
        compose.run(&["up", "-d", "node-1", "node-2", "node-3", "node-4", "node-5"]);
        let all = [1, 2, 3, 4, 5];
        compose.wait_agreed(&all, 5).await;
        let id5 = compose.container(5);
        for &fault in faults {
            let (mut failovers, mut takeovers, mut paths) = (Vec::new(), Vec::new(), Vec::new());
            let (mut engine_exits, mut after_exit) = (Vec::new(), Vec::new());
            let mut incomplete = 0;
            for _ in 0..trials {
                compose.wait_agreed(&all, 5).await;
                tokio::time::sleep(300 * MS).await;
                let before = host_now();
                if via_api {
                    fault_via_api(&docker, fault, &id5).await;
                } else {
                    fault_via_cli(fault, &id5);
                }
                let states = compose.wait_agreed(&[1, 2, 3, 4], 4).await;
                // Every fault is timed from the moment its command starts (the engine's own latency
                // included). For a kill the engine also records when the process exited
                // (State.FinishedAt); it is printed beside, but not used: the kernel closes the dead
                // process's connections as it exits, and survivors can start electing before the
                // engine's record of the exit.
                let died = before;
                let exited = match fault {
                    Fault::Kill => Some((docker_time(&id5, "FinishedAt") - before) as f64 / 1e6),
                    // The moment the node itself learned of the stop, from its log.
                    Fault::Stop => sigterm_time(&id5, before).map(|t| (t - before) as f64 / 1e6),
                    Fault::Pause => None,
                };
                let Some(failover) = split(died, &states) else {
                    // No survivor's last election started after the fault: say what each one reports,
                    // leave the trial out, and count it.
                    incomplete += 1;
                    let since = |t: &Option<prost_types::Timestamp>| {
                        ts(t).map_or("-".to_string(), |t| format!("{:+.1} ms", (t - died) as f64 / 1e6))
                    };
                    for st in &states {
                        let e = st.last_election.clone().unwrap_or_default();
                        println!(
                            "  trial left out: node {} {:?} term {} coordinator {} since {}; last election started {} finished {} ({})",
                            st.id,
                            st.role(),
                            st.term,
                            st.coordinator,
                            since(&st.coordinator_since),
                            since(&e.started),
                            since(&e.finished),
                            e.reason
                        );
                    }
                    tokio::time::sleep(300 * MS).await;
                    bring_back(fault, &id5);
                    compose.wait_agreed(&all, 5).await;
                    continue;
                };
                if let Some(exited) = exited {
                    engine_exits.push(exited);
                    after_exit.push(failover[3] - exited);
                }
                failovers.push(failover);
                paths.push(path(died, &states));
                tokio::time::sleep(300 * MS).await;
                let back = host_now();
                bring_back(fault, &id5);
                let states = compose.wait_agreed(&all, 5).await;
                let started = match fault {
                    Fault::Kill | Fault::Stop => docker_time(&id5, "StartedAt"),
                    Fault::Pause => back,
                };
                let last = states.iter().filter_map(|s| ts(&s.coordinator_since)).max().unwrap();
                takeovers.push((last - started) as f64 / 1e6);
            }
            print_split(
                &format!("failover, {algorithm}, compose, 5 nodes, {setting} (docker {} the coordinator, through {via})", fault.name()),
                &failovers,
            );
            plot_split(
                &format!("failover-{algorithm}-{detector}-{}-{}", heartbeat.as_millis(), fault.name()),
                &format!("{algorithm}, compose, 5 nodes, {setting}: docker {} the coordinator, phases per trial", fault.name()),
                &failovers,
            );
            print_paths(&paths);
            if incomplete > 0 {
                println!("  left out: {incomplete} trials in which no survivor's last election started after the fault");
            }
            if !engine_exits.is_empty() {
                let what = match fault {
                    Fault::Kill => "the engine's exit time (State.FinishedAt) after the kill started",
                    _ => "SIGTERM reached the node (its log) after the stop started",
                };
                let (median, p99, max) = stats(&engine_exits);
                println!("  {what}: median {median:.1} ms, p99 {p99:.1} ms, max {max:.1} ms ({} of {trials} trials)", engine_exits.len());
                let (median, p99, max) = stats(&after_exit);
                println!("  total after that time: median {median:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
            }
            let (median, p99, max) = stats(&takeovers);
            println!("  takeover once it is back (→ all 5 follow it): median {median:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
        }
        compose.run(&["down", "--volumes", "--timeout", "2"]);
    }
}

// ---------------------------------------------------------------------------------------------- in process

/// The defaults: heartbeat 50 ms, timeout 200 ms, RPC deadline 100 ms.
const DEFAULTS: [Duration; 3] = [Duration::from_millis(50), Duration::from_millis(200), Duration::from_millis(100)];
/// Timers 10 times slower, so that no message misses its deadline on a saturated machine.
const SLOW: [Duration; 3] = [Duration::from_millis(500), Duration::from_secs(2), Duration::from_secs(1)];

async fn cluster_with(algorithm: Algorithm, n: u64, tag: &str, timers: [Duration; 3]) -> LocalCluster {
    cluster_detecting(algorithm, n, tag, timers, Detector::Fixed).await
}

async fn cluster_detecting(
    algorithm: Algorithm,
    n: u64,
    tag: &str,
    [heartbeat, timeout, rpc]: [Duration; 3],
    detector: Detector,
) -> LocalCluster {
    let dir = std::env::temp_dir().join(format!("synclab-bench-{tag}-{algorithm}-{n}-{detector}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let c =
        LocalCluster::start_with(algorithm, n, heartbeat, timeout, rpc, dir, move |node| node.detector = detector).await.expect("cluster");
    let ids = c.ids();
    c.wait_for_agreement(&ids, n, Duration::from_secs(60)).await.expect("the cluster settles");
    c
}

fn elections_started(states: &BTreeMap<NodeId, pb::NodeState>) -> u64 {
    states.values().flat_map(|s| s.messages.iter()).filter(|m| m.kind == "Election" || m.kind == "RingElection").map(|m| m.sent).sum()
}

async fn steady(span: Duration, detector: Detector) {
    let bully = cluster_detecting(Algorithm::Bully, 5, "steady", DEFAULTS, detector).await;
    let ring = cluster_detecting(Algorithm::Ring, 5, "steady", DEFAULTS, detector).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = [bully.states().await, ring.states().await];
    let start = Instant::now();
    tokio::time::sleep(span).await;
    let after = [bully.states().await, ring.states().await];
    println!(
        "steady state, 5 nodes, {:.0} s, defaults (heartbeat 50 ms, timeout 200 ms), {detector} detector:",
        start.elapsed().as_secs_f64()
    );
    for (i, name) in ["bully", "ring"].iter().enumerate() {
        let terms: Vec<(u64, u64)> = before[i].values().zip(after[i].values()).map(|(b, a)| (b.term, a.term)).collect();
        let moved = terms.iter().filter(|(b, a)| a != b).count();
        let elections = elections_started(&after[i]) - elections_started(&before[i]);
        let alive: u64 = after[i].values().flat_map(|s| &s.messages).filter(|m| m.kind == "Alive").map(|m| m.sent).sum::<u64>()
            - before[i].values().flat_map(|s| &s.messages).filter(|m| m.kind == "Alive").map(|m| m.sent).sum::<u64>();
        let failed: u64 = after[i].values().flat_map(|s| &s.messages).filter(|m| m.kind == "Alive").map(|m| m.failed).sum::<u64>();
        println!(
            "  {name:<5}: election messages {elections}, nodes whose term moved {moved}, Alive sent {alive} (failed since start {failed})"
        );
    }
    bully.shutdown().await;
    ring.shutdown().await;
}

/// Messages of the non-heartbeat kinds the survivors sent (incl. failed) and received.
fn tally(states: &BTreeMap<NodeId, pb::NodeState>) -> BTreeMap<String, (u64, u64, u64)> {
    let mut out = BTreeMap::new();
    for m in states.values().flat_map(|s| &s.messages).filter(|m| m.kind != "Alive") {
        let e = out.entry(m.kind.clone()).or_insert((0, 0, 0));
        e.0 += m.sent;
        e.1 += m.received;
        e.2 += m.failed;
    }
    out
}

async fn messages() {
    println!("messages per election (in process; the coordinator n stops, one chosen node starts the election):");
    println!("  sent = requests sent by the survivors (failed ones, to the dead node, included); recv = delivered");
    let mut cases = Vec::new();
    for n in [5u64, 20, 50] {
        for (label, algorithm, initiator) in
            [("bully best", Algorithm::Bully, n - 1), ("bully worst", Algorithm::Bully, 1), ("ring", Algorithm::Ring, 1)]
        {
            cases.push((n, label, algorithm, initiator, DEFAULTS));
        }
    }
    // The same worst case with every timer 10 times longer: what the counts are when no message misses
    // its deadline.
    cases.push((50, "bully worst", Algorithm::Bully, 1, SLOW));
    for (n, label, algorithm, initiator, timers) in cases {
        {
            let mut c = cluster_with(algorithm, n, "messages", timers).await;
            tokio::time::sleep(300 * MS).await;
            let survivors: Vec<NodeId> = (1..n).collect();
            c.stop(n).await;
            let before = tally(&c.states().await);
            c.node(initiator).unwrap().hold_election().await;
            c.wait_for_agreement(&survivors, n - 1, Duration::from_secs(30)).await.expect("agreement");
            tokio::time::sleep(timers[1]).await;
            let after = tally(&c.states().await);
            let delta = |k: &str| {
                let (s1, r1, f1) = after.get(k).copied().unwrap_or_default();
                let (s0, r0, f0) = before.get(k).copied().unwrap_or_default();
                (s1 - s0, r1 - r0, f1 - f0)
            };
            let theory = match label {
                "bully best" => "Election 1 (to the dead node), Ok 0, Coordinator n-2".to_string(),
                "bully worst" => format!(
                    "Election n(n-1)/2 = {}, Ok (n-1)(n-2)/2 = {}, Coordinator n-2 = {}",
                    n * (n - 1) / 2,
                    (n - 1) * (n - 2) / 2,
                    n - 2
                ),
                _ => format!("RingElection n-1 = {} delivered, RingCoordinator n-1 = {} delivered", n - 1, n - 1),
            };
            let kinds: &[&str] =
                if algorithm == Algorithm::Ring { &["RingElection", "RingCoordinator"] } else { &["Election", "Ok", "Coordinator"] };
            let measured: Vec<String> = kinds
                .iter()
                .map(|k| {
                    let (s, r, f) = delta(k);
                    if *k == "Ok" { format!("Ok {r}") } else { format!("{k} sent {s} (failed {f}) recv {r}") }
                })
                .collect();
            let slow = if timers == SLOW { " (timers x10)" } else { "" };
            println!("  n = {n:>2} {label:<11}{slow}: {}   | theory: {theory}", measured.join(", "));
            c.shutdown().await;
        }
    }
}

async fn scale(trials: usize, o: &Options) {
    let stagger = o.stagger;
    let disk = o.disk;
    for &detector in &o.detectors {
        for &n in &o.sizes {
            for &algorithm in &o.algorithms {
                for &kill in &o.kills {
                    let dir = std::env::temp_dir().join(format!("synclab-bench-scale-{algorithm}-{n}-{detector}-{}", std::process::id()));
                    let _ = std::fs::remove_dir_all(&dir);
                    let [heartbeat, timeout, rpc] = DEFAULTS;
                    let mut c = LocalCluster::start_with(algorithm, n, heartbeat, timeout, rpc, dir, move |node| {
                        node.election_stagger = stagger;
                        node.detector = detector;
                        if !disk {
                            node.state_dir = None;
                        }
                    })
                    .await
                    .expect("cluster");
                    if c.wait_for_agreement(&c.ids(), n, Duration::from_secs(60)).await.is_none() {
                        let states = c.states().await;
                        let coordinators: std::collections::BTreeSet<i64> = states.values().map(|s| s.coordinator).collect();
                        let terms: Vec<u64> = states.values().map(|s| s.term).collect();
                        println!(
                            "scale, {algorithm}, {n} nodes, {detector} detector: the group, started all at once, did not settle on node {n} within 60 s \
                         (coordinators seen now: {coordinators:?}; terms {}..{}); no trials",
                            terms.iter().min().unwrap_or(&0),
                            terms.iter().max().unwrap_or(&0)
                        );
                        c.shutdown().await;
                        continue;
                    }
                    // What the settled group costs: the process's CPU over two seconds of heartbeats.
                    let (cpu0, wall0) = (common::cpu_seconds(std::process::id()), Instant::now());
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let busy = (common::cpu_seconds(std::process::id()) - cpu0) / wall0.elapsed().as_secs_f64();
                    println!(
                        "scale, {algorithm}, {n} nodes, {detector} detector, settled (cold start, all at once): the process uses {:.0}% of one core (heartbeats)",
                        busy * 100.0
                    );
                    let survivors: Vec<NodeId> = (1..n).collect();
                    let all: Vec<NodeId> = (1..=n).collect();
                    let (mut samples, mut paths, mut unsettled) = (Vec::new(), Vec::new(), false);
                    for _ in 0..trials {
                        if c.wait_for_agreement(&all, n, Duration::from_secs(30)).await.is_none() {
                            println!("  node {n}, back, was not followed by all within 30 s: no more trials");
                            unsettled = true;
                            break;
                        }
                        tokio::time::sleep(300 * MS).await;
                        let died = host_now();
                        if kill {
                            c.kill(n).await;
                        } else {
                            c.stop(n).await;
                        }
                        if c.wait_for_agreement(&survivors, n - 1, Duration::from_secs(30)).await.is_none() {
                            println!("  the survivors did not all follow node {} within 30 s: no more trials", n - 1);
                            unsettled = true;
                            break;
                        }
                        let states: Vec<pb::NodeState> = c.states().await.into_values().collect();
                        samples.push(split(died, &states).expect("complete"));
                        paths.push(path(died, &states));
                        c.restart(n).await.expect("restart");
                    }
                    if samples.is_empty() {
                        println!("scale, {algorithm}, {n} nodes ({}): no trial completed", if kill { "kill" } else { "stop" });
                        c.shutdown().await;
                        continue;
                    }
                    let how =
                        if kill { "kill the coordinator: no goodbye, connections closed" } else { "stop the coordinator: it says goodbye" };
                    let stagger_label = if stagger.is_zero() { String::new() } else { format!(", election stagger {stagger:?}") };
                    let settings = format!("{stagger_label}{}, {detector} detector", if disk { "" } else { ", terms in memory" });
                    print_split(&format!("scale, {algorithm}, {n} nodes in one process ({how}{settings})"), &samples);
                    if unsettled {
                        println!("  {} trials complete; then one that did not settle", samples.len());
                    }
                    let verb = if kill { "kill" } else { "stop" };
                    let tag =
                        format!("{}{}-{detector}", if stagger.is_zero() { "" } else { "-stagger" }, if disk { "" } else { "-memory" });
                    plot_split(
                        &format!("scale-{algorithm}-{n}-{verb}{tag}"),
                        &format!("{algorithm}, {n} nodes in one process: {verb} the coordinator{settings}, phases per trial"),
                        &samples,
                    );
                    print_paths(&paths);
                    c.shutdown().await;
                }
            }
        }
    }
}

fn main() {
    let o = options();
    // The nodes' logs, one JSON object per line on stderr, when RUST_LOG asks for them (e.g. `info`).
    if let Ok(filter) = std::env::var("RUST_LOG") {
        synclab::telemetry::init(synclab::telemetry::LogFormat::Json, &filter).expect("RUST_LOG");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let date =
            Command::new("date").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
        println!("synclab election benchmark, {date}");
        let all = o.mode == "all";
        if all || o.mode == "failover" {
            failover(o.trials, &[Fault::Kill, Fault::Stop, Fault::Pause], o.via_api, &o.detectors, &o.heartbeats).await;
        }
        for (mode, fault) in [("failover-kill", Fault::Kill), ("failover-stop", Fault::Stop), ("failover-pause", Fault::Pause)] {
            if o.mode == mode {
                failover(o.trials, &[fault], o.via_api, &o.detectors, &o.heartbeats).await;
            }
        }
        if all || o.mode == "messages" {
            messages().await;
        }
        if all || o.mode == "scale" {
            scale(o.trials.min(10), &o).await;
        }
        if all || o.mode == "steady" {
            for &detector in &o.detectors {
                steady(o.steady, detector).await;
            }
        }
    });
}
