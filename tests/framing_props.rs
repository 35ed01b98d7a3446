//! Property: any sequence of events, encoded as XML or stream protobuf frames in any mix,
//! with any whitespace between XML events, split at any byte boundaries (also inside
//! multi-byte UTF-8 characters), decodes to the same events.

use proptest::prelude::*;
use takgate::codec::{decode_frame, StreamDecoder, WireFormat};
use takgate::cot::fragment::escape_attr;
use takgate::cot::{Contact, CotEvent, CotTime, Track};

fn event() -> impl Strategy<Value = CotEvent> {
    (
        "[A-Za-z0-9.-]{1,24}",
        "[abtu](-[a-zA-Z]){0,5}",
        0i64..4_000_000_000_000,
        -90.0f64..90.0,
        -180.0f64..180.0,
        proptest::option::of("\\PC{1,12}"),
        "\\PC{0,40}",
        proptest::option::of((0.0f64..100.0, 0.0f64..360.0)),
    )
        .prop_map(|(uid, t, ms, lat, lon, cs, remarks, track)| {
            let mut ev = CotEvent::new(uid, t, "m-g", CotTime(ms), 120);
            ev.point.lat = lat;
            ev.point.lon = lon;
            ev.detail.contact = cs.map(|c| Contact { callsign: c, ..Default::default() });
            ev.detail.track = track.map(|(speed, course)| Track { speed, course });
            if !remarks.is_empty() {
                let mut esc = Vec::new();
                escape_attr(&remarks, &mut esc);
                ev.detail.xml = format!("<remarks>{}</remarks>", String::from_utf8(esc).unwrap());
            }
            ev
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_events_any_splits(events in proptest::collection::vec((event(), any::<bool>(), 0usize..3), 1..12), cuts in proptest::collection::vec(1usize..97, 1..40)) {
        let mut wire = Vec::new();
        for (ev, proto, ws) in &events {
            if *proto {
                WireFormat::ProtoStream.encode_into(ev, &mut wire);
            } else {
                WireFormat::Xml.encode_into(ev, &mut wire);
                wire.extend_from_slice(&b"\n\r\n"[..*ws]);
            }
        }
        let mut dec = StreamDecoder::new(1 << 20);
        let mut out = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < wire.len() {
            let n = cuts[i % cuts.len()].min(wire.len() - pos);
            dec.push(&wire[pos..pos + n]);
            pos += n;
            i += 1;
            while let Some(f) = dec.next_frame() {
                out.push(decode_frame(&f.unwrap()).unwrap().unwrap());
            }
        }
        prop_assert_eq!(dec.buffered(), 0);
        let want: Vec<CotEvent> = events.into_iter().map(|(e, _, _)| e).collect();
        prop_assert_eq!(out, want);
    }
}
