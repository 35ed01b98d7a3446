//! The federation servers of the admin API, with OpenTAKServer's shapes (the `success`
//! envelope, field names and status codes): list, create, read, update, delete, status and
//! the staged connection test. Changes take effect at once; key material goes to 0600 files
//! and is never returned.

use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Map, Value};

use super::{fail, reply, AdminState, St};
use crate::link::{tls, LinkState};
use crate::runtime::Control;
use crate::store::{Direction, Protocol, Server, ServerStatus, Source};

/// The live state of a server: its running link's connection, else the stored status.
pub(super) fn live_status(c: &Control, s: &Server) -> &'static str {
    if !s.enabled {
        return "disabled";
    }
    match c.link(&s.name).and_then(|l| l.connection) {
        Some(conn) => match conn.get().state {
            LinkState::Connected => "connected",
            LinkState::Error => "error",
            _ => "disconnected",
        },
        None => s.status.as_str(),
    }
}

/// A server as OpenTAKServer's `to_json()` shows it (plus takgate's fields); never the key.
fn server_json(c: &Control, s: &Server) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "node_id": s.node_id,
        "address": s.address,
        "port": s.port,
        "connection_type": s.direction,
        "protocol_version": s.protocol,
        "transport_protocol": "tcp",
        "use_tls": true,
        "verify_ssl": s.verify_ssl,
        "enabled": s.enabled,
        "status": live_status(c, s),
        "last_connected": s.last_connected,
        "last_error": c.link(&s.name).and_then(|l| l.connection).and_then(|x| x.get().last_error).or(s.last_error.clone()),
        "sync_missions": s.sync_missions,
        "sync_cot": s.sync_cot,
        // As OpenTAKServer: the JSON text of the pattern list.
        "mission_filter": s.mission_filter.as_ref().map(|f| serde_json::to_string(f).unwrap_or_default()),
        "has_ca_certificate": s.ca_path.is_some(),
        "has_client_certificate": s.cert_path.is_some(),
        "has_client_key": s.key_path.is_some(),
        "source": s.source,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    })
}

pub(super) async fn list_servers(State(st): St) -> Response {
    match st.control.store.servers() {
        Ok(v) => reply(StatusCode::OK, json!({"success": true, "servers": v.iter().map(|s| server_json(&st.control, s)).collect::<Vec<_>>()})),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn find(st: &AdminState, id: i64) -> Result<Server, Response> {
    match st.control.store.server(id) {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(fail(StatusCode::NOT_FOUND, format!("no federation server {id}"))),
        Err(e) => Err(fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

pub(super) async fn get_server(State(st): St, Path(id): Path<i64>) -> Response {
    match find(&st, id) {
        Ok(s) => reply(StatusCode::OK, json!({"success": true, "server": server_json(&st.control, &s)})),
        Err(r) => r,
    }
}

/// The fields a client may send for a server (OpenTAKServer's names).
const FIELDS: &[&str] = &[
    "name", "description", "address", "port", "connection_type", "protocol_version", "transport_protocol", "use_tls", "verify_ssl", "ca_certificate", "client_certificate", "client_key", "ca_path", "cert_path", "key_path", "sync_missions", "sync_cot", "mission_filter", "enabled", "node_id",
];

/// A request body, read field by field with the type each must have.
struct Body<'a> {
    map: &'a Map<String, Value>,
    /// On update, `null` means "leave it".
    creating: bool,
}

impl Body<'_> {
    fn string(&self, k: &str) -> Result<Option<String>, String> {
        match self.map.get(k) {
            None => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.clone())),
            Some(Value::Null) if !self.creating => Ok(None),
            Some(other) => Err(format!("{k}: expected a string, got {other}")),
        }
    }
    fn boolean(&self, k: &str) -> Result<Option<bool>, String> {
        match self.map.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(format!("{k}: expected true or false, got {other}")),
        }
    }
    fn word<T: std::str::FromStr<Err = String>>(&self, k: &str) -> Result<Option<T>, String> {
        self.string(k)?.map(|v| v.parse::<T>().map_err(|e| format!("{k}: {e}"))).transpose()
    }
}

/// Applies the fields of `body` to `s`, validating each; PEM material is written to files.
fn apply_fields(st: &AdminState, s: &mut Server, map: &Map<String, Value>, creating: bool) -> Result<(), String> {
    if let Some(k) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown field {k:?}"));
    }
    let b = Body { map, creating };
    apply_identity(&b, s)?;
    apply_kind(&b, s)?;
    apply_policy(&b, s)?;
    apply_files(&b, s, &st.files)?;
    if s.name.is_empty() || s.address.is_empty() || s.port == 0 {
        return Err("name, address and port are required".into());
    }
    if s.direction == Direction::Outbound && s.enabled && (s.ca_path.is_none() || s.cert_path.is_none() || s.key_path.is_none()) {
        return Err("an enabled outbound server needs ca_certificate, client_certificate and client_key (or ca_path, cert_path and key_path)".into());
    }
    Ok(())
}

/// name, description, node_id, address, port.
fn apply_identity(b: &Body<'_>, s: &mut Server) -> Result<(), String> {
    if let Some(n) = b.string("name")? {
        let n = n.trim().to_string();
        if n.is_empty() || n.len() > 255 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_. ".contains(c)) {
            return Err("name: 1 to 255 letters, digits, spaces, '-', '_' or '.'".into());
        }
        s.name = n;
    }
    if let Some(v) = b.string("description")? {
        s.description = v;
    }
    if let Some(v) = b.string("node_id")? {
        s.node_id = Some(v);
    }
    if let Some(a) = b.string("address")? {
        let a = a.trim().trim_matches(['[', ']']).to_string();
        if a.is_empty() || a.contains(char::is_whitespace) || a.contains('/') {
            return Err("address: a host name or IP address".into());
        }
        s.address = a;
    }
    if let Some(v) = b.map.get("port") {
        s.port = v.as_u64().filter(|p| (1..=65535).contains(p)).ok_or_else(|| format!("port: an integer from 1 to 65535, got {v}"))? as u16;
    }
    Ok(())
}

/// connection_type, protocol_version, and what takgate does not let go (TCP, TLS, verify).
fn apply_kind(b: &Body<'_>, s: &mut Server) -> Result<(), String> {
    if let Some(d) = b.word::<Direction>("connection_type")? {
        s.direction = d;
    }
    if let Some(p) = b.word::<Protocol>("protocol_version")? {
        s.protocol = p;
    }
    if let Some(v) = b.string("transport_protocol")? {
        if v != "tcp" {
            return Err(format!("transport_protocol: takgate federates over TCP with mutual TLS (tcp), not {v:?}"));
        }
    }
    if b.boolean("use_tls")? == Some(false) {
        return Err("use_tls: federation is always mutual TLS".into());
    }
    if b.boolean("verify_ssl")? == Some(false) {
        return Err("verify_ssl: a federate is known by its verified certificate; verification cannot be turned off".into());
    }
    Ok(())
}

/// sync_missions, sync_cot, enabled, mission_filter.
fn apply_policy(b: &Body<'_>, s: &mut Server) -> Result<(), String> {
    for (k, v) in [("sync_missions", &mut s.sync_missions), ("sync_cot", &mut s.sync_cot), ("enabled", &mut s.enabled)] {
        if let Some(x) = b.boolean(k)? {
            *v = x;
        }
    }
    match b.map.get("mission_filter") {
        None => {}
        Some(Value::Null) => s.mission_filter = None,
        Some(Value::Array(a)) => {
            let pats: Vec<String> = a.iter().map(|x| x.as_str().map(str::to_owned).ok_or_else(|| format!("mission_filter: expected strings, got {x}"))).collect::<Result<_, _>>()?;
            crate::router::pattern::PatternList::new(&pats).map_err(|e| format!("mission_filter: {e}"))?;
            s.mission_filter = Some(pats);
        }
        Some(Value::String(t)) => {
            // OpenTAKServer stores the JSON text; accept it as sent back.
            let pats: Vec<String> = serde_json::from_str(t).map_err(|_| "mission_filter: an array of patterns".to_string())?;
            s.mission_filter = Some(pats);
        }
        Some(other) => return Err(format!("mission_filter: an array of patterns or null, got {other}")),
    }
    Ok(())
}

/// ca_path, cert_path, key_path (files that must exist), or the PEM text itself, written to
/// 0600 files under `files`.
fn apply_files(b: &Body<'_>, s: &mut Server, files: &std::path::Path) -> Result<(), String> {
    for (k, v) in [("ca_path", &mut s.ca_path), ("cert_path", &mut s.cert_path), ("key_path", &mut s.key_path)] {
        if let Some(p) = b.string(k)? {
            if !std::path::Path::new(&p).is_file() {
                return Err(format!("{k}: {p} is not a readable file"));
            }
            *v = Some(p);
        }
    }
    let dir = files.join(sanitize(&s.name));
    for (k, file, v) in [("ca_certificate", "ca.pem", &mut s.ca_path), ("client_certificate", "cert.pem", &mut s.cert_path), ("client_key", "key.pem", &mut s.key_path)] {
        let Some(pem) = b.string(k)? else { continue };
        if !pem.contains("-----BEGIN ") {
            return Err(format!("{k}: expected PEM text"));
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(file);
        crate::certs::write(&path, pem.as_bytes(), true)?;
        let check = if k == "client_key" { tls::load_key(&path).map(|_| ()) } else { tls::load_certs(&path).map(|_| ()) };
        // What was wrong with the text (not the path of the file it was written to).
        check.map_err(|e| match e {
            tls::TlsError::NoKey { source, .. } => format!("{k}: no usable private key: {source}"),
            tls::TlsError::Pem { source, .. } => format!("{k}: {source}"),
            tls::TlsError::NoCertificate(_) => format!("{k}: no certificate in the PEM text"),
            other => format!("{k}: {other}"),
        })?;
        *v = Some(path.display().to_string());
    }
    Ok(())
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Starts, restarts or stops the link of server `s` to match it.
async fn sync_link(c: &Control, old_name: Option<&str>, s: &Server) -> Result<(), String> {
    if let Some(n) = old_name {
        c.remove_link(n);
    }
    if s.direction != Direction::Outbound || !s.enabled {
        return Ok(());
    }
    let l = crate::runtime::server_link(s)?;
    crate::config::Config { links: vec![l.clone()], ..c.cfg.clone() }.validate().map_err(|e| e.to_string())?;
    c.add_link(&l).await.map_err(|e| e.message)
}

fn body_object(body: &Option<Json<Value>>) -> Result<&Map<String, Value>, Response> {
    match body {
        Some(Json(Value::Object(m))) => Ok(m),
        _ => Err(fail(StatusCode::BAD_REQUEST, "the request body must be a JSON object")),
    }
}

pub(super) async fn create_server(State(st): St, body: Option<Json<Value>>) -> Response {
    let m = match body_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    for k in ["name", "address", "port"] {
        if !m.contains_key(k) {
            return fail(StatusCode::BAD_REQUEST, format!("missing required field {k:?}"));
        }
    }
    let mut s = Server { direction: Direction::Outbound, protocol: Protocol::V2, verify_ssl: true, enabled: true, sync_missions: true, sync_cot: true, source: Source::Api, status: ServerStatus::Disconnected, ..Default::default() };
    if let Err(e) = apply_fields(&st, &mut s, m, true) {
        return fail(StatusCode::BAD_REQUEST, e);
    }
    s.link = s.name.clone();
    match st.control.store.server_by_name(&s.name) {
        Ok(Some(_)) => return fail(StatusCode::CONFLICT, format!("a federation server named {:?} exists", s.name)),
        Ok(None) if st.control.cfg.links.iter().any(|l| l.name == s.name) || st.control.link(&s.name).is_some() => return fail(StatusCode::CONFLICT, format!("{:?} is the name of a configured link", s.name)),
        Ok(None) => {}
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    let id = match st.control.store.upsert_server(&s) {
        Ok((id, _)) => id,
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    s.id = id;
    if let Err(e) = sync_link(&st.control, None, &s).await {
        let _ = st.control.store.delete_server(id);
        return fail(StatusCode::BAD_REQUEST, format!("cannot start the connection: {e}"));
    }
    let _ = st.control.missions.replay_for(id);
    let s = st.control.store.server(id).ok().flatten().unwrap_or(s);
    tracing::info!(server = %s.name, "federation server added through the admin API");
    reply(StatusCode::CREATED, json!({"success": true, "server": server_json(&st.control, &s)}))
}

pub(super) async fn update_server(State(st): St, Path(id): Path<i64>, body: Option<Json<Value>>) -> Response {
    let m = match body_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let old = match find(&st, id) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if old.source == Source::Config {
        return fail(StatusCode::CONFLICT, format!("{:?} comes from the configuration file: change it there", old.name));
    }
    let mut s = old.clone();
    if let Err(e) = apply_fields(&st, &mut s, m, false) {
        return fail(StatusCode::BAD_REQUEST, e);
    }
    if s.name != old.name && matches!(st.control.store.server_by_name(&s.name), Ok(Some(_))) {
        return fail(StatusCode::CONFLICT, format!("a federation server named {:?} exists", s.name));
    }
    s.link = if s.source == Source::Api { s.name.clone() } else { s.link.clone() };
    if let Err(e) = st.control.store.upsert_server(&Server { name: old.name.clone(), link: old.link.clone(), ..s.clone() }) {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    if s.name != old.name {
        if let Err(e) = st.control.store.rename_server(id, &s.name) {
            return fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    }
    if let Err(e) = sync_link(&st.control, Some(&old.name), &s).await {
        return fail(StatusCode::BAD_REQUEST, format!("saved, but the connection cannot start: {e}"));
    }
    let s = st.control.store.server(id).ok().flatten().unwrap_or(s);
    reply(StatusCode::OK, json!({"success": true, "server": server_json(&st.control, &s)}))
}

pub(super) async fn delete_server(State(st): St, Path(id): Path<i64>) -> Response {
    let s = match find(&st, id) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if s.source == Source::Config {
        return fail(StatusCode::CONFLICT, format!("{:?} comes from the configuration file: remove it there", s.name));
    }
    st.control.remove_link(&s.name);
    if let Err(e) = st.control.store.delete_server(id) {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let _ = std::fs::remove_dir_all(st.files.join(sanitize(&s.name)));
    tracing::info!(server = %s.name, "federation server deleted through the admin API");
    reply(StatusCode::OK, json!({"success": true, "message": format!("federation server {} deleted", s.name)}))
}

pub(super) async fn server_status(State(st): St, Path(id): Path<i64>) -> Response {
    let s = match find(&st, id) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let link = st.control.link(&s.name).or_else(|| st.control.link(&s.link));
    let q = st.control.store.queue_stats().ok().and_then(|v| v.into_iter().find(|q| q.server_id == id));
    let (total, sent, pending, failed) = q.as_ref().map(|q| (q.total, q.sent, q.pending, q.failed)).unwrap_or_default();
    reply(
        StatusCode::OK,
        json!({"success": true, "status": {
            "server": server_json(&st.control, &s),
            "connection": link.as_ref().and_then(|l| l.connection.as_ref()).map(|c| c.get()),
            "counters": link.as_ref().map(|l| l.counters.snapshot()),
            "queue": {"total": total, "sent": sent, "pending": pending, "failed": failed, "oldest_pending": q.as_ref().and_then(|q| q.oldest_pending.clone()), "last_error": q.as_ref().and_then(|q| q.last_error.clone())},
            "stats": {"total_changes": total, "sent_changes": sent, "pending_changes": pending},
        }}),
    )
}

pub(super) async fn test_server(State(st): St, Path(id): Path<i64>) -> Response {
    let s = match find(&st, id) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (Some(ca), Some(cert), Some(key)) = (&s.ca_path, &s.cert_path, &s.key_path) else {
        return fail(StatusCode::BAD_REQUEST, "the server has no certificates to test with (ca, client certificate and key)");
    };
    if s.direction != Direction::Outbound {
        return fail(StatusCode::BAD_REQUEST, "an inbound federate is tested from its side: it dials us");
    }
    let address = if s.address.contains(':') { format!("[{}]:{}", s.address, s.port) } else { format!("{}:{}", s.address, s.port) };
    let t = crate::federation::probe::ProbeTarget { address, ca: ca.into(), cert: cert.into(), key: key.into(), server_name: None, listen: std::time::Duration::from_secs(2), protocol: if s.protocol == Protocol::V2 { 2 } else { 1 } };
    let started = Instant::now();
    let stages = crate::federation::probe::probe(&t).await;
    let ms = started.elapsed().as_millis() as u64;
    match stages.iter().find(|x| !x.ok) {
        None => reply(StatusCode::OK, json!({"success": true, "message": format!("{} answered every stage", s.name), "connection_time_ms": ms, "transport_protocol": "tcp", "server": server_json(&st.control, &s), "stages": stages})),
        Some(bad) => reply(StatusCode::SERVICE_UNAVAILABLE, json!({"success": false, "error": format!("{}: {}", bad.name, bad.detail), "connection_time_ms": ms, "stages": stages})),
    }
}

