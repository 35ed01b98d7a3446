//! Configuration parsing and validation: never panics on any text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| takgate::fuzz::config(data));
