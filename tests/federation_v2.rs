//! Federation v2 conformance: takgate's v2 server driven with exactly TAK Server's client
//! sequence and timings (../shared/specs/tak-federation.md §3.3–3.4), takgate's v2 client
//! against a mock with TAK Server's server behaviour, the failure rules (no version, no
//! health check for 15 s, duplicate connection, NOT_CONNECTED, DEADLINE_EXCEEDED), an
//! independent Python grpcio client, and refused certificates.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::certs::Pki;
use common::{gateway, pli, seq_of, Client};
use takgate::federation::fig::federated_channel_server::{FederatedChannel, FederatedChannelServer};
use takgate::federation::fig::*;
use takgate::federation::v2;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::codegen::tokio_stream::Stream;
use tonic::{Code, Request, Response, Status, Streaming};

const SERVING: i32 = server_health::ServingStatus::Serving as i32;
const NOT_CONNECTED: i32 = server_health::ServingStatus::NotConnected as i32;

fn v2_listen(id: &str, pki: &Pki, extra: &str) -> String {
    pki.fed_listener(id, "federation-v2", "127.0.0.1:0", extra)
}

fn v2_connect(id: &str, ca: &Path, cert: &Path, key: &Path, to: SocketAddr, extra: &str) -> String {
    format!(
        "[node]\nid = \"{id}\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"connect\"\naddress = \"{to}\"\nserver_name = \"localhost\"\nreconnect_min_secs = 0.2\nreconnect_max_secs = 0.5\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// A raw v2 client on its own TLS + HTTP/2 connection, presenting `cert`.
/// The connection of a raw client: dropped, it closes.
struct RawConn(#[allow(dead_code)] tokio::task::JoinSet<()>, CancellationToken);

impl Drop for RawConn {
    fn drop(&mut self) {
        self.1.cancel();
    }
}

async fn raw(addr: SocketAddr, ca: &Path, cert: &Path, key: &Path) -> (v2::Client, RawConn) {
    let mut cc = takgate::link::tls::client_config(ca, Some((cert, key))).unwrap();
    cc.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cc)).connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let tok = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let c = v2::h2_client(Box::new(tls), &format!("localhost:{}", addr.port()), 64 << 20, &tok, &mut tasks).await.unwrap();
    (c, RawConn(tasks, tok))
}

fn sub(name: &str, version: bool) -> Subscription {
    Subscription {
        identity: Some(Identity { name: name.into(), uid: "00112233445566778899aabbccddeeff".into(), server_id: format!("{name}-id"), r#type: identity::ConnectionType::FederationTakClient as i32, ..Default::default() }),
        filter: String::new(),
        version: version.then(|| TakServerVersion { major: 5, minor: 4, patch: 0, ..Default::default() }),
    }
}

fn health() -> ClientHealth {
    ClientHealth { status: client_health::ServingStatus::Serving as i32 }
}

fn rx_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

fn geo(uid: &str, callsign: &str, seq: u32) -> FederatedEvent {
    let now = takgate::cot::CotTime::now().0;
    FederatedEvent {
        event: Some(GeoEvent {
            send_time: now,
            start_time: now,
            stale_time: now + 60_000,
            lat: 1.5,
            lon: 2.5,
            uid: uid.into(),
            r#type: "a-f-G-U-C".into(),
            coord_source: "m-g".into(),
            other: format!("<detail><contact callsign=\"{callsign}\"/><remarks>seq={seq}</remarks></detail>"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn msg<T>(s: &mut Streaming<T>, wait: Duration) -> Option<Result<T, Status>> {
    match tokio::time::timeout(wait, s.message()).await {
        Ok(Ok(Some(m))) => Some(Ok(m)),
        Ok(Ok(None)) => None,
        Ok(Err(st)) => Some(Err(st)),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_follows_tak_servers_sequence_and_health_timeout() {
    let mut pki = Pki::new("v2srv");
    let a = gateway(&v2_listen("node-a", &pki, "")).await;
    let addr = a.local_addr("fed").unwrap();
    let mut alpha = Client::tcp(a.local_addr("c").unwrap()).await;
    alpha.send(&pli("ANDROID-ALPHA", "ALPHA", 1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (cert, key) = pki.leaf("tak-peer", false);
    let (mut c, _tok) = raw(addr, &pki.ca, &cert, &key).await;
    let t0 = Instant::now();

    // 1. ServerFederateGroupsStream is TAK's first call; SERVING must come first on it.
    let mut groups = c.server_federate_groups_stream(sub("tak-peer", false)).await.unwrap().into_inner();
    let first = msg(&mut groups, Duration::from_secs(1)).await.expect("groups stream message").unwrap();
    assert_eq!(first.stream_update.map(|u| u.status), Some(SERVING));
    // A health check before ClientEventStream: NOT_CONNECTED.
    assert_eq!(c.health_check(health()).await.unwrap().into_inner().status, NOT_CONNECTED);
    // ClientFederateGroupsStream: the Subscription reply comes at once, the call stays open.
    let (_gtx, grx) = mpsc::channel::<FederateGroups>(1);
    let mut greply = c.client_federate_groups_stream(rx_stream(grx)).await.unwrap().into_inner();
    assert!(matches!(msg(&mut greply, Duration::from_secs(1)).await, Some(Ok(_))), "Subscription at once");
    // 2. ClientEventStream with a version: the contact snapshot and latest SA.
    let mut evs = c.client_event_stream(sub("tak-peer", true)).await.unwrap().into_inner();
    let mut snap = vec![];
    while let Some(Ok(fe)) = msg(&mut evs, Duration::from_millis(800)).await {
        snap.push(fe);
    }
    let contact = snap.iter().find_map(|f| f.contact.clone()).expect("contact snapshot");
    assert_eq!((contact.operation, contact.uid.as_str(), contact.callsign.as_str()), (Crud::Create as i32, "ANDROID-ALPHA", "ALPHA"));
    let pli_ev = snap.iter().find(|f| f.event.as_ref().is_some_and(|e| e.uid == "ANDROID-ALPHA")).expect("latest SA in snapshot");
    assert_eq!(pli_ev.federate_provenance.iter().map(|p| p.federation_server_id.as_str()).collect::<Vec<_>>(), ["node-a"]);
    assert_eq!(pli_ev.federate_hops.as_ref().map(|h| h.current_hops), Some(1));
    // 3. Health every 3 s, the first after 3 s: SERVING.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(t0.elapsed())).await;
    assert_eq!(c.health_check(health()).await.unwrap().into_inner().status, SERVING);
    // 4. ServerROLStream: Subscription at once.
    let (_rtx, rrx) = mpsc::channel::<Rol>(1);
    let mut rreply = c.server_rol_stream(rx_stream(rrx)).await.unwrap().into_inner();
    assert!(matches!(msg(&mut rreply, Duration::from_secs(1)).await, Some(Ok(_))));
    // 5. ServerEventStream (after SERVING): Subscription at once; what we send reaches ALPHA.
    let (etx, erx) = mpsc::channel::<FederatedEvent>(16);
    let mut ereply = c.server_event_stream(rx_stream(erx)).await.unwrap().into_inner();
    assert!(matches!(msg(&mut ereply, Duration::from_secs(1)).await, Some(Ok(_))), "Subscription at once on ServerEventStream");
    etx.send(FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Create as i32, uid: "TAK-USER".into(), callsign: "TAKUSER".into(), ..Default::default() }), ..Default::default() }).await.unwrap();
    etx.send(geo("TAK-USER", "TAKUSER", 7)).await.unwrap();
    let got: Vec<_> = alpha.drain(Duration::from_millis(800)).await.iter().filter(|e| e.uid == "TAK-USER").filter_map(seq_of).collect();
    assert_eq!(got, [7]);
    // 6. ClientROLStream after the first SERVING health reply: it opens and stays open.
    let mut rol_in = c.client_rol_stream(sub("tak-peer", false)).await.unwrap().into_inner();
    // Health every 3 s keeps the session: live traffic still flows 9 s later.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(c.health_check(health()).await.unwrap().into_inner().status, SERVING);
    }
    alpha.send(&pli("ANDROID-ALPHA", "ALPHA", 2)).await;
    let live = msg(&mut evs, Duration::from_secs(2)).await.expect("live event").unwrap();
    assert_eq!(live.event.map(|e| e.uid), Some("ANDROID-ALPHA".into()));
    // No health check for 15 s: both outbound streams end with DEADLINE_EXCEEDED (checked
    // every 5 s, so within 15–21 s), then the connection closes.
    let last_health = Instant::now();
    let end = loop {
        match msg(&mut evs, Duration::from_secs(25)).await {
            Some(Ok(_)) => continue,
            other => break other,
        }
    };
    let after = last_health.elapsed();
    assert_eq!(end.and_then(|r| r.err()).map(|s| s.code()), Some(Code::DeadlineExceeded));
    // (the server's clock started at its own receipt of the last check, a moment before ours)
    assert!(after >= Duration::from_millis(14_500) && after <= Duration::from_secs(21), "closed after {after:?}");
    assert_eq!(msg(&mut rol_in, Duration::from_secs(2)).await.and_then(|r| r.err()).map(|s| s.code()), Some(Code::DeadlineExceeded));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(c.health_check(health()).await.is_err(), "the connection is closed after the streams");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_failure_rules_name_version_duplicate() {
    let mut pki = Pki::new("v2rules");
    let a = gateway(&v2_listen("node-a", &pki, "")).await;
    let addr = a.local_addr("fed").unwrap();
    let (cert, key) = pki.leaf("tak-peer", false);
    let (mut c, _t1) = raw(addr, &pki.ca, &cert, &key).await;
    // A Subscription without identity name is refused.
    let e = c.client_event_stream(sub("", true)).await.err().expect("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c.server_federate_groups_stream(sub("", false)).await.err().expect("refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    // Without a version TAK Server would leave every health check pending; takgate answers
    // (and logs a warning naming the federate).
    let mut evs = c.client_event_stream(sub("tak-peer", false)).await.unwrap().into_inner();
    let h = tokio::time::timeout(Duration::from_secs(2), c.health_check(health())).await.expect("answered").unwrap();
    assert_eq!(h.into_inner().status, SERVING);
    let (_etx, erx) = mpsc::channel::<FederatedEvent>(1);
    let mut first = c.server_event_stream(rx_stream(erx)).await.unwrap().into_inner();
    assert!(matches!(msg(&mut first, Duration::from_secs(1)).await, Some(Ok(_))));
    // The same federate (same certificate) on a second connection: a duplicate, refused.
    let (mut dup, _t2) = raw(addr, &pki.ca, &cert, &key).await;
    let (_dtx, drx) = mpsc::channel::<FederatedEvent>(1);
    let e = dup.server_event_stream(rx_stream(drx)).await.err().expect("duplicate refused");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("already has an active connection"), "{}", e.message());
    // The first connection is unaffected.
    assert_eq!(c.health_check(health()).await.unwrap().into_inner().status, SERVING);
    assert!(msg(&mut evs, Duration::from_millis(300)).await.is_none(), "event stream still open");
    // Another federate (another certificate) is welcome.
    let (cert2, key2) = pki.leaf("other-peer", false);
    let (mut other, _t3) = raw(addr, &pki.ca, &cert2, &key2).await;
    let (_otx, orx) = mpsc::channel::<FederatedEvent>(1);
    assert!(other.server_event_stream(rx_stream(orx)).await.is_ok());
    a.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// A mock with TAK Server's v2 server behaviour, for takgate's client.

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// As TAK Server.
    Tak,
    /// Health checks answer NOT_CONNECTED.
    NotConnected,
    /// ClientEventStream ends with DEADLINE_EXCEEDED after a second.
    Deadline,
}

#[derive(Default)]
struct Log {
    /// (rpc, when, connection)
    calls: Vec<(&'static str, Instant, u64)>,
    version_major: Vec<i64>,
    received: Vec<FederatedEvent>,
    connections: u64,
}

struct Mock {
    log: Arc<Mutex<Log>>,
    conn: u64,
    mode: Mode,
    subscribed: AtomicBool,
    versioned: AtomicBool,
    hold: CancellationToken,
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn hold<T: Send + 'static>(items: Vec<Result<T, Status>>, until: CancellationToken) -> Out<T> {
    Box::pin(futures_util::stream::unfold((std::collections::VecDeque::from(items), until), |(mut q, until)| async move {
        if let Some(x) = q.pop_front() {
            return Some((x, (q, until)));
        }
        until.cancelled().await;
        None
    }))
}

impl Mock {
    fn record(&self, rpc: &'static str) {
        self.log.lock().unwrap().calls.push((rpc, Instant::now(), self.conn));
    }
    fn reply(&self) -> Subscription {
        Subscription { identity: Some(Identity { name: self.conn.to_string(), uid: self.conn.to_string(), r#type: identity::ConnectionType::FederationTakServer as i32, server_id: "tak".into(), ..Default::default() }), ..Default::default() }
    }
    fn drain<T: Send + 'static>(&self, mut s: Streaming<T>, keep: impl Fn(T) + Send + 'static) {
        let until = self.hold.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = until.cancelled() => return,
                    m = s.message() => match m { Ok(Some(x)) => keep(x), _ => return },
                }
            }
        });
    }
}

#[tonic::async_trait]
impl FederatedChannel for Mock {
    async fn send_one_event(&self, _r: Request<FederatedEvent>) -> Result<Response<Empty>, Status> {
        self.record("SendOneEvent");
        std::future::pending().await
    }
    type BinaryMessageStreamStream = Out<Empty>;
    async fn binary_message_stream(&self, _r: Request<Streaming<BinaryBlob>>) -> Result<Response<Self::BinaryMessageStreamStream>, Status> {
        self.record("BinaryMessageStream");
        Ok(Response::new(hold(vec![], self.hold.clone())))
    }
    async fn send_one_blob(&self, _r: Request<BinaryBlob>) -> Result<Response<Empty>, Status> {
        self.record("SendOneBlob");
        std::future::pending().await
    }
    async fn get_identity(&self, _r: Request<Empty>) -> Result<Response<Identity>, Status> {
        Err(Status::unimplemented(""))
    }
    type ClientEventStreamStream = Out<FederatedEvent>;
    async fn client_event_stream(&self, r: Request<Subscription>) -> Result<Response<Self::ClientEventStreamStream>, Status> {
        self.record("ClientEventStream");
        let major = r.get_ref().version.as_ref().map(|v| v.major).unwrap_or(0);
        self.log.lock().unwrap().version_major.push(major);
        self.versioned.store(major > 0, Ordering::Relaxed);
        self.subscribed.store(true, Ordering::Relaxed);
        let items = vec![Ok(FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Create as i32, uid: "TAK-USER".into(), callsign: "TAKUSER".into(), ..Default::default() }), ..Default::default() }), Ok(geo("TAK-USER", "TAKUSER", 5))];
        if self.mode == Mode::Deadline {
            let s = futures_util::stream::iter(items).chain(futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Err(Status::deadline_exceeded("no health check"))
            }));
            return Ok(Response::new(Box::pin(s)));
        }
        Ok(Response::new(hold(items, self.hold.clone())))
    }
    type ServerEventStreamStream = Out<Subscription>;
    async fn server_event_stream(&self, r: Request<Streaming<FederatedEvent>>) -> Result<Response<Self::ServerEventStreamStream>, Status> {
        self.record("ServerEventStream");
        let log = self.log.clone();
        self.drain(r.into_inner(), move |fe| log.lock().unwrap().received.push(fe));
        Ok(Response::new(hold(vec![Ok(self.reply())], self.hold.clone())))
    }
    async fn health_check(&self, _r: Request<ClientHealth>) -> Result<Response<ServerHealth>, Status> {
        self.record("HealthCheck");
        if !self.subscribed.load(Ordering::Relaxed) || self.mode == Mode::NotConnected {
            return Ok(Response::new(ServerHealth { status: NOT_CONNECTED }));
        }
        if !self.versioned.load(Ordering::Relaxed) {
            // TAK Server: onCompleted only for subscribers with version.major > 0.
            std::future::pending::<()>().await;
        }
        Ok(Response::new(ServerHealth { status: SERVING }))
    }
    type ClientROLStreamStream = Out<Rol>;
    async fn client_rol_stream(&self, _r: Request<Subscription>) -> Result<Response<Self::ClientROLStreamStream>, Status> {
        self.record("ClientROLStream");
        Ok(Response::new(hold(vec![], self.hold.clone())))
    }
    type ServerROLStreamStream = Out<Subscription>;
    async fn server_rol_stream(&self, r: Request<Streaming<Rol>>) -> Result<Response<Self::ServerROLStreamStream>, Status> {
        self.record("ServerROLStream");
        self.drain(r.into_inner(), |_| {});
        Ok(Response::new(hold(vec![Ok(self.reply())], self.hold.clone())))
    }
    type ServerFederateGroupsStreamStream = Out<FederateGroups>;
    async fn server_federate_groups_stream(&self, _r: Request<Subscription>) -> Result<Response<Self::ServerFederateGroupsStreamStream>, Status> {
        self.record("ServerFederateGroupsStream");
        Ok(Response::new(hold(vec![Ok(FederateGroups { stream_update: Some(ServerHealth { status: SERVING }), ..Default::default() })], self.hold.clone())))
    }
    type ClientFederateGroupsStreamStream = Out<Subscription>;
    async fn client_federate_groups_stream(&self, r: Request<Streaming<FederateGroups>>) -> Result<Response<Self::ClientFederateGroupsStreamStream>, Status> {
        self.record("ClientFederateGroupsStream");
        self.drain(r.into_inner(), |_| {});
        Ok(Response::new(hold(vec![Ok(self.reply())], self.hold.clone())))
    }
    async fn get_auth_token_by_x509(&self, _r: Request<BinaryBlob>) -> Result<Response<FederateTokenResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn getx509_identity(&self, _r: Request<Empty>) -> Result<Response<BinaryBlob>, Status> {
        Err(Status::unimplemented(""))
    }
}

use futures_util::StreamExt;

/// Serves the mock over mutual TLS (ALPN h2), one `Mock` per connection.
async fn mock_tak(pki: &Pki, mode: Mode) -> (SocketAddr, Arc<Mutex<Log>>, CancellationToken) {
    let mut sc = takgate::link::tls::server_config(&pki.server_cert, &pki.server_key, Some(&pki.ca), true).unwrap();
    sc.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(sc));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let stop = CancellationToken::new();
    let (log2, stop2) = (log.clone(), stop.clone());
    let conns = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = stop2.cancelled() => return,
                r = listener.accept() => r.unwrap(),
            };
            let Ok(tls) = acceptor.accept(tcp).await else { continue };
            let n = conns.fetch_add(1, Ordering::Relaxed) + 1;
            log2.lock().unwrap().connections = n;
            let hold = stop2.child_token();
            let mock = Mock { log: log2.clone(), conn: n, mode, subscribed: AtomicBool::new(false), versioned: AtomicBool::new(false), hold: hold.clone() };
            tokio::spawn(async move {
                let svc = FederatedChannelServer::new(mock);
                let fut = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new()).serve_connection(hyper_util::rt::TokioIo::new(tls), hyper_util::service::TowerToHyperService::new(svc));
                tokio::select! {
                    _ = fut => {}
                    _ = hold.cancelled() => {}
                }
                hold.cancel();
            });
        }
    });
    (addr, log, stop)
}

fn first(log: &Log, rpc: &str, conn: u64) -> Option<Instant> {
    log.calls.iter().find(|(r, _, c)| *r == rpc && *c == conn).map(|(_, t, _)| *t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_follows_tak_clients_sequence() {
    let mut pki = Pki::new("v2cli");
    let (addr, log, stop) = mock_tak(&pki, Mode::Tak).await;
    let (cert, key) = pki.leaf("node-b", false);
    let b = gateway(&v2_connect("node-b", &pki.ca, &cert, &key, addr, "")).await;
    let mut bravo = Client::tcp(b.local_addr("c").unwrap()).await;
    bravo.send(&pli("ANDROID-BRAVO", "BRAVO", 1)).await;
    // The mock's user reaches bravo over ClientEventStream.
    let got: Vec<_> = bravo.drain(Duration::from_secs(2)).await.iter().filter(|e| e.uid == "TAK-USER").filter_map(seq_of).collect();
    assert_eq!(got, [5]);
    // Let three health checks happen (every 3 s, the first after 3 s).
    tokio::time::sleep(Duration::from_millis(8000)).await;
    bravo.send(&pli("ANDROID-BRAVO", "BRAVO", 2)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let l = log.lock().unwrap();
    assert_eq!(l.connections, 1, "one HTTP/2 connection for every call");
    let order = ["ServerFederateGroupsStream", "ClientFederateGroupsStream", "ClientEventStream", "ServerEventStream"];
    let times: Vec<Instant> = order.iter().map(|r| first(&l, r, 1).unwrap_or_else(|| panic!("{r} not called: {:?}", l.calls.iter().map(|c| c.0).collect::<Vec<_>>()))).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "order {order:?}: {:?}", l.calls.iter().map(|c| c.0).collect::<Vec<_>>());
    assert_eq!(l.calls[0].0, "ServerFederateGroupsStream", "the groups stream is the first call");
    assert!(l.version_major.iter().all(|m| *m > 0), "ClientEventStream carries a version with major > 0");
    let health: Vec<Instant> = l.calls.iter().filter(|c| c.0 == "HealthCheck").map(|c| c.1).collect();
    assert!(health.len() >= 2, "health checks: {}", health.len());
    for w in health.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(2700) && gap <= Duration::from_millis(3600), "health interval {gap:?}");
    }
    let rol = first(&l, "ClientROLStream", 1).expect("ClientROLStream opened");
    assert!(rol > health[0], "ClientROLStream only after the first SERVING health reply");
    assert!(first(&l, "ServerROLStream", 1).is_some());
    assert!(!l.calls.iter().any(|c| c.0 == "SendOneEvent" || c.0 == "SendOneBlob"), "never the unary calls TAK leaves hanging");
    // ServerEventStream: an empty event first, then contacts and events.
    assert_eq!(l.received.first(), Some(&FederatedEvent::default()));
    let seqs: Vec<String> = l.received.iter().filter_map(|f| f.event.as_ref()).filter(|e| e.uid == "ANDROID-BRAVO").map(|e| e.other.clone()).collect();
    assert!(seqs.len() == 2 && seqs[0].contains("seq=1") && seqs[1].contains("seq=2"), "{seqs:?}");
    assert!(l.received.iter().any(|f| f.contact.as_ref().is_some_and(|c| c.uid == "ANDROID-BRAVO" && c.callsign == "BRAVO")));
    drop(l);
    let conn = b.connection("fed").unwrap();
    assert_eq!((conn.state, conn.connects), (takgate::link::LinkState::Connected, 1), "{conn:?}");
    b.shutdown().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_on_not_connected_and_deadline_exceeded() {
    for (mode, expect) in [(Mode::NotConnected, "NOT_CONNECTED"), (Mode::Deadline, "DeadlineExceeded")] {
        let mut pki = Pki::new("v2fail");
        let (addr, log, stop) = mock_tak(&pki, mode).await;
        let (cert, key) = pki.leaf("node-b", false);
        let b = gateway(&v2_connect("node-b", &pki.ca, &cert, &key, addr, "health_interval_secs = 0.5")).await;
        let ok = common::eventually(8.0, || log.lock().unwrap().connections >= 3).await;
        assert!(ok, "{mode:?}: takgate reconnects (connections: {})", log.lock().unwrap().connections);
        let conn = b.connection("fed").unwrap();
        assert!(conn.connects >= 2 && conn.last_error.as_deref().is_some_and(|e| e.contains(expect)), "{mode:?}: {conn:?}");
        b.shutdown().await;
        stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_exchanges_events() {
    let mut pki = Pki::new("v2py");
    let a = gateway(&v2_listen("node-a", &pki, "")).await;
    let addr = a.local_addr("fed").unwrap();
    let mut alpha = Client::tcp(a.local_addr("c").unwrap()).await;
    alpha.send(&pli("ANDROID-ALPHA", "ALPHA", 1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (cert, key) = pki.leaf("pyfed", false);
    let args = vec![
        common::py::script("fig_client.py").display().to_string(),
        "--target".into(),
        addr.to_string(),
        "--ca".into(),
        pki.path(&pki.ca),
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
        "--send".into(),
        "3".into(),
        "--seconds".into(),
        "4".into(),
    ];
    let child = tokio::process::Command::new(common::py::python()).args(&args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    // While it runs: ALPHA gets the Python federate's events, and sends one more.
    let got: Vec<_> = alpha.drain(Duration::from_secs(3)).await.iter().filter(|e| e.uid == "PY-FED-1").filter_map(seq_of).collect();
    alpha.send(&pli("ANDROID-ALPHA", "ALPHA", 2)).await;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.expect("fig_client.py finishes").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fig_client.py failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(got, [1, 2, 3], "events from the grpcio client reach local clients");
    let lines: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let done = lines.iter().find_map(|v| v.get("done")).expect("summary");
    assert_eq!(done["groups_first"], "SERVING");
    assert_eq!(done["health_before_subscribe"], "NOT_CONNECTED");
    assert_eq!(done["health"], "SERVING");
    assert_eq!(done["server_event_stream_pending"], true, "ServerEventStream stays open, as TAK's");
    let alpha_seen: Vec<&serde_json::Value> = lines.iter().filter(|v| v["uid"] == "ANDROID-ALPHA").collect();
    assert_eq!(alpha_seen.len(), 2, "snapshot and live event: {stdout}");
    assert!(alpha_seen[1]["other"].as_str().unwrap().contains("seq=2"));
    assert_eq!(alpha_seen[0]["provenance"], serde_json::json!(["node-a"]));
    assert!(lines.iter().any(|v| v["contact"]["callsign"] == "ALPHA" && v["contact"]["op"] == "CREATE"), "{stdout}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_unknown_and_expired_certificates_are_refused() {
    let mut pki = Pki::new("v2certs");
    let a = gateway(&v2_listen("node-a", &pki, "")).await;
    let addr = a.local_addr("fed").unwrap();
    // A federate whose certificate comes from another CA.
    let mut stranger = Pki::new("v2stranger");
    let (sc, sk) = stranger.leaf("stranger", false);
    let b = gateway(&v2_connect("stranger", &pki.ca, &stranger.with_chain(&sc), &sk, addr, "")).await;
    // A federate with an expired certificate from the right CA.
    let (ec, ek) = pki.leaf_expired("expired-peer");
    let c = gateway(&v2_connect("expired", &pki.ca, &ec, &ek, addr, "")).await;
    // A client that does not trust the server's CA.
    let (gc, gk) = pki.leaf("good-peer", false);
    let d = gateway(&v2_connect("distrustful", &stranger.ca, &pki.with_chain(&gc), &gk, addr, "")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(a.router().stats().await.iter().filter(|s| s.transport == "federation-v2").count(), 0, "nobody got in");
    assert!(a.counters("fed").unwrap().snapshot().decode_errors >= 3, "each refusal counted");
    // Each dialer says why, in words (with TLS 1.3 the client learns of the refusal from
    // the server's alert on its first call; a retry may only see the closed connection).
    for (gw, expect) in [(&b, "is our CA in its federation truststore?"), (&c, "refused our certificate as expired"), (&d, "invalid peer certificate: UnknownIssuer")] {
        let ok = common::eventually(5.0, || gw.connection("fed").unwrap().last_error.as_deref().is_some_and(|e| e.contains(expect))).await;
        assert!(ok, "{expect}: {:?}", gw.connection("fed"));
    }
    for gw in [d, c, b, a] {
        gw.shutdown().await;
    }
}

/// takgate as the v2 server: an item added to a mission reaches a TAK client (role) as an
/// `update mission` TAK reads, with the CoT and GroupsPayload blobs TAK's client role needs
/// to inject the item (it injects only when both are present).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rol_to_a_tak_client_carries_what_it_injects() {
    let mut pki = Pki::new("v2rolout");
    let a = gateway(&v2_listen("node-a", &pki, "")).await;
    let (cert, key) = pki.leaf("tak-peer", false);
    let (mut c, _conn) = raw(a.local_addr("fed").unwrap(), &pki.ca, &cert, &key).await;
    let _groups = c.server_federate_groups_stream(sub("tak-peer", false)).await.unwrap().into_inner();
    let _evs = c.client_event_stream(sub("tak-peer", true)).await.unwrap().into_inner();
    let (_etx, erx) = mpsc::channel::<FederatedEvent>(1);
    let _ses = c.server_event_stream(rx_stream(erx)).await.unwrap().into_inner();
    assert_eq!(c.health_check(health()).await.unwrap().into_inner().status, SERVING);
    let mut rol_in = c.client_rol_stream(sub("tak-peer", false)).await.unwrap().into_inner();
    let mut alpha = Client::tcp(a.local_addr("c").unwrap()).await;
    let mut item = pli("ITEM-R", "ITEM", 1);
    item.detail.xml.push_str(r#"<marti><dest mission="ops"/></marti>"#);
    alpha.send(&item).await;
    let rol = loop {
        let r = msg(&mut rol_in, Duration::from_secs(5)).await.expect("a ROL").unwrap();
        if r.program.contains("ITEM-R") {
            break r;
        }
    };
    common::tak::accepts(&rol).unwrap_or_else(|e| panic!("TAK refuses {:?}: {e}", rol.program));
    let injected = common::tak::client_role_injects(&rol).expect("TAK's client role injects the item");
    assert!(injected.contains(r#"uid="ITEM-R""#), "{injected}");
    a.shutdown().await;
}
