//! README.md cannot drift: every shell line of it (the fenced `sh`/`bash` blocks, and the `$ ` lines of
//! `console` transcripts) is either run here, or listed below with the reason it is not, and a line
//! that is neither fails the test, as does a listed line README no longer has. Every line must also work
//! with whichever compose tool the machine has: compose goes through `scripts/compose`, never the
//! `docker compose` plugin or `docker-compose` directly.

use std::path::Path;
use std::process::Command;

/// How a README line is checked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    /// Run here with the built binaries first on the PATH; it must exit 0.
    Run,
    /// Not run here, for this reason.
    Listed(&'static str),
}

use Check::{Listed, Run};

const STACK: &str = "needs the compose stack (tests/compose.rs runs the stack; this line is not run)";
const INSTALLS: &str = "installs into the user's cargo bin folder; not on a shared machine";
const WHOLE_SUITE: &str = "the whole suite (it runs this test)";
const REGISTRY: &str = "needs rust:1.95-bookworm from a registry";
const CLUSTER: &str = "needs a Kubernetes cluster (tests/k8s.rs checks the manifests and the binary with their environment)";
const SWARM: &str = "needs root and a multi-node swarm; tests/swarm.rs builds one with scripts/swarm and runs the same steps";
const NTS: &str = "fixed loopback ports and a certs/ folder; tests/nts.rs runs the same server, client and chronyd with their own";
const FIXED_PORTS: &str = "fixed loopback ports a parallel test could hold; tests/cli.rs and tests/ntp.rs cover the same commands";

/// Every shell line of README.md, normalized (continuations joined, trailing comments dropped).
const LINES: &[(&str, Check)] = &[
    ("scripts/compose up -d", Listed(STACK)),
    ("scripts/compose ps", Listed(STACK)),
    ("scripts/compose install-cli", Listed(INSTALLS)),
    ("scripts/compose logs -f laptop", Listed(STACK)),
    ("scripts/test", Listed(WHOLE_SUITE)),
    ("SYNCLAB_BUILD=registry scripts/compose up --build", Listed(REGISTRY)),
    ("synclab cristian --server localhost:50051 --device laptop --samples 8 --clock-offset=-2s", Listed(STACK)),
    ("synclab cristian --device mobile=+3s/40 --device laptop=-2s/-25", Listed(STACK)),
    ("scripts/compose exec -T berkeley-master synclab berkeley status --master 127.0.0.1:50052", Listed(STACK)),
    (
        "synclab berkeley watch --master localhost:50052 --member KMC=localhost:50053 --member MIT=localhost:50054 --member TAPMI=localhost:50055 --member SOLS=localhost:50056",
        Listed(STACK),
    ),
    ("grpcurl -plaintext localhost:50052 synclab.berkeley.v1.BerkeleyMaster/Status", Listed(STACK)),
    ("grpcurl -plaintext localhost:50052 synclab.berkeley.v1.BerkeleyMaster/WatchRounds", Listed(STACK)),
    ("grpcurl -plaintext -d '{}' localhost:50054 synclab.clock.v1.Clock/Read", Listed(STACK)),
    ("COMPOSE_FILE=docker-compose.yml:docker-compose.ring.yml scripts/compose up -d node-1 node-2 node-3 node-4 node-5", Listed(STACK)),
    ("scripts/compose up -d node-1 node-2 node-3 node-4 node-5", Listed(STACK)),
    ("synclab election watch", Listed(STACK)),
    (
        "scripts/compose exec -T node-1 synclab election status --nodes node-1:50054,node-2:50054,node-3:50054,node-4:50054,node-5:50054",
        Listed(STACK),
    ),
    ("grpcurl -plaintext localhost:50075 synclab.election.v1.ElectionService/GetState", Listed(STACK)),
    ("grpcurl -plaintext localhost:50071 synclab.election.v1.ElectionService/WatchLeader", Listed(STACK)),
    ("grpcurl -plaintext -d '{\"from\": 9, \"term\": 1}' localhost:50071 synclab.election.v1.ElectionService/Alive", Listed(STACK)),
    ("grpcurl -plaintext localhost:50051 list", Listed(STACK)),
    ("grpcurl -plaintext localhost:50051 describe synclab.time.v1.TimeService", Listed(STACK)),
    ("grpcurl -plaintext localhost:50051 describe synclab.time.v1.GetTimeResponse", Listed(STACK)),
    ("grpcurl -plaintext -d '{}' localhost:50051 synclab.time.v1.TimeService/GetTime", Listed(STACK)),
    ("grpcurl -plaintext localhost:50051 grpc.health.v1.Health/Check", Listed(STACK)),
    ("grpcurl -plaintext -d '{}' localhost:50062 synclab.clock.v1.Clock/Read", Listed(STACK)),
    ("SYNCLAB_TLS=1 scripts/compose up", Listed(STACK)),
    ("grpcurl -cacert certs/ca.pem -cert certs/observer.pem -key certs/observer.key localhost:50051 list", Listed(STACK)),
    ("synclab election status --tls-ca certs/ca.pem --tls-cert certs/observer.pem --tls-key certs/observer.key", Listed(STACK)),
    ("curl --cacert certs/ca.pem https://localhost:8080/state.json", Listed(STACK)),
    ("curl --cacert certs/ca.pem --cert certs/prometheus.pem --key certs/prometheus.key https://localhost:9101/metrics", Listed(STACK)),
    (
        "cat certs/ca.pem new/ca.pem > bundle.pem && mv bundle.pem certs/ca.pem",
        Listed("replaces the stack's CA file; tests/rotation.rs rotates the CA through a bundle the same way"),
    ),
    ("SYNCLAB_LAB=1 scripts/compose up -d", Listed(STACK)),
    ("synclab lab list", Run),
    ("synclab lab run partition-heal --out runs/partition-heal --seed 7", Listed(STACK)),
    ("synclab lab check runs/partition-heal", Listed("needs the run above")),
    ("synclab lab plan nemesis --seed 3 --duration 60s", Run),
    ("scripts/compose stop time-server", Listed(STACK)),
    ("scripts/compose start time-server", Listed(STACK)),
    ("scripts/compose down", Listed(STACK)),
    ("time-server --listen 127.0.0.1:41053 --ntp-listen 127.0.0.1:41125 --clock-offset +1.5s &", Listed(FIXED_PORTS)),
    ("synclab cristian --protocol ntp --server 127.0.0.1:41125 --device laptop=-1.7s/-30", Listed(FIXED_PORTS)),
    (
        "time-server --listen 127.0.0.1:41153 --ntp-listen 127.0.0.1:41126 --nts-ke-listen 127.0.0.1:44460 --ntp-require-nts --tls-ca certs/ca.pem --tls-cert certs/time-server.pem --tls-key certs/time-server.key --clock-offset +1.5s &",
        Listed(NTS),
    ),
    ("synclab cristian --protocol ntp --nts --nts-ke 127.0.0.1:44460 --nts-ca certs/ca.pem --device laptop=-1.7s/-30", Listed(NTS)),
    ("synclab cristian --protocol ntp --server 127.0.0.1:41126 --timeout 200ms", Listed(NTS)),
    ("synclab cristian --protocol ntp --nts --nts-ke 127.0.0.1:44460 --nts-ca other-ca/ca.pem", Listed(NTS)),
    ("chronyd -Q -f q.conf", Listed("needs Debian's chrony and a q.conf; tests/ntp.rs runs chrony against the server")),
    ("time-server --listen 127.0.0.1:45551 --metrics-listen 127.0.0.1:45552 --clock-offset +1s &", Listed(FIXED_PORTS)),
    ("synclab clock --addr 127.0.0.1:45551 >/dev/null; curl -s 127.0.0.1:45552/metrics", Listed(FIXED_PORTS)),
    ("scripts/observe", Listed(STACK)),
    (
        "curl -s 'http://127.0.0.1:PORT/api/v1/query' --data-urlencode 'query=sum(synclab_election_is_coordinator)'",
        Listed("PORT is what scripts/observe printed"),
    ),
    ("scripts/build-images", Listed("builds the image (minutes); scripts/compose up runs it, tests/compose.rs too")),
    ("kind load docker-image synclab:latest", Listed(CLUSTER)),
    ("kubectl apply -k deploy/k8s", Listed(CLUSTER)),
    ("kubectl -n synclab get pods", Listed(CLUSTER)),
    ("kubectl -n synclab port-forward pod/election-4 50054:50054 &", Listed(CLUSTER)),
    ("synclab election status --nodes 127.0.0.1:50054", Listed(CLUSTER)),
    (
        "synclab certs --out deploy/k8s/overlays/mtls/certs",
        Listed("writes into the checkout's deploy/ folder; tests/tls.rs makes certificates the same way"),
    ),
    ("kubectl apply -k deploy/k8s/overlays/mtls", Listed(CLUSTER)),
    ("SYNCLAB_IMAGE=synclab:latest scripts/build-images", Listed(STACK)),
    ("SYNCLAB_LAB=1 scripts/swarm up --nodes 3", Listed(SWARM)),
    ("docker stack ps synclab", Listed(SWARM)),
    ("synclab lab run kill-coordinator --swarm --out runs/swarm-kill", Listed(SWARM)),
    ("synclab lab run host-down --swarm --out runs/host-down", Listed(SWARM)),
    ("synclab lab run host-freeze --swarm --out runs/host-freeze", Listed(SWARM)),
    ("synclab lab sweep --swarm --scenario kill-coordinator --algorithm bully --seeds 1-20 --out runs/swarm-sweep", Listed(SWARM)),
    ("docker service scale synclab_election=7", Listed(SWARM)),
    ("scripts/swarm down", Listed(SWARM)),
];

/// The shell lines of a Markdown text, in order.
fn shell_lines(markdown: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut block: Option<String> = None;
    let mut continued = String::new();
    for raw in markdown.lines() {
        let trimmed = raw.trim();
        if let Some(fence) = trimmed.strip_prefix("```") {
            block = if block.is_some() { None } else { Some(fence.trim().to_string()) };
            continue;
        }
        let line = match block.as_deref() {
            Some("sh" | "bash" | "shell") => trimmed,
            Some("console") => match trimmed.strip_prefix("$ ") {
                Some(command) => command,
                None => continue,
            },
            _ => continue,
        };
        let mut line = if continued.is_empty() { line.to_string() } else { format!("{continued} {line}") };
        continued.clear();
        if let Some(head) = line.strip_suffix('\\') {
            continued = head.trim().to_string();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        // A trailing comment (two spaces or more, then #).
        if let Some(at) = line.find("  #").or_else(|| line.find(" # ")) {
            line.truncate(at);
        }
        let line = line.trim().to_string();
        if !line.is_empty() {
            lines.push(line);
        }
    }
    lines
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

#[test]
fn every_readme_shell_line_is_run_or_listed_with_a_reason() {
    let lines = shell_lines(&readme());
    assert!(lines.len() > 20, "README's shell blocks were not found: {lines:?}");
    let unclassified: Vec<&String> = lines.iter().filter(|l| !LINES.iter().any(|(known, _)| known == l)).collect();
    assert!(
        unclassified.is_empty(),
        "README lines neither run nor listed in tests/readme.rs (add each, run or with a reason): {unclassified:#?}"
    );
    let stale: Vec<&str> = LINES.iter().map(|(l, _)| *l).filter(|known| !lines.iter().any(|l| l == known)).collect();
    assert!(stale.is_empty(), "lines listed in tests/readme.rs that README no longer has: {stale:#?}");
    // Whichever compose tool the machine has: only through scripts/compose.
    for line in &lines {
        assert!(!line.contains("docker compose") && !line.contains("docker-compose "), "calls a compose tool directly: {line}");
    }
}

#[test]
fn the_readme_lines_that_run_here_work() {
    let bin = Path::new(env!("CARGO_BIN_EXE_synclab")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let dir = std::env::temp_dir().join(format!("synclab-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let readme = shell_lines(&readme());
    for (line, check) in LINES {
        if *check != Run {
            continue;
        }
        assert!(readme.iter().any(|l| l == line), "{line} is no longer in README");
        let out = Command::new("bash").args(["-c", line]).env("PATH", &path).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "{line}: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        assert!(!out.stdout.is_empty(), "{line} printed nothing");
    }
}

#[test]
fn the_line_reader_finds_what_it_must() {
    // A checker is tested with input that must make it fail: a plugin call, a continuation, a comment.
    let text = "```sh\ndocker compose exec x \\\n    synclab y   # note\n# a comment\n```\n```\nnot shell\n```\n```console\n$ synclab z\noutput\n```\n";
    assert_eq!(shell_lines(text), ["docker compose exec x synclab y", "synclab z"]);
}
