//! Stream framing and frame decoding (XML and 0xbf protobuf), fed in two chunks at a
//! fuzzer-chosen split: never panics, never buffers more than the limit plus one read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use takgate::codec::{decode_frame, StreamDecoder};

fuzz_target!(|data: &[u8]| {
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
});
