#![no_main]
// Coverage-guided fuzzing of gomlx::fuzz::gguf (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| gomlx::fuzz::gguf(data));
