//! ATAK/WinTAK/iTAK connection data packages: one zip a device imports to connect to
//! takgate with its own client certificate.
//!
//! The layout is the one ATAK imports as a mission package (as taky's `build_client` and
//! TAK Server's connection packages are built): `MANIFEST/manifest.xml` lists the entries;
//! `certs/server.pref` holds the `cot_streams` connection (`connectString0` =
//! `host:port:ssl`, and with QUIC a second stream `host:port:quic`) with its truststore and
//! client certificate per stream (`caLocation0`, `caPassword0`, `certificateLocation0`,
//! `clientPassword0`), and the same as defaults in `com.atakmap.app_preferences`; the client
//! `.p12` (its key and chain) and `truststore.p12` (the CA alone) sit beside it. Certificate
//! locations are `cert/<file>`, where ATAK puts a package's certificates on import. The CA's
//! key never goes into a package.

use std::io::{Cursor, Write};
use std::path::Path;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

/// What a package connects to.
#[derive(Debug, Clone)]
pub struct Connection {
    pub cn: String,
    pub server: String,
    pub port: u16,
    pub quic_port: Option<u16>,
    /// Protects both .p12 files (ATAK's default is "atakatak").
    pub password: String,
}

fn xml_err(e: impl std::fmt::Display) -> String {
    format!("package: {e}")
}

fn entry<W: Write>(w: &mut Writer<W>, key: &str, class: &str, value: &str) -> Result<(), String> {
    let mut e = BytesStart::new("entry");
    e.push_attribute(("key", key));
    e.push_attribute(("class", class));
    w.write_event(Event::Start(e)).map_err(xml_err)?;
    w.write_event(Event::Text(BytesText::new(value))).map_err(xml_err)?;
    w.write_event(Event::End(BytesEnd::new("entry"))).map_err(xml_err)
}

const STRING: &str = "class java.lang.String";
const BOOLEAN: &str = "class java.lang.Boolean";
const INTEGER: &str = "class java.lang.Integer";

/// The preference file: the connection(s) and the certificates they use.
pub fn preferences(c: &Connection, client_p12: &str, truststore: &str) -> Result<Vec<u8>, String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("ASCII"), Some("yes")))).map_err(xml_err)?;
    w.write_event(Event::Start(BytesStart::new("preferences"))).map_err(xml_err)?;
    let mut streams = vec![(format!("{}:{}:ssl", c.server, c.port), c.server.clone(), true)];
    if let Some(q) = c.quic_port {
        // Off until the user picks it: ATAK keeps one server connection per stream.
        streams.push((format!("{}:{q}:quic", c.server), format!("{} (QUIC)", c.server), false));
    }
    let mut p = BytesStart::new("preference");
    p.push_attribute(("version", "1"));
    p.push_attribute(("name", "cot_streams"));
    w.write_event(Event::Start(p)).map_err(xml_err)?;
    entry(&mut w, "count", INTEGER, &streams.len().to_string())?;
    let (ca_loc, cert_loc) = (format!("cert/{truststore}"), format!("cert/{client_p12}"));
    for (i, (connect, description, enabled)) in streams.iter().enumerate() {
        entry(&mut w, &format!("description{i}"), STRING, description)?;
        entry(&mut w, &format!("enabled{i}"), BOOLEAN, if *enabled { "true" } else { "false" })?;
        entry(&mut w, &format!("connectString{i}"), STRING, connect)?;
        entry(&mut w, &format!("caLocation{i}"), STRING, &ca_loc)?;
        entry(&mut w, &format!("caPassword{i}"), STRING, &c.password)?;
        entry(&mut w, &format!("certificateLocation{i}"), STRING, &cert_loc)?;
        entry(&mut w, &format!("clientPassword{i}"), STRING, &c.password)?;
    }
    w.write_event(Event::End(BytesEnd::new("preference"))).map_err(xml_err)?;
    let mut p = BytesStart::new("preference");
    p.push_attribute(("version", "1"));
    p.push_attribute(("name", "com.atakmap.app_preferences"));
    w.write_event(Event::Start(p)).map_err(xml_err)?;
    entry(&mut w, "displayServerConnectionWidget", BOOLEAN, "true")?;
    entry(&mut w, "caLocation", STRING, &ca_loc)?;
    entry(&mut w, "caPassword", STRING, &c.password)?;
    entry(&mut w, "certificateLocation", STRING, &cert_loc)?;
    entry(&mut w, "clientPassword", STRING, &c.password)?;
    w.write_event(Event::End(BytesEnd::new("preference"))).map_err(xml_err)?;
    w.write_event(Event::End(BytesEnd::new("preferences"))).map_err(xml_err)?;
    Ok(w.into_inner())
}

/// The mission package manifest listing `entries`.
pub fn manifest(uid: &str, name: &str, entries: &[&str]) -> Result<Vec<u8>, String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let mut m = BytesStart::new("MissionPackageManifest");
    m.push_attribute(("version", "2"));
    w.write_event(Event::Start(m)).map_err(xml_err)?;
    w.write_event(Event::Start(BytesStart::new("Configuration"))).map_err(xml_err)?;
    for (k, v) in [("uid", uid), ("name", name), ("onReceiveDelete", "true")] {
        let mut p = BytesStart::new("Parameter");
        p.push_attribute(("name", k));
        p.push_attribute(("value", v));
        w.write_event(Event::Empty(p)).map_err(xml_err)?;
    }
    w.write_event(Event::End(BytesEnd::new("Configuration"))).map_err(xml_err)?;
    w.write_event(Event::Start(BytesStart::new("Contents"))).map_err(xml_err)?;
    for e in entries {
        let mut c = BytesStart::new("Content");
        c.push_attribute(("ignore", "false"));
        c.push_attribute(("zipEntry", *e));
        w.write_event(Event::Empty(c)).map_err(xml_err)?;
    }
    w.write_event(Event::End(BytesEnd::new("Contents"))).map_err(xml_err)?;
    w.write_event(Event::End(BytesEnd::new("MissionPackageManifest"))).map_err(xml_err)?;
    Ok(w.into_inner())
}

/// The package (zip bytes) for a client certificate `cert`/`key` of the CA `ca_cert`.
pub fn build(c: &Connection, cert: &Path, key: &Path, ca_cert: &Path) -> Result<Vec<u8>, String> {
    let dir = std::env::temp_dir().join(format!("takgate-package-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = (|| {
        let client_name = format!("{}.p12", c.cn);
        let (client, trust) = (dir.join(&client_name), dir.join("truststore.p12"));
        crate::certs::export_p12(cert, key, &client, &c.password, true)?;
        crate::certs::export_truststore(ca_cert, &trust, &c.password)?;
        let pref = preferences(c, &client_name, "truststore.p12")?;
        let entries = ["certs/server.pref".to_string(), "certs/truststore.p12".into(), format!("certs/{client_name}")];
        let uid = crate::cot::random_uid();
        let man = manifest(&uid, &format!("{}_{}", c.server, c.cn), &entries.iter().map(String::as_str).collect::<Vec<_>>())?;
        let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        for (name, data) in [("MANIFEST/manifest.xml".to_string(), man), (entries[0].clone(), pref), (entries[1].clone(), read(&trust)?), (entries[2].clone(), read(&client)?)] {
            z.start_file(name, opts).map_err(|e| format!("zip: {e}"))?;
            z.write_all(&data).map_err(|e| format!("zip: {e}"))?;
        }
        Ok(z.finish().map_err(|e| format!("zip: {e}"))?.into_inner())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
