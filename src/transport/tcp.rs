//! Stream listeners and connectors, plain TCP or TLS. Accepting never waits on a peer: each
//! connection, its TLS handshake included (bounded by a timeout), runs in its own task, and
//! accept errors (out of file descriptors) pause the loop briefly instead of ending it.
//! Outgoing connections reconnect with capped exponential backoff and jitter, reset after
//! a healthy period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::router::{LinkCounters, PeerIdentity};

/// A connected byte stream (plain TCP or TLS).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// What runs on each connection once it is up (and, for TLS, authenticated): the stream,
/// the remote address, the peer's certificate identity, and the cancel token.
pub type SessionFn = Arc<dyn Fn(Box<dyn Io>, String, Option<PeerIdentity>, CancellationToken) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// Who is listening or connecting, for logs, counters and connection status.
#[derive(Clone)]
pub struct Endpoint {
    pub link: String,
    pub counters: Arc<LinkCounters>,
    pub status: Arc<ConnStatus>,
    pub limits: Arc<Limits>,
}

/// Connection limits of a listener; each refusal is logged (without flooding) and counted.
#[derive(Debug, Default)]
pub struct Limits {
    pub max_connections: Option<usize>,
    pub max_per_address: Option<usize>,
    /// Connections presenting one certificate (by fingerprint), checked after the handshake.
    pub max_per_identity: Option<usize>,
    /// TLS handshakes in progress at once (a storm of slow handshakes must not pile up).
    pub handshakes: Option<Arc<tokio::sync::Semaphore>>,
    open: std::sync::atomic::AtomicUsize,
    per_address: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    per_identity: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Limits {
    pub fn new(max_connections: Option<usize>, max_per_address: Option<usize>, max_handshakes: Option<usize>) -> Limits {
        Limits { max_connections, max_per_address, handshakes: max_handshakes.map(|n| Arc::new(tokio::sync::Semaphore::new(n))), ..Default::default() }
    }

    /// A place for one more connection with this certificate, or why there is none.
    fn admit_identity(self: &Arc<Self>, id: &PeerIdentity) -> Result<Option<IdentitySlot>, String> {
        let Some(max) = self.max_per_identity else { return Ok(None) };
        let mut per = self.per_identity.lock().unwrap_or_else(|p| p.into_inner());
        let n = per.entry(id.fingerprint.clone()).or_insert(0);
        if *n >= max {
            return Err(format!("{n} connections with the certificate of {:?} already (max_connections_per_identity)", id.cn));
        }
        *n += 1;
        Ok(Some(IdentitySlot { limits: self.clone(), fingerprint: id.fingerprint.clone() }))
    }

    /// A place for a connection from `ip`, or why there is none.
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr) -> Result<Slot, String> {
        use std::sync::atomic::Ordering::SeqCst;
        let open = self.open.fetch_add(1, SeqCst);
        if self.max_connections.is_some_and(|m| open >= m) {
            self.open.fetch_sub(1, SeqCst);
            return Err(format!("connection limit reached ({open} open, max_connections)"));
        }
        let mut per = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = per.entry(ip).or_insert(0);
        if self.max_per_address.is_some_and(|m| *n >= m) {
            let have = *n;
            drop(per);
            self.open.fetch_sub(1, SeqCst);
            return Err(format!("{have} connections from {ip} already (max_connections_per_address)"));
        }
        *n += 1;
        Ok(Slot { limits: self.clone(), ip })
    }
}

/// A connection's place under the limits, given back when it closes.
struct Slot {
    limits: Arc<Limits>,
    ip: std::net::IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        let mut per = self.limits.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.ip);
            }
        }
    }
}

/// A connection's place under the per-identity limit.
struct IdentitySlot {
    limits: Arc<Limits>,
    fingerprint: String,
}

impl Drop for IdentitySlot {
    fn drop(&mut self) {
        let mut per = self.limits.per_identity.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.fingerprint) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.fingerprint);
            }
        }
    }
}

/// The state of an outgoing connection, for operators (and the admin API).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConnState {
    /// `connecting`, `connected`, `waiting` (to reconnect), `error` or `stopped`.
    pub state: &'static str,
    pub last_error: Option<String>,
    /// When the current or last connection came up.
    pub last_connected: Option<crate::cot::CotTime>,
    pub connects: u64,
}

#[derive(Debug)]
pub struct ConnStatus(std::sync::Mutex<ConnState>);

impl Default for ConnStatus {
    fn default() -> Self {
        ConnStatus(std::sync::Mutex::new(ConnState { state: "stopped", last_error: None, last_connected: None, connects: 0 }))
    }
}

impl ConnStatus {
    pub fn get(&self) -> ConnState {
        self.0.lock().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
    pub fn set(&self, f: impl FnOnce(&mut ConnState)) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g);
    }
    fn error(&self, e: String) {
        self.set(|s| {
            s.state = "error";
            s.last_error = Some(e);
        });
    }
}

/// How a connected stream is secured.
#[derive(Clone)]
pub enum Security {
    Plain,
    Tls { acceptor: Option<TlsAcceptor>, connector: Option<TlsConnector>, server_name: String, handshake_timeout: Duration },
}

fn tune(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    let ka = TcpKeepalive::new().with_time(Duration::from_secs(30)).with_interval(Duration::from_secs(10));
    let _ = SockRef::from(s).set_tcp_keepalive(&ka);
}

/// Accepts connections until `cancel`.
pub async fn listen(listener: TcpListener, sec: Security, settings: Endpoint, session: SessionFn, cancel: CancellationToken, tracker: TaskTracker) {
    let mut accept_errors = 0u64;
    loop {
        let (tcp, addr) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors (EMFILE) is the usual cause: logged without
                    // flooding, and the loop goes on once some are free.
                    accept_errors += 1;
                    if accept_errors <= 5 || accept_errors.is_power_of_two() {
                        tracing::warn!(link = %settings.link, count = accept_errors, "accept failed: {e}; pausing 100 ms");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match settings.limits.admit(addr.ip()) {
            Ok(s) => s,
            Err(why) => {
                let n = settings.counters.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                super::stream::log_bad_input(n, &settings.link, &addr.to_string(), &format!("connection refused: {why}"));
                drop(tcp);
                continue;
            }
        };
        tune(&tcp);
        let (sec, settings, session, cancel) = (sec.clone(), settings.clone(), session.clone(), cancel.clone());
        tracker.spawn(async move {
            let _slot = slot;
            match sec {
                Security::Plain => session(Box::new(tcp), addr.to_string(), None, cancel).await,
                Security::Tls { acceptor: Some(acceptor), handshake_timeout, .. } => {
                    let permit = match &settings.limits.handshakes {
                        Some(sem) => match sem.clone().try_acquire_owned() {
                            Ok(p) => Some(p),
                            Err(_) => {
                                let n = settings.counters.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                super::stream::log_bad_input(n, &settings.link, &addr.to_string(), &"connection refused: too many TLS handshakes in progress (max_tls_handshakes)");
                                return;
                            }
                        },
                        None => None,
                    };
                    let hs = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)) => r,
                    };
                    drop(permit);
                    match hs {
                        Ok(Ok(tls)) => {
                            let id = super::tls::identity(tls.get_ref().1.peer_certificates());
                            tracing::debug!(link = %settings.link, remote = %addr, identity = ?id, "TLS handshake done");
                            let _id_slot = match id.as_ref().map(|i| settings.limits.admit_identity(i)).transpose() {
                                Ok(s) => s.flatten(),
                                Err(why) => {
                                    let n = settings.counters.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    super::stream::log_bad_input(n, &settings.link, &addr.to_string(), &format!("connection refused: {why}"));
                                    return;
                                }
                            };
                            session(Box::new(tls), addr.to_string(), id, cancel).await
                        }
                        Ok(Err(e)) => {
                            let n = settings.counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            super::stream::log_bad_input(n, &settings.link, &addr.to_string(), &format!("TLS handshake failed: {}", super::tls::explain_accept_error(&e)));
                        }
                        Err(_) => {
                            let n = settings.counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            super::stream::log_bad_input(n, &settings.link, &addr.to_string(), &"TLS handshake timed out");
                        }
                    }
                }
                Security::Tls { acceptor: None, .. } => {}
            }
        });
    }
}

/// Backoff bounds for outgoing connections.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    /// A connection that lasted this long resets the backoff.
    pub healthy: Duration,
}

impl Backoff {
    /// The delay before attempt `n` (0-based): min·2ⁿ capped at max, with jitter in [½, 1].
    pub fn delay(&self, n: u32, jitter: f64) -> Duration {
        let base = self.min.as_secs_f64() * 2f64.powi(n.min(30) as i32);
        Duration::from_secs_f64(base.min(self.max.as_secs_f64()) * (0.5 + 0.5 * jitter.clamp(0.0, 1.0)))
    }
}

/// Connects to `address` and keeps reconnecting until `cancel`.
pub async fn connect_loop(address: String, sec: Security, backoff: Backoff, settings: Endpoint, session: SessionFn, cancel: CancellationToken) {
    let mut attempt = 0u32;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let started = Instant::now();
        settings.status.set(|s| s.state = "connecting");
        let conn = tokio::select! {
            _ = cancel.cancelled() => break,
            r = tokio::time::timeout(Duration::from_secs(20), TcpStream::connect(&address)) => r,
        };
        match conn {
            Ok(Ok(tcp)) => {
                tune(&tcp);
                let remote = tcp.peer_addr().map(|a: SocketAddr| a.to_string()).unwrap_or_else(|_| address.clone());
                let up = |st: &ConnStatus| {
                    st.set(|s| {
                        s.state = "connected";
                        s.last_connected = Some(crate::cot::CotTime::now());
                        s.connects += 1;
                    })
                };
                match &sec {
                    Security::Plain => {
                        up(&settings.status);
                        session(Box::new(tcp), remote, None, cancel.clone()).await;
                        settings.status.set(|s| s.state = "waiting");
                    }
                    Security::Tls { connector: Some(c), server_name, handshake_timeout, .. } => {
                        let name = match rustls::pki_types::ServerName::try_from(server_name.clone()) {
                            Ok(n) => n,
                            Err(e) => {
                                tracing::error!(link = %settings.link, "bad server name {server_name:?}: {e}");
                                break;
                            }
                        };
                        match tokio::time::timeout(*handshake_timeout, c.connect(name, tcp)).await {
                            Ok(Ok(tls)) => {
                                let id = super::tls::identity(tls.get_ref().1.peer_certificates());
                                up(&settings.status);
                                session(Box::new(tls), remote, id, cancel.clone()).await;
                                settings.status.set(|s| s.state = "waiting");
                            }
                            Ok(Err(e)) => {
                                tracing::warn!(link = %settings.link, %address, "TLS handshake failed: {e}");
                                settings.status.error(format!("TLS handshake failed: {e}"));
                            }
                            Err(_) => {
                                tracing::warn!(link = %settings.link, %address, "TLS handshake timed out");
                                settings.status.error("TLS handshake timed out".into());
                            }
                        }
                    }
                    Security::Tls { connector: None, .. } => break,
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(link = %settings.link, %address, "connect failed: {e}");
                settings.status.error(format!("connect failed: {e}"));
            }
            Err(_) => {
                tracing::warn!(link = %settings.link, %address, "connect timed out");
                settings.status.error("connect timed out".into());
            }
        }
        if started.elapsed() >= backoff.healthy {
            attempt = 0;
        }
        let delay = backoff.delay(attempt, fastrand::f64());
        attempt = attempt.saturating_add(1);
        tracing::info!(link = %settings.link, %address, delay_ms = delay.as_millis() as u64, "reconnecting");
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    settings.status.set(|s| s.state = "stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff { min: Duration::from_secs(1), max: Duration::from_secs(30), healthy: Duration::from_secs(60) };
        assert_eq!(b.delay(0, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(3, 1.0), Duration::from_secs(8));
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(30));
        assert_eq!(b.delay(10, 0.0), Duration::from_secs(15));
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_secs(30));
    }
}
