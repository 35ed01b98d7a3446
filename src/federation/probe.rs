//! The staged connection test for a federation peer (`takgate federation test`): resolve,
//! TCP connect, TLS handshake with our certificate, the peer's identity and chain, then
//! (v1) a short wait for the peer's first frame. Each stage reports ok or the error and
//! how long it took, so an operator sees where a federation breaks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::v1::Decoder;
use crate::transport::tls;

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

#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: &'static str,
    pub ok: bool,
    pub ms: u64,
    pub detail: String,
}

/// Runs the stages in order, stopping at the first failure.
pub async fn probe(t: &ProbeTarget) -> Vec<Stage> {
    let mut stages = vec![];
    let mut stage = |name, start: Instant, r: Result<String, String>| {
        let ok = r.is_ok();
        stages.push(Stage { name, ok, ms: start.elapsed().as_millis() as u64, detail: r.unwrap_or_else(|e| e) });
        ok
    };
    let t0 = Instant::now();
    let cc = tls::client_config(&t.ca, Some((&t.cert, &t.key)))
        .map(|mut c| {
            if t.protocol == 2 {
                c.alpn_protocols = vec![b"h2".to_vec()];
            }
            tokio_rustls::TlsConnector::from(Arc::new(c))
        })
        .map_err(|e| e.0);
    let cc = match cc {
        Ok(c) => {
            stage("certificates", t0, Ok(format!("CA {}, certificate {}", t.ca.display(), t.cert.display())));
            c
        }
        Err(e) => {
            stage("certificates", t0, Err(e));
            return stages;
        }
    };
    let t1 = Instant::now();
    let addr = match tokio::net::lookup_host(&t.address).await.map_err(|e| e.to_string()).and_then(|mut a| a.next().ok_or("resolves to nothing".to_string())) {
        Ok(a) => {
            stage("resolve", t1, Ok(a.to_string()));
            a
        }
        Err(e) => {
            stage("resolve", t1, Err(format!("{}: {e}", t.address)));
            return stages;
        }
    };
    let t2 = Instant::now();
    let tcp = match tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            stage("tcp connect", t2, Ok(addr.to_string()));
            s
        }
        Ok(Err(e)) => {
            stage("tcp connect", t2, Err(e.to_string()));
            return stages;
        }
        Err(_) => {
            stage("tcp connect", t2, Err("timed out after 10 s".into()));
            return stages;
        }
    };
    let host = t.server_name.clone().unwrap_or_else(|| t.address.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']']).to_owned()).unwrap_or_default());
    let t3 = Instant::now();
    let name = match rustls::pki_types::ServerName::try_from(host.clone()) {
        Ok(n) => n,
        Err(e) => {
            stage("tls handshake", t3, Err(format!("server name {host:?}: {e}")));
            return stages;
        }
    };
    let mut tls = match tokio::time::timeout(Duration::from_secs(10), cc.connect(name, tcp)).await {
        Ok(Ok(s)) => {
            stage("tls handshake", t3, Ok(format!("{:?}", s.get_ref().1.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default())));
            s
        }
        Ok(Err(e)) => {
            stage("tls handshake", t3, Err(explain_tls(&e, &host, &t.ca)));
            return stages;
        }
        Err(_) => {
            stage("tls handshake", t3, Err("timed out after 10 s".into()));
            return stages;
        }
    };
    let t4 = Instant::now();
    let chain = tls.get_ref().1.peer_certificates().map(|c| c.len()).unwrap_or(0);
    match tls::identity(tls.get_ref().1.peer_certificates()) {
        Some(id) => {
            if chain < 2 {
                stage("peer identity", t4, Err(format!("CN {} fingerprint {}: the peer did not present its issuing CA (only its leaf certificate); TAK Server needs leaf + issuer: add the CA to the peer's certificate file", id.cn, id.fingerprint)));
                return stages;
            }
            stage("peer identity", t4, Ok(format!("CN {} fingerprint {} chain {chain}", id.cn, id.fingerprint)));
        }
        None => {
            stage("peer identity", t4, Err("no peer certificate".into()));
            return stages;
        }
    }
    if t.protocol == 2 {
        let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
        if alpn.as_deref() != Some(b"h2") {
            stages.push(Stage { name: "v2 http/2", ok: false, ms: 0, detail: "the peer did not negotiate HTTP/2 (ALPN h2): is this a federation v2 port (TAK Server: 9001)?".into() });
            return stages;
        }
        probe_v2(Box::new(tls), &t.address, &mut stages).await;
        return stages;
    }
    let t5 = Instant::now();
    let mut dec = Decoder::new(super::v1::DEFAULT_MAX_FRAME);
    let r = tokio::time::timeout(t.listen, async {
        loop {
            dec.buffer_mut().reserve(16 * 1024);
            match tls.read_buf(dec.buffer_mut()).await {
                Ok(0) => return Err("the peer closed the connection (not accepted as a federate?)".to_string()),
                Err(e) => return Err(e.to_string()),
                Ok(_) => {}
            }
            if let Some(f) = dec.next_frame() {
                return f.map(|fe| if fe.contact.is_some() { "a contact".to_string() } else if fe.event.is_some() { "an event".to_string() } else { "an empty frame".to_string() }).map_err(|e| e.to_string());
            }
        }
    })
    .await;
    match r {
        Ok(Ok(what)) => stage("v1 first frame", t5, Ok(format!("received {what}"))),
        Ok(Err(e)) => stage("v1 first frame", t5, Err(e)),
        Err(_) => stage("v1 first frame", t5, Ok(format!("connection held {} s, nothing to send yet (normal when the peer has no contacts)", t.listen.as_secs()))),
    };
    stages
}

/// v2: SERVING first on the groups stream, then one health check after subscribing.
async fn probe_v2(io: Box<dyn crate::transport::tcp::Io>, address: &str, stages: &mut Vec<Stage>) {
    use super::fig::{client_health, identity, server_health, ClientHealth, Identity, Subscription, TakServerVersion};
    let session = tokio_util::sync::CancellationToken::new();
    let _close = session.clone().drop_guard();
    let t = Instant::now();
    let mut c = match super::v2::h2_client(io, address, super::v2::DEFAULT_MAX_MESSAGE, &session).await {
        Ok(c) => c,
        Err(e) => {
            stages.push(Stage { name: "v2 groups stream", ok: false, ms: t.elapsed().as_millis() as u64, detail: e });
            return;
        }
    };
    let ident = Identity { name: "takgate-probe".into(), uid: format!("{:032x}", fastrand::u128(..)), description: "takgate federation test".into(), r#type: identity::ConnectionType::FederationTakClient as i32, server_id: "takgate-probe".into() };
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
    let health = tokio::time::timeout(Duration::from_secs(10), async {
        let _events = c.client_event_stream(sub(true)).await.map_err(|st| format!("ClientEventStream: {:?} {}", st.code(), st.message()))?;
        let h = c.health_check(ClientHealth { status: client_health::ServingStatus::Serving as i32 }).await.map_err(|st| format!("HealthCheck: {:?} {}", st.code(), st.message()))?;
        let st = h.into_inner().status;
        if st == server_health::ServingStatus::Serving as i32 {
            Ok("SERVING".to_string())
        } else {
            Err(format!("health check answered {}", server_health::ServingStatus::try_from(st).map(|s| s.as_str_name()).unwrap_or("UNKNOWN")))
        }
    })
    .await
    .unwrap_or_else(|_| Err("no health check answer within 10 s".into()));
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
