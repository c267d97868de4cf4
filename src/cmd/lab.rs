//! `synclab lab`: seeded fault experiments with checkers and a report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{TlsArgs, named, parse_duration};
use crate::lab::run::{self, RunOptions, Target};
use clap::{Args, Subcommand};
use synclab_core::election::Algorithm;

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
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The scenario (see `synclab lab list`).
    scenario: String,
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
    #[arg(long)]
    local: bool,
    /// The compose project whose containers to break (default: COMPOSE_PROJECT_NAME, else the current
    /// folder's name, as Docker Compose names it).
    #[arg(long, env = "COMPOSE_PROJECT_NAME")]
    project: Option<String>,
    /// Use only the containers that run; without it, missing services are started with
    /// `SYNCLAB_LAB=1 scripts/compose up -d` when run from a synclab checkout.
    #[arg(long)]
    no_start: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

pub async fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LabCommand::List => {
            print!("{}", run::list());
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Check { dir } => match run::check_dir(&dir) {
            Ok(results) => {
                print!("{}", run::summary(&results));
                Ok(ExitCode::from(results.valid.exit_code() as u8))
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(2))
            }
        },
        LabCommand::Run(a) => {
            let target = if a.local {
                Target::Local
            } else {
                let project = a.project.clone().unwrap_or_else(|| run::default_project(&std::env::current_dir().unwrap_or_default()));
                Target::Compose { project, start: !a.no_start }
            };
            let options = RunOptions {
                scenario: a.scenario.clone(),
                out: a.out.clone(),
                seed: a.seed,
                algorithm: a.algorithm,
                duration: a.duration,
                target,
                dialer: a.tls.dialer()?,
            };
            match run::run(options).await {
                Ok(results) => {
                    println!("{} (seed {}): {}", a.scenario, a.seed, a.out.display());
                    print!("{}", run::summary(&results));
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
