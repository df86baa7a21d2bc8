//! Harness helpers for the mounts tests.
