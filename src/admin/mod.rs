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

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::runtime::{Control, Gateway};

pub mod metrics;
mod packages;
mod servers;

use servers::{create_server, delete_server, get_server, list_servers, server_status, test_server, update_server};

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
    ("get", "/api/hub"),
    ("get", "/api/cluster"),
    ("post", "/api/hub/reload"),
    ("get", "/api/missions"),
    ("get", "/api/missions/{name}/changes"),
    ("post", "/api/certs/package"),
    ("get", "/api/openapi.json"),
    ("get", "/metrics"),
];

pub struct AdminState {
    pub control: Arc<Control>,
    pub token: Option<String>,
    /// Where PEM material posted through the API is written.
    pub files: PathBuf,
    /// The CA directory connection packages are made with (`[admin] certs_dir`).
    pub certs_dir: Option<PathBuf>,
}

pub(super) type St = State<Arc<AdminState>>;

pub(super) fn reply(code: StatusCode, body: Value) -> Response {
    (code, Json(body)).into_response()
}

pub(super) fn fail(code: StatusCode, error: impl Into<String>) -> Response {
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
        .route("/api/hub", get(hub))
        .route("/api/cluster", get(cluster))
        .route("/api/hub/reload", post(hub_reload))
        .route("/api/missions", get(missions))
        .route("/api/missions/{name}/changes", get(mission_changes))
        .route("/api/certs/package", post(packages::package))
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

async fn federation_health(State(st): St) -> Response {
    let servers = st.control.store.servers().unwrap_or_default();
    let connected = servers.iter().filter(|s| servers::live_status(&st.control, s) == "connected").count();
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
                "transport": l.transport.as_str(),
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

async fn hub(State(st): St) -> Response {
    let Some(h) = &st.control.hub else { return fail(StatusCode::CONFLICT, "hub mode is off (no [hub] section)") };
    reply(StatusCode::OK, json!({"success": true, "id": h.id, "address": h.address.to_string(), "max_hops": h.max_hops, "policy": *h.policy(), "policy_error": h.policy_error(), "federates": h.view(), "outgoing": h.outgoing_status(), "counters": h.counters.snapshot()}))
}

async fn cluster(State(st): St) -> Response {
    let links: Vec<_> = st.control.clusters.all().iter().map(|d| json!({"link": d.link, "exchange": d.exchange, "node": d.node, "members": d.view()})).collect();
    reply(StatusCode::OK, json!({"success": true, "clusters": links}))
}

async fn hub_reload(State(st): St) -> Response {
    let Some(h) = &st.control.hub else { return fail(StatusCode::CONFLICT, "hub mode is off (no [hub] section)") };
    match h.reload() {
        Ok(()) => reply(StatusCode::OK, json!({"success": true, "policy": *h.policy()})),
        Err(e) => fail(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

async fn missions(State(st): St) -> Response {
    match st.control.store.missions() {
        Ok(m) => reply(StatusCode::OK, json!({"success": true, "missions": m})),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn mission_changes(State(st): St, Path(name): Path<String>) -> Response {
    match st.control.store.missions() {
        Ok(m) if !m.iter().any(|x| x.name == name) => return fail(StatusCode::NOT_FOUND, format!("no mission {name:?}")),
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        _ => {}
    }
    match st.control.store.changes(&name) {
        Ok(c) => reply(StatusCode::OK, json!({"success": true, "changes": c})),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn metrics(State(st): St) -> Response {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics::render(&st.control).await).into_response()
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
        ("get", "/api/cluster") => "cluster links (RabbitMQ): the nodes each one knows, their state, links, clients and rates",
        ("get", "/api/hub") => "Federation Hub: the policy graph, each federate's state, groups, reach and counters",
        ("post", "/api/hub/reload") => "Federation Hub: read the policy file again (refused with the reason when it does not validate)",
        ("get", "/api/missions") => "Missions",
        ("get", "/api/missions/{name}/changes") => "A mission's changes, oldest first",
        ("post", "/api/certs/package") => "An ATAK/WinTAK/iTAK connection data package (zip) for {cn, server, port, quic_port?, password?, days?}, made with [admin] certs_dir's CA",
        ("get", "/api/openapi.json") => "This document",
        ("get", "/metrics") => "Prometheus metrics",
        _ => "",
    }
}

/// Serves the admin API over TLS (mutual when the acceptor requires client certificates).
pub async fn serve_tls(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, state: Arc<AdminState>, cancel: tokio_util::sync::CancellationToken, tracker: tokio_util::task::TaskTracker) {
    crate::link::https::serve(listener, acceptor, router(state), "admin API", cancel, tracker).await
}

/// Serves the admin API on `listener` until `cancel`.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AdminState>, cancel: tokio_util::sync::CancellationToken) {
    let app = router(state);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await }).await {
        tracing::error!("admin API stopped: {e}");
    }
}

/// Starts the admin API of a running gateway on `a.address` (HTTPS with `cert` and `key`,
/// client certificates required too with `ca`); the bound address is kept in the gateway.
pub async fn spawn(gw: &Gateway, a: &crate::config::AdminConfig) -> Result<std::net::SocketAddr, crate::link::StartError> {
    let err = |e: String| crate::link::StartError::new("admin", e);
    let control = gw.control();
    let addr: std::net::SocketAddr = a.address.parse().map_err(|e| err(format!("{}: {e}", a.address)))?;
    let listener = crate::link::listen::bind(addr, crate::link::listen::DEFAULT_BACKLOG, "admin").map_err(|e| err(format!("cannot listen on {}: {e}", a.address)))?;
    let bound = listener.local_addr().map_err(|e| err(e.to_string()))?;
    *crate::sync::lock(&control.admin_addr) = Some(bound);
    let token = std::env::var("TAKGATE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()).or_else(|| a.token.clone());
    if token.is_none() {
        tracing::warn!("admin API: no token configured ([admin] token or TAKGATE_ADMIN_TOKEN): only /api/health answers");
    }
    let files = match &control.cfg.store.path {
        Some(p) => std::path::Path::new(p).parent().map(|d| d.join("federation")).unwrap_or_else(|| "federation".into()),
        None => std::env::temp_dir().join(format!("takgate-{}-{}", control.cfg.node.id, std::process::id())).join("federation"),
    };
    let state = Arc::new(AdminState { control: control.clone(), token, files, certs_dir: a.certs_dir.clone() });
    let cancel = control.cancel.clone();
    match (&a.cert, &a.key) {
        (Some(cert), Some(key)) => {
            let tls = crate::link::tls::server_config(cert, key, a.ca.as_deref(), a.ca.is_some()).map_err(|e| err(e.to_string()))?;
            tracing::info!(address = %bound, mutual_tls = a.ca.is_some(), "admin API and dashboard listening (HTTPS)");
            control.tracker.spawn(serve_tls(listener, tokio_rustls::TlsAcceptor::from(Arc::new(tls)), state, cancel, control.tracker.clone()));
        }
        _ => {
            tracing::info!(address = %bound, "admin API and dashboard listening");
            control.tracker.spawn(serve(listener, state, cancel));
        }
    }
    Ok(bound)
}
