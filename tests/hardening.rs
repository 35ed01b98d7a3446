//! Hardening (issue 9) over real sockets: limits per certificate identity, revoked and
//! expired certificates, per-connection read rates, the write timeout for peers that stop
//! reading, half frames that stall, and no secret in the logs.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{gateway, pli, seq_of, Client};
use takgate::certs::{Authority, Kind};
use takgate::cot::control::{self, Control};
use takgate::cot::CotTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tcp_link(name: &str, extra: &str) -> String {
    format!("[[link]]\nname = \"{name}\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n{extra}\n")
}

fn tmp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("takgate-hard-{tag}-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A TLS client with `cert`/`key`; Some(client) when the gateway answers a ping (it
/// accepted the certificate), None when it closed the connection.
async fn tls_client(addr: std::net::SocketAddr, ca: &Path, cert: &Path, key: &Path) -> Option<Client> {
    let cc = takgate::link::tls::client_config(ca, Some((cert, key))).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cc)).connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.ok()?;
    let mut c = Client::over(Box::pin(tls));
    c.send(&control::ping("probe", CotTime::now())).await;
    for _ in 0..5 {
        c.recv(Duration::from_millis(200)).await;
        if c.control.contains(&Control::Pong) {
            return Some(c);
        }
    }
    None
}

fn tls_listener(dir: &Path, ca: &Path, extra: &str) -> String {
    format!(
        "[[link]]\nname = \"t\"\ntransport = \"tls\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nnegotiate = false\n{extra}\n",
        ca.display(),
        dir.join("localhost.pem").display(),
        dir.join("localhost.key").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_certificate_cannot_take_every_connection() {
    let dir = tmp("ident");
    let ca = Authority::new(&dir, "ident CA").unwrap();
    ca.issue(Kind::Server, "localhost", &["localhost", "127.0.0.1"], 30).unwrap();
    let (ac, ak) = ca.issue(Kind::Client, "alice", &[], 30).unwrap();
    let (bc, bk) = ca.issue(Kind::Client, "bob", &[], 30).unwrap();
    let gw = gateway(&tls_listener(&dir, &ca.ca, "max_connections_per_identity = 2")).await;
    let addr = gw.local_addr("t").unwrap();
    let a1 = tls_client(addr, &ca.ca, &ac, &ak).await;
    let a2 = tls_client(addr, &ca.ca, &ac, &ak).await;
    let a3 = tls_client(addr, &ca.ca, &ac, &ak).await;
    assert_eq!((a1.is_some(), a2.is_some(), a3.is_some()), (true, true, false), "two connections per certificate");
    let b1 = tls_client(addr, &ca.ca, &bc, &bk).await;
    assert!(b1.is_some(), "another certificate still gets in");
    assert_eq!(gw.counters("t").unwrap().snapshot().refused, 1);
    let metrics = takgate::admin::metrics::render(&gw.control()).await;
    assert!(metrics.contains("takgate_drops_total{link=\"t\",transport=\"tls\",reason=\"connection_refused\"} 1"), "{metrics}");
    // a closed connection gives its place back
    drop(a1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tls_client(addr, &ca.ca, &ac, &ak).await.is_some());
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_certificates_are_refused_by_the_crl_from_takgate_certs_revoke() {
    let dir = tmp("crl");
    let ca = Authority::new(&dir, "crl CA").unwrap();
    ca.issue(Kind::Server, "localhost", &["localhost", "127.0.0.1"], 30).unwrap();
    let (ac, ak) = ca.issue(Kind::Client, "alice", &[], 30).unwrap();
    let (mc, mk) = ca.issue(Kind::Client, "mallory", &[], 30).unwrap();
    // The operator's path: the binary revokes, the link points at the CRL it wrote.
    let out = Command::new(env!("CARGO_BIN_EXE_takgate")).args(["certs", "revoke", "--dir"]).arg(&dir).arg(&mc).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let crl = dir.join("crl.pem");
    assert!(std::fs::read_to_string(&crl).unwrap().contains("BEGIN X509 CRL"));
    // A certificate from another CA is not revocable here.
    let other = Authority::new(&tmp("crl-other"), "other CA").unwrap();
    let (oc, _) = other.issue(Kind::Client, "eve", &[], 30).unwrap();
    assert!(ca.revoke(&oc, 30).unwrap_err().contains("not issued by this CA"));

    let gw = gateway(&tls_listener(&dir, &ca.ca, &format!("crl = [\"{}\"]", crl.display()))).await;
    let addr = gw.local_addr("t").unwrap();
    assert!(tls_client(addr, &ca.ca, &ac, &ak).await.is_some(), "alice is not revoked");
    assert!(tls_client(addr, &ca.ca, &mc, &mk).await.is_none(), "mallory is revoked");
    let c = gw.counters("t").unwrap();
    assert!(common::eventually(3.0, || c.snapshot().decode_errors >= 1).await, "the refusal is counted");
    gw.shutdown().await;

    // Revoking alice too, then restarting the link, refuses her as well.
    ca.revoke(&ac, 30).unwrap();
    let revoked = std::fs::read_to_string(dir.join("revoked.txt")).unwrap();
    assert_eq!(revoked.lines().count(), 2, "{revoked}");
    let gw = gateway(&tls_listener(&dir, &ca.ca, &format!("crl = [\"{}\"]", crl.display()))).await;
    assert!(tls_client(gw.local_addr("t").unwrap(), &ca.ca, &ac, &ak).await.is_none());
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_rate_limit_slows_a_flood_without_losing_it() {
    let gw = gateway(&tcp_link("c", "max_read_events_per_sec = 40\nnegotiate = false")).await;
    let addr = gw.local_addr("c").unwrap();
    let mut rx = Client::tcp(addr).await;
    let mut flood = Client::tcp(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = 120u32;
    let t = Instant::now();
    for i in 0..n {
        flood.send(&pli("FLOOD", "F", i)).await;
    }
    let mut seen = Vec::new();
    while t.elapsed() < Duration::from_millis(1000) {
        if let Some(ev) = rx.recv(Duration::from_millis(100)).await {
            seen.extend(seq_of(&ev));
        }
    }
    // one second deep bucket: 40 at once, then 40/s
    assert!(seen.len() <= 90, "at most about 80 in the first second, got {}", seen.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < n as usize && Instant::now() < deadline {
        if let Some(ev) = rx.recv(Duration::from_millis(500)).await {
            seen.extend(seq_of(&ev));
        }
    }
    assert_eq!(seen, (0..n).collect::<Vec<_>>(), "everything arrives, in order");
    let c = gw.counters("c").unwrap().snapshot();
    assert!(c.throttled >= 1, "{c:?}");
    assert_eq!(c.drops_queue_full + c.drops_router_busy, 0);
    // Other clients on the link are not slowed by the flooder.
    let mut other = Client::tcp(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    other.send(&pli("OTHER", "O", 1)).await;
    assert_eq!(rx.recv(Duration::from_millis(500)).await.map(|e| e.uid), Some("OTHER".into()));
    let metrics = takgate::admin::metrics::render(&gw.control()).await;
    assert!(metrics.contains(&format!("takgate_throttled_total{{link=\"c\",transport=\"tcp\"}} {}", c.throttled)), "{metrics}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_rate_limit_pauses_reading() {
    let gw = gateway(&tcp_link("c", "max_read_bytes_per_sec = 60000\nnegotiate = false")).await;
    let addr = gw.local_addr("c").unwrap();
    let mut rx = Client::tcp(addr).await;
    let mut flood = Client::tcp(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // 60 events of about 4 KB: 240 KB, so about 3 s at 60 KB/s (one second in the bucket)
    let n = 60u32;
    let t = Instant::now();
    for i in 0..n {
        let mut ev = pli("BYTES", "B", i);
        ev.detail.xml.push_str(&format!("<pad>{}</pad>", "z".repeat(4000)));
        flood.send(&ev).await;
    }
    let mut seen = 0;
    while seen < n && t.elapsed() < Duration::from_secs(15) {
        if rx.recv(Duration::from_millis(500)).await.is_some() {
            seen += 1;
        }
    }
    let took = t.elapsed();
    assert_eq!(seen, n, "nothing read is dropped");
    assert!(took >= Duration::from_millis(1800), "240 KB at 60 KB/s took only {took:?}");
    assert!(gw.counters("c").unwrap().snapshot().throttled >= 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_disconnected_by_the_write_timeout() {
    // A deep queue, so it is the write timeout (not the queue) that acts.
    let gw = gateway(&tcp_link("c", "queue_depth = 100000\nwrite_timeout_secs = 1\nnegotiate = false")).await;
    let addr = gw.local_addr("c").unwrap();
    let stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut fast = Client::tcp(addr).await;
    let mut sender = Client::tcp(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = 2500u32;
    // (the reader keeps its connection until the end: it is one of the two peers left)
    let reader = tokio::spawn(async move { (fast.drain(Duration::from_secs(3)).await.len(), fast) });
    for i in 0..n {
        let mut ev = pli("W", "W", i);
        ev.detail.xml.push_str(&format!("<pad>{}</pad>", "w".repeat(8000)));
        sender.send(&ev).await;
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let (got, _fast) = reader.await.unwrap();
    assert_eq!(got, n as usize, "the reading client gets everything");
    assert_eq!(common::peers_settle_at(&gw, 2).await, 2, "the stalled peer was disconnected");
    let c = gw.counters("c").unwrap().snapshot();
    assert_eq!((c.slow_consumers, c.drops_queue_full), (1, 0), "{c:?}");
    let metrics = takgate::admin::metrics::render(&gw.control()).await;
    assert!(metrics.contains("takgate_disconnects_total{link=\"c\",transport=\"tcp\",reason=\"slow_consumer\"} 1"), "{metrics}");
    drop(stalled);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_frames_that_stall_harm_no_one_and_time_out() {
    let gw = gateway(&tcp_link("c", "idle_timeout_secs = 1.5\nnegotiate = false")).await;
    let addr = gw.local_addr("c").unwrap();
    // Half an XML event, and half a protobuf frame (length 300, 10 bytes sent), then silence.
    let mut half_xml = tokio::net::TcpStream::connect(addr).await.unwrap();
    half_xml.write_all(b"<?xml version=\"1.0\"?><event version=\"2.0\" uid=\"HALF\" type=\"a-f-G\" how=\"m-g\" time=\"2024-01-01T00:00:00Z\" start=\"2024-01-01T00:00:00Z\" stale=\"2030-01-01T00:00:00Z\"><point lat=\"1\"").await.unwrap();
    let mut half_pb = tokio::net::TcpStream::connect(addr).await.unwrap();
    half_pb.write_all(&[0xbf, 0xac, 0x02, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).await.unwrap();
    let mut a = Client::tcp(addr).await;
    let mut b = Client::tcp(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Everyone else goes on, at once.
    for i in 0..20 {
        a.send(&pli("A", "A", i)).await;
        assert_eq!(b.recv(Duration::from_millis(500)).await.and_then(|e| seq_of(&e)), Some(i));
        b.send(&pli("B", "B", i)).await;
        assert_eq!(a.recv(Duration::from_millis(500)).await.and_then(|e| seq_of(&e)), Some(i));
    }
    // The stalled ones are closed by the idle timeout (a and b keep talking meanwhile).
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    let mut closed = 0;
    for s in [&mut half_xml, &mut half_pb] {
        loop {
            a.send(&control::ping("a", CotTime::now())).await;
            b.send(&control::ping("b", CotTime::now())).await;
            match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                _ if t.elapsed() > Duration::from_secs(5) => break,
                _ => {}
            }
        }
    }
    assert_eq!(closed, 2, "both half-frame senders closed");
    let c = gw.counters("c").unwrap().snapshot();
    assert_eq!(c.idle_timeouts, 2, "{c:?}");
    // (a closed connection leaves the router a moment after its socket closes)
    assert_eq!(common::peers_settle_at(&gw, 2).await, 2, "a and b are still connected");
    gw.shutdown().await;
}

/// TLS clients that try `cert` against the listener at `port`; the result does not matter.
fn try_tls(port: u16, ca: &Path, cert: &Path, key: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(3), tls_client(format!("127.0.0.1:{port}").parse().unwrap(), ca, cert, key)).await;
    });
}

#[test]
fn logs_explain_refused_certificates_and_hold_no_secret() {
    let dir = tmp("secrets");
    let ca = Authority::new(&dir, "secrets CA").unwrap();
    let (sc, sk) = ca.issue(Kind::Server, "localhost", &["localhost", "127.0.0.1"], 30).unwrap();
    let (rc, rk) = ca.issue(Kind::Client, "revoked-user", &[], 30).unwrap();
    let crl = ca.revoke(&rc, 30).unwrap();
    let mut pki = common::certs::Pki::new("secrets-expired");
    let (ec, ek) = pki.leaf_expired("expired-user");
    let token = "Tok3n-admin-s3cret-0123456789";
    let amqp_password = "Hunter2-amqp-s3cret";
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (admin, tls, tls2) = (free(), free(), free());
    let cfg = dir.join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\nid = \"secrets\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\ntoken = \"{token}\"\n\
             [[link]]\nname = \"t\"\ntransport = \"tls\"\nmode = \"listen\"\naddress = \"127.0.0.1:{tls}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ncrl = [\"{}\"]\n\
             [[link]]\nname = \"t2\"\ntransport = \"tls\"\nmode = \"listen\"\naddress = \"127.0.0.1:{tls2}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
             [[link]]\nname = \"bus\"\ntransport = \"amqp\"\naddress = \"amqp://takgate:{amqp_password}@127.0.0.1:5672/%2f\"\namqp_mode = \"cluster\"\nreconnect_max_secs = 1\n",
            ca.ca.display(),
            sc.display(),
            sk.display(),
            crl.display(),
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_takgate")).args(["run", "--config"]).arg(&cfg).env("RUST_LOG", "debug").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let base = format!("http://127.0.0.1:{admin}");
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl").args(["-s", "-m", "5"]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut up = false;
    for _ in 0..100 {
        if curl(&[&format!("{base}/api/health")]).contains("ok") {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "admin API up");
    let key_pem = std::fs::read_to_string(&sk).unwrap();
    let auth = format!("Authorization: Bearer {token}");
    let mut responses = String::new();
    // A wrong token (which must not be echoed), then real calls, one of which stores a key.
    responses += &curl(&["-H", "Authorization: Bearer wrong-token-wrong-token", &format!("{base}/api/status")]);
    let body = serde_json::json!({"name": "fedx", "address": "127.0.0.1", "port": 9, "protocol_version": "v2", "ca_certificate": std::fs::read_to_string(&ca.ca).unwrap(), "client_certificate": std::fs::read_to_string(&sc).unwrap(), "client_key": key_pem});
    responses += &curl(&["-H", &auth, "-H", "Content-Type: application/json", "-d", &body.to_string(), &format!("{base}/api/federation/servers")]);
    for path in ["/api/status", "/api/federation/servers", "/api/links", "/metrics", "/api/openapi.json"] {
        responses += &curl(&["-H", &auth, &format!("{base}{path}")]);
    }
    assert!(responses.contains("fedx"), "the server was stored: {responses}");
    // A revoked and an expired client certificate.
    try_tls(tls, &ca.ca, &rc, &rk);
    try_tls(tls2, &pki.ca, &ec, &ek);
    // Let the AMQP link fail to log in a few times.
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let logs = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(logs.contains("broker"), "the AMQP link logged its failures: {logs}");
    assert!(logs.contains("client certificate is revoked"), "{logs}");
    assert!(logs.contains("client certificate expired"), "{logs}");
    let key_body: String = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for (what, haystack) in [("logs", &logs), ("API responses", &responses)] {
        for secret in [token, amqp_password, "PRIVATE KEY", &key_body[..40], "wrong-token-wrong-token"] {
            assert!(!haystack.contains(secret), "{secret:?} appears in the {what}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_does_not_stop_the_accept_loop() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tmp("nofile");
    let cfg = dir.join("gw.toml");
    std::fs::write(&cfg, format!("[node]\nid = \"nofile\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:{port}\"\n")).unwrap();
    let log = std::fs::File::create(dir.join("gw.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_takgate")).args(["run", "--config"]).arg(&cfg).env("RUST_LOG", "warn").stderr(log).spawn().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(common::listening(addr, 5.0).await);
    // Leave the gateway a few descriptors more than it uses now.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", child.id())).unwrap().count();
    let limit = fds + 8;
    let st = Command::new("prlimit").args(["--pid", &child.id().to_string(), &format!("--nofile={limit}:{limit}")]).status().unwrap();
    assert!(st.success(), "prlimit");
    // Far more connections than descriptors: the kernel completes them, accept fails (EMFILE).
    let mut held = Vec::new();
    for _ in 0..40 {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(held);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Descriptors are back: the accept loop is still running and relays again.
    let mut a = Client::tcp(addr).await;
    let mut b = Client::tcp(addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send(&pli("FD-A", "A", 1)).await;
    assert_eq!(b.recv(Duration::from_secs(3)).await.and_then(|e| seq_of(&e)), Some(1), "the gateway accepts and relays after running out of descriptors");
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(dir.join("gw.log")).unwrap();
    assert!(logs.contains("accept failed"), "the failure is logged: {logs}");
    let _ = std::fs::remove_dir_all(dir);
}
