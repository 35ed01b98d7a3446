//! OpenTAKServer's Marti API, for missions: create a mission, add and remove its content,
//! delete it; upload and download files. OpenTAKServer trusts the client certificate its nginx passes in `X-Ssl-Cert`
//! (URL-encoded PEM) when it is signed by OTS's CA; takgate talks to the API port (8081)
//! directly and sends the certificate the same way. Calls on one mission need the mission
//! token OpenTAKServer returns when the mission is created or updated (`PUT
//! /Marti/api/missions/<name>`).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// A failed call, in words.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("OpenTAKServer API {0}: cannot connect: {1}")]
    Connect(String, std::io::Error),
    #[error("OpenTAKServer API {0}: {1}")]
    Http(String, String),
    #[error("OpenTAKServer API {method} {path}: {status} {body}")]
    Status { method: &'static str, path: String, status: u16, body: String },
    #[error("OpenTAKServer API: no response within {0:?}")]
    Timeout(Duration),
}

/// The API of one OpenTAKServer.
#[derive(Debug)]
pub struct Api {
    /// host:port of the API listener (OTS_LISTENER_ADDRESS:OTS_LISTENER_PORT).
    addr: String,
    /// The certificate, URL-encoded as nginx puts it in `X-Ssl-Cert`.
    cert_header: String,
    /// Mission tokens by mission name.
    tokens: tokio::sync::Mutex<HashMap<String, String>>,
}

const TIMEOUT: Duration = Duration::from_secs(10);
/// Calls that carry a whole file.
const FILE_TIMEOUT: Duration = Duration::from_secs(120);

/// `application/x-www-form-urlencoded`-style escaping of a query value or path part.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Api {
    /// `base`: `http://host:port`; `cert_pem`: the service certificate.
    pub fn new(base: &str, cert_pem: &str) -> Result<Api, String> {
        let addr = base.strip_prefix("http://").ok_or_else(|| format!("ots_api: {base:?}: takgate calls OpenTAKServer's API port over plain HTTP (http://host:8081), as its nginx does"))?;
        let addr = addr.trim_end_matches('/').to_owned();
        if addr.is_empty() || addr.contains('/') {
            return Err(format!("ots_api: {base:?} is not http://host:port"));
        }
        Ok(Api { addr, cert_header: escape(cert_pem.trim_end()), tokens: Default::default() })
    }

    async fn call(&self, method: &'static str, path: &str, token: Option<&str>, body: Option<Value>) -> Result<(u16, Value), ApiError> {
        let r = tokio::time::timeout(TIMEOUT, self.call_once(method, path, token, body)).await;
        r.unwrap_or(Err(ApiError::Timeout(TIMEOUT)))
    }

    async fn call_once(&self, method: &'static str, path: &str, token: Option<&str>, body: Option<Value>) -> Result<(u16, Value), ApiError> {
        let body = body.map(|v| ("application/json", Bytes::from(serde_json::to_vec(&v).unwrap_or_default())));
        let (status, bytes) = self.raw(method, path, token, body).await?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).chars().take(300).collect()));
        Ok((status, v))
    }

    /// One call with a body of any type; the answer's bytes (an error for a status >= 300).
    async fn raw(&self, method: &'static str, path: &str, token: Option<&str>, body: Option<(&str, Bytes)>) -> Result<(u16, Bytes), ApiError> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await.map_err(|e| ApiError::Connect(self.addr.clone(), e))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| ApiError::Http(path.to_owned(), e.to_string()))?;
        tokio::spawn(conn);
        let mut req = http::Request::builder().method(method).uri(path).header("host", &self.addr).header("X-Ssl-Cert", &self.cert_header).header("user-agent", concat!("takgate/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let data = match body {
            Some((ct, b)) => {
                req = req.header("content-type", ct);
                b
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(data)).map_err(|e| ApiError::Http(path.to_owned(), e.to_string()))?;
        let resp = send.send_request(req).await.map_err(|e| ApiError::Http(path.to_owned(), e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.map_err(|e| ApiError::Http(path.to_owned(), e.to_string()))?.to_bytes();
        if status >= 300 {
            let body: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
            return Err(ApiError::Status { method, path: path.to_owned(), status, body });
        }
        Ok((status, bytes))
    }

    /// Uploads a file as OTS's Data Sync clients do (`POST /Marti/sync/upload?name=&creatorUid=`,
    /// the body is the file; OTS keeps it by name and records its SHA-256); the hash OTS
    /// recorded. OTS refuses names whose extension is not in its ALLOWED_EXTENSIONS.
    pub async fn upload(&self, name: &str, creator_uid: &str, mime: &str, bytes: Vec<u8>) -> Result<String, ApiError> {
        let path = format!("/Marti/sync/upload?name={}&creatorUid={}", escape(name), escape(creator_uid));
        let mime = if mime.is_empty() { "application/octet-stream" } else { mime };
        let fut = self.raw("POST", &path, None, Some((mime, Bytes::from(bytes))));
        let (_, answer) = tokio::time::timeout(FILE_TIMEOUT, fut).await.unwrap_or(Err(ApiError::Timeout(FILE_TIMEOUT)))?;
        let v: Value = serde_json::from_slice(&answer).unwrap_or_default();
        Ok(v["Hash"].as_str().unwrap_or_default().to_owned())
    }

    /// A file OTS holds (`GET /Marti/sync/content?hash=`).
    pub async fn content(&self, hash: &str) -> Result<Vec<u8>, ApiError> {
        let path = format!("/Marti/sync/content?hash={}", escape(hash));
        let fut = self.raw("GET", &path, None, None);
        let (_, b) = tokio::time::timeout(FILE_TIMEOUT, fut).await.unwrap_or(Err(ApiError::Timeout(FILE_TIMEOUT)))?;
        Ok(b.to_vec())
    }

    /// Creates `name` (or updates it: OTS's PUT does both) with `creator_uid` (an EUD OTS
    /// knows) and keeps its token. True when OTS created it.
    pub async fn ensure_mission(&self, name: &str, creator_uid: &str, tool: &str, description: &str) -> Result<bool, ApiError> {
        let mut path = format!("/Marti/api/missions/{}?creatorUid={}&tool={}", escape(name), escape(creator_uid), escape(if tool.is_empty() { "public" } else { tool }));
        if !description.is_empty() {
            path.push_str(&format!("&description={}", escape(description)));
        }
        let (status, v) = self.call("PUT", &path, None, None).await?;
        if let Some(t) = v["data"][0]["token"].as_str() {
            self.tokens.lock().await.insert(name.to_owned(), t.to_owned());
        }
        Ok(status == 201)
    }

    /// The mission token (OpenTAKServer hands it out when its creator makes the mission). A
    /// mission someone else made on OTS gets none from us: OTS gives its token only to an
    /// EUD with a user account that subscribes, and its PUT would overwrite the mission's
    /// fields, so that is refused here rather than done.
    async fn token(&self, name: &str, creator_uid: &str) -> Result<String, ApiError> {
        if let Some(t) = self.tokens.lock().await.get(name) {
            return Ok(t.clone());
        }
        if self.mission(name).await.is_ok_and(|v| v["data"].as_array().is_some_and(|d| !d.is_empty())) {
            return Err(ApiError::Http(name.to_owned(), "the mission was made on OpenTAKServer by someone else: OTS 1.7.14 gives takgate no token for it".into()));
        }
        self.ensure_mission(name, creator_uid, "", "").await?;
        self.tokens.lock().await.get(name).cloned().ok_or_else(|| ApiError::Http(name.to_owned(), "OpenTAKServer returned no mission token".into()))
    }

    /// Adds files (by hash) to a mission: OTS must hold them already.
    pub async fn add_hashes(&self, name: &str, creator_uid: &str, hashes: &[String]) -> Result<(), ApiError> {
        let token = self.token(name, creator_uid).await?;
        let path = format!("/Marti/api/missions/{}/contents?creatorUid={}", escape(name), escape(creator_uid));
        self.call("PUT", &path, Some(&token), Some(serde_json::json!({ "hashes": hashes }))).await.map(|_| ())
    }

    /// Adds CoT items (by uid) to a mission, as iTAK's Data Sync does.
    pub async fn add_uids(&self, name: &str, creator_uid: &str, uids: &[String]) -> Result<(), ApiError> {
        let token = self.token(name, creator_uid).await?;
        let path = format!("/Marti/api/missions/{}/contents?creatorUid={}", escape(name), escape(creator_uid));
        self.call("PUT", &path, Some(&token), Some(serde_json::json!({ "uids": uids }))).await.map(|_| ())
    }

    /// Removes a CoT item (uid) or a file (hash) from a mission.
    pub async fn remove(&self, name: &str, creator_uid: &str, uid: &str, hash: &str) -> Result<(), ApiError> {
        let token = self.token(name, creator_uid).await?;
        let mut path = format!("/Marti/api/missions/{}/contents?creatorUid={}", escape(name), escape(creator_uid));
        if !uid.is_empty() {
            path.push_str(&format!("&uid={}", escape(uid)));
        }
        if !hash.is_empty() {
            path.push_str(&format!("&hash={}", escape(hash)));
        }
        self.call("DELETE", &path, Some(&token), None).await.map(|_| ())
    }

    /// Deletes a mission (OpenTAKServer 1.7.14 answers 500: its foreign keys refuse it).
    pub async fn delete_mission(&self, name: &str, creator_uid: &str) -> Result<(), ApiError> {
        let token = self.token(name, creator_uid).await?;
        let path = format!("/Marti/api/missions/{}?creatorUid={}", escape(name), escape(creator_uid));
        let r = self.call("DELETE", &path, Some(&token), None).await.map(|_| ());
        self.tokens.lock().await.remove(name);
        r
    }

    /// Adds a log entry to a mission (`POST /Marti/api/missions/logs/entries`, the mission
    /// token required; OTS gives it its own entry uid).
    pub async fn add_log(&self, name: &str, creator_uid: &str, e: &crate::store::LogEntry) -> Result<(), ApiError> {
        let token = self.token(name, creator_uid).await?;
        let body = serde_json::json!({"content": e.content, "creatorUid": creator_uid, "missionNames": [name], "dtg": crate::cot::CotTime(if e.dtg_ms > 0 { e.dtg_ms } else { crate::store::now_ms() }).to_string(), "keywords": e.keywords, "contentHashes": e.content_hashes});
        self.call("POST", "/Marti/api/missions/logs/entries", Some(&token), Some(body)).await.map(|_| ())
    }

    /// A mission's log (`GET /Marti/api/missions/<name>/log`, the mission token required).
    pub async fn logs(&self, name: &str, creator_uid: &str) -> Result<Vec<Value>, ApiError> {
        let token = self.token(name, creator_uid).await?;
        let path = format!("/Marti/api/missions/{}/log", escape(name));
        let (_, v) = self.call("GET", &path, Some(&token), None).await?;
        Ok(v["data"].as_array().cloned().unwrap_or_default())
    }

    /// Every mission of `tool` (OpenTAKServer lists one tool at a time; ATAK asks for
    /// `public`).
    pub async fn missions(&self, tool: &str) -> Result<Vec<Value>, ApiError> {
        let path = format!("/Marti/api/missions?tool={}", escape(tool));
        let (_, v) = self.call("GET", &path, None, None).await?;
        Ok(v["data"].as_array().cloned().unwrap_or_default())
    }

    /// A mission as OpenTAKServer shows it (`GET /Marti/api/missions/<name>`).
    pub async fn mission(&self, name: &str) -> Result<Value, ApiError> {
        let path = format!("/Marti/api/missions/{}", escape(name));
        self.call("GET", &path, None, None).await.map(|(_, v)| v)
    }
}
