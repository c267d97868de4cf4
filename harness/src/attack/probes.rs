//! Probes that tell what an attack costs: a process's memory and open descriptors, a legitimate
//! client's latency during the attack, the server's health.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::grpc::{CallError, Conn, transport};
use super::services::{HealthCheckRequest, HealthCheckResponse, path};

/// A process's memory, from /proc/PID/status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mem {
    /// Resident set size now, in KiB.
    pub rss_kb: u64,
    /// The peak resident set size over the process's life, in KiB.
    pub hwm_kb: u64,
}

/// `pid`'s memory, or `None` if it cannot be read (the process is gone).
pub fn memory(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Mem { rss_kb: field("VmRSS:")?, hwm_kb: field("VmHWM:")? })
}

/// How many file descriptors `pid` has open.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Samples one figure of a process every 10 ms on a thread of its own and keeps the peak: its RSS
/// ([`PeakWatch::rss_kb`]) or its open file descriptors ([`PeakWatch::fds`]).
pub struct PeakWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakWatch {
    /// `pid`'s resident set size, in KiB.
    pub fn rss_kb(pid: u32) -> PeakWatch {
        Self::start(move || memory(pid).map(|m| m.rss_kb as usize))
    }

    /// `pid`'s open file descriptors.
    pub fn fds(pid: u32) -> PeakWatch {
        Self::start(move || open_fds(pid))
    }

    fn start(sample: impl Fn() -> Option<usize> + Send + 'static) -> PeakWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(v) = sample() {
                        peak.fetch_max(v, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        PeakWatch { stop, peak, thread: Some(thread) }
    }

    /// The highest value seen so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed) as u64
    }

    /// Stops sampling; the peak.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.peak()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PeakWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One `GetTime` over TLS on a connection of its own (so with a handshake of its own), as a real client
/// makes it: how long it took, or why it failed.
pub async fn tls_get_time(dialer: &synclab::rpc::Dialer, addr: &str, within: Duration) -> Result<Duration, String> {
    use synclab::proto::time::GetTimeRequest;
    use synclab::proto::time::time_service_client::TimeServiceClient;
    let started = Instant::now();
    let mut client = TimeServiceClient::new(dialer.channel(addr, within).map_err(|e| e.to_string())?);
    synclab::rpc::with_deadline(addr, within, client.get_time(GetTimeRequest::default())).await.map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

/// Latencies of legitimate calls, and the calls that failed.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    pub samples: Vec<Duration>,
    pub failures: Vec<String>,
}

impl Latencies {
    fn quantile(&self, q: f64) -> Option<Duration> {
        let mut s = self.samples.clone();
        if s.is_empty() {
            return None;
        }
        s.sort_unstable();
        let i = ((s.len() as f64 - 1.0) * q).round() as usize;
        s.get(i).copied()
    }

    pub fn median(&self) -> Option<Duration> {
        self.quantile(0.5)
    }

    /// The `q` quantile (nearest rank), `q` in [0, 1].
    pub fn quantile_at(&self, q: f64) -> Option<Duration> {
        self.quantile(q.clamp(0.0, 1.0))
    }

    /// The 99th percentile (nearest rank); with fewer than 100 samples, the largest but one or so.
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }

    pub fn max(&self) -> Option<Duration> {
        self.samples.iter().max().copied()
    }

    /// "median 0.41 ms, p99 1.9 ms (n=40)" or with failures.
    pub fn summary(&self) -> String {
        let ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.2}", d.as_secs_f64() * 1e3));
        let mut s = format!("{} / {} ms", ms(self.median()), ms(self.p99()));
        if !self.failures.is_empty() {
            s.push_str(&format!(", {} of {} failed", self.failures.len(), self.failures.len() + self.samples.len()));
        }
        s
    }
}

/// A legitimate client calling one unary RPC at a steady pace during an attack, on its own connection
/// (dialled again if the server closes it), recording each call's latency. It runs on a thread and
/// runtime of its own, as a separate client would, so the attacker's tasks in the same process do not
/// delay it.
pub struct Prober {
    stop: Arc<AtomicBool>,
    done: tokio::sync::oneshot::Receiver<Latencies>,
}

impl Prober {
    /// Starts calling `path` with `message` on `addr` every `every`, each call with `within`. The
    /// connection is made (and one call answered) before this returns, as a client that was there
    /// before the attack.
    pub async fn start(addr: &str, path: &'static str, message: Bytes, every: Duration, within: Duration) -> Result<Prober, CallError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), CallError>>();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let addr = addr.to_string();
        let flag = stop.clone();
        std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(transport(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let first = match Conn::connect(&addr, within).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // One call to warm the connection up; not counted.
                if let Err(e) = first.call_raw(path, message.clone(), within).await {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                let mut out = Latencies::default();
                let mut conn = Some(first);
                let mut next = tokio::time::Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    next += every;
                    let at = Instant::now();
                    let c = match conn.take().filter(|c| !c.is_closed()) {
                        Some(c) => Ok(c),
                        None => Conn::connect(&addr, within).await,
                    };
                    match c {
                        Ok(c) => {
                            match c.call_raw(path, message.clone(), within).await {
                                Ok(_) => out.samples.push(at.elapsed()),
                                Err(e) => out.failures.push(e.to_string()),
                            }
                            conn = Some(c);
                        }
                        Err(e) => out.failures.push(format!("connect: {e}")),
                    }
                    tokio::time::sleep_until(next.max(tokio::time::Instant::now())).await;
                }
                let _ = done_tx.send(out);
            });
        });
        match ready_rx.await {
            Ok(Ok(())) => Ok(Prober { stop, done }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CallError::Transport("the prober's thread ended".into())),
        }
    }

    /// Stops probing; what was measured.
    pub async fn finish(self) -> Latencies {
        self.stop.store(true, Ordering::Relaxed);
        self.done.await.unwrap_or_default()
    }
}

/// Asks `addr`'s health (the server as a whole).
pub async fn health(addr: &str, within: Duration) -> Result<i32, CallError> {
    let conn = Conn::connect(addr, within).await?;
    let answer: HealthCheckResponse = conn.call(path::HEALTH_CHECK, &HealthCheckRequest { service: String::new() }, within).await?;
    Ok(answer.status)
}
