//! Fuzz target `rules`: arbitrary bytes into [`poolpilot::fuzz::rules`], which documents what
//! the input means and what must hold. Run it as docs/fuzzing.md says.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poolpilot::fuzz::rules(data));
