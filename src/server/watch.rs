//! Watch streams (`WatchLeader`, `WatchRounds`) with bounds: a cap on how many are open, an end with a
//! clear status when the server stops, and a watcher too slow to keep up is ended rather than buffered
//! for.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use super::Stop;

/// A stream of answers for a watch RPC.
pub type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What a watch stream yields: an item, or the news that the watcher fell behind.
pub enum Watched<T> {
    Item(T),
    /// The watcher missed items: it is ended with RESOURCE_EXHAUSTED and may reconnect.
    Lagged(u64),
}

/// The open watch streams of one service, at most `max`.
#[derive(Debug, Clone)]
pub struct Watchers {
    permits: Arc<Semaphore>,
    max: usize,
}

impl Watchers {
    /// Room for `max` open streams.
    pub fn new(max: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max)), max }
    }

    /// A place for one more stream, or RESOURCE_EXHAUSTED when all are taken.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted(format!("{} watch streams are open already; try again later", self.max)))
    }

    /// Serves `items` until `stop`, then ends the stream with UNAVAILABLE. A lagging watcher is ended
    /// with RESOURCE_EXHAUSTED. The stream holds its place among the watchers until it ends.
    pub fn stream<T: Send + 'static>(
        &self,
        items: impl Stream<Item = Watched<T>> + Send + 'static,
        stop: Stop,
    ) -> Result<WatchStream<T>, Status> {
        let permit = self.admit()?;
        let stopping = Box::pin(async move { stop.wait().await });
        let items = items.take_until(stopping);
        let ended = futures::stream::once(async { Watched::Lagged(u64::MAX) });
        let stream = items.chain(ended).scan((false, permit), |(done, _permit), watched| {
            if *done {
                return futures::future::ready(None);
            }
            let next = match watched {
                Watched::Item(item) => Ok(item),
                Watched::Lagged(u64::MAX) => {
                    *done = true;
                    Err(Status::unavailable("the server is shutting down"))
                }
                Watched::Lagged(missed) => {
                    *done = true;
                    Err(Status::resource_exhausted(format!("this watcher fell {missed} updates behind and was ended; watch again")))
                }
            };
            futures::future::ready(Some(next))
        });
        Ok(Box::pin(stream))
    }
}
