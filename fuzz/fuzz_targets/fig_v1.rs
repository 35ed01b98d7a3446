//! Federation v1 frames (4-byte length + FederatedEvent) in arbitrary chunks: never panics;
//! every decoded GeoEvent converts to CoT or to a clear error, and a converted event
//! converts back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use takgate::federation::{convert, v1};

fuzz_target!(|data: &[u8]| {
    let mut d = v1::Decoder::new(1 << 16);
    for chunk in data.chunks(7) {
        d.push(chunk);
        while let Some(f) = d.next_frame() {
            let Ok(fe) = f else { return };
            if let Some(g) = fe.event {
                if let Ok(ev) = convert::from_geo(g) {
                    let facts = takgate::router::message::Facts::of(&ev);
                    let _ = convert::from_geo(convert::to_geo(&ev, &facts));
                }
            }
        }
    }
});
