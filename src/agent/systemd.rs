//! systemd integration for `Type=notify` units: `READY=1` after the first successful poll,
//! `RELOADING=1` (with `MONOTONIC_USEC`, as systemd 253 and later require) then `READY=1`
//! around a reload, `WATCHDOG=1` after each healthy loop turn when `WatchdogSec=` is set, and
//! `STOPPING=1` on shutdown. Without `NOTIFY_SOCKET` (not under systemd) nothing is sent.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Startup is done: the first poll succeeded.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts; call [`ready`] when it ends, whatever its outcome.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The loop is healthy.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Whether systemd asked for watchdog keep-alives.
pub fn watchdog_enabled() -> bool {
    sd_notify::watchdog_enabled().is_some()
}
