//! Codec throughput on a typical ATAK position report: XML and protobuf decode and encode,
//! and stream framing. Run: `cargo bench --bench codec`. Results: BENCHMARKS.md.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use prost::Message as _;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use takgate::codec::{StreamDecoder, WireFormat};
use takgate::cot::{proto, sample::ATAK_PLI, xml};

fn codec(c: &mut Criterion) {
    let ev = xml::decode(ATAK_PLI.as_bytes()).unwrap();
    let mut payload = Vec::new();
    proto::encode_message_into(&ev, None, &mut payload);

    let mut g = c.benchmark_group("pli");
    g.throughput(Throughput::Elements(1));
    g.bench_function("xml_decode", |b| b.iter(|| xml::decode(black_box(ATAK_PLI.as_bytes())).unwrap()));
    g.bench_function("xml_encode", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            xml::encode_into(black_box(&ev), &mut out);
        })
    });
    g.bench_function("proto_decode", |b| b.iter(|| proto::decode_message(black_box(&payload)).unwrap()));
    g.bench_function("proto_encode", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            proto::encode_message_into(black_box(&ev), None, &mut out);
        })
    });
    // The libraries' own floor on the same event, for the record (BENCHMARKS.md): what
    // quick-xml costs to tokenize it, and to also visit and unescape every attribute value
    // (any XML decoder must do both); and what prost's generated code costs to decode the
    // TakMessage into its own types, before any conversion into a CotEvent.
    g.bench_function("floor_quickxml_tokens", |b| b.iter(|| xml_floor(black_box(ATAK_PLI), false)));
    g.bench_function("floor_quickxml_attrs", |b| b.iter(|| xml_floor(black_box(ATAK_PLI), true)));
    g.bench_function("floor_prost_decode", |b| b.iter(|| takgate::cot::pb::TakMessage::decode(black_box(&payload[..])).unwrap()));
    // Framing alone: 100 XML events per chunk, split after </event>.
    let mut wire = Vec::new();
    for _ in 0..100 {
        WireFormat::Xml.encode_into(&ev, &mut wire);
    }
    g.throughput(Throughput::Elements(100));
    g.bench_function("xml_stream_split_x100", |b| {
        b.iter(|| {
            let mut d = StreamDecoder::new(1 << 20);
            d.push(black_box(&wire));
            let mut n = 0;
            while let Some(f) = d.next_frame() {
                black_box(f.unwrap());
                n += 1;
            }
            assert_eq!(n, 100);
        })
    });
    g.finish();
}

fn xml_floor(doc: &str, attrs: bool) -> usize {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(doc);
    let mut n = 0;
    loop {
        match r.read_event().unwrap() {
            Event::Start(e) | Event::Empty(e) if attrs => {
                for a in e.attributes().with_checks(false) {
                    let v = a.unwrap().value;
                    n += quick_xml::escape::unescape(std::str::from_utf8(&v).unwrap()).unwrap().len();
                }
            }
            Event::Eof => return n,
            _ => n += 1,
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
