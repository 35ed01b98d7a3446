//! The admin API over real HTTP: token auth, validation errors, a federation server CRUD
//! round trip that connects, disconnects and reconnects a live federate without a restart,
//! the staged test against a live and a dead peer, links and missions, the OpenAPI document
//! against the routes served, and a Prometheus scrape.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::certs::Pki;
use common::{eventually, gateway, pli, Client};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "test-token-0123456789";

/// One HTTP/1.1 request; returns the status and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, String) {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    http_on(s, addr, method, path, token, body).await
}

async fn http_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, String) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let ct = if body.is_empty() { String::new() } else { "Content-Type: application/json\r\n".into() };
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}{ct}Content-Length: {}\r\n\r\n{body}", body.len());
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    // A TLS peer may close without close_notify, or refuse us with an alert: keep what came.
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await.expect("response");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let rest = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    (status, rest)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

async fn api(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (st, b) = http(addr, method, path, Some(TOKEN), body.as_ref()).await;
    (st, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

fn admin_gateway_cfg(extra: &str) -> String {
    format!("[node]\nid = \"node-a\"\n[admin]\naddress = \"127.0.0.1:0\"\n{extra}\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_and_validation() {
    let a = gateway(&admin_gateway_cfg(&format!("token = \"{TOKEN}\""))).await;
    let addr = a.admin_addr().unwrap();
    let (st, body) = http(addr, "GET", "/api/health", None, None).await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"node_id\":\"node-a\""));
    for path in ["/api/links", "/api/federation/servers", "/api/missions", "/metrics", "/api/openapi.json", "/api/federation/health"] {
        assert_eq!(http(addr, "GET", path, None, None).await.0, 401, "{path} without a token");
        assert_eq!(http(addr, "GET", path, Some("wrong-token-0000000000"), None).await.0, 401, "{path} with a wrong token");
        assert_eq!(http(addr, "GET", path, Some(TOKEN), None).await.0, 200, "{path} with the token");
    }
    let srv = "/api/federation/servers";
    let cases: Vec<(Option<Value>, u16, &str)> = vec![
        (None, 400, "JSON object"),
        (Some(json!([1])), 400, "JSON object"),
        (Some(json!({"address": "h", "port": 9001})), 400, "missing required field \"name\""),
        (Some(json!({"name": "x", "address": "h", "port": 70000})), 400, "port"),
        (Some(json!({"name": "x", "address": "h", "port": 9001, "protocol_version": "v3"})), 400, "protocol_version"),
        (Some(json!({"name": "x", "address": "h", "port": 9001, "connection_type": "sideways"})), 400, "connection_type"),
        (Some(json!({"name": "x", "address": "h", "port": 9001, "transport_protocol": "udp"})), 400, "transport_protocol"),
        (Some(json!({"name": "x", "address": "h", "port": 9001, "use_tls": false})), 400, "use_tls"),
        (Some(json!({"name": "x", "address": "h", "port": 9001, "bogus": 1})), 400, "unknown field"),
        (Some(json!({"name": "x", "address": "h", "port": 9001, "mission_filter": "ops"})), 400, "mission_filter"),
        (Some(json!({"name": "x", "address": "h", "port": 9001, "ca_certificate": "not pem"})), 400, "PEM"),
        (Some(json!({"name": "x", "address": "h", "port": 9001})), 400, "needs ca_certificate"),
        (Some(json!({"name": "c", "address": "h", "port": 9001, "enabled": false})), 409, "configured link"),
    ];
    for (body, code, text) in cases {
        let (st, b) = api(addr, "POST", srv, body.clone()).await;
        assert_eq!(st, code, "{body:?}: {b}");
        assert_eq!(b["success"], false);
        assert!(b["error"].as_str().unwrap_or("").contains(text), "{body:?}: {b}");
    }
    // An inbound server needs no certificates; a second of the same name is a conflict.
    let (st, b) = api(addr, "POST", srv, Some(json!({"name": "west", "address": "10.0.0.9", "port": 9001, "connection_type": "inbound"}))).await;
    assert_eq!(st, 201, "{b}");
    let id = b["server"]["id"].as_i64().unwrap();
    assert_eq!(api(addr, "POST", srv, Some(json!({"name": "west", "address": "h", "port": 9001, "connection_type": "inbound"}))).await.0, 409);
    let (st, b) = api(addr, "PUT", &format!("{srv}/{id}"), Some(json!({"port": 0}))).await;
    assert_eq!((st, b["success"].clone()), (400, json!(false)), "validated on update: {b}");
    assert_eq!(api(addr, "GET", &format!("{srv}/999"), None).await.0, 404);
    assert_eq!(api(addr, "GET", "/api/missions/nope/changes", None).await.0, 404);
    a.shutdown().await;
    // Without a token configured, only health answers.
    let b = gateway(&admin_gateway_cfg("")).await;
    let addr = b.admin_addr().unwrap();
    assert_eq!(http(addr, "GET", "/api/health", None, None).await.0, 200);
    let (st, body) = http(addr, "GET", "/api/links", Some(TOKEN), None).await;
    assert!(st == 401 && body.contains("no admin token is configured"), "{st} {body}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_server_crud_takes_effect_without_a_restart() {
    let mut pki = Pki::new("admin-crud");
    let b = gateway(&pki.fed_listener("node-b", "federation-v2", "127.0.0.1:0", "")).await;
    let b_fed = b.local_addr("fed").unwrap();
    let a = gateway(&admin_gateway_cfg(&format!("token = \"{TOKEN}\""))).await;
    let addr = a.admin_addr().unwrap();
    let (cert, key) = pki.leaf("node-a", false);
    let pem = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    let federates_become = |n: usize| {
        let b = &b;
        async move {
            for _ in 0..100 {
                if b.router().stats().await.iter().filter(|s| s.transport == "federation-v2").count() == n {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    };
    // Create: it connects at once.
    let (st, body) = api(
        addr,
        "POST",
        "/api/federation/servers",
        Some(json!({"name": "east", "address": "127.0.0.1", "port": b_fed.port(), "protocol_version": "v2", "ca_certificate": pem(&pki.ca), "client_certificate": pem(&cert), "client_key": pem(&key), "mission_filter": ["ops-*"]})),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let id = body["server"]["id"].as_i64().unwrap();
    assert!(!body.to_string().contains("PRIVATE KEY"), "never the key");
    assert_eq!(body["server"]["mission_filter"], "[\"ops-*\"]", "as OpenTAKServer: the JSON text");
    let up = federates_become(1).await;
    assert!(up, "the new server connected");
    assert!(eventually(5.0, || a.connection("east").is_some_and(|c| c.state == takgate::link::LinkState::Connected)).await);
    let (st, s) = api(addr, "GET", &format!("/api/federation/servers/{id}/status"), None).await;
    assert_eq!(st, 200);
    assert_eq!(s["status"]["server"]["status"], "connected", "{s}");
    assert_eq!(s["status"]["queue"]["pending"], 0);
    assert_eq!(s["status"]["stats"]["pending_changes"], 0);
    let (_, list) = api(addr, "GET", "/api/federation/servers", None).await;
    assert_eq!(list["servers"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains("PRIVATE KEY"));
    let (_, h) = api(addr, "GET", "/api/federation/health", None).await;
    assert_eq!((h["health"]["total_servers"].as_i64(), h["health"]["connected_servers"].as_i64()), (Some(1), Some(1)), "{h}");
    // The staged test against the live peer.
    let (st, t) = api(addr, "POST", &format!("/api/federation/servers/{id}/test"), None).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["stages"].as_array().unwrap().last().unwrap()["name"], "v2 health check");
    // Disable: it disconnects; enable: it connects again.
    let (st, body) = api(addr, "PUT", &format!("/api/federation/servers/{id}"), Some(json!({"enabled": false}))).await;
    assert_eq!((st, body["server"]["status"].clone()), (200, json!("disabled")), "{body}");
    let down = federates_become(0).await;
    assert!(down, "disabled disconnects");
    api(addr, "PUT", &format!("/api/federation/servers/{id}"), Some(json!({"enabled": true}))).await;
    let again = federates_become(1).await;
    assert!(again, "enabled reconnects");
    // Delete: gone, and disconnected.
    let (st, d) = api(addr, "DELETE", &format!("/api/federation/servers/{id}"), None).await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(api(addr, "GET", &format!("/api/federation/servers/{id}"), None).await.0, 404);
    assert!(a.connection("east").is_none());
    let gone = federates_become(0).await;
    assert!(gone);
    // A dead peer: the test says which stage failed, with 503.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (_, body) = api(addr, "POST", "/api/federation/servers", Some(json!({"name": "dead", "address": "127.0.0.1", "port": dead.port(), "enabled": false, "ca_path": pki.path(&pki.ca), "cert_path": cert.display().to_string(), "key_path": key.display().to_string()}))).await;
    let id = body["server"]["id"].as_i64().unwrap_or_else(|| panic!("{body}"));
    let (st, t) = api(addr, "POST", &format!("/api/federation/servers/{id}/test"), None).await;
    assert_eq!(st, 503, "{t}");
    assert!(t["error"].as_str().unwrap().starts_with("tcp connect"), "{t}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_missions_openapi_and_metrics() {
    let a = gateway(&admin_gateway_cfg(&format!("token = \"{TOKEN}\""))).await;
    let addr = a.admin_addr().unwrap();
    let c = a.local_addr("c").unwrap();
    let mut x = Client::tcp(c).await;
    let mut y = Client::tcp(c).await;
    for k in 1..=5 {
        x.send(&pli("ANDROID-X", "XRAY", k)).await;
    }
    let mut m = pli("ANDROID-X", "XRAY", 6);
    m.detail.xml = r#"<marti><dest mission="ops"/></marti>"#.into();
    x.send(&m).await;
    y.drain(Duration::from_millis(500)).await;
    let (_, l) = api(addr, "GET", "/api/links", None).await;
    let link = &l["links"][0];
    assert_eq!((link["name"].as_str(), link["transport"].as_str(), link["peers"].as_array().map(|p| p.len())), (Some("c"), Some("tcp"), Some(2)), "{l}");
    assert!(link["counters"]["events_in"].as_u64().unwrap() >= 6);
    assert!(link["peers"][0]["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(link["peers"][0]["codec"], "xml");
    let (_, ms) = api(addr, "GET", "/api/missions", None).await;
    assert_eq!(ms["missions"][0]["name"], "ops", "{ms}");
    let (_, ch) = api(addr, "GET", "/api/missions/ops/changes", None).await;
    assert_eq!(ch["changes"][0]["change_type"], "ADD_CONTENT");
    // The OpenAPI document lists exactly the routes served, and each of them answers.
    let (_, doc) = api(addr, "GET", "/api/openapi.json", None).await;
    let mut documented = vec![];
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> = takgate::admin::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    served.sort();
    assert_eq!(documented, served);
    for (method, path) in &served {
        let p = path.replace("{id}", "424242").replace("{name}", "ops");
        let body = if method == "post" || method == "put" { Some(json!({})) } else { None };
        let (st, _) = api(addr, &method.to_uppercase(), &p, body).await;
        assert!(st != 405 && (st != 404 || p.contains("424242")), "{method} {p}: {st}");
    }
    assert_eq!(http(addr, "GET", "/api/nothing", Some(TOKEN), None).await.0, 404);
    // Prometheus: the Prometheus project's own OpenMetrics parser reads it, every family
    // in one group, with the names and labels of before.
    let (st, text) = http(addr, "GET", "/metrics", Some(TOKEN), None).await;
    assert_eq!(st, 200);
    let families = parse_metrics(&text);
    let family = |name: &str| families.iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("family {name} missing:\n{text}"));
    let sample = |fam: &str, sample: &str, labels: serde_json::Value| -> f64 {
        let f = family(fam);
        f["samples"].as_array().unwrap().iter().find(|s| s[0] == sample && s[1] == labels).and_then(|s| s[2].as_f64()).unwrap_or_else(|| panic!("{sample} {labels} missing in {f}"))
    };
    let c_tcp = json!({"link": "c", "transport": "tcp"});
    assert_eq!(family("takgate_events_in")["type"], "counter");
    assert!(sample("takgate_events_in", "takgate_events_in_total", c_tcp.clone()) >= 6.0);
    assert!(sample("takgate_events_out", "takgate_events_out_total", c_tcp.clone()) >= 6.0);
    assert_eq!(family("takgate_peers")["type"], "gauge");
    assert_eq!(sample("takgate_peers", "takgate_peers", json!({"link": "c"})), 2.0);
    assert_eq!(sample("takgate_queue_depth", "takgate_queue_depth", json!({"link": "c"})), 0.0);
    assert_eq!(family("takgate_delivery_latency_seconds")["type"], "histogram");
    assert!(sample("takgate_delivery_latency_seconds", "takgate_delivery_latency_seconds_count", json!({})) >= 1.0);
    assert!(sample("takgate_delivery_latency_seconds", "takgate_delivery_latency_seconds_bucket", json!({"le": "+Inf"})) >= 1.0);
    assert_eq!(sample("takgate_drops", "takgate_drops_total", json!({"link": "c", "transport": "tcp", "reason": "queue_full"})), 0.0);
    assert!(sample("takgate_router_routed", "takgate_router_routed_total", json!({})) >= 6.0);
    assert_eq!(sample("takgate_router_direct_unknown", "takgate_router_direct_unknown_total", json!({})), 0.0);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_over_mutual_tls() {
    let mut pki = Pki::new("admin-mtls");
    let cfg = format!(
        "[node]\nid = \"node-a\"\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
        pki.path(&pki.server_cert),
        pki.path(&pki.server_key),
        pki.path(&pki.ca)
    );
    let a = gateway(&cfg).await;
    let addr = a.admin_addr().unwrap();
    let (cert, key) = pki.leaf("operator", false);
    let connect = |with_cert: bool| {
        let (ca, cert, key) = (pki.ca.clone(), cert.clone(), key.clone());
        async move {
            let cc = takgate::link::tls::client_config(&ca, with_cert.then_some((cert.as_path(), key.as_path()))).unwrap();
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(cc)).connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await
        }
    };
    // Without a client certificate: refused (TLS 1.3 reports it on the first read).
    match connect(false).await {
        Err(_) => {}
        Ok(s) => {
            let (st, _) = http_on(s, addr, "GET", "/api/health", None, None).await;
            assert_eq!(st, 0, "no HTTP answer without a client certificate");
        }
    }
    // With one: the API answers, and still wants the token.
    let (st, body) = http_on(connect(true).await.unwrap(), addr, "GET", "/api/health", None, None).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(http_on(connect(true).await.unwrap(), addr, "GET", "/api/links", None, None).await.0, 401);
    assert_eq!(http_on(connect(true).await.unwrap(), addr, "GET", "/api/links", Some(TOKEN), None).await.0, 200);
    // Plain HTTP on the HTTPS port gets nothing.
    assert_eq!(http(addr, "GET", "/api/health", None, None).await.0, 0);
    a.shutdown().await;
}

/// Families of `/metrics` as the Prometheus Python client's strict OpenMetrics parser reads
/// them (tests/py/metrics_check.py); fails the test with the parser's message.
fn parse_metrics(text: &str) -> Vec<serde_json::Value> {
    use std::io::Write;
    let mut child = std::process::Command::new(common::py::python())
        .arg(common::py::script("metrics_check.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start metrics_check.py");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the OpenMetrics parser refuses /metrics: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
