//! `synclab berkeley status|watch`: the group as a table, each clock with its true offset.

use std::collections::HashMap;
use std::time::Duration;

use crate::cli::{TlsArgs, parse_duration, parse_member};
use crate::proto::berkeley::berkeley_master_client::BerkeleyMasterClient;
use crate::proto::berkeley::{Round, StatusRequest, StatusResponse, WatchRoundsRequest};
use crate::proto::{format_rfc3339, timestamp_to_nanos};
use crate::rpc::Dialer;
use crate::rpc::{read_clock, request};
use synclab_core::duration::format_nanos;

#[derive(Debug, clap::Args)]
pub struct BerkeleyArgs {
    #[command(subcommand)]
    command: BerkeleyCommand,
    /// The master, as host:port.
    #[arg(long, env = "SYNCLAB_MASTER", default_value = "127.0.0.1:50052", global = true)]
    master: String,
    /// Where to read a member's clock when its registered address is not reachable from here, as
    /// NAME=HOST:PORT (e.g. KMC=localhost:50053). Repeat for several.
    #[arg(long = "member", value_name = "NAME=HOST:PORT", value_parser = parse_member, global = true)]
    members: Vec<(String, String)>,
    /// Deadline of each call.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration, global = true)]
    timeout: Duration,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, clap::Subcommand)]
enum BerkeleyCommand {
    /// The members and the last round, each clock with its true offset.
    Status,
    /// The same, after every round, until interrupted.
    Watch,
}

pub async fn run(args: BerkeleyArgs) -> anyhow::Result<()> {
    let dialer = args.tls.dialer()?;
    let mut client = BerkeleyMasterClient::new(dialer.channel(&args.master, args.timeout)?);
    let overrides: HashMap<String, String> = args.members.iter().cloned().collect();
    match args.command {
        BerkeleyCommand::Status => {
            let status = dialer.call(&args.master, args.timeout, client.status(request(StatusRequest {}, args.timeout))).await?;
            show(&args, &dialer, &overrides, &status, status.last_round.as_ref()).await;
        }
        BerkeleyCommand::Watch => {
            let mut rounds =
                client.watch_rounds(WatchRoundsRequest {}).await.map_err(|s| dialer.explain(&args.master, args.timeout, &s))?.into_inner();
            while let Some(round) = rounds.message().await.map_err(|s| dialer.explain(&args.master, args.timeout, &s))? {
                let status = client.status(request(StatusRequest {}, args.timeout)).await.map(|r| r.into_inner()).unwrap_or_default();
                show(&args, &dialer, &overrides, &status, Some(&round)).await;
            }
        }
    }
    Ok(())
}

/// A clock's true offset, read where it can be reached.
async fn true_offset(dialer: &Dialer, addr: &str, timeout: Duration) -> Option<i64> {
    read_clock(dialer, addr, "", timeout).await.ok().map(|r| r.true_offset_nanos)
}

async fn show(args: &BerkeleyArgs, dialer: &Dialer, overrides: &HashMap<String, String>, status: &StatusResponse, round: Option<&Round>) {
    let mut rows = vec![(status.master.clone(), args.master.clone())];
    rows.extend(status.members.iter().map(|m| (m.name.clone(), overrides.get(&m.name).cloned().unwrap_or_else(|| m.address.clone()))));
    let offsets = futures::future::join_all(rows.iter().map(|(_, addr)| true_offset(dialer, addr, args.timeout))).await;
    let result = |name: &str| round.and_then(|r| r.members.iter().find(|m| m.name == name));
    if args.json {
        let clocks: Vec<serde_json::Value> = rows
            .iter()
            .zip(&offsets)
            .enumerate()
            .map(|(i, ((name, addr), offset))| {
                let r = result(name);
                serde_json::json!({
                    "clock": name,
                    "address": addr,
                    "true_offset_us": offset.map(|o| o as f64 / 1e3),
                    "last_adjustment_us": if i == 0 { round.map(|r| r.master_adjustment_nanos as f64 / 1e3) } else { r.map(|r| r.adjustment_nanos as f64 / 1e3) },
                    "excluded": if i == 0 { round.map(|r| !r.master_included) } else { r.map(|r| r.excluded) },
                    "answered": r.map(|r| r.answered),
                    "reason": r.map(|r| r.reason.clone()).filter(|s| !s.is_empty()),
                })
            })
            .collect();
        let values: Vec<i64> = offsets.iter().flatten().copied().collect();
        let spread = values.iter().max().zip(values.iter().min()).map(|(a, b)| (a - b) as f64 / 1e3);
        println!(
            "{}",
            serde_json::json!({ "round": round.map(|r| r.number), "average_us": round.map(|r| r.average_nanos as f64 / 1e3), "spread_us": spread, "clocks": clocks })
        );
        return;
    }
    match round {
        Some(r) => println!(
            "round {} at {}: average {} ({} members, took {:.1} ms)",
            r.number,
            timestamp_to_nanos(r.started.as_ref(), "started").map(format_rfc3339).unwrap_or_default(),
            format_nanos(r.average_nanos as f64),
            r.members.len(),
            r.duration_nanos as f64 / 1e6
        ),
        None => println!("no round yet"),
    }
    println!("{:<18} {:>14} {:>16}  excluded", "clock", "true offset", "last adjustment");
    for (i, ((name, _), offset)) in rows.iter().zip(&offsets).enumerate() {
        let offset = offset.map_or("?".to_string(), |o| format_nanos(o as f64));
        let (adjustment, excluded) = if i == 0 {
            (
                round.map(|r| format_nanos(r.master_adjustment_nanos as f64)),
                round.map(|r| if r.master_included { String::new() } else { "yes".into() }),
            )
        } else {
            let r = result(name);
            (
                r.filter(|r| r.answered).map(|r| format_nanos(r.adjustment_nanos as f64)),
                r.map(|r| match (r.excluded, r.answered) {
                    (true, _) => format!("yes: {}", r.reason),
                    (false, false) => r.reason.clone(),
                    _ => String::new(),
                }),
            )
        };
        println!("{:<18} {:>14} {:>16}  {}", name, offset, adjustment.unwrap_or_else(|| "-".into()), excluded.unwrap_or_default());
    }
    if offsets.iter().any(Option::is_none) {
        println!("(? = clock not reachable from here; run this inside the compose network or pass --member NAME=HOST:PORT)");
    }
}
