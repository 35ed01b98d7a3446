//! CoT XML decode: never panics; whatever decodes re-encodes to the same event.
#![no_main]
use libfuzzer_sys::fuzz_target;
use takgate::cot::xml;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = xml::decode(data) {
        let again = xml::decode(&xml::encode(&ev)).expect("our own encoding decodes");
        assert_eq!(again, ev);
    }
});
