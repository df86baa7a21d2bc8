//! Harness helpers for the heal tests.
