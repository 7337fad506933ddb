//! Fuzz target `state`: arbitrary bytes into [`poolpilot::fuzz::state`], which documents what
//! the input means and what must hold. Run it as docs/fuzzing.md says.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poolpilot::fuzz::state(data));
