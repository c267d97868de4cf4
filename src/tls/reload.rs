//! Certificates that rotate without a restart: a watcher that reloads a process's TLS files
//! ([`Tls::reload`]) when they change (their modification time or length, polled every
//! `--tls-reload-interval`: this works on bind mounts, Kubernetes secrets and every file system) and on
//! SIGHUP. A reload that fails keeps the configuration in use and logs why; the next change of a file
//! tries again (so a certificate written before its key, which fails alone, takes effect once the key
//! is written too).

use std::time::Duration;

use super::{Tls, stamps};
use crate::stop::Stop;

/// Reloads `tls` and logs what happened; `why` says what asked for it. The files are read and checked
/// on a blocking thread: a service on one thread (the time server's) does not pause for it.
async fn reload(tls: &Tls, why: &'static str) {
    let reloading = tls.clone();
    let Ok(reloaded) = tokio::task::spawn_blocking(move || reloading.reload()).await else { return };
    match reloaded {
        Ok(()) => {
            let serial = serial(&tls.certificate());
            tracing::info!(why, identity = tls.identity(), serial, "TLS files reloaded: new connections use them");
        }
        Err(e) => tracing::warn!(why, error = %e, "TLS files not reloaded: the certificate in use stays"),
    }
}

/// A certificate's serial number in hex, for the log.
fn serial(cert: &rustls_pki_types::CertificateDer<'_>) -> String {
    x509_parser::parse_x509_certificate(cert).map(|(_, c)| c.raw_serial_as_string()).unwrap_or_default()
}

async fn hup(hangup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(tick) => {
            tick.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Watches `tls`'s files until `stop`: reloads when one changes (looked at every `interval`; `None`:
/// never, SIGHUP only) and on SIGHUP. Spawned on the current runtime.
pub fn watch(tls: Tls, interval: Option<Duration>, stop: Stop) -> tokio::task::JoinHandle<()> {
    // Listened for before this returns: a SIGHUP from now on reloads (and no longer ends the process).
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: TLS files reload only when they change");
            None
        }
    };
    match interval {
        Some(every) => tracing::info!(every = ?every, "TLS files watched: a change, or SIGHUP, reloads them"),
        None => tracing::info!("TLS files reload on SIGHUP"),
    }
    // From the files as they were when first read: a change since then is seen at the first look.
    let mut seen = tls.shared.loaded;
    tokio::spawn(async move {
        let mut tick = interval.map(|every| {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        loop {
            tokio::select! {
                () = stop.wait() => break,
                Some(()) = hup(&mut hangup) => {
                    seen = stamps(tls.files());
                    reload(&tls, "SIGHUP").await;
                }
                () = next_tick(&mut tick) => {
                    let now = stamps(tls.files());
                    if now != seen {
                        // Taken before reading: a file that changes while it is read differs next time.
                        seen = now;
                        reload(&tls, "a file changed").await;
                    }
                }
            }
        }
    })
}
