//! gsync-brick: everything a gsync node serves.
//!
//! Layout:
//! - `wire`: what nodes and the CLI agree on byte for byte: `codec`
//!   (bincode behind one module), `frame` (length-prefixed frames with a
//!   hard cap), `proto` (the message enums), `path` (validated
//!   volume-relative paths) and `vv` (version vectors).
//! - `net`: node identity, TLS with pinned keys, the QUIC endpoint;
//!   `faults`: fault injection at the endpoint's socket.
//! - `pool`, `options`: the replicated pool document and volume options;
//!   `consensus`: the document as a replicated state machine (changes
//!   committed by a majority or refused);
//!   `limits`: bounds on the shape of volumes; `overlap`: paths that
//!   must not nest (mounts, bricks).
//! - `control`: the CLI-to-daemon protocol over the Unix socket.
//! - `node`: the running node (connections, management, the bricks
//!   served); it composes everything below and nothing below imports it.
//! - `host`: the `Peers` and `Host` traits through which the services
//!   reach the node; `service`: the brick service answering requests;
//!   `replicate`: the pending index replay that carries changes between
//!   bricks; `crawl`: the full crawl that compares two bricks by Merkle
//!   digests; `outage`: the outage recorder.
//! - `store`: one brick's files and metadata.
//! - `status`: status and history records carried to peers and the CLI.
//! - `heal_types`: heal report data shared with the CLI and the heal crate.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod consensus;
pub mod control;
pub mod crawl;
pub mod events;
pub mod failpoint;
pub mod faults;
pub mod heal_types;
pub mod host;
pub mod lifecycle;
pub mod limits;
pub mod net;
pub mod node;
pub mod options;
pub mod order;
pub mod outage;
pub mod overlap;
pub mod pool;
pub mod replicate;
pub mod service;
pub mod sqlite;
pub mod status;
pub mod store;
pub mod volume_def;
pub mod wire;

pub use wire::path::RelPath;
