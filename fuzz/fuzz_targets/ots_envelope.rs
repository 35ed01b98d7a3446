//! OpenTAKServer bus envelopes ({"uid", "cot"} JSON with CoT XML inside): never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| takgate::fuzz::ots_envelope(data));
