//! gsync-brick: everything a gsync node serves.
//!
//! Layout:
//! - `codec`, `frame`, `proto`: the wire (bincode behind one module,
//!   length-prefixed frames with a hard cap, the message enums).
//! - `path`: validated volume-relative paths; `vv`: version vectors.
//! - `net`: node identity, TLS with pinned keys, the QUIC endpoint;
//!   `faults`: fault injection at the endpoint's socket.
//! - `pool`, `options`: the replicated pool document and volume options;
//!   `lineage`: the changes a document descends from, so none is lost silently;
//!   `limits`: bounds on the shape of volumes; `overlap`: paths that
//!   must not nest (mounts, bricks).
//! - `control`: the CLI-to-daemon protocol over the Unix socket.
//! - `node`: the running node (connections, management, serving).
//! - `store`: one brick's files and metadata; `replicate`: the pending
//!   index replay that carries changes between bricks; `crawl`: the full
//!   crawl that compares two bricks by Merkle digests.
//! - `heal_types`: heal report data shared with the CLI and the heal crate.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod codec;
pub mod control;
pub mod crawl;
pub mod events;
pub mod failpoint;
pub mod faults;
pub mod frame;
pub mod heal_types;
pub mod lifecycle;
pub mod limits;
pub mod lineage;
pub mod net;
pub mod node;
pub mod options;
pub mod outage;
pub mod overlap;
pub mod path;
pub mod pool;
pub mod proto;
pub mod replicate;
pub mod sqlite;
pub mod store;
pub mod vv;

pub use path::RelPath;
