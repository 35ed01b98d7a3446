//! Datagram links: UDP listen (XML or mesh protobuf, mixed), UDP send to a unicast address,
//! and multicast groups (join on one or several interfaces, IPv4 and IPv6, TTL, loopback,
//! SO_REUSEADDR and SO_REUSEPORT before bind so other TAK apps on the host keep working,
//! a chosen outgoing interface). Datagrams are received into max+1 bytes so truncation is
//! seen and counted. Readers never wait on the router: when it is saturated they drop and
//! count.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec::{mesh, WireFormat};
use crate::config::link::DatagramOpts;
use crate::config::{LinkConfig, MulticastLink, SendFormat, UdpLink, UdpMode};
use crate::cot::CotEvent;
use crate::link::ingest::{prepare, Origin};
use crate::link::{log_bad_input, Codec, ConnStatus, LinkCounters, LinkCtx, LinkState, LinkStatus, StartError};
use crate::router::{Message, PeerInfo, PeerPolicy, RouterHandle};

/// Settings of one datagram link.
#[derive(Debug)]
pub struct DatagramSettings {
    pub link: String,
    pub transport: &'static str,
    pub format: WireFormat,
    pub max_datagram: usize,
    pub queue_depth: usize,
    pub policy: Arc<PeerPolicy>,
    pub counters: Arc<LinkCounters>,
}

impl DatagramSettings {
    fn new(l: &LinkConfig, d: &DatagramOpts, ctx: &LinkCtx, transport: &'static str) -> Result<DatagramSettings, StartError> {
        Ok(DatagramSettings {
            link: l.name.clone(),
            transport,
            format: if d.format == Some(SendFormat::Protobuf) { WireFormat::ProtoMesh } else { WireFormat::Xml },
            max_datagram: d.max_datagram_bytes.map(|c| c.0).unwrap_or(65_507),
            queue_depth: l.queue_depth.unwrap_or(ctx.queue_depth),
            policy: Arc::new(PeerPolicy::new(&l.policy, false).map_err(|e| StartError::new(&l.name, e))?),
            counters: Arc::default(),
        })
    }
}

fn status(l: &LinkConfig, s: &DatagramSettings) -> LinkStatus {
    LinkStatus { name: l.name.clone(), transport: l.transport(), mode: l.mode(), address: l.address(), local_addr: None, counters: s.counters.clone(), connection: None }
}

/// Starts a udp link: a receiver on a bound port, or a sender to a unicast address.
pub async fn start_udp(l: &LinkConfig, u: &UdpLink, ctx: &LinkCtx) -> Result<LinkStatus, StartError> {
    let s = Arc::new(DatagramSettings::new(l, &u.datagram, ctx, "udp")?);
    let mut st = status(l, &s);
    match &u.mode {
        UdpMode::Listen(addr) => {
            let sock = bind_udp(*addr).map_err(|e| StartError::new(&l.name, e))?;
            st.local_addr = sock.local_addr().ok();
            tracing::info!(link = %l.name, address = ?st.local_addr, "udp listening");
            start_receiver(sock, ctx.router.next_id(), None, s, ctx.router.clone(), ctx.cancel.clone(), &ctx.tracker);
        }
        UdpMode::Send(address) => {
            let target = tokio::net::lookup_host(address).await.map_err(|e| StartError::new(&l.name, format!("cannot resolve {address}: {e}")))?.next().ok_or_else(|| StartError::new(&l.name, "address resolves to nothing"))?;
            let bind: SocketAddr = if target.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
            let sock = UdpSocket::bind(bind).await.map_err(|e| StartError::new(&l.name, format!("udp socket: {e}")))?;
            st.local_addr = sock.local_addr().ok();
            tracing::info!(link = %l.name, %target, "udp sending");
            ctx.tracker.spawn(send_loop(Arc::new(sock), target, ctx.router.next_id(), s, ctx.router.clone(), ctx.cancel.clone()));
        }
    }
    Ok(st)
}

/// Starts a multicast link. A group that cannot be joined now (an interface that is not up
/// yet: a radio, a VPN) does not stop the gateway: the error is shown in the link's status
/// and the join is retried every 10 s.
pub fn start_multicast(l: &LinkConfig, m: &MulticastLink, ctx: &LinkCtx) -> Result<LinkStatus, StartError> {
    let s = Arc::new(DatagramSettings::new(l, &m.datagram, ctx, "multicast")?);
    let mut st = status(l, &s);
    let o = MulticastOptions { group: m.group, interfaces: m.multicast.interfaces.clone(), ttl: m.multicast.ttl.unwrap_or(1), loopback: m.multicast.loopback.unwrap_or(true) };
    let id = ctx.router.next_id();
    let conn = Arc::new(ConnStatus::default());
    st.connection = Some(conn.clone());
    match multicast_sockets(&o) {
        Ok(socks) => {
            st.local_addr = socks.0.local_addr().ok();
            conn.state(LinkState::Connected);
            run_multicast(socks, o.group, id, s, ctx.router.clone(), ctx.cancel.clone(), &ctx.tracker);
            tracing::info!(link = %l.name, group = %o.group, interfaces = ?o.interfaces, "multicast joined");
        }
        Err(e) => {
            tracing::error!(link = %l.name, group = %o.group, "cannot join multicast group: {}; retrying every 10 s", e.0);
            conn.error(e.0);
            let (router, cancel, tracker) = (ctx.router.clone(), ctx.cancel.clone(), ctx.tracker.clone());
            ctx.tracker.spawn(rejoin(o, id, s, conn, router, cancel, tracker));
        }
    }
    Ok(st)
}

/// Tries to join every 10 s until it works (then runs the group) or the link stops.
async fn rejoin(o: MulticastOptions, id: u64, s: Arc<DatagramSettings>, conn: Arc<ConnStatus>, router: RouterHandle, cancel: CancellationToken, tracker: TaskTracker) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        match multicast_sockets(&o) {
            Ok(socks) => {
                conn.set(|c| {
                    c.state = LinkState::Connected;
                    c.last_error = None;
                });
                tracing::info!(link = %s.link, group = %o.group, "multicast joined");
                run_multicast(socks, o.group, id, s, router, cancel, &tracker);
                return;
            }
            Err(e) => conn.note_error(e.0),
        }
    }
}

/// Starts a datagram receiver: the batched receive thread on Linux, else the async loop.
fn start_receiver(sock: UdpSocket, id: u64, own: Option<OwnSends>, s: Arc<DatagramSettings>, router: RouterHandle, cancel: CancellationToken, tracker: &TaskTracker) {
    #[cfg(target_os = "linux")]
    match sock.into_std() {
        Ok(std_sock) => {
            tracker.spawn_blocking(move || receive_thread(std_sock, id, own, s, router, cancel));
        }
        Err(e) => tracing::error!(link = %s.link, "udp receiver: {e}"),
    }
    #[cfg(not(target_os = "linux"))]
    tracker.spawn(receive_loop(Arc::new(sock), id, own, s, router, cancel));
}

/// Starts the receive and send tasks of a joined multicast group.
fn run_multicast(socks: (UdpSocket, UdpSocket, HashSet<IpAddr>), group: SocketAddr, id: u64, s: Arc<DatagramSettings>, router: RouterHandle, cancel: CancellationToken, tracker: &TaskTracker) {
    let (rx, tx, local) = socks;
    let own = OwnSends { port: tx.local_addr().map(|a| a.port()).unwrap_or(0), addrs: local };
    start_receiver(rx, id, Some(own), s.clone(), router.clone(), cancel.clone(), tracker);
    tracker.spawn(send_loop(Arc::new(tx), group, id, s, router, cancel));
}

/// Where our own multicast sends come from (they loop back and are ignored).
#[derive(Debug, Clone)]
pub struct OwnSends {
    port: u16,
    addrs: HashSet<IpAddr>,
}

impl OwnSends {
    fn is(&self, from: &SocketAddr) -> bool {
        from.port() == self.port && (from.ip().is_loopback() || self.addrs.contains(&from.ip()))
    }
}

/// The event in one received datagram, or None (ours, oversized or bad: counted).
fn datagram_event(data: &[u8], truncated: bool, from: SocketAddr, own: &Option<OwnSends>, s: &DatagramSettings) -> Option<CotEvent> {
    if own.as_ref().is_some_and(|o| o.is(&from)) {
        return None;
    }
    LinkCounters::add(&s.counters.bytes_in, data.len() as u64);
    if truncated || data.len() > s.max_datagram {
        let c = LinkCounters::inc(&s.counters.truncated);
        log_bad_input(c, &s.link, &from.to_string(), &format!("datagram larger than {} bytes dropped", s.max_datagram));
        return None;
    }
    match mesh::decode(data) {
        Ok(d) => d.event,
        Err(e) => {
            log_bad_input(LinkCounters::inc(&s.counters.decode_errors), &s.link, &from.to_string(), &e);
            None
        }
    }
}


#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetError(pub String);

/// Local interfaces: (name, index, addresses).
pub fn interfaces() -> Vec<(String, u32, Vec<IpAddr>)> {
    let mut out: Vec<(String, u32, Vec<IpAddr>)> = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a linked list that we only read and then free with
    // freeifaddrs; every pointer is checked for null before it is dereferenced.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut p = ifap;
        while !p.is_null() {
            let ifa = &*p;
            p = ifa.ifa_next;
            if ifa.ifa_name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned();
            let idx = libc::if_nametoindex(ifa.ifa_name);
            let addr = if ifa.ifa_addr.is_null() {
                None
            } else {
                match (*ifa.ifa_addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                    }
                    _ => None,
                }
            };
            match out.iter_mut().find(|(n, _, _)| *n == name) {
                Some(e) => e.2.extend(addr),
                None => out.push((name, idx, addr.into_iter().collect())),
            }
        }
        libc::freeifaddrs(ifap);
    }
    out
}

/// An interface given by name or address, resolved to (index, IPv4 address if any).
fn resolve_interface(spec: &str, all: &[(String, u32, Vec<IpAddr>)]) -> Result<(u32, Option<Ipv4Addr>), NetError> {
    let found = match spec.parse::<IpAddr>() {
        Ok(ip) => all.iter().find(|(_, _, addrs)| addrs.contains(&ip)).map(|(_, i, a)| (*i, a.clone())).or(match ip {
            IpAddr::V4(v4) => Some((0, vec![IpAddr::V4(v4)])),
            IpAddr::V6(_) => None,
        }),
        Err(_) => all.iter().find(|(n, _, _)| n == spec).map(|(_, i, a)| (*i, a.clone())),
    };
    let (idx, addrs) = found.ok_or_else(|| NetError(format!("no interface {spec:?} (known: {})", all.iter().map(|i| i.0.as_str()).collect::<Vec<_>>().join(", "))))?;
    let v4 = match spec.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => Some(v4),
        _ => addrs.iter().find_map(|a| match a {
            IpAddr::V4(v) => Some(*v),
            _ => None,
        }),
    };
    Ok((idx, v4))
}

/// A UDP socket with SO_REUSEADDR, and SO_REUSEPORT when `share_port` (multicast: every
/// member gets a copy). On a unicast port SO_REUSEPORT would make Linux split the datagrams
/// between the sockets instead, so it is not set there.
fn reusable(addr: &SocketAddr, share_port: bool) -> Result<Socket, std::io::Error> {
    let s = Socket::new(Domain::for_address(*addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    if share_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Receive buffer asked for on datagram sockets: bursts at 100k datagrams/s need it.
const RECV_BUFFER: usize = 64 << 20;

/// A large receive buffer: SO_RCVBUFFORCE where we are allowed (root, CAP_NET_ADMIN),
/// else SO_RCVBUF, which the kernel caps at net.core.rmem_max.
fn big_recv_buffer(s: &Socket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let v: libc::c_int = RECV_BUFFER as libc::c_int;
        // SAFETY: setsockopt with a pointer to a c_int that lives for the call.
        let r = unsafe { libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &v as *const libc::c_int as *const libc::c_void, std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
        if r == 0 {
            return;
        }
    }
    let _ = s.set_recv_buffer_size(RECV_BUFFER);
}

/// A unicast UDP socket bound to `addr` (SO_REUSEADDR).
pub fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, NetError> {
    let s = reusable(&addr, false).map_err(|e| NetError(format!("socket: {e}")))?;
    big_recv_buffer(&s);
    s.bind(&SockAddr::from(addr)).map_err(|e| NetError(format!("cannot bind {addr}: {e}")))?;
    UdpSocket::from_std(s.into()).map_err(|e| NetError(e.to_string()))
}

/// Options of a multicast link.
#[derive(Debug, Clone)]
pub struct MulticastOptions {
    pub group: SocketAddr,
    pub interfaces: Vec<String>,
    pub ttl: u32,
    pub loopback: bool,
}

/// The receiving socket (joined on every interface) and the sending socket (its outgoing
/// interface set to the first one).
pub fn multicast_sockets(o: &MulticastOptions) -> Result<(UdpSocket, UdpSocket, HashSet<IpAddr>), NetError> {
    let all = interfaces();
    let local: HashSet<IpAddr> = all.iter().flat_map(|i| i.2.iter().copied()).collect();
    let err = |what: &str, e: std::io::Error| NetError(format!("multicast {}: {what}: {e}", o.group));
    let rx = reusable(&o.group, true).map_err(|e| err("socket", e))?;
    big_recv_buffer(&rx);
    // Binding to the group address (Linux) receives only this group's traffic on the port;
    // where that is refused, the unspecified address with the group's port.
    if rx.bind(&SockAddr::from(o.group)).is_err() {
        let any: SocketAddr = match o.group {
            SocketAddr::V4(g) => (Ipv4Addr::UNSPECIFIED, g.port()).into(),
            SocketAddr::V6(g) => (Ipv6Addr::UNSPECIFIED, g.port()).into(),
        };
        rx.bind(&SockAddr::from(any)).map_err(|e| err("bind", e))?;
    }
    let tx_bind: SocketAddr = match o.group {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let tx = Socket::new(Domain::for_address(o.group), Type::DGRAM, Some(Protocol::UDP)).map_err(|e| err("socket", e))?;
    tx.set_nonblocking(true).map_err(|e| err("socket", e))?;
    tx.bind(&SockAddr::from(tx_bind)).map_err(|e| err("bind", e))?;
    match o.group.ip() {
        IpAddr::V4(g) => {
            if o.interfaces.is_empty() {
                rx.join_multicast_v4(&g, &Ipv4Addr::UNSPECIFIED).map_err(|e| err("join", e))?;
            }
            for (n, spec) in o.interfaces.iter().enumerate() {
                let (idx, v4) = resolve_interface(spec, &all)?;
                if idx != 0 {
                    rx.join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(idx)).map_err(|e| err(&format!("join on {spec}"), e))?;
                } else {
                    rx.join_multicast_v4(&g, &v4.unwrap_or(Ipv4Addr::UNSPECIFIED)).map_err(|e| err(&format!("join on {spec}"), e))?;
                }
                if n == 0 {
                    let ifaddr = v4.ok_or_else(|| NetError(format!("interface {spec:?} has no IPv4 address to send from")))?;
                    tx.set_multicast_if_v4(&ifaddr).map_err(|e| err("outgoing interface", e))?;
                }
            }
            tx.set_multicast_ttl_v4(o.ttl).map_err(|e| err("ttl", e))?;
            tx.set_multicast_loop_v4(o.loopback).map_err(|e| err("loopback", e))?;
        }
        IpAddr::V6(g) => {
            let idxs: Vec<u32> = if o.interfaces.is_empty() { vec![0] } else { o.interfaces.iter().map(|s| resolve_interface(s, &all).map(|r| r.0)).collect::<Result<_, _>>()? };
            for &i in &idxs {
                rx.join_multicast_v6(&g, i).map_err(|e| err("join", e))?;
            }
            tx.set_multicast_if_v6(idxs[0]).map_err(|e| err("outgoing interface", e))?;
            tx.set_multicast_hops_v6(o.ttl).map_err(|e| err("hops", e))?;
            tx.set_multicast_loop_v6(o.loopback).map_err(|e| err("loopback", e))?;
        }
    }
    let rx = UdpSocket::from_std(rx.into()).map_err(|e| NetError(e.to_string()))?;
    let tx = UdpSocket::from_std(tx.into()).map_err(|e| NetError(e.to_string()))?;
    Ok((rx, tx, local))
}

/// Receives datagrams and routes their events without waiting on the router (when it is
/// saturated they are dropped and counted).
#[cfg(not(target_os = "linux"))]
pub async fn receive_loop(sock: Arc<UdpSocket>, origin: u64, own: Option<OwnSends>, s: Arc<DatagramSettings>, router: RouterHandle, cancel: CancellationToken) {
    let mut buf = vec![0u8; s.max_datagram + 1];
    loop {
        let (n, from) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(link = %s.link, "recv error: {e}");
                    continue;
                }
            },
        };
        if let Some(ev) = datagram_event(&buf[..n], false, from, &own, &s) {
            crate::link::ingest::try_ingest(&router, Origin { id: origin, policy: &s.policy, counters: &s.counters }, ev);
        }
    }
}

/// The batched receiver (Linux): a plain thread takes up to 64 datagrams per `recvmmsg`,
/// decodes them and hands the events to the router in one command, waiting while it is
/// saturated (the socket buffer holds what arrives meanwhile). It checks `cancel` at least
/// every 200 ms.
#[cfg(target_os = "linux")]
pub fn receive_thread(sock: std::net::UdpSocket, origin: u64, own: Option<OwnSends>, s: Arc<DatagramSettings>, router: RouterHandle, cancel: CancellationToken) {
    if let Err(e) = sock.set_nonblocking(false).and_then(|_| sock.set_read_timeout(Some(Duration::from_millis(200)))) {
        tracing::error!(link = %s.link, "udp receiver: {e}");
        return;
    }
    let mut batch = super::mmsg::RecvBatch::new(64, s.max_datagram + 1);
    let o = Origin { id: origin, policy: &s.policy, counters: &s.counters };
    while !cancel.is_cancelled() {
        let n = match batch.recv(&sock) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => continue,
            Err(e) => {
                tracing::debug!(link = %s.link, "recv error: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let out: Vec<Arc<Message>> = (0..n)
            .filter_map(|i| {
                let (data, from, truncated) = batch.get(i);
                let from = from.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                datagram_event(data, truncated, from, &own, &s).and_then(|ev| prepare(&router.node_id, o, ev, None))
            })
            .collect();
        if !router.route_many_blocking(out) {
            return;
        }
    }
}

/// Attaches a sending peer for this link and sends each event it gets as one datagram.
pub async fn send_loop(sock: Arc<UdpSocket>, target: SocketAddr, id: u64, s: Arc<DatagramSettings>, router: RouterHandle, cancel: CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<Arc<Message>>(s.queue_depth);
    let codec = if s.format == WireFormat::ProtoMesh { Codec::ProtobufMesh } else { Codec::Xml };
    router.attach(PeerInfo::output(id, &s.link, s.transport, target.to_string(), codec, s.policy.clone(), tx, s.counters.clone(), &cancel)).await;
    loop {
        let m = tokio::select! {
            _ = cancel.cancelled() => break,
            m = rx.recv() => match m { Some(m) => m, None => break },
        };
        match sock.send_to(m.encoded(s.format), target).await {
            Ok(n) => {
                LinkCounters::inc(&s.counters.events_out);
                LinkCounters::add(&s.counters.bytes_out, n as u64);
            }
            Err(e) => tracing::debug!(link = %s.link, %target, "send failed: {e}"),
        }
    }
    router.detach(id).await;
}
