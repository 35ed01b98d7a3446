//! The cluster's batch envelope: several CoT events in one AMQP message.
//!
//! Content type `application/vnd.takgate.cot-batch`, header `takgate-batch` = the envelope
//! version (1) and `takgate-count` = the number of events. Body: for each event its length
//! (4 bytes, big-endian) and then its CoT XML. Decoding is strict: an unknown version, a
//! length past the end of the body, an empty event, stray bytes at the end or a count that
//! differs from the header refuse the whole message (nothing in it is delivered). Lengths are
//! only ever compared with bytes already received: nothing is reserved for a claimed length.
//! A message with any other content type is one CoT XML event (what plain producers send).

use lapin::types::{AMQPValue, FieldTable, ShortString};

pub const CONTENT_TYPE: &str = "application/vnd.takgate.cot-batch";
pub const VERSION_HEADER: &str = "takgate-batch";
pub const COUNT_HEADER: &str = "takgate-count";
pub const VERSION: i64 = 1;

/// Appends one event (its XML) to a batch body.
pub fn push(body: &mut Vec<u8>, xml: &[u8]) {
    body.extend_from_slice(&(xml.len() as u32).to_be_bytes());
    body.extend_from_slice(xml);
}

/// The headers of a batch of `count` events.
pub fn headers(count: usize) -> FieldTable {
    let mut h = FieldTable::default();
    h.insert(VERSION_HEADER.into(), AMQPValue::LongLongInt(VERSION));
    h.insert(COUNT_HEADER.into(), AMQPValue::LongLongInt(count as i64));
    h
}

fn int(h: Option<&FieldTable>, name: &str) -> Option<i64> {
    match h?.inner().get(&ShortString::from(name))? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        _ => None,
    }
}

/// The events of a message: a batch's, strictly, or the whole body as one event.
pub fn events<'a>(content_type: Option<&str>, headers: Option<&FieldTable>, body: &'a [u8]) -> Result<Vec<&'a [u8]>, String> {
    if content_type != Some(CONTENT_TYPE) {
        return Ok(vec![body]);
    }
    match int(headers, VERSION_HEADER) {
        Some(VERSION) => {}
        Some(v) => return Err(format!("batch envelope version {v}: this takgate reads version {VERSION} (upgrade the nodes together)")),
        None => return Err(format!("batch without a {VERSION_HEADER} version header")),
    }
    let mut out = vec![];
    let mut rest = body;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(format!("batch: {} stray bytes after event {}", rest.len(), out.len()));
        }
        let (len, tail) = rest.split_at(4);
        let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if n == 0 {
            return Err(format!("batch: event {} is empty", out.len() + 1));
        }
        if n > tail.len() {
            return Err(format!("batch: event {} claims {n} bytes, {} are left", out.len() + 1, tail.len()));
        }
        let (ev, tail) = tail.split_at(n);
        out.push(ev);
        rest = tail;
    }
    if out.is_empty() {
        return Err("batch: no events".into());
    }
    match int(headers, COUNT_HEADER) {
        Some(c) if c == out.len() as i64 => Ok(out),
        Some(c) => Err(format!("batch: header says {c} events, the body holds {}", out.len())),
        None => Err(format!("batch without a {COUNT_HEADER} header")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strict_refusals() {
        let mut body = vec![];
        push(&mut body, b"<event uid='a'/>");
        push(&mut body, b"<event uid='b'/>");
        let h = headers(2);
        assert_eq!(events(Some(CONTENT_TYPE), Some(&h), &body).unwrap(), [&b"<event uid='a'/>"[..], &b"<event uid='b'/>"[..]]);
        // Plain messages are one event.
        assert_eq!(events(Some("application/xml"), None, b"<event/>").unwrap().len(), 1);
        assert_eq!(events(None, None, b"<event/>").unwrap().len(), 1);
        // Refusals.
        assert!(events(Some(CONTENT_TYPE), Some(&headers(3)), &body).unwrap_err().contains("header says 3"));
        assert!(events(Some(CONTENT_TYPE), None, &body).unwrap_err().contains("version"));
        let mut v2 = FieldTable::default();
        v2.insert(VERSION_HEADER.into(), AMQPValue::LongLongInt(2));
        assert!(events(Some(CONTENT_TYPE), Some(&v2), &body).unwrap_err().contains("version 2"));
        assert!(events(Some(CONTENT_TYPE), Some(&h), &body[..body.len() - 1]).unwrap_err().contains("claims"));
        let mut stray = body.clone();
        stray.extend_from_slice(&[0, 0]);
        assert!(events(Some(CONTENT_TYPE), Some(&h), &stray).unwrap_err().contains("stray"));
        assert!(events(Some(CONTENT_TYPE), Some(&headers(0)), &[0, 0, 0, 0]).unwrap_err().contains("empty"));
        assert!(events(Some(CONTENT_TYPE), Some(&headers(0)), &[]).unwrap_err().contains("no events"));
        // A length far past the body reserves nothing.
        assert!(events(Some(CONTENT_TYPE), Some(&h), &[0xff, 0xff, 0xff, 0xff, 1]).unwrap_err().contains("claims 4294967295"));
    }
}
