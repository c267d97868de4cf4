//! The fault lab: short versions of the scenarios on in-process nodes (`--local`), the checkers re-run
//! on edited histories, and the `Lab` RPC attacked with absurd faults.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use synclab::proto::clock::ReadRequest;
use synclab::proto::clock::clock_client::ClockClient;
use synclab::proto::lab::lab_client::LabClient;
use synclab::proto::lab::{BumpClockRequest, LinkFault, SetLinksRequest, StrobeRequest};
use synclab_core::election::Algorithm;
use synclab_harness::cluster::LocalCluster;
use tonic::Code;

use common::lab;

fn out(tag: &str) -> PathBuf {
    common::out_dir("lab", tag)
}

fn results(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

fn history(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("history.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Runs a scenario locally and checks what every run must have: exit 0, all checkers valid, the
/// faults it promised in the history, and a report.
fn run_valid(scenario: &str, extra: &[&str], faults: &[&str]) -> PathBuf {
    let dir = out(scenario);
    let mut args = vec!["run", scenario, "--local", "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, text) = lab(&args);
    assert_eq!(code, 0, "{scenario}: {text}");
    let r = results(&dir);
    assert_eq!(r["valid"], "valid", "{scenario}: {r:#}");
    for checker in ["election-safety", "election-liveness", "highest-id"] {
        assert_eq!(r["checkers"][checker]["valid"], "valid", "{scenario}: {checker}");
    }
    let h = history(&dir);
    assert_eq!(h[0]["type"], "run");
    assert!(h.iter().any(|e| e["type"] == "election" && e["role"] == "coordinator"), "{scenario}: no coordinator observed");
    for op in faults {
        assert!(
            h.iter().any(|e| e["type"] == "fault" && e["op"] == *op && e.get("error").is_none()),
            "{scenario}: no clean {op} in the history"
        );
    }
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(report.contains("<svg") && report.contains(scenario), "{scenario}: the report has no plot");
    assert!(!report.contains("src=\"http") && !report.contains("href=\"http") && !report.contains("<script"), "the report loads nothing");
    dir
}

#[test]
fn initial_election_settles_on_the_highest_id() {
    let dir = run_valid("initial-election", &["--duration", "1s"], &[]);
    assert!(results(&dir)["checkers"]["highest-id"]["figures"]["checked"].as_u64().unwrap() >= 1);
}

#[test]
fn killing_the_coordinator_fails_over_and_it_takes_over_again() {
    let dir = run_valid("kill-coordinator", &["--duration", "2s"], &["kill", "start"]);
    let settled = results(&dir)["checkers"]["election-liveness"]["figures"]["settled"].as_u64().unwrap();
    assert!(settled >= 3, "the start, the kill and the return each settle: {settled}");
}

#[test]
fn stop_and_pause_of_the_coordinator_are_survived() {
    run_valid("stop-coordinator", &["--duration", "2s"], &["stop", "start"]);
    run_valid("pause-coordinator", &["--duration", "2s"], &["pause", "unpause"]);
}

#[test]
fn a_split_brain_heals_to_one_coordinator_with_ring_too() {
    run_valid("partition-heal", &["--duration", "2s"], &["partition", "heal"]);
    run_valid("re-election", &["--duration", "3s", "--algorithm", "ring"], &["partition", "heal"]);
}

#[test]
fn seven_nodes_survive_rounds_of_three_cut_off() {
    let dir = run_valid("many-elections", &["--duration", "4s", "--seed", "5"], &["partition", "heal"]);
    let h = history(&dir);
    assert_eq!(h[0]["nodes"].as_array().unwrap().len(), 7);
    let cuts = h.iter().filter(|e| e["op"] == "partition").count();
    assert_eq!(cuts, 2, "a round per 2 s");
}

#[test]
fn a_flaky_link_is_measured_not_judged() {
    let dir = run_valid("flaky-link", &["--duration", "4s"], &["link", "heal"]);
    let windows = results(&dir)["checkers"]["election-liveness"]["figures"]["degraded_windows"].as_array().unwrap().len();
    assert_eq!(windows, 4, "one row per loss rate");
}

/// A history's faults without their timing: what was done, to whom.
fn fault_ops(dir: &Path) -> Vec<Value> {
    history(dir)
        .into_iter()
        .filter(|e| e["type"] == "fault")
        .map(|mut e| {
            for key in ["start", "end", "error"] {
                e.as_object_mut().unwrap().remove(key);
            }
            e
        })
        .collect()
}

/// Pins that a seed fixes the nemesis whole: both runs play the same faults, as many as the plan the
/// history records and as `synclab lab plan` prints for the same inputs, whatever the runs' timing.
#[test]
fn the_nemesis_is_reproducible_from_its_seed() {
    let a = run_valid("nemesis", &["--duration", "4s", "--seed", "11"], &[]);
    let first = fault_ops(&a);
    assert!(first.len() >= 2, "{first:?}");
    let b = out("nemesis-again");
    let (code, text) = lab(&["run", "nemesis", "--local", "--duration", "4s", "--seed", "11", "--out", b.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(first, fault_ops(&b), "the same seed plays the same faults, as many of them");
    let h = history(&a);
    assert_eq!(h[1]["type"], "plan", "the plan follows the run line");
    let planned = |plan: &Value| plan["steps"].as_array().unwrap().iter().filter(|s| s["step"] == "fault").count();
    assert_eq!(planned(&h[1]), first.len(), "one fault in the history per planned fault");
    let (code, printed) = lab(&["plan", "nemesis", "--duration", "4s", "--seed", "11"]);
    assert_eq!(code, 0, "{printed}");
    let printed: Value = serde_json::from_str(&printed).unwrap();
    let mut recorded = h[1].clone();
    recorded.as_object_mut().unwrap().remove("type");
    assert_eq!(printed, recorded, "the history's plan is the one `lab plan` prints");
}

/// Pins `synclab lab plan`: the same bytes on every call, members 1..=N, and clear errors for a
/// scenario that does not exist (named) or has no plan.
#[test]
fn a_plan_prints_the_same_bytes_on_every_call() {
    let plan = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_synclab")).args(["lab", "plan"]).args(args).output().unwrap();
    let args = ["nemesis", "--seed", "3", "--duration", "10s"];
    let (a, b) = (plan(&args), plan(&args));
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout, "the same bytes twice");
    let p: Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(p["scenario"], "nemesis");
    assert_eq!(p["members"], serde_json::json!([1, 2, 3, 4, 5]), "the scenario's five nodes by default");
    assert_ne!(plan(&["nemesis", "--seed", "4", "--duration", "10s"]).stdout, a.stdout, "another seed, another nemesis");
    let seven: Value = serde_json::from_slice(&plan(&["kill-coordinator", "--nodes", "7"]).stdout).unwrap();
    assert_eq!(seven["members"].as_array().unwrap().len(), 7);

    let bad = plan(&["no-such-scenario"]);
    let text = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{text}");
    assert!(text.contains("no-such-scenario") && text.contains("synclab lab list"), "{text}");
    let clock = plan(&["cristian-clock-bump"]);
    let text = String::from_utf8_lossy(&clock.stderr);
    assert_eq!(clock.status.code(), Some(2), "{text}");
    assert!(text.contains("cristian-clock-bump is a clock scenario"), "{text}");
}

/// The plan is a pure function of its inputs: the bytes `lab plan` prints while every CPU of the machine
/// is kept busy by other threads are the bytes it prints on a quiet one.
#[test]
fn a_plan_is_the_same_bytes_on_a_loaded_machine() {
    let plan = || {
        let out = Command::new(env!("CARGO_BIN_EXE_synclab"))
            .args(["lab", "plan", "nemesis", "--seed", "11", "--duration", "60s"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let quiet = plan();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let spinners: Vec<_> = (0..cpus)
        .map(|_| {
            let stop = stop.clone();
            // Bounded: each spinner ends after 20 s even if the test never tells it to.
            std::thread::spawn(move || {
                let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && std::time::Instant::now() < end {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let loaded = plan();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    assert!(!quiet.is_empty());
    assert_eq!(quiet, loaded, "the same plan on a quiet and on a loaded machine");
}

#[test]
fn an_edited_history_is_checked_again_and_fails() {
    let dir = run_valid("initial-election", &["--duration", "1s"], &[]);
    assert_eq!(lab(&["check", dir.to_str().unwrap()]).0, 0, "an unedited history stays valid");
    // Another node claims the settled coordinator's term, while everyone can reach everyone.
    let h = history(&dir);
    let claim = h.iter().rev().find(|e| e["type"] == "election" && e["role"] == "coordinator").unwrap();
    let other = if claim["node"] == 1 { 2 } else { 1 };
    let forged = serde_json::json!({"type": "election", "time": claim["time"].as_f64().unwrap() + 0.001, "node": other,
        "role": "coordinator", "term": claim["term"], "coordinator": other});
    let mut text = std::fs::read_to_string(dir.join("history.jsonl")).unwrap();
    text.push_str(&format!("{forged}\n"));
    std::fs::write(dir.join("history.jsonl"), text).unwrap();
    let (code, printed) = lab(&["check", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{printed}");
    let r = results(&dir);
    assert_eq!(r["valid"], "invalid");
    assert_eq!(r["checkers"]["election-safety"]["valid"], "invalid");
    assert!(printed.contains("both coordinated"), "{printed}");
    // A damaged line is no result: exit 2, naming the line.
    std::fs::write(dir.join("history.jsonl"), "{\"type\":\"run\"}\n").unwrap();
    let (code, printed) = lab(&["check", dir.to_str().unwrap()]);
    assert_eq!(code, 2, "{printed}");
    assert!(printed.contains("line 1"), "{printed}");
}

#[test]
fn no_cluster_and_no_scenario_are_unknown_results() {
    let dir = out("nowhere");
    let (code, text) =
        lab(&["run", "initial-election", "--project", "synclab-no-such-project", "--no-start", "--out", dir.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("synclab-no-such-project") || text.contains("Docker"), "{text}");
    // The failed run left no empty folder behind: the same --out works again without --force.
    assert!(!dir.exists(), "{} was left behind", dir.display());
    let (code, text) =
        lab(&["run", "initial-election", "--project", "synclab-no-such-project", "--no-start", "--out", dir.to_str().unwrap()]);
    assert!(code == 2 && !text.contains("not empty"), "{text}");
    let (code, text) = lab(&["run", "no-such-scenario", "--local", "--out", dir.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("synclab lab list"), "{text}");
    let (code, text) = lab(&["list"]);
    assert_eq!(code, 0);
    assert!(text.lines().count() >= 9 && text.contains("partition-heal"), "{text}");
}

const TIMEOUT: Duration = Duration::from_secs(2);

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn pd(d: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
}

#[tokio::test]
async fn absurd_link_faults_are_refused_and_a_node_without_lab_serves_none() {
    for lab_on in [true, false] {
        let state = out(&format!("links-{lab_on}"));
        let cluster =
            LocalCluster::start_with(Algorithm::Bully, 2, ms(50), ms(200), ms(100), state, move |c| c.lab = lab_on).await.unwrap();
        let mut client = LabClient::new(synclab::rpc::channel(cluster.address(1), TIMEOUT).unwrap());
        let set = |links: Vec<LinkFault>| SetLinksRequest { links, seed: 1 };
        let fault = |peer: i64| LinkFault { peer, drop: false, delay: None, jitter: None, loss: 0.0 };
        if !lab_on {
            let e = client.set_links(set(vec![])).await.unwrap_err();
            assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
            cluster.shutdown().await;
            continue;
        }
        let cases = [
            ("loss 2", set(vec![LinkFault { loss: 2.0, ..fault(2) }])),
            ("loss NaN", set(vec![LinkFault { loss: f64::NAN, ..fault(2) }])),
            ("a negative delay", set(vec![LinkFault { delay: Some(prost_types::Duration { seconds: -1, nanos: 0 }), ..fault(2) }])),
            ("an hour's delay", set(vec![LinkFault { delay: pd(Duration::from_secs(3600)), ..fault(2) }])),
            ("peer 0", set(vec![fault(0)])),
            ("peer -5", set(vec![fault(-5)])),
            ("a thousand links", set((0..1000).map(|_| fault(2)).collect())),
        ];
        for (what, request) in cases {
            let e = client.set_links(request).await.expect_err(what);
            assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        }
        // A cut link works and heals.
        let reply = client.set_links(set(vec![LinkFault { drop: true, ..fault(2) }])).await.unwrap().into_inner();
        assert_eq!(reply.faulty, 1);
        assert_eq!(client.set_links(set(vec![])).await.unwrap().into_inner().faulty, 0);
        assert!(cluster.wait_for_agreement(&[1, 2], 2, Duration::from_secs(5)).await.is_some(), "the group still agrees");
        cluster.shutdown().await;
    }
}

#[tokio::test]
async fn clock_faults_move_the_clock_by_exactly_what_was_asked_and_no_more() {
    let clock = common::clock("time-server", 0, 0.0);
    // As the time server's main builds it with --lab: the lab's service added by the caller.
    let services = synclab::cristian::services(clock.clone(), 0, None);
    let server = synclab::daemon::with_lab(services, true, synclab::clock::ClockSet::new(vec![clock.clone()])).build().await.unwrap();
    let listener = synclab::server::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (_stop, stopped) = synclab::server::Stop::new();
    tokio::spawn(server.serve(listener, stopped));
    let mut lab = LabClient::new(synclab::rpc::channel(&addr, TIMEOUT).unwrap());
    let offset = |c: &synclab::clock::LiveClock| c.read().true_offset;

    let reply = lab.bump_clock(BumpClockRequest { clock: String::new(), by_nanos: 300_000_000_000 }).await.unwrap().into_inner();
    assert!((reply.true_offset_nanos - 300_000_000_000).abs() < 1_000_000, "{reply:?}");
    assert!((offset(&clock) - 3e11).abs() < 1e6);
    let mut read = ClockClient::new(synclab::rpc::channel(&addr, TIMEOUT).unwrap());
    let seen = read.read(ReadRequest::default()).await.unwrap().into_inner();
    assert!((seen.true_offset_nanos - 300_000_000_000).abs() < 1_000_000, "Clock/Read shows the bump");

    let refused = [
        ("two days", lab.bump_clock(BumpClockRequest { clock: String::new(), by_nanos: 2 * 86_400_000_000_000 }).await),
        ("i64::MIN", lab.bump_clock(BumpClockRequest { clock: String::new(), by_nanos: i64::MIN }).await),
        ("no such clock", lab.bump_clock(BumpClockRequest { clock: "nope".into(), by_nanos: 1 }).await),
    ];
    for (what, r) in refused {
        let e = r.unwrap_err();
        assert!(matches!(e.code(), Code::InvalidArgument | Code::NotFound), "{what}: {e:?}");
    }
    let strobe = |period: Duration, length: Duration| StrobeRequest {
        clock: String::new(),
        amplitude_nanos: 1_000_000,
        period: pd(period),
        duration: pd(length),
    };
    assert_eq!(lab.strobe(strobe(ms(1), ms(100))).await.unwrap_err().code(), Code::InvalidArgument, "a 1 ms period");
    assert_eq!(lab.strobe(strobe(ms(100), Duration::from_secs(7200))).await.unwrap_err().code(), Code::InvalidArgument, "two hours");
    let e = lab.set_drift(synclab::proto::lab::SetDriftRequest { clock: String::new(), drift_ppm: f64::INFINITY }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!((offset(&clock) - 3e11).abs() < 1e6, "refused faults moved the clock");

    // A strobe steps back and forth and leaves the clock where it found it.
    lab.strobe(strobe(ms(20), ms(200))).await.unwrap();
    tokio::time::sleep(ms(400)).await;
    assert!((offset(&clock) - 3e11).abs() < 1e6, "the strobe left the clock moved: {}", offset(&clock));
}

/// Runs a clock scenario locally: exit 0, its checker valid, its fault in the history, a plot.
fn clock_run_valid(scenario: &str, checker: &str, op: &str) -> PathBuf {
    let dir = out(scenario);
    let (code, text) = lab(&["run", scenario, "--local", "--out", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{scenario}: {text}");
    let r = results(&dir);
    assert_eq!(r["checkers"][checker]["valid"], "valid", "{scenario}: {r:#}");
    let h = history(&dir);
    assert!(h.iter().any(|e| e["type"] == "fault" && e["op"] == op && e.get("error").is_none()), "{scenario}: no clean {op}");
    assert!(std::fs::read_to_string(dir.join("report.html")).unwrap().contains("<svg"));
    dir
}

#[test]
fn a_line_bumped_by_five_minutes_is_left_out_and_pulled_back() {
    let dir = clock_run_valid("berkeley-faulty-clock", "berkeley", "bump");
    let h = history(&dir);
    let bump = h.iter().find(|e| e["op"] == "bump").unwrap();
    let victim = bump["target"].as_str().unwrap().to_uppercase();
    let first_after = h.iter().find(|e| e["type"] == "round" && e["time"].as_f64() > bump["end"].as_f64()).unwrap();
    assert!(first_after["excluded"].as_array().unwrap().iter().any(|m| *m == victim.as_str()), "{first_after}");
    assert!(h.iter().filter(|e| e["type"] == "round").count() >= 8);
}

#[test]
fn cristian_devices_recover_from_a_server_restart_and_a_clock_jump() {
    let dir = clock_run_valid("cristian-server-restart", "cristian", "start");
    assert!(history(&dir).iter().any(|e| e["type"] == "fault" && e["op"] == "stop"));
    let dir = clock_run_valid("cristian-clock-bump", "cristian", "bump");
    let recovered = results(&dir)["checkers"]["cristian"]["figures"]["recovery_seconds"].as_array().unwrap().len();
    assert_eq!(recovered, 2, "both devices checked after the bump");
}
