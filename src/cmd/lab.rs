//! `synclab lab`: seeded fault experiments with checkers and a report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{TimerArgs, TlsArgs, named, parse_duration};
use crate::lab_runner::{self as runner, RunOptions, Target};
use clap::{Args, Subcommand};
use synclab_core::election::{Algorithm, NodeId};
use synclab_core::lab::Scenario;

#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// The built-in scenarios, one line each.
    List,
    /// Run a scenario, write DIR (history.jsonl, results.json, report.html) and check it: exit 0 when
    /// every checker is valid, 1 when one is not, 2 when a result is unknown.
    Run(RunArgs),
    /// Check DIR/history.jsonl again and rewrite results.json and report.html (same exit codes).
    Check {
        /// A run's folder.
        dir: PathBuf,
    },
    /// Sweep scenarios × algorithms × sizes × seeds on one backend into DIR (sweep.csv, summary.json,
    /// sweep.html): exit 0 when every run is valid, 1 when one is not.
    Sweep(SweepArgs),
    /// Print an election scenario's plan as JSON: every step a run with this seed plays (the same bytes
    /// on every call).
    Plan(PlanArgs),
}

/// Parses a scenario's name; any other is an error that names it.
fn parse_scenario(name: &str) -> Result<Scenario, String> {
    <Scenario as synclab_core::Named>::from_name(name).ok_or_else(|| format!("no scenario '{name}' (see `synclab lab list`)"))
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// The scenario (see `synclab lab list`; the clock scenarios have no plan).
    #[arg(value_parser = parse_scenario)]
    scenario: Scenario,
    /// Seeds every random choice.
    #[arg(long, env = "SYNCLAB_SEED", default_value_t = 1)]
    seed: u64,
    /// How long the scenario's main part lasts (each has its own default).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// The group's size: members 1..=N (default: the scenario's size in one process).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(2..=1000))]
    nodes: Option<u64>,
}

/// The lab's groups' timers, or `None` once a usage error naming the flags is printed.
fn lab_timers(args: &TimerArgs) -> Option<runner::Timers> {
    match args.timers() {
        Ok(timers) => Some(timers),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// Seeds, as `--seeds` lists them.
#[derive(Debug, Clone)]
struct Seeds(Vec<u64>);

/// A range of seeds: `1-100`, or a list `1,5,9`.
fn parse_seeds(text: &str) -> Result<Seeds, String> {
    let mut seeds = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let number = |s: &str| s.trim().parse::<u64>().map_err(|e| format!("'{s}': {e}"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if b < a || b - a >= 100_000 {
                    return Err(format!("'{part}': a range from low to high, at most 100000 seeds"));
                }
                seeds.extend(a..=b);
            }
            None => seeds.push(number(part)?),
        }
    }
    Ok(Seeds(seeds))
}

#[derive(Debug, Args)]
struct SweepArgs {
    /// The scenarios, comma-separated (election scenarios).
    #[arg(long, value_delimiter = ',', value_parser = parse_scenario, required = true)]
    scenario: Vec<Scenario>,
    /// The algorithms, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = named::<Algorithm>(), default_value = "bully,ring")]
    algorithm: Vec<Algorithm>,
    /// The group sizes, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(2..=1000), default_value = "3,5,7")]
    sizes: Vec<u64>,
    /// The seeds: a range `1-100` or a list `1,5,9`.
    #[arg(long, value_parser = parse_seeds, default_value = "1-10")]
    seeds: Seeds,
    /// Run in the simulator (the default).
    #[arg(long, conflicts_with_all = ["local", "compose", "swarm"])]
    sim: bool,
    /// Run on election nodes in this process, in real time, one run at a time.
    #[arg(long, conflicts_with_all = ["compose", "swarm"])]
    local: bool,
    /// Run on the compose stack's election nodes (`SYNCLAB_LAB=1 scripts/compose up -d`, started if
    /// missing), one run at a time. The stack decides the size and the algorithm: give the one
    /// algorithm it runs; the rows carry the size found.
    #[arg(long, conflicts_with = "swarm")]
    compose: bool,
    /// Run on a Docker Swarm stack's election service (`scripts/swarm up`), one run at a time; as with
    /// --compose, the stack decides the size and the algorithm.
    #[arg(long)]
    swarm: bool,
    /// The compose project, with --compose (default: COMPOSE_PROJECT_NAME, else the current folder's
    /// name, as Docker Compose names it).
    #[arg(long, env = "COMPOSE_PROJECT_NAME", requires = "compose")]
    project: Option<String>,
    /// The stack's name, with --swarm.
    #[arg(long, env = "SYNCLAB_STACK", default_value = "synclab")]
    stack: String,
    /// With --swarm: every node's engine as NAME=ENDPOINT@ADDRESS, comma-separated (default: the nodes
    /// `scripts/swarm up` made).
    #[arg(long, env = "SYNCLAB_ENGINES", value_name = "NAME=ENDPOINT@ADDRESS,...", value_parser = crate::lab_runner::backend::swarm::parse_engines)]
    engines: Option<Vec<crate::lab_runner::backend::swarm::Engine>>,
    /// How long each scenario's main part lasts (each has its own default).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Simulator runs at once (default: the machine's cores); real-time runs are one at a time, so that
    /// no run slows another's elections.
    #[arg(long, env = "SYNCLAB_JOBS")]
    jobs: Option<usize>,
    /// The folder to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// With --local or --sim: the groups' timers and detector (in Docker the deployment's settings decide).
    #[command(flatten)]
    timers: TimerArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The scenario (see `synclab lab list`).
    #[arg(value_parser = parse_scenario)]
    scenario: Scenario,
    /// The folder to write the run into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Seeds every random choice: the same seed plays the same schedule.
    #[arg(long, env = "SYNCLAB_SEED", default_value_t = 1)]
    seed: u64,
    /// The election algorithm of the in-process nodes (in Docker: what the compose stack runs).
    #[arg(long, value_parser = named::<Algorithm>(), default_value = "bully")]
    algorithm: Algorithm,
    /// How long the scenario's main part lasts (each has its own default).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Run on election nodes in this process, on loopback, instead of the compose stack.
    #[arg(long, conflicts_with = "sim")]
    local: bool,
    /// Run on the election cores in a simulator, in virtual time (deterministic: the same inputs give
    /// the same history bytes), instead of the compose stack.
    #[arg(long)]
    sim: bool,
    /// The group's size with --local or --sim (members 1..=N; default: the scenario's size in one
    /// process). In Docker the stack decides.
    #[arg(long, env = "SYNCLAB_NODES", value_name = "N", value_parser = clap::value_parser!(u64).range(2..=1000))]
    nodes: Option<u64>,
    /// The compose project whose containers to break (default: COMPOSE_PROJECT_NAME, else the current
    /// folder's name, as Docker Compose names it).
    #[arg(long, env = "COMPOSE_PROJECT_NAME")]
    project: Option<String>,
    /// Run on a Docker Swarm stack's election service (`docker-stack.yml`; `scripts/swarm up` makes one
    /// on this machine) instead of the compose stack.
    #[arg(long, conflicts_with_all = ["local", "sim"])]
    swarm: bool,
    /// The stack's name, with --swarm.
    #[arg(long, env = "SYNCLAB_STACK", default_value = "synclab")]
    stack: String,
    /// With --swarm: every node's engine as NAME=ENDPOINT@ADDRESS (ENDPOINT unix://PATH or
    /// tcp://HOST:PORT; ADDRESS where the node's published ports are), comma-separated. Default: the
    /// nodes `scripts/swarm up` made.
    #[arg(long, env = "SYNCLAB_ENGINES", value_name = "NAME=ENDPOINT@ADDRESS,...", value_parser = crate::lab_runner::backend::swarm::parse_engines)]
    engines: Option<Vec<crate::lab_runner::backend::swarm::Engine>>,
    /// Use only the containers that run; without it, missing services are started with
    /// `SYNCLAB_LAB=1 scripts/compose up -d` when run from a synclab checkout.
    #[arg(long)]
    no_start: bool,
    /// Write into --out even if it holds files already (a run's files are replaced).
    #[arg(long)]
    force: bool,
    /// With --local or --sim: the groups' timers and detector (in Docker the deployment's settings decide).
    #[command(flatten)]
    timers: TimerArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

pub async fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LabCommand::List => {
            print!("{}", Scenario::list());
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Check { dir } => match runner::check_dir(&dir) {
            Ok(results) => {
                print!("{}", runner::summary(&results));
                Ok(ExitCode::from(results.valid.exit_code() as u8))
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(2))
            }
        },
        LabCommand::Sweep(a) => sweep(a),
        LabCommand::Plan(a) => {
            let members: Vec<NodeId> = (1..=a.nodes.unwrap_or(a.scenario.local_nodes())).collect();
            match synclab_core::lab::plan(a.scenario, a.seed, &members, a.duration) {
                Ok(plan) => {
                    println!("{}", plan.to_json());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        LabCommand::Run(a) => {
            if !a.force && std::fs::read_dir(&a.out).is_ok_and(|mut entries| entries.next().is_some()) {
                eprintln!(
                    "error: --out {} is not empty: choose an empty or new folder, or pass --force to replace its run",
                    a.out.display()
                );
                return Ok(ExitCode::from(2));
            }
            let Some(timers) = lab_timers(&a.timers) else { return Ok(ExitCode::from(2)) };
            let target = if a.sim {
                Target::Sim
            } else if a.local {
                Target::Local
            } else if a.swarm {
                let engines = a.engines.clone().unwrap_or_else(crate::lab_runner::backend::swarm::local_engines);
                Target::Swarm { stack: a.stack.clone(), engines }
            } else {
                let project = a.project.clone().unwrap_or_else(|| runner::default_project(&std::env::current_dir().unwrap_or_default()));
                Target::Compose { project, start: !a.no_start }
            };
            let options = RunOptions {
                scenario: a.scenario,
                out: a.out.clone(),
                seed: a.seed,
                algorithm: a.algorithm,
                duration: a.duration,
                target,
                nodes: a.nodes,
                timers,
                dialer: a.tls.dialer()?,
            };
            match runner::run(options).await {
                Ok(results) => {
                    println!("{} (seed {}): {}", a.scenario, a.seed, a.out.display());
                    print!("{}", runner::summary(&results));
                    Ok(ExitCode::from(results.valid.exit_code() as u8))
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}

fn sweep(a: SweepArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use synclab_core::lab::check::Validity;

    if let Some(s) = a.scenario.iter().find(|s| !s.is_election()) {
        eprintln!("error: {s} is a clock scenario: a sweep runs election scenarios");
        return Ok(ExitCode::from(2));
    }
    if (a.compose || a.swarm) && a.algorithm.len() != 1 {
        eprintln!("error: --algorithm: a Docker stack runs one algorithm; give the one it runs (e.g. --algorithm bully)");
        return Ok(ExitCode::from(2));
    }
    let target = if a.compose {
        let project = a.project.clone().unwrap_or_else(|| runner::default_project(&std::env::current_dir().unwrap_or_default()));
        Target::Compose { project, start: true }
    } else if a.swarm {
        let engines = a.engines.clone().unwrap_or_else(crate::lab_runner::backend::swarm::local_engines);
        Target::Swarm { stack: a.stack.clone(), engines }
    } else if a.local {
        Target::Local
    } else {
        Target::Sim
    };
    let Some(timers) = lab_timers(&a.timers) else { return Ok(ExitCode::from(2)) };
    // In Docker the stack decides the size: one cell, labelled with the size each run finds.
    let sizes = if a.compose || a.swarm { vec![0] } else { a.sizes };
    let options = runner::sweep::SweepOptions {
        scenarios: a.scenario,
        algorithms: a.algorithm,
        sizes,
        seeds: a.seeds.0,
        target,
        duration: a.duration,
        out: a.out.clone(),
        jobs: a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        timers,
        dialer: a.tls.dialer()?,
    };
    let started = std::time::Instant::now();
    let rows = runner::sweep::sweep(&options, |done, total| {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\rsweep: {done}/{total} runs, {:.1} s", started.elapsed().as_secs_f64());
        if done == total {
            let _ = writeln!(err);
        }
    });
    let cells = match runner::sweep::write(&options, &rows) {
        Ok(cells) => cells,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let not_valid: Vec<_> = rows.iter().filter(|r| r.verdict != Validity::Valid).collect();
    println!("{} runs in {} cells: {}", rows.len(), cells.len(), a.out.display());
    for r in &not_valid {
        println!(
            "  not valid: {} {} n={} seed {} ({:?}{})",
            r.scenario,
            r.algorithm,
            r.nodes,
            r.seed,
            r.verdict,
            r.error.as_deref().map_or(String::new(), |e| format!(": {e}"))
        );
    }
    Ok(if not_valid.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
