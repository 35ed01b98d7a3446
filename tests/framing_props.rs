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

/// Reads `wire` into a decoder the way the links do (`read_buffer`, then as many bytes as
/// the spare capacity takes), at the given cut sizes, taking frames as they complete.
/// Returns the largest capacity seen and the bytes received by then.
/// `take` returns false when the link would close (a v1 frame over the limit).
fn worst_capacity(wire: &[u8], cuts: &[usize], mut read_buffer: impl FnMut() -> (usize, usize), mut put: impl FnMut(&[u8]), mut take: impl FnMut() -> bool) -> Vec<(usize, usize)> {
    let (mut pos, mut i, mut seen) = (0, 0, vec![]);
    while pos < wire.len() {
        let (spare, _) = read_buffer();
        let n = cuts[i % cuts.len()].min(wire.len() - pos).min(spare.max(1));
        put(&wire[pos..pos + n]);
        pos += n;
        i += 1;
        let open = take();
        seen.push((read_buffer().1, pos));
        if !open {
            break;
        }
    }
    seen
}

/// A length header, a varint claiming up to 2^35 bytes, or a v1 length up to 4 GiB, then a
/// few bytes: what a peer only claims.
fn claims() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u64..(1 << 35)).prop_map(|n| {
            let mut v = vec![0xbf];
            prost::encoding::encode_varint(n, &mut v);
            v
        }),
        any::<u32>().prop_map(|n| n.to_be_bytes().to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Buffers grow with the bytes that arrived, never with a length a header claims: the
    /// capacity stays within a constant factor of what was received (plus one read chunk).
    #[test]
    fn buffers_grow_with_bytes_received_not_with_claimed_lengths(head in claims(), tail in proptest::collection::vec(any::<u8>(), 0..20_000), cuts in proptest::collection::vec(1usize..5000, 1..20)) {
        let mut wire = head.clone();
        wire.extend_from_slice(&tail);
        let bound = |received: usize| 2 * received + 64 * 1024;
        // the stream decoder (TCP, TLS, stream protobuf)
        let dec = std::cell::RefCell::new(StreamDecoder::new(8 << 20));
        let seen = worst_capacity(&wire, &cuts, || {
            let mut d = dec.borrow_mut();
            let b = d.read_buffer();
            (b.capacity() - b.len(), b.capacity())
        }, |x| dec.borrow_mut().buffer_mut().extend_from_slice(x), || {
            while dec.borrow_mut().next_frame().is_some() {}
            true
        });
        for (cap, received) in seen {
            prop_assert!(cap <= bound(received), "stream decoder: capacity {} after {} bytes", cap, received);
        }
        // federation v1 frames (4-byte length)
        let v1 = std::cell::RefCell::new(takgate::federation::v1::Decoder::new(64 << 20));
        let seen = worst_capacity(&wire, &cuts, || {
            let mut d = v1.borrow_mut();
            let b = d.read_buffer();
            (b.capacity() - b.len(), b.capacity())
        }, |x| v1.borrow_mut().buffer_mut().extend_from_slice(x), || loop {
            match v1.borrow_mut().next_frame() {
                None => return true,
                Some(Ok(_)) => {}
                Some(Err(_)) => return false,
            }
        });
        for (cap, received) in seen {
            prop_assert!(cap <= bound(received), "v1 decoder: capacity {} after {} bytes", cap, received);
        }
    }
}
