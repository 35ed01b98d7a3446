//! Accepting connections for every stream link (TCP, TLS, federation v1 and v2, the admin
//! API). Listeners are bound through socket2 with a deep backlog, so a reconnect storm of
//! a whole unit's clients does not overflow the kernel's accept queue. Accepting never
//! waits on a peer: each connection, its TLS handshake included (bounded by a timeout and
//! by a limit on handshakes in progress), runs in its own task. Connection limits (total,
//! per source address, per certificate) refuse at once, logged without flooding and
//! counted; accept errors (out of file descriptors) pause the loop briefly instead of
//! ending it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::counters::LinkCounters;
use super::peer::{Io, PeerIdentity};
use super::{log_bad_input, tls};
use crate::sync::lock;

/// The listen backlog asked for by default; the kernel caps it at net.core.somaxconn.
pub const DEFAULT_BACKLOG: u32 = 4096;

/// One connection, up and (for TLS) authenticated.
pub struct Conn {
    pub io: Box<dyn Io>,
    pub remote: String,
    pub identity: Option<PeerIdentity>,
    /// Cancelled when the link stops.
    pub cancel: CancellationToken,
}

/// What runs on each connection of a stream link, accepted or dialled.
pub trait Handler: Send + Sync + 'static {
    fn run(self: Arc<Self>, conn: Conn) -> BoxFuture<'static, ()>;
}

/// Binds a TCP listener on `addr` with SO_REUSEADDR and a listen backlog of `backlog`
/// (logging when the kernel's net.core.somaxconn caps it lower).
pub fn bind(addr: SocketAddr, backlog: u32, link: &str) -> std::io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `[::]` serves IPv4 too, as tokio's default does on Linux.
        let _ = s.set_only_v6(false);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog.min(i32::MAX as u32) as i32)?;
    if let Some(max) = somaxconn().filter(|m| *m < backlog) {
        tracing::info!(link, backlog, somaxconn = max, "the kernel caps the listen backlog at net.core.somaxconn = {max} (asked for {backlog}); raise it with sysctl for bigger reconnect storms");
    }
    TcpListener::from_std(s.into())
}

/// File descriptors kept free for everything but client connections (the store, log
/// files, outgoing links, DNS).
const FD_RESERVE: u64 = 128;

/// The default connection ceiling of a listener, and the file-descriptor limit it comes from.
pub fn default_max_connections() -> (usize, u64) {
    let nofile = nofile_limit();
    ((nofile.saturating_sub(FD_RESERVE)).clamp(64, DEFAULT_MAX_CONNECTIONS) as usize, nofile)
}

/// The most connections a listener takes without `max_connections`, however many file
/// descriptors there are: an idle connection costs about 20 KiB (RELIABILITY.md), so one
/// host on the LAN cannot take the gateway's memory with connections alone.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;

/// The soft RLIMIT_NOFILE of this process.
fn nofile_limit() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        1024
    }
}

/// Raises the soft file-descriptor limit to the hard one (as most servers do at start);
/// returns the limit in effect.
pub fn raise_nofile_limit() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct we pass and nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            let want = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
    }
    r.rlim_cur
}

fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?.trim().parse().ok()
}

/// TCP_NODELAY, and keepalive probes so dead peers are found on idle links.
pub fn tune(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    let ka = TcpKeepalive::new().with_time(Duration::from_secs(30)).with_interval(Duration::from_secs(10));
    let _ = SockRef::from(s).set_tcp_keepalive(&ka);
}

/// How accepted connections are secured.
#[derive(Clone)]
pub enum Accept {
    Plain,
    Tls { acceptor: TlsAcceptor, handshake_timeout: Duration },
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
    open: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    per_identity: Mutex<HashMap<String, usize>>,
}

impl Limits {
    pub fn new(max_connections: Option<usize>, max_per_address: Option<usize>, max_per_identity: Option<usize>, max_handshakes: Option<usize>) -> Limits {
        Limits { max_connections, max_per_address, max_per_identity, handshakes: max_handshakes.map(|n| Arc::new(tokio::sync::Semaphore::new(n))), ..Default::default() }
    }

    /// The limits a listener's configuration asks for. Without `max_connections` the
    /// ceiling comes from the process's file-descriptor limit, so one host on the network
    /// cannot exhaust it (per-address limits stay opt-in: NAT puts many clients behind one).
    pub fn for_listener(l: &crate::config::link::ListenLimits, tls: Option<&crate::config::link::TlsListen>, link: &str) -> Limits {
        let max = l.max_connections.map(|c| c.0).unwrap_or_else(|| {
            let (n, nofile) = default_max_connections();
            tracing::info!(link, max_connections = n, nofile, "accepting at most {n} connections at once (the default: at most {DEFAULT_MAX_CONNECTIONS}, within the file-descriptor limit {nofile}; set max_connections to change it)");
            n
        });
        let count = |c: Option<crate::config::link::Count>| c.map(|c| c.0);
        let (identity, handshakes) = match tls {
            Some(t) => (count(t.max_connections_per_identity), Some(count(t.max_tls_handshakes).unwrap_or(128))),
            None => (None, None),
        };
        Limits::new(Some(max), count(l.max_connections_per_address), identity, handshakes)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(SeqCst)
    }

    /// A place for a connection from `ip`, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, String> {
        let open = self.open.fetch_add(1, SeqCst);
        if self.max_connections.is_some_and(|m| open >= m) {
            self.open.fetch_sub(1, SeqCst);
            return Err(format!("connection limit reached ({open} open, max_connections)"));
        }
        let mut per = lock(&self.per_address);
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

    /// A place for one more connection with this certificate, or why there is none.
    pub fn admit_identity(self: &Arc<Self>, id: &PeerIdentity) -> Result<Option<IdentitySlot>, String> {
        let Some(max) = self.max_per_identity else { return Ok(None) };
        let mut per = lock(&self.per_identity);
        let n = per.entry(id.fingerprint.clone()).or_insert(0);
        if *n >= max {
            return Err(format!("{n} connections with the certificate of {:?} already (max_connections_per_identity)", id.cn));
        }
        *n += 1;
        Ok(Some(IdentitySlot { limits: self.clone(), fingerprint: id.fingerprint.clone() }))
    }
}

fn release<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, usize>>, key: &K) {
    let mut per = lock(map);
    if let Some(n) = per.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            per.remove(key);
        }
    }
}

/// A connection's place under the limits, given back when it closes.
pub struct Slot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, SeqCst);
        release(&self.limits.per_address, &self.ip);
    }
}

/// A connection's place under the per-identity limit.
pub struct IdentitySlot {
    limits: Arc<Limits>,
    fingerprint: String,
}

impl Drop for IdentitySlot {
    fn drop(&mut self) {
        release(&self.limits.per_identity, &self.fingerprint);
    }
}

/// A listening stream link: its name, counters, limits and security.
#[derive(Clone)]
pub struct Listener {
    pub link: String,
    pub counters: Arc<LinkCounters>,
    pub limits: Arc<Limits>,
    pub accept: Accept,
}

impl Listener {
    pub fn refuse(&self, remote: &str, why: &dyn std::fmt::Display) {
        let n = LinkCounters::inc(&self.counters.refused);
        log_bad_input(n, &self.link, remote, &format!("connection refused: {why}"));
    }

    pub fn failed(&self, remote: &str, why: &dyn std::fmt::Display) {
        let n = LinkCounters::inc(&self.counters.decode_errors);
        log_bad_input(n, &self.link, remote, why);
    }
}

/// Binds a stream listener and serves it with `handler` under the link's tracker; returns
/// the bound address.
#[allow(clippy::too_many_arguments)]
pub fn spawn(ctx: &super::LinkCtx, link: &str, address: SocketAddr, limits: Arc<Limits>, counters: Arc<LinkCounters>, accept: Accept, handler: Arc<dyn Handler>, backlog: u32) -> Result<SocketAddr, super::StartError> {
    let listener = bind(address, backlog, link).map_err(|e| super::StartError::new(link, format!("cannot listen on {address}: {e}")))?;
    let local = listener.local_addr().map_err(|e| super::StartError::new(link, e))?;
    let l = Listener { link: link.to_owned(), counters, limits, accept };
    ctx.tracker.spawn(serve(listener, l, handler, ctx.cancel.clone(), ctx.tracker.clone()));
    Ok(local)
}

/// Accepts connections until `cancel`, draining every connection that is ready before it
/// waits again.
pub async fn serve(listener: TcpListener, l: Listener, handler: Arc<dyn Handler>, cancel: CancellationToken, tracker: TaskTracker) {
    let mut accept_errors = 0u64;
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        let mut next = Some(first);
        let mut drained = 0;
        while let Some(r) = next.take() {
            match r {
                Ok((tcp, addr)) => {
                    accept_errors = 0;
                    start(tcp, addr, &l, &handler, &cancel, &tracker);
                }
                Err(e) => {
                    // Out of file descriptors (EMFILE) is the usual cause: logged without
                    // flooding, and the loop goes on once some are free.
                    accept_errors += 1;
                    if accept_errors <= 5 || accept_errors.is_power_of_two() {
                        tracing::warn!(link = %l.link, count = accept_errors, "accept failed: {e}; pausing 100 ms");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            }
            drained += 1;
            if drained < 1024 {
                next = listener.accept().now_or_never();
            }
        }
    }
}

fn start(tcp: TcpStream, addr: SocketAddr, l: &Listener, handler: &Arc<dyn Handler>, cancel: &CancellationToken, tracker: &TaskTracker) {
    let remote = addr.to_string();
    let slot = match l.limits.admit(addr.ip()) {
        Ok(s) => s,
        Err(why) => return l.refuse(&remote, &why),
    };
    tune(&tcp);
    let (l, handler, cancel) = (l.clone(), handler.clone(), cancel.clone());
    tracker.spawn(async move {
        let _slot = slot;
        match &l.accept {
            Accept::Plain => handler.run(Conn { io: Box::new(tcp), remote, identity: None, cancel }).await,
            Accept::Tls { acceptor, handshake_timeout } => {
                let Some((io, identity)) = handshake(&l, acceptor, *handshake_timeout, tcp, &remote, &cancel).await else { return };
                let _id_slot = match identity.as_ref().map(|i| l.limits.admit_identity(i)).transpose() {
                    Ok(s) => s.flatten(),
                    Err(why) => return l.refuse(&remote, &why),
                };
                handler.run(Conn { io, remote, identity, cancel }).await
            }
        }
    });
}

/// A TLS handshake under the handshake limit and timeout; None when it failed (logged).
async fn handshake(l: &Listener, acceptor: &TlsAcceptor, timeout: Duration, tcp: TcpStream, remote: &str, cancel: &CancellationToken) -> Option<(Box<dyn Io>, Option<PeerIdentity>)> {
    let _permit = match &l.limits.handshakes {
        Some(sem) => match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                l.refuse(remote, &"too many TLS handshakes in progress (max_tls_handshakes)");
                return None;
            }
        },
        None => None,
    };
    let hs = tokio::select! {
        _ = cancel.cancelled() => return None,
        r = tokio::time::timeout(timeout, acceptor.accept(tcp)) => r,
    };
    match hs {
        Ok(Ok(s)) => {
            let id = tls::identity(s.get_ref().1.peer_certificates());
            tracing::debug!(link = %l.link, remote, identity = ?id, "TLS handshake done");
            Some((Box::new(s), id))
        }
        Ok(Err(e)) => {
            l.failed(remote, &format!("TLS handshake failed: {}", tls::explain_accept_error(&e)));
            None
        }
        Err(_) => {
            l.failed(remote, &"TLS handshake timed out");
            None
        }
    }
}
