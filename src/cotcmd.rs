//! `takgate cot convert` and `takgate cot inspect`: capture-debugging tools for TAK
//! developers. Many events in, many out; a bad event is reported on stderr with its
//! position and the command goes on with the next one.

use std::io::{self, Read, Write};

use crate::codec::{decode_frame, mesh, StreamDecoder, WireFormat, DEFAULT_MAX_EVENT};
use crate::cot::CotEvent;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    /// CoT XML events, back to back or one per line/file.
    Xml,
    /// TAK protocol v1 stream frames (0xbf varint length TakMessage).
    ProtoStream,
    /// TAK protocol v1 mesh datagrams (0xbf 0x01 0xbf TakMessage): as hex text one per
    /// line, otherwise the whole input is one datagram.
    ProtoMesh,
    /// Any of the above, recognised per event; hex text is recognised too.
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum To {
    Xml,
    ProtoStream,
    ProtoMesh,
    /// One JSON object per line.
    Json,
}

/// Counts of what a conversion did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub events: usize,
    pub errors: usize,
}

fn decode_hex_line(line: &str) -> Option<Vec<u8>> {
    let h: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    if h.is_empty() {
        return None;
    }
    hex::decode(h).ok()
}

fn looks_like_hex(input: &[u8]) -> bool {
    !input.is_empty() && input.iter().all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace()) && input.iter().any(|b| b.is_ascii_hexdigit())
}

/// Decodes every event in `input`, calling `sink` with (index, byte offset, result). Input
/// that is hex text (as captures are often shared) is decoded line by line.
pub fn for_each_event(input: &[u8], from: From, mut sink: impl FnMut(usize, u64, Result<CotEvent, String>)) {
    let mut n = 0usize;
    if looks_like_hex(input) {
        let text = String::from_utf8_lossy(input);
        let mut offset = 0u64;
        for line in text.split_inclusive('\n') {
            let at = offset;
            offset += line.len() as u64;
            if line.trim().is_empty() {
                continue;
            }
            let Some(bytes) = decode_hex_line(line) else {
                sink(n, at, Err("not a hex line".into()));
                n += 1;
                continue;
            };
            if from == From::ProtoMesh || (from == From::Auto && bytes.starts_with(&[0xbf, 0x01, 0xbf])) {
                match mesh::decode(&bytes) {
                    Ok(d) => {
                        if let Some(ev) = d.event {
                            sink(n, at, Ok(ev));
                            n += 1;
                        }
                    }
                    Err(e) => {
                        sink(n, at, Err(e.to_string()));
                        n += 1;
                    }
                }
            } else {
                decode_stream(&bytes, at, &mut n, &mut sink);
            }
        }
        return;
    }
    if from == From::ProtoMesh {
        match mesh::decode(input) {
            Ok(d) => {
                if let Some(ev) = d.event {
                    sink(0, 0, Ok(ev));
                }
            }
            Err(e) => sink(0, 0, Err(e.to_string())),
        }
        return;
    }
    decode_stream(input, 0, &mut n, &mut sink);
}

fn decode_stream(input: &[u8], base: u64, n: &mut usize, sink: &mut impl FnMut(usize, u64, Result<CotEvent, String>)) {
    let mut dec = StreamDecoder::new(DEFAULT_MAX_EVENT);
    dec.push(input);
    let mut consumed = 0u64;
    loop {
        let at = base + consumed;
        let before = dec.buffered();
        let Some(frame) = dec.next_frame() else { break };
        consumed += (before - dec.buffered()) as u64;
        match frame {
            Ok(f) => match decode_frame(&f) {
                Ok(Some(ev)) => sink(*n, at, Ok(ev)),
                Ok(None) => continue,
                Err(e) => sink(*n, at, Err(e.to_string())),
            },
            Err(e) => sink(*n, at, Err(e.to_string())),
        }
        *n += 1;
    }
    if dec.buffered() > 0 {
        sink(*n, base + consumed, Err(format!("{} bytes at the end are not a complete event", dec.buffered())));
        *n += 1;
    }
}

/// `takgate cot convert`. With `hex`, binary output is written as one hex line per event.
pub fn convert(input: &[u8], from: From, to: To, hex: bool, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<Summary> {
    let mut s = Summary::default();
    let mut buf = Vec::with_capacity(1024);
    let mut io_err = None;
    for_each_event(input, from, |i, at, r| {
        if io_err.is_some() {
            return;
        }
        let res = match r {
            Ok(ev) => {
                s.events += 1;
                buf.clear();
                match to {
                    To::Xml => {
                        WireFormat::Xml.encode_into(&ev, &mut buf);
                        out.write_all(&buf)
                    }
                    To::ProtoStream | To::ProtoMesh => {
                        let f = if to == To::ProtoStream { WireFormat::ProtoStream } else { WireFormat::ProtoMesh };
                        f.encode_into(&ev, &mut buf);
                        if hex {
                            writeln!(out, "{}", crate::cot::HexLine(&buf))
                        } else {
                            out.write_all(&buf)
                        }
                    }
                    To::Json => serde_json::to_writer(&mut *out, &ev).map_err(io::Error::other).and_then(|_| out.write_all(b"\n")),
                }
            }
            Err(e) => {
                s.errors += 1;
                writeln!(err, "event #{} at byte {}: {}", i + 1, at, e)
            }
        };
        if let Err(e) = res {
            io_err = Some(e);
        }
    });
    if let Some(e) = io_err {
        return Err(e);
    }
    out.flush()?;
    Ok(s)
}

/// One readable line for an event.
pub fn summary_line(ev: &CotEvent) -> String {
    let d = &ev.detail;
    let mut parts = vec![];
    for (present, name) in [
        (d.contact.is_some(), "contact"),
        (d.group.is_some(), "__group"),
        (d.precision_location.is_some(), "precisionlocation"),
        (d.status.is_some(), "status"),
        (d.takv.is_some(), "takv"),
        (d.track.is_some(), "track"),
    ] {
        if present {
            parts.push(name.to_string());
        }
    }
    let _ = crate::cot::fragment::walk_fragment(&d.xml, |n| parts.push(format!("~{}", String::from_utf8_lossy(n))));
    format!(
        "{} {} uid={} how={} time={} stale=+{}s callsign={} point={},{} hae={} detail=[{}]",
        ev.time,
        ev.cot_type,
        ev.uid,
        ev.how,
        ev.time,
        (ev.stale.millis() - ev.time.millis()) / 1000,
        ev.callsign().as_deref().unwrap_or("-"),
        ev.point.lat,
        ev.point.lon,
        ev.point.hae,
        parts.join(",")
    )
}

/// `takgate cot inspect`.
pub fn inspect(input: &[u8], from: From, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<Summary> {
    let mut s = Summary::default();
    for_each_event(input, from, |i, at, r| match r {
        Ok(ev) => {
            s.events += 1;
            let _ = writeln!(out, "#{} @{} {}", i + 1, at, summary_line(&ev));
        }
        Err(e) => {
            s.errors += 1;
            let _ = writeln!(err, "event #{} at byte {}: {}", i + 1, at, e);
        }
    });
    Ok(s)
}

/// Reads all of standard input.
pub fn read_stdin() -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    io::stdin().lock().read_to_end(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cot::sample::ATAK_PLI;

    #[test]
    fn convert_continues_after_a_bad_event() {
        let input = format!("{ATAK_PLI}<event uid='x'>broken</event>{ATAK_PLI}");
        let (mut out, mut err) = (vec![], vec![]);
        let s = convert(input.as_bytes(), From::Auto, To::Json, false, &mut out, &mut err).unwrap();
        assert_eq!(s, Summary { events: 2, errors: 1 });
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2);
        let err = String::from_utf8(err).unwrap();
        assert!(err.starts_with(&format!("event #2 at byte {}: missing required attribute type", ATAK_PLI.len())), "{err}");
    }

    #[test]
    fn hex_mesh_in_stream_out_and_back() {
        let (mut out, mut err) = (vec![], vec![]);
        convert(ATAK_PLI.as_bytes(), From::Xml, To::ProtoMesh, true, &mut out, &mut err).unwrap();
        let hex = String::from_utf8(out).unwrap();
        assert!(hex.starts_with("bf01bf"));
        let (mut out2, mut err2) = (vec![], vec![]);
        let s = convert(hex.as_bytes(), From::Auto, To::ProtoStream, false, &mut out2, &mut err2).unwrap();
        assert_eq!(s.events, 1);
        let mut back = vec![];
        convert(&out2, From::ProtoStream, To::Xml, false, &mut back, &mut err2).unwrap();
        assert_eq!(crate::cot::xml::decode(&back).unwrap(), crate::cot::xml::decode(ATAK_PLI.as_bytes()).unwrap());
    }
}
