//! `synclab election status|watch`: every node of an election group in one table.

use std::time::Duration;

use crate::cli::{TlsArgs, parse_duration};
use crate::election::agreement;
use crate::proto::election::election_service_client::ElectionServiceClient;
use crate::proto::election::{GetStateRequest, NodeState, Role};
use crate::proto::{format_rfc3339, timestamp_to_nanos};
use crate::rpc::Dialer;
use crate::rpc::request;

#[derive(Debug, clap::Args)]
pub struct ElectionArgs {
    #[command(subcommand)]
    command: ElectionCommand,
    /// The nodes, as host:port, comma-separated (default: the five compose nodes as published on this
    /// host; inside the compose network use node-1:50054,...).
    #[arg(
        long,
        env = "SYNCLAB_NODES",
        value_delimiter = ',',
        default_value = "127.0.0.1:50071,127.0.0.1:50072,127.0.0.1:50073,127.0.0.1:50074,127.0.0.1:50075",
        global = true
    )]
    nodes: Vec<String>,
    /// Deadline of each call.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration, global = true)]
    timeout: Duration,
    /// With watch: how often to poll.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration, global = true)]
    interval: Duration,
    /// Print one JSON object per line instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, clap::Subcommand)]
enum ElectionCommand {
    /// Every node's role, term and coordinator, once.
    Status,
    /// The same table again each time any node's role, term or coordinator changes, until interrupted.
    Watch,
}

/// One node's answer, or why there is none.
type Answer = (String, Result<NodeState, String>);

async fn poll(args: &ElectionArgs, dialer: &Dialer) -> Vec<Answer> {
    let calls = args.nodes.iter().map(|addr| async move {
        let result = async {
            let mut client = ElectionServiceClient::new(dialer.channel(addr, args.timeout).map_err(|e| e.to_string())?);
            dialer.call(addr, args.timeout, client.get_state(request(GetStateRequest {}, args.timeout))).await.map_err(|e| e.to_string())
        }
        .await;
        (addr.clone(), result)
    });
    futures::future::join_all(calls).await
}

pub async fn run(args: ElectionArgs) -> anyhow::Result<()> {
    let dialer = args.tls.dialer()?;
    match args.command {
        ElectionCommand::Status => {
            let answers = poll(&args, &dialer).await;
            if answers.iter().all(|(_, r)| r.is_err()) {
                let (addr, err) = &answers[0];
                anyhow::bail!("no node answered (e.g. {addr}: {})", err.as_ref().err().map_or("", String::as_str));
            }
            show(&args, &answers);
        }
        ElectionCommand::Watch => {
            let mut last = None;
            loop {
                let answers = poll(&args, &dialer).await;
                let key: Vec<Option<(i32, u64, i64)>> =
                    answers.iter().map(|(_, r)| r.as_ref().ok().map(|s| (s.role, s.term, s.coordinator))).collect();
                if last.as_ref() != Some(&key) {
                    show(&args, &answers);
                    last = Some(key);
                }
                tokio::select! {
                    _ = tokio::time::sleep(args.interval) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        }
    }
    Ok(())
}

fn role_name(role: i32) -> &'static str {
    match Role::try_from(role).unwrap_or(Role::Unspecified) {
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Waiting => "waiting",
        Role::Coordinator => "coordinator",
        Role::Unspecified => "?",
    }
}

/// "coordinator 5 in term 9, agreed by all 5 reachable nodes", or what disagrees.
fn verdict(answers: &[Answer]) -> String {
    let states: Vec<NodeState> = answers.iter().filter_map(|(_, r)| r.as_ref().ok().cloned()).collect();
    match agreement(&states) {
        Some((c, t)) => format!("coordinator {c} in term {t}, agreed by all {} reachable nodes", states.len()),
        None => {
            let rulers = states.iter().filter(|s| s.role == Role::Coordinator as i32);
            let claims: Vec<String> = rulers.map(|s| format!("node {} (term {})", s.id, s.term)).collect();
            format!("no agreement yet; coordinators: {}", if claims.is_empty() { "none".into() } else { claims.join(", ") })
        }
    }
}

fn show(args: &ElectionArgs, answers: &[Answer]) {
    if args.json {
        for (addr, result) in answers {
            let line = match result {
                Ok(s) => serde_json::json!({
                    "address": addr,
                    "id": s.id,
                    "algorithm": s.algorithm,
                    "role": role_name(s.role),
                    "term": s.term,
                    "coordinator": s.coordinator,
                    "coordinator_since": s.coordinator_since.as_ref().and_then(|t| timestamp_to_nanos(Some(t), "t").ok()),
                    "last_election": s.last_election.as_ref().map(|e| serde_json::json!({
                        "reason": e.reason,
                        "started": e.started.as_ref().and_then(|t| timestamp_to_nanos(Some(t), "t").ok()),
                        "finished": e.finished.as_ref().and_then(|t| timestamp_to_nanos(Some(t), "t").ok()),
                    })),
                    "messages": s.messages.iter().map(|m| (m.kind.clone(), serde_json::json!({
                        "sent": m.sent, "received": m.received, "failed": m.failed, "rejected": m.rejected,
                    }))).collect::<serde_json::Map<_, _>>(),
                }),
                Err(e) => serde_json::json!({ "address": addr, "error": e }),
            };
            println!("{line}");
        }
        return;
    }
    let now = crate::clock::host_now();
    println!("{}", format_rfc3339(now));
    println!("{:<4} {:<22} {:<12} {:>5} {:>5}  {:<34} MESSAGES sent/received", "NODE", "ADDRESS", "ROLE", "TERM", "COORD", "LAST ELECTION");
    for (addr, result) in answers {
        match result {
            Ok(s) => {
                let election = s.last_election.as_ref().map_or("-".to_string(), |e| {
                    let took = e
                        .duration
                        .as_ref()
                        .map_or("running".to_string(), |d| format!("{:.1} ms", d.seconds as f64 * 1e3 + f64::from(d.nanos) / 1e6));
                    format!("{} ({took})", e.reason)
                });
                let messages: Vec<String> = s
                    .messages
                    .iter()
                    .filter(|m| m.sent + m.received > 0)
                    .map(|m| format!("{} {}/{}", m.kind, m.sent, m.received))
                    .collect();
                let coordinator = if s.coordinator == 0 { "-".to_string() } else { s.coordinator.to_string() };
                println!(
                    "{:<4} {:<22} {:<12} {:>5} {:>5}  {:<34} {}",
                    s.id,
                    addr,
                    role_name(s.role),
                    s.term,
                    coordinator,
                    election,
                    messages.join(", ")
                );
            }
            Err(e) => println!("{:<4} {:<22} unreachable: {e}", "?", addr),
        }
    }
    println!("{}\n", verdict(answers));
}
