//! CoT XML decode: never panics; whatever decodes re-encodes to the same event.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| takgate::fuzz::xml_decode(data));
