//! systemd integration for `Type=notify` units: `READY=1` after the first successful poll,
//! `RELOADING=1` (with `MONOTONIC_USEC`, as systemd 253 and later require) then `READY=1`
//! around a reload, `STATUS=` when the agent stops or starts seeing E2B, and `STOPPING=1` on
//! shutdown. Without `NOTIFY_SOCKET` (not under systemd) nothing is sent.
//!
//! `WATCHDOG=1` (when `WatchdogSec=` is set) means "the loop is alive", not "E2B is up": the
//! loop sends it on every turn whatever the turn's outcome, and while a turn runs (each turn
//! has a deadline). An E2B outage therefore never makes systemd restart the agent; readiness
//! says whether it can see E2B.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Startup is done: the first poll succeeded.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts; call [`ready`] when it ends, whatever its outcome.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A short human-readable status, shown by `systemctl status`.
pub(crate) fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// The loop is alive.
pub(crate) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Shutdown has begun.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often systemd wants watchdog keep-alives, if it asked for them: half its
/// `WatchdogSec=`, as sd_watchdog_enabled(3) recommends.
pub(crate) fn watchdog_every() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| (d / 2).max(Duration::from_millis(10)))
}

/// Watchdog keep-alives, at most one per half period however often the loop turns.
#[derive(Debug)]
pub(crate) struct Watchdog {
    every: Option<Duration>,
    last: Option<tokio::time::Instant>,
    /// Keep-alives sent so far.
    sent: u64,
}

impl Watchdog {
    /// Keep-alives as systemd asked for them (`WATCHDOG_USEC`); none when it did not.
    pub(crate) fn from_env() -> Self {
        Watchdog::with_period(watchdog_every())
    }

    /// Keep-alives every `every` (None: none at all).
    pub(crate) fn with_period(every: Option<Duration>) -> Self {
        Watchdog {
            every,
            last: None,
            sent: 0,
        }
    }

    /// Keep-alives sent so far.
    #[cfg(test)]
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// How often a keep-alive is due, if at all.
    pub(crate) fn every(&self) -> Option<Duration> {
        self.every
    }

    /// The loop is alive: sends `WATCHDOG=1` unless one went out less than a period ago.
    pub(crate) fn beat(&mut self) {
        let Some(every) = self.every else { return };
        let now = tokio::time::Instant::now();
        if self.last.is_none_or(|t| now.duration_since(t) >= every) {
            watchdog();
            self.last = Some(now);
            self.sent += 1;
        }
    }
}
