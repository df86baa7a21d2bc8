//! The wire: everything two nodes (or a node and its CLI) must agree on
//! byte for byte. `codec` is the only module that names bincode (config,
//! size limit); `frame` the length-prefixed frames with a hard cap;
//! `proto` the messages (append-only enums, the protocol version); `call`
//! each request paired with the type of its reply; `vv` version vectors and `path`
//! volume-relative paths, validated when decoded. `tests/wire_golden.rs`
//! pins the bytes of every message.
//!
//! Nothing here imports the rest of the crate beyond the plain data the
//! messages carry (entries, pool document, reports).

pub mod call;
pub mod codec;
pub mod frame;
pub mod path;
pub mod proto;
pub mod vv;
