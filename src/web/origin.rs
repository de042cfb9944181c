//! Where the fronts send what they pass through: the real origin of a
//! steered host.
//!
//! The origin's address comes from the configured upstream resolvers
//! (`[upstream] servers`), asked directly: never from sinkhole's own policy
//! (which answers the front's own address for a steered host) and never
//! from what the client says. The host is resolved once (A and AAAA, over
//! UDP, TCP when truncated) and connected to as resolved, so DNS rebinding
//! (a first answer that passes the checks, a second that points inside)
//! has no second lookup to play with.
//!
//! Addresses the front must never connect to, whatever DNS says
//! ([`forbidden_origin`]): its own addresses (a loop), and unless
//! `web.allow_private_origins` is set, every address that is not a public
//! unicast one: loopback, private, shared (100.64/10: the ISP's own CGNAT
//! customers), link-local, unspecified, multicast, broadcast, reserved,
//! documentation and benchmarking ranges, and the IPv4-mapped, IPv4-
//! compatible, 6to4 and NAT64 forms of those.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData};
use thiserror::Error;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use crate::forward::{UpstreamQuery, accept_reply, build_query, tcp_query};
use crate::wire;

/// The most addresses of one host kept and tried.
const MAX_ADDRESSES: usize = 16;
/// The largest UDP answer read (we advertise 1232 with EDNS).
const UDP_RECV: usize = 4096;
/// CNAME links followed within one answer.
const MAX_CNAME_CHAIN: usize = 8;
/// Hosts whose addresses are kept: at most this many...
const CACHE_ENTRIES: usize = 4096;
/// ...each for its answer's TTL, and at most this long.
const CACHE_MAX_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub(crate) enum OriginError {
    #[error("{0:?} is not a host name the front resolves")]
    BadHost(String),
    #[error("no upstream resolver is configured")]
    NoUpstream,
    #[error("{host}: the upstream resolvers gave no address")]
    NoAddress { host: String },
    #[error("{host}: every address is one the front must not connect to ({addrs:?})")]
    Forbidden { host: String, addrs: Vec<IpAddr> },
    #[error("{host}: resolving and connecting took longer than {timeout:?}")]
    Timeout { host: String, timeout: Duration },
    #[error("{host}: no upstream resolver answered: {last}")]
    Resolve { host: String, last: String },
    #[error("{host}: cannot connect to {addr}: {source}")]
    Connect {
        host: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl OriginError {
    /// A fixed label per kind, for logs and metric labels.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            OriginError::BadHost(_) => "bad_host",
            OriginError::NoUpstream => "no_upstream",
            OriginError::NoAddress { .. } => "no_address",
            OriginError::Forbidden { .. } => "forbidden",
            OriginError::Timeout { .. } => "timeout",
            OriginError::Resolve { .. } => "resolve",
            OriginError::Connect { .. } => "connect",
        }
    }
}

/// Resolves steered hosts through the upstream resolvers and connects to
/// them (see the module documentation for the rules).
///
/// Answers are kept for their TTL (at most a minute, at most
/// [`CACHE_ENTRIES`] hosts), so that the fronts do not add a lookup to
/// every connection or proxied request. Each connection still connects to
/// the addresses it got, checked, with no lookup in between.
#[derive(Debug, Clone)]
pub(crate) struct OriginResolver {
    upstreams: Vec<SocketAddr>,
    allow_private: bool,
    own: Vec<IpAddr>,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

#[derive(Debug)]
struct Cached {
    addrs: Vec<IpAddr>,
    until: Instant,
}

impl OriginResolver {
    /// `upstreams`: the resolvers to ask, in order (`[upstream] servers`).
    /// `allow_private`: `web.allow_private_origins`. `own`: the front's
    /// own addresses (its listeners and `policy.address_v4`/`_v6`), never
    /// connected to.
    pub(crate) fn new(upstreams: Vec<SocketAddr>, allow_private: bool, own: Vec<IpAddr>) -> Self {
        OriginResolver {
            upstreams,
            allow_private,
            own: own.into_iter().map(canonical).collect(),
            cache: Arc::default(),
        }
    }

    /// Whether the front may connect to `ip` under this configuration.
    pub(crate) fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        !self.own.contains(&ip)
            && !ip.is_unspecified()
            && (self.allow_private || !forbidden_origin(ip))
    }

    /// Resolve `host` (normalised ASCII) once, refuse forbidden addresses,
    /// and connect to the first permitted address that accepts, all
    /// within `timeout`. Returns the stream and the address connected to.
    pub(crate) async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<(TcpStream, SocketAddr), OriginError> {
        let deadline = Instant::now() + timeout;
        let timed_out = || OriginError::Timeout {
            host: host.to_string(),
            timeout,
        };
        let addrs = match timeout_at(deadline, self.resolve(host, deadline)).await {
            Ok(r) => r?,
            Err(_) => return Err(timed_out()),
        };
        let (permitted, refused): (Vec<IpAddr>, Vec<IpAddr>) =
            addrs.into_iter().partition(|ip| self.permits(*ip));
        if permitted.is_empty() {
            return Err(OriginError::Forbidden {
                host: host.to_string(),
                addrs: refused,
            });
        }
        if !refused.is_empty() {
            tracing::debug!(host, ?refused, "origin addresses skipped");
        }
        let mut last = None;
        let n = permitted.len();
        for (i, ip) in permitted.into_iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Each address gets an equal share of what is left, so that one
            // that never answers leaves time for the next.
            let share = (deadline - now) / (n - i) as u32;
            let addr = SocketAddr::new(ip, port);
            match timeout_at(now + share, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok((stream, addr)),
                Ok(Err(source)) => {
                    last = Some(OriginError::Connect {
                        host: host.to_string(),
                        addr,
                        source,
                    })
                }
                Err(_) => last = Some(timed_out()),
            }
        }
        Err(last.unwrap_or_else(timed_out))
    }

    /// The addresses of `host`: A then AAAA records, from the first
    /// upstream that answers both questions.
    pub(crate) async fn resolve(
        &self,
        host: &str,
        deadline: Instant,
    ) -> Result<Vec<IpAddr>, OriginError> {
        let qname = wire_name(host).ok_or_else(|| OriginError::BadHost(host.to_string()))?;
        if self.upstreams.is_empty() {
            return Err(OriginError::NoUpstream);
        }
        if let Some(addrs) = self.cached(host) {
            return Ok(addrs);
        }
        let mut last = String::from("no attempt");
        let n = self.upstreams.len();
        for (i, &server) in self.upstreams.iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let until = now + (deadline - now) / (n - i) as u32;
            let (a, aaaa) = tokio::join!(
                lookup(server, &qname, wire::TYPE_A, until),
                lookup(server, &qname, wire::TYPE_AAAA, until),
            );
            match (a, aaaa) {
                (Ok((mut v4, ttl4)), Ok((v6, ttl6))) => {
                    // The TTL of the records there are (an empty side has
                    // none).
                    let ttl = [(&v4, ttl4), (&v6, ttl6)]
                        .into_iter()
                        .filter(|(a, _)| !a.is_empty())
                        .map(|(_, t)| t)
                        .min()
                        .unwrap_or(0);
                    v4.extend(v6);
                    v4.truncate(MAX_ADDRESSES);
                    if v4.is_empty() {
                        return Err(OriginError::NoAddress {
                            host: host.to_string(),
                        });
                    }
                    self.keep(host, &v4, ttl);
                    return Ok(v4);
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(%server, host, error = %e, "origin lookup failed");
                    last = format!("{server}: {e}");
                }
            }
        }
        Err(OriginError::Resolve {
            host: host.to_string(),
            last,
        })
    }
}

impl OriginResolver {
    fn cached(&self, host: &str) -> Option<Vec<IpAddr>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(host)
            .filter(|c| c.until > Instant::now())
            .map(|c| c.addrs.clone())
    }

    fn keep(&self, host: &str, addrs: &[IpAddr], ttl: u32) {
        let ttl = Duration::from_secs(u64::from(ttl)).min(CACHE_MAX_TTL);
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES && !cache.contains_key(host) {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= CACHE_ENTRIES {
                // Full of live entries: start over rather than scan for the
                // oldest on every insert (a minute of answers at most).
                cache.clear();
            }
        }
        cache.insert(
            host.to_string(),
            Cached {
                addrs: addrs.to_vec(),
                until: now + ttl,
            },
        );
    }
}

/// The wire form of a normalised host name, `None` when it is not one
/// (empty labels, labels over 63 bytes, characters a host name has not,
/// an IP literal).
fn wire_name(host: &str) -> Option<Vec<u8>> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    let mut out = Vec::with_capacity(host.len() + 2);
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return None;
        }
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.push(0);
    Some(out)
}

#[derive(Debug, Error)]
enum LookupError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("timed out")]
    Timeout,
    #[error("answered {0}")]
    Rcode(u16),
    #[error("undecodable answer")]
    Undecodable,
}

/// One question to one upstream: UDP, then TCP if the answer is
/// truncated. The addresses and the smallest TTL of the records used;
/// NXDOMAIN and NODATA are empty lists; SERVFAIL, REFUSED and the like are
/// errors (the next upstream may do better).
async fn lookup(
    server: SocketAddr,
    qname: &[u8],
    qtype: u16,
    deadline: Instant,
) -> Result<(Vec<IpAddr>, u32), LookupError> {
    let q = UpstreamQuery {
        name: qname,
        qtype,
        qclass: wire::CLASS_IN,
        rd: true,
        cd: false,
        ad: false,
        edns: Some(false),
        zone: b"",
    };
    let reply = match timeout_at(deadline, udp_exchange(server, &q)).await {
        Err(_) => return Err(LookupError::Timeout),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(Some(reply))) => reply,
        Ok(Ok(None)) => match timeout_at(deadline, tcp_query(server, &q)).await {
            Err(_) => return Err(LookupError::Timeout),
            Ok(r) => r?.0,
        },
    };
    addresses(&reply, qname, qtype)
}

/// `Some(answer)`, or `None` when the answer is truncated. Datagrams that
/// are not our answer (wrong ID or question, garbage) are ignored.
async fn udp_exchange(server: SocketAddr, q: &UpstreamQuery<'_>) -> io::Result<Option<Vec<u8>>> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    let id: u16 = rand::random();
    sock.send(&build_query(id, q)).await?;
    let mut buf = vec![0u8; UDP_RECV];
    loop {
        let n = sock.recv(&mut buf).await?;
        let reply = &buf[..n];
        if let Some(scan) = accept_reply(reply, id, q) {
            return Ok((!scan.truncated()).then(|| reply.to_vec()));
        }
    }
}

/// The addresses an accepted answer gives for `qname`: records of `qtype`
/// owned by the name or by a CNAME target reached from it, in order, and
/// the smallest TTL among them and the CNAMEs.
fn addresses(reply: &[u8], qname: &[u8], qtype: u16) -> Result<(Vec<IpAddr>, u32), LookupError> {
    let m = Message::from_vec(reply).map_err(|_| LookupError::Undecodable)?;
    let rcode = u16::from(m.metadata.response_code);
    match rcode {
        wire::RCODE_NOERROR => {}
        wire::RCODE_NXDOMAIN => return Ok((Vec::new(), 0)),
        other => return Err(LookupError::Rcode(other)),
    }
    let Ok(start) = Name::from_ascii(format!(
        "{}.",
        wire::presentation(qname).trim_end_matches('.')
    )) else {
        return Err(LookupError::Undecodable);
    };
    // The names that stand for the host: itself and its CNAME chain.
    let mut chain = vec![start];
    let mut ttl = u32::MAX;
    for _ in 0..MAX_CNAME_CHAIN {
        let Some(last) = chain.last() else { break };
        let next = m.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == *last => Some((target.0.clone(), r.ttl)),
            _ => None,
        });
        match next {
            Some((t, link_ttl)) if !chain.contains(&t) => {
                chain.push(t);
                ttl = ttl.min(link_ttl);
            }
            _ => break,
        }
    }
    let mut out = Vec::new();
    for r in &m.answers {
        if !chain.contains(&r.name) {
            continue;
        }
        match (&r.data, qtype) {
            (RData::A(a), wire::TYPE_A) => out.push(IpAddr::V4(a.0)),
            (RData::AAAA(a), wire::TYPE_AAAA) => out.push(IpAddr::V6(a.0)),
            _ => continue,
        }
        ttl = ttl.min(r.ttl);
    }
    let ttl = if out.is_empty() { 0 } else { ttl };
    Ok((out, ttl))
}

/// An IPv4-mapped address as its IPv4 form, anything else unchanged: a
/// dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Whether `ip` is outside public unicast space: an address the front must
/// not connect to unless `web.allow_private_origins` is set. IPv6 forms
/// that embed an IPv4 address (mapped, compatible, NAT64 well-known
/// prefix, 6to4) are judged by the address they embed.
pub(crate) fn forbidden_origin(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0                                        // "this network" 0/8 (RFC 1122)
        || a == 10                                // private (RFC 1918)
        || (a == 100 && (64..128).contains(&b))   // shared / CGNAT 100.64/10 (RFC 6598)
        || a == 127                               // loopback
        || (a == 169 && b == 254)                 // link-local
        || (a == 172 && (16..32).contains(&b))    // private
        || (a == 192 && b == 0 && c == 0)         // IETF protocol assignments 192.0.0/24
        || (a == 192 && b == 0 && c == 2)         // TEST-NET-1 (RFC 5737)
        || (a == 192 && b == 88 && c == 99)       // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168)                 // private
        || (a == 198 && (b == 18 || b == 19))     // benchmarking 198.18/15 (RFC 2544)
        || (a == 198 && b == 51 && c == 100)      // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)       // TEST-NET-3
        || a >= 224 // multicast 224/4, reserved 240/4, broadcast
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4); // ::ffff:0:0/96
    }
    // IPv4-compatible ::a.b.c.d (deprecated, RFC 4291 §2.5.5.1); this
    // also covers :: and ::1.
    if s[..6] == [0; 6] {
        return true;
    }
    // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): judged by the
    // IPv4 address it carries.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32));
    }
    // 6to4 2002::/16 (RFC 3056): the IPv4 address is in bits 16..48.
    if s[0] == 0x2002 {
        return forbidden_v4(Ipv4Addr::from(((s[1] as u32) << 16) | s[2] as u32));
    }
    (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)    // local-use NAT64 64:ff9b:1::/48 (RFC 8215)
        || (s[0] == 0x0100 && s[1..4] == [0; 3])     // discard-only 100::/64 (RFC 6666)
        || (s[0] == 0x2001 && s[1] == 0x0db8)        // documentation 2001:db8::/32
        || (s[0] & 0xfe00) == 0xfc00                 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80                 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0                 // site-local fec0::/10 (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast ff00::/8
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use hickory_proto::op::{MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{Record, RecordType};
    use tokio::net::TcpListener;

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    /// Every range of the rule, its edges, and public neighbours.
    #[test]
    fn forbidden_origins_table() {
        let table: &[(&str, bool)] = &[
            // IPv4
            ("0.0.0.0", true),
            ("0.255.255.255", true),
            ("1.0.0.0", false),
            ("9.255.255.255", false),
            ("10.0.0.1", true),
            ("10.255.255.255", true),
            ("11.0.0.0", false),
            ("100.63.255.255", false),
            ("100.64.0.0", true),
            ("100.127.255.255", true),
            ("100.128.0.0", false),
            ("127.0.0.1", true),
            ("127.255.255.254", true),
            ("128.0.0.1", false),
            ("169.254.0.1", true),
            ("169.254.169.254", true), // cloud metadata
            ("169.253.255.255", false),
            ("169.255.0.0", false),
            ("172.15.255.255", false),
            ("172.16.0.0", true),
            ("172.31.255.255", true),
            ("172.32.0.0", false),
            ("192.0.0.8", true),
            ("192.0.1.1", false),
            ("192.0.2.1", true),
            ("192.0.3.1", false),
            ("192.88.99.1", true),
            ("192.167.255.255", false),
            ("192.168.0.1", true),
            ("192.169.0.0", false),
            ("198.17.255.255", false),
            ("198.18.0.1", true),
            ("198.19.255.255", true),
            ("198.20.0.0", false),
            ("198.51.100.7", true),
            ("203.0.113.9", true),
            ("203.0.114.0", false),
            ("8.8.8.8", false),
            ("93.184.215.14", false),
            ("223.255.255.255", false),
            ("224.0.0.1", true),
            ("239.255.255.250", true),
            ("240.0.0.1", true),
            ("255.255.255.255", true),
            // IPv6
            ("::", true),
            ("::1", true),
            ("::2", true),
            ("::10.0.0.1", true), // IPv4-compatible
            ("::8.8.8.8", true),
            ("::ffff:127.0.0.1", true), // mapped
            ("::ffff:10.1.2.3", true),
            ("::ffff:100.64.1.1", true),
            ("::ffff:0.0.0.0", true),
            ("::ffff:8.8.8.8", false),
            ("64:ff9b::127.0.0.1", true), // NAT64
            ("64:ff9b::192.168.1.1", true),
            ("64:ff9b::100.100.1.1", true),
            ("64:ff9b::8.8.8.8", false),
            ("64:ff9b:1::1", true),  // local-use NAT64
            ("2002:7f00:1::", true), // 6to4 of 127.0.0.1
            ("2002:a00:1::1", true), // 6to4 of 10.0.0.1
            ("2002:808:808::1", false),
            ("100::1", true),
            ("100:0:0:1::", false),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
            ("fc00::1", true),
            ("fd12:3456::1", true),
            ("fe00::1", false),
            ("fe80::1", true),
            ("febf::1", true),
            ("fec0::1", true),
            ("ff02::1", true),
            ("ff0e::1", true),
            ("2606:4700::1111", false),
            ("2a00:1450:4001::200e", false),
        ];
        for (ip, want) in table {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(forbidden_origin(ip), *want, "{ip}");
        }
    }

    /// The same answers as an obviously-correct reference over ipnet
    /// prefixes, for random addresses (and their mapped forms).
    #[test]
    fn forbidden_origins_agree_with_a_prefix_list() {
        use ipnet::{IpNet, Ipv4Net};
        let v4_nets: Vec<Ipv4Net> = [
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.88.99.0/24",
            "192.168.0.0/16",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "224.0.0.0/3",
        ]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
        let reference = |ip: Ipv4Addr| v4_nets.iter().any(|n| n.contains(&ip));
        let v6_nets: Vec<IpNet> = [
            "::/96",
            "64:ff9b:1::/48",
            "100::/64",
            "2001:db8::/32",
            "fc00::/7",
            "fe80::/10",
            "fec0::/10",
            "ff00::/8",
        ]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200_000 {
            let ip = Ipv4Addr::from(next() as u32);
            let want = reference(ip);
            assert_eq!(forbidden_origin(IpAddr::V4(ip)), want, "{ip}");
            assert_eq!(
                forbidden_origin(IpAddr::V6(ip.to_ipv6_mapped())),
                want,
                "{ip} mapped"
            );
            let nat64 = Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(u32::from(ip)));
            assert_eq!(forbidden_origin(IpAddr::V6(nat64)), want, "{nat64}");
            let six_to_four =
                Ipv6Addr::from((0x2002u128 << 112) | (u128::from(u32::from(ip)) << 80));
            assert_eq!(
                forbidden_origin(IpAddr::V6(six_to_four)),
                want,
                "{six_to_four}"
            );
            // Random IPv6 outside the embedding prefixes.
            let raw = (u128::from(next()) << 64) | u128::from(next());
            let ip6 = Ipv6Addr::from(raw);
            let s = ip6.segments();
            if s[0] == 0x2002
                || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                || ip6.to_ipv4_mapped().is_some()
            {
                continue;
            }
            let want6 = v6_nets.iter().any(|n| n.contains(&IpAddr::V6(ip6)));
            assert_eq!(forbidden_origin(IpAddr::V6(ip6)), want6, "{ip6}");
        }
        // The rarely drawn prefixes, by hand.
        for (ip, want) in [
            ("fe80::1", true),
            ("ff00::", true),
            ("64:ff9b:1:ffff::1", true),
        ] {
            assert_eq!(forbidden_origin(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn own_addresses_are_refused_even_when_private_origins_are_allowed() {
        let own = vec![v4("198.51.100.80"), v6("2001:db8::80"), v4("127.0.0.5")];
        let strict = OriginResolver::new(vec![], false, own.clone());
        let open = OriginResolver::new(vec![], true, own);
        for ip in [
            "198.51.100.80",
            "2001:db8::80",
            "127.0.0.5",
            "::ffff:127.0.0.5",
            "::ffff:198.51.100.80",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!strict.permits(ip), "{ip}");
            assert!(!open.permits(ip), "{ip}");
        }
        for ip in ["127.0.0.1", "10.0.0.1", "::ffff:192.168.0.1", "fd00::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!strict.permits(ip), "{ip}");
            assert!(open.permits(ip), "{ip}");
        }
        for ip in ["0.0.0.0", "::"] {
            assert!(!open.permits(ip.parse().unwrap()), "{ip}");
        }
        assert!(strict.permits(v4("93.184.215.14")));
        // An own address given in its mapped form is still known.
        let mapped_own = OriginResolver::new(vec![], true, vec![v6("::ffff:127.0.0.9")]);
        assert!(!mapped_own.permits(v4("127.0.0.9")));
    }

    #[test]
    fn host_names_to_wire() {
        assert_eq!(wire_name("a.example").unwrap(), b"\x01a\x07example\x00");
        assert_eq!(wire_name("A.Example.").unwrap(), b"\x01a\x07example\x00");
        for bad in [
            "",
            ".",
            "a..b",
            "a b",
            "1.2.3.4",
            "::1",
            "a/b",
            "é.example",
            &"a".repeat(64),
        ] {
            assert!(wire_name(bad).is_none(), "{bad:?}");
        }
    }

    /// What the test resolver answers for a name.
    #[derive(Clone, Debug)]
    pub(crate) enum Script {
        Addrs(Vec<IpAddr>),
        /// A CNAME to the other name (answered with its records).
        Cname(&'static str),
        NxDomain,
        ServFail,
        /// TC=1 over UDP, the records over TCP.
        Truncated(Vec<IpAddr>),
        Silent,
    }

    /// A resolver on 127.0.0.1 (UDP and TCP on one port) answering from
    /// `scripts` (names lower-case, no trailing dot).
    pub(crate) async fn test_resolver(scripts: HashMap<&'static str, Script>) -> SocketAddr {
        test_resolver_counting(scripts).await.0
    }

    /// [`test_resolver`], and the number of questions it got.
    async fn test_resolver_counting(
        scripts: HashMap<&'static str, Script>,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = asked.clone();
        // UDP and TCP on one port: the kernel's UDP port may be taken for
        // TCP by another process, so try a few.
        let mut sockets = None;
        for _ in 0..50 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                sockets = Some((udp, tcp, addr));
                break;
            }
        }
        let (udp, tcp, addr) = sockets.expect("a port free for both UDP and TCP");
        let scripts = Arc::new(scripts);
        let s = scripts.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(reply) = answer(&buf[..n], &s, true) {
                    let _ = udp.send_to(&reply, from).await;
                }
            }
        });
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let s = scripts.clone();
                tokio::spawn(async move {
                    let Ok(len) = stream.read_u16().await else {
                        return;
                    };
                    let mut q = vec![0u8; usize::from(len)];
                    if stream.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    if let Some(reply) = answer(&q, &s, false) {
                        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&reply);
                        let _ = stream.write_all(&framed).await;
                    }
                });
            }
        });
        (addr, asked)
    }

    fn answer(query: &[u8], scripts: &HashMap<&'static str, Script>, udp: bool) -> Option<Vec<u8>> {
        let q = Message::from_vec(query).ok()?;
        let question = q.queries.first()?.clone();
        let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.add_query(question.clone());
        let mut owner = question.name().clone();
        let key = |n: &Name| n.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        let mut script = scripts.get(key(&owner).as_str()).cloned();
        if let Some(Script::Cname(target)) = script {
            let t = Name::from_ascii(format!("{target}.")).ok()?;
            m.add_answer(Record::from_rdata(
                owner.clone(),
                60,
                RData::CNAME(CNAME(t.clone())),
            ));
            owner = t;
            script = scripts.get(target).cloned();
        }
        let push = |m: &mut Message, addrs: &[IpAddr]| {
            for ip in addrs {
                match (ip, question.query_type()) {
                    (IpAddr::V4(a), RecordType::A) => {
                        m.add_answer(Record::from_rdata(owner.clone(), 60, RData::A(A(*a))));
                    }
                    (IpAddr::V6(a), RecordType::AAAA) => {
                        m.add_answer(Record::from_rdata(owner.clone(), 60, RData::AAAA(AAAA(*a))));
                    }
                    _ => {}
                }
            }
            // A record of the other type and one for another owner: both
            // ignored by the reader.
            m.add_answer(Record::from_rdata(
                Name::from_ascii("elsewhere.example.").unwrap(),
                60,
                RData::A(A(Ipv4Addr::new(127, 0, 0, 99))),
            ));
        };
        match script {
            None | Some(Script::NxDomain) => m.metadata.response_code = ResponseCode::NXDomain,
            Some(Script::ServFail) => m.metadata.response_code = ResponseCode::ServFail,
            Some(Script::Silent) => return None,
            Some(Script::Addrs(a)) => push(&mut m, &a),
            Some(Script::Truncated(a)) if udp => {
                m.metadata.truncation = true;
                let _ = a;
            }
            Some(Script::Truncated(a)) => push(&mut m, &a),
            Some(Script::Cname(_)) => {}
        }
        m.to_vec().ok()
    }

    fn scripts(entries: &[(&'static str, Script)]) -> HashMap<&'static str, Script> {
        entries.iter().cloned().collect()
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3)
    }

    #[tokio::test]
    async fn resolving_through_the_upstreams() {
        let up = test_resolver(scripts(&[
            (
                "both.example",
                Script::Addrs(vec![v4("127.0.0.7"), v6("::1"), v4("127.0.0.8")]),
            ),
            ("alias.example", Script::Cname("target.example")),
            ("target.example", Script::Addrs(vec![v4("127.0.0.9")])),
            (
                "big.example",
                Script::Truncated(vec![v4("127.0.0.10"), v4("127.0.0.11")]),
            ),
            ("empty.example", Script::Addrs(vec![])),
            ("broken.example", Script::ServFail),
            ("gone.example", Script::NxDomain),
        ]))
        .await;
        let r = OriginResolver::new(vec![up], true, vec![]);
        assert_eq!(
            r.resolve("both.example", far()).await.unwrap(),
            vec![v4("127.0.0.7"), v4("127.0.0.8"), v6("::1")]
        );
        assert_eq!(
            r.resolve("Alias.Example", far()).await.unwrap(),
            vec![v4("127.0.0.9")]
        );
        assert_eq!(
            r.resolve("big.example", far()).await.unwrap(),
            vec![v4("127.0.0.10"), v4("127.0.0.11")]
        );
        assert!(matches!(
            r.resolve("nx.example", far()).await,
            Err(OriginError::NoAddress { .. })
        ));
        assert!(matches!(
            r.resolve("gone.example", far()).await,
            Err(OriginError::NoAddress { .. })
        ));
        assert!(matches!(
            r.resolve("empty.example", far()).await,
            Err(OriginError::NoAddress { .. })
        ));
        assert!(matches!(
            r.resolve("broken.example", far()).await,
            Err(OriginError::Resolve { .. })
        ));
        assert!(matches!(
            r.resolve("1.2.3.4", far()).await,
            Err(OriginError::BadHost(_))
        ));
    }

    #[tokio::test]
    async fn answers_are_kept_for_their_ttl_at_most_a_minute() {
        let (up, asked) = test_resolver_counting(scripts(&[
            ("site.example", Script::Addrs(vec![v4("127.0.0.7")])),
            ("alias.example", Script::Cname("site.example")),
        ]))
        .await;
        let r = OriginResolver::new(vec![up], true, vec![]);
        let count = || asked.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            r.resolve("site.example", far()).await.unwrap(),
            vec![v4("127.0.0.7")]
        );
        assert_eq!(count(), 2, "A and AAAA");
        assert_eq!(
            r.resolve("site.example", far()).await.unwrap(),
            vec![v4("127.0.0.7")]
        );
        assert_eq!(count(), 2, "from the cache");
        r.resolve("alias.example", far()).await.unwrap();
        assert_eq!(count(), 4, "another host: asked");
        {
            let cache = r.cache.lock().unwrap();
            let left = cache["site.example"].until - Instant::now();
            assert!(left <= CACHE_MAX_TTL, "{left:?}");
        }
        // An expired entry is asked again.
        r.cache
            .lock()
            .unwrap()
            .get_mut("site.example")
            .unwrap()
            .until = Instant::now();
        r.resolve("site.example", far()).await.unwrap();
        assert_eq!(count(), 6);
        // Failures are not kept.
        assert!(r.resolve("nx.example", far()).await.is_err());
        assert!(r.resolve("nx.example", far()).await.is_err());
        assert_eq!(count(), 10);
        // Bounded: a full cache of live entries starts over.
        for i in 0..CACHE_ENTRIES + 5 {
            r.keep(&format!("h{i}.example"), &[v4("127.0.0.7")], 60);
        }
        assert!(r.cache.lock().unwrap().len() <= CACHE_ENTRIES);
    }

    #[tokio::test]
    async fn a_failing_upstream_is_passed_over() {
        let dead = test_resolver(scripts(&[("site.example", Script::ServFail)])).await;
        let silent = test_resolver(scripts(&[("site.example", Script::Silent)])).await;
        let good = test_resolver(scripts(&[(
            "site.example",
            Script::Addrs(vec![v4("127.0.0.7")]),
        )]))
        .await;
        let r = OriginResolver::new(vec![dead, silent, good], true, vec![]);
        let t0 = std::time::Instant::now();
        let got = r
            .resolve("site.example", Instant::now() + Duration::from_millis(900))
            .await;
        assert_eq!(got.unwrap(), vec![v4("127.0.0.7")]);
        // The silent one had a third of the time at most.
        assert!(
            t0.elapsed() < Duration::from_millis(700),
            "{:?}",
            t0.elapsed()
        );
    }

    #[tokio::test]
    async fn connect_as_resolved_and_refuse_forbidden_addresses() {
        let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = origin.local_addr().unwrap().port();
        let up = test_resolver(scripts(&[
            (
                "ok.example",
                Script::Addrs(vec![v4("0.0.0.0"), v4("127.0.0.1")]),
            ),
            (
                "inside.example",
                Script::Addrs(vec![v4("10.1.2.3"), v6("::ffff:127.0.0.1")]),
            ),
            ("dead.example", Script::Silent),
        ]))
        .await;
        let open = OriginResolver::new(vec![up], true, vec![]);
        let (stream, addr) = open
            .connect("ok.example", port, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(addr, SocketAddr::new(v4("127.0.0.1"), port));
        assert_eq!(stream.peer_addr().unwrap(), addr);

        let strict = OriginResolver::new(vec![up], false, vec![]);
        match strict
            .connect("ok.example", port, Duration::from_secs(2))
            .await
        {
            Err(OriginError::Forbidden { addrs, .. }) => {
                assert_eq!(addrs, vec![v4("0.0.0.0"), v4("127.0.0.1")])
            }
            other => panic!("{other:?}"),
        }
        let err = strict
            .connect("inside.example", port, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err.as_str(), "forbidden");
        // The front's own address, even with private origins allowed.
        let own = OriginResolver::new(vec![up], true, vec![v4("127.0.0.1")]);
        let err = own
            .connect("ok.example", port, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err.as_str(), "forbidden");

        let t0 = std::time::Instant::now();
        let err = open
            .connect("dead.example", port, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                OriginError::Timeout { .. } | OriginError::Resolve { .. }
            ),
            "{err}"
        );
        assert!(t0.elapsed() < Duration::from_millis(800));

        // Nothing listens there: a connection error, not a hang.
        drop(origin);
        let err = open
            .connect("ok.example", port, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err.as_str(), "connect", "{err}");
    }
}
