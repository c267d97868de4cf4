//! `synclab dashboard`: a live web page of the lab, served by this process.
//!
//! It follows the services as `synclab berkeley watch` and `synclab election watch` do, over gRPC:
//! every clock through `Clock/Read` (twice a second), the Berkeley master through `WatchRounds`, each
//! election node through `WatchLeader` (pushed at once) and `GetState` (polled, for reachability and
//! message counts), and the Cristian devices' last error bounds from their `/metrics`. Twice a second it
//! renders the page's parts (charts as SVG with [`crate::plot`], tables as HTML) once, and every open
//! page gets them over server-sent events: no reload, no script from elsewhere, no build step.

mod observed;
pub mod view;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use futures::StreamExt;
use tokio::sync::watch;

use crate::lock::lock;
use crate::proto::berkeley::WatchRoundsRequest;
use crate::proto::berkeley::berkeley_master_client::BerkeleyMasterClient;
use crate::proto::clock::ReadRequest;
use crate::proto::clock::clock_client::ClockClient;
use crate::proto::election::election_service_client::ElectionServiceClient;
use crate::proto::election::{GetStateRequest, NodeState, WatchLeaderRequest};
use crate::rpc::{Dialer, request};
use crate::server::Stop;
use observed::{ClockTrack, KEEP, NodeView, Observed, SeenSync, WINDOW_SECS, agreement_changed, disagreement};
use tonic::transport::Channel;

/// What the dashboard follows.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// Clocks to read, as (name, host:port).
    pub clocks: Vec<(String, String)>,
    /// Cristian devices whose error bound to read, as (clock name, metrics host:port).
    pub devices: Vec<(String, String)>,
    /// The Berkeley master.
    pub master: String,
    /// The election nodes.
    pub nodes: Vec<String>,
    /// Deadline of each call.
    pub timeout: Duration,
    pub dialer: Dialer,
}

/// How often clocks are read, nodes polled and the page's parts rendered.
const TICK: Duration = Duration::from_millis(500);

/// The dashboard: what it has seen and the page's latest parts.
#[derive(Clone)]
pub struct Dashboard {
    config: Arc<DashboardConfig>,
    observed: Arc<Mutex<Observed>>,
    started: i64,
    parts: watch::Sender<Arc<String>>,
}

impl Dashboard {
    /// A dashboard following what `config` names (nothing is called until [`Dashboard::run`]).
    pub fn new(config: DashboardConfig) -> Self {
        let observed = Observed {
            order: config.clocks.iter().map(|(n, _)| n.clone()).collect(),
            clocks: config.clocks.iter().map(|(n, a)| (n.clone(), ClockTrack { addr: a.clone(), ..ClockTrack::default() })).collect(),
            devices: config.devices.iter().map(|(n, _)| n.clone()).collect(),
            nodes: config.nodes.iter().map(|a| NodeView { addr: a.clone(), ..NodeView::default() }).collect(),
            ..Observed::default()
        };
        Self {
            config: Arc::new(config),
            observed: Arc::new(Mutex::new(observed)),
            started: crate::clock::host_now(),
            parts: watch::channel(Arc::new("{}".to_string())).0,
        }
    }

    /// Seconds since the dashboard started, at host time `nanos`.
    fn since_start(&self, nanos: i64) -> f64 {
        (nanos - self.started) as f64 / 1e9
    }

    /// Follows everything until `stop`.
    pub async fn run(self, stop: Stop) {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.clone().follow_clocks());
        tasks.spawn(self.clone().follow_rounds());
        for i in 0..self.config.nodes.len() {
            tasks.spawn(self.clone().follow_leader(i));
        }
        tasks.spawn(self.clone().poll_nodes());
        tasks.spawn(self.clone().render_loop());
        stop.wait().await;
        tasks.shutdown().await;
    }

    /// The router: the page, its event stream, and the current parts as JSON.
    pub fn router(&self) -> axum::Router {
        let events = self.parts.clone();
        let current = self.parts.clone();
        axum::Router::new()
            .route("/", axum::routing::get(|| async { Html(view::PAGE) }))
            .route(
                "/events",
                axum::routing::get(move || {
                    let stream = tokio_stream::wrappers::WatchStream::new(events.subscribe())
                        .map(|parts| Ok::<_, std::convert::Infallible>(Event::default().event("update").data(parts.as_str())));
                    async move { Sse::new(stream).keep_alive(KeepAlive::default()) }
                }),
            )
            .route(
                "/state.json",
                axum::routing::get(move || {
                    let parts = current.borrow().clone();
                    async move { ([(http::header::CONTENT_TYPE, "application/json")], parts.as_str().to_string()).into_response() }
                }),
            )
    }

    /// Renders the page's parts (see [`view`]) now.
    pub fn render(&self) -> String {
        let observed = lock(&self.observed);
        view::render(&observed, self.since_start(crate::clock::host_now()))
    }

    async fn render_loop(self) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            let parts = self.render();
            self.parts.send_replace(Arc::new(parts));
        }
    }

    async fn follow_clocks(self) {
        let timeout = self.config.timeout;
        // One channel per clock, kept (it reconnects by itself).
        let clients: Vec<Option<ClockClient<Channel>>> =
            self.config.clocks.iter().map(|(_, addr)| self.config.dialer.channel(addr, timeout).ok().map(ClockClient::new)).collect();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            let readings = futures::future::join_all(clients.iter().map(|client| async move {
                let mut client = client.clone().ok_or(())?;
                let call = client.read(request(ReadRequest { clock: String::new() }, timeout));
                match tokio::time::timeout(timeout, call).await {
                    Ok(Ok(r)) => Ok(r.into_inner()),
                    _ => Err(()),
                }
            }))
            .await;
            let bounds = futures::future::join_all(
                self.config.devices.iter().map(|(name, addr)| device_bound(addr, name, self.config.dialer.tls(), self.config.timeout)),
            )
            .await;
            let now = self.since_start(crate::clock::host_now());
            let mut o = lock(&self.observed);
            let before = disagreement(&o);
            let mut synced = Vec::new();
            for ((name, _), reading) in self.config.clocks.iter().zip(readings) {
                let Some(track) = o.clocks.get_mut(name) else { continue };
                match reading {
                    Ok(r) => {
                        track.reachable = true;
                        // A sync (or any correction) since the last reading.
                        if !track.offsets.is_empty() && r.adjustments > track.adjustments {
                            synced.push(name.clone());
                        }
                        track.adjustments = r.adjustments;
                        track.offsets.push_back((now, r.true_offset_nanos as f64 / 1e9));
                    }
                    Err(_) => track.reachable = false,
                }
                while track.offsets.front().is_some_and(|p| p.0 < now - WINDOW_SECS) {
                    track.offsets.pop_front();
                }
            }
            for ((name, _), bound) in self.config.devices.iter().zip(bounds) {
                if let (Some(track), Some(bound)) = (o.clocks.get_mut(name), bound) {
                    track.bounds.push_back((now, bound));
                    while track.bounds.front().is_some_and(|p| p.0 < now - WINDOW_SECS) {
                        track.bounds.pop_front();
                    }
                }
            }
            let after = disagreement(&o);
            let devices = o.devices.clone();
            for device in synced.into_iter().filter(|d| devices.contains(d)) {
                if let (Some(before), Some(after)) = (before, after) {
                    o.syncs.push_back(SeenSync { at: now, device, before, after });
                    if o.syncs.len() > KEEP {
                        o.syncs.pop_front();
                    }
                }
            }
        }
    }

    async fn follow_rounds(self) {
        loop {
            if let Ok(channel) = self.config.dialer.channel(&self.config.master, self.config.timeout) {
                let mut client = BerkeleyMasterClient::new(channel);
                if let Ok(stream) = client.watch_rounds(WatchRoundsRequest {}).await {
                    lock(&self.observed).master_reachable = true;
                    let mut stream = stream.into_inner();
                    while let Ok(Some(round)) = stream.message().await {
                        let mut o = lock(&self.observed);
                        for m in round.members.iter().filter(|m| m.excluded) {
                            if o.exclusions.len() < 64 || o.exclusions.contains_key(&m.name) {
                                let e = o.exclusions.entry(m.name.clone()).or_insert((round.number, round.number, 0));
                                e.1 = round.number;
                                e.2 += 1;
                            }
                        }
                        o.rounds.push_back(round);
                        if o.rounds.len() > KEEP {
                            o.rounds.pop_front();
                        }
                    }
                }
            }
            lock(&self.observed).master_reachable = false;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn follow_leader(self, index: usize) {
        let addr = self.config.nodes[index].clone();
        loop {
            if let Ok(channel) = self.config.dialer.channel(&addr, self.config.timeout) {
                let mut client = ElectionServiceClient::new(channel);
                if let Ok(stream) = client.watch_leader(WatchLeaderRequest {}).await {
                    let mut stream = stream.into_inner();
                    while let Ok(Some(state)) = stream.message().await {
                        self.node_seen(index, Some(state));
                    }
                }
            }
            tokio::time::sleep(TICK).await;
        }
    }

    async fn poll_nodes(self) {
        let timeout = self.config.timeout;
        let clients: Vec<Option<ElectionServiceClient<Channel>>> =
            self.config.nodes.iter().map(|addr| self.config.dialer.channel(addr, timeout).ok().map(ElectionServiceClient::new)).collect();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let calls = clients.iter().map(|client| async move {
                let mut client = client.clone()?;
                let call = client.get_state(request(GetStateRequest {}, timeout));
                tokio::time::timeout(timeout, call).await.ok()?.ok().map(|r| r.into_inner())
            });
            let states = futures::future::join_all(calls).await;
            for (i, state) in states.into_iter().enumerate() {
                self.node_seen(i, state);
            }
        }
    }

    /// A node answered with `state`, or (None) did not answer.
    fn node_seen(&self, index: usize, state: Option<NodeState>) {
        let now = crate::clock::host_now();
        let since = self.since_start(now);
        let mut o = lock(&self.observed);
        let view = &mut o.nodes[index];
        match state {
            Some(s) => {
                view.reachable = true;
                view.last_seen = Some(now);
                if let Some(old) = &view.state
                    && s.term < old.term
                    && s.id == old.id
                {
                    // A stale answer (the stream and the poll raced): keep the newer.
                } else {
                    view.state = Some(s);
                }
            }
            None => view.reachable = false,
        }
        if let Some(a) = o.nodes.iter().find_map(|n| n.state.as_ref()).map(|s| s.algorithm.clone()) {
            o.algorithm = a;
        }
        agreement_changed(&mut o, since);
    }
}

/// A device's last error bound from its `/metrics` (`synclab_sync_error_bound_seconds{clock="NAME"}`),
/// over HTTPS with the dashboard's certificate when it has TLS.
async fn device_bound(addr: &str, name: &str, tls: Option<&crate::tls::Tls>, timeout: Duration) -> Option<f64> {
    // A metrics page is small; read at most 1 MiB of it.
    let answer = crate::observe::web::get(addr, "/metrics", tls, timeout, 1 << 20).await.ok()?;
    let text = String::from_utf8_lossy(&answer);
    let series = format!("synclab_sync_error_bound_seconds{{clock=\"{name}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.trim().parse().ok())
}
