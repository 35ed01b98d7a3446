//! ROL programs from federates and t-x-m-c announcements: never panics; a parsed change
//! re-emitted as ROL parses to the same change.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| takgate::fuzz::rol(data));
