//! The UDP front end: one OS thread per SO_REUSEPORT socket, batching with
//! recvmmsg/sendmmsg on Linux (one syscall per batch each way instead of
//! two per query), everything but cache misses answered inline.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::wire::Transport;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use super::query::{Inbound, Outcome};
use super::{ServeError, Shared};

/// Datagrams per recvmmsg/sendmmsg call.
const BATCH: usize = 32;
/// Largest query we accept; anything longer is garbage for a stub query.
const RECV_BUF: usize = 4096;
/// How often a blocked receive wakes to check for shutdown.
const POLL: Duration = Duration::from_millis(200);

fn bind_one(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    s.set_reuse_port(true)?;
    // Bigger buffers absorb bursts; the kernel caps them at rmem_max anyway.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    s.set_read_timeout(Some(POLL))?;
    Ok(s)
}

/// `n` sockets on `addr` (port 0: the first one's port for all).
pub(super) fn bind_all(addr: SocketAddr, n: usize) -> Result<Vec<std::net::UdpSocket>, ServeError> {
    let err = |source| ServeError::Bind {
        addr,
        proto: "udp",
        source,
    };
    let first = bind_one(addr).map_err(err)?;
    let actual = first
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    let mut v = vec![std::net::UdpSocket::from(first)];
    for _ in 1..n.max(1) {
        v.push(bind_one(actual).map_err(err)?.into());
    }
    Ok(v)
}

/// Send a reply from a forwarding task on the worker's socket, never blocking
/// the runtime thread.
pub(super) fn send_async_reply(sock: &std::net::UdpSocket, reply: &[u8], to: SocketAddr) {
    #[cfg(unix)]
    let r = SockRef::from(sock).send_to_with_flags(reply, &SockAddr::from(to), libc::MSG_DONTWAIT);
    #[cfg(not(unix))]
    let r = SockRef::from(sock).send_to(reply, &SockAddr::from(to));
    if let Err(e) = r {
        tracing::debug!(error = %e, %to, "udp send failed");
    }
}

fn spawn_forward(
    shared: &Arc<Shared>,
    sock: &Arc<std::net::UdpSocket>,
    rt: &tokio::runtime::Handle,
    p: super::query::Pending,
) {
    shared.forward(
        rt,
        super::Waiter {
            pending: p,
            to: super::ReplyTo::Udp(sock.clone()),
        },
    );
}

pub(super) fn worker(
    shared: Arc<Shared>,
    sock: std::net::UdpSocket,
    rt: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
) {
    let sock = Arc::new(sock);
    #[cfg(target_os = "linux")]
    mmsg::run(&shared, &sock, &rt, &stop);
    #[cfg(not(target_os = "linux"))]
    simple(&shared, &sock, &rt, &stop);
}

#[cfg(not(target_os = "linux"))]
fn simple(
    shared: &Arc<Shared>,
    sock: &Arc<std::net::UdpSocket>,
    rt: &tokio::runtime::Handle,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = Vec::with_capacity(RECV_BUF);
    while !stop.load(Ordering::Relaxed) {
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let snap = shared.snapshot.load();
        let inbound = Inbound {
            packet: &buf[..n],
            client: src,
            transport: Transport::Udp,
            now: Instant::now(),
            wall: SystemTime::now(),
        };
        match shared.core.handle(&snap, &inbound, &mut out) {
            Outcome::Reply => {
                let _ = sock.send_to(&out, src);
            }
            Outcome::Silent => {}
            // Transfers are TCP only (the core never hands one to UDP).
            Outcome::Transfer(_) => {}
            Outcome::Forward(p) => spawn_forward(shared, sock, rt, *p),
        }
    }
}

#[cfg(target_os = "linux")]
mod mmsg {
    use super::*;
    use std::os::fd::AsRawFd;

    fn sockaddr_to_std(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
        // SAFETY: the kernel filled `ss` with `len` bytes of a sockaddr of
        // family `ss_family`; SockAddr only reads within `len`.
        let sa = unsafe { SockAddr::new(*ss, len) };
        sa.as_socket()
    }

    /// Buffers and headers for one batch. Vectors are never resized after
    /// creation, so the raw pointers in the headers stay valid.
    struct Batch {
        bufs: Vec<u8>,
        addrs: Vec<libc::sockaddr_storage>,
        iov: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
        outs: Vec<Vec<u8>>,
        out_src: Vec<usize>,
        send_iov: Vec<libc::iovec>,
        send_hdrs: Vec<libc::mmsghdr>,
    }

    impl Batch {
        fn new() -> Batch {
            // SAFETY: all-zero is a valid value for these plain C structs.
            let zero_ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            let zero_iov = libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            };
            Batch {
                bufs: vec![0u8; BATCH * RECV_BUF],
                addrs: vec![zero_ss; BATCH],
                iov: vec![zero_iov; BATCH],
                hdrs: vec![zero_hdr; BATCH],
                outs: (0..BATCH).map(|_| Vec::with_capacity(RECV_BUF)).collect(),
                out_src: vec![0; BATCH],
                send_iov: vec![zero_iov; BATCH],
                send_hdrs: vec![zero_hdr; BATCH],
            }
        }

        fn arm_recv(&mut self) {
            let base = self.bufs.as_mut_ptr();
            for i in 0..BATCH {
                self.iov[i] = libc::iovec {
                    // SAFETY: i * RECV_BUF + RECV_BUF <= bufs.len().
                    iov_base: unsafe { base.add(i * RECV_BUF) }.cast(),
                    iov_len: RECV_BUF,
                };
                let h = &mut self.hdrs[i].msg_hdr;
                h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut self.iov[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
                self.hdrs[i].msg_len = 0;
            }
        }
    }

    pub(super) fn run(
        shared: &Arc<Shared>,
        sock: &Arc<std::net::UdpSocket>,
        rt: &tokio::runtime::Handle,
        stop: &AtomicBool,
    ) {
        let fd = sock.as_raw_fd();
        let mut b = Batch::new();
        while !stop.load(Ordering::Relaxed) {
            b.arm_recv();
            // SAFETY: hdrs/iov/addrs/bufs are armed above and outlive the call.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    b.hdrs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::Interrupted => {}
                    _ => {
                        tracing::warn!(error = %e, "recvmmsg failed");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                continue;
            }
            let n = n as usize;
            let snap = shared.snapshot.load();
            // One clock reading per batch: the packets arrived together.
            let (now, wall) = (Instant::now(), SystemTime::now());
            let mut nsend = 0;
            for i in 0..n {
                let h = &b.hdrs[i];
                let len = (h.msg_len as usize).min(RECV_BUF);
                if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    continue;
                }
                let Some(src) = sockaddr_to_std(&b.addrs[i], h.msg_hdr.msg_namelen) else {
                    continue;
                };
                let packet = &b.bufs[i * RECV_BUF..i * RECV_BUF + len];
                let inbound = Inbound {
                    packet,
                    client: src,
                    transport: Transport::Udp,
                    now,
                    wall,
                };
                match shared.core.handle(&snap, &inbound, &mut b.outs[nsend]) {
                    Outcome::Reply => {
                        b.out_src[nsend] = i;
                        nsend += 1;
                    }
                    Outcome::Silent => {}
                    // Transfers are TCP only (the core never hands one to UDP).
                    Outcome::Transfer(_) => {}
                    Outcome::Forward(p) => spawn_forward(shared, sock, rt, *p),
                }
            }
            drop(snap);
            if nsend == 0 {
                continue;
            }
            for k in 0..nsend {
                let i = b.out_src[k];
                b.send_iov[k] = libc::iovec {
                    iov_base: b.outs[k].as_mut_ptr().cast(),
                    iov_len: b.outs[k].len(),
                };
                let namelen = b.hdrs[i].msg_hdr.msg_namelen;
                let h = &mut b.send_hdrs[k].msg_hdr;
                h.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = namelen;
                h.msg_iov = &mut b.send_iov[k];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
            }
            let mut sent = 0;
            while sent < nsend {
                // SAFETY: send_hdrs[sent..nsend] point into outs/addrs/send_iov,
                // which are not touched until the loop ends.
                let r = unsafe {
                    libc::sendmmsg(
                        fd,
                        b.send_hdrs.as_mut_ptr().add(sent),
                        (nsend - sent) as libc::c_uint,
                        0,
                    )
                };
                if r <= 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // A reply that cannot be sent (e.g. EPERM from a
                    // firewall, or a bad address) must not stall the rest.
                    tracing::debug!(error = %e, "sendmmsg failed");
                    sent += 1;
                    continue;
                }
                sent += r as usize;
            }
        }
    }
}
