//! The fault lab's simulator (`synclab lab run --sim`): the same inputs give the same history bytes,
//! the scenarios pass the same checkers at sizes the real backends cannot reach cheaply, and the
//! command's errors are the lab's.

mod common;

use std::path::{Path, PathBuf};

use common::lab;
use serde_json::Value;

fn out(tag: &str) -> PathBuf {
    common::out_dir("sim", tag)
}

fn sim_run(scenario: &str, dir: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["run", scenario, "--sim", "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    lab(&args)
}

fn results(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

/// Pins the simulator's promise: the same (scenario, seed, n, algorithm, duration) gives a
/// byte-identical history, run after run; and the seed matters (another seed, other bytes), so the
/// comparison can fail.
#[test]
fn the_same_inputs_give_byte_identical_histories() {
    for algorithm in ["bully", "ring"] {
        let run = |tag: &str, seed: &str| {
            let dir = out(&format!("det-{algorithm}-{tag}"));
            let (code, text) = sim_run("nemesis", &dir, &["--seed", seed, "--nodes", "7", "--duration", "20s", "--algorithm", algorithm]);
            assert_eq!(code, 0, "{text}");
            let bytes = std::fs::read(dir.join("history.jsonl")).unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            bytes
        };
        let a = run("a", "11");
        let b = run("b", "11");
        assert!(a.len() > 10_000, "{algorithm}: a real history ({} bytes)", a.len());
        assert!(a == b, "{algorithm}: the same seed gave different histories");
        assert!(run("c", "12") != a, "{algorithm}: another seed gave the same history");
    }
}

/// Pins that the lab's scenarios pass every checker in the simulator, Bully and Ring, on a small and a
/// large group, and that the run is recorded as the simulator's.
#[test]
fn the_scenarios_pass_their_checkers_in_the_simulator() {
    let scenarios =
        ["kill-coordinator", "stop-coordinator", "pause-coordinator", "partition-heal", "flaky-link", "steady-loss", "re-election"];
    for algorithm in ["bully", "ring"] {
        for n in ["3", "20"] {
            for scenario in scenarios {
                let dir = out(&format!("{scenario}-{algorithm}-{n}"));
                let (code, text) = sim_run(scenario, &dir, &["--nodes", n, "--algorithm", algorithm, "--duration", "4s"]);
                assert_eq!(code, 0, "{scenario} {algorithm} n={n}: {text}");
                let r = results(&dir);
                for checker in ["election-safety", "election-liveness", "highest-id"] {
                    assert_eq!(r["checkers"][checker]["valid"], "valid", "{scenario} {algorithm} n={n}: {checker}");
                }
                let first = std::fs::read_to_string(dir.join("history.jsonl")).unwrap();
                let run: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
                assert_eq!((run["backend"].as_str(), run["nodes"].as_array().map(Vec::len)), (Some("sim"), Some(n.parse().unwrap())));
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
}

/// Pins that a clock scenario is refused by the simulator with the lab's "unknown" exit code and a
/// reason, not run on something else.
#[test]
fn a_clock_scenario_is_refused_by_the_simulator() {
    let dir = out("clock");
    let (code, text) = sim_run("cristian-clock-bump", &dir, &[]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("simulator runs election scenarios only"), "{text}");
}
