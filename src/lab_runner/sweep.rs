//! `synclab lab sweep`: scenarios × algorithms × sizes × seeds on one backend, one row per run, into
//! one folder: `sweep.csv` (one row per run), `summary.json` (per cell: settle-time quantiles,
//! availability, leader changes, elections per fault, split-brain terms, messages per election beside
//! the textbook's best and worst case, verdicts, the worst seeds with the command that replays each)
//! and `sweep.html` (settle time and messages against n). On a real backend (`--local`, `--compose`,
//! `--swarm`) a run that is not valid is kept whole in `run-SCENARIO-ALGORITHM-N-SEED/` (its history,
//! results and report), since no replay there is the same run.
//!
//! In the simulator runs are independent and CPU-bound, so `jobs` of them run at once, each on a
//! thread of its own. The real-time backends run one at a time: their timing is the measurement, and
//! two groups sharing the machine's two cores would each slow the other's elections.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use synclab_core::Named;
use synclab_core::election::Algorithm;
use synclab_core::lab::Scenario;
use synclab_core::lab::check::{self, Validity};
use synclab_core::lab::stats::{self, RunStats};

use super::error::LabError;
use super::{RunOptions, Target, election_history};
use crate::lock::lock;
use crate::plot::{Chart, Series, lines};

/// What to sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub scenarios: Vec<Scenario>,
    pub algorithms: Vec<Algorithm>,
    pub sizes: Vec<u64>,
    pub seeds: Vec<u64>,
    /// Where the runs are made; the Docker targets take the size their stack has (`sizes` is then
    /// `[0]`, and each row carries the size found).
    pub target: Target,
    pub duration: Option<Duration>,
    pub out: PathBuf,
    /// Runs at once (the simulator only; real-time backends run one at a time).
    pub jobs: usize,
    /// The timers of the groups the lab makes (`--local`, `--sim`).
    pub timers: super::Timers,
    pub dialer: crate::rpc::Dialer,
}

/// One run's row of `sweep.csv`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: Scenario,
    pub algorithm: String,
    pub nodes: u64,
    pub seed: u64,
    pub verdict: Validity,
    /// Every settle time the liveness checker measured, seconds.
    pub settle_seconds: Vec<f64>,
    /// The settle times after a fault that took the coordinator away (a subset of `settle_seconds`).
    pub failover_seconds: Vec<f64>,
    pub split_brain_terms: u64,
    #[serde(flatten)]
    pub stats: RunStats,
    /// Why the run could not be made, if it could not.
    pub error: Option<String>,
}

impl Row {
    fn cell(&self) -> (Scenario, String, u64) {
        (self.scenario, self.algorithm.clone(), self.nodes)
    }
}

/// Runs every cell × seed; `progress(done, total)` after each run. The rows come back in the order of
/// the cells (scenario, algorithm, size, seed), whatever order they ran in.
pub fn sweep(options: &SweepOptions, progress: impl Fn(usize, usize) + Sync) -> Vec<Row> {
    let mut cells = Vec::new();
    for &scenario in &options.scenarios {
        for &algorithm in &options.algorithms {
            for &n in &options.sizes {
                for &seed in &options.seeds {
                    cells.push((scenario, algorithm, n, seed));
                }
            }
        }
    }
    let total = cells.len();
    let jobs = if matches!(options.target, Target::Sim) { options.jobs.clamp(1, 64) } else { 1 };
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let rows: Mutex<Vec<Option<Row>>> = Mutex::new(vec![None; total]);
    std::thread::scope(|scope| {
        for worker in 0..jobs {
            let (cells, next, done, rows, progress) = (&cells, &next, &done, &rows, &progress);
            scope.spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(worker, error = %e, "sweep: no runtime for this worker");
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&(scenario, algorithm, n, seed)) = cells.get(i) else { break };
                    let row = runtime.block_on(one(options, scenario, algorithm, n, seed));
                    lock(rows)[i] = Some(row);
                    progress(done.fetch_add(1, Ordering::SeqCst) + 1, total);
                }
            });
        }
    });
    rows.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().flatten().collect()
}

async fn one(options: &SweepOptions, scenario: Scenario, algorithm: Algorithm, n: u64, seed: u64) -> Row {
    let run = RunOptions {
        scenario,
        out: options.out.join(format!("run-{scenario}-{}-{n}-{seed}", algorithm.as_str())),
        seed,
        algorithm,
        duration: options.duration,
        target: options.target.clone(),
        nodes: (n > 0).then_some(n),
        timers: options.timers,
        dialer: options.dialer.clone(),
    };
    let mut row = Row {
        scenario,
        algorithm: algorithm.as_str().into(),
        nodes: n,
        seed,
        verdict: Validity::Unknown,
        settle_seconds: Vec::new(),
        failover_seconds: Vec::new(),
        split_brain_terms: 0,
        stats: RunStats::default(),
        error: None,
    };
    let mut keep = false;
    match election_history(&run).await {
        Ok(events) => {
            if n == 0 {
                row.nodes = events
                    .iter()
                    .find_map(|e| if let synclab_core::lab::history::Event::Run(info) = e { Some(info.nodes.len() as u64) } else { None })
                    .unwrap_or(0);
            }
            let results = check::check(&events);
            row.verdict = results.valid;
            let figure = |checker: &str, name: &str| results.checkers.get(checker).and_then(|c| c.figures.get(name)).cloned();
            let seconds = |name: &str| figure("election-liveness", name).and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
            row.settle_seconds = seconds("settle_seconds");
            row.failover_seconds = seconds("failover_settle_seconds");
            row.split_brain_terms = figure("election-safety", "split_brain_terms").and_then(|v| v.as_u64()).unwrap_or(0);
            row.stats = stats::stats(&events);
            // A run that is not valid is kept whole (history, results, report) beside the sweep: on a
            // real backend no replay is the same run.
            if row.verdict != Validity::Valid && !matches!(options.target, Target::Sim) {
                keep = keep_run(&run.out, &events);
            }
        }
        Err(e) => row.error = Some(e.to_string()),
    }
    if !keep {
        let _ = std::fs::remove_dir_all(&run.out);
    }
    row
}

/// Writes a run's history, results and report into `dir` (emptied first: a real backend's nodes may
/// have left their state files there); whether they were written.
fn keep_run(dir: &std::path::Path, events: &[synclab_core::lab::history::Event]) -> bool {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).is_ok()
        && super::record::write_history(dir, events).and_then(|()| super::record::finish(dir, events)).is_ok()
}

/// The textbook's message counts for one election among `m` live nodes (requests only: the Bully OK
/// answers are replies): Bully best `m - 1` (the highest live node announces to the others), worst
/// `m(m-1)/2 + m - 1` (the lowest starts: every node sends `Election` to every higher one, then the
/// highest announces); Ring best `2m` (one lap to elect, one to announce), worst `3m - 1` (the
/// initiator's message first goes almost a lap to reach the highest).
pub fn textbook(algorithm: &str, m: u64) -> (u64, u64) {
    match algorithm {
        "ring" => (2 * m, (3 * m).saturating_sub(1)),
        _ => (m.saturating_sub(1), m * m.saturating_sub(1) / 2 + m.saturating_sub(1)),
    }
}

/// The CSV's header.
pub const CSV_HEADER: &str = "scenario,algorithm,nodes,seed,verdict,settles,settle_median_s,settle_max_s,availability,leader_changes,elections,faults,split_brain_terms,election_messages,messages,error";

/// One run as a CSV line.
pub fn csv_line(r: &Row) -> String {
    let settle = |q: f64| quantile(&sorted(&r.settle_seconds), q).map_or(String::new(), |v| format!("{v:.6}"));
    let s = &r.stats;
    format!(
        "{},{},{},{},{},{},{},{},{:.6},{},{},{},{},{},{},{}",
        r.scenario,
        r.algorithm,
        r.nodes,
        r.seed,
        serde_json::to_value(r.verdict).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        r.settle_seconds.len(),
        settle(0.5),
        settle(1.0),
        s.availability,
        s.leader_changes,
        s.elections,
        s.faults,
        r.split_brain_terms,
        s.election_messages,
        s.messages,
        r.error.as_deref().unwrap_or("").replace([',', '\n'], ";"),
    )
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The `q` quantile of sorted values (nearest rank), `None` if there are none.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((last as f64 * q).round() as usize).min(last)])
}

fn median(v: &[f64]) -> Option<f64> {
    quantile(&sorted(v), 0.5)
}

/// One cell of `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub scenario: Scenario,
    pub algorithm: String,
    pub nodes: u64,
    pub runs: usize,
    pub valid: usize,
    pub invalid: usize,
    pub unknown: usize,
    pub settle_median_s: Option<f64>,
    pub settle_p95_s: Option<f64>,
    pub settle_p99_s: Option<f64>,
    pub settle_max_s: Option<f64>,
    /// The same over the failovers alone (the coordinator taken away).
    pub failover_median_s: Option<f64>,
    pub failover_p99_s: Option<f64>,
    pub failover_max_s: Option<f64>,
    pub availability_mean: f64,
    pub availability_min: f64,
    pub leader_changes_mean: f64,
    pub elections_per_fault: Option<f64>,
    pub split_brain_terms: u64,
    /// Election messages per election, median over the runs.
    pub messages_per_election_median: Option<f64>,
    /// The textbook's best and worst case for one election among n - 1 live nodes (a failover).
    pub textbook_best: u64,
    pub textbook_worst: u64,
    /// The runs to look at first: every one not valid, then the slowest to settle (at most five).
    pub worst: Vec<Worst>,
}

/// A run worth replaying.
#[derive(Debug, Clone, Serialize)]
pub struct Worst {
    pub seed: u64,
    pub verdict: Validity,
    pub settle_max_s: Option<f64>,
    pub replay: String,
}

/// The cells' summaries, in the rows' order.
pub fn summarize(rows: &[Row], options: &SweepOptions) -> Vec<Cell> {
    let mut cells: BTreeMap<(Scenario, String, u64), Vec<&Row>> = BTreeMap::new();
    for r in rows {
        cells.entry(r.cell()).or_default().push(r);
    }
    let backend = match options.target {
        Target::Sim => "--sim",
        Target::Local => "--local",
        Target::Compose { .. } => "",
        Target::Swarm { .. } => "--swarm",
    };
    let duration = options.duration.map_or(String::new(), |d| format!(" --duration {}ms", d.as_millis()));
    // In Docker the stack decides the size and the timers.
    let sized = matches!(options.target, Target::Sim | Target::Local);
    let timers = if sized && options.timers != super::Timers::default() {
        let t = options.timers;
        format!(" --heartbeat {:?} --timeout {:?} --detector {}", t.heartbeat, t.timeout, t.detector)
    } else {
        String::new()
    };
    cells
        .into_iter()
        .map(|((scenario, algorithm, nodes), runs)| {
            let settles = sorted(&runs.iter().flat_map(|r| r.settle_seconds.iter().copied()).collect::<Vec<_>>());
            let failovers = sorted(&runs.iter().flat_map(|r| r.failover_seconds.iter().copied()).collect::<Vec<_>>());
            let count = |v: Validity| runs.iter().filter(|r| r.verdict == v).count();
            let mean = |f: &dyn Fn(&Row) -> f64| runs.iter().map(|r| f(r)).sum::<f64>() / runs.len().max(1) as f64;
            let faults: u64 = runs.iter().map(|r| r.stats.faults).sum();
            let elections: u64 = runs.iter().map(|r| r.stats.elections).sum();
            let per_election: Vec<f64> = runs
                .iter()
                .filter(|r| r.stats.elections > 0)
                .map(|r| r.stats.election_messages as f64 / r.stats.elections as f64)
                .collect();
            let (best, worst_case) = textbook(&algorithm, nodes.saturating_sub(1));
            let mut ranked: Vec<&&Row> = runs.iter().collect();
            let max_settle = |r: &Row| r.settle_seconds.iter().copied().fold(0.0, f64::max);
            ranked.sort_by(|a, b| (a.verdict == Validity::Valid).cmp(&(b.verdict == Validity::Valid)).then(max_settle(b).total_cmp(&max_settle(a))));
            let worst = ranked
                .iter()
                .take(5)
                .map(|r| Worst {
                    seed: r.seed,
                    verdict: r.verdict,
                    settle_max_s: (!r.settle_seconds.is_empty()).then(|| max_settle(r)),
                    replay: format!(
                        "synclab lab run {scenario} {backend}{} --algorithm {algorithm} --seed {}{duration}{timers} --out replay-{scenario}-{algorithm}-{nodes}-{}",
                        if sized { format!(" --nodes {nodes}") } else { String::new() },
                        r.seed,
                        r.seed
                    ),
                })
                .collect();
            Cell {
                scenario,
                algorithm: algorithm.clone(),
                nodes,
                runs: runs.len(),
                valid: count(Validity::Valid),
                invalid: count(Validity::Invalid),
                unknown: count(Validity::Unknown),
                settle_median_s: quantile(&settles, 0.5),
                settle_p95_s: quantile(&settles, 0.95),
                settle_p99_s: quantile(&settles, 0.99),
                settle_max_s: quantile(&settles, 1.0),
                failover_median_s: quantile(&failovers, 0.5),
                failover_p99_s: quantile(&failovers, 0.99),
                failover_max_s: quantile(&failovers, 1.0),
                availability_mean: mean(&|r| r.stats.availability),
                availability_min: runs.iter().map(|r| r.stats.availability).fold(1.0, f64::min),
                leader_changes_mean: mean(&|r| r.stats.leader_changes as f64),
                elections_per_fault: (faults > 0).then(|| elections as f64 / faults as f64),
                split_brain_terms: runs.iter().map(|r| r.split_brain_terms).sum(),
                messages_per_election_median: median(&per_election),
                textbook_best: best,
                textbook_worst: worst_case,
                worst,
            }
        })
        .collect()
}

/// `sweep.html`: per scenario, settle time (median and p99, log scale) and messages per election
/// (beside the textbook's bounds, log scale) against n, a line per algorithm; then the table.
pub fn html(cells: &[Cell]) -> String {
    let mut body = String::new();
    let scenarios: Vec<Scenario> = {
        let mut s: Vec<Scenario> = cells.iter().map(|c| c.scenario).collect();
        s.dedup();
        s
    };
    for scenario in scenarios {
        let of: Vec<&Cell> = cells.iter().filter(|c| c.scenario == scenario).collect();
        let mut settle = Vec::new();
        let mut messages = Vec::new();
        let mut algorithms: Vec<&str> = of.iter().map(|c| c.algorithm.as_str()).collect();
        algorithms.dedup();
        for algorithm in algorithms {
            let cells: Vec<&&Cell> = of.iter().filter(|c| c.algorithm == algorithm).collect();
            let points = |f: &dyn Fn(&Cell) -> Option<f64>| cells.iter().filter_map(|c| f(c).map(|v| (c.nodes as f64, v))).collect();
            settle.push(Series::new(format!("{algorithm} median"), points(&|c| c.settle_median_s.map(|s| s * 1e3))));
            settle.push(Series::new(format!("{algorithm} p99"), points(&|c| c.settle_p99_s.map(|s| s * 1e3))));
            messages.push(Series::new(format!("{algorithm} measured"), points(&|c| c.messages_per_election_median)));
            messages.push(Series::new(format!("{algorithm} textbook best"), points(&|c| Some(c.textbook_best as f64))));
            messages.push(Series::new(format!("{algorithm} textbook worst"), points(&|c| Some(c.textbook_worst as f64))));
        }
        let bounds = |series: &[Series]| {
            let values: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|v| *v > 0.0).collect();
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(0.0, f64::max);
            if lo.is_finite() && hi > 0.0 { (lo / 2.0, hi * 2.0) } else { (0.001, 1.0) }
        };
        let (lo, hi) = bounds(&settle);
        body += &format!("<h2>{scenario}</h2>\n");
        body += &lines(&Chart::new(format!("{scenario}: settle time"), "nodes", "ms").log(lo, hi), &settle);
        let (lo, hi) = bounds(&messages);
        body += &lines(&Chart::new(format!("{scenario}: election messages per election"), "nodes", "messages").log(lo, hi), &messages);
    }
    body += "<h2>Cells</h2>\n<table><tr><th>scenario</th><th>algorithm</th><th>n</th><th>runs</th><th>valid</th><th>settle median / p95 / p99 / max (ms)</th><th>availability</th><th>leader changes</th><th>elections per fault</th><th>split-brain terms</th><th>messages per election (textbook)</th><th>worst seed</th></tr>\n";
    let ms = |v: Option<f64>| v.map_or("-".into(), |s| format!("{:.1}", s * 1e3));
    for c in cells {
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {} / {} / {}</td><td>{:.4}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{} ({}–{})</td><td><code>{}</code></td></tr>\n",
            c.scenario,
            c.algorithm,
            c.nodes,
            c.runs,
            c.valid,
            ms(c.settle_median_s),
            ms(c.settle_p95_s),
            ms(c.settle_p99_s),
            ms(c.settle_max_s),
            c.availability_mean,
            c.leader_changes_mean,
            c.elections_per_fault.map_or("-".into(), |v| format!("{v:.2}")),
            c.split_brain_terms,
            c.messages_per_election_median.map_or("-".into(), |v| format!("{v:.1}")),
            c.textbook_best,
            c.textbook_worst,
            c.worst.first().map_or(String::new(), |w| escape(&w.replay)),
        );
    }
    body += "</table>\n";
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>synclab lab sweep</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:small}}</style></head><body><h1>synclab lab sweep</h1>\n{body}</body></html>\n"
    )
}

/// Writes `sweep.csv`, `summary.json` and `sweep.html` into the sweep's folder.
pub fn write(options: &SweepOptions, rows: &[Row]) -> Result<Vec<Cell>, LabError> {
    let dir = &options.out;
    std::fs::create_dir_all(dir).map_err(|source| LabError::Io { path: dir.clone(), source })?;
    let csv: String = std::iter::once(CSV_HEADER.to_string()).chain(rows.iter().map(csv_line)).map(|l| l + "\n").collect();
    let path = dir.join("sweep.csv");
    std::fs::write(&path, csv).map_err(|source| LabError::Io { path, source })?;
    let cells = summarize(rows, options);
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cells).unwrap_or_default() + "\n")
        .map_err(|source| LabError::Io { path, source })?;
    let path = dir.join("sweep.html");
    std::fs::write(&path, html(&cells)).map_err(|source| LabError::Io { path, source })?;
    Ok(cells)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use synclab_core::lab::history::{Event, RunInfo};

    /// A run kept from a sweep is whole: its history, results and report, where the nodes' state was.
    #[test]
    fn a_kept_run_has_its_history_results_and_report() {
        let dir = std::env::temp_dir().join(format!("synclab-sweep-keep-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let events = vec![Event::Run(RunInfo {
            scenario: "kill-coordinator".into(),
            seed: 3,
            algorithm: "bully".into(),
            backend: "swarm".into(),
            nodes: vec![1, 2, 3],
            settle_bound: 5.0,
            sync_interval: 0.0,
            spread_bound_nanos: 0,
            spread_rounds: 3,
            detector: String::new(),
            heartbeat: 0.0,
        })];
        assert!(super::keep_run(&dir, &events));
        for file in ["history.jsonl", "results.json", "report.html"] {
            assert!(dir.join(file).is_file(), "{file}");
        }
        assert!(!dir.join("state").exists(), "the nodes' state files are not kept");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
