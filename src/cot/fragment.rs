//! Helpers for detail fragments: the content of `<detail>` kept verbatim in
//! [`super::Detail::xml`] (and in protobuf `xmlDetail`). Finding an attribute, dropping an
//! element, walking the top-level elements, escaping and unescaping. Pure, quick-xml based,
//! and independent of the event codec (which uses them).

use std::borrow::Cow;

use memchr::memmem;
use quick_xml::events::Event;
use quick_xml::Reader;

use crate::error::CodecError;

/// Rejects DOCTYPE and entity declarations anywhere in the bytes (one scan for `<!`, which
/// otherwise only starts comments and CDATA).
pub(crate) fn check_no_dtd(b: &[u8]) -> Result<(), CodecError> {
    static MARKUP_DECL: std::sync::LazyLock<memmem::Finder<'static>> = std::sync::LazyLock::new(|| memmem::Finder::new(b"<!"));
    for i in MARKUP_DECL.find_iter(b) {
        if matches!(b.get(i + 2), Some(b'D' | b'E' | b'd' | b'e')) {
            return Err(CodecError::Doctype);
        }
    }
    Ok(())
}

/// Walks a detail fragment (the content of `<detail>`, as in protobuf xmlDetail), checking
/// that it is well-formed and has no DTD, and calls `f` with each top-level element name.
pub fn walk_fragment(xml: &str, mut f: impl FnMut(&[u8])) -> Result<(), CodecError> {
    check_no_dtd(xml.as_bytes()).map_err(|_| CodecError::BadXmlDetail("DOCTYPE or entity declaration".into()))?;
    let mut r = Reader::from_str(xml);
    let bad = |r: &Reader<&[u8]>, e: &dyn std::fmt::Display| CodecError::BadXmlDetail(format!("at byte {}: {e}", r.error_position()));
    loop {
        match r.read_event().map_err(|e| bad(&r, &e))? {
            Event::Empty(e) => f(e.name().as_ref()),
            Event::Start(e) => {
                f(e.name().as_ref());
                r.read_to_end(e.name()).map_err(|err| bad(&r, &err))?;
            }
            Event::End(_) => return Err(bad(&r, &"unmatched end tag")),
            Event::Decl(_) | Event::DocType(_) => return Err(bad(&r, &"declaration in a fragment")),
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

/// A detail fragment without its top-level `elem` elements.
pub fn without_element(xml: &str, elem: &str) -> String {
    let mut r = Reader::from_str(xml);
    let mut out = String::with_capacity(xml.len());
    let mut last = 0;
    loop {
        let before = r.buffer_position() as usize;
        let Ok(ev) = r.read_event() else { return xml.to_owned() };
        match ev {
            Event::Empty(e) if e.name().as_ref() == elem.as_bytes() => {
                out.push_str(&xml[last..before]);
                last = r.buffer_position() as usize;
            }
            Event::Start(e) => {
                let hit = e.name().as_ref() == elem.as_bytes();
                if r.read_to_end(e.name()).is_err() {
                    return xml.to_owned();
                }
                if hit {
                    out.push_str(&xml[last..before]);
                    last = r.buffer_position() as usize;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out.push_str(&xml[last..]);
    out
}

/// The value of `attr` on the first top-level `elem` of a detail fragment.
pub fn find_attr(xml: &str, elem: &str, attr: &str) -> Option<String> {
    let mut r = Reader::from_str(xml);
    loop {
        match r.read_event().ok()? {
            Event::Empty(e) | Event::Start(e) if e.name().as_ref() == elem.as_bytes() => {
                return e.attributes().flatten().find(|a| a.key.as_ref() == attr.as_bytes()).and_then(|a| a.unescape_value().ok().map(Cow::into_owned));
            }
            Event::Start(e) => {
                r.read_to_end(e.name()).ok()?;
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Text content with its character and entity references resolved (as written; on a bad
/// reference, the raw text).
pub fn unescape_text(raw: &str) -> String {
    quick_xml::escape::unescape(raw).map(|c| c.into_owned()).unwrap_or_else(|_| raw.to_owned())
}

/// Appends `v` to `out` escaped for a double-quoted attribute (newlines and tabs as
/// character references, so they survive attribute-value normalisation).
/// `v` escaped for an XML attribute value, as a string.
pub fn escape_attr_string(v: &str) -> String {
    let mut out = Vec::with_capacity(v.len());
    escape_attr(v, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

pub fn escape_attr(v: &str, out: &mut Vec<u8>) {
    let bytes = v.as_bytes();
    let mut last = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\n' => b"&#10;",
            b'\r' => b"&#13;",
            b'\t' => b"&#9;",
            _ => continue,
        };
        out.extend_from_slice(&bytes[last..i]);
        out.extend_from_slice(rep);
        last = i + 1;
    }
    out.extend_from_slice(&bytes[last..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_walk() {
        let mut names = vec![];
        walk_fragment("<a x='1'><b/></a>text<c/>", |n| names.push(String::from_utf8_lossy(n).into_owned())).unwrap();
        assert_eq!(names, ["a", "c"]);
        assert!(walk_fragment("<a><b></a>", |_| {}).is_err());
        assert!(walk_fragment("</detail></event><event>", |_| {}).is_err());
        assert!(walk_fragment("<a>", |_| {}).is_err());
    }


    #[test]
    fn attributes_and_elements() {
        let d = r#"<contact callsign="A&amp;B"/><marti><dest callsign="X"/></marti><link uid="u1"/>"#;
        assert_eq!(find_attr(d, "contact", "callsign").as_deref(), Some("A&B"));
        assert_eq!(find_attr(d, "dest", "callsign"), None, "only top-level elements");
        assert_eq!(without_element(d, "marti"), r#"<contact callsign="A&amp;B"/><link uid="u1"/>"#);
        let mut out = vec![];
        escape_attr("a\"<\n", &mut out);
        assert_eq!(out, b"a&quot;&lt;&#10;");
        assert_eq!(unescape_text("a&amp;b&#65;"), "a&bA");
        assert_eq!(check_no_dtd(b"<!DOCTYPE x>"), Err(CodecError::Doctype));
    }
}
