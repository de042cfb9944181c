//! The fake upstream resolver: UDP and TCP on one loopback port, answers
//! scripted by name, a run-time fault switch ([`Upstream::set`]), and a
//! count of the queries it got per (name, transport).
//!
//! | name (lowercased, no trailing dot) | answer |
//! |---|---|
//! | first label `noanswer`, `slow`, `slow2`, … | never answered, whatever the fault (the client times out) |
//! | anything under `dead.example` | never answered: a zone whose authorities are down (the random-subdomain flood's victim) |
//! | `spoof.example` | when healthy: a forged answer (wrong ID, A [`SPOOFED_V4`]), the real one 50 ms later |
//! | `nx.*` | NXDOMAIN with an SOA (minimum 60) |
//! | `ad.example` | AD=1 |
//! | `big.example` | TC=1 and no records over UDP; 40 long TXT records over TCP |
//! | `cname.X` | the chain `cname.X` → `via.X` → `final.X` (A [`UP_V4`] for A queries) |
//! | `ttl.*` / `ttl1.*` | TTL 100 / TTL 1 on every record |
//! | anything under `loop2.example` | A 127.0.0.2, NODATA for other types (an origin a web test starts on that loopback address) |
//! | anything else | A [`UP_V4`], AAAA 2001:db8::10, NODATA with an SOA for other types; TTL 300 |

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::wait_for;

/// The address the upstream answers A queries with.
pub(crate) const UP_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// The address a forged answer carries.
pub(crate) const SPOOFED_V4: Ipv4Addr = Ipv4Addr::new(6, 6, 6, 6);

/// What the upstream does with the queries it gets. The never-answered
/// names of the module table stay unanswered in every mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Normal service: the scripted answers over UDP and TCP.
    Healthy,
    /// Nothing listens: its UDP and TCP sockets are closed (ICMP port
    /// unreachable, connection refused) until the fault changes, then
    /// bound again on the same port.
    Down,
    /// Reads every UDP query, answers none (TCP still answers).
    Silent,
    /// Answers correctly over UDP, but only after this long.
    Slow(Duration),
    /// Answers over UDP with bytes that are no valid answer: noise, a bare
    /// header, the query echoed back, absurd counts, a reply cut mid-record.
    Garbage,
    /// A forged answer with the wrong ID, then (50 ms later) the real one.
    WrongIdThenRight,
    /// A forged answer with the right ID to another question (other name,
    /// other type), then (50 ms later) the real one.
    WrongQuestionThenRight,
    /// Forged answers only (wrong ID, wrong question), never the real one.
    SpoofOnly,
    /// TC=1 and no records over UDP; TCP answers in full.
    Truncated,
    /// TC=1 over UDP, and TCP refused.
    TruncatedNoTcp,
    /// Silent over UDP, answers over TCP.
    TcpOnly,
}

/// The UDP and the TCP socket loop, as indexes into `State::applied`.
const UDP: usize = 0;
const TCP: usize = 1;

/// How long [`Upstream::set`] waits for both socket loops to take a new mode.
const SWITCH_WITHIN: Duration = Duration::from_secs(5);

type Seen = HashMap<(String, &'static str), usize>;

/// What the socket threads share with the [`Upstream`] handle.
struct State {
    /// The mode, and a generation counter bumped by every [`Upstream::set`].
    mode: Mutex<(u64, Fault)>,
    /// The generation each socket loop (UDP, TCP) has put in effect.
    applied: [AtomicU64; 2],
    /// Queries received per (name, transport).
    seen: Mutex<Seen>,
    stop: AtomicBool,
}

impl State {
    /// The current mode and its generation.
    fn mode(&self) -> (u64, Fault) {
        self.mode.lock().map(|m| *m).unwrap_or((0, Fault::Healthy))
    }

    /// Count one query for `name` over `transport`.
    fn record(&self, name: &str, transport: &'static str) {
        if let Ok(mut m) = self.seen.lock() {
            *m.entry((name.to_string(), transport)).or_default() += 1;
        }
    }
}

/// A fake upstream on 127.0.0.1 (UDP and TCP, one kernel-chosen port);
/// its threads stop when it is dropped.
pub(crate) struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
    }
}

impl Upstream {
    /// Start a healthy upstream on 127.0.0.1, port 0.
    pub(crate) fn start() -> Upstream {
        // The kernel picks the UDP port; TCP must get the same one, which
        // another program may hold: then try another.
        let (udp, tcp, addr) = (0..100)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let addr = udp.local_addr().ok()?;
                let tcp = TcpListener::bind(addr).ok()?;
                Some((udp, tcp, addr))
            })
            .expect("bind upstream udp+tcp");
        let state = Arc::new(State {
            mode: Mutex::new((0, Fault::Healthy)),
            applied: [AtomicU64::new(0), AtomicU64::new(0)],
            seen: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        {
            let state = state.clone();
            std::thread::spawn(move || udp_loop(udp, addr, state));
        }
        {
            let state = state.clone();
            std::thread::spawn(move || tcp_loop(tcp, addr, state));
        }
        Upstream { addr, state }
    }

    /// Switch the mode. Returns once both socket loops run it (sockets
    /// closed for [`Fault::Down`], bound again after it): a query sent
    /// after this returns gets the new behaviour. Panics if that takes
    /// more than 5 s (the port taken by someone else while down).
    pub(crate) fn set(&self, fault: Fault) {
        let generation = {
            let mut m = self.state.mode.lock().expect("upstream mode");
            *m = (m.0 + 1, fault);
            m.0
        };
        let switched = wait_for(SWITCH_WITHIN, || {
            self.state
                .applied
                .iter()
                .all(|a| a.load(Ordering::Acquire) >= generation)
                .then_some(())
        });
        assert!(
            switched.is_some(),
            "upstream {}: {fault:?} not in effect within {SWITCH_WITHIN:?}",
            self.addr
        );
    }

    /// Wait (at most 3 s) until a query for `name` has reached the
    /// upstream over `transport`: it is then in flight at the server.
    /// Panics if none arrives.
    pub(crate) fn await_query(&self, name: &str, transport: &'static str) {
        let seen = wait_for(Duration::from_secs(3), || {
            (self.count(name, transport) > 0).then_some(())
        });
        assert!(
            seen.is_some(),
            "no {transport} query for {name} reached the upstream within 3 s"
        );
    }

    /// Queries received for `zone` and every name under it over
    /// `transport`.
    pub(crate) fn count_under(&self, zone: &str, transport: &'static str) -> usize {
        let below = format!(".{zone}");
        self.state
            .seen
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|((n, t), _)| *t == transport && (n == zone || n.ends_with(&below)))
                    .map(|(_, c)| *c)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Queries received for `name` (lowercased, no trailing dot) over
    /// `transport` ("udp" or "tcp").
    pub(crate) fn count(&self, name: &str, transport: &'static str) -> usize {
        self.state
            .seen
            .lock()
            .map(|m| m.get(&(name.to_string(), transport)).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// A name as the script and the counts see it: lowercased, no trailing dot.
fn qname(n: &Name) -> String {
    n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// Names that are never answered, whatever the mode.
fn never_answered(name: &str) -> bool {
    if name.ends_with(".dead.example") {
        return true;
    }
    let first = name.split('.').next().unwrap_or_default();
    first == "noanswer"
        || first
            .strip_prefix("slow")
            .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
}

/// The SOA of negative answers (`test.`, minimum 60).
fn soa() -> Record {
    let soa = SOA::new(
        Name::from_ascii("ns.example.").unwrap(),
        Name::from_ascii("h.example.").unwrap(),
        1,
        3600,
        600,
        86400,
        60,
    );
    Record::from_rdata(Name::from_ascii("example.").unwrap(), 3600, RData::SOA(soa))
}

/// The scripted answer to `q` (see the module table).
fn answer(q: &Message, tcp: bool) -> Message {
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(q.queries.clone());
    if let Some(e) = &q.edns {
        let mut r = Edns::new();
        r.set_max_payload(4096);
        r.set_dnssec_ok(e.flags().dnssec_ok);
        m.set_edns(r);
    }
    let Some(query) = q.queries.first() else {
        m.metadata.response_code = ResponseCode::FormErr;
        return m;
    };
    let name = qname(query.name());
    scripted(&mut m, query, &name, tcp);
    if name.starts_with("ttl1.") {
        for r in m.answers.iter_mut().chain(m.authorities.iter_mut()) {
            r.ttl = 1;
        }
    }
    m
}

/// Fill `m` with the records the module table gives `name`.
fn scripted(m: &mut Message, query: &Query, name: &str, tcp: bool) {
    let owner = query.name().clone();
    let t = query.query_type();
    let ttl = if name.starts_with("ttl.") { 100 } else { 300 };
    if name.starts_with("nx.") {
        m.metadata.response_code = ResponseCode::NXDomain;
        m.add_authority(soa());
        return;
    }
    if name == "ad.example" {
        m.metadata.authentic_data = true;
    }
    if name == "big.example" && !tcp {
        m.metadata.truncation = true;
        return;
    }
    if name == "big.example" && t == RecordType::TXT {
        for i in 0..40 {
            let txt = TXT::new(vec![format!("{i:02}-{}", "x".repeat(60))]);
            m.add_answer(Record::from_rdata(owner.clone(), ttl, RData::TXT(txt)));
        }
        return;
    }
    if let Some(rest) = name.strip_prefix("cname.") {
        // cname.X → via.X → final.X (a two-link chain)
        let via = Name::from_ascii(format!("via.{rest}.")).unwrap();
        let fin = Name::from_ascii(format!("final.{rest}.")).unwrap();
        m.add_answer(Record::from_rdata(
            owner,
            ttl,
            RData::CNAME(CNAME(via.clone())),
        ));
        m.add_answer(Record::from_rdata(
            via,
            ttl,
            RData::CNAME(CNAME(fin.clone())),
        ));
        if t == RecordType::A {
            m.add_answer(Record::from_rdata(fin, ttl, RData::A(A(UP_V4))));
        }
        return;
    }
    if name == "loop2.example" || name.ends_with(".loop2.example") {
        if t == RecordType::A {
            let origin = A(Ipv4Addr::new(127, 0, 0, 2));
            m.add_answer(Record::from_rdata(owner, ttl, RData::A(origin)));
        } else {
            m.add_authority(soa());
        }
        return;
    }
    match t {
        RecordType::A => {
            m.add_answer(Record::from_rdata(owner, ttl, RData::A(A(UP_V4))));
        }
        RecordType::AAAA => {
            m.add_answer(Record::from_rdata(
                owner,
                ttl,
                RData::AAAA(AAAA("2001:db8::10".parse().unwrap())),
            ));
        }
        _ => {
            m.add_authority(soa());
        }
    }
}

/// Forged answers to `q`: one with the wrong ID, two to other questions.
fn forgeries(q: &Message, wrong_id: bool, wrong_question: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Some(query) = q.queries.first() else {
        return out;
    };
    let forged = |name: Name, t: RecordType, id: u16| {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.add_query(Query::query(name.clone(), t));
        m.add_answer(Record::from_rdata(name, 300, RData::A(A(SPOOFED_V4))));
        m.to_vec().unwrap_or_default()
    };
    if wrong_id {
        out.push(forged(
            query.name().clone(),
            query.query_type(),
            q.metadata.id.wrapping_add(1),
        ));
    }
    if wrong_question {
        let other = Name::from_ascii("other.forged.example.").expect("name");
        out.push(forged(other, query.query_type(), q.metadata.id));
        let t = if query.query_type() == RecordType::A {
            RecordType::AAAA
        } else {
            RecordType::A
        };
        out.push(forged(query.name().clone(), t, q.metadata.id));
    }
    out
}

/// Datagrams that are not an acceptable answer to `raw` (the query bytes).
fn garbage(raw: &[u8], q: &Message) -> Vec<Vec<u8>> {
    let real = answer(q, false).to_vec().unwrap_or_default();
    let mut x: u32 = 0x1234_5678 ^ u32::from(q.metadata.id);
    let noise: Vec<u8> = (0..100)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let mut absurd = real.clone();
    if absurd.len() >= 12 {
        absurd[6] = 0xff;
        absurd[7] = 0xff;
    }
    let cut = real[..real.len().saturating_sub(3)].to_vec();
    let header = real[..real.len().min(12)].to_vec();
    let mut noise_with_id = noise.clone();
    noise_with_id[..2].copy_from_slice(&raw[..2]);
    vec![
        noise,
        noise_with_id,
        header,
        raw.to_vec(),
        absurd,
        cut,
        Vec::new(),
    ]
}

/// Serve UDP until the upstream is dropped: close the socket while
/// [`Fault::Down`], bind it again after, and answer each query as the
/// current mode says.
fn udp_loop(sock: UdpSocket, addr: SocketAddr, state: Arc<State>) {
    let mut sock = Some(sock);
    let mut buf = [0u8; 4096];
    while !state.stop.load(Ordering::Relaxed) {
        let (generation, f) = state.mode();
        if f == Fault::Down {
            sock = None;
        } else if sock.is_none() {
            match UdpSocket::bind(addr) {
                Ok(s) => sock = Some(s),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        state.applied[UDP].store(generation, Ordering::Release);
        let Some(s) = &sock else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        // Short reads, so a new mode is picked up within 20 ms.
        s.set_read_timeout(Some(Duration::from_millis(20))).ok();
        let Ok((n, src)) = s.recv_from(&mut buf) else {
            continue;
        };
        let raw = buf[..n].to_vec();
        let Ok(q) = Message::from_vec(&raw) else {
            continue;
        };
        let Some(name) = q.queries.first().map(|x| qname(x.name())) else {
            continue;
        };
        state.record(&name, "udp");
        if never_answered(&name) {
            continue;
        }
        let Ok(reply_sock) = s.try_clone() else {
            continue;
        };
        let send = move |b: &[u8]| {
            let _ = reply_sock.send_to(b, src);
        };
        let f = if f == Fault::Healthy && name == "spoof.example" {
            Fault::WrongIdThenRight
        } else {
            f
        };
        answer_udp(f, &raw, &q, send);
    }
}

/// Answer one UDP query `q` (bytes `raw`) in mode `f` through `send`;
/// delayed replies go out from a thread of their own.
fn answer_udp(f: Fault, raw: &[u8], q: &Message, send: impl Fn(&[u8]) + Send + 'static) {
    let real = || answer(q, false).to_vec().unwrap_or_default();
    match f {
        Fault::Healthy => send(&real()),
        Fault::Down | Fault::Silent | Fault::TcpOnly => {}
        Fault::Slow(d) => {
            let b = real();
            std::thread::spawn(move || {
                std::thread::sleep(d);
                send(&b);
            });
        }
        Fault::Garbage => {
            for g in garbage(raw, q) {
                send(&g);
            }
        }
        Fault::WrongIdThenRight | Fault::WrongQuestionThenRight | Fault::SpoofOnly => {
            let forged = forgeries(
                q,
                f != Fault::WrongQuestionThenRight,
                f != Fault::WrongIdThenRight,
            );
            let right = (f != Fault::SpoofOnly).then(real);
            std::thread::spawn(move || {
                for b in &forged {
                    send(b);
                }
                if let Some(b) = right {
                    std::thread::sleep(Duration::from_millis(50));
                    send(&b);
                }
            });
        }
        Fault::Truncated | Fault::TruncatedNoTcp => {
            let mut m = answer(q, false);
            m.metadata.truncation = true;
            m.answers.clear();
            m.authorities.clear();
            send(&m.to_vec().unwrap_or_default());
        }
    }
}

/// Accept TCP connections until the upstream is dropped (none while
/// [`Fault::Down`] or [`Fault::TruncatedNoTcp`]: the listener is closed).
fn tcp_loop(listener: TcpListener, addr: SocketAddr, state: Arc<State>) {
    let mut listener = Some(listener);
    while !state.stop.load(Ordering::Relaxed) {
        let (generation, f) = state.mode();
        if matches!(f, Fault::Down | Fault::TruncatedNoTcp) {
            listener = None;
        } else if listener.is_none() {
            match TcpListener::bind(addr) {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        state.applied[TCP].store(generation, Ordering::Release);
        let Some(l) = &listener else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        l.set_nonblocking(true).ok();
        let Ok((s, _)) = l.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let state = state.clone();
        std::thread::spawn(move || tcp_connection(s, &state));
    }
}

/// Answer length-prefixed queries on one connection until EOF, an error
/// or 5 s without one.
fn tcp_connection(mut s: TcpStream, state: &State) {
    s.set_nonblocking(false).ok();
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    loop {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        if s.read_exact(&mut msg).is_err() {
            return;
        }
        let Ok(q) = Message::from_vec(&msg) else {
            return;
        };
        let Some(name) = q.queries.first().map(|x| qname(x.name())) else {
            return;
        };
        state.record(&name, "tcp");
        if never_answered(&name) {
            continue;
        }
        let b = answer(&q, true).to_vec().unwrap_or_default();
        let mut framed = (b.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&b);
        if s.write_all(&framed).is_err() {
            return;
        }
    }
}
