//! Datagram links: UDP listen (XML or mesh protobuf, mixed), UDP send to a unicast address,
//! and multicast groups (join on one or several interfaces, IPv4 and IPv6, TTL, loopback,
//! SO_REUSEADDR and SO_REUSEPORT before bind so other TAK apps on the host keep working,
//! a chosen outgoing interface). Datagrams are received into max+1 bytes so truncation is
//! seen and counted. Readers never wait on the router: when it is saturated they drop and
//! count.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::stream::{ingest, log_bad_input};
use crate::codec::{mesh, WireFormat};
use crate::router::{LinkCounters, Message, PeerInfo, PeerPolicy, RouterHandle};

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

/// Receives datagrams and routes their events. `own`: datagrams from this source (our own
/// multicast sends looped back) are ignored.
pub async fn receive_loop(sock: Arc<UdpSocket>, origin: u64, own: Option<(u16, HashSet<IpAddr>)>, s: Arc<DatagramSettings>, router: RouterHandle, cancel: CancellationToken) {
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
        if let Some((port, addrs)) = &own {
            if from.port() == *port && (from.ip().is_loopback() || addrs.contains(&from.ip())) {
                continue;
            }
        }
        s.counters.bytes_in.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        if n > s.max_datagram {
            let c = s.counters.truncated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log_bad_input(c, &s.link, &from.to_string(), &format!("datagram larger than {} bytes dropped", s.max_datagram));
            continue;
        }
        match mesh::decode(&buf[..n]) {
            Ok(d) => {
                if let Some(ev) = d.event {
                    ingest(&router, &s.policy, &s.counters, origin, ev, false).await;
                }
            }
            Err(e) => {
                let c = s.counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log_bad_input(c, &s.link, &from.to_string(), &e);
            }
        }
    }
}

/// The batched receiver (Linux): a plain thread takes up to 64 datagrams per `recvmmsg`,
/// decodes them and hands the events to the router, waiting while it is saturated. It
/// checks `cancel` at least every 200 ms.
#[cfg(target_os = "linux")]
pub fn receive_thread(sock: std::net::UdpSocket, origin: u64, own: Option<(u16, HashSet<IpAddr>)>, s: Arc<DatagramSettings>, router: RouterHandle, cancel: CancellationToken) {
    if let Err(e) = sock.set_nonblocking(false).and_then(|_| sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))) {
        tracing::error!(link = %s.link, "udp receiver: {e}");
        return;
    }
    let mut batch = super::mmsg::RecvBatch::new(64, s.max_datagram + 1);
    while !cancel.is_cancelled() {
        let n = match batch.recv(&sock) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => continue,
            Err(e) => {
                tracing::debug!(link = %s.link, "recv error: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let (data, from, truncated) = batch.get(i);
            let from = from.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            if let Some((port, addrs)) = &own {
                if from.port() == *port && (from.ip().is_loopback() || addrs.contains(&from.ip())) {
                    continue;
                }
            }
            s.counters.bytes_in.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if truncated || data.len() > s.max_datagram {
                let c = s.counters.truncated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log_bad_input(c, &s.link, &from.to_string(), &format!("datagram larger than {} bytes dropped", s.max_datagram));
                continue;
            }
            match mesh::decode(data) {
                Ok(d) => {
                    if let Some(m) = d.event.and_then(|ev| super::stream::prepare(&router, &s.policy, &s.counters, origin, ev)) {
                        out.push(m);
                    }
                }
                Err(e) => {
                    let c = s.counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    log_bad_input(c, &s.link, &from.to_string(), &e);
                }
            }
        }
        // One hand-over per batch; while the router is saturated the socket buffer holds
        // what arrives.
        if !router.route_many_blocking(out) {
            return;
        }
    }
}

/// Attaches a sending peer for this link and sends each event it gets as one datagram.
pub async fn send_loop(sock: Arc<UdpSocket>, target: SocketAddr, id: u64, s: Arc<DatagramSettings>, router: RouterHandle, cancel: CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<Arc<Message>>(s.queue_depth);
    let peer = PeerInfo::output(id, &s.link, s.transport, target.to_string(), s.policy.clone(), tx, s.counters.clone(), &cancel);
    if s.format == crate::codec::WireFormat::ProtoMesh {
        peer.codec.store(crate::router::codec::PROTOBUF_MESH, std::sync::atomic::Ordering::Relaxed);
    }
    router.attach(peer).await;
    loop {
        let m = tokio::select! {
            _ = cancel.cancelled() => break,
            m = rx.recv() => match m { Some(m) => m, None => break },
        };
        let b = m.encoded(s.format);
        match sock.send_to(b, target).await {
            Ok(n) => {
                s.counters.events_out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                s.counters.bytes_out.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(link = %s.link, %target, "send failed: {e}"),
        }
    }
    router.detach(id).await;
}
