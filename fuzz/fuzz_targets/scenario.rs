//! Fuzz target `scenario`: arbitrary bytes into [`poolpilot::fuzz::scenario`], which documents what
//! the input means and what must hold. Run it as docs/fuzzing.md says.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poolpilot::fuzz::scenario(data));
