//! The HTTP admin API (axum): federation servers with OpenTAKServer's request and response
//! shapes (the `success` envelope, status codes), links, missions, Prometheus metrics, an
//! OpenAPI document, and the dashboard page. Every endpoint but `/api/health` (and the
//! static dashboard page, which holds no data) needs the bearer token.
//!
//! Changes take effect at once: a new enabled outgoing server connects, a disabled or
//! deleted one disconnects. Private keys are written to files beside the store (mode 0600)
//! and never returned.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::runtime::Control;
use crate::store::Server;

/// Every route the API serves (method, path): the OpenAPI document lists exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/health"),
    ("get", "/api/federation/servers"),
    ("post", "/api/federation/servers"),
    ("get", "/api/federation/servers/{id}"),
    ("put", "/api/federation/servers/{id}"),
    ("delete", "/api/federation/servers/{id}"),
    ("get", "/api/federation/servers/{id}/status"),
    ("post", "/api/federation/servers/{id}/test"),
    ("get", "/api/federation/health"),
    ("get", "/api/links"),
    ("get", "/api/missions"),
    ("get", "/api/missions/{name}/changes"),
    ("get", "/api/openapi.json"),
    ("get", "/metrics"),
];

pub struct AdminState {
    pub control: Arc<Control>,
    pub token: Option<String>,
    /// Where PEM material posted through the API is written.
    pub files: PathBuf,
}

type St = State<Arc<AdminState>>;

fn reply(code: StatusCode, body: Value) -> Response {
    (code, Json(body)).into_response()
}

fn fail(code: StatusCode, error: impl Into<String>) -> Response {
    reply(code, json!({"success": false, "error": error.into()}))
}

/// Builds the router.
pub fn router(state: Arc<AdminState>) -> Router {
    let api = Router::new()
        .route("/api/federation/servers", get(list_servers).post(create_server))
        .route("/api/federation/servers/{id}", get(get_server).put(update_server).delete(delete_server))
        .route("/api/federation/servers/{id}/status", get(server_status))
        .route("/api/federation/servers/{id}/test", post(test_server))
        .route("/api/federation/health", get(federation_health))
        .route("/api/links", get(links))
        .route("/api/missions", get(missions))
        .route("/api/missions/{name}/changes", get(mission_changes))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/api/health", get(health))
        .route("/", get(dashboard))
        .merge(api)
        .fallback(|| async { fail(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): St, headers: HeaderMap, req: Request, next: Next) -> Response {
    let Some(token) = &st.token else {
        return fail(StatusCode::UNAUTHORIZED, "no admin token is configured: set [admin] token or TAKGATE_ADMIN_TOKEN");
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("authentication-token").and_then(|v| v.to_str().ok()));
    match given {
        Some(g) if equal(g.trim().as_bytes(), token.as_bytes()) => next.run(req).await,
        Some(_) => fail(StatusCode::UNAUTHORIZED, "wrong token"),
        None => fail(StatusCode::UNAUTHORIZED, "missing token: send Authorization: Bearer <token>"),
    }
}

async fn health(State(st): St) -> Response {
    reply(StatusCode::OK, json!({"success": true, "status": "ok", "version": env!("CARGO_PKG_VERSION"), "node_id": st.control.cfg.node.id}))
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

// ---- federation servers

/// The live state of a server: its running link's connection, else the stored status.
fn live_status(c: &Control, s: &Server) -> String {
    if !s.enabled {
        return "disabled".into();
    }
    match c.link(&s.name).and_then(|l| l.connection) {
        Some(conn) => match conn.get().state {
            "connected" => "connected".into(),
            "error" => "error".into(),
            _ => "disconnected".into(),
        },
        None => s.status.clone(),
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

async fn list_servers(State(st): St) -> Response {
    match st.control.store.servers() {
        Ok(v) => reply(StatusCode::OK, json!({"success": true, "servers": v.iter().map(|s| server_json(&st.control, s)).collect::<Vec<_>>()})),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.0),
    }
}

fn find(st: &AdminState, id: i64) -> Result<Server, Response> {
    match st.control.store.server(id) {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(fail(StatusCode::NOT_FOUND, format!("no federation server {id}"))),
        Err(e) => Err(fail(StatusCode::INTERNAL_SERVER_ERROR, e.0)),
    }
}

async fn get_server(State(st): St, Path(id): Path<i64>) -> Response {
    match find(&st, id) {
        Ok(s) => reply(StatusCode::OK, json!({"success": true, "server": server_json(&st.control, &s)})),
        Err(r) => r,
    }
}

/// Applies the fields of `body` to `s`, validating each; PEM material is written to files.
fn apply_fields(st: &AdminState, s: &mut Server, body: &Map<String, Value>, creating: bool) -> Result<(), String> {
    let known = [
        "name", "description", "address", "port", "connection_type", "protocol_version", "transport_protocol", "use_tls", "verify_ssl", "ca_certificate", "client_certificate", "client_key", "ca_path", "cert_path", "key_path", "sync_missions", "sync_cot", "mission_filter", "enabled", "node_id",
    ];
    if let Some(k) = body.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("unknown field {k:?}"));
    }
    let string = |k: &str| -> Result<Option<String>, String> {
        match body.get(k) {
            None => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.clone())),
            Some(Value::Null) if !creating => Ok(None),
            Some(other) => Err(format!("{k}: expected a string, got {other}")),
        }
    };
    let boolean = |k: &str| -> Result<Option<bool>, String> {
        match body.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(format!("{k}: expected true or false, got {other}")),
        }
    };
    if let Some(n) = string("name")? {
        let n = n.trim().to_string();
        if n.is_empty() || n.len() > 255 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_. ".contains(c)) {
            return Err("name: 1 to 255 letters, digits, spaces, '-', '_' or '.'".into());
        }
        s.name = n;
    }
    if let Some(v) = string("description")? {
        s.description = v;
    }
    if let Some(v) = string("node_id")? {
        s.node_id = Some(v);
    }
    if let Some(a) = string("address")? {
        let a = a.trim().trim_matches(['[', ']']).to_string();
        if a.is_empty() || a.contains(char::is_whitespace) || a.contains('/') {
            return Err("address: a host name or IP address".into());
        }
        s.address = a;
    }
    match body.get("port") {
        None => {}
        Some(v) => match v.as_u64().filter(|p| (1..=65535).contains(p)) {
            Some(p) => s.port = p as u16,
            None => return Err(format!("port: an integer from 1 to 65535, got {v}")),
        },
    }
    if let Some(v) = string("connection_type")? {
        if v != "outbound" && v != "inbound" {
            return Err(format!("connection_type: outbound or inbound, got {v:?}"));
        }
        s.direction = v;
    }
    if let Some(v) = string("protocol_version")? {
        if v != "v1" && v != "v2" {
            return Err(format!("protocol_version: v1 or v2, got {v:?}"));
        }
        s.protocol = v;
    }
    if let Some(v) = string("transport_protocol")? {
        if v != "tcp" {
            return Err(format!("transport_protocol: takgate federates over TCP with mutual TLS (tcp), not {v:?}"));
        }
    }
    if boolean("use_tls")? == Some(false) {
        return Err("use_tls: federation is always mutual TLS".into());
    }
    if boolean("verify_ssl")? == Some(false) {
        return Err("verify_ssl: a federate is known by its verified certificate; verification cannot be turned off".into());
    }
    for (k, v) in [("sync_missions", &mut s.sync_missions), ("sync_cot", &mut s.sync_cot), ("enabled", &mut s.enabled)] {
        if let Some(b) = boolean(k)? {
            *v = b;
        }
    }
    match body.get("mission_filter") {
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
    for (k, v) in [("ca_path", &mut s.ca_path), ("cert_path", &mut s.cert_path), ("key_path", &mut s.key_path)] {
        if let Some(p) = string(k)? {
            if !std::path::Path::new(&p).is_file() {
                return Err(format!("{k}: {p} is not a readable file"));
            }
            *v = Some(p);
        }
    }
    let dir = st.files.join(sanitize(&s.name));
    for (k, file, v) in [("ca_certificate", "ca.pem", &mut s.ca_path), ("client_certificate", "cert.pem", &mut s.cert_path), ("client_key", "key.pem", &mut s.key_path)] {
        if let Some(pem) = string(k)? {
            if !pem.contains("-----BEGIN ") {
                return Err(format!("{k}: expected PEM text"));
            }
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = dir.join(file);
            crate::certs::write(&path, pem.as_bytes(), true)?;
            let check = if k == "client_key" { crate::transport::tls::load_key(&path).map(|_| ()) } else { crate::transport::tls::load_certs(&path).map(|_| ()) };
            check.map_err(|e| format!("{k}: {}", e.0.rsplit(": ").next().unwrap_or(&e.0)))?;
            *v = Some(path.display().to_string());
        }
    }
    if s.name.is_empty() || s.address.is_empty() || s.port == 0 {
        return Err("name, address and port are required".into());
    }
    if s.direction == "outbound" && s.enabled && (s.ca_path.is_none() || s.cert_path.is_none() || s.key_path.is_none()) {
        return Err("an enabled outbound server needs ca_certificate, client_certificate and client_key (or ca_path, cert_path and key_path)".into());
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
    if s.direction != "outbound" || !s.enabled {
        return Ok(());
    }
    let l = crate::runtime::server_link(s)?;
    crate::config::Config { links: vec![l.clone()], ..c.cfg.clone() }.validate().map_err(|e| e.0)?;
    c.add_link(&l).await
}

fn body_object(body: &Option<Json<Value>>) -> Result<&Map<String, Value>, Response> {
    match body {
        Some(Json(Value::Object(m))) => Ok(m),
        _ => Err(fail(StatusCode::BAD_REQUEST, "the request body must be a JSON object")),
    }
}

async fn create_server(State(st): St, body: Option<Json<Value>>) -> Response {
    let m = match body_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    for k in ["name", "address", "port"] {
        if !m.contains_key(k) {
            return fail(StatusCode::BAD_REQUEST, format!("missing required field {k:?}"));
        }
    }
    let mut s = Server { direction: "outbound".into(), protocol: "v2".into(), verify_ssl: true, enabled: true, sync_missions: true, sync_cot: true, source: "api".into(), status: "disconnected".into(), ..Default::default() };
    if let Err(e) = apply_fields(&st, &mut s, m, true) {
        return fail(StatusCode::BAD_REQUEST, e);
    }
    s.link = s.name.clone();
    match st.control.store.server_by_name(&s.name) {
        Ok(Some(_)) => return fail(StatusCode::CONFLICT, format!("a federation server named {:?} exists", s.name)),
        Ok(None) if st.control.cfg.links.iter().any(|l| l.name == s.name) || st.control.link(&s.name).is_some() => return fail(StatusCode::CONFLICT, format!("{:?} is the name of a configured link", s.name)),
        Ok(None) => {}
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e.0),
    }
    let id = match st.control.store.upsert_server(&s) {
        Ok((id, _)) => id,
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e.0),
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

async fn update_server(State(st): St, Path(id): Path<i64>, body: Option<Json<Value>>) -> Response {
    let m = match body_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let old = match find(&st, id) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if old.source == "config" {
        return fail(StatusCode::CONFLICT, format!("{:?} comes from the configuration file: change it there", old.name));
    }
    let mut s = old.clone();
    if let Err(e) = apply_fields(&st, &mut s, m, false) {
        return fail(StatusCode::BAD_REQUEST, e);
    }
    if s.name != old.name && matches!(st.control.store.server_by_name(&s.name), Ok(Some(_))) {
        return fail(StatusCode::CONFLICT, format!("a federation server named {:?} exists", s.name));
    }
    s.link = if s.source == "api" { s.name.clone() } else { s.link.clone() };
    if let Err(e) = st.control.store.upsert_server(&Server { name: old.name.clone(), link: old.link.clone(), ..s.clone() }) {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, e.0);
    }
    if s.name != old.name {
        if let Err(e) = st.control.store.rename_server(id, &s.name) {
            return fail(StatusCode::INTERNAL_SERVER_ERROR, e.0);
        }
    }
    if let Err(e) = sync_link(&st.control, Some(&old.name), &s).await {
        return fail(StatusCode::BAD_REQUEST, format!("saved, but the connection cannot start: {e}"));
    }
    let s = st.control.store.server(id).ok().flatten().unwrap_or(s);
    reply(StatusCode::OK, json!({"success": true, "server": server_json(&st.control, &s)}))
}

async fn delete_server(State(st): St, Path(id): Path<i64>) -> Response {
    let s = match find(&st, id) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if s.source == "config" {
        return fail(StatusCode::CONFLICT, format!("{:?} comes from the configuration file: remove it there", s.name));
    }
    st.control.remove_link(&s.name);
    if let Err(e) = st.control.store.delete_server(id) {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, e.0);
    }
    let _ = std::fs::remove_dir_all(st.files.join(sanitize(&s.name)));
    tracing::info!(server = %s.name, "federation server deleted through the admin API");
    reply(StatusCode::OK, json!({"success": true, "message": format!("federation server {} deleted", s.name)}))
}

async fn server_status(State(st): St, Path(id): Path<i64>) -> Response {
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

async fn test_server(State(st): St, Path(id): Path<i64>) -> Response {
    let s = match find(&st, id) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (Some(ca), Some(cert), Some(key)) = (&s.ca_path, &s.cert_path, &s.key_path) else {
        return fail(StatusCode::BAD_REQUEST, "the server has no certificates to test with (ca, client certificate and key)");
    };
    if s.direction != "outbound" {
        return fail(StatusCode::BAD_REQUEST, "an inbound federate is tested from its side: it dials us");
    }
    let address = if s.address.contains(':') { format!("[{}]:{}", s.address, s.port) } else { format!("{}:{}", s.address, s.port) };
    let t = crate::federation::probe::ProbeTarget { address, ca: ca.into(), cert: cert.into(), key: key.into(), server_name: None, listen: std::time::Duration::from_secs(2), protocol: if s.protocol == "v2" { 2 } else { 1 } };
    let started = Instant::now();
    let stages = crate::federation::probe::probe(&t).await;
    let ms = started.elapsed().as_millis() as u64;
    match stages.iter().find(|x| !x.ok) {
        None => reply(StatusCode::OK, json!({"success": true, "message": format!("{} answered every stage", s.name), "connection_time_ms": ms, "transport_protocol": "tcp", "server": server_json(&st.control, &s), "stages": stages})),
        Some(bad) => reply(StatusCode::SERVICE_UNAVAILABLE, json!({"success": false, "error": format!("{}: {}", bad.name, bad.detail), "connection_time_ms": ms, "stages": stages})),
    }
}

async fn federation_health(State(st): St) -> Response {
    let servers = st.control.store.servers().unwrap_or_default();
    let connected = servers.iter().filter(|s| live_status(&st.control, s) == "connected").count();
    let fed_links = st.control.links().iter().filter(|l| l.transport.is_federation()).count();
    reply(StatusCode::OK, json!({"success": true, "health": {"federation_enabled": fed_links > 0 || servers.iter().any(|s| s.enabled), "total_servers": servers.len(), "enabled_servers": servers.iter().filter(|s| s.enabled).count(), "connected_servers": connected, "node_id": st.control.cfg.node.id}}))
}

async fn links(State(st): St) -> Response {
    let peers = st.control.router.stats().await;
    let v: Vec<Value> = st
        .control
        .links()
        .iter()
        .map(|l| {
            let mine: Vec<_> = peers.iter().filter(|p| p.link == l.name).collect();
            json!({
                "name": l.name,
                "transport": crate::metrics::transport_name(l.transport),
                "mode": format!("{:?}", l.mode).to_lowercase(),
                "address": l.address,
                "local_addr": l.local_addr.map(|a| a.to_string()),
                "connection": l.connection.as_ref().map(|c| c.get()),
                "counters": l.counters.snapshot(),
                "queue_depth": mine.iter().map(|p| p.queue_depth).sum::<usize>(),
                "peers": mine.iter().map(|p| json!({"remote": p.remote, "identity": p.identity, "codec": p.codec, "queue_depth": p.queue_depth, "queue_capacity": p.queue_capacity, "counters": p.counters})).collect::<Vec<_>>(),
            })
        })
        .collect();
    reply(StatusCode::OK, json!({"success": true, "links": v}))
}

async fn missions(State(st): St) -> Response {
    match st.control.store.missions() {
        Ok(m) => reply(StatusCode::OK, json!({"success": true, "missions": m})),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.0),
    }
}

async fn mission_changes(State(st): St, Path(name): Path<String>) -> Response {
    match st.control.store.missions() {
        Ok(m) if !m.iter().any(|x| x.name == name) => return fail(StatusCode::NOT_FOUND, format!("no mission {name:?}")),
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e.0),
        _ => {}
    }
    match st.control.store.changes(&name) {
        Ok(c) => reply(StatusCode::OK, json!({"success": true, "changes": c})),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.0),
    }
}

async fn metrics(State(st): St) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render(&st.control).await).into_response()
}

async fn openapi() -> Json<Value> {
    Json(openapi_doc())
}

/// The OpenAPI 3.0 document of [`ROUTES`].
pub fn openapi_doc() -> Value {
    let envelope = json!({"type": "object", "required": ["success"], "properties": {"success": {"type": "boolean"}, "error": {"type": "string"}}});
    let server_in = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "description": {"type": "string"}, "address": {"type": "string"}, "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "connection_type": {"type": "string", "enum": ["outbound", "inbound"]}, "protocol_version": {"type": "string", "enum": ["v1", "v2"]},
        "transport_protocol": {"type": "string", "enum": ["tcp"]}, "use_tls": {"type": "boolean", "enum": [true]}, "verify_ssl": {"type": "boolean", "enum": [true]},
        "ca_certificate": {"type": "string", "description": "PEM"}, "client_certificate": {"type": "string", "description": "PEM"}, "client_key": {"type": "string", "description": "PEM; stored in a 0600 file, never returned"},
        "ca_path": {"type": "string"}, "cert_path": {"type": "string"}, "key_path": {"type": "string"},
        "sync_missions": {"type": "boolean"}, "sync_cot": {"type": "boolean"}, "mission_filter": {"type": "array", "nullable": true, "items": {"type": "string"}}, "enabled": {"type": "boolean"}}});
    let mut paths = Map::new();
    for (method, path) in ROUTES {
        let mut op = json!({
            "summary": summary(method, path),
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": envelope}}}, "401": {"description": "missing or wrong token"}},
        });
        if *path == "/api/health" {
            op["security"] = json!([]);
            op["responses"].as_object_mut().map(|r| r.remove("401"));
        }
        if *path == "/metrics" {
            op["responses"]["200"] = json!({"description": "Prometheus text", "content": {"text/plain": {}}});
        }
        if path.contains("{id}") || path.contains("{name}") {
            let (n, t) = if path.contains("{id}") { ("id", "integer") } else { ("name", "string") };
            op["parameters"] = json!([{"name": n, "in": "path", "required": true, "schema": {"type": t}}]);
            op["responses"]["404"] = json!({"description": "not found"});
        }
        if *method == "post" && *path == "/api/federation/servers" {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": server_in.clone()}}});
            op["responses"]["201"] = json!({"description": "created"});
            op["responses"]["400"] = json!({"description": "invalid field"});
            op["responses"]["409"] = json!({"description": "duplicate name"});
        }
        if *method == "put" {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": server_in.clone()}}});
            op["responses"]["400"] = json!({"description": "invalid field"});
            op["responses"]["409"] = json!({"description": "configured in the file, or duplicate name"});
        }
        if path.ends_with("/test") {
            op["responses"]["503"] = json!({"description": "a stage failed (the stage and the reason)"});
        }
        paths.entry(path.to_string()).or_insert_with(|| json!({})).as_object_mut().map(|o| o.insert(method.to_string(), op));
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "takgate admin API", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

fn summary(method: &str, path: &str) -> &'static str {
    match (method, path) {
        ("get", "/api/health") => "Liveness (no token needed)",
        ("get", "/api/federation/servers") => "List federation servers",
        ("post", "/api/federation/servers") => "Add a federation server (connects at once when enabled and outbound)",
        ("get", "/api/federation/servers/{id}") => "One federation server",
        ("put", "/api/federation/servers/{id}") => "Change a federation server (reconnects; disabled disconnects)",
        ("delete", "/api/federation/servers/{id}") => "Delete a federation server (disconnects)",
        ("get", "/api/federation/servers/{id}/status") => "Connection state, counters and outbound queue",
        ("post", "/api/federation/servers/{id}/test") => "Staged connection test",
        ("get", "/api/federation/health") => "Federation summary",
        ("get", "/api/links") => "Every link: transport, remote, counters, queue depth, drops",
        ("get", "/api/missions") => "Missions",
        ("get", "/api/missions/{name}/changes") => "A mission's changes, oldest first",
        ("get", "/api/openapi.json") => "This document",
        ("get", "/metrics") => "Prometheus metrics",
        _ => "",
    }
}

/// Serves the admin API over TLS (mutual when the acceptor requires client certificates).
pub async fn serve_tls(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, state: Arc<AdminState>, cancel: tokio_util::sync::CancellationToken) {
    let app = router(state);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("admin API: accept failed: {e}; pausing 100 ms");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, app, cancel) = (acceptor.clone(), app.clone(), cancel.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::warn!(%remote, "admin API: TLS handshake refused: {e}");
                    return;
                }
                Err(_) => return,
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            tokio::select! {
                _ = conn => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// Serves the admin API on `listener` until `cancel`.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AdminState>, cancel: tokio_util::sync::CancellationToken) {
    let app = router(state);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await }).await {
        tracing::error!("admin API stopped: {e}");
    }
}
