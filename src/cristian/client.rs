//! The client side of Cristian's algorithm: syncs one device's clock against a time server.
//!
//! It keeps a connection of its own, whose reads and writes are stamped ([`crate::net`]), so T1 and T4
//! are the times the request left and the answer arrived at the socket. Core's sampler
//! (`synclab_core::sampler`) pairs each exchange with the answer's real transmit time that the server
//! reports in its next answer (NTP's interleaved mode) and chooses the sample. Repeated syncs can
//! discipline the clock's frequency ([`discipline_clock`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use serde::Serialize;
use synclab_core::clock::{AdjustmentKind, ClockError};
use synclab_core::cristian::{CristianError, Estimator, Exchange};
use synclab_core::discipline::Discipline;
use synclab_core::sampler::{Choice, Completed, Earlier, Sampler, Transmit};
use tonic::transport::Channel;

use crate::clock::LiveClock;
use crate::net::ClientStamps;
use crate::proto::time::GetTimeRequest;
use crate::proto::time::time_service_client::TimeServiceClient;
use crate::proto::{TimestampError, format_rfc3339, nanos_to_timestamp, timestamp_to_nanos};
use crate::rpc::{Dialer, RpcError, endpoint, request, with_deadline};

/// Why a sync failed. Nothing is applied to the clock when it does.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The call failed (unreachable, deadline, an error status).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// A timestamp in the answer is malformed or absurd.
    #[error("{server} sent a bad timestamp: {source}")]
    BadTimestamp { server: String, source: TimestampError },
    /// The answer's timestamps are inconsistent.
    #[error("{server} sent an impossible exchange: {source}")]
    BadExchange { server: String, source: CristianError },
    /// The answer does not echo the request's send time.
    #[error("{server} answered a different request (origin time not echoed)")]
    Mismatch { server: String },
    /// The NTP server's reply failed a check (a kiss-o'-death among them).
    #[error("{server}: {source}")]
    Ntp { server: String, source: synclab_core::ntp::ReplyError },
    /// NTS failed: its key establishment, or a NAK from the NTP server (`crate::ntp::nts::NtsError`,
    /// boxed: the NTP module sits above this one).
    #[error("{server}: NTS: {source}")]
    Nts { server: String, source: Box<dyn std::error::Error + Send + Sync> },
    /// The NTP socket failed, or no valid reply came in time.
    #[error("{server}: {source}")]
    Io { server: String, source: std::io::Error },
    /// The correction could not be applied to the local clock.
    #[error("cannot correct the clock: {0}")]
    Clock(#[from] ClockError),
}

/// What one Cristian sync of one device did, in the units people read.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// The device (clock) that was synced.
    pub device: String,
    /// The server's address.
    pub server: String,
    /// The server's clock name.
    pub server_name: String,
    /// The server's time T3 of the chosen sample, RFC 3339.
    pub server_time: String,
    /// Round trip of the chosen sample, µs (monotonic clock).
    pub rtt_us: f64,
    /// NTP delay δ of the chosen sample (round trip less server processing), µs.
    pub delay_us: f64,
    /// The correction applied, µs (positive = clock set ahead).
    pub offset_us: f64,
    /// Cristian's T3 + RTT/2 estimate, µs.
    pub cristian_offset_us: f64,
    /// NTP's four-timestamp estimate, µs.
    pub ntp_offset_us: f64,
    /// The estimator whose offset was applied.
    pub estimator: Estimator,
    /// The true offset is within ± this of the estimate, µs.
    pub error_bound_us: f64,
    /// Exchanges taken.
    pub samples: usize,
    /// Whether the chosen exchange used the answer's real transmit time (interleaved mode).
    pub interleaved: bool,
    /// Whether the estimate used the kernel's receive timestamps.
    pub kernel_timestamps: bool,
    /// Whether the correction stepped or is slewing the clock.
    pub adjustment: AdjustmentKind,
    /// The clock's true error before the sync, µs (ground truth).
    pub true_offset_before_us: f64,
    /// The clock's true error after the sync (once any slew completes), µs (ground truth).
    pub true_error_us: f64,
    /// The clock's reading right after the sync, RFC 3339.
    pub synced_time: String,
}

/// One request and its answer, with the client's T1 and T4 taken at the socket.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The exchange with the server's T3 as read in its handler.
    pub exchange: Exchange,
    /// The exchange as the sampler takes it: named by the request's `client_send_time`, with the
    /// previous answer's real transmit time if the server reported it.
    completed: Completed<prost_types::Timestamp>,
    root_dispersion_nanos: u64,
    server_name: String,
}

/// A Cristian client of one time server, for one device's clock.
///
/// It keeps a connection of its own, whose reads and writes are stamped ([`crate::net`]), so T1 and T4
/// are the times the request left and the answer arrived at the socket, and each exchange is paired
/// with the answer's real transmit time that the server reports in its next answer (NTP's interleaved
/// mode).
#[derive(Debug, Clone)]
pub struct CristianClient {
    server: String,
    client: TimeServiceClient<Channel>,
    timeout: Duration,
    stamps: Arc<ClientStamps>,
}

impl CristianClient {
    /// A plaintext client of the time server at `server` (`host:port` or URL); `timeout` bounds every
    /// call.
    pub fn new(server: &str, timeout: Duration) -> Result<Self, RpcError> {
        Self::dial(server, timeout, &Dialer::plaintext())
    }

    /// A client of the time server at `server` that dials with `dialer` (plaintext or TLS; either way
    /// the stamps are taken at the socket, beneath TLS, and the message ends found above it).
    pub fn dial(server: &str, timeout: Duration, dialer: &Dialer) -> Result<Self, RpcError> {
        let endpoint = endpoint(server, timeout)?;
        let stamps = Arc::new(ClientStamps::default());
        let (connector_stamps, dialer) = (stamps.clone(), dialer.clone());
        let connector = tower::service_fn(move |uri: tonic::transport::Uri| {
            let (stamps, dialer) = (connector_stamps.clone(), dialer.clone());
            async move { Ok::<_, std::io::Error>(TokioIo::new(dialer.connect_stamped(&uri, timeout, stamps).await?)) }
        });
        let channel = endpoint.connect_with_connector_lazy(connector);
        Ok(Self { server: server.to_string(), client: TimeServiceClient::new(channel), timeout, stamps })
    }

    /// The server's address.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// One request and answer. T1 and T4 are read on `clock` at the socket; the round trip between them
    /// is measured on the monotonic clock.
    pub async fn sample(&mut self, clock: &LiveClock) -> Result<Sample, SyncError> {
        // The clock is read between two monotonic instants: a thread preempted in between (by a busy
        // scheduler) must not shift T1 and T4 against the clock. T1 is placed as early and T4 as late as
        // that pairing allows, so the true exchange lies within [T1, T4] and the bound (half the round
        // trip less the server's time) covers it; a preemption only widens the bound.
        let before = Instant::now();
        let base = clock.now();
        let base_instant = Instant::now();
        let pairing = nanos_between(before, base_instant);
        let origin = nanos_to_timestamp(base);
        self.stamps.clear();
        let req = request(GetTimeRequest { client_send_time: Some(origin) }, self.timeout);
        let answer = with_deadline(&self.server, self.timeout, self.client.get_time(req)).await;
        let end = Instant::now();
        let answer = answer?;
        // Socket stamps when they are there and consistent, else the times around the call.
        let (sent, received) = self.stamps.sent_and_received();
        let i1 = sent.filter(|&s| s >= base_instant && s <= end).unwrap_or(base_instant);
        let i4 = received.filter(|&r| r >= i1 && r <= end).unwrap_or(end);
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let t1 = base.saturating_add(nanos(i1 - base_instant));
        let t4 = t1.saturating_add(nanos(i4 - i1)).saturating_add(pairing);
        let kernel_t4 = self
            .stamps
            .received_by_kernel()
            .filter(|&k| k >= i1 && k <= i4)
            .map(|k| t1.saturating_add(nanos(k - i1)).saturating_add(pairing));

        let server = &self.server;
        let bad = |source| SyncError::BadTimestamp { server: server.clone(), source };
        let t2 = timestamp_to_nanos(answer.receive_time.as_ref(), "receive_time").map_err(bad)?;
        let t3 = timestamp_to_nanos(answer.transmit_time.as_ref(), "transmit_time").map_err(bad)?;
        if answer.origin_time.is_some_and(|o| o != origin) {
            return Err(SyncError::Mismatch { server: server.clone() });
        }
        let previous = match (answer.previous_origin_time, answer.previous_transmit_time) {
            (Some(o), Some(t)) => Some((o, timestamp_to_nanos(Some(&t), "previous_transmit_time").map_err(bad)?)),
            _ => None,
        };
        let kernel_t2 = match answer.kernel_receive_time.as_ref() {
            Some(ts) => Some(timestamp_to_nanos(Some(ts), "kernel_receive_time").map_err(bad)?),
            None => None,
        };
        let exchange = Exchange::new(t1, t2, t3, t4)
            .map_err(|source| SyncError::BadExchange { server: server.clone(), source })?
            .with_kernel_stamps(kernel_t2, kernel_t4);
        let completed = Completed {
            key: origin,
            t1,
            t2,
            transmit: Transmit::Early(t3),
            t4,
            kernel_t2,
            kernel_t4,
            kernel_t1_t4: false,
            earlier: previous.map(|(key, t3)| Earlier { key, t3 }),
        };
        Ok(Sample { exchange, completed, root_dispersion_nanos: answer.root_dispersion_nanos, server_name: answer.server_name })
    }

    /// Takes `samples` exchanges (one request more, for the last one's real transmit time), estimates the
    /// offset from the minimum-round-trip one, and corrects `clock` by it. Any failed request fails the
    /// sync, and nothing is applied.
    pub async fn sync(&mut self, clock: &LiveClock, samples: usize, estimator: Estimator) -> Result<SyncReport, SyncError> {
        let server = self.server.clone();
        let bad = |source| SyncError::BadExchange { server: server.clone(), source };
        let mut sampler = Sampler::new();
        let mut last = None;
        for _ in 0..=samples.max(1) {
            let sample = self.sample(clock).await?;
            sampler.take(sample.completed).map_err(bad)?;
            last = Some(sample);
        }
        let last = last.expect("at least one sample was taken");
        let choice = sampler.choose(estimator, last.root_dispersion_nanos).map_err(bad)?;
        Ok(apply_estimate(clock, &self.server, last.server_name, &choice)?)
    }
}

/// Corrects `clock` by the chosen sample's estimate and reports the sync, ground truth included: the one
/// report of both protocols (gRPC here, NTP in `crate::ntp`), so their outputs compare line by line.
pub fn apply_estimate(clock: &LiveClock, server: &str, server_name: String, choice: &Choice) -> Result<SyncReport, ClockError> {
    let est = &choice.estimate;
    let before = clock.read().true_offset;
    let adjustment = clock.adjust(est.offset_nanos.round() as i64)?;
    let after = clock.settled_offset();
    Ok(SyncReport {
        device: clock.name().to_string(),
        server: server.to_string(),
        server_name,
        server_time: format_rfc3339(est.server_time_nanos),
        rtt_us: est.round_trip_nanos as f64 / 1e3,
        delay_us: est.delay_nanos as f64 / 1e3,
        offset_us: est.offset_nanos / 1e3,
        cristian_offset_us: est.cristian_offset_nanos / 1e3,
        ntp_offset_us: est.ntp_offset_nanos / 1e3,
        estimator: est.estimator,
        error_bound_us: est.error_bound_nanos / 1e3,
        samples: est.samples,
        interleaved: choice.interleaved,
        kernel_timestamps: choice.kernel,
        adjustment,
        true_offset_before_us: before / 1e3,
        true_error_us: after / 1e3,
        synced_time: format_rfc3339(clock.now()),
    })
}

/// The frequency discipline of a device synced again and again: feeds the sync `report` describes to
/// `discipline` and sets `clock`'s frequency correction to what it has learnt, so the clock drifts less
/// until the next sync. Returns the correction, ppm.
pub fn discipline_clock(clock: &LiveClock, discipline: &mut Discipline, report: &SyncReport) -> Result<f64, ClockError> {
    clock.with(|c, host| discipline.synced(c, host, report.offset_us * 1e3, report.adjustment))
}

/// Nanoseconds from `earlier` to `later` (zero if `later` is not later; saturated).
fn nanos_between(earlier: Instant, later: Instant) -> i64 {
    i64::try_from(later.saturating_duration_since(earlier).as_nanos()).unwrap_or(i64::MAX)
}
