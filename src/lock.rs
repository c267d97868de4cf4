//! Locks whose data stays good after a panic elsewhere.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data even if another thread panicked while holding it: every critical section
/// in synclab leaves its data whole, so a poisoned lock's data is still good, and one panic must not
/// take every later caller down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
