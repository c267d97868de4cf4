//! Spawned binaries under attack: one process ([`Process`]: stderr lines, health, exit time after
//! SIGTERM), a group of election nodes, and a watch that counts the elections an attack provokes.

use std::collections::VecDeque;
use std::io::{self, BufRead};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use synclab::proto::election as election_pb;

use super::grpc::Conn;
use super::probes::health;
use super::services::{Empty, SERVING, path};

/// A port on 127.0.0.1 nothing listens on right now.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A spawned binary serving on `addr`; its stderr is read on a thread (lines counted, the last 20
/// kept). Killed when dropped, if still running.
pub struct Process {
    pub child: Child,
    pub addr: String,
    lines: Arc<AtomicUsize>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Process {
    /// Starts `program` with `args`; it is to serve on `addr`.
    pub fn spawn(program: &str, args: &[String], addr: &str) -> io::Result<Process> {
        let mut child = Command::new(program)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let lines = Arc::new(AtomicUsize::new(0));
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let (lines, tail) = (lines.clone(), tail.clone());
            std::thread::spawn(move || {
                for line in io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    lines.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == 20 {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            });
        }
        Ok(Process { child, addr: addr.to_string(), lines, tail })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines written to stderr so far.
    pub fn stderr_lines(&self) -> usize {
        self.lines.load(Ordering::Relaxed)
    }

    /// The last lines of stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default()
    }

    /// Waits until the process answers health checks with SERVING (or any answer, if `any`), at most
    /// `within`.
    pub async fn wait_ready(&mut self, any: bool, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {:?}", self.stderr_tail()));
            }
            match health(&self.addr, Duration::from_millis(300)).await {
                Ok(SERVING) => return Ok(()),
                Ok(_) if any => return Ok(()),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(format!("not serving within {within:?}: {:?}", self.stderr_tail()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) -> io::Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status()?;
        if status.success() { Ok(()) } else { Err(io::Error::other(format!("kill -TERM {} failed", self.pid()))) }
    }

    /// Waits for the process to exit, at most `within`; how long it took, or `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(started.elapsed());
            }
            if started.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends SIGTERM and waits for the exit, at most `within` (then kills it): the time to exit, or
    /// `None` if it had to be killed.
    pub fn terminate(&mut self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        if self.sigterm().is_err() {
            return None;
        }
        let exited = self.wait_exit(within).map(|_| started.elapsed());
        if exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        exited
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Five (or `n`) election-node processes on loopback, ids 1..=n.
pub struct ElectionGroup {
    pub nodes: Vec<Process>,
    pub addrs: Vec<String>,
    pub state_dir: std::path::PathBuf,
}

impl ElectionGroup {
    /// Starts `n` nodes of `binary` running `algorithm` ("bully" or "ring") with the default timers
    /// (heartbeat 50 ms, timeout 200 ms), each keeping its term in `state_dir` (emptied first).
    pub async fn start(binary: &str, n: usize, algorithm: &str, state_dir: std::path::PathBuf) -> Result<ElectionGroup, String> {
        Self::start_with(binary, n, algorithm, state_dir, &[]).await
    }

    /// As [`ElectionGroup::start`], with `extra` flags for every node (e.g. other timers, a log level).
    pub async fn start_with(
        binary: &str,
        n: usize,
        algorithm: &str,
        state_dir: std::path::PathBuf,
        extra: &[&str],
    ) -> Result<ElectionGroup, String> {
        let _ = std::fs::remove_dir_all(&state_dir);
        std::fs::create_dir_all(&state_dir).map_err(|e| e.to_string())?;
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            addrs.push(format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?));
        }
        let peers = addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
        let mut nodes = Vec::with_capacity(n);
        for (i, addr) in addrs.iter().enumerate() {
            let args: Vec<String> = [
                "--id",
                &(i + 1).to_string(),
                "--listen",
                addr,
                "--peers",
                &peers,
                "--algorithm",
                algorithm,
                "--state-dir",
                &state_dir.to_string_lossy(),
            ]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
            nodes.push(Process::spawn(binary, &args, addr).map_err(|e| e.to_string())?);
        }
        for node in &mut nodes {
            node.wait_ready(false, Duration::from_secs(10)).await?;
        }
        Ok(ElectionGroup { nodes, addrs, state_dir })
    }

    /// Every node's state (`None` for a node that did not answer within `within`).
    pub async fn states(&self, within: Duration) -> Vec<Option<election_pb::NodeState>> {
        let calls = self.addrs.iter().map(|addr| async move {
            let conn = Conn::connect(addr, within).await.ok()?;
            conn.call::<election_pb::NodeState>(path::GET_STATE, &Empty {}, within).await.ok()
        });
        futures::future::join_all(calls).await
    }

    /// Waits until every node follows one coordinator that rules, all in one term: that coordinator
    /// and term, or `None` after `within`.
    pub async fn wait_agreement(&self, within: Duration) -> Option<(i64, u64)> {
        let deadline = Instant::now() + within;
        loop {
            let states: Option<Vec<_>> = self.states(Duration::from_millis(300)).await.into_iter().collect();
            if let Some(states) = states
                && let Some((c, t)) = synclab::election::agreement(&states)
            {
                return Some((c as i64, t));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ElectionGroup {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// Watches a group's elections during an attack: polls every node's state every 10 ms and counts the
/// elections nodes began (a node's last election changed) and the highest term seen.
pub struct ElectionWatch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<ElectionCount>,
}

/// What an [`ElectionWatch`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElectionCount {
    /// Elections begun, summed over the nodes (each node's `last_election.started` seen to change).
    pub begun: u64,
    /// The highest term any node reported.
    pub max_term: u64,
    /// Times a node was seen as coordinator in a term that was not the group's term at the start.
    pub new_coordinators: u64,
}

impl ElectionWatch {
    pub fn start(addrs: Vec<String>) -> ElectionWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let within = Duration::from_millis(300);
                let mut conns: Vec<Option<Conn>> = Vec::new();
                for a in &addrs {
                    conns.push(Conn::connect(a, within).await.ok());
                }
                let mut last: Vec<Option<(i64, i32)>> = vec![None; addrs.len()];
                let mut first = true;
                let mut count = ElectionCount::default();
                let mut rulers = std::collections::BTreeSet::new();
                loop {
                    let done = stop.load(Ordering::Relaxed);
                    for (i, conn) in conns.iter_mut().enumerate() {
                        if conn.as_ref().is_none_or(|c| c.is_closed()) {
                            *conn = Conn::connect(&addrs[i], within).await.ok();
                        }
                        let Some(c) = conn else { continue };
                        let Ok(state) = c.call::<election_pb::NodeState>(path::GET_STATE, &Empty {}, within).await else { continue };
                        count.max_term = count.max_term.max(state.term);
                        let started = state.last_election.and_then(|e| e.started).map(|t| (t.seconds, t.nanos));
                        if !first && started.is_some() && started != last[i] {
                            count.begun += 1;
                        }
                        last[i] = started;
                        if state.role == election_pb::Role::Coordinator as i32 && rulers.insert((state.id, state.term)) && !first {
                            count.new_coordinators += 1;
                        }
                    }
                    first = false;
                    if done {
                        return count;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        ElectionWatch { stop, task }
    }

    pub async fn finish(self) -> ElectionCount {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}
