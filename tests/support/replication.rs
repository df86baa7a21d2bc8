//! Harness helpers for the replication tests.
