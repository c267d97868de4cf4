//! `synclab.clock.v1.Clock`: the ground-truth reading every synclab process serves.

use tonic::{Request, Response, Status};

use super::{ClockSet, ClockSetError};
use crate::proto::clock::clock_server::Clock;
use crate::proto::clock::{ReadRequest, ReadResponse};
use crate::proto::nanos_to_timestamp;

/// Serves `Clock/Read` for a process's clocks.
#[derive(Debug, Clone)]
pub struct ClockService {
    clocks: ClockSet,
}

impl ClockService {
    /// Serves the given clocks.
    pub fn new(clocks: ClockSet) -> Self {
        Self { clocks }
    }
}

#[tonic::async_trait]
impl Clock for ClockService {
    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let name = &request.get_ref().clock;
        let clock = self.clocks.get(name).map_err(status)?;
        let r = clock.read();
        Ok(Response::new(ReadResponse {
            clock: r.name,
            clock_time: Some(nanos_to_timestamp(r.clock)),
            true_time: Some(nanos_to_timestamp(r.host)),
            true_offset_nanos: r.true_offset.round() as i64,
            drift_ppm: r.drift_ppm,
            frequency_correction_ppm: r.frequency_correction_ppm,
            adjustments: r.adjustments,
            steps: r.steps,
            pending_slew_nanos: r.pending_slew.round() as i64,
        }))
    }
}

/// The status for a clock that cannot be found.
pub fn status(e: ClockSetError) -> Status {
    match e {
        ClockSetError::Unknown { .. } => Status::not_found(e.to_string()),
        ClockSetError::Ambiguous { .. } => Status::invalid_argument(e.to_string()),
        ClockSetError::Empty => Status::failed_precondition(e.to_string()),
    }
}
