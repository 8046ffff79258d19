//! The service manager protocol (sd_notify): `READY=1`, `RELOADING=1`, `STOPPING=1`,
//! `WATCHDOG=1` and `STATUS=` lines, sent to `$NOTIFY_SOCKET` when systemd set it (a no-op
//! otherwise). The environment is kept, so a reload can notify again.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Send states; errors are logged once at debug level (no socket is the normal case outside
/// systemd).
fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// A `STATUS=` value on one line: the status names the last alert's object, which comes from
/// a log, and the protocol is newline-separated `KEY=VALUE` lines, so a file named
/// `x\nWATCHDOG=trigger` would otherwise send a command of its own. Control characters are
/// written visibly (`\n`), as for a terminal.
fn one_line(status: &str) -> String {
    crate::sinks::escape::plain(status, 400)
}

/// `READY=1` with a status line: the sources are started.
pub fn ready(status: &str) {
    let status = one_line(status);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// `RELOADING=1` with `MONOTONIC_USEC=` (systemd ≥ 253 requires the pair).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the configuration"),
        ]),
        Err(_) => send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading the configuration"),
        ]),
    }
}

/// `WATCHDOG=1` now, when systemd asked for pings: for a wait that is not a stuck pipeline
/// (an alert waiting for its compile check), so the watchdog does not mistake it for one.
pub fn keep_alive() {
    if Watchdog::from_env().enabled() {
        send(&[NotifyState::Watchdog]);
    }
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// A `STATUS=` line alone.
pub fn status(status: &str) {
    let status = one_line(status);
    send(&[NotifyState::Status(&status)]);
}

/// Keep-alive pings for systemd's watchdog (`WatchdogSec=`): at most every half of
/// `$WATCHDOG_USEC`. Driven from the output thread's tick, so a stuck pipeline stops pinging
/// and systemd restarts the service.
#[derive(Debug)]
pub struct Watchdog {
    half: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    /// Read `$WATCHDOG_USEC` (and `$WATCHDOG_PID`, which must name this process when set).
    pub fn from_env() -> Watchdog {
        // As sd_watchdog_enabled(3): WATCHDOG_PID, when set, must name this process.
        let usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&u| u > 0);
        let for_us = match std::env::var("WATCHDOG_PID") {
            Ok(pid) => pid.parse::<u32>().ok() == Some(std::process::id()),
            Err(_) => true,
        };
        let half = usec
            .filter(|_| for_us)
            .map(|u| Duration::from_micros(u / 2));
        Watchdog { half, last: None }
    }

    /// Whether systemd asked for pings.
    pub fn enabled(&self) -> bool {
        self.half.is_some()
    }

    /// Called about every `tick`: pings when waiting for the next tick would exceed half the
    /// watchdog interval. Returns true when it pinged.
    pub fn tick(&mut self, now: Instant, tick: Duration) -> bool {
        let Some(half) = self.half else {
            return false;
        };
        let due = match self.last {
            None => true,
            Some(last) => now.duration_since(last) + tick >= half,
        };
        if due {
            send(&[NotifyState::Watchdog]);
            self.last = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_before_half_the_interval_runs_out() {
        let mut w = Watchdog {
            half: Some(Duration::from_secs(10)),
            last: None,
        };
        let t0 = Instant::now();
        let tick = Duration::from_secs(1);
        assert!(w.tick(t0, tick), "the first tick pings");
        assert!(!w.tick(t0 + Duration::from_secs(5), tick));
        assert!(!w.tick(t0 + Duration::from_millis(8_900), tick));
        assert!(w.tick(t0 + Duration::from_secs(9), tick));
        let mut off = Watchdog {
            half: None,
            last: None,
        };
        assert!(!off.tick(t0, tick));
    }
}
