//! The connections a server holds: how many, when each last sent anything and last completed a request,
//! whether it carries a member's traffic, and a way to close any of them from outside the task that
//! serves it.
//!
//! At the cap, the connection closed to make room is chosen so that the group never loses a member's
//! connection to a crowd of readers: connections marked as a member's ([`MemberMark`], set by the server
//! when a call that only members make succeeds on it) go last; then connections that have been serving
//! requests for a while (long-lived clients, such as a device that syncs every few seconds); among the
//! rest, the one whose last completed request is oldest (those that never completed one first).
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

/// When a connection last sent bytes and last completed a request, and whether it is a member's.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    last_read: AtomicU64,
    last_request: AtomicU64,
    /// When it completed its first request.
    first_request: AtomicU64,
    member: std::sync::atomic::AtomicBool,
}

/// A connection that has completed requests for this long is a long-lived client's, kept over newer
/// ones at the cap.
pub const LONG_LIVED: Duration = Duration::from_secs(10);

/// A handle that marks one connection as a member's (kept over readers at the connection cap).
#[derive(Debug, Clone)]
pub struct MemberMark(Arc<Activity>);

impl MemberMark {
    /// Marks the connection as carrying a member's traffic.
    pub fn mark(&self) {
        self.0.member.store(true, Ordering::Relaxed);
    }

    /// Whether it is marked.
    pub fn is_marked(&self) -> bool {
        self.0.member.load(Ordering::Relaxed)
    }
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
            let _ = self.activity.first_request.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The handle that marks this connection as a member's.
    pub fn member_mark(&self) -> MemberMark {
        MemberMark(self.activity.clone())
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

    /// Registers an accepted connection. At `max` connections, first closes the one that matters least
    /// (see the module's doc: readers before long-lived clients before members; among equals, the one
    /// whose last completed request is oldest).
    pub(crate) fn admit(&self, stream: &tokio::net::TcpStream, max: usize) -> Tracked {
        let now = self.shared.now();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::default());
        let long_lived = u64::try_from(LONG_LIVED.as_millis()).unwrap_or(u64::MAX);
        let mut entries = lock(&self.shared.entries);
        while entries.len() >= max.max(1) {
            let Some((&shed, member)) = entries
                .iter()
                .min_by_key(|(_, e)| {
                    let a = &e.activity;
                    let first = a.first_request.load(Ordering::Relaxed);
                    let old = first != 0 && now.saturating_sub(first) >= long_lived;
                    (a.member.load(Ordering::Relaxed), old, a.last_request.load(Ordering::Relaxed), e.accepted)
                })
                .map(|(id, e)| (id, e.activity.member.load(Ordering::Relaxed)))
            else {
                break;
            };
            if let Some(entry) = entries.remove(&shed) {
                close(&entry);
                metrics::counter!("synclab_connections_shed_total", "kind" => if member { "member" } else { "reader" }).increment(1);
                tracing::debug!(connections = max, member, "connection limit reached: closed the connection that matters least");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Connected sockets (the server's ends), and the clients' ends to keep them open.
    async fn sockets(n: usize) -> (Vec<tokio::net::TcpStream>, Vec<tokio::net::TcpStream>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut servers, mut clients) = (Vec::new(), Vec::new());
        for _ in 0..n {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            servers.push(listener.accept().await.unwrap().0);
        }
        (servers, clients)
    }

    #[tokio::test]
    async fn the_cap_sheds_readers_then_long_lived_clients_and_members_last() {
        // A registry that started a minute ago, so that a request at its start is long past.
        let registry = Registry {
            shared: Arc::new(Shared {
                started: Instant::now() - Duration::from_secs(60),
                next_id: AtomicU64::new(1),
                entries: Mutex::default(),
            }),
        };
        let (servers, _clients) = sockets(6).await;
        let admit = |i: usize| registry.admit(&servers[i], 3);
        // A member whose only request (its line, at the start) is the oldest of all.
        let member = admit(0);
        member.touch(true);
        member.member_mark().mark();
        // A long-lived client: its first request long ago, its last one older than the readers'.
        let long_lived = admit(1);
        long_lived.touch(true);
        long_lived.activity.first_request.store(1, Ordering::Relaxed);
        long_lived.activity.last_request.store(1, Ordering::Relaxed);
        // A reader that called just now.
        let reader = admit(2);
        reader.touch(true);
        let kept = |registry: &Registry| {
            let mut ids: Vec<u64> = lock(&registry.shared.entries).keys().copied().collect();
            ids.sort();
            ids
        };
        // A newcomer: the reader goes, though it called last.
        let newcomer = admit(3);
        assert_eq!(kept(&registry), vec![member.id, long_lived.id, newcomer.id]);
        // Another: the newcomer, a reader that never completed a request, goes.
        let next = admit(4);
        assert_eq!(kept(&registry), vec![member.id, long_lived.id, next.id]);
        // With only members and long-lived clients left, the long-lived client goes before the member.
        next.member_mark().mark();
        let last = admit(5);
        assert_eq!(kept(&registry), vec![member.id, next.id, last.id]);
        drop((reader, newcomer));
    }
}
