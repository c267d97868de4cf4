//! Berkeley benchmark: how close the clocks get and stay, against the classroom shortcut, and at scale.
//!
//!     cargo bench --bench berkeley [-- --rounds 20 --interval 5s --scale 100]
//!
//! A real master and real slaves (gRPC on 127.0.0.1) in this process: the slaves' servers on one runtime
//! thread, the master on another. Master + 4 slaves start within ±5 s of true time, drifting up to
//! ±100 ppm, and one faulty clock (TAPMI) starts 5 minutes out. The spread is max − min of the true
//! offsets of the non-faulty clocks (the master's included), read at one instant, 50 ms after a round
//! (its slews done: clocks step corrections from 1 ms and slew smaller ones at 5%, as in compose).
//!
//! The classroom shortcut, run the same way: every round each slave pushes its clock's absolute time
//! (one GetTime, no round-trip compensation), the master averages all of them with its own (wild clock
//! included), and each slave is set to that absolute time (handed over in process, so without even the
//! network's delay on the way back).

use std::time::{Duration, Instant};

use std::sync::Arc;

use synclab::berkeley::master::{Master, MasterConfig};
use synclab::berkeley::slave::Slave;
use synclab::clock::LiveClock;
use synclab::proto::time::GetTimeRequest;
use synclab::proto::time::time_service_client::TimeServiceClient;
use synclab::proto::timestamp_to_nanos;
use synclab_core::clock::ClockConfig;

mod common;

const SEC: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
/// Clocks step corrections of 1 ms or more and slew smaller ones at 5% (1 ms in 20 ms), as compose runs them.
const MAX_SLEW_PPM: f64 = 50_000.0;
/// "Right after a round": once the slews it started are done.
const SETTLE: Duration = Duration::from_millis(50);

struct Options {
    rounds: usize,
    interval: Duration,
    scale: usize,
}

fn options() -> Options {
    let mut o = Options { rounds: 20, interval: Duration::from_secs(5), scale: 100 };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).unwrap_or_else(|| panic!("{} needs a value", pair[0]));
        match pair[0].as_str() {
            "--rounds" => o.rounds = value.parse().unwrap(),
            "--interval" => o.interval = synclab_core::duration::parse_positive(value).unwrap(),
            "--scale" => o.scale = value.parse().unwrap(),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// The slaves' servers, on a runtime thread of their own.
struct Slaves {
    clocks: Vec<LiveClock>,
    addrs: Vec<String>,
    slaves: Vec<Arc<Slave>>,
    _runtime: tokio::runtime::Runtime,
}

impl Slaves {
    /// Makes every slave a member of `master`, as a registration over the network would: the master
    /// learns each slave's claim, each slave the master's epoch.
    fn enrol(&self, master: &Master, names: impl IntoIterator<Item = String>) {
        for (i, name) in names.into_iter().enumerate() {
            master.register(&name, &self.addrs[i], &self.slaves[i].claim()).unwrap();
            self.slaves[i].registered(master.epoch());
        }
    }
}

fn start_slaves(specs: &[(String, i64, f64)]) -> Slaves {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut clocks = Vec::new();
    let mut addrs = Vec::new();
    let mut slaves = Vec::new();
    for (name, offset, drift) in specs {
        let config = ClockConfig { offset_nanos: *offset, drift_ppm: *drift, step_threshold_nanos: MS, max_slew_ppm: MAX_SLEW_PPM };
        let clock = LiveClock::new(name.as_str(), config).unwrap();
        let slave = Slave::new(clock.clone(), 3600 * SEC, synclab::rpc::Dialer::plaintext()).unwrap();
        let addr = runtime.block_on(async {
            let server = slave.server().await.unwrap();
            let listener = synclab::server::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(server.serve(listener, synclab::server::Stop::never()));
            addr
        });
        clocks.push(clock);
        addrs.push(addr.to_string());
        slaves.push(slave);
    }
    Slaves { clocks, addrs, slaves, _runtime: runtime }
}

/// max − min of the true offsets, read at (nearly) one instant.
fn spread(clocks: &[&LiveClock]) -> f64 {
    let offsets: Vec<f64> = clocks.iter().map(|c| c.read().true_offset).collect();
    offsets.iter().copied().fold(f64::MIN, f64::max) - offsets.iter().copied().fold(f64::MAX, f64::min)
}

fn master_clock(drift_ppm: f64) -> LiveClock {
    LiveClock::new(
        "berkeley-master",
        ClockConfig { drift_ppm, step_threshold_nanos: MS, max_slew_ppm: MAX_SLEW_PPM, ..ClockConfig::default() },
    )
    .unwrap()
}

fn four_lines() -> Vec<(String, i64, f64)> {
    vec![
        ("KMC".into(), 3_200 * MS, 60.0),
        ("MIT".into(), -4_100 * MS, -100.0),
        ("SOLS".into(), 400 * MS, 100.0),
        ("TAPMI".into(), 300 * SEC, 20.0),
    ]
}

const MASTER_DRIFT_PPM: f64 = 15.0;
const CHECKPOINTS: [usize; 4] = [1, 2, 5, 20];

/// Runs synclab's Berkeley: spread after each checkpoint round, and the worst spread over the interval
/// after the last round (holdover, before a next round would run), in ns.
fn synclab_run(o: &Options) -> (Vec<(usize, f64)>, f64, f64) {
    let slaves = start_slaves(&four_lines());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _in_runtime = rt.enter(); // channels start their workers on the runtime they are made in
    let clock = master_clock(MASTER_DRIFT_PPM);
    let config = MasterConfig {
        interval: o.interval,
        tolerance_nanos: SEC as f64,
        samples: 8,
        timeout: Duration::from_secs(1),
        max_missed: 3,
        max_members: 8,
        dialer: synclab::rpc::Dialer::plaintext(),
    };
    let master = Master::new(clock.clone(), config);
    slaves.enrol(&master, four_lines().into_iter().map(|(name, _, _)| name));
    let good: Vec<&LiveClock> = slaves.clocks.iter().filter(|c| c.name() != "TAPMI").chain([&clock]).collect();
    let mut at = Vec::new();
    let mut holdover = 0.0f64;
    let mut duration = 0.0f64;
    for round in 1..=o.rounds {
        let started = Instant::now();
        rt.block_on(master.run_round());
        duration = started.elapsed().as_secs_f64() * 1e3;
        std::thread::sleep(SETTLE);
        if CHECKPOINTS.contains(&round) || round == o.rounds {
            at.push((round, spread(&good)));
        }
        // Wait for the next round; after the last one, watch the spread grow as the clocks drift.
        let next = started + o.interval;
        while Instant::now() < next {
            if round == o.rounds {
                holdover = holdover.max(spread(&good));
            }
            std::thread::sleep(Duration::from_millis(20).min(next.saturating_duration_since(Instant::now())));
        }
    }
    (at, holdover, duration)
}

/// The classroom shortcut, same clocks and pacing; returns spreads at the checkpoints and how far the
/// wild clock pulled the good ones from where they started (ns).
fn classroom_run(o: &Options) -> (Vec<(usize, f64)>, f64) {
    let slaves = start_slaves(&four_lines());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _in_runtime = rt.enter(); // channels start their workers on the runtime they are made in
    let clock = master_clock(MASTER_DRIFT_PPM);
    let mut clients: Vec<_> =
        slaves.addrs.iter().map(|a| TimeServiceClient::new(synclab::rpc::channel(a, Duration::from_secs(1)).unwrap())).collect();
    let good: Vec<&LiveClock> = slaves.clocks.iter().filter(|c| c.name() != "TAPMI").chain([&clock]).collect();
    let mean_true = |cs: &[&LiveClock]| cs.iter().map(|c| c.read().true_offset).sum::<f64>() / cs.len() as f64;
    let before = mean_true(&good);
    let mut at = Vec::new();
    for round in 1..=o.rounds.min(5) {
        let started = Instant::now();
        let times: Vec<i64> = rt.block_on(async {
            let mut times = Vec::new();
            for c in clients.iter_mut() {
                let answer = c.get_time(GetTimeRequest::default()).await.unwrap().into_inner();
                times.push(timestamp_to_nanos(answer.transmit_time.as_ref(), "t").unwrap());
            }
            times
        });
        let all: Vec<i64> = times.iter().copied().chain([clock.now()]).collect();
        let average = (all.iter().map(|&t| t as i128).sum::<i128>() / all.len() as i128) as i64;
        for c in slaves.clocks.iter().chain([&clock]) {
            let now = c.now();
            c.with(|vc, host| vc.step(host, average - now)).unwrap();
        }
        if CHECKPOINTS.contains(&round) || round == o.rounds.min(5) {
            at.push((round, spread(&good)));
        }
        let next = started + o.interval.min(Duration::from_secs(1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    (at, mean_true(&good) - before)
}

/// `n` slaves within ±5 s and ±100 ppm: round duration (ms) and spread (ns) after rounds 1, 2 and 5.
fn scale_run(n: usize) -> (Vec<f64>, Vec<(usize, f64)>) {
    let specs: Vec<(String, i64, f64)> = (0..n)
        .map(|i| {
            let x = (i as f64 * 0.618_033_988_7).fract() * 2.0 - 1.0; // spread evenly over [-1, 1)
            (format!("line-{i:03}"), (x * 0.45 * SEC as f64) as i64, x * 100.0)
        })
        .collect();
    let slaves = start_slaves(&specs);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _in_runtime = rt.enter(); // channels start their workers on the runtime they are made in
    let clock = master_clock(0.0);
    let config = MasterConfig {
        interval: Duration::from_secs(1),
        tolerance_nanos: SEC as f64,
        samples: 4,
        timeout: Duration::from_secs(2),
        max_missed: 3,
        max_members: 1024,
        dialer: synclab::rpc::Dialer::plaintext(),
    };
    let master = Master::new(clock.clone(), config);
    slaves.enrol(&master, specs.iter().map(|(name, _, _)| name.clone()));
    let all: Vec<&LiveClock> = slaves.clocks.iter().chain([&clock]).collect();
    let mut durations = Vec::new();
    let mut at = Vec::new();
    for round in 1..=5 {
        let started = Instant::now();
        let r = rt.block_on(master.run_round());
        durations.push(started.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(SETTLE);
        assert!(r.members.iter().all(|m| m.answered), "a slave did not answer in round {round}");
        if [1, 2, 5].contains(&round) {
            at.push((round, spread(&all)));
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    }
    (durations, at)
}

fn main() {
    let o = options();
    println!(
        "# Berkeley benchmark: master + 4 slaves (TAPMI 5 min out), {} rounds every {:?}; scale {} slaves",
        o.rounds, o.interval, o.scale
    );
    let (synclab_at, holdover, last_duration) = synclab_run(&o);
    let (classroom_at, pulled) = classroom_run(&o);
    println!("\n| after round | synclab spread (µs) | classroom shortcut spread (µs) |\n|---|---|---|");
    for (round, s) in &synclab_at {
        let c = classroom_at.iter().find(|(r, _)| r == round).map_or("-".to_string(), |(_, c)| format!("{:.1}", c / 1e3));
        println!("| {round} | {:.1} | {c} |", s / 1e3);
    }
    println!(
        "\nholdover: worst spread over the {:?} after round {}: {:.1} µs (uncorrected, the drifts alone would make {:.0} µs)",
        o.interval,
        o.rounds,
        holdover / 1e3,
        200.0 * o.interval.as_secs_f64()
    );
    println!("last round took {last_duration:.1} ms");
    let points = |at: &[(usize, f64)]| at.iter().map(|(r, s)| (*r as f64, (s / 1e9).max(1e-7))).collect::<Vec<_>>();
    let chart =
        synclab::plot::Chart::new("Berkeley: spread of the good clocks after each round", "round", "spread (s, log)").log(1e-7, 1e3);
    let svg = synclab::plot::lines(
        &chart,
        &[
            synclab::plot::Series::new("synclab", points(&synclab_at)),
            synclab::plot::Series::new("classroom shortcut", points(&classroom_at)),
        ],
    );
    println!("{}", common::write_plot("berkeley-spread", &svg));
    println!("classroom shortcut: TAPMI's wild clock moved the good clocks by {:.3} s on average (synclab: excluded, 0)", pulled / 1e9);

    let (durations, at) = scale_run(o.scale);
    let mut sorted = durations.clone();
    sorted.sort_by(f64::total_cmp);
    println!("\n## scale: {} slaves in one process\n\n| round | duration (ms) |\n|---|---|", o.scale);
    for (i, d) in durations.iter().enumerate() {
        println!("| {} | {d:.1} |", i + 1);
    }
    println!(
        "\nmedian round {:.1} ms; spread after rounds 1, 2, 5: {}",
        sorted[sorted.len() / 2],
        at.iter().map(|(r, s)| format!("{r}: {:.1} µs", s / 1e3)).collect::<Vec<_>>().join(", ")
    );
}
