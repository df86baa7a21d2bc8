//! Crash points for tests.
//!
//! Built with the `failpoints` feature, [`hit`] aborts the process (as
//! abruptly as `kill -9`) when the environment variable `GSYNC_FAILPOINT`
//! names the point. Without the feature it compiles to nothing, so release
//! builds carry no trace of it.

/// Aborts the process here if `GSYNC_FAILPOINT` equals `name` (test
/// builds only).
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    if std::env::var("GSYNC_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// Does nothing: built without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Panics here the first time in this process that `GSYNC_FAILPOINT`
/// equals `name` (test builds only): a task's bug, for its supervisor.
#[cfg(feature = "failpoints")]
pub fn panic_once(name: &str) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if std::env::var("GSYNC_FAILPOINT").is_ok_and(|v| v == name)
        && !DONE.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        panic!("failpoint {name}");
    }
}

/// Does nothing: built without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn panic_once(_name: &str) {}

/// Waits `d` here when `GSYNC_FAILPOINT` equals `name` (test builds
/// only): a step made slow, to catch what happens while it is under way.
#[cfg(feature = "failpoints")]
pub async fn delay(name: &str, d: std::time::Duration) {
    if std::env::var("GSYNC_FAILPOINT").is_ok_and(|v| v == name) {
        tokio::time::sleep(d).await;
    }
}

/// Does nothing: built without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn delay(_name: &str, _d: std::time::Duration) {}

/// True if this build has failpoints.
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// The protocol version this node announces in `Hello`: the real one, or in
/// test builds `GSYNC_TEST_PROTOCOL` (to play a node of another version).
#[cfg(feature = "failpoints")]
pub fn announced_protocol() -> u32 {
    std::env::var("GSYNC_TEST_PROTOCOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(crate::wire::proto::PROTOCOL_VERSION)
}

/// The protocol version this node announces in `Hello`.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn announced_protocol() -> u32 {
    crate::wire::proto::PROTOCOL_VERSION
}
