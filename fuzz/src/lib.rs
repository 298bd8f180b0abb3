//! The fuzz targets' bodies, shared with the stable test suite (`tests/fuzz_regressions.rs` includes `bodies.rs`).
pub mod bodies;
