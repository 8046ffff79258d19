//! armorwatch: watches for AppArmor denials and explains each one.
//!
//! The pipeline, one module per stage: [`sources`] → [`parse`] → [`correlate`] → [`profiles`] →
//! [`sinks`]. [`parse`], [`correlate`] and [`profiles`] are pure (no I/O side effects, no tokio)
//! so they can be tested with plain values.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod alert;
pub mod alerting;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod correlate;
pub mod event;
pub mod linereader;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod parse;
pub mod pipeline;
pub mod profiles;
pub mod sinks;
pub mod sources;

/// Lock `m`, also after a panic elsewhere poisoned it (the data stays usable).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
