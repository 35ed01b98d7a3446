//! Mesh datagrams (XML or 0xbf 0x01 0xbf protobuf): never panics; a decoded protobuf
//! event re-encodes to the same event.
#![no_main]
use libfuzzer_sys::fuzz_target;
use takgate::codec::{mesh, WireFormat};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = mesh::decode(data) {
        if let (Some(ev), true) = (d.event, d.protobuf) {
            let mut out = Vec::new();
            WireFormat::ProtoMesh.encode_into(&ev, &mut out);
            assert_eq!(mesh::decode(&out).unwrap().event.unwrap(), ev);
        }
    }
});
