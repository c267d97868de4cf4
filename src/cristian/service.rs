//! `synclab.time.v1.TimeService`: the server side of Cristian's algorithm, and the classroom baseline.

use tonic::{Request, Response, Status};

use crate::clock::{ClockService, ClockSet, LiveClock, host_now};
use crate::net::ConnectionInfo;
use crate::proto::clock::clock_server::ClockServer;
use crate::proto::time::baseline_time_service_server::BaselineTimeService;
use crate::proto::time::baseline_time_service_server::BaselineTimeServiceServer;
use crate::proto::time::time_service_server::TimeService;
use crate::proto::time::time_service_server::TimeServiceServer;
use crate::proto::time::{GetTimeRequest, GetTimeResponse, GetTimeStringRequest, GetTimeStringResponse};
use crate::proto::{nanos_to_timestamp, timestamp_to_nanos};
use crate::server::{Server, ServerError, Services};
use crate::tls::Tls;

/// Answers `GetTime` from a virtual clock.
#[derive(Debug, Clone)]
pub struct TimeServer {
    clock: LiveClock,
    root_dispersion_nanos: u64,
}

impl TimeServer {
    /// A time server reading `clock`, which it claims is within `root_dispersion_nanos` of true time.
    pub fn new(clock: LiveClock, root_dispersion_nanos: u64) -> Self {
        Self { clock, root_dispersion_nanos }
    }
}

#[tonic::async_trait]
impl TimeService for TimeServer {
    async fn get_time(&self, request: Request<GetTimeRequest>) -> Result<Response<GetTimeResponse>, Status> {
        let origin = match request.get_ref().client_send_time.as_ref() {
            None => None,
            Some(ts) => {
                timestamp_to_nanos(Some(ts), "client_send_time").map_err(|e| Status::invalid_argument(e.to_string()))?;
                Some(*ts)
            }
        };
        // T2 is when the request's HEADERS were read off the socket, and the previous answer's real
        // transmit time comes from the socket too, when the listener stamps them (synclab's does).
        let stamps = request.extensions().get::<ConnectionInfo>().map(|info| &info.stamps);
        let arrival = stamps.map(|s| s.arrival_host_nanos()).filter(|&t| t > 0).unwrap_or_else(host_now);
        let kernel_arrival = stamps.map(|s| s.kernel_arrival_host_nanos()).filter(|&t| t > 0 && t <= arrival);
        let previous = stamps.and_then(|s| s.answering(origin));
        let mut response = GetTimeResponse {
            receive_time: Some(nanos_to_timestamp(self.clock.at(arrival))),
            transmit_time: None,
            origin_time: origin,
            root_dispersion_nanos: self.root_dispersion_nanos,
            server_name: self.clock.name().to_string(),
            previous_origin_time: previous.map(|p| p.origin),
            previous_transmit_time: previous.map(|p| nanos_to_timestamp(self.clock.at(p.transmit_host_nanos))),
            kernel_receive_time: kernel_arrival.map(|t| nanos_to_timestamp(self.clock.at(t))),
        };
        // T3 last, as close to handing the answer to the transport as a handler can be.
        response.transmit_time = Some(nanos_to_timestamp(self.clock.now()));
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl BaselineTimeService for TimeServer {
    async fn get_time_string(&self, _: Request<GetTimeStringRequest>) -> Result<Response<GetTimeStringResponse>, Status> {
        let now = self.clock.now();
        let time = format!("{}.{:09}", now.div_euclid(1_000_000_000), now.rem_euclid(1_000_000_000));
        Ok(Response::new(GetTimeStringResponse { time }))
    }
}

/// Everything a time server serves: the time service and its baseline, `Clock/Read` for its clock,
/// health and reflection.
pub async fn server(clock: LiveClock, root_dispersion_nanos: u64, tls: Option<&Tls>) -> Result<Server, ServerError> {
    services(clock, root_dispersion_nanos, tls).build().await
}

/// The services of [`server`], before they are built, for a caller that adds more (e.g. the lab's).
pub fn services(clock: LiveClock, root_dispersion_nanos: u64, tls: Option<&Tls>) -> Services {
    let time = TimeServer::new(clock.clone(), root_dispersion_nanos);
    Services::new()
        .tls(tls)
        .service(TimeServiceServer::new(time.clone()))
        .service(BaselineTimeServiceServer::new(time))
        .service(ClockServer::new(ClockService::new(ClockSet::new(vec![clock]))))
}
