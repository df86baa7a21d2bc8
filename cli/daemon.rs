//! `gsync daemon`: the composition root. Initialises logging, starts the
//! node (pool, bricks, replication), plugs in the heal service and the mount
//! agents, and stops everything cleanly on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use gsync_brick::node::{Node, NodeOptions};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::args::DaemonArgs;
use crate::Outcome;

fn init_logging(
    state: &std::path::Path,
    level: &str,
) -> Result<tracing_appender::non_blocking::WorkerGuard> {
    let log_dir = state.join("log");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("log dir {}", log_dir.display()))?;
    let file = tracing_appender::rolling::never(&log_dir, "gsyncd.log");
    let (file, guard) = tracing_appender::non_blocking(file);
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| {
                EnvFilter::try_new(format!("{level},quinn=warn,quinn_proto=warn,rustls=warn"))
            })
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(file)
                .with_filter(filter()),
        )
        .try_init()
        .map_err(|e| anyhow!("logging: {e}"))?;
    Ok(guard)
}

use tracing_subscriber::Layer;

pub async fn run(a: DaemonArgs, state: PathBuf) -> Result<Outcome> {
    let listen: SocketAddr = a
        .listen
        .parse()
        .or_else(|_| format!("{}:{}", a.listen, crate::pool_cmd::DEFAULT_PORT).parse())
        .map_err(|_| anyhow!("--listen {}: expected ADDR:PORT", a.listen))?;
    std::fs::create_dir_all(&state).with_context(|| format!("state dir {}", state.display()))?;
    let _guard = init_logging(&state, &a.log_level)?;
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
        _ = shutdown_signal() => return Ok(Outcome::Done),
    };
    let heal = gsync_heal::HealService::start(node.clone());
    let agents = gsync_client::AgentHost::start(node.clone());
    node.set_extension(Arc::new(Extensions { heal, agents }));
    tracing::info!(pid = std::process::id(), state = %state.display(), "gsync daemon ready");
    shutdown_signal().await;
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
