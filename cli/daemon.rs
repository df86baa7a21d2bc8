//! `gsync daemon`: the composition root. Initialises logging, starts the
//! node (pool, bricks, replication), plugs in the heal service and the mount
//! agents, and stops everything cleanly on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use gsync_brick::node::{Node, NodeOptions};
use tokio_util::sync::CancellationToken;

use crate::args::DaemonArgs;
use crate::Outcome;

/// Holds `<state>/gsyncd.lock` (flock) for the life of the daemon, with
/// its pid inside: a second daemon on the same state directory is refused
/// before it opens the log, the database or a socket, so it writes nothing
/// where the live daemon writes.
fn lock_state(state: &std::path::Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = state.join("gsyncd.lock");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("lock file {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        let pid = pid.trim();
        let who = if pid.is_empty() {
            String::new()
        } else {
            format!(" (pid {pid})")
        };
        bail!(
            "another daemon is already running with state dir {}{who}",
            state.display()
        );
    }
    f.set_len(0)?;
    f.rewind()?;
    writeln!(f, "{}", std::process::id())?;
    Ok(f)
}

pub async fn run(a: DaemonArgs, state: PathBuf) -> Result<Outcome> {
    // Listening from the first moment to the last: a stop requested while
    // the daemon starts (systemd's, or a test's right after READY=1) is
    // never lost between two listeners.
    let mut stop = StopSignal::new();
    let listen: SocketAddr = a
        .listen
        .parse()
        .or_else(|_| format!("{}:{}", a.listen, crate::pool_cmd::DEFAULT_PORT).parse())
        .map_err(|_| anyhow!("--listen {}: expected ADDR:PORT", a.listen))?;
    let rotation = crate::logging::Rotation::parse(&a.log_rotate)?;
    let metrics_addr = a
        .metrics_listen
        .as_deref()
        .map(crate::metrics::parse_listen)
        .transpose()?;
    std::fs::create_dir_all(&state).with_context(|| format!("state dir {}", state.display()))?;
    let _lock = lock_state(&state)?;
    let metrics = metrics_addr
        .map(|_| crate::metrics::install())
        .transpose()?;
    let logs = crate::logging::init(
        &state,
        &crate::logging::LogSettings {
            level: &a.log_level,
            rotation,
            keep: a.log_keep,
        },
    )?;
    logs.reopen_on_sighup();
    // A panic anywhere is logged (tests look for it) before the default hook.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("panic: {info}");
        default_hook(info);
    }));
    let token = CancellationToken::new();
    let opts = NodeOptions {
        listen,
        state_dir: state.clone(),
        name: a.name,
        join_secret: a.join_secret,
    };
    let start = Node::start(opts, token.clone());
    let node = tokio::select! {
        n = start => n.map_err(|e| anyhow!("{e}"))?,
        _ = stop.recv() => return Ok(Outcome::Done),
    };
    let heal = gsync_heal::HealService::start(node.clone());
    let agents = gsync_client::AgentHost::start(node.clone()).await;
    let mounts = agents.clone();
    node.set_extension(Arc::new(Extensions { heal, agents }));
    if let (Some(addr), Some(handle)) = (metrics_addr, metrics) {
        if let Err(e) = crate::metrics::serve(addr, handle, token.clone()).await {
            node.shutdown().await;
            return Err(e);
        }
    }
    crate::monitor::start(node.clone(), mounts);
    tracing::info!(pid = std::process::id(), state = %state.display(), "gsync daemon ready");
    crate::service::ready(&format!("serving on {listen}"));
    crate::service::start_watchdog(&state);
    stop.recv().await;
    crate::service::stopping();
    tracing::info!("stopping");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(Outcome::Done)
}

struct Extensions {
    heal: Arc<gsync_heal::HealService>,
    agents: Arc<gsync_client::AgentHost>,
}

impl gsync_brick::node::CtlExtension for Extensions {
    fn handle<'a>(
        &'a self,
        req: &'a gsync_brick::control::CtlRequest,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Option<gsync_brick::control::CtlReply>> + Send + 'a>,
    > {
        Box::pin(async move {
            if let Some(r) = self.heal.handle(req).await {
                return Some(r);
            }
            self.agents.handle(req).await
        })
    }
}

/// SIGTERM or Ctrl-C (SIGINT), listened for once for the daemon's whole
/// life.
struct StopSignal {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignal {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Waits for the next stop request.
    async fn recv(&mut self) {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.term) => {}
            _ = next(&mut self.int) => {}
        }
    }
}
