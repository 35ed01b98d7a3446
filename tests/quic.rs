//! QUIC (`transport = "quic"`, TAK's ALPN `takstream`) against an independent QUIC stack:
//! aioquic (tests/py/quic_client.py, written from ../shared/specs/tak-quic.md as ATAK 5.5
//! behaves) with client certificates from `takgate certs`, exchanging CoT with pytak TCP
//! clients through takgate, in XML and then in negotiated TAK protocol v1; refusals
//! (ALPN, no certificate, unknown CA, revoked) each with their log line; a FIN that does not
//! end the session; takgate connecting to a QUIC input; `takgate quic test`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::py::{args, peer, run_script, PeerRun};
use common::{gateway, pli, seq_of, Client};

fn certs(a: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_takgate")).arg("certs").args(a).output().unwrap();
    assert!(out.status.success(), "takgate certs {a:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA with a server certificate for localhost and client certificates, all made by the
/// binary as an operator would.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(tag: &str, clients: &[&str]) -> Pki {
        let dir = std::env::temp_dir().join(format!("takgate-quic-{tag}-{}-{}", std::process::id(), fastrand::u64(..)));
        let d = dir.display().to_string();
        certs(&["ca", "--dir", &d, "--cn", &format!("{tag} CA")]);
        certs(&["server", "--dir", &d, "--cn", "localhost", "--san", "localhost,127.0.0.1"]);
        for c in clients {
            certs(&["client", "--dir", &d, "--cn", c]);
        }
        Pki { dir }
    }
    fn p(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
    /// The client's certificate and key arguments for quic_client.py.
    fn client_args(&self, cn: &str) -> String {
        format!("--ca {} --cert {} --key {}", self.p("ca.pem"), self.p(&format!("{cn}.pem")), self.p(&format!("{cn}.key")))
    }
    fn quic_listener(&self, extra: &str) -> String {
        format!(
            "[[link]]\nname = \"quic\"\ntransport = \"quic\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n{extra}\n",
            self.p("localhost.pem"),
            self.p("localhost.key"),
            self.p("ca.pem")
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const TCP: &str = "[[link]]\nname = \"tcp\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n";

fn quic_client(a: String, limit: f64) -> impl std::future::Future<Output = PeerRun> {
    run_script("quic_client.py", args(&a), limit)
}

fn seqs(run: &PeerRun, uid: &str, format: &str) -> Vec<u32> {
    run.events.iter().filter(|e| e["uid"] == uid && e["format"] == format).filter_map(|e| e["remarks"].as_str()?.strip_prefix("seq=")?.parse().ok()).collect()
}

async fn peers_attached(gw: &takgate::runtime::Gateway, want: usize, secs: f64) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    while tokio::time::Instant::now() < end {
        if gw.router().stats().await.len() >= want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// One round: a pytak TCP client and the aioquic client each send three position reports
/// once both are attached, and each must receive the other's, in the expected formats.
async fn round(gw: &takgate::runtime::Gateway, pki: &Pki, tag: &str, proto: bool) {
    let go = pki.dir.join(format!("go-{tag}"));
    let tcp_url = format!("tcp://{}", gw.local_addr("tcp").unwrap());
    let quic_port = gw.local_addr("quic").unwrap().port();
    let before = gw.router().stats().await.len();
    let (p, q) = (if proto { " --proto" } else { "" }, if proto { " --proto" } else { "" });
    let pytak = tokio::spawn(peer(args(&format!("--url {tcp_url} --uid PYTAK-{tag} --callsign P{tag} --send 3 --interval 0.1 --listen 3 --go-file {}{p}", go.display())), 40.0));
    let aioquic = tokio::spawn(quic_client(format!("--port {quic_port} {} --uid QUIC-{tag} --callsign Q{tag} --send 3 --interval 0.1 --listen 3 --expect-from PYTAK-{tag} --expect 3 --go-file {}{q}", pki.client_args("alice"), go.display()), 40.0));
    assert!(peers_attached(gw, before + 2, 20.0).await, "both clients attach");
    // The QUIC client negotiates before it waits for the go file; give the TCP one a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&go, b"go").unwrap();
    let (pytak, aioquic) = (pytak.await.unwrap(), aioquic.await.unwrap());
    assert_eq!(aioquic.status, Some(0), "aioquic: {:?} {}", aioquic.done, aioquic.stderr);
    let format = if proto { "proto" } else { "xml" };
    assert_eq!(seqs(&aioquic, &format!("PYTAK-{tag}"), format), [1, 2, 3], "the QUIC client got the TCP client's reports ({format}): {:?}", aioquic.events);
    assert_eq!(pytak.seqs_from(&format!("QUIC-{tag}")), [1, 2, 3], "the TCP client got the QUIC client's reports: {:?} {}", pytak.events, pytak.stderr);
    assert_eq!(aioquic.done.as_ref().map(|d| d["proto"].clone()), Some(serde_json::json!(proto)), "{:?}", aioquic.done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_and_pytak_exchange_xml_then_negotiated_protobuf_through_quic() {
    let pki = Pki::new("x", &["alice"]);
    let gw = gateway(&format!("{TCP}{}", pki.quic_listener(""))).await;
    round(&gw, &pki, "xml", false).await;
    round(&gw, &pki, "pb", true).await;
    let c = gw.counters("quic").unwrap().snapshot();
    assert_eq!(c.negotiated_proto, 1, "{c:?}");
    assert!(c.events_in >= 6 && c.events_out >= 6, "{c:?}");
    // Both QUIC sessions ended when their connections closed.
    assert!(common::eventually(5.0, || gw.links().iter().any(|l| l.name == "quic")).await);
    assert_eq!(common::peers_settle_at(&gw, 0).await, 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fin_does_not_end_the_session_a_closed_connection_does() {
    let pki = Pki::new("fin", &["alice"]);
    let gw = gateway(&format!("{TCP}{}", pki.quic_listener(""))).await;
    let mut local = Client::tcp(gw.local_addr("tcp").unwrap()).await;
    let port = gw.local_addr("quic").unwrap().port();
    // The QUIC client sends one report, finishes its side of the stream, and keeps reading.
    let q = tokio::spawn(quic_client(format!("--port {port} {} --uid QUIC-F --send 1 --fin --listen 8 --expect-from TCP-F --expect 2", pki.client_args("alice")), 30.0));
    let first = local.recv(Duration::from_secs(15)).await.expect("the QUIC client's report");
    assert_eq!((first.uid.as_str(), seq_of(&first)), ("QUIC-F", Some(1)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.router().stats().await.len(), 2, "after its FIN the QUIC client is still attached");
    local.send(&pli("TCP-F", "T", 1)).await;
    local.send(&pli("TCP-F", "T", 2)).await;
    let run = q.await.unwrap();
    assert_eq!(seqs(&run, "TCP-F", "xml"), [1, 2], "written to after its FIN: {:?} {}", run.events, run.stderr);
    // The client closed its connection: the session ends and its contact departs.
    assert_eq!(common::peers_settle_at(&gw, 1).await, 1);
    let departed = local.drain(Duration::from_secs(2)).await;
    assert!(departed.iter().any(|e| e.cot_type == "t-x-d-d"), "{departed:?}");
    gw.shutdown().await;
}

/// Log lines, for checking what an operator reads.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn install() -> Logs {
        let logs = Logs::default();
        let w = logs.clone();
        tracing_subscriber::fmt().with_env_filter("warn,takgate=info").with_ansi(false).with_writer(move || w.clone()).init();
        logs
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_wrong_alpn_no_certificate_unknown_ca_revoked_each_say_why() {
    let logs = Logs::install();
    let pki = Pki::new("refuse", &["alice", "mallory"]);
    let stranger = Pki::new("stranger", &["eve"]);
    let out = Command::new(env!("CARGO_BIN_EXE_takgate")).args(["certs", "revoke", "--dir", &pki.p(""), &pki.p("mallory.pem")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let gw = gateway(&format!("[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"quic-test-token-0123\"\n{}", pki.quic_listener(&format!("crl = [\"{}\"]", pki.p("crl.pem"))))).await;
    let port = gw.local_addr("quic").unwrap().port();
    let ca = pki.p("ca.pem");
    let cases = [
        ("wrong ALPN", format!("--alpn h3 {}", pki.client_args("alice")), "ALPN \"takstream\""),
        ("no client certificate", format!("--ca {ca}"), "no client certificate presented"),
        ("unknown CA", format!("--ca {ca} --cert {} --key {}", stranger.p("eve.pem"), stranger.p("eve.key")), "does not chain to the CA"),
        ("revoked", pki.client_args("mallory"), "revoked"),
    ];
    for (i, (what, a, says)) in cases.iter().enumerate() {
        let run = quic_client(format!("--port {port} {a} --send 1 --listen 1"), 30.0).await;
        assert_eq!(run.status, Some(2), "{what}: refused: {:?} {}", run.done, run.stderr);
        let ok = common::eventually(5.0, || logs.text().lines().filter(|l| l.contains("QUIC handshake failed")).count() > i).await;
        let text = logs.text();
        let line = text.lines().filter(|l| l.contains("QUIC handshake failed")).nth(i).unwrap_or_default().to_owned();
        assert!(ok && line.contains(says), "{what}: the log says {says:?}: {line:?}\n{text}");
    }
    assert_eq!(gw.counters("quic").unwrap().snapshot().decode_errors, 4);
    // The operator sees them in the metrics and the admin API.
    let metrics = http_get(gw.admin_addr().unwrap(), "/metrics").await;
    assert!(metrics.lines().any(|l| l == "takgate_decode_errors_total{link=\"quic\",transport=\"quic\"} 4"), "{metrics}");
    let links: serde_json::Value = serde_json::from_str(&http_get(gw.admin_addr().unwrap(), "/api/links").await).unwrap();
    let q = links.as_array().into_iter().flatten().chain(links["links"].as_array().into_iter().flatten()).find(|l| l["name"] == "quic").cloned().unwrap_or_default();
    assert_eq!(q["transport"], "quic", "{links:#}");
    // The link keeps working for a good client.
    let run = quic_client(format!("--port {port} {} --send 1 --listen 0.3", pki.client_args("alice")), 30.0).await;
    assert_eq!((run.status, run.done.as_ref().map(|d| d["sent"].clone())), (Some(0), Some(serde_json::json!(1))), "{:?} {}", run.done, run.stderr);
    gw.shutdown().await;
}

/// The body of a GET to the admin API.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer quic-test-token-0123\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut b = Vec::new();
    s.read_to_end(&mut b).await.unwrap();
    let text = String::from_utf8_lossy(&b).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        return out;
    }
    body.to_owned()
}

fn quic_connect(pki: &Pki, target: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[[link]]\nname = \"up\"\ntransport = \"quic\"\nmode = \"connect\"\naddress = \"{target}\"\nserver_name = \"localhost\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\nreconnect_min_secs = 0.2\nreconnect_max_secs = 0.5\n{extra}\n",
        pki.p("gw-b.pem"),
        pki.p("gw-b.key"),
        pki.p("ca.pem")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takgate_connects_to_a_quic_input_negotiates_and_reconnects() {
    let pki = Pki::new("up", &["gw-b", "alice"]);
    let a = gateway(&format!("[node]\nid = \"node-a\"\n{TCP}{}", pki.quic_listener(""))).await;
    let target = a.local_addr("quic").unwrap();
    let b = gateway(&format!("[node]\nid = \"node-b\"\n{TCP}{}", quic_connect(&pki, target, ""))).await;
    let connected = |g: &takgate::runtime::Gateway| g.connection("up").is_some_and(|c| c.state == takgate::link::LinkState::Connected);
    assert!(common::eventually(10.0, || connected(&b)).await, "{:?}", b.connection("up"));
    // The outgoing side asks for TAK protocol v1 when offered (as ATAK does).
    assert!(common::eventually(5.0, || a.counters("quic").unwrap().snapshot().negotiated_proto == 1).await);
    let mut ca = Client::tcp(a.local_addr("tcp").unwrap()).await;
    let mut cb = Client::tcp(b.local_addr("tcp").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ca.send(&pli("ALPHA", "A", 1)).await;
    cb.send(&pli("BRAVO", "B", 1)).await;
    let at_b: Vec<_> = cb.drain(Duration::from_secs(2)).await.into_iter().filter(|e| e.uid == "ALPHA").collect();
    let at_a: Vec<_> = ca.drain(Duration::from_secs(1)).await.into_iter().filter(|e| e.uid == "BRAVO").collect();
    assert_eq!((at_b.len(), at_a.len()), (1, 1), "both ways over QUIC");
    // The input goes away and comes back on the same port: the link reconnects.
    let cfg = a.control().cfg.links.iter().find(|l| l.name == "quic").unwrap().clone();
    assert!(a.control().remove_link("quic"));
    assert!(common::eventually(10.0, || !connected(&b)).await, "the connection ends with the input");
    let mut again = cfg.clone();
    if let takgate::config::LinkKind::Quic(s, _) = &mut again.kind {
        if let takgate::config::Role::Listen { address, .. } = &mut s.role {
            *address = target;
        }
    }
    a.control().add_link(&again).await.unwrap();
    assert!(common::eventually(15.0, || connected(&b)).await, "reconnected: {:?}", b.connection("up"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    ca.send(&pli("ALPHA", "A", 2)).await;
    let at_b: Vec<_> = cb.drain(Duration::from_secs(2)).await.into_iter().filter(|e| e.uid == "ALPHA").filter_map(|e| seq_of(&e)).collect();
    assert_eq!(at_b, [2]);
    b.shutdown().await;
    a.shutdown().await;
}

fn quic_test(args: &[&str]) -> (bool, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_takgate")).args(["quic", "test", "--json"]).args(args).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_test_reports_each_stage() {
    let pki = Pki::new("probe", &["alice"]);
    let stranger = Pki::new("probe-stranger", &["eve"]);
    let gw = gateway(&pki.quic_listener("")).await;
    let addr = gw.local_addr("quic").unwrap().to_string();
    let (ok, v) = quic_test(&[&addr, "--ca", &pki.p("ca.pem"), "--cert", &pki.p("alice.pem"), "--key", &pki.p("alice.key"), "--server-name", "localhost"]);
    let names: Vec<_> = v.as_array().unwrap().iter().map(|s| (s["name"].as_str().unwrap().to_owned(), s["ok"].as_bool().unwrap())).collect();
    assert!(ok, "{v:#}");
    for stage in ["certificates", "resolve", "quic handshake", "alpn", "peer identity", "stream", "negotiation", "ping"] {
        assert!(names.contains(&(stage.to_owned(), true)), "{stage}: {v:#}");
    }
    // A certificate from another CA: the handshake stage fails and says why.
    let (ok, v) = quic_test(&[&addr, "--ca", &pki.p("ca.pem"), "--cert", &stranger.p("eve.pem"), "--key", &stranger.p("eve.key"), "--server-name", "localhost"]);
    let last = v.as_array().unwrap().last().unwrap().clone();
    assert!(!ok && last["name"] == "quic handshake" && !last["ok"].as_bool().unwrap(), "{v:#}");
    assert!(last["detail"].as_str().unwrap().contains("does not chain") || last["detail"].as_str().unwrap().contains("unknown CA"), "{last}");
    // Nothing listening: the handshake times out with a hint.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = udp.local_addr().unwrap().to_string();
    let (ok, v) = quic_test(&[&silent, "--ca", &pki.p("ca.pem"), "--cert", &pki.p("alice.pem"), "--key", &pki.p("alice.key"), "--server-name", "localhost", "--timeout", "2"]);
    let last = v.as_array().unwrap().last().unwrap().clone();
    assert!(!ok && last["name"] == "quic handshake" && last["detail"].as_str().unwrap().contains("UDP"), "{v:#}");
    gw.shutdown().await;
}

#[test]
fn quic_links_refuse_what_tak_quic_cannot_do() {
    let f = std::env::current_exe().unwrap().display().to_string();
    let parse = |extra: &str| takgate::config::Config::parse(&format!("[[link]]\nname = \"q\"\ntransport = \"quic\"\n{extra}\n")).map(|_| ()).map_err(|e| e.to_string());
    let e = parse(&format!("mode = \"listen\"\naddress = \"0.0.0.0:8090\"\ncert = \"{f}\"\nkey = \"{f}\"\n")).unwrap_err();
    assert!(e.contains("needs the CA"), "{e}");
    let e = parse(&format!("mode = \"listen\"\naddress = \"0.0.0.0:8090\"\ncert = \"{f}\"\nkey = \"{f}\"\nca = \"{f}\"\nrequire_client_cert = false\n")).unwrap_err();
    assert!(e.contains("always requires client certificates"), "{e}");
    let e = parse(&format!("mode = \"connect\"\naddress = \"tak.example:8090\"\nca = \"{f}\"\n")).unwrap_err();
    assert!(e.contains("presents a client certificate"), "{e}");
    let e = parse(&format!("mode = \"connect\"\naddress = \"tak.example:8090\"\nca = \"{f}\"\ncert = \"{f}\"\nkey = \"{f}\"\nmax_connections = 4\n")).unwrap_err();
    assert!(e.contains("quic and federation listeners"), "{e}");
    assert!(parse(&format!("mode = \"connect\"\naddress = \"tak.example:8090\"\nca = \"{f}\"\ncert = \"{f}\"\nkey = \"{f}\"\nquic_idle_timeout_secs = 100\n")).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_clients_over_quic_count_every_delivery() {
    let pki = Pki::new("bench", &["bench"]);
    let gw = gateway(&pki.quic_listener("")).await;
    let addr = gw.local_addr("quic").unwrap();
    for proto in [false, true] {
        let target = takgate::bench::Target { target: addr.to_string(), ca: Some(pki.p("ca.pem").into()), cert: Some(pki.p("bench.pem").into()), key: Some(pki.p("bench.key").into()), server_name: Some("localhost".into()), proto, quic: true, allow_remote: false, json: false };
        let s = takgate::bench::clients(takgate::bench::ClientsArgs { target, clients: 20, rate: 5.0, duration: 2.0, ramp: 0.5, pad: 0 }).await.unwrap();
        assert_eq!((s.connected, s.transport), (20, "quic"), "{s:?}");
        assert!(s.sent_in_window >= 160, "{s:?}");
        assert_eq!(s.delivered, s.expected_deliveries, "{s:?}");
        assert_eq!((s.pongs, s.disconnects), (20, 0), "{s:?}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_refuse_at_once_and_are_counted() {
    let pki = Pki::new("limits", &["alice", "bob", "carol"]);
    let gw = gateway(&pki.quic_listener("max_connections = 2\nmax_connections_per_identity = 1\n")).await;
    let port = gw.local_addr("quic").unwrap().port();
    let hold = |cn: &str| tokio::spawn(quic_client(format!("--port {port} {} --uid HOLD-{cn} --send 1 --listen 6", pki.client_args(cn)), 30.0));
    let alice = hold("alice");
    assert!(peers_attached(&gw, 1, 15.0).await);
    // The same certificate again: refused after the handshake, by identity.
    let again = quic_client(format!("--port {port} {} --uid ALICE-2 --send 1 --listen 1", pki.client_args("alice")), 30.0).await;
    assert_eq!(again.status, Some(2), "a second connection with alice's certificate: {:?}", again.done);
    let bob = hold("bob");
    assert!(peers_attached(&gw, 2, 15.0).await);
    // A third connection: over max_connections, refused before any handshake.
    let carol = quic_client(format!("--port {port} {} --uid CAROL --send 1 --listen 1", pki.client_args("carol")), 30.0).await;
    assert_eq!(carol.status, Some(2), "over max_connections: {:?}", carol.done);
    assert_eq!(gw.counters("quic").unwrap().snapshot().refused, 2);
    let (alice, bob) = (alice.await.unwrap(), bob.await.unwrap());
    assert_eq!((alice.status, bob.status), (Some(0), Some(0)), "the connections within the limits are not disturbed: {:?} {:?}", alice.done, bob.done);
    gw.shutdown().await;
}
