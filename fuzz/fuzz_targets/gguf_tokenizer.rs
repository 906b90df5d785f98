#![no_main]
// Coverage-guided fuzzing of gomlx::fuzz::gguf_tokenizer (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| gomlx::fuzz::gguf_tokenizer(data));
