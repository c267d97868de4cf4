//! The connections a server holds: how many, when each last sent anything and last completed a request,
//! and a way to close any of them from outside the task that serves it.
//!
//! Closing is a `shutdown(2)` of the socket: the task serving the connection then reads end-of-file
//! and hyper ends the connection. An entry is removed (under the registry's lock) before its socket is
//! closed, so the registry never touches a descriptor that may have been reused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lock::lock;

/// Milliseconds since the registry started; 0 means "never".
type Millis = u64;

#[derive(Debug)]
struct Entry {
    #[cfg(unix)]
    fd: std::os::fd::RawFd,
    accepted: Millis,
    activity: Arc<Activity>,
}

/// When a connection last sent bytes and last completed a request.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    last_read: AtomicU64,
    last_request: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    started: Instant,
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

impl Shared {
    fn now(&self) -> Millis {
        // +1 so that 0 keeps meaning "never".
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }
}

/// Every connection a server holds.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    shared: Arc<Shared>,
}

/// A connection's place in the registry: updates its activity, and leaves the registry when dropped.
/// It must be dropped before the socket it describes is closed.
#[derive(Debug)]
pub struct Tracked {
    id: u64,
    activity: Arc<Activity>,
    shared: Arc<Shared>,
}

impl Tracked {
    /// The connection sent bytes; `request` if they completed a request.
    pub fn touch(&self, request: bool) {
        let now = self.shared.now();
        self.activity.last_read.store(now, Ordering::Relaxed);
        if request {
            self.activity.last_request.store(now, Ordering::Relaxed);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        lock(&self.shared.entries).remove(&self.id);
    }
}

/// Closes a registered socket (both directions). Called with the registry locked: the entry is still
/// registered, so the stream owning `fd` has not been dropped (it leaves the registry, under the same
/// lock, before its socket closes), and `fd` is that open socket.
#[cfg(target_os = "linux")]
fn close(entry: &Entry) {
    crate::net::linux::shutdown(entry.fd);
}

#[cfg(not(target_os = "linux"))]
fn close(_: &Entry) {}

impl Registry {
    pub(crate) fn new() -> Self {
        Self { shared: Arc::new(Shared { started: Instant::now(), next_id: AtomicU64::new(1), entries: Mutex::default() }) }
    }

    /// Registers an accepted connection. At `max` connections, first closes the one whose last
    /// completed request is oldest (connections that never completed one go first).
    pub(crate) fn admit(&self, stream: &tokio::net::TcpStream, max: usize) -> Tracked {
        let now = self.shared.now();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::default());
        let mut entries = lock(&self.shared.entries);
        while entries.len() >= max.max(1) {
            let Some(&oldest) =
                entries.iter().min_by_key(|(_, e)| (e.activity.last_request.load(Ordering::Relaxed), e.accepted)).map(|(id, _)| id)
            else {
                break;
            };
            if let Some(entry) = entries.remove(&oldest) {
                close(&entry);
                tracing::debug!(connections = max, "connection limit reached: closed the least recently used connection");
            }
        }
        entries.insert(
            id,
            Entry {
                #[cfg(unix)]
                fd: std::os::fd::AsRawFd::as_raw_fd(stream),
                accepted: now,
                activity: activity.clone(),
            },
        );
        #[cfg(not(unix))]
        let _ = stream;
        Tracked { id, activity, shared: self.shared.clone() }
    }

    /// Closes connections that sent nothing within `first_bytes` of being accepted, or nothing for
    /// `idle`. Returns how many it closed.
    pub(crate) fn reap(&self, first_bytes: Duration, idle: Duration) -> usize {
        let now = self.shared.now();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut entries = lock(&self.shared.entries);
        let stale: Vec<u64> = entries
            .iter()
            .filter(|(_, e)| match e.activity.last_read.load(Ordering::Relaxed) {
                0 => now.saturating_sub(e.accepted) >= ms(first_bytes),
                last => now.saturating_sub(last) >= ms(idle),
            })
            .map(|(&id, _)| id)
            .collect();
        for id in &stale {
            if let Some(entry) = entries.remove(id) {
                close(&entry);
            }
        }
        stale.len()
    }

    /// Closes every connection.
    pub(crate) fn close_all(&self) -> usize {
        let mut entries = lock(&self.shared.entries);
        let n = entries.len();
        for (_, entry) in entries.drain() {
            close(&entry);
        }
        n
    }
}
