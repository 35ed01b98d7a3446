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
    let cc = tls::client_config(&t.ca, Some((&t.cert, &t.key))).map(|c| tokio_rustls::TlsConnector::from(Arc::new(c))).map_err(|e| e.0);
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
            stage("tls handshake", t3, Err(e.to_string()));
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
            let warn = if chain < 2 { " (the peer sent only its leaf; TAK Server needs leaf + issuer)" } else { "" };
            stage("peer identity", t4, Ok(format!("CN {} fingerprint {} chain {chain}{warn}", id.cn, id.fingerprint)));
        }
        None => {
            stage("peer identity", t4, Err("no peer certificate".into()));
            return stages;
        }
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
