//! A tiny DNS client for the tests: build queries, send them over UDP or
//! TCP from a chosen loopback address, read rcodes, EDE and addresses;
//! and one `/metrics` value. Every read has a timeout.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

use super::Server;

/// A recursive query for `name`/`t` with a fresh ID, with an OPT record
/// (payload 1232) when `edns`.
pub(crate) fn query_msg(name: &str, t: RecordType, edns: bool) -> Message {
    let mut m = Message::query();
    m.metadata.id = rand_id();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

/// A query ID taken from the clock (varies from call to call).
fn rand_id() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1);
    (t ^ (t >> 16)) as u16
}

/// One UDP query from `bind` (port 0) to `server`; the reply with the
/// query's ID, or None after `wait`.
pub(crate) fn try_query_udp_from(
    bind: IpAddr,
    server: SocketAddr,
    q: &Message,
    wait: Duration,
) -> Option<Message> {
    let sock = UdpSocket::bind((bind, 0)).ok()?;
    sock.set_read_timeout(Some(wait)).ok()?;
    sock.send_to(&q.to_vec().ok()?, server).ok()?;
    let mut buf = [0u8; 65535];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        if let Ok(m) = Message::from_vec(&buf[..n])
            && m.metadata.id == q.metadata.id
        {
            return Some(m);
        }
    }
    None
}

/// [`try_query_udp_from`] 127.0.0.1.
pub(crate) fn try_query_udp(server: SocketAddr, q: &Message, wait: Duration) -> Option<Message> {
    try_query_udp_from(IpAddr::V4(Ipv4Addr::LOCALHOST), server, q, wait)
}

/// One UDP query to `server` from 127.0.0.1; panics (with the server log)
/// on no answer within 3 s.
pub(crate) fn udp(server: &Server, name: &str, t: RecordType, edns: bool) -> Message {
    let q = query_msg(name, t, edns);
    try_query_udp(server.addr, &q, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no answer for {name} {t}; log:\n{}", server.log()))
}

/// Raw UDP bytes in, raw bytes out (or None after `wait`).
pub(crate) fn udp_raw(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(wait)).ok()?;
    sock.send_to(packet, server).ok()?;
    let mut buf = [0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// Send all `queries` on one TCP connection at once, then read as many replies.
pub(crate) fn tcp_pipelined(server: SocketAddr, queries: &[Message]) -> Vec<Message> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(3)).expect("tcp connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut all = Vec::new();
    for q in queries {
        let b = q.to_vec().expect("encode");
        all.extend_from_slice(&(b.len() as u16).to_be_bytes());
        all.extend_from_slice(&b);
    }
    s.write_all(&all).expect("tcp write");
    let mut out = Vec::new();
    for _ in queries {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).expect("tcp read len");
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut msg).expect("tcp read body");
        out.push(Message::from_vec(&msg).expect("decode"));
    }
    out
}

/// The response code as a number (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED).
pub(crate) fn rcode(m: &Message) -> u16 {
    u16::from(m.metadata.response_code)
}

/// (code, text) of the EDE option, if any.
pub(crate) fn ede(m: &Message) -> Option<(u16, String)> {
    let e = m.edns.as_ref()?;
    e.options().as_ref().iter().find_map(|(code, opt)| {
        if u16::from(*code) != 15 {
            return None;
        }
        let bytes: Vec<u8> = Vec::try_from(opt).ok()?;
        Some((
            u16::from_be_bytes([bytes[0], bytes[1]]),
            String::from_utf8_lossy(&bytes[2..]).into_owned(),
        ))
    })
}

/// The A records of the answer section.
pub(crate) fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// One value from `/metrics` at `addr` (None: unreachable or absent).
pub(crate) fn metric(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let body = buf.split_once("\r\n\r\n")?.1;
    sinkhole::metrics::Exposition::parse(body)
        .ok()?
        .value(name, labels)
}

/// A TCP connection to `server` from the loopback address `from`.
pub(crate) fn tcp_connect_from(from: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect_timeout(&server.into(), Duration::from_secs(3))?;
    Ok(s.into())
}

/// One query over an open TCP connection; None on EOF, error or timeout.
pub(crate) fn tcp_query_on(s: &mut TcpStream, q: &Message, wait: Duration) -> Option<Message> {
    s.set_read_timeout(Some(wait)).ok()?;
    let b = q.to_vec().ok()?;
    let mut framed = (b.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&b);
    s.write_all(&framed).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg).ok()?;
    Message::from_vec(&msg).ok()
}

/// True once the server has closed `s` (EOF or reset), waiting at most `wait`.
pub(crate) fn closed_by_server(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).ok();
    let mut b = [0u8; 512];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}
