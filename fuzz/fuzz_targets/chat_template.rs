#![no_main]
// Coverage-guided fuzzing of gomlx::fuzz::chat_template (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| gomlx::fuzz::chat_template(data));
