//! The staged connection test for a federation peer (`takgate federation test`): resolve,
//! TCP connect, TLS handshake with our certificate, the peer's identity and chain, then
//! (v1) a short wait for the peer's first frame. Each stage reports ok or the error and
//! how long it took, so an operator sees where a federation breaks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::v1::Decoder;
use crate::link::tls;

#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub address: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_name: Option<String>,
    /// How long to wait for the peer's first v1 frame (it may have nothing to send).
    pub listen: Duration,
    /// Federation protocol: 1 (port 9000) or 2 (gRPC, port 9001).
    pub protocol: u8,
}

pub use crate::link::probe::{Stage, Stages};

/// Runs the stages in order, stopping at the first failure.
pub async fn probe(t: &ProbeTarget) -> Vec<Stage> {
    let mut st = Stages(vec![]);
    let _ = run_stages(t, &mut st).await;
    st.0
}

async fn run_stages(t: &ProbeTarget, st: &mut Stages) -> Option<()> {
    let t0 = Instant::now();
    let cc = st.record("certificates", t0, connector(t))?;
    let t1 = Instant::now();
    let addr = st.record("resolve", t1, resolve(&t.address).await)?;
    let t2 = Instant::now();
    let tcp = match tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok((s, addr.to_string())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 10 s".into()),
    };
    let tcp = st.record("tcp connect", t2, tcp)?;
    let host = t.server_name.clone().unwrap_or_else(|| t.address.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']']).to_owned()).unwrap_or_default());
    let t3 = Instant::now();
    let tls = st.record("tls handshake", t3, handshake(cc, tcp, &host, &t.ca).await)?;
    let t4 = Instant::now();
    st.record("peer identity", t4, peer_identity(&tls))?;
    if t.protocol == 2 {
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            st.0.push(Stage { name: "v2 http/2", ok: false, ms: 0, detail: "the peer did not negotiate HTTP/2 (ALPN h2): is this a federation v2 port (TAK Server: 9001)?".into() });
            return None;
        }
        probe_v2(Box::new(tls), &t.address, &mut st.0).await;
        return Some(());
    }
    let t5 = Instant::now();
    st.record("v1 first frame", t5, first_frame(tls, t.listen).await.map(|d| ((), d)));
    Some(())
}

fn connector(t: &ProbeTarget) -> Result<(tokio_rustls::TlsConnector, String), String> {
    let mut c = tls::client_config(&t.ca, Some((&t.cert, &t.key))).map_err(|e| e.to_string())?;
    if t.protocol == 2 {
        c.alpn_protocols = vec![b"h2".to_vec()];
    }
    let chain = super::presented_chain(&t.ca, &t.cert)?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(c)), format!("CA {}, certificate {} (chain {chain})", t.ca.display(), t.cert.display())))
}

async fn resolve(address: &str) -> Result<(std::net::SocketAddr, String), String> {
    let a = tokio::net::lookup_host(address).await.map_err(|e| e.to_string()).and_then(|mut a| a.next().ok_or("resolves to nothing".to_string())).map_err(|e| format!("{address}: {e}"))?;
    Ok((a, a.to_string()))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn handshake(cc: tokio_rustls::TlsConnector, tcp: tokio::net::TcpStream, host: &str, ca: &std::path::Path) -> Result<(Tls, String), String> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| format!("server name {host:?}: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(10), cc.connect(name, tcp)).await {
        Ok(Ok(s)) => {
            let v = s.get_ref().1.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
            Ok((s, format!("{v:?}")))
        }
        Ok(Err(e)) => Err(explain_tls(&e, host, ca)),
        Err(_) => Err("timed out after 10 s".into()),
    }
}

fn peer_identity(tls: &Tls) -> Result<((), String), String> {
    let chain = tls.get_ref().1.peer_certificates().map(|c| c.len()).unwrap_or(0);
    let id = tls::identity(tls.get_ref().1.peer_certificates()).ok_or("no peer certificate")?;
    if chain < 2 {
        return Err(format!("CN {} fingerprint {}: the peer did not present its issuing CA (only its leaf certificate); TAK Server needs leaf + issuer: add the CA to the peer's certificate file", id.cn, id.fingerprint));
    }
    Ok(((), format!("CN {} fingerprint {} chain {chain}", id.cn, id.fingerprint)))
}

/// v1: a short wait for the peer's first frame (it may have nothing to send).
async fn first_frame(mut tls: Tls, listen: Duration) -> Result<String, String> {
    let mut dec = Decoder::new(super::v1::DEFAULT_MAX_FRAME);
    let r = tokio::time::timeout(listen, async {
        loop {
            match tls.read_buf(dec.read_buffer()).await {
                Ok(0) => return Err("the peer closed the connection (not accepted as a federate?)".to_string()),
                Err(e) => return Err(e.to_string()),
                Ok(_) => {}
            }
            if let Some(f) = dec.next_frame() {
                return f.map(|fe| if fe.contact.is_some() { "a contact" } else if fe.event.is_some() { "an event" } else { "an empty frame" }.to_string()).map_err(|e| e.to_string());
            }
        }
    })
    .await;
    match r {
        Ok(Ok(what)) => Ok(format!("received {what}")),
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(format!("connection held {} s, nothing to send yet (normal when the peer has no contacts)", listen.as_secs())),
    }
}

/// How long the probe waits for a health check answer.
const HEALTH_WAIT: Duration = Duration::from_secs(5);

/// v2: SERVING first on the groups stream, then one health check after subscribing.
async fn probe_v2(io: Box<dyn crate::link::Io>, address: &str, stages: &mut Vec<Stage>) {
    use super::fig::{client_health, identity, server_health, ClientHealth, Identity, Subscription, TakServerVersion};
    let session = tokio_util::sync::CancellationToken::new();
    let _close = session.clone().drop_guard();
    let mut tasks = tokio::task::JoinSet::new();
    let t = Instant::now();
    let mut c = match super::v2::h2_client(io, address, super::v2::DEFAULT_MAX_MESSAGE, &session, &mut tasks).await {
        Ok(c) => c,
        Err(e) => {
            stages.push(Stage { name: "v2 groups stream", ok: false, ms: t.elapsed().as_millis() as u64, detail: e });
            return;
        }
    };
    let ident = Identity { name: "takgate-probe".into(), uid: crate::cot::random_uid(), description: "takgate federation test".into(), r#type: identity::ConnectionType::FederationTakClient as i32, server_id: "takgate-probe".into() };
    let sub = |version: bool| Subscription { identity: Some(ident.clone()), filter: String::new(), version: version.then(|| TakServerVersion { major: 5, minor: 5, ..Default::default() }) };
    let groups = tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = c.server_federate_groups_stream(sub(false)).await.map_err(|st| format!("ServerFederateGroupsStream: {:?} {}", st.code(), st.message()))?.into_inner();
        match s.message().await {
            Ok(Some(g)) if g.stream_update.as_ref().is_some_and(|u| u.status == server_health::ServingStatus::Serving as i32) => Ok("SERVING".to_string()),
            Ok(Some(g)) => Err(format!("the first message on the groups stream is not SERVING ({g:?}): TAK Server would never open ServerEventStream")),
            Ok(None) => Err("the groups stream ended without SERVING".to_string()),
            Err(st) => Err(format!("{:?} {}", st.code(), st.message())),
        }
    })
    .await
    .unwrap_or_else(|_| Err("no answer on the groups stream within 10 s".into()));
    let ok = groups.is_ok();
    stages.push(Stage { name: "v2 groups stream", ok, ms: t.elapsed().as_millis() as u64, detail: groups.unwrap_or_else(|e| e) });
    if !ok {
        return;
    }
    let t = Instant::now();
    // ClientEventStream is opened without waiting for its reply: a TAK Server sends nothing on
    // it (response headers included) until the federate opens ServerEventStream.
    let mut events = c.clone();
    let versioned = sub(true);
    let mut open = Box::pin(async move { events.client_event_stream(versioned).await });
    if futures_util::poll!(open.as_mut()).is_pending() {
        tasks.spawn(async move {
            let _ = open.await;
        });
    }
    // The peer registers the event stream on its own time: NOT_CONNECTED until it has, so
    // ask again (twice a second) before calling it an answer.
    let health = tokio::time::timeout(HEALTH_WAIT, async {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let h = c.health_check(ClientHealth { status: client_health::ServingStatus::Serving as i32 }).await.map_err(|st| format!("HealthCheck: {:?} {}", st.code(), st.message()))?;
            match server_health::ServingStatus::try_from(h.into_inner().status) {
                Ok(server_health::ServingStatus::Serving) => return Ok("SERVING".to_string()),
                Ok(server_health::ServingStatus::NotConnected) if t.elapsed() < Duration::from_secs(3) => continue,
                s => return Err(format!("health check answered {}", s.map(|s| s.as_str_name()).unwrap_or("UNKNOWN"))),
            }
        }
    })
    .await
    // The peer answered the groups stream, so it is there: a TAK Server always answers a
    // subscribed federate, a Federation Hub with `enableHealthCheck: false` never does (and
    // takgate keeps such sessions).
    .unwrap_or_else(|_| Ok(format!("no answer within {} s: the peer does not answer health checks (a Federation Hub with enableHealthCheck: false); takgate keeps the session and relies on the connection", HEALTH_WAIT.as_secs())));
    stages.push(Stage { name: "v2 health check", ok: health.is_ok(), ms: t.elapsed().as_millis() as u64, detail: health.unwrap_or_else(|e| e) });
}

/// A TLS failure in words an operator can act on.
pub fn explain_tls(e: &std::io::Error, host: &str, ca: &std::path::Path) -> String {
    use rustls::{CertificateError, Error as TlsErr};
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<TlsErr>());
    let Some(err) = inner else { return e.to_string() };
    match err {
        TlsErr::InvalidCertificate(CertificateError::NotValidForName) => format!("server certificate has no SAN for {host}: reissue it with {host} as a DNS or IP SAN, or set server_name to a name it has"),
        TlsErr::InvalidCertificate(CertificateError::NotValidForNameContext { presented, .. }) => format!("server certificate has no SAN for {host} (it names {}): reissue it with {host} as a DNS or IP SAN, or set server_name to one of those", presented.join(", ")),
        TlsErr::InvalidCertificate(CertificateError::UnknownIssuer) => format!("server certificate does not chain to the CA in {}: wrong CA file, or the peer did not present its issuing CA", ca.display()),
        TlsErr::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => "server certificate has expired: the peer must renew it".into(),
        TlsErr::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => "server certificate is not valid yet: check both clocks".into(),
        TlsErr::InvalidCertificate(CertificateError::Revoked) => "server certificate is revoked".into(),
        TlsErr::AlertReceived(a) => format!("the peer refused our certificate (TLS alert {a:?}): is our CA in its federation truststore, and our certificate valid?"),
        other => other.to_string(),
    }
}
