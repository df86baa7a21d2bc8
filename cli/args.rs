//! Command-line syntax. GlusterFS-shaped positional keywords (`replica 3`,
//! `force`, `info split-brain`) are parsed from trailing words so runbooks
//! written for GlusterFS keep working.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// gsync keeps a directory identical across servers.
#[derive(Debug, Parser)]
#[command(name = "gsync", version = env!("GSYNC_LONG_VERSION"), about, long_about = None)]
pub struct Cli {
    /// State directory of the local daemon to talk to (or run).
    /// Default: /var/lib/gsync for root, else $XDG_STATE_HOME/gsync.
    #[arg(long, global = true, env = "GSYNC_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon (pool, bricks, self-heal, mount agents).
    Daemon(DaemonArgs),
    /// Manage the trusted pool.
    ///
    /// Membership changes (probe, detach) are committed by a majority of
    /// the pool, or refused with one line naming how many members are
    /// reachable. A two-node pool needs both nodes up to change.
    #[command(subcommand)]
    Peer(PeerCmd),
    /// List the pool's nodes.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Manage volumes.
    ///
    /// Configuration changes (create, start, stop, delete, set, reset,
    /// add/remove/replace/reset-brick) are committed by a majority of the
    /// pool, or refused within a few seconds with one line, e.g. `volume
    /// set: failed: no majority of the pool is reachable (2 of 5)`. Reads
    /// (info, get, status) and the data keep working without a majority.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Keep a local folder in sync with a volume; with no arguments, list mounts.
    Mount(MountArgs),
    /// Stop syncing a folder (its files stay in place; mounting it again
    /// resumes from what it had synced).
    Umount {
        /// The mounted folder.
        dir: PathBuf,
    },
    /// Start a 3-node demo on 127.0.0.1-3 in a temp dir, with a mount per node.
    Demo(DemoArgs),
    /// Measure: 3 daemons on 127.0.0.1-3 in a temp dir, real workloads,
    /// compared with rsync and a local copy; prints a table of figures.
    Bench(BenchArgs),
    /// Fault injection and robustness drills (for testing).
    #[command(subcommand, hide = true)]
    Debug(DebugCmd),
    /// The node's events: peers up and down, volume changes, heals,
    /// split-brains found and resolved, policy decisions.
    Events(EventsArgs),
    /// Print a completion script for a shell, from the same definitions as
    /// the parser: `gsync completions bash > /etc/bash_completion.d/gsync`.
    Completions {
        /// bash, zsh or fish.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff): `gsync man > /usr/share/man/man1/gsync.1`.
    Man,
    /// Wait until every change made in a mounted folder is stored on the
    /// volume's bricks; exit 0 then, non-zero with what is missing on timeout.
    Wait(WaitArgs),
    /// Push the deletions the mass-delete guard holds in a mounted folder
    /// (cluster.mass-delete-guard; `gsync mount` shows them as held).
    #[command(name = "accept-deletes")]
    AcceptDeletes {
        /// The mounted folder.
        dir: PathBuf,
    },
    /// Put the files whose deletion the mass-delete guard holds back into
    /// the mounted folder, from the volume.
    #[command(name = "revert-deletes")]
    RevertDeletes {
        /// The mounted folder.
        dir: PathBuf,
    },
}

/// Parses a duration such as 300ms, 2s or 1m.
fn parse_delay(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 300ms or 2s)"))
}

/// Longest `--settle` window.
pub const MAX_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

fn parse_settle(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_delay(s)?;
    if d > MAX_SETTLE {
        return Err(format!(
            "at most {}",
            humantime::format_duration(MAX_SETTLE)
        ));
    }
    Ok(d)
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_delay(s)?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

/// Shells `gsync completions` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

impl Command {
    /// Commands that run for long and talk over sockets keep SIGPIPE
    /// ignored (a dead peer is an error to handle, not a reason to die).
    pub fn keeps_sigpipe_ignored(&self) -> bool {
        match self {
            Self::Daemon(_) | Self::Demo(_) | Self::Bench(_) => true,
            Self::Mount(m) => m.foreground,
            _ => false,
        }
    }
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events after this sequence number (the first column).
    #[arg(long)]
    pub since: Option<u64>,
    /// Keep printing new events as they happen (JSON Lines with --json).
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// A mounted folder, or a directory inside one.
    pub dir: PathBuf,
    /// Bricks that must hold every change (default: all bricks of the volume).
    #[arg(long)]
    pub replicas: Option<u32>,
    /// Give up after this long: 30s, 5m, 1h30m or seconds.
    #[arg(long, default_value = "60s")]
    pub timeout: String,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// QUIC listen address.
    #[arg(long, default_value = "0.0.0.0:24017")]
    pub listen: String,
    /// Name of this node in the pool (default: the listen IP).
    #[arg(long)]
    pub name: Option<String>,
    /// Require this secret from the first node that probes this one.
    #[arg(long, env = "GSYNC_JOIN_SECRET")]
    pub join_secret: Option<String>,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Rotate <state>/log/gsyncd.log: `daily` (midnight UTC), a size such
    /// as `64M`, or `never` (an external logrotate then sends SIGHUP, which
    /// always reopens the file).
    #[arg(long, default_value = "64M")]
    pub log_rotate: String,
    /// Rotated log files kept (gsyncd.log.1 is the newest).
    #[arg(long, default_value_t = 5)]
    pub log_keep: usize,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off unless
    /// given; a bare PORT listens on 127.0.0.1).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PeerCmd {
    /// Add a node to the pool: HOST[:PORT].
    Probe {
        /// HOST or HOST:PORT (default port 24017).
        host: String,
        /// Shared secret, if the node was started with --join-secret.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Remove a node from the pool: HOST [force].
    ///
    /// Like every configuration change, a detach needs a majority of the
    /// pool. `force` also detaches a node that hosts bricks, and is the
    /// escape hatch of a two-node pool whose other node is dead: when no
    /// majority can be reached and HOST is unreachable, this node rewrites
    /// the membership alone and goes on as a pool of one. WARNING: use it
    /// only for a node that will not come back as it was; if HOST is only
    /// cut off and is forced the same way, each node goes on as its own
    /// pool.
    Detach {
        /// Hostname as listed by `peer status`.
        host: String,
        /// `force`: detach a node that hosts bricks; in a two-node pool,
        /// leave a dead peer without its agreement (see above).
        #[arg(value_parser = ["force"])]
        force: Option<String>,
    },
    /// Show the other nodes and whether they are connected.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// Table of UUID, hostname and state, this node included.
    List,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create: VOL [replica N] [transport quic] HOST:/PATH... [force]
    #[command(disable_help_flag = false)]
    Create {
        /// Volume name.
        name: String,
        /// [replica N] [transport quic] HOST:/PATH... [force] (at most 32
        /// bricks, 8 of them on one node, 64 bricks per node in all)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        rest: Vec<String>,
    },
    /// Start serving a volume: VOL [force].
    Start {
        /// Volume name.
        name: String,
        /// `force` to start an already started volume again.
        #[arg(value_parser = ["force"])]
        force: Option<String>,
    },
    /// Stop serving a volume.
    Stop {
        /// Volume name.
        name: String,
        /// Accepted for GlusterFS compatibility.
        #[arg(value_parser = ["force"])]
        force: Option<String>,
    },
    /// Delete a stopped volume (brick data stays on disk).
    Delete {
        /// Volume name.
        name: String,
    },
    /// Show volume definitions.
    Info {
        /// Volume name (default: all).
        name: Option<String>,
    },
    /// Show bricks and self-heal daemons: [VOL] [detail].
    Status {
        /// Volume name (default: all), then optionally `detail`.
        words: Vec<String>,
    },
    /// List volume names.
    List,
    /// Set an option: VOL KEY VALUE.
    Set {
        /// Volume name.
        name: String,
        /// Option key (see `volume get VOL all`).
        key: String,
        /// Value.
        value: String,
    },
    /// Show options: VOL KEY|all.
    Get {
        /// Volume name.
        name: String,
        /// Option key or `all`.
        key: String,
    },
    /// Reset an option to its default: VOL KEY|all.
    Reset {
        /// Volume name.
        name: String,
        /// Option key or `all`.
        key: String,
    },
    /// Replace a brick, online (its old node may be gone for good):
    /// VOL OLD-HOST:/PATH NEW-HOST:/PATH commit force.
    #[command(name = "replace-brick")]
    ReplaceBrick {
        /// Volume name.
        name: String,
        /// OLD-HOST:/PATH NEW-HOST:/PATH commit force
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        words: Vec<String>,
    },
    /// Take a brick out of service, or re-initialise it in place and refill
    /// it from the others: VOL HOST:/PATH start | VOL HOST:/PATH HOST:/PATH
    /// commit force.
    #[command(name = "reset-brick")]
    ResetBrick {
        /// Volume name.
        name: String,
        /// HOST:/PATH start | HOST:/PATH HOST:/PATH commit force
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        words: Vec<String>,
    },
    /// Add bricks, online; they are filled by a heal: VOL replica N
    /// HOST:/PATH... [force].
    #[command(name = "add-brick")]
    AddBrick {
        /// Volume name.
        name: String,
        /// replica N HOST:/PATH... [force] (N at most 32; at most 8 bricks
        /// of the volume on one node)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        words: Vec<String>,
    },
    /// Remove bricks, online; their data stays on disk: VOL replica N
    /// HOST:/PATH... force.
    #[command(name = "remove-brick")]
    RemoveBrick {
        /// Volume name.
        name: String,
        /// replica N HOST:/PATH... force
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        words: Vec<String>,
    },
    /// Self-heal: VOL [full | info [summary|split-brain] | statistics |
    /// history | split-brain (bigger-file FILE | latest-mtime FILE |
    /// source-brick HOST:/PATH [FILE] | show FILE)].
    /// `history` lists each period when bricks could not reach each other:
    /// what each side changed, what healed, what a policy resolved and what
    /// is still in split-brain.
    Heal {
        /// Volume name.
        name: String,
        /// What to do (default: heal pending entries now).
        words: Vec<String>,
    },
    /// Deleted and overwritten versions kept by every brick:
    /// VOL list [PATH] | VOL restore PATH [VERSION].
    /// A restore is a new change that reaches every brick and mount;
    /// PATH may be a directory (every file deleted below it comes back).
    Trash {
        /// Volume name.
        name: String,
        /// list [PATH] | restore PATH [VERSION]
        #[arg(required = true)]
        words: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// HOST:/VOL to sync with.
    pub source: Option<String>,
    /// Local folder.
    pub dir: Option<PathBuf>,
    /// On first attach, which side wins for files that differ (with
    /// --validate, the volume's version wins only once validated).
    #[arg(long, value_parser = ["local", "remote"])]
    pub prefer: Option<String>,
    /// Only receive changes; local edits are reported and reverted, the
    /// local version kept under DIR/.gsync/reverted/ (never synced).
    #[arg(long)]
    pub read_only: bool,
    /// Run this command (sh -c, in DIR) once per changeset that went live
    /// (and once per settled batch of changes made on their own), with the
    /// changed paths in GSYNC_CHANGED (one a line) and their number in
    /// GSYNC_CHANGED_COUNT; not for the first download unless
    /// --on-change-initial.
    #[arg(long)]
    pub on_change: Option<String>,
    /// How long changes made on their own (not in a changeset of several
    /// files) must settle before --on-change runs (like lsyncd's delay):
    /// 300ms, 2s...
    #[arg(long, value_name = "DURATION", default_value = "300ms", value_parser = parse_delay)]
    pub on_change_delay: std::time::Duration,
    /// Run --on-change for the first download too.
    #[arg(long)]
    pub on_change_initial: bool,
    /// Local changes settling within this window form one changeset, which
    /// other mounts apply all or nothing (default: the agent's debounce,
    /// about 20ms; at most 10s). For folders edited as sets.
    #[arg(long, value_name = "DURATION", value_parser = parse_settle)]
    pub settle: Option<std::time::Duration>,
    /// Before an incoming changeset goes live, run this command (sh -c)
    /// with the staged tree in GSYNC_STAGED (the folder as it would be)
    /// and the changed paths in GSYNC_CHANGED; a non-zero exit or a
    /// timeout rejects it: the folder keeps what it had, the staged tree
    /// is kept for inspection, and the next changeset is validated with
    /// everything still pending. The volume's content on the first sync is
    /// one changeset too, validated before any of it goes live. A rejection
    /// is kept across restarts of the daemon.
    #[arg(long, value_name = "CMD")]
    pub validate: Option<String>,
    /// Keep DIR as a symlink to a generation directory beside it
    /// (.NAME.gsync/), swapped to a new generation with one rename() per
    /// incoming changeset, so a reader that resolves DIR once sees the old
    /// set or the new one, never a mix. Implies --read-only.
    #[arg(long)]
    pub atomic: bool,
    /// How long --validate may run before the changeset is rejected.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub validate_timeout: std::time::Duration,
    /// Stay attached after the first sync and unmount on SIGTERM or Ctrl-C
    /// (for systemd units); the agent itself runs in the local daemon.
    #[arg(long)]
    pub foreground: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's state, bricks and mounts (default: a new temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Set up and print the instructions, then exit (leave the daemons
    /// running; stop them with --stop DIR).
    #[arg(long)]
    pub detach: bool,
    /// UDP port of the three daemons (on 127.0.0.1, .2 and .3).
    #[arg(long, default_value_t = 24017)]
    pub port: u16,
    /// Stop the detached demo whose directory is DIR.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["detach", "dir"])]
    pub stop: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Every step at a small size (a smoke run of a minute or two).
    #[arg(long)]
    pub quick: bool,
    /// UDP port of the three daemons (on 127.0.0.1, .2 and .3).
    #[arg(long, default_value_t = 24217)]
    pub port: u16,
    /// Directory for state, bricks, mounts and copies (default: a new temp
    /// dir, removed afterwards unless --keep).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the temp dir afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Number of small files (default 10000; 500 with --quick).
    #[arg(long)]
    pub files: Option<usize>,
    /// Number of files of the large tree (default 100000; 2000 with --quick).
    #[arg(long)]
    pub many_files: Option<usize>,
    /// Size of the big file in MiB (default 1024; 32 with --quick).
    #[arg(long)]
    pub big_mib: Option<u64>,
    /// Number of files of the replica-3 vs replica-8 step (default 1000;
    /// 100 with --quick).
    #[arg(long)]
    pub scale_files: Option<usize>,
    /// Mount m1, the writer of every step, with this --settle window (the
    /// cost of longer changesets); default: the agent's debounce.
    #[arg(long, value_name = "DURATION", value_parser = parse_settle)]
    pub settle: Option<std::time::Duration>,
    /// A volume option for every lab's volume, as `volume set` takes it
    /// (repeatable), e.g. `--set cluster.quorum-type=auto`.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

#[derive(Debug, Subcommand)]
pub enum DebugCmd {
    /// Fault rule for traffic with an address: IP block|block-in|block-out|loss=F|delay=MS|clear.
    Net {
        /// Peer IP.
        ip: String,
        /// Rule.
        rule: String,
    },
    /// Remove every network fault rule.
    NetClear,
    /// Ask HOST:PORT for its volume list over a first-contact connection.
    RemoteConfig {
        /// HOST:PORT.
        addr: String,
    },
    /// Send malformed frames to a pool member.
    Garbage {
        /// HOST or HOST:PORT of a member.
        addr: String,
    },
}
