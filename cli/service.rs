//! Life under a service manager: systemd's readiness, stopping and watchdog
//! notifications (`Type=notify` units, see dist/). Outside systemd
//! (`NOTIFY_SOCKET` unset) every call here does nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gsync_brick::control::CtlRequest;
use sd_notify::NotifyState;

/// Tells the service manager the daemon is up (its control socket answers,
/// the node is serving), with a status line for `systemctl status`.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the service manager the daemon is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

/// When systemd asks for a watchdog (`WatchdogSec=`), pings it at half the
/// interval for as long as the daemon answers on its own control socket:
/// a daemon whose control loop is stuck stops pinging and is restarted.
pub fn start_watchdog(state: &Path) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    let state: PathBuf = state.to_path_buf();
    tracing::info!(interval = ?every, "systemd watchdog enabled");
    tokio::spawn(async move {
        loop {
            let check = crate::ctl::call_raw(&state, &CtlRequest::Ping);
            match tokio::time::timeout(every, check).await {
                Ok(Ok(Ok(_))) => notify(&[NotifyState::Watchdog]),
                Ok(Ok(Err(e))) => tracing::warn!("watchdog: control socket refused: {e}"),
                Ok(Err(e)) => tracing::warn!("watchdog: control socket: {e}"),
                Err(_) => tracing::warn!("watchdog: control socket did not answer in time"),
            }
            tokio::time::sleep(every).await;
        }
    });
}
