//! Watch streams (`WatchLeader`, `WatchRounds`, election lines) with bounds: a cap on how many are
//! open, an end with a clear status when the server stops, and no place held for good by a watcher
//! that does not read. A watcher too slow to keep up is ended rather than buffered for; one that reads
//! nothing at all is never polled by the transport (its window is shut), so it cannot be told: its
//! place is given to the next watcher once an update has waited [`STALLED_AFTER`] for it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tonic::Status;

use super::Stop;
use crate::lock::lock;

/// A stream of answers for a watch RPC.
pub type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// How long an update may wait for a watcher before its place can go to another.
pub const STALLED_AFTER: Duration = Duration::from_secs(10);

/// What a watch stream yields: an item, or the news that the watcher fell behind.
pub enum Watched<T> {
    Item(T),
    /// The watcher missed items: it is ended with RESOURCE_EXHAUSTED and may reconnect.
    Lagged(u64),
}

/// One watcher's place.
#[derive(Debug)]
struct Slot {
    /// When it last took an item (ms since the watchers started).
    last_taken: AtomicU64,
    /// Its place was given to another watcher.
    evicted: AtomicBool,
}

#[derive(Debug)]
struct Inner {
    max: usize,
    started: Instant,
    /// When the service last published an update (ms since started; 0: never).
    published: AtomicU64,
    slots: Mutex<Vec<Arc<Slot>>>,
}

impl Inner {
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }
}

/// A watcher's hold on its place; gives the place back when dropped.
#[derive(Debug)]
pub struct Place {
    slot: Arc<Slot>,
    inner: Arc<Inner>,
}

impl Place {
    /// The watcher took an item.
    pub fn took(&self) {
        self.slot.last_taken.store(self.inner.now(), Ordering::Relaxed);
    }

    /// Whether its place went to another watcher (it should end).
    pub fn evicted(&self) -> bool {
        self.slot.evicted.load(Ordering::Relaxed)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        lock(&self.inner.slots).retain(|s| !Arc::ptr_eq(s, &self.slot));
    }
}

/// The open watch streams of one service, at most `max`.
#[derive(Debug, Clone)]
pub struct Watchers {
    inner: Arc<Inner>,
}

impl Watchers {
    /// Room for `max` open streams.
    pub fn new(max: usize) -> Self {
        Self { inner: Arc::new(Inner { max, started: Instant::now(), published: AtomicU64::new(0), slots: Mutex::default() }) }
    }

    /// The service published an update its watchers should take.
    pub fn published(&self) {
        self.inner.published.store(self.inner.now(), Ordering::Relaxed);
    }

    /// A place for one more stream. When all are taken, the place of a watcher that has left an update
    /// untaken for [`STALLED_AFTER`] is given to this one; otherwise RESOURCE_EXHAUSTED.
    pub fn admit(&self) -> Result<Place, Status> {
        let inner = &self.inner;
        let now = inner.now();
        let mut slots = lock(&inner.slots);
        if slots.len() >= inner.max {
            let published = inner.published.load(Ordering::Relaxed);
            let stalled_ms = u64::try_from(STALLED_AFTER.as_millis()).unwrap_or(u64::MAX);
            let stalled = (published > 0 && now.saturating_sub(published) >= stalled_ms)
                .then(|| slots.iter().position(|s| s.last_taken.load(Ordering::Relaxed) < published))
                .flatten();
            match stalled {
                Some(i) => {
                    let slot = slots.swap_remove(i);
                    slot.evicted.store(true, Ordering::Relaxed);
                    tracing::debug!("a watcher that took no update for {STALLED_AFTER:?} gave its place to a new one");
                }
                None => {
                    return Err(Status::resource_exhausted(format!("{} watch streams are open already; try again later", inner.max)));
                }
            }
        }
        let slot = Arc::new(Slot { last_taken: AtomicU64::new(now), evicted: AtomicBool::new(false) });
        slots.push(slot.clone());
        Ok(Place { slot, inner: inner.clone() })
    }

    /// Serves `items` until `stop`, then ends the stream with UNAVAILABLE. A lagging watcher, or one
    /// whose place went to another, is ended with RESOURCE_EXHAUSTED. The stream holds its place among
    /// the watchers until it ends.
    pub fn stream<T: Send + 'static>(
        &self,
        items: impl Stream<Item = Watched<T>> + Send + 'static,
        stop: Stop,
    ) -> Result<WatchStream<T>, Status> {
        let place = self.admit()?;
        let stopping = Box::pin(async move { stop.wait().await });
        let items = items.take_until(stopping);
        let ended = futures::stream::once(async { Watched::Lagged(u64::MAX) });
        let stream = items.chain(ended).scan((false, place), |(done, place), watched| {
            if *done {
                return futures::future::ready(None);
            }
            let next = match watched {
                Watched::Item(_) if place.evicted() => {
                    *done = true;
                    Err(Status::resource_exhausted("this watcher took no update for too long and its place went to another; watch again"))
                }
                Watched::Item(item) => {
                    place.took();
                    Ok(item)
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_and_a_stalled_watcher_gives_its_place_up() {
        // Watchers that started a minute ago, so times in the past can be said.
        let started = Instant::now().checked_sub(Duration::from_secs(60)).unwrap();
        let inner = Inner { max: 2, started, published: AtomicU64::new(0), slots: Mutex::default() };
        let watchers = Watchers { inner: Arc::new(inner) };
        let a = watchers.admit().unwrap();
        let b = watchers.admit().unwrap();
        assert_eq!(watchers.admit().unwrap_err().code(), tonic::Code::ResourceExhausted);
        drop(b);
        let b = watchers.admit().expect("a place was given back");
        let now = watchers.inner.now();
        let ms = |d: Duration| d.as_millis() as u64;
        // An update published just now: nobody is stalled yet.
        watchers.inner.published.store(now, Ordering::Relaxed);
        a.slot.last_taken.store(now - ms(Duration::from_secs(30)), Ordering::Relaxed);
        assert_eq!(watchers.admit().unwrap_err().code(), tonic::Code::ResourceExhausted);
        // An update published 20 s ago that `b` took and `a` did not: `a`'s place goes to the newcomer.
        watchers.inner.published.store(now - ms(Duration::from_secs(20)), Ordering::Relaxed);
        b.took();
        let c = watchers.admit().expect("the stalled watcher's place");
        assert!(a.evicted() && !b.evicted() && !c.evicted());
        assert_eq!(watchers.admit().unwrap_err().code(), tonic::Code::ResourceExhausted, "b took the update: not stalled");
    }
}
