//! The stop signal a process's server, loops and streams share: set on SIGTERM (what `docker stop`
//! sends) or SIGINT, or by hand in tests.

use tokio::sync::watch;

/// Turns a [`Stop`] on.
#[derive(Debug, Clone)]
pub struct StopHandle(watch::Sender<bool>);

impl StopHandle {
    /// Asks everything that holds the matching [`Stop`] to stop.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// A flag that turns true once, when the process is to stop.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A stop flag and the handle that sets it.
    pub fn new() -> (StopHandle, Stop) {
        let (tx, rx) = watch::channel(false);
        (StopHandle(tx), Stop(rx))
    }

    /// A stop flag that turns true on SIGTERM or SIGINT.
    pub fn on_signal() -> Stop {
        let (handle, stop) = Stop::new();
        tokio::spawn(async move {
            shutdown_signal().await;
            handle.stop();
        });
        stop
    }

    /// A flag that never turns true (a server that runs until its task is dropped).
    pub fn never() -> Stop {
        let (handle, stop) = Stop::new();
        std::mem::forget(handle);
        stop
    }

    /// Whether the stop was asked for.
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Whether the stop was asked for, or nothing can ask for it any more (when [`Stop::wait`] would
    /// complete): for a loop on a thread of its own, which cannot await it.
    pub fn should_stop(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Completes when the stop is asked for (or nothing can ask for it any more).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Completes on SIGTERM (what `docker stop` sends) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT will stop the server"),
        }
    }
    if tokio::signal::ctrl_c().await.is_ok() {
        tracing::info!("SIGINT: shutting down");
    }
}
