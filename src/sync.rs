//! Locking that survives a panic elsewhere.
//!
//! Every `Mutex` in poolpilot guards plain data that is valid after any single write (a map, a
//! counter, a queue), so a lock poisoned by a panicking holder is still safe to use, and a
//! panic in one task must never take the agent's status page, notifier or emulator down with
//! it. [`lock`] is the one place that decision is made.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data over if a previous holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
