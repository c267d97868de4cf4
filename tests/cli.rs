//! The binaries as users run them: flags, errors, output, signals.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::free_port;

const SYNCLAB: &str = env!("CARGO_BIN_EXE_synclab");
const TIME_SERVER: &str = env!("CARGO_BIN_EXE_time-server");

fn synclab(args: &[&str]) -> Output {
    Command::new(SYNCLAB).args(args).env_remove("RUST_LOG").output().unwrap()
}

/// A child process killed when dropped (if still running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_healthy(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if synclab(&["healthcheck", "--addr", addr, "--timeout", "200ms"]).status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{addr} never became healthy");
}

fn start_time_server() -> (Running, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(TIME_SERVER).args(["--listen", &addr]).stderr(Stdio::null()).spawn().unwrap();
    let running = Running(child);
    wait_healthy(&addr);
    (running, addr)
}

fn sigterm(child: &Child) {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_flags_are_errors_that_name_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["cristian", "--clock-offset", "abc"], "--clock-offset"),
        (&["cristian", "--clock-offset", "5"], "--clock-offset"),
        (&["cristian", "--clock-drift-ppm", "1e9"], "--clock-drift-ppm"),
        (&["cristian", "--samples", "0"], "--samples"),
        (&["cristian", "--timeout", "-1s"], "--timeout"),
        (&["cristian", "--device", "a b"], "--device"),
        (&["cristian", "--device", "x=+1q"], "--device"),
        (&["cristian", "--listen", "127.0.0.1:0"], "--interval"),
        (&["cristian", "--max-slew-ppm", "0"], "--max-slew-ppm"),
        (&["cristian", "--tls-reload-interval=-1s"], "--tls-reload-interval"),
        (&["dashboard", "--tls-reload-interval", "soon"], "--tls-reload-interval"),
    ];
    for (args, flag) in cases {
        let out = synclab(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?} should name {flag}: {stderr}");
    }
    // What was given is quoted, not what the parser made of it.
    let out = synclab(&["cristian", "--device", "laptop=abc"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'abc' is not a number") && !stderr.contains("''"), "{stderr}");
    let out = Command::new(TIME_SERVER).args(["--clock-offset", "+2.5 parsecs"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clock-offset"));
    // Every service takes the reload interval, from its flag or its environment variable, and names it.
    let out = Command::new(TIME_SERVER).env("SYNCLAB_TLS_RELOAD_INTERVAL", "often").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-reload-interval"));
    let help = Command::new(TIME_SERVER).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--tls-reload-interval") && help.contains("SIGHUP"), "{help}");
    let out = synclab(&["cristian", "--server", "localhost:1", "--device", "a", "--device", "a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'a' is named twice"));
}

#[test]
fn the_env_fallbacks_configure_the_clock() {
    let out = Command::new(SYNCLAB).args(["cristian"]).env("SYNCLAB_CLOCK_OFFSET", "nonsense").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clock-offset"));
}

#[test]
fn an_unreachable_server_fails_fast_with_a_message() {
    let addr = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = synclab(&["cristian", "--server", &addr, "--timeout", "300ms"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach") && stderr.contains(&addr), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(synclab(&["healthcheck", "--addr", &addr, "--timeout", "300ms"]).status.code(), Some(1));
}

#[test]
fn phone_and_laptop_sync_at_once_and_report_json() {
    let (_server, addr) = start_time_server();
    let out = synclab(&["cristian", "--server", &addr, "--device", "mobile=+3s/40", "--device", "laptop=-2s/-25", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let mut bounds = 0.0;
    for (line, (device, before)) in lines.iter().zip([("mobile", 3e6), ("laptop", -2e6)]) {
        assert_eq!(line["device"], device);
        for key in ["server_time", "rtt_us", "offset_us", "error_bound_us", "true_error_us", "synced_time"] {
            assert!(!line[key].is_null(), "{key} missing from {line}");
        }
        assert!((line["true_offset_before_us"].as_f64().unwrap() - before).abs() < 1e4, "{line}");
        let (err, bound) = (line["true_error_us"].as_f64().unwrap(), line["error_bound_us"].as_f64().unwrap());
        assert!(err.abs() <= bound + 1.0, "{line}");
        bounds += bound;
    }
    assert!(lines[2]["disagreement_us"].as_f64().unwrap() <= bounds + 2.0, "{lines:?}");
}

#[test]
fn the_human_summary_shows_what_a_user_wants_to_see() {
    let (_server, addr) = start_time_server();
    let out = synclab(&["cristian", "--server", &addr, "--device", "laptop", "--clock-offset", "-300ms", "--samples", "3"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "laptop: synced with time-server",
        "server time",
        "round trip",
        "offset",
        "error bound   ±",
        "synced time",
        "true error",
        "was -300.000ms",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn time_server_stops_cleanly_on_sigterm() {
    let (mut server, addr) = start_time_server();
    sigterm(&server.0);
    let status = wait_exit(&mut server.0, Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    assert!(!synclab(&["healthcheck", "--addr", &addr, "--timeout", "200ms"]).status.success());
}

#[test]
fn a_syncing_client_serves_its_clock_and_stops_on_sigterm() {
    let (_server, addr) = start_time_server();
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new(SYNCLAB)
        .args(["cristian", "--server", &addr, "--device", "laptop", "--interval", "100ms", "--listen", &listen])
        .env("SYNCLAB_CLOCK_OFFSET", "-1.7s")
        .env("SYNCLAB_CLOCK_DRIFT_PPM", "-30")
        .env("SYNCLAB_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = Running(child);
    wait_healthy(&listen); // SERVING only after the first sync
    let out = synclab(&["clock", "--addr", &listen, "--json"]);
    assert!(out.status.success());
    let reading: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reading["clock"], "laptop");
    assert_eq!(reading["drift_ppm"], -30.0);
    assert!(reading["steps"].as_u64().unwrap() >= 1, "{reading}");
    assert!(reading["true_offset_us"].as_f64().unwrap().abs() < 2_000.0, "{reading}");

    sigterm(&client.0);
    let status = wait_exit(&mut client.0, Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(client.0.stderr.as_mut().unwrap(), &mut logs).unwrap();
    let first: serde_json::Value = serde_json::from_str(logs.lines().find(|l| l.contains("\"synced\"")).unwrap()).unwrap();
    assert_eq!(first["device"], "laptop");
    assert!(first["true_error_us"].is_number(), "{first}");
}

#[test]
fn a_client_started_before_its_server_syncs_as_soon_as_the_server_is_up() {
    let server_addr = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new(SYNCLAB)
        .args(["cristian", "--server", &server_addr, "--device", "mobile", "--interval", "30s", "--timeout", "200ms", "--listen", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _client = Running(child);
    std::thread::sleep(Duration::from_millis(500));
    // Not synced yet, so not healthy.
    assert!(!synclab(&["healthcheck", "--addr", &listen, "--timeout", "200ms"]).status.success());
    let server = Running(Command::new(TIME_SERVER).args(["--listen", &server_addr]).stderr(Stdio::null()).spawn().unwrap());
    let started = Instant::now();
    wait_healthy(&listen);
    // Retries back off from 100 ms, never waiting the whole 30 s interval.
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    drop(server);
}

const ELECTION_NODE: &str = env!("CARGO_BIN_EXE_election-node");

fn election_node(args: &[&str]) -> Output {
    Command::new(ELECTION_NODE).args(args).env_remove("RUST_LOG").output().unwrap()
}

#[test]
fn election_node_refuses_bad_flags_by_name() {
    let peers = "1=127.0.0.1:1,2=127.0.0.1:2";
    let cases: &[(&[&str], &str)] = &[
        (&["--id", "-3", "--peers", peers], "node id -3 is not positive"),
        (&["--id", "0", "--peers", peers], "node id 0 is not positive"),
        (&["--id", "x", "--peers", peers], "'--id"),
        (&["--id", "3", "--peers", peers], "this node's id 3 is not in the group"),
        (&["--id", "1", "--peers", "1=a:1,2"], "'2' is not ID=HOST:PORT"),
        (&["--id", "1", "--peers", "1=a:1,1=b:2"], "node 1 is listed twice"),
        (&["--id", "1", "--peers", "1=a:1,-2=b:2"], "node id -2 is not positive"),
        (&["--id", "1", "--peers", "1=a:1,2=nohost"], "HOST:PORT"),
        (&["--id", "1", "--peers", peers, "--rpc-timeout", "300ms"], "--rpc-timeout"),
        (&["--id", "1", "--peers", peers, "--heartbeat", "200ms"], "--heartbeat 200ms and --timeout 200ms"),
        (&["--id", "1", "--peers", peers, "--timeout", "40ms"], "--heartbeat 50ms and --timeout 40ms"),
        (&["--id", "1", "--peers", peers, "--detector", "psychic"], "'--detector"),
        (&["--id", "1", "--peers", peers, "--algorithm", "paxos"], "'--algorithm"),
        (&["--id", "1", "--discover", "tasks.election:50054", "--forget-after=-1s"], "'--forget-after"),
        (&["--id", "1", "--discover", "tasks.election:50054", "--forget-after", "soon"], "'--forget-after"),
    ];
    for (args, want) in cases {
        let out = election_node(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: expected '{want}' in:\n{err}");
        assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    }
}

#[test]
fn election_node_keeps_its_term_and_refuses_a_damaged_state_file() {
    let dir = std::env::temp_dir().join(format!("synclab-cli-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let peers = format!("1={addr},2=127.0.0.1:{}", free_port());
    let run = |dir: &std::path::Path| {
        Command::new(ELECTION_NODE)
            .args(["--id", "1", "--listen", &addr, "--peers", &peers, "--state-dir", dir.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Alone (node 2 is down), node 1 wins; SIGTERM stops it cleanly and its term is on disk.
    let mut child = run(&dir);
    let term_file = dir.join("election-node-1.json");
    // The file is written at start (term 0, proving it can be) and again when the node claims a term.
    let deadline = Instant::now() + Duration::from_secs(10);
    let read = || -> Option<serde_json::Value> { serde_json::from_str(&std::fs::read_to_string(&term_file).ok()?).ok() };
    while read().is_none_or(|s| s["term"].as_u64() == Some(0)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let saved = read().expect("no state file");
    assert_eq!(saved["id"], 1);
    let first = saved["term"].as_u64().unwrap();
    assert!(first > 0, "{saved}");
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(5)).success());

    // Again: a higher term.
    let mut child = run(&dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut term = first;
    while term == first && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&term_file).unwrap()).unwrap_or_default();
        term = saved["term"].as_u64().unwrap_or(first);
    }
    assert!(term > first, "restarted node claimed {term} after {first}");
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(5)).success());

    // A damaged file stops the node with a clear error: starting from 0 could claim a term twice.
    std::fs::write(&term_file, "{\"id\":1,").unwrap();
    let out = run(&dir).wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("election-node-1.json") && err.contains("not JSON"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Process CPU time (user + system) of `pid`, from /proc at the system's tick rate.
fn cpu_time(pid: u32) -> Duration {
    Duration::from_secs_f64(synclab_harness::cpu::process_cpu_seconds(pid).expect("the node's CPU time"))
}

#[test]
fn an_idle_election_node_does_not_spin() {
    let addr = format!("127.0.0.1:{}", free_port());
    let peers = format!("1={addr},2=127.0.0.1:{}", free_port());
    let child =
        Command::new(ELECTION_NODE).args(["--id", "1", "--listen", &addr, "--peers", &peers]).stderr(Stdio::null()).spawn().unwrap();
    let running = Running(child);
    wait_healthy(&addr);
    let before = cpu_time(running.0.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(running.0.id()) - before;
    // A coordinator alone heartbeats one dead peer every 50 ms: a few ms of CPU a second, not a core.
    assert!(used < Duration::from_millis(500), "the node used {used:?} of CPU in 2 s");
}

/// Certificates from `synclab certs` for `names`, in a fresh folder.
fn certs(tag: &str, names: &[&str]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("synclab-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut args = vec!["certs", "--out", dir.to_str().unwrap()];
    args.extend(names);
    let out = synclab(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn tls_flags(dir: &std::path::Path, name: &str) -> Vec<String> {
    let file = |f: String| dir.join(f).to_str().unwrap().to_string();
    vec![
        "--tls-ca".into(),
        file("ca.pem".into()),
        "--tls-cert".into(),
        file(format!("{name}.pem")),
        "--tls-key".into(),
        file(format!("{name}.key")),
    ]
}

fn synclab_owned(args: &[String]) -> Output {
    Command::new(SYNCLAB).args(args).env_remove("RUST_LOG").output().unwrap()
}

#[test]
fn a_plaintext_client_meeting_a_tls_server_says_so_and_names_the_flags() {
    let dir = certs("mismatch", &["time-server", "observer"]);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--listen".to_string(), addr.clone()];
    args.extend(tls_flags(&dir, "time-server"));
    let _server = Running(Command::new(TIME_SERVER).args(&args).stderr(Stdio::null()).spawn().unwrap());
    let observer = tls_flags(&dir, "observer");
    let mut health = vec!["healthcheck".to_string(), "--addr".into(), addr.clone(), "--timeout".into(), "200ms".into()];
    health.extend(observer);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !synclab_owned(&health).status.success() {
        assert!(Instant::now() < deadline, "the TLS time server never became healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each status command, three times (the failure was a race between the server's close and the client's write).
    let commands: [&[&str]; 4] = [
        &["election", "status", "--nodes", &addr],
        &["berkeley", "status", "--master", &addr],
        &["clock", "--addr", &addr],
        &["healthcheck", "--addr", &addr],
    ];
    for command in commands {
        for _ in 0..3 {
            let out = synclab(command);
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert_eq!(out.status.signal(), None, "{command:?} died of a signal: {text}");
            assert!(!out.status.success(), "{command:?}: {text}");
            assert!(
                text.contains("--tls-ca") && text.contains("--tls-cert") && text.contains("--tls-key") && text.contains("SYNCLAB_TLS_CA"),
                "{command:?} does not name the TLS flags: {text}"
            );
        }
    }
}

#[test]
fn a_tls_client_meeting_a_plaintext_server_says_so() {
    let dir = certs("mismatch-reverse", &["observer"]);
    let (_server, addr) = start_time_server();
    let mut args = vec!["clock".to_string(), "--addr".into(), addr.clone()];
    args.extend(tls_flags(&dir, "observer"));
    let out = synclab_owned(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "{stderr}");
    assert!(!out.status.success() && stderr.contains("did not answer TLS") && stderr.contains("leave out --tls-ca"), "{stderr}");
}

#[test]
fn a_closed_stdout_ends_the_cli_quietly_not_by_sigpipe() {
    let dir = std::env::temp_dir().join(format!("synclab-cli-stdout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(SYNCLAB)
        .args(["certs", "--out", dir.to_str().unwrap(), "a", "b", "c"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the first line is written, as `synclab ... | head -0` does.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), None, "killed by a signal");
    assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_lab_run_refuses_a_folder_with_files_unless_forced() {
    let dir = std::env::temp_dir().join(format!("synclab-cli-lab-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("history.jsonl"), "an earlier run\n").unwrap();
    let out = synclab(&["lab", "run", "kill-coordinator", "--local", "--duration", "1s", "--out", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not empty") && stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(dir.join("history.jsonl")).unwrap(), "an earlier run\n", "the earlier run was touched");
}
