//! ROL programs from federates and t-x-m-c announcements: never panics; a parsed change
//! re-emitted as ROL parses to the same change.
#![no_main]
use libfuzzer_sys::fuzz_target;
use takgate::federation::fig::Rol;
use takgate::missions::{parse_rol, to_rol};

fuzz_target!(|data: &[u8]| {
    let program = String::from_utf8_lossy(data).into_owned();
    if let Ok(Some(c)) = parse_rol(&Rol { program, ..Default::default() }) {
        assert_eq!(parse_rol(&to_rol(&c)), Ok(Some(c)));
    }
    if let Ok(ev) = takgate::cot::xml::decode(data) {
        let _ = takgate::missions::parse_announcement(&ev);
    }
});
