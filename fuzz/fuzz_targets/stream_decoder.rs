//! Stream framing and frame decoding (XML and 0xbf protobuf), fed in two chunks at a
//! fuzzer-chosen split: never panics, never buffers more than the limit plus one read.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| takgate::fuzz::stream_decoder(data));
