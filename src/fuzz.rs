//! The bodies of the fuzz targets (fuzz/fuzz_targets), one per decoder that touches network
//! bytes, plus the configuration parser. cargo-fuzz drives them for the long runs
//! (scripts/fuzz); tests/fuzz_smoke.rs replays the committed corpus and mutations of it
//! through the same functions in the test command. Each returns normally for any input and
//! panics only when a property fails (a decoded value does not survive its own encoding).

use crate::codec::{decode_frame, mesh, StreamDecoder, WireFormat};
use crate::cot::xml;
use crate::federation::fig::Rol;
use crate::federation::{convert, v1};
use crate::missions::{parse_rol, to_rol};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The targets by name, as in fuzz/Cargo.toml.
pub const TARGETS: [(&str, Target); 7] = [
    ("xml_decode", xml_decode),
    ("stream_decoder", stream_decoder),
    ("datagram", datagram),
    ("config", config),
    ("fig_v1", fig_v1),
    ("rol", rol),
    ("ots_envelope", ots_envelope),
];

/// CoT XML: what decodes, re-encodes to the same event.
pub fn xml_decode(data: &[u8]) {
    if let Ok(ev) = xml::decode(data) {
        let again = xml::decode(&xml::encode(&ev)).expect("our own encoding decodes");
        assert_eq!(again, ev);
    }
}

/// The stream framer, fed in two parts split where the first byte says; its buffer stays
/// bounded by the maximum event size.
pub fn stream_decoder(data: &[u8]) {
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut dec = StreamDecoder::new(4096);
    for part in [&data[..split], &data[split..]] {
        dec.push(part);
        while let Some(f) = dec.next_frame() {
            if let Ok(f) = f {
                let _ = decode_frame(&f);
            }
        }
        assert!(dec.buffered() <= 4096 + part.len());
    }
}

/// UDP payloads (XML or mesh protobuf): mesh events survive re-encoding.
pub fn datagram(data: &[u8]) {
    if let Ok(d) = mesh::decode(data) {
        if let (Some(ev), true) = (d.event, d.protobuf) {
            let mut out = Vec::new();
            WireFormat::ProtoMesh.encode_into(&ev, &mut out);
            assert_eq!(mesh::decode(&out).expect("our own mesh decodes").event.expect("an event"), ev);
        }
    }
}

/// The TOML configuration.
pub fn config(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(s);
    }
}

/// Federation v1 frames in 7-byte chunks, and GeoEvent <-> CoT.
pub fn fig_v1(data: &[u8]) {
    let mut d = v1::Decoder::new(1 << 16);
    for chunk in data.chunks(7) {
        d.push(chunk);
        while let Some(f) = d.next_frame() {
            let Ok(fe) = f else { return };
            if let Some(g) = fe.event {
                if let Ok(ev) = convert::from_geo(g) {
                    let facts = crate::router::message::Facts::of(&ev);
                    let _ = convert::from_geo(convert::to_geo(&ev, &facts));
                }
            }
        }
    }
}

/// ROL programs from federates (a parsed change re-emitted parses the same), and
/// t-x-m-c announcements.
pub fn rol(data: &[u8]) {
    let program = String::from_utf8_lossy(data).into_owned();
    if let Ok(changes) = parse_rol(&Rol { program, ..Default::default() }) {
        for c in changes {
            let Some(rol) = to_rol(&c, &[]) else { continue };
            let back = parse_rol(&rol).expect("our own ROL parses");
            let key = |c: &crate::store::Change| (c.mission.clone(), c.change_type, c.content_uid.clone(), c.content_hash.clone(), c.creator_uid.clone(), c.ts_ms);
            assert_eq!(back.iter().map(key).collect::<Vec<_>>(), vec![key(&c)], "{}", rol.program);
        }
    }
    if let Ok(ev) = xml::decode(data) {
        let _ = crate::missions::parse_announcement(&ev);
    }
}

/// OpenTAKServer's bus envelope.
pub fn ots_envelope(data: &[u8]) {
    let _ = crate::transport::ots::decode_envelope(data);
}
