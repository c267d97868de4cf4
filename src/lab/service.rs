//! `synclab.lab.v1.Lab`: the faults an experiment injects into a process. Served only by processes
//! started with `--lab`; with mutual TLS, only to the `lab` identity.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use synclab_core::clock::check_drift_ppm;
use tonic::{Request, Response, Status};

use super::links::{LinkFault, LinkFaults};
use crate::clock::{ClockSet, LiveClock};
use crate::proto::lab::lab_server::{Lab, LabServer};
use crate::proto::lab::{BumpClockRequest, ClockFaultReply, SetDriftRequest, SetLinksReply, SetLinksRequest, StrobeRequest};
use crate::tls::authz::{Allowed, authorize};

/// The longest strobe, and its shortest period.
const MAX_STROBE: Duration = Duration::from_secs(600);
const MIN_STROBE_PERIOD: Duration = Duration::from_millis(10);
/// The largest bump or strobe amplitude: a day.
const MAX_BUMP_NANOS: i64 = 86_400 * 1_000_000_000;

/// What a process lets a lab break: its clocks, and its links if it has peers.
#[derive(Debug, Clone)]
pub struct LabService {
    clocks: ClockSet,
    links: Option<Arc<LinkFaults>>,
}

impl LabService {
    /// A lab service over these clocks and links.
    pub fn new(clocks: ClockSet, links: Option<Arc<LinkFaults>>) -> Self {
        Self { clocks, links }
    }

    /// The gRPC service.
    pub fn server(self) -> LabServer<LabService> {
        LabServer::new(self)
    }

    fn clock(&self, name: &str) -> Result<&LiveClock, Status> {
        self.clocks.get(name).map_err(crate::clock::service::status)
    }
}

fn duration(d: Option<prost_types::Duration>, field: &str) -> Result<Duration, Status> {
    let d = d.ok_or_else(|| Status::invalid_argument(format!("{field} is missing")))?;
    if d.seconds < 0 || d.nanos < 0 {
        return Err(Status::invalid_argument(format!("{field} is negative")));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

fn bump(amount: i64) -> Result<i64, Status> {
    if amount.unsigned_abs() > MAX_BUMP_NANOS as u64 {
        return Err(Status::invalid_argument(format!("{amount} ns is more than a day")));
    }
    Ok(amount)
}

fn reply(clock: &LiveClock) -> Response<ClockFaultReply> {
    Response::new(ClockFaultReply { true_offset_nanos: clock.read().true_offset.round() as i64 })
}

#[tonic::async_trait]
impl Lab for LabService {
    async fn bump_clock(&self, request: Request<BumpClockRequest>) -> Result<Response<ClockFaultReply>, Status> {
        authorize(&request, "Lab/BumpClock", Allowed::Identity("lab"))?;
        let r = request.into_inner();
        let (clock, by) = (self.clock(&r.clock)?, bump(r.by_nanos)?);
        clock.with(|c, host| c.step(host, by)).map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::warn!(clock = %clock.name(), by_nanos = by, "lab: clock bumped");
        Ok(reply(clock))
    }

    async fn set_drift(&self, request: Request<SetDriftRequest>) -> Result<Response<ClockFaultReply>, Status> {
        authorize(&request, "Lab/SetDrift", Allowed::Identity("lab"))?;
        let r = request.into_inner();
        let clock = self.clock(&r.clock)?;
        let ppm = check_drift_ppm(r.drift_ppm).map_err(|e| Status::invalid_argument(e.to_string()))?;
        clock.with(|c, host| c.set_drift(host, ppm)).map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::warn!(clock = %clock.name(), drift_ppm = ppm, "lab: drift changed");
        Ok(reply(clock))
    }

    async fn strobe(&self, request: Request<StrobeRequest>) -> Result<Response<ClockFaultReply>, Status> {
        authorize(&request, "Lab/Strobe", Allowed::Identity("lab"))?;
        let r = request.into_inner();
        let clock = self.clock(&r.clock)?.clone();
        let amplitude = bump(r.amplitude_nanos)?;
        let period = duration(r.period, "period")?;
        let length = duration(r.duration, "duration")?;
        if period < MIN_STROBE_PERIOD || length > MAX_STROBE {
            return Err(Status::invalid_argument(format!(
                "a strobe's period is at least {MIN_STROBE_PERIOD:?} and it lasts at most {MAX_STROBE:?}"
            )));
        }
        tracing::warn!(clock = %clock.name(), amplitude_nanos = amplitude, ?period, ?length, "lab: strobing the clock");
        let strobed = clock.clone();
        tokio::spawn(async move {
            let end = tokio::time::Instant::now() + length;
            let mut up = true;
            while tokio::time::Instant::now() < end {
                let by = if up { amplitude } else { -amplitude };
                if strobed.with(|c, host| c.step(host, by)).is_err() {
                    break;
                }
                up = !up;
                tokio::time::sleep(period / 2).await;
            }
            // Leave the clock where it started.
            if !up {
                let _ = strobed.with(|c, host| c.step(host, -amplitude));
            }
        });
        Ok(reply(&clock))
    }

    async fn set_links(&self, request: Request<SetLinksRequest>) -> Result<Response<SetLinksReply>, Status> {
        authorize(&request, "Lab/SetLinks", Allowed::Identity("lab"))?;
        let Some(links) = &self.links else {
            return Err(Status::failed_precondition("this process has no peers: there are no links to break"));
        };
        let r = request.into_inner();
        if r.links.len() > synclab_core::election::MAX_MEMBERS {
            return Err(Status::invalid_argument("more links than a group has members"));
        }
        let mut faults = BTreeMap::new();
        for link in r.links {
            let peer = crate::proto::to_id(link.peer, "peer")?;
            if faults.contains_key(&peer) {
                return Err(Status::invalid_argument(format!("two faults for the link to node {peer}")));
            }
            if !(0.0..=1.0).contains(&link.loss) {
                return Err(Status::invalid_argument(format!("loss {} is not a probability", link.loss)));
            }
            let delay = link.delay.map(|d| duration(Some(d), "delay")).transpose()?.unwrap_or_default();
            let jitter = link.jitter.map(|d| duration(Some(d), "jitter")).transpose()?.unwrap_or_default();
            if delay > Duration::from_secs(10) || jitter > Duration::from_secs(10) {
                return Err(Status::invalid_argument("a link's delay and jitter are at most 10 s"));
            }
            faults.insert(peer, LinkFault { drop: link.drop, delay, jitter, loss: link.loss });
        }
        let faulty = links.set(faults, r.seed).map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::warn!(faulty, "lab: link faults set");
        Ok(Response::new(SetLinksReply { faulty: faulty as u32 }))
    }
}
