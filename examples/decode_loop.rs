//! Decodes a typical ATAK position report N times (XML, then protobuf); a fixed workload
//! for profilers: `valgrind --tool=callgrind target/release/examples/decode_loop 20000`.
use takgate::cot::{proto, sample::ATAK_PLI, xml};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let ev = xml::decode(ATAK_PLI.as_bytes()).unwrap();
    let mut payload = Vec::new();
    proto::encode_message_into(&ev, None, &mut payload);
    let mut total = 0usize;
    for _ in 0..n {
        total += xml::decode(ATAK_PLI.as_bytes()).unwrap().uid.len();
    }
    for _ in 0..n {
        total += proto::decode_message(&payload).unwrap().event.unwrap().uid.len();
    }
    println!("{total}");
}
