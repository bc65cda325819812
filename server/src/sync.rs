//! Lock helpers shared by the crate.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the guard of a lock poisoned by a holder that panicked, so that one
/// panicked task does not make every later user of the lock panic too.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
