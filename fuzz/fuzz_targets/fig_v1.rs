//! Federation v1 frames (4-byte length + FederatedEvent) in arbitrary chunks: never panics;
//! every decoded GeoEvent converts to CoT or to a clear error, and a converted event
//! converts back.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| takgate::fuzz::fig_v1(data));
