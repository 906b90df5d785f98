#![no_main]
// Coverage-guided fuzzing of gomlx::fuzz::adapter (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| gomlx::fuzz::adapter(data));
