//! Cristian benchmark: sync accuracy against ground truth, round trip, throughput.
//!
//!     cargo bench --bench cristian [-- --syncs 1000 --load-secs 10]
//!
//! Starts the real `time-server` binary (exact clock) pinned to CPU 0 and runs the real client in this
//! process, pinned as each figure says. Prints medians and p99s as Markdown rows for BENCHMARKS.md, each
//! with the baseline measured in the same run:
//! * accuracy: |true residual error| of synclab's client (8 samples, min RTT, NTP θ), of Cristian's RTT/2
//!   on the same samples, and of the classroom baseline (one sample, time as a string parsed inside the
//!   timed window), clients starting ±5 s off;
//! * round trip: GetTime next to a raw TCP ping-pong on loopback;
//! * throughput: GetTime calls/s with 64 concurrent callers over 4 channels.
//!
//!     cargo bench --bench cristian -- --tls [--syncs 1000 --load-secs 10]
//!
//! measures instead what mutual TLS costs: a plaintext and a TLS time server side by side (both on CPU
//! 0, the client on CPU 1), each through the same kind of channel: round trip, sync accuracy and bound,
//! throughput and server CPU per call, with TLS / plaintext ratios.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use synclab::clock::LiveClock;
use synclab::cristian::CristianClient;
use synclab::proto::time::GetTimeRequest;
use synclab::proto::time::GetTimeStringRequest;
use synclab::proto::time::baseline_time_service_client::BaselineTimeServiceClient;
use synclab::proto::time::time_service_client::TimeServiceClient;
use synclab::rpc::Dialer;
use synclab_core::clock::ClockConfig;
use synclab_core::cristian::Estimator;

mod common;

const SEC: i64 = 1_000_000_000;
const TIMEOUT: Duration = Duration::from_secs(2);

struct Options {
    /// Only run the load against this server (for profiling a server started by hand).
    load_only: Option<String>,
    /// Plaintext against mutual TLS.
    tls: bool,
    syncs: usize,
    samples: usize,
    load_secs: u64,
    concurrency: usize,
    channels: usize,
}

fn options() -> Options {
    let mut o = Options { load_only: None, tls: false, syncs: 1000, samples: 8, load_secs: 10, concurrency: 64, channels: 4 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{} needs a number", args[i]));
        match args[i].as_str() {
            "--syncs" => o.syncs = value(),
            "--samples" => o.samples = value(),
            "--load-secs" => o.load_secs = value() as u64,
            "--concurrency" => o.concurrency = value(),
            "--channels" => o.channels = value(),
            "--bench" => {
                i += 1;
                continue;
            }
            "--echo" => echo_server(value() as u16),
            "--load-only" => o.load_only = args.get(i + 1).cloned(),
            "--tls" => {
                o.tls = true;
                i += 1;
                continue;
            }
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn pin_self(cpu: usize) {
    let ok =
        Command::new("taskset").args(["-a", "-p", "-c", &cpu.to_string(), &std::process::id().to_string()]).stdout(Stdio::null()).status();
    assert!(ok.is_ok_and(|s| s.success()), "taskset is needed to pin the benchmark");
}

fn spawn_pinned(cpu: usize, program: &str, args: &[&str]) -> Running {
    let child = Command::new("taskset")
        .args(["-c", &cpu.to_string(), program])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("taskset");
    Running(child)
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_time_server(cpu: usize) -> (Running, String) {
    start_time_server_with(cpu, &[])
}

fn start_time_server_with(cpu: usize, extra: &[&str]) -> (Running, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["--listen", &addr, "--log-level", "warn"];
    args.extend_from_slice(extra);
    let server = spawn_pinned(cpu, env!("CARGO_BIN_EXE_time-server"), &args);
    wait_for_port(port);
    (server, addr)
}

/// A one-byte echo server (the raw TCP baseline); never returns.
fn echo_server(port: u16) -> ! {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    for stream in listener.incoming() {
        let mut s = stream.unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    }
    std::process::exit(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Stats {
    median: f64,
    p99: f64,
    n: usize,
    /// Every sample, ascending (for the plots).
    sorted: Vec<f64>,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    Stats { median: percentile(&v, 50.0), p99: percentile(&v, 99.0), n: v.len(), sorted: v }
}

/// A distribution as a line: the share of samples at or below each value (x: percent, y: value).
fn quantiles(name: &str, s: &Stats) -> synclab::plot::Series {
    let n = s.sorted.len().max(1) as f64;
    let points = s.sorted.iter().enumerate().map(|(i, &v)| ((i + 1) as f64 * 100.0 / n, v)).collect();
    synclab::plot::Series::new(name, points)
}

/// Writes a quantile plot of `series` (µs, log axis) to target/plots/NAME.svg and says where.
fn plot_distribution(name: &str, title: &str, series: &[synclab::plot::Series]) {
    let chart = synclab::plot::Chart::new(title, "share of syncs at or below (%)", "µs (log)").log(0.05, 1e5).size(720, 360);
    println!("{}", common::write_plot(name, &synclab::plot::lines(&chart, series)));
}

fn raw_tcp_rtt(rounds: usize) -> Stats {
    let port = free_port();
    let exe = std::env::current_exe().unwrap();
    let _echo = spawn_pinned(0, exe.to_str().unwrap(), &["--echo", &port.to_string()]);
    wait_for_port(port);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut rtts = Vec::with_capacity(rounds);
    let mut b = [7u8; 1];
    for i in 0..rounds + 1000 {
        let t = Instant::now();
        s.write_all(&b).unwrap();
        s.read_exact(&mut b).unwrap();
        if i >= 1000 {
            rtts.push(t.elapsed().as_nanos() as f64 / 1e3);
        }
    }
    stats(rtts)
}

async fn grpc_rtt(addr: &str, rounds: usize) -> Stats {
    grpc_rtt_with(&Dialer::plaintext(), addr, rounds).await
}

async fn grpc_rtt_with(dialer: &Dialer, addr: &str, rounds: usize) -> Stats {
    let mut client = TimeServiceClient::new(dialer.channel(addr, TIMEOUT).unwrap());
    let mut rtts = Vec::with_capacity(rounds);
    for i in 0..rounds + 1000 {
        let t = Instant::now();
        client.get_time(GetTimeRequest::default()).await.unwrap();
        if i >= 1000 {
            rtts.push(t.elapsed().as_nanos() as f64 / 1e3);
        }
    }
    stats(rtts)
}

struct Accuracy {
    ntp: Stats,
    cristian: Stats,
    bound: Stats,
    positive_share: f64,
    kernel_share: f64,
    interleaved_share: f64,
    /// Syncs whose true error lay outside their reported bound.
    outside_bound: usize,
}

/// `syncs` syncs of fresh clients starting ±5 s off, with 10 ms between syncs; errors in µs.
async fn synclab_accuracy(addr: &str, syncs: usize, samples: usize) -> Accuracy {
    synclab_accuracy_with(&Dialer::plaintext(), addr, syncs, samples).await
}

async fn synclab_accuracy_with(dialer: &Dialer, addr: &str, syncs: usize, samples: usize) -> Accuracy {
    let mut client = CristianClient::dial(addr, TIMEOUT, dialer).unwrap();
    let (mut ntp, mut cristian, mut bound) = (Vec::new(), Vec::new(), Vec::new());
    let (mut positive, mut kernel, mut interleaved, mut outside) = (0, 0, 0, 0);
    for i in 0..syncs {
        let offset = if i % 2 == 0 { 5 * SEC } else { -5 * SEC };
        let clock = LiveClock::new("bench", ClockConfig { offset_nanos: offset, ..ClockConfig::default() }).unwrap();
        let report = client.sync(&clock, samples, Estimator::Ntp).await.unwrap();
        positive += usize::from(report.true_error_us > 0.0);
        outside += usize::from(report.true_error_us.abs() > report.error_bound_us);
        kernel += usize::from(report.kernel_timestamps);
        interleaved += usize::from(report.interleaved);
        ntp.push(report.true_error_us.abs());
        cristian.push((report.true_offset_before_us + report.cristian_offset_us).abs());
        bound.push(report.error_bound_us);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let share = |n: usize| n as f64 / syncs as f64;
    Accuracy {
        ntp: stats(ntp),
        cristian: stats(cristian),
        bound: stats(bound),
        positive_share: share(positive),
        kernel_share: share(kernel),
        interleaved_share: share(interleaved),
        outside_bound: outside,
    }
}

/// The classroom baseline: one sample, the time as a string, parsed inside the timed window.
async fn seed_accuracy(addr: &str, syncs: usize) -> Stats {
    let mut client = BaselineTimeServiceClient::new(synclab::rpc::channel(addr, TIMEOUT).unwrap());
    let mut errors = Vec::new();
    for i in 0..syncs {
        let offset = if i % 2 == 0 { 5 * SEC } else { -5 * SEC };
        let clock = LiveClock::new("seed", ClockConfig { offset_nanos: offset, ..ClockConfig::default() }).unwrap();
        let t0 = clock.now();
        let answer = client.get_time_string(GetTimeStringRequest {}).await.unwrap().into_inner();
        let server_secs: f64 = answer.time.parse().unwrap();
        let t1 = clock.now();
        let new_time = (server_secs * 1e9) as i64 + (t1 - t0) / 2;
        clock.with(|c, host| c.step(host, new_time - t1)).unwrap();
        errors.push(clock.settled_offset().abs() / 1e3);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stats(errors)
}

async fn throughput(addr: &str, secs: u64, concurrency: usize, channels: usize) -> (f64, Stats) {
    // Plain channels (no per-call timer), so the load generator spends as little of its core as it can.
    let chans: Vec<_> = (0..channels)
        .map(|_| tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().tcp_nodelay(true).connect_lazy())
        .collect();
    load(chans, secs, concurrency).await
}

/// GetTime calls from `concurrency` callers spread over `chans` for `secs` after 1 s of warm-up.
async fn load(chans: Vec<tonic::transport::Channel>, secs: u64, concurrency: usize) -> (f64, Stats) {
    let channels = chans.len();
    let warmup = Instant::now() + Duration::from_secs(1);
    let end = warmup + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut client = TimeServiceClient::new(chans[i % channels].clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    client.get_time(GetTimeRequest::default()).await.unwrap();
                    if t >= warmup {
                        latencies.push(t.elapsed().as_nanos() as f64 / 1e3);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all.len() as f64 / secs as f64, stats(all))
}

fn main() {
    let o = options();
    println!(
        "# Cristian benchmark: {} syncs x {} samples, load {} s x {} callers / {} channels",
        o.syncs, o.samples, o.load_secs, o.concurrency, o.channels
    );
    let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    if o.tls {
        return tls_cost(&o);
    }
    if let Some(addr) = &o.load_only {
        let (rate, lat) = runtime().block_on(throughput(addr, o.load_secs, o.concurrency, o.channels));
        println!("{rate:.0} calls/s, latency median {:.1} µs, p99 {:.1} µs", lat.median, lat.p99);
        return;
    }

    // Both ends on CPU 0: the placement with the shortest, steadiest loopback path.
    pin_self(0);
    let (server, addr) = start_time_server(0);
    let rt = runtime();
    let tcp_same = raw_tcp_rtt(10_000);
    let rtt_same = rt.block_on(grpc_rtt(&addr, 10_000));
    let acc_same = rt.block_on(synclab_accuracy(&addr, o.syncs, o.samples));
    let seed_same = rt.block_on(seed_accuracy(&addr, o.syncs));
    drop(rt);

    // Client on CPU 1, server on CPU 0: each process with a core of its own.
    pin_self(1);
    let rt = runtime();
    let tcp_cross = raw_tcp_rtt(10_000);
    let rtt_cross = rt.block_on(grpc_rtt(&addr, 10_000));
    let acc_cross = rt.block_on(synclab_accuracy(&addr, o.syncs, o.samples));
    let seed_cross = rt.block_on(seed_accuracy(&addr, o.syncs));
    // The time server runs under taskset: its pid is taskset's (taskset execs it).
    let server_cpu_before = common::cpu_seconds(server.0.id());
    let client_cpu_before = common::cpu_seconds(std::process::id());
    let load_started = Instant::now();
    let (rate, lat) = rt.block_on(throughput(&addr, o.load_secs, o.concurrency, o.channels));
    let wall = load_started.elapsed().as_secs_f64();
    let server_busy = (common::cpu_seconds(server.0.id()) - server_cpu_before) / wall;
    let client_busy = (common::cpu_seconds(std::process::id()) - client_cpu_before) / wall;
    drop(server);

    let row = |name: &str, s: &Stats| println!("| {name} | {:.1} | {:.1} | {} |", s.median, s.p99, s.n);
    for (placement, acc, seed, tcp, rtt) in [
        ("same CPU", &acc_same, &seed_same, &tcp_same, &rtt_same),
        ("client CPU 1, server CPU 0", &acc_cross, &seed_cross, &tcp_cross, &rtt_cross),
    ] {
        println!("\n## {placement}\n\n| figure (µs) | median | p99 | n |\n|---|---|---|---|");
        row("synclab \\|true error\\| (NTP θ, min-RTT of 8)", &acc.ntp);
        row("same samples, Cristian's RTT/2 \\|true error\\|", &acc.cristian);
        row("classroom baseline \\|true error\\| (1 sample, string)", seed);
        row("synclab reported error bound (±)", &acc.bound);
        row("GetTime round trip", rtt);
        row("raw TCP round trip (1 byte)", tcp);
        println!(
            "\nratios: baseline/synclab error {:.1}x (median), {:.1}x (p99); GetTime/TCP round trip {:.2}x (median)\n\
             errors > 0 in {:.0}% of syncs; kernel timestamps used in {:.0}%, interleaved transmit times in {:.0}%",
            seed.median / acc.ntp.median,
            seed.p99 / acc.ntp.p99,
            rtt.median / tcp.median,
            acc.positive_share * 100.0,
            acc.kernel_share * 100.0,
            acc.interleaved_share * 100.0
        );
        let file = if placement == "same CPU" { "cristian-error-same-cpu" } else { "cristian-error-separate-cpus" };
        plot_distribution(
            file,
            &format!("Cristian: |true error| after each sync, {placement}"),
            &[
                quantiles("synclab (NTP θ, min-RTT of 8)", &acc.ntp),
                quantiles("same samples, RTT/2", &acc.cristian),
                quantiles("classroom baseline", seed),
                quantiles("synclab's reported bound", &acc.bound),
            ],
        );
    }
    println!(
        "\n## throughput (client CPU 1, server CPU 0)\n\n| calls/s | latency median (µs) | latency p99 (µs) | calls | server CPU busy | server CPU per call (µs) | client CPU busy |\n|---|---|---|---|---|---|---|"
    );
    println!(
        "| {:.0} | {:.1} | {:.1} | {} | {:.0}% | {:.1} | {:.0}% |",
        rate,
        lat.median,
        lat.p99,
        lat.n,
        server_busy * 100.0,
        server_busy * 1e6 / rate,
        client_busy * 100.0
    );
}

/// Plaintext and mutual TLS side by side: the same figures through the same kind of channel.
fn tls_cost(o: &Options) {
    let dir = std::env::temp_dir().join(format!("synclab-bench-tls-{}", std::process::id()));
    synclab::tls::certs::make(&dir, &["time-server".to_string(), "observer".to_string()], true).unwrap();
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let tls =
        synclab::tls::Tls::from_flags(Some(&dir.join("ca.pem")), Some(&dir.join("observer.pem")), Some(&dir.join("observer.key"))).unwrap();
    let (plain_server, plain_addr) = start_time_server(0);
    let (ca, cert, key) = (path("ca.pem"), path("time-server.pem"), path("time-server.key"));
    let (tls_server, tls_addr) = start_time_server_with(0, &["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]);
    let sides = [("plaintext", Dialer::plaintext(), &plain_addr, &plain_server), ("mutual TLS", Dialer::new(tls), &tls_addr, &tls_server)];
    // Accuracy in both placements, then round trip and load with each process on its own core.
    let mut accuracy = Vec::new();
    for cpu in [0, 1] {
        pin_self(cpu);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for (_, dialer, addr, _) in &sides {
            accuracy.push(rt.block_on(synclab_accuracy_with(dialer, addr, o.syncs, o.samples)));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut figures = Vec::new();
    for (_, dialer, addr, server) in &sides {
        let rtt = rt.block_on(grpc_rtt_with(dialer, addr, 10_000));
        let chans: Vec<_> =
            rt.block_on(async { (0..o.channels).map(|_| dialer.channel(addr, Duration::from_secs(30)).unwrap()).collect() });
        let before = common::cpu_seconds(server.0.id());
        let started = Instant::now();
        let (rate, lat) = rt.block_on(load(chans, o.load_secs, o.concurrency));
        let busy = (common::cpu_seconds(server.0.id()) - before) / started.elapsed().as_secs_f64();
        figures.push((rtt, rate, lat, busy * 1e6 / rate));
    }
    println!("\n## plaintext vs mutual TLS ({} syncs of {} samples per row; servers on CPU 0)\n", o.syncs, o.samples);
    println!("| figure | plaintext | mutual TLS | TLS / plaintext |\n|---|---|---|---|");
    let row = |name: &str, a: f64, b: f64| println!("| {name} | {a:.1} | {b:.1} | {:.2} |", b / a);
    for (i, placement) in ["same CPU", "client CPU 1"].iter().enumerate() {
        let (p, t) = (&accuracy[2 * i], &accuracy[2 * i + 1]);
        row(&format!("sync \\|true error\\|, {placement}, median (µs)"), p.ntp.median, t.ntp.median);
        row(&format!("sync \\|true error\\|, {placement}, p99 (µs)"), p.ntp.p99, t.ntp.p99);
        row(&format!("reported error bound, {placement}, median (µs)"), p.bound.median, t.bound.median);
        println!("| syncs outside their bound, {placement} | {} | {} | |", p.outside_bound, t.outside_bound);
    }
    let (p, t) = (&figures[0], &figures[1]);
    row("GetTime round trip, client CPU 1, median (µs)", p.0.median, t.0.median);
    row("GetTime round trip, client CPU 1, p99 (µs)", p.0.p99, t.0.p99);
    row("throughput (calls/s)", p.1, t.1);
    row("latency under load, median (µs)", p.2.median, t.2.median);
    row("latency under load, p99 (µs)", p.2.p99, t.2.p99);
    row("server CPU per call (µs)", p.3, t.3);
    plot_distribution(
        "cristian-error-tls",
        "Cristian over plaintext and mutual TLS: |true error| and bound, client CPU 1",
        &[
            quantiles("plaintext |true error|", &accuracy[2].ntp),
            quantiles("mutual TLS |true error|", &accuracy[3].ntp),
            quantiles("plaintext bound", &accuracy[2].bound),
            quantiles("mutual TLS bound", &accuracy[3].bound),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
