//! Prometheus metrics: every process serves them at `http://ADDR/metrics` with `--metrics-listen ADDR`
//! (`https://`, a client certificate required, when it runs with TLS: [`serve`]).
//!
//! The metrics are recorded with the `metrics` crate and rendered by `metrics-exporter-prometheus`; no
//! recorder is installed unless a process serves metrics, so recording costs nothing otherwise. Names
//! follow Prometheus conventions (base units, `_total` counters) and the clock exporters people know
//! (node_exporter's `node_timex_*`, chrony_exporter's `chrony_tracking_*`):
//!
//! | metric | type | where |
//! |---|---|---|
//! | `synclab_clock_offset_seconds{clock}` | gauge, read at scrape | every clock-keeping process |
//! | `synclab_clock_frequency_correction_ratio{clock}` | gauge, read at scrape | every clock-keeping process |
//! | `synclab_sync_offset_seconds{clock}`, `synclab_sync_error_bound_seconds{clock}` | gauge | Cristian devices |
//! | `synclab_sync_round_trip_seconds{clock}` | histogram | Cristian devices |
//! | `synclab_syncs_total{clock,outcome}` | counter | Cristian devices |
//! | `synclab_berkeley_rounds_total`, `synclab_berkeley_round_duration_seconds` (histogram) | | master |
//! | `synclab_berkeley_spread_seconds`, `synclab_berkeley_members` | gauge | master |
//! | `synclab_berkeley_excluded_total{member}` | counter | master |
//! | `synclab_election_term`, `synclab_election_is_coordinator`, `synclab_election_coordinator` | gauge, read at scrape | election nodes |
//! | `synclab_elections_total{reason}`, `synclab_election_messages_total{kind,direction,outcome}` | counter | election nodes |
//! | `synclab_election_leader_changes_total` (counter), `synclab_election_availability` (gauge), read at scrape | | election nodes |
//!
//! Every counter a service can export is exported from its start, at 0 for each of its known label
//! values ([`election_counters`], [`sync_outcomes`], [`berkeley_counters`], and each gRPC method's
//! `OK` in [`grpc`]): a counter that appears only at its first event makes `rate()` and `increase()`
//! miss that event.
//! | `synclab_grpc_requests_total{method,code}`, `synclab_grpc_request_duration_seconds{method}` | counter, histogram | every gRPC server |
//! | `synclab_tls_reloads_total{outcome}` | counter | every process with TLS ([`crate::tls::reload`]) |
//!
//! State (a clock's offset, a node's term) is read when Prometheus scrapes, through the collectors
//! registered with [`on_scrape`]; events are counted when they happen.

mod deferred;
pub mod grpc;
pub mod web;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::clock::ClockSet;
use crate::lock::lock;
use crate::stop::Stop;

/// A function that reads state into gauges just before a scrape.
type Collector = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// The process's recorder and its collectors.
struct Registry {
    collectors: Mutex<Vec<Arc<Collector>>>,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// The Prometheus recorder, built on a thread of its own (see [`deferred`]).
static RECORDER: deferred::Deferred = deferred::Deferred::new();

/// Buckets for durations from 10 µs to 60 s (round trips, rounds, gRPC calls).
const SECONDS_BUCKETS: &[f64] =
    &[1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

/// Installs the process's recorder (once; later calls reuse it). Until it is installed every metric is
/// a no-op. The recorder is installed at once; the Prometheus recorder behind it is built on a thread
/// of its own (its clock calibration spins for up to 200 ms), and what is recorded meanwhile is kept
/// and replayed into it.
fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| {
        if let Err(e) = metrics::set_global_recorder(deferred::Forward(&RECORDER)) {
            tracing::warn!(error = %e, "another metrics recorder is installed; synclab's metrics will be empty");
        }
        describe();
        let build = || {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("the buckets are not empty");
            RECORDER.complete(builder.build_recorder());
        };
        if let Err(e) = std::thread::Builder::new().name("metrics-recorder".into()).spawn(build) {
            tracing::warn!(error = %e, "cannot start the metrics recorder's thread: metrics will be empty");
        }
        Registry { collectors: Mutex::new(Vec::new()) }
    })
}

/// Starts recording metrics in this process (what `--metrics-listen` does before it listens; a process
/// start calls it as early as it can, so that the recorder is ready by the first scrape). It returns
/// at once.
pub fn install() {
    registry();
}

/// Whether metrics are recorded in this process.
pub fn installed() -> bool {
    REGISTRY.get().is_some()
}

/// The Prometheus recorder's handle, once it is built.
async fn handle() -> PrometheusHandle {
    loop {
        let built = RECORDER.built.notified();
        if let Some(recorder) = RECORDER.get() {
            return recorder.handle();
        }
        built.await;
    }
}

fn describe() {
    describe_gauge!(
        "synclab_clock_offset_seconds",
        metrics::Unit::Seconds,
        "The clock's true offset from the host's real time (ground truth), read at scrape."
    );
    describe_gauge!("synclab_clock_frequency_correction_ratio", "The frequency correction in force on the clock (ppm / 1e6).");
    describe_gauge!("synclab_sync_offset_seconds", metrics::Unit::Seconds, "The offset the last sync measured and applied.");
    describe_gauge!(
        "synclab_sync_error_bound_seconds",
        metrics::Unit::Seconds,
        "The last sync's error bound (±): the clock is within it of the server's."
    );
    describe_histogram!("synclab_sync_round_trip_seconds", metrics::Unit::Seconds, "Round trip of each sync's chosen exchange.");
    describe_counter!("synclab_syncs_total", "Syncs by outcome.");
    describe_counter!("synclab_berkeley_rounds_total", "Berkeley rounds run.");
    describe_histogram!("synclab_berkeley_round_duration_seconds", metrics::Unit::Seconds, "How long each Berkeley round took.");
    describe_gauge!(
        "synclab_berkeley_spread_seconds",
        metrics::Unit::Seconds,
        "The last round's spread of the answering clocks (max − min of their measured offsets, master included)."
    );
    describe_counter!("synclab_berkeley_excluded_total", "Rounds in which a member's clock was left out of the average.");
    describe_gauge!("synclab_berkeley_members", "Members registered with the master.");
    describe_gauge!("synclab_election_term", "The node's term, read at scrape.");
    describe_gauge!("synclab_election_is_coordinator", "1 if the node is the coordinator, else 0.");
    describe_gauge!("synclab_election_coordinator", "The coordinator this node knows (0: none).");
    describe_counter!("synclab_elections_total", "Elections this node began or joined, by reason.");
    describe_counter!(
        "synclab_election_leader_changes_total",
        "Times the coordinator this node follows or is changed: each new (coordinator, term) after the first, read at scrape."
    );
    describe_gauge!(
        "synclab_election_availability",
        "Fraction (0 to 1) of the last 60 s (since the start, if shorter) in which this node had one coordinator: it followed one it knew, or ruled."
    );
    describe_counter!(
        "synclab_election_messages_total",
        "Election messages: sent (answered, refused, failed) and received (accepted, rejected)."
    );
    describe_counter!("synclab_grpc_requests_total", "gRPC requests served, by method and status code.");
    describe_counter!(
        "synclab_tls_reloads_total",
        "Reloads of this process's TLS files (they changed, or SIGHUP), by outcome: ok, or failed (the files in use were kept)."
    );
    describe_histogram!("synclab_grpc_request_duration_seconds", metrics::Unit::Seconds, "gRPC request duration, until the response ends.");
}

/// Registers `collect` to run before every scrape (it sets gauges from state).
pub fn on_scrape<F, Fut>(collect: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let collector: Collector = Box::new(move || Box::pin(collect()));
    lock(&registry().collectors).push(Arc::new(collector));
}

/// Longest a scrape waits for the collectors.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the collectors, then renders every metric in Prometheus' text format.
pub async fn render() -> String {
    let registry = registry();
    let handle = handle().await;
    let collectors: Vec<Arc<Collector>> = lock(&registry.collectors).clone();
    let all = futures::future::join_all(collectors.iter().map(|c| c()));
    if tokio::time::timeout(COLLECT_TIMEOUT, all).await.is_err() {
        tracing::warn!("metrics collectors took more than {COLLECT_TIMEOUT:?}; serving what they set so far");
    }
    handle.run_upkeep();
    handle.render()
}

/// Reads each of `clocks` at scrape time: `synclab_clock_offset_seconds` and
/// `synclab_clock_frequency_correction_ratio`.
pub fn watch_clocks(clocks: ClockSet) {
    on_scrape(move || {
        for clock in clocks.clocks() {
            let r = clock.read();
            let name = r.name.clone();
            gauge!("synclab_clock_offset_seconds", "clock" => name.clone()).set(r.true_offset / 1e9);
            gauge!("synclab_clock_frequency_correction_ratio", "clock" => name).set(r.frequency_correction_ppm / 1e6);
        }
        std::future::ready(())
    });
}

/// One Cristian sync of `device` that succeeded: the offset it measured and applied, its error bound
/// and its chosen exchange's round trip, in µs.
pub fn sync_done(device: &str, offset_us: f64, error_bound_us: f64, rtt_us: f64) {
    gauge!("synclab_sync_offset_seconds", "clock" => device.to_string()).set(offset_us / 1e6);
    gauge!("synclab_sync_error_bound_seconds", "clock" => device.to_string()).set(error_bound_us / 1e6);
    histogram!("synclab_sync_round_trip_seconds", "clock" => device.to_string()).record(rtt_us / 1e6);
    sync_outcome(device, "ok");
}

/// One Cristian sync of `device`, counted by `outcome` (`ok`, or why it failed: a fixed string).
pub fn sync_outcome(device: &str, outcome: &'static str) {
    counter!("synclab_syncs_total", "clock" => device.to_string(), "outcome" => outcome).increment(1);
}

/// Exports `device`'s sync counter at 0 for each of `outcomes` (at the device's start).
pub fn sync_outcomes(device: &str, outcomes: &[&'static str]) {
    for &outcome in outcomes {
        counter!("synclab_syncs_total", "clock" => device.to_string(), "outcome" => outcome).increment(0);
    }
}

/// Exports the Berkeley master's counters at 0 (at its start): its rounds, and the master left out of
/// the average (the members' names are known only as they register).
pub fn berkeley_counters() {
    counter!("synclab_berkeley_rounds_total").increment(0);
    counter!("synclab_berkeley_excluded_total", "member" => "master").increment(0);
}

/// Label values a peer may choose (member names) past which new ones collapse to `other`.
const MAX_MEMBER_LABELS: usize = 64;

/// `name` as a label value: itself while fewer than [`MAX_MEMBER_LABELS`] names have been seen (or
/// it is one of them), `other` after.
fn member_label(name: &str) -> String {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut seen = lock(&SEEN);
    if seen.contains(name) {
        return name.to_string();
    }
    if seen.len() < MAX_MEMBER_LABELS {
        seen.insert(name.to_string());
        return name.to_string();
    }
    "other".to_string()
}

/// One finished Berkeley round, and the members registered after it.
pub fn berkeley_round(round: &crate::proto::berkeley::Round, members: usize) {
    counter!("synclab_berkeley_rounds_total").increment(1);
    histogram!("synclab_berkeley_round_duration_seconds").record(round.duration_nanos as f64 / 1e9);
    gauge!("synclab_berkeley_members").set(members as f64);
    let offsets = round.members.iter().filter(|m| m.answered).map(|m| m.offset_nanos).chain([0]);
    let (min, max) = offsets.fold((i64::MAX, i64::MIN), |(lo, hi), o| (lo.min(o), hi.max(o)));
    gauge!("synclab_berkeley_spread_seconds").set(max.saturating_sub(min) as f64 / 1e9);
    for m in round.members.iter().filter(|m| m.excluded) {
        counter!("synclab_berkeley_excluded_total", "member" => member_label(&m.name)).increment(1);
    }
    if !round.master_included {
        counter!("synclab_berkeley_excluded_total", "member" => "master").increment(1);
    }
}

/// An election node's published state, as gauges.
pub fn election_state(state: &crate::proto::election::NodeState) {
    gauge!("synclab_election_term").set(state.term as f64);
    gauge!("synclab_election_coordinator").set(state.coordinator as f64);
    let ruling = state.role == crate::proto::election::Role::Coordinator as i32;
    gauge!("synclab_election_is_coordinator").set(if ruling { 1.0 } else { 0.0 });
    gauge!("synclab_election_availability").set(state.availability);
    counter!("synclab_election_leader_changes_total").absolute(state.leader_changes);
}

/// Exports every election counter at 0 for each of its known label values (call it once, at the
/// node's start): the reasons, and each message kind with every direction and outcome it can have.
pub fn election_counters() {
    use synclab_core::election::Kind;
    for reason in REASON_KINDS.iter().map(|(_, label)| *label).chain(["other"]) {
        counter!("synclab_elections_total", "reason" => reason).increment(0);
    }
    // Ok is an answer, counted with the Election it answers.
    for kind in Kind::ALL.into_iter().filter(|&k| k != Kind::Ok).map(Kind::as_str) {
        for (direction, outcome) in
            [("sent", "answered"), ("sent", "refused"), ("sent", "failed"), ("received", "accepted"), ("received", "rejected")]
        {
            counter!("synclab_election_messages_total", "kind" => kind, "direction" => direction, "outcome" => outcome).increment(0);
        }
    }
    counter!("synclab_election_messages_total", "kind" => Kind::Election.as_str(), "direction" => "sent", "outcome" => "withdrawn")
        .increment(0);
    counter!("synclab_election_leader_changes_total").increment(0);
}

/// What an election's reason contains, and its label.
const REASON_KINDS: &[(&str, &str)] = &[
    ("startup", "startup"),
    ("asked to", "asked"),
    ("silent", "coordinator_silent"),
    ("lost its connection", "coordinator_connection_lost"),
    ("said goodbye", "coordinator_goodbye"),
    ("lower coordinator", "lower_coordinator"),
    ("ring election from", "ring_election"),
    ("election from", "election_message"),
    ("no coordinator", "no_coordinator"),
    ("no announcement", "no_announcement"),
    ("timed out", "timed_out"),
];

/// The kind of an election's reason, as a label (the reasons name nodes; the label does not).
pub fn election_reason(reason: &str) -> &'static str {
    REASON_KINDS.iter().find(|(pattern, _)| reason.contains(pattern)).map_or("other", |(_, kind)| kind)
}

/// An election began on this node, for `reason`.
pub fn election_began(reason: &str) {
    counter!("synclab_elections_total", "reason" => election_reason(reason)).increment(1);
}

/// An election message as the node records it for its watchers: `Answered` and `Failed` count as
/// sent (answered, refused or failed), `Received` as received (accepted or rejected); `Sent` itself is
/// counted when its answer comes.
pub fn election_message_event(direction: crate::proto::election::message_event::Direction, kind: &'static str, ok: bool) {
    use crate::proto::election::message_event::Direction;
    match direction {
        Direction::Answered => election_message(kind, "sent", if ok { "answered" } else { "refused" }),
        Direction::Failed => election_message(kind, "sent", "failed"),
        Direction::Received => election_message(kind, "received", if ok { "accepted" } else { "rejected" }),
        Direction::Sent | Direction::Unspecified => {}
    }
}

/// One election message sent (`direction` "sent", outcome answered/refused/failed) or received
/// (outcome accepted/rejected). `kind` is one of the protocol's fixed message kinds.
pub fn election_message(kind: &'static str, direction: &'static str, outcome: &'static str) {
    counter!("synclab_election_messages_total", "kind" => kind, "direction" => direction, "outcome" => outcome).increment(1);
}

/// The metrics listener could not listen.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: std::net::SocketAddr,
    pub source: std::io::Error,
}

/// Serves `/metrics` on `addr` until `stop` (see [`web`] for the limits), recording from now on: over
/// HTTPS when the process has `tls`, where a client certificate is required and only
/// [`crate::tls::authz::METRICS_READERS`] are answered. Returns the bound address and the server's task.
pub async fn serve(
    addr: std::net::SocketAddr,
    tls: Option<&crate::tls::Tls>,
    stop: Stop,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), BindError> {
    install();
    let bind = async { tokio::net::TcpListener::bind(addr).await.and_then(|l| Ok((l.local_addr()?, l))) };
    let (bound, listener) = bind.await.map_err(|source| BindError { addr, source })?;
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async { ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render().await) }),
    );
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %bound, "serving Prometheus metrics at {scheme}://{bound}/metrics");
    let task = tokio::spawn(web::serve_with(listener, router, web::HttpLimits::metrics(), tls.map(web::HttpTls::metrics), stop));
    Ok((bound, task))
}
