#![no_main]
//! Fuzz target `image`: see `fuzz/src/bodies.rs` for what it feeds and what it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| mllm_protector_fuzz::bodies::image(data));
