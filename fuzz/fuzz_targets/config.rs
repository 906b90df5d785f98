#![no_main]
// Coverage-guided fuzzing of gomlx::fuzz::config (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| gomlx::fuzz::config(data));
