//! End to end on a real multi-node Docker Swarm on this machine (`scripts/swarm up --nodes 3`): the
//! stack deploys and turns healthy, the election group (members found in DNS, ids from task slots)
//! agrees, survives `docker kill` of its coordinator's container on whichever node runs it (and takes
//! the task back when the swarm restarts it at a new address), survives the loss of a whole node
//! (its link cut: no FIN), and `scripts/swarm down` leaves no daemon, namespace, link, iptables rule or
//! mount behind.
//!
//! Needs root and a Docker engine. Without them the test says so and skips, except under CI
//! (`CI=true`), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use synclab::election::agreement;
use synclab::proto::election as pb;
use synclab::proto::election::election_service_client::ElectionServiceClient;

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(!under_ci(), "{what} is required under CI");
    eprintln!("SKIPPED: {what} is not available on this machine");
    false
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn sh(script: &str) -> String {
    String::from_utf8_lossy(&run(Command::new("sh").args(["-c", script])).stdout).into_owned()
}

/// What `scripts/swarm down` must leave as it found it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    links: String,
    netns: String,
    rules: String,
    mounts: String,
    daemons: String,
}

fn snapshot() -> Snapshot {
    Snapshot {
        links: sh("ip -o link | awk -F': ' '{print $2}' | sed 's/@.*//' | sort"),
        netns: sh("ip netns list | sort"),
        rules: sh("iptables-save 2>/dev/null | grep -v '^#' | sed 's/\\[[0-9:]*\\]//' | grep -c synclab-swarm"),
        mounts: sh("awk '{print $2}' /proc/mounts | grep -E 'synclab-sw' | sort"),
        daemons: sh("ps -eo cmd | grep -E '[d]ockerd .*synclab-sw' | sort"),
    }
}

/// The swarm under test: `scripts/swarm down` on drop, whatever happened.
struct Swarm {
    _lock: std::fs::File,
}

impl Swarm {
    fn script(args: &[&str]) -> Command {
        let mut cmd = Command::new(root().join("scripts/swarm"));
        cmd.args(args).current_dir(root());
        cmd
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = run(&mut Self::script(&["down"]));
    }
}

/// One election task: its slot (the node's id), the swarm node that runs it, its container, and where
/// its gRPC port is published.
#[derive(Debug, Clone)]
struct Task {
    slot: u64,
    zone: String,
    engine: String,
    container: String,
    address: String,
}

/// The running election tasks on every node (`scripts/swarm engines`).
fn tasks() -> Vec<Task> {
    let mut tasks = Vec::new();
    for line in ok(&mut Swarm::script(&["engines"])).lines() {
        let [zone, engine, ip] = line.split_whitespace().collect::<Vec<_>>()[..] else { continue };
        let out = run(Command::new("docker").args([
            "-H",
            engine,
            "ps",
            "--filter",
            "label=com.docker.swarm.service.name=synclab_election",
            "--format",
            "{{.ID}} {{.Label \"com.docker.swarm.task.name\"}} {{.Ports}}",
        ]));
        for row in String::from_utf8_lossy(&out.stdout).lines() {
            let mut parts = row.split_whitespace();
            let (Some(container), Some(name), Some(ports)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let Some(slot) = name.split('.').nth(1).and_then(|s| s.parse().ok()) else { continue };
            // 0.0.0.0:30001->50054/tcp
            let Some(port) = ports.split("->").next().and_then(|p| p.rsplit(':').next()) else { continue };
            tasks.push(Task {
                slot,
                zone: zone.into(),
                engine: engine.into(),
                container: container.into(),
                address: format!("{ip}:{port}"),
            });
        }
    }
    tasks.sort_by_key(|t| t.slot);
    tasks
}

async fn state(address: &str) -> Option<pb::NodeState> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}")).ok()?.connect_timeout(Duration::from_millis(300));
    let call = async {
        let mut client = ElectionServiceClient::new(channel.connect().await.ok()?);
        client.get_state(pb::GetStateRequest {}).await.ok().map(|r| r.into_inner())
    };
    tokio::time::timeout(Duration::from_millis(500), call).await.ok().flatten()
}

/// Waits until the tasks `among` says (all reachable, `count` of them) agree on one coordinator that is
/// not one of `gone`, and (if given) every one of them lists `members` members; returns the coordinator
/// and how long it took.
async fn agreed(among: impl Fn(&Task) -> bool, count: usize, gone: &[u64], members: Option<usize>, limit: Duration) -> (u64, Duration) {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < limit {
        let tasks: Vec<Task> = tasks().into_iter().filter(&among).collect();
        let mut states = Vec::new();
        for t in &tasks {
            if let Some(s) = state(&t.address).await {
                states.push(s);
            }
        }
        if states.len() == count
            && members.is_none_or(|m| states.iter().all(|s| s.members.len() == m))
            && let Some((coordinator, _)) = agreement(&states)
            && !gone.contains(&coordinator)
        {
            return (coordinator, start.elapsed());
        }
        seen = states.iter().map(|s| (s.id, s.role, s.term, s.coordinator, s.members.len())).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no agreement among {count} election tasks within {limit:?}: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_swarm_elects_fails_over_and_leaves_nothing_behind() {
    let is_root = sh("id -u").trim() == "0";
    if !require(is_root, "root (network namespaces, a bridge, extra dockerd)")
        || !require(run(Command::new("docker").arg("info")).status.success(), "a Docker engine")
    {
        return;
    }
    if !under_ci() && sh("docker info --format '{{.Swarm.LocalNodeState}}'").trim() != "inactive" {
        eprintln!("SKIPPED: this host's engine is in a swarm already");
        return;
    }
    let lock = std::fs::File::create(root().join("target/e2e.lock")).unwrap();
    lock.lock().unwrap();
    if std::env::var_os("SYNCLAB_SKIP_BUILD").is_none() {
        ok(Command::new(root().join("scripts/build-images")).current_dir(root()));
    }
    let before = snapshot();
    let swarm = Swarm { _lock: lock };
    ok(Swarm::script(&["up", "--nodes", "3"]).env("SYNCLAB_HEALTH_INTERVAL", "1s"));

    // The five election tasks, spread over the three nodes, agree: the highest slot rules.
    let all = tasks();
    assert_eq!(all.iter().map(|t| t.slot).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5], "{all:?}");
    let zones: std::collections::BTreeSet<&str> = all.iter().map(|t| t.zone.as_str()).collect();
    assert_eq!(zones.len(), 3, "election tasks on every node: {all:?}");
    let (coordinator, _) = agreed(|_| true, 5, &[], Some(5), Duration::from_secs(30)).await;
    assert_eq!(coordinator, 5);

    // Kill the coordinator's container on its node: the survivors agree on 4; the swarm restarts
    // slot 5 in a new container at a new address, and it takes over again.
    let victim = all.iter().find(|t| t.slot == 5).unwrap().clone();
    ok(Command::new("docker").args(["-H", &victim.engine, "kill", &victim.container]));
    let (next, took) = agreed(|t| t.slot != 5, 4, &[5], None, Duration::from_secs(10)).await;
    assert_eq!(next, 4, "the survivors agree on the next highest");
    eprintln!("kill failover: the survivors agreed on {next} {took:?} after the kill (polled every 100 ms)");
    let (back, took) = agreed(|_| true, 5, &[], Some(5), Duration::from_secs(30)).await;
    assert_eq!(back, 5, "the restarted task takes over");
    let restarted = tasks().into_iter().find(|t| t.slot == 5).unwrap();
    assert_ne!(restarted.container, victim.container, "the swarm restarted it in a new container");
    eprintln!("restart: slot 5 back at {} and ruling {took:?} later", restarted.address);

    // Cut the link of a worker that runs election tasks: no FIN; the others agree on a coordinator
    // among themselves (not one of the nodes cut off, which their followers still name at first).
    let cut = tasks().into_iter().filter(|t| t.zone != "z0").max_by_key(|t| t.slot).expect("an election task on a worker");
    let veth = format!("slv{}", cut.zone.trim_start_matches('z'));
    let survivors = tasks().iter().filter(|t| t.zone != cut.zone).count();
    let cut_off: Vec<u64> = tasks().iter().filter(|t| t.zone == cut.zone).map(|t| t.slot).collect();
    ok(Command::new("ip").args(["link", "set", &veth, "down"]));
    let zone = cut.zone.clone();
    let (ruler, took) = agreed(move |t| t.zone != zone, survivors, &cut_off, None, Duration::from_secs(10)).await;
    eprintln!("host-down of {}: the {survivors} survivors agreed on {ruler} {took:?} after the cut", cut.zone);
    ok(Command::new("ip").args(["link", "set", &veth, "up"]));

    drop(swarm);
    let after = snapshot();
    assert_eq!(before, after, "scripts/swarm down left something behind");
    let again = run(&mut Swarm::script(&["down"]));
    assert!(again.status.success(), "a second down is safe");
    assert!(!Path::new("/run/synclab-swarm").exists());
}
