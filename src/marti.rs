//! The part of TAK Server's Marti API that ATAK, WinTAK and iTAK use for files, on HTTPS
//! with client certificates (TAK's 8443): a data package is uploaded
//! (`missionquery`, `missionupload`) before the `b-f-t-r` that shares it, mission content is
//! uploaded (`sync/upload`) and added (`PUT api/missions/{name}/contents`), and clients
//! download both by hash (`sync/content`). Paths, parameters and responses follow TAK
//! Server's and OpenTAKServer's (`data_package_marti_api.py`, `datasync_marti_api.py`).
//! Files land in the mission store's file store; content added here is a local mission
//! change, queued for federates as `create resource` + `update mission`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::MartiConfig;
use crate::cot::CotTime;
use crate::link::StartError;
use crate::missions::files::normalize_hash;
use crate::missions::{FileError, LocalContentError, Missions};
use crate::store::FileMeta;

struct MartiState {
    missions: Arc<Missions>,
    /// `https://host:port` as clients reach us.
    base: String,
    node_id: String,
}

/// The client certificate's CN: the submitter of what it uploads.
use crate::link::https::ClientCn as Client;

type St = State<Arc<MartiState>>;

/// Starts the Marti listener; its bound address. The missions service learns the public
/// URL (for the data packages federates announce).
pub fn spawn(cfg: &MartiConfig, missions: Arc<Missions>, node_id: &str, cancel: tokio_util::sync::CancellationToken, tracker: &tokio_util::task::TaskTracker) -> Result<SocketAddr, StartError> {
    let err = |e: String| StartError::new("marti", e);
    let addr: SocketAddr = cfg.address.parse().map_err(|e| err(format!("address {}: {e}", cfg.address)))?;
    let tls = crate::link::tls::server_config_with_crls(&cfg.cert, &cfg.key, Some(&cfg.ca), true, &cfg.crl).map_err(|e| err(e.to_string()))?;
    let listener = crate::link::listen::bind(addr, crate::link::listen::DEFAULT_BACKLOG, "marti").map_err(|e| err(format!("cannot listen on {}: {e}", cfg.address)))?;
    let bound = listener.local_addr().map_err(|e| err(e.to_string()))?;
    let base = cfg.public_url.clone().map(|u| u.trim_end_matches('/').trim_end_matches("/Marti").to_owned()).unwrap_or_else(|| format!("https://{}:{}", host_name(), bound.port()));
    *crate::sync::lock(&missions.marti_url) = Some(format!("{base}/Marti"));
    let limit = missions.files.max_bytes as usize + (1 << 20);
    let state = Arc::new(MartiState { missions, base: base.clone(), node_id: node_id.to_owned() });
    tracing::info!(address = %bound, url = %base, "Marti file API listening (HTTPS, client certificates required)");
    tracker.spawn(crate::link::https::serve(listener, tokio_rustls::TlsAcceptor::from(Arc::new(tls)), router(state, limit), "marti", cancel, tracker.clone()));
    Ok(bound)
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let h = String::from_utf8_lossy(&buf[..end]).into_owned();
    if rc == 0 && !h.is_empty() { h } else { "localhost".into() }
}

fn router(state: Arc<MartiState>, limit: usize) -> Router {
    Router::new()
        .route("/Marti/sync/content", get(content).head(content))
        .route("/Marti/sync/missionquery", get(mission_query))
        .route("/Marti/sync/missionupload", post(mission_upload))
        .route("/Marti/sync/upload", post(upload))
        .route("/Marti/sync/search", get(search))
        .route("/Marti/api/sync/metadata/{hash}/tool", get(metadata_get).put(metadata_tool))
        .route("/Marti/api/missions", get(missions_list))
        .route("/Marti/api/missions/{name}", get(mission_get).put(mission_create))
        .route("/Marti/api/missions/{name}/contents", put(contents_add).delete(contents_remove))
        .route("/Marti/api/missions/{name}/log", get(mission_log))
        .route("/Marti/api/missions/logs/entries", post(log_add).put(log_add))
        .route("/Marti/api/missions/logs/entries/{id}", axum::routing::delete(log_delete))
        .route("/Marti/api/version", get(version))
        .route("/Marti/api/version/config", get(version_config))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn status(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({"success": false, "error": msg.into()}))).into_response()
}

fn file_error(e: FileError) -> Response {
    match e {
        FileError::TooLarge { .. } => status(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        FileError::Mismatch { .. } | FileError::BadHash(_) => status(StatusCode::BAD_REQUEST, e.to_string()),
        e => {
            tracing::error!("marti: {e}");
            status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HashQ {
    hash: String,
}

/// `GET|HEAD /Marti/sync/content?hash=`: the file, with its name and type.
async fn content(State(st): St, method: Method, Query(q): Query<HashQ>) -> Response {
    let found = match st.missions.files.open(&q.hash) {
        Ok(f) => f,
        Err(e) => return file_error(e),
    };
    let Some((meta, path)) = found else { return status(StatusCode::NOT_FOUND, format!("no file with hash {}", q.hash)) };
    let mut h = HeaderMap::new();
    let mime = if meta.mime.is_empty() { "application/octet-stream" } else { meta.mime.as_str() };
    h.insert(header::CONTENT_TYPE, mime.parse().unwrap_or(header::HeaderValue::from_static("application/octet-stream")));
    let name: String = meta.name.chars().filter(|c| !c.is_control() && *c != '"' && *c != '\\').collect();
    if let Ok(v) = format!("attachment; filename=\"{name}\"").parse() {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CONTENT_LENGTH, meta.size.into());
    if method == Method::HEAD {
        return (StatusCode::OK, h).into_response();
    }
    match tokio::fs::File::open(&path).await {
        Ok(f) => (StatusCode::OK, h, Body::from_stream(tokio_util::io::ReaderStream::new(f))).into_response(),
        Err(e) => status(StatusCode::NOT_FOUND, format!("file {}: {e}", meta.hash)),
    }
}

fn metadata_url(st: &MartiState, hash: &str) -> String {
    format!("{}/Marti/api/sync/metadata/{hash}/tool", st.base)
}

/// `GET /Marti/sync/missionquery?hash=`: ATAK asks before uploading a data package; the
/// URL when the file is held, else 404.
async fn mission_query(State(st): St, Query(q): Query<HashQ>) -> Response {
    match st.missions.files.meta(&q.hash) {
        Ok(Some(m)) => (StatusCode::OK, metadata_url(&st, &m.hash)).into_response(),
        Ok(None) => status(StatusCode::NOT_FOUND, "404"),
        Err(e) => file_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UploadQ {
    hash: String,
    filename: String,
    name: String,
    #[serde(rename = "creatorUid")]
    creator_uid: String,
    keywords: String,
}

/// `POST /Marti/sync/missionupload?hash=&filename=&creatorUid=` (multipart, one file): a
/// data package; answers the URL of its metadata, as TAK does.
async fn mission_upload(State(st): St, Extension(Client(cn)): Extension<Client>, Query(q): Query<UploadQ>, mut form: Multipart) -> Response {
    let field = match form.next_field().await {
        Ok(Some(f)) => f,
        Ok(None) => return status(StatusCode::BAD_REQUEST, "no file"),
        Err(e) => return status(StatusCode::BAD_REQUEST, format!("multipart: {e}")),
    };
    let mime = field.content_type().unwrap_or("application/x-zip-compressed").to_owned();
    let part_name = field.file_name().unwrap_or_default().to_owned();
    let bytes = match field.bytes().await {
        Ok(b) => b,
        Err(e) => return status(StatusCode::BAD_REQUEST, format!("multipart: {e}")),
    };
    let claimed = if q.hash.is_empty() { String::new() } else { normalize_hash(&q.hash).unwrap_or(q.hash.clone()) };
    let name = [q.filename, part_name].into_iter().find(|n| !n.is_empty()).unwrap_or_default();
    let meta = FileMeta { hash: claimed, name, mime, submitter: cn, creator_uid: q.creator_uid, keywords: vec!["missionpackage".into()], ..Default::default() };
    match st.missions.store_file(bytes.to_vec(), meta).await {
        Ok((m, _)) => (StatusCode::OK, metadata_url(&st, &m.hash)).into_response(),
        Err(e) => file_error(e),
    }
}

/// TAK's enterprise-sync Metadata JSON of a file (the answer to an upload, search rows).
fn metadata_json(m: &FileMeta) -> Value {
    json!({
        "UID": m.uid, "Name": m.name, "Hash": m.hash, "CreatorUid": m.creator_uid, "SubmissionDateTime": CotTime(m.submitted_ms).to_string(),
        "EXPIRATION": "-1", "Keywords": m.keywords, "MIMEType": m.mime, "Size": m.size.to_string(), "SubmissionUser": m.submitter, "PrimaryKey": m.hash, "Tool": m.tool,
    })
}

/// `POST /Marti/sync/upload?name=&creatorUid=&keywords=` (the body is the file): mission
/// content, added to a mission afterwards.
async fn upload(State(st): St, Extension(Client(cn)): Extension<Client>, headers: HeaderMap, Query(q): Query<UploadQ>, body: axum::body::Bytes) -> Response {
    if q.name.is_empty() {
        return status(StatusCode::BAD_REQUEST, "File name cannot be blank");
    }
    let mime = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/octet-stream").to_owned();
    let keywords = q.keywords.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect();
    let meta = FileMeta { name: q.name, mime, submitter: cn, creator_uid: q.creator_uid, keywords, ..Default::default() };
    match st.missions.store_file(body.to_vec(), meta).await {
        Ok((m, _)) => Json(metadata_json(&m)).into_response(),
        Err(e) => file_error(e),
    }
}

/// `GET /Marti/sync/search`: every file held.
async fn search(State(st): St) -> Response {
    match st.missions.store.files() {
        Ok(f) => Json(json!({"resultCount": f.len(), "results": f.iter().map(metadata_json).collect::<Vec<_>>()})).into_response(),
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn metadata_get(State(st): St, method: Method, Path(hash): Path<String>) -> Response {
    content(State(st), method, Query(HashQ { hash })).await
}

/// `PUT /Marti/api/sync/metadata/{hash}/tool`: the body names the file's tool.
async fn metadata_tool(State(st): St, Path(hash): Path<String>, body: String) -> Response {
    let Some(h) = normalize_hash(&hash) else { return status(StatusCode::NOT_FOUND, "no such file") };
    match st.missions.store.set_file_tool(&h, body.trim()) {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => status(StatusCode::NOT_FOUND, "no such file"),
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn envelope(st: &MartiState, ty: &str, data: Value) -> Response {
    Json(json!({"version": "3", "type": ty, "data": data, "nodeId": st.node_id})).into_response()
}

/// A mission as TAK's API shows it, with its uids and file contents.
fn mission_json(st: &MartiState, name: &str) -> Result<Option<Value>, crate::store::StoreError> {
    let s = &st.missions.store;
    let Some(m) = s.missions()?.into_iter().find(|m| m.name == name && m.deleted_at.is_none()) else { return Ok(None) };
    let chat = s.mission_meta(name)?.map(|(_, meta)| meta.chat_room).unwrap_or_default();
    let uids: Vec<Value> = s.items(name)?.into_iter().map(|u| json!({"data": u, "timestamp": m.created_at, "creatorUid": ""})).collect();
    let contents: Vec<Value> = s
        .mission_files(name)?
        .into_iter()
        .map(|(f, added)| {
            json!({"data": {"keywords": f.keywords, "mimeType": f.mime, "name": f.name, "filename": f.name, "submissionTime": CotTime(f.submitted_ms).to_string(), "submitter": f.submitter, "uid": f.uid, "creatorUid": f.creator_uid, "hash": f.hash, "size": f.size, "expiration": -1, "tool": f.tool}, "timestamp": added, "creatorUid": f.creator_uid})
        })
        .collect();
    Ok(Some(json!({
        "name": m.name, "description": m.description, "chatRoom": chat, "baseLayer": "", "bbox": "", "path": "", "classification": "", "tool": m.tool,
        "keywords": [], "creatorUid": m.creator_uid, "createTime": m.created_at, "externalData": [], "feeds": [], "mapLayers": [], "inviteOnly": false,
        "expiration": -1, "guid": m.guid, "uids": uids, "contents": contents, "passwordProtected": false,
    })))
}

async fn missions_list(State(st): St) -> Response {
    let names: Vec<String> = match st.missions.store.missions() {
        Ok(m) => m.into_iter().filter(|m| m.deleted_at.is_none()).map(|m| m.name).collect(),
        Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut data = vec![];
    for n in names {
        if let Ok(Some(m)) = mission_json(&st, &n) {
            data.push(m);
        }
    }
    envelope(&st, "Mission", Value::Array(data))
}

async fn mission_get(State(st): St, Path(name): Path<String>) -> Response {
    match mission_json(&st, &name) {
        Ok(Some(m)) => envelope(&st, "Mission", json!([m])),
        Ok(None) => status(StatusCode::NOT_FOUND, format!("no mission {name:?}")),
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MissionQ {
    #[serde(rename = "creatorUid")]
    creator_uid: String,
    tool: String,
    description: String,
    #[serde(rename = "chatRoom")]
    chat_room: String,
    hash: String,
    uid: String,
}

/// `PUT /Marti/api/missions/{name}?creatorUid=&tool=&description=`: creates a mission (a
/// local CREATE_MISSION); an existing one is returned as it is.
async fn mission_create(State(st): St, Path(name): Path<String>, Query(q): Query<MissionQ>) -> Response {
    let meta = crate::store::MissionMeta { guid: crate::cot::random_uid(), tool: q.tool, description: q.description, chat_room: q.chat_room };
    let created = match st.missions.create_local_mission(&name, &q.creator_uid, meta).await {
        Ok(c) => c,
        Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match mission_json(&st, &name) {
        Ok(Some(m)) => (if created { StatusCode::CREATED } else { StatusCode::OK }, Json(json!({"version": "3", "type": "Mission", "data": [m], "nodeId": st.node_id}))).into_response(),
        Ok(None) => status(StatusCode::NOT_FOUND, format!("no mission {name:?}")),
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Contents {
    hashes: Vec<String>,
    uids: Vec<String>,
}

fn content_error(e: LocalContentError) -> Response {
    match e {
        LocalContentError::NoMission(_) | LocalContentError::NoFile(_) | LocalContentError::NotInMission(..) => status(StatusCode::NOT_FOUND, e.to_string()),
        e => status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `PUT /Marti/api/missions/{name}/contents?creatorUid=` with `{"hashes":[…],"uids":[…]}`.
async fn contents_add(State(st): St, Path(name): Path<String>, Query(q): Query<MissionQ>, Json(c): Json<Contents>) -> Response {
    if let Err(e) = st.missions.add_local_content(&name, &c.hashes, &c.uids, &q.creator_uid).await {
        return content_error(e);
    }
    mission_get(State(st), Path(name)).await
}

/// `DELETE /Marti/api/missions/{name}/contents?hash=|uid=&creatorUid=`.
async fn contents_remove(State(st): St, Path(name): Path<String>, Query(q): Query<MissionQ>) -> Response {
    let (hash, uid) = (Some(q.hash.as_str()).filter(|h| !h.is_empty()), Some(q.uid.as_str()).filter(|u| !u.is_empty()));
    if hash.is_none() && uid.is_none() {
        return status(StatusCode::BAD_REQUEST, "hash or uid required");
    }
    match st.missions.remove_local_content(&name, hash, uid, &q.creator_uid).await {
        Ok(_) => mission_get(State(st), Path(name)).await,
        Err(e) => content_error(e),
    }
}

const LOG_TYPE: &str = "com.bbn.marti.sync.model.LogEntry";

/// `GET /Marti/api/missions/{name}/log`: the mission's log entries.
async fn mission_log(State(st): St, Path(name): Path<String>) -> Response {
    match st.missions.store.logs(&name) {
        Ok(l) => envelope(&st, LOG_TYPE, Value::Array(l.iter().map(crate::missions::rol::log_entry_json).collect())),
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST` (new) and `PUT` (edit, by `id`/`entryUid`) `/Marti/api/missions/logs/entries`:
/// TAK's LogEntry JSON; the entry of its first mission name. Answers the entry as stored.
async fn log_add(State(st): St, method: Method, Json(body): Json<Value>) -> Response {
    let mut e = crate::missions::rol::parse_log_entry(&body);
    if e.mission.is_empty() {
        return status(StatusCode::BAD_REQUEST, "missionNames is required");
    }
    let now = crate::store::now_ms();
    let old = if e.entry_uid.is_empty() { None } else { st.missions.store.log(&e.entry_uid).ok().flatten() };
    match (&method, &old) {
        (&Method::PUT, None) => return status(StatusCode::NOT_FOUND, format!("no log entry {:?}", e.entry_uid)),
        (_, Some(o)) => e.created_ms = o.created_ms,
        (_, None) => {
            if e.entry_uid.is_empty() {
                e.entry_uid = crate::cot::random_uid();
            }
            e.created_ms = now;
        }
    }
    e.servertime_ms = now;
    if e.dtg_ms == 0 {
        e.dtg_ms = now;
    }
    match st.missions.local_log(e.clone(), false).await {
        Ok(_) => (if old.is_none() { StatusCode::CREATED } else { StatusCode::OK }, Json(json!({"version": "3", "type": LOG_TYPE, "data": crate::missions::rol::log_entry_json(&e), "nodeId": st.node_id}))).into_response(),
        Err(e) => content_error(e),
    }
}

/// `DELETE /Marti/api/missions/logs/entries/{id}`.
async fn log_delete(State(st): St, Path(id): Path<String>) -> Response {
    let Some(e) = st.missions.store.log(&id).ok().flatten() else { return status(StatusCode::NOT_FOUND, format!("no log entry {id:?}")) };
    match st.missions.local_log(e, true).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => content_error(e),
    }
}

async fn version() -> String {
    format!("takgate {}", env!("CARGO_PKG_VERSION"))
}

async fn version_config(State(st): St) -> Response {
    let host = st.base.trim_start_matches("https://").split(':').next().unwrap_or_default().to_owned();
    Json(json!({"version": "2", "type": "ServerConfig", "data": {"version": format!("takgate {}", env!("CARGO_PKG_VERSION")), "api": "3", "hostname": host}, "nodeId": st.node_id})).into_response()
}
