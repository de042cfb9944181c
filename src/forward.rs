//! The upstream client. Each query gets a fresh UDP socket on a random
//! ephemeral port (connected, so the kernel already drops datagrams from
//! other addresses) and a random ID; a reply counts only if its ID and
//! question match, anything else is ignored while we keep waiting until the
//! deadline. TC=1 → the same question over TCP. Upstreams are tried in order
//! within one overall `timeout_ms`; the reply bytes are returned untouched.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use crate::metrics::Metrics;
use crate::wire::MAX_UDP_PAYLOAD;
use crate::wire::{self, ResponseScan};

/// `[upstream]`, validated.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub tcp_timeout: Duration,
}

/// Largest UDP reply we read; we advertise 1232, this leaves room for
/// upstreams that ignore it.
const UDP_RECV: usize = 4096;

#[derive(Debug, Error)]
pub(crate) enum ForwardError {
    #[error("no upstream answered within {0:?}")]
    Timeout(Duration),
    #[error("every upstream failed; last error: {0}")]
    Failed(String),
}

/// The question as it goes upstream.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamQuery<'a> {
    /// Lowercased wire-form name.
    pub name: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub rd: bool,
    pub cd: bool,
    pub ad: bool,
    /// `Some(dnssec_ok)` when the client used EDNS: we mirror it, so an
    /// answer never carries an OPT the client did not ask for.
    pub edns: Option<bool>,
    /// The zone the name belongs to (its registered domain): failures
    /// count against an upstream's health only across zones.
    pub zone: &'a [u8],
}

pub(crate) struct Forwarder {
    metrics: Arc<Metrics>,
    servers: Vec<SocketAddr>,
    timeout: Duration,
    tcp_timeout: Duration,
    health: Vec<Health>,
    epoch: std::time::Instant,
}

/// Consecutive failures after which an upstream is asked last...
const SICK_AFTER: u32 = 3;
/// ...until this long after its last failure, when one query probes it again.
const SICK_FOR_MS: u64 = 5_000;

/// Without this, a silent first upstream would cost every cache miss its
/// share of the timeout.
///
/// Kept per upstream *and zone*: a failure counts only when the zone
/// differs from the last failure's. A random-subdomain flood against one
/// dead zone then never marks an upstream sick (which would send every
/// other zone's questions to the next upstream, or SERVFAIL with one),
/// while an upstream that is really down fails for many zones in a row
/// and is moved to the end as before.
#[derive(Debug, Default)]
struct Health {
    fails: AtomicU32,
    last_fail_ms: AtomicU64,
    /// Hash of the zone of the last failure (0: none since the last success).
    last_fail_zone: AtomicU64,
}

fn zone_hash(zone: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in zone {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h.max(1)
}

/// The encoded query with ID `id`.
pub(crate) fn build_query(id: u16, q: &UpstreamQuery<'_>) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + q.name.len() + 4 + 11);
    let mut flags = 0u16;
    if q.rd {
        flags |= wire::FLAG_RD;
    }
    if q.cd {
        flags |= wire::FLAG_CD;
    }
    if q.ad {
        flags |= wire::FLAG_AD;
    }
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(q.edns.is_some())]);
    v.extend_from_slice(q.name);
    v.extend_from_slice(&q.qtype.to_be_bytes());
    v.extend_from_slice(&q.qclass.to_be_bytes());
    if let Some(dnssec_ok) = q.edns {
        wire::push_opt(&mut v, dnssec_ok, 0);
        // push_opt writes our own payload size; it is the same 1232.
        debug_assert_eq!(MAX_UDP_PAYLOAD, 1232);
    }
    v
}

enum Attempt {
    Answer(Vec<u8>, ResponseScan),
    Truncated,
}

fn is_failover_rcode(rcode: u16) -> bool {
    matches!(
        rcode,
        wire::RCODE_SERVFAIL | wire::RCODE_REFUSED | wire::RCODE_NOTIMP | wire::RCODE_FORMERR
    )
}

impl Forwarder {
    pub(crate) fn new(cfg: &UpstreamConfig, metrics: Arc<Metrics>) -> Forwarder {
        Forwarder {
            metrics,
            servers: cfg.servers.clone(),
            timeout: cfg.timeout,
            tcp_timeout: cfg.tcp_timeout,
            health: cfg.servers.iter().map(|_| Health::default()).collect(),
            epoch: std::time::Instant::now(),
        }
    }

    /// The longest one [`Forwarder::resolve`] takes (TCP retries included).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Ask the upstreams in order. Each gets an equal share of what is left
    /// of the overall timeout, so a dead first server still leaves time for
    /// the next. An upstream SERVFAIL/REFUSED moves on too, but is returned
    /// if nobody does better.
    pub(crate) async fn resolve(
        &self,
        q: &UpstreamQuery<'_>,
    ) -> Result<(Vec<u8>, ResponseScan), ForwardError> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let n = self.servers.len();
        let mut last_err = String::from("no upstream configured");
        // Boxed: an exchange waits with this in its future, and it is
        // almost always None.
        let mut fallback: Option<Box<(Vec<u8>, ResponseScan)>> = None;
        for (i, idx) in self.order().into_iter().enumerate() {
            let server = self.servers[idx];
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let share = (deadline - now) / (n - i) as u32;
            let sent = Instant::now();
            let result = match self.udp(server, q, now + share).await {
                Ok(Attempt::Truncated) => {
                    let tcp_deadline = deadline.min(Instant::now() + self.tcp_timeout);
                    // Boxed: the TCP retry is rare, and inline its future
                    // would add to every exchange waiting on UDP.
                    Box::pin(self.tcp(server, q, tcp_deadline)).await
                }
                Ok(Attempt::Answer(b, s)) => Ok((b, s)),
                Err(e) => Err(e),
            };
            if result.is_ok() {
                self.metrics.upstream_ok(server, sent.elapsed());
                self.health[idx].last_fail_zone.store(0, Ordering::Relaxed);
                let before = self.health[idx].fails.swap(0, Ordering::Relaxed);
                if before >= SICK_AFTER {
                    tracing::info!(%server, "upstream answering again");
                }
            } else {
                self.metrics.upstream_error(server);
                self.record_failure(idx, q.zone);
            }
            match result {
                Ok((b, s)) if is_failover_rcode(s.rcode()) && i + 1 < n => {
                    fallback = Some(Box::new((b, s)));
                }
                Ok(ok) => return Ok(ok),
                Err(e) => {
                    tracing::debug!(%server, error = %e, "upstream attempt failed");
                    last_err = format!("{server}: {e}");
                }
            }
        }
        if let Some(f) = fallback {
            return Ok(*f);
        }
        if Instant::now() >= deadline {
            Err(ForwardError::Timeout(self.timeout))
        } else {
            Err(ForwardError::Failed(last_err))
        }
    }

    /// One failed attempt at upstream `idx` for a name in `zone`.
    fn record_failure(&self, idx: usize, zone: &[u8]) {
        let h = &self.health[idx];
        let z = zone_hash(zone);
        h.last_fail_ms.store(self.now_ms(), Ordering::Relaxed);
        let previous = h.last_fail_zone.swap(z, Ordering::Relaxed);
        if previous == z && h.fails.load(Ordering::Relaxed) > 0 {
            // The same zone again: its authorities, not this upstream.
            return;
        }
        let before = h.fails.fetch_add(1, Ordering::Relaxed);
        if before + 1 == SICK_AFTER {
            let server = self.servers[idx];
            tracing::warn!(%server, "upstream failing: {SICK_AFTER} attempts in a row across zones; asked last for now");
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Upstream indices to try: the configured order, recently failing
    /// ones moved to the end.
    fn order(&self) -> Vec<usize> {
        let now = self.now_ms();
        let sick = |i: usize| {
            let h = &self.health[i];
            h.fails.load(Ordering::Relaxed) >= SICK_AFTER
                && now.saturating_sub(h.last_fail_ms.load(Ordering::Relaxed)) < SICK_FOR_MS
        };
        let n = self.servers.len();
        let mut v: Vec<usize> = (0..n).filter(|&i| !sick(i)).collect();
        v.extend((0..n).filter(|&i| sick(i)));
        v
    }

    async fn udp(
        &self,
        server: SocketAddr,
        q: &UpstreamQuery<'_>,
        deadline: Instant,
    ) -> io::Result<Attempt> {
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        // Port 0: the kernel picks a random ephemeral port per socket.
        // Bound and connected with the std calls (neither blocks for a
        // literal address): tokio's versions resolve their argument first,
        // and that resolver's future would sit in every waiting exchange.
        let std_sock = std::net::UdpSocket::bind(bind)?;
        std_sock.connect(server)?;
        std_sock.set_nonblocking(true)?;
        let sock = UdpSocket::from_std(std_sock)?;
        let id: u16 = rand::random();
        let msg = build_query(id, q);
        sock.send(&msg).await?;
        // No receive buffer is held while waiting (most of an exchange's
        // life under a flood of names that never answer): wait for a
        // datagram by peeking at its sender (a pending ICMP error surfaces
        // here too and ends the attempt at once), then read it into the
        // stack.
        loop {
            match timeout_at(deadline, sock.peek_sender()).await {
                Ok(peeked) => {
                    peeked?;
                }
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "upstream timeout")),
            }
            match read_reply(&sock, id, q) {
                Ok(Some(attempt)) => return Ok(attempt),
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn tcp(
        &self,
        server: SocketAddr,
        q: &UpstreamQuery<'_>,
        deadline: Instant,
    ) -> io::Result<(Vec<u8>, ResponseScan)> {
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "upstream TCP timeout");
        timeout_at(deadline, tcp_query(server, q))
            .await
            .map_err(|_| timed_out())?
    }
}

/// One question over a new TCP connection to `server`: the first reply
/// that passes [`accept_reply`] (others are read past). No timeout of its
/// own: callers bound it (the query path after a truncated answer, the
/// web front's origin resolver).
pub(crate) async fn tcp_query(
    server: SocketAddr,
    q: &UpstreamQuery<'_>,
) -> io::Result<(Vec<u8>, ResponseScan)> {
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let id: u16 = rand::random();
    let msg = build_query(id, q);
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    framed.extend_from_slice(&msg);
    stream.write_all(&framed).await?;
    loop {
        let len = usize::from(stream.read_u16().await?);
        let mut reply = vec![0u8; len];
        stream.read_exact(&mut reply).await?;
        if let Some(scan) = accept_reply(&reply, id, q) {
            return Ok((reply, scan));
        }
    }
}

/// Read one datagram if there is one: `Some` for our reply, `None` for
/// anything else (ignored; the wait goes on).
fn read_reply(sock: &UdpSocket, id: u16, q: &UpstreamQuery<'_>) -> io::Result<Option<Attempt>> {
    let mut buf = [0u8; UDP_RECV];
    let n = sock.try_recv(&mut buf)?;
    let reply = &buf[..n];
    Ok(match accept_reply(reply, id, q) {
        Some(scan) if scan.truncated() => Some(Attempt::Truncated),
        Some(scan) => Some(Attempt::Answer(reply.to_vec(), scan)),
        None => None,
    })
}

/// The anti-spoofing check: a well-formed response with our ID and our
/// question (case-insensitively). Anything else (garbage, a reply to
/// another query, a forgery) is ignored and the wait goes on.
pub(crate) fn accept_reply(reply: &[u8], id: u16, q: &UpstreamQuery<'_>) -> Option<ResponseScan> {
    let scan = wire::scan_response(reply)?;
    (scan.id == id
        && scan.flags & wire::FLAG_QR != 0
        && wire::question_matches(reply, &scan, q.name, q.qtype, q.qclass))
    .then_some(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Message;

    #[test]
    fn failing_upstreams_move_to_the_end() {
        let cfg = UpstreamConfig {
            servers: vec![
                "192.0.2.1:53".parse().unwrap(),
                "192.0.2.2:53".parse().unwrap(),
            ],
            timeout: Duration::from_millis(100),
            tcp_timeout: Duration::from_millis(100),
        };
        let f = Forwarder::new(&cfg, Arc::new(Metrics::new(&cfg.servers)));
        assert_eq!(f.order(), vec![0, 1]);
        f.health[0].fails.store(SICK_AFTER, Ordering::Relaxed);
        f.health[0]
            .last_fail_ms
            .store(f.now_ms(), Ordering::Relaxed);
        assert_eq!(f.order(), vec![1, 0]);
        // Long ago: probed first again.
        let mut f = f;
        if let Some(earlier) = f.epoch.checked_sub(Duration::from_millis(SICK_FOR_MS + 10)) {
            f.epoch = earlier;
            assert_eq!(f.order(), vec![0, 1]);
        }
    }

    fn forwarder(server: SocketAddr) -> Forwarder {
        let cfg = UpstreamConfig {
            servers: vec![server],
            timeout: Duration::from_millis(800),
            tcp_timeout: Duration::from_millis(800),
        };
        Forwarder::new(&cfg, Arc::new(Metrics::new(&cfg.servers)))
    }

    fn question(name: &[u8]) -> UpstreamQuery<'_> {
        UpstreamQuery {
            name,
            qtype: 1,
            qclass: 1,
            rd: true,
            cd: false,
            ad: false,
            edns: None,
            zone: b"example",
        }
    }

    #[tokio::test]
    async fn an_answer_is_read_and_a_closed_port_fails_at_once() {
        let up = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = up.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = up.recv_from(&mut buf) {
                // Garbage first (ignored), then the query echoed back as a
                // response: our ID and question.
                let _ = up.send_to(b"junk", from);
                buf[2] |= 0x80;
                let _ = up.send_to(&buf[..n], from);
            }
        });
        let name = wire::dotted_to_wire("a.example");
        let f = forwarder(addr);
        let (reply, scan) = f.resolve(&question(&name)).await.unwrap();
        assert_eq!(scan.rcode(), 0);
        assert!(reply.len() > 12);

        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        let f = forwarder(gone);
        let t0 = std::time::Instant::now();
        let err = f.resolve(&question(&name)).await.unwrap_err();
        assert!(matches!(err, ForwardError::Failed(_)), "{err}");
        assert!(
            t0.elapsed() < Duration::from_millis(400),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn one_dead_zone_does_not_make_an_upstream_sick() {
        let cfg = UpstreamConfig {
            servers: vec![
                "192.0.2.1:53".parse().unwrap(),
                "192.0.2.2:53".parse().unwrap(),
            ],
            timeout: Duration::from_millis(100),
            tcp_timeout: Duration::from_millis(100),
        };
        let f = Forwarder::new(&cfg, Arc::new(Metrics::new(&cfg.servers)));
        for _ in 0..100 {
            f.record_failure(0, b"victim.org");
        }
        assert_eq!(f.order(), vec![0, 1], "one zone failing: still asked first");
        // Failing across zones is the upstream's own fault.
        for zone in [&b"a.org"[..], b"victim.org", b"b.org"] {
            f.record_failure(0, zone);
        }
        assert_eq!(f.order(), vec![1, 0]);
    }

    #[test]
    fn query_encoding() {
        let name = wire::dotted_to_wire("www.example.com");
        let q = UpstreamQuery {
            name: &name,
            qtype: 28,
            qclass: 1,
            rd: true,
            cd: true,
            ad: false,
            edns: Some(true),
            zone: b"example.com",
        };
        let b = build_query(0xbeef, &q);
        let m = Message::from_vec(&b).unwrap();
        assert_eq!(m.metadata.id, 0xbeef);
        assert!(m.metadata.recursion_desired);
        assert!(m.metadata.checking_disabled);
        assert_eq!(m.queries[0].name().to_ascii(), "www.example.com.");
        let e = m.edns.unwrap();
        assert!(e.flags().dnssec_ok);
        assert_eq!(e.max_payload(), 1232);
        let q = UpstreamQuery { edns: None, ..q };
        let m = Message::from_vec(&build_query(1, &q)).unwrap();
        assert!(m.edns.is_none());
    }
}
