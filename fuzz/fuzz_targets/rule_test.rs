//! Fuzz target `rule_test`: arbitrary bytes into [`poolpilot::fuzz::rule_test`], which documents what
//! the input means and what must hold. Run it as docs/fuzzing.md says.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poolpilot::fuzz::rule_test(data));
