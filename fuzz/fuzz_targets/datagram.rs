//! Mesh datagrams (XML or 0xbf 0x01 0xbf protobuf): never panics; a decoded protobuf
//! event re-encodes to the same event.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| takgate::fuzz::datagram(data));
