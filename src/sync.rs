//! Locking without poison: a panic while a lock was held (never expected) must not take
//! every later caller down with it, so the guard is taken back either way.

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
