//! Harness for the serving tests: a scripted upstream (UDP + TCP on a free
//! loopback port), the real `sinkhole` binary on another, and a tiny client.
//! Everything is loopback-only and every wait has a timeout.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

pub const UP_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// `[[lists.file]]` entries giving `nodata.txt`, `refused.txt`, `drop.txt`
/// and `address.txt` in the list directory their action, one each.
pub const PER_LIST: &str = r#"
[[lists.file]]
path = "{lists}/nodata.txt"
action = "nodata"
[[lists.file]]
path = "{lists}/refused.txt"
action = "refused"
[[lists.file]]
path = "{lists}/drop.txt"
action = "drop"
[[lists.file]]
path = "{lists}/address.txt"
action = "address"
"#;

/// A UDP and TCP port on 127.0.0.1 that were both free a moment ago.
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let Ok(u) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = u.local_addr() else { continue };
        if TcpListener::bind(addr).is_ok() {
            return addr.port();
        }
    }
    panic!("no free port");
}

/// How the scripted upstream answers a name (lowercased, no trailing dot).
/// Anything not special: A → 192.0.2.10, AAAA → 2001:db8::10, other types
/// NODATA with an SOA; `nx.*` → NXDOMAIN.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Queries received per (name, transport) — "udp" / "tcp".
    pub seen: Arc<Mutex<HashMap<(String, &'static str), usize>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Upstream {
    pub fn start() -> Upstream {
        // Bind directly (no free_port race with other tests' random ports).
        let (udp, tcp, addr) = (0..100)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let addr = udp.local_addr().ok()?;
                let tcp = TcpListener::bind(addr).ok()?;
                Some((udp, tcp, addr))
            })
            .expect("bind upstream udp+tcp");
        udp.set_read_timeout(Some(Duration::from_millis(100))).ok();
        tcp.set_nonblocking(true).ok();
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let seen = seen.clone();
            let stop = stop.clone();
            std::thread::spawn(move || udp_loop(udp, seen, stop));
        }
        {
            let seen = seen.clone();
            let stop = stop.clone();
            std::thread::spawn(move || tcp_loop(tcp, seen, stop));
        }
        Upstream { addr, seen, stop }
    }

    pub fn count(&self, name: &str, transport: &'static str) -> usize {
        self.seen
            .lock()
            .map(|m| m.get(&(name.to_string(), transport)).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

fn record(seen: &Mutex<HashMap<(String, &'static str), usize>>, name: &str, t: &'static str) {
    if let Ok(mut m) = seen.lock() {
        *m.entry((name.to_string(), t)).or_default() += 1;
    }
}

fn udp_loop(
    sock: UdpSocket,
    seen: Arc<Mutex<HashMap<(String, &'static str), usize>>>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, src)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(q) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let Some(name) = q.queries.first().map(|x| qname(x.name())) else {
            continue;
        };
        record(&seen, &name, "udp");
        if name.starts_with("slow") {
            continue;
        }
        if name == "spoof.test" {
            // A forged reply with the wrong ID first, then the real one.
            let mut fake = answer(&q, false);
            fake.metadata.id = q.metadata.id.wrapping_add(1);
            fake.answers = vec![Record::from_rdata(
                q.queries[0].name().clone(),
                300,
                RData::A(A::new(6, 6, 6, 6)),
            )];
            let _ = sock.send_to(&fake.to_vec().unwrap_or_default(), src);
            std::thread::sleep(Duration::from_millis(50));
        }
        let reply = answer(&q, false);
        let _ = sock.send_to(&reply.to_vec().unwrap_or_default(), src);
    }
}

fn tcp_loop(
    l: TcpListener,
    seen: Arc<Mutex<HashMap<(String, &'static str), usize>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, _)) = l.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let seen = seen.clone();
        std::thread::spawn(move || {
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
                record(&seen, &name, "tcp");
                let b = answer(&q, true).to_vec().unwrap_or_default();
                let mut framed = (b.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&b);
                if s.write_all(&framed).is_err() {
                    return;
                }
            }
        });
    }
}

fn qname(n: &Name) -> String {
    n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

fn soa() -> Record {
    let soa = SOA::new(
        Name::from_ascii("ns.test.").unwrap(),
        Name::from_ascii("h.test.").unwrap(),
        1,
        3600,
        600,
        86400,
        60,
    );
    Record::from_rdata(Name::from_ascii("test.").unwrap(), 3600, RData::SOA(soa))
}

/// The scripted answer to `q`.
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
    let owner = query.name().clone();
    let name = qname(&owner);
    let t = query.query_type();
    let ttl = if name.starts_with("ttl.") { 100 } else { 300 };
    if name.starts_with("nx.") {
        m.metadata.response_code = ResponseCode::NXDomain;
        m.add_authority(soa());
        return m;
    }
    if name == "ad.test" {
        m.metadata.authentic_data = true;
    }
    if name == "big.test" && !tcp {
        m.metadata.truncation = true;
        return m;
    }
    if name == "big.test" && t == RecordType::TXT {
        for i in 0..40 {
            let txt = TXT::new(vec![format!("{i:02}-{}", "x".repeat(60))]);
            m.add_answer(Record::from_rdata(owner.clone(), ttl, RData::TXT(txt)));
        }
        return m;
    }
    if let Some(rest) = name.strip_prefix("cname.") {
        // cname.X → via.X → final.X (a two-link chain)
        let via = Name::from_ascii(format!("via.{rest}.")).unwrap();
        let fin = Name::from_ascii(format!("final.{rest}.")).unwrap();
        m.add_answer(Record::from_rdata(
            owner.clone(),
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
        return m;
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
    m
}

/// The sinkhole binary running on a free port with a generated config.
pub struct Server {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start with `lists` (file name → content) and `extra` TOML appended
    /// after `[server]`/`[upstream]`/`[lists]` (use other sections there).
    pub fn start(upstream: &[SocketAddr], lists: &[(&str, &str)], extra: &str) -> Server {
        Self::start_with(upstream, lists, extra, "")
    }

    /// As [`Server::start`], with extra `[server]` keys.
    pub fn start_with(
        upstream: &[SocketAddr],
        lists: &[(&str, &str)],
        extra: &str,
        server_extra: &str,
    ) -> Server {
        let mut dir = tempfile::tempdir().expect("tempdir");
        let list_dir = dir.path().join("lists");
        std::fs::create_dir(&list_dir).expect("mkdir");
        for (name, content) in lists {
            std::fs::write(list_dir.join(name), content).expect("write list");
        }
        let extra = extra.replace("{lists}", &list_dir.display().to_string());
        // The port was free a moment ago; another test may take it before
        // sinkhole binds it. Then sinkhole exits at once: try another.
        for _ in 0..5 {
            let port = free_port();
            let addr: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
            let ups: Vec<String> = upstream.iter().map(|a| format!("\"{a}\"")).collect();
            let config = format!(
                "[server]\nlisten = [\"{addr}\"]\nworkers = 2\n{server_extra}\n[upstream]\nservers = [{}]\ntimeout_ms = 800\n[lists]\npaths = [\"{}\"]\n{extra}\n",
                ups.join(", "),
                list_dir.display()
            );
            let cfg_path: PathBuf = dir.path().join("sinkhole.toml");
            std::fs::write(&cfg_path, config).expect("write config");
            let log = std::fs::File::create(dir.path().join("sinkhole.log")).expect("log");
            let child = Command::new(env!("CARGO_BIN_EXE_sinkhole"))
                .arg("serve")
                .arg("--config")
                .arg(&cfg_path)
                .env("RUST_LOG", "sinkhole=debug")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn sinkhole");
            let mut s = Server { addr, dir, child };
            if s.wait_ready() {
                return s;
            }
            let log = s.log();
            if !log.contains("cannot listen") {
                panic!("sinkhole did not start; log:\n{log}");
            }
            // Take the directory back for the next attempt.
            let _ = s.child.kill();
            let _ = s.child.wait();
            dir = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("tempdir"));
        }
        panic!("sinkhole could not bind a free port in 5 attempts");
    }

    /// Wait until it answers; false if it exited first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            // A root NS query: answered one way or another once it serves.
            if try_query_udp(
                self.addr,
                &query_msg(".", RecordType::NS, false),
                Duration::from_millis(200),
            )
            .is_some()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sinkhole did not start; log:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn list_dir(&self) -> PathBuf {
        self.dir.path().join("lists")
    }

    /// Stop with SIGTERM and wait (up to 10 s) for the exit status.
    pub fn stop(mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sinkhole.log")).unwrap_or_default()
    }
}

pub fn query_msg(name: &str, t: RecordType, edns: bool) -> Message {
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

pub fn rand_id() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1);
    (t ^ (t >> 16)) as u16
}

pub fn try_query_udp_from(
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

pub fn try_query_udp(server: SocketAddr, q: &Message, wait: Duration) -> Option<Message> {
    try_query_udp_from(IpAddr::V4(Ipv4Addr::LOCALHOST), server, q, wait)
}

/// One UDP query; panics on no answer within 3 s.
pub fn udp(server: &Server, name: &str, t: RecordType, edns: bool) -> Message {
    let q = query_msg(name, t, edns);
    try_query_udp(server.addr, &q, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no answer for {name} {t}; log:\n{}", server.log()))
}

/// Raw UDP bytes in, raw bytes out (or None after `wait`).
pub fn udp_raw(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(wait)).ok()?;
    sock.send_to(packet, server).ok()?;
    let mut buf = [0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// Send all `queries` on one TCP connection at once, then read as many replies.
pub fn tcp_pipelined(server: SocketAddr, queries: &[Message]) -> Vec<Message> {
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

pub fn rcode(m: &Message) -> u16 {
    u16::from(m.metadata.response_code)
}

/// (code, text) of the EDE option, if any.
pub fn ede(m: &Message) -> Option<(u16, String)> {
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

pub fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

// ------------------------------------------------- faults and limits (tests/faults.rs, tests/limits.rs)

/// What a [`FaultUpstream`] does with the queries it gets. Names starting
/// with `noanswer.` are never answered, whatever the fault; names starting
/// with `ttl1.` are answered with TTL 1 (to expire cache entries quickly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers like [`Upstream`] over UDP and TCP.
    Healthy,
    /// Nothing listens: its UDP and TCP sockets are closed (ICMP port
    /// unreachable, connection refused) until the fault changes.
    Down,
    /// Reads every query, answers none.
    Silent,
    /// Answers correctly, but only after this long.
    Slow(Duration),
    /// Answers with bytes that are no valid answer: noise, a bare header,
    /// the query echoed back, absurd counts, a reply cut mid-record.
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

/// The address a forged answer carries.
pub const SPOOFED_V4: Ipv4Addr = Ipv4Addr::new(6, 6, 6, 6);

/// A scripted upstream whose failure mode can be switched while it runs.
pub struct FaultUpstream {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    pub seen: Arc<Mutex<HashMap<(String, &'static str), usize>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for FaultUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl FaultUpstream {
    pub fn start(fault: Fault) -> FaultUpstream {
        let (udp, tcp, addr) = (0..100)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let addr = udp.local_addr().ok()?;
                let tcp = TcpListener::bind(addr).ok()?;
                Some((udp, tcp, addr))
            })
            .expect("bind fault upstream udp+tcp");
        let up = FaultUpstream {
            addr,
            fault: Arc::new(Mutex::new(fault)),
            seen: Arc::new(Mutex::new(HashMap::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        {
            let (fault, seen, stop) = (up.fault.clone(), up.seen.clone(), up.stop.clone());
            std::thread::spawn(move || fault_udp_loop(udp, addr, fault, seen, stop));
        }
        {
            let (fault, seen, stop) = (up.fault.clone(), up.seen.clone(), up.stop.clone());
            std::thread::spawn(move || fault_tcp_loop(tcp, addr, fault, seen, stop));
        }
        up
    }

    /// Switch the failure mode; takes effect for the next query (and
    /// within ~50 ms for `Down`).
    pub fn set(&self, fault: Fault) {
        if let Ok(mut f) = self.fault.lock() {
            *f = fault;
        }
        // Let the socket threads notice (they poll every 20 ms).
        std::thread::sleep(Duration::from_millis(60));
    }

    pub fn count(&self, name: &str, transport: &'static str) -> usize {
        self.seen
            .lock()
            .map(|m| m.get(&(name.to_string(), transport)).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

fn current(fault: &Mutex<Fault>) -> Fault {
    fault.lock().map(|f| *f).unwrap_or(Fault::Healthy)
}

/// The scripted answer, with the `ttl1.` rule applied.
fn fault_answer(q: &Message, tcp: bool) -> Message {
    let mut m = answer(q, tcp);
    let short = q
        .queries
        .first()
        .is_some_and(|x| qname(x.name()).starts_with("ttl1."));
    if short {
        for r in m.answers.iter_mut().chain(m.authorities.iter_mut()) {
            r.ttl = 1;
        }
    }
    m
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
        let other = Name::from_ascii("other.forged.test.").expect("name");
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
    let real = fault_answer(q, false).to_vec().unwrap_or_default();
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

fn fault_udp_loop(
    sock: UdpSocket,
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    seen: Arc<Mutex<HashMap<(String, &'static str), usize>>>,
    stop: Arc<AtomicBool>,
) {
    let mut sock = Some(sock);
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let f = current(&fault);
        if matches!(f, Fault::Down) {
            sock = None;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let s = match &sock {
            Some(s) => s,
            None => match UdpSocket::bind(addr) {
                Ok(s) => sock.insert(s),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
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
        record(&seen, &name, "udp");
        if name.starts_with("noanswer.") {
            continue;
        }
        let Ok(reply_sock) = s.try_clone() else {
            continue;
        };
        let send = move |b: &[u8]| {
            let _ = reply_sock.send_to(b, src);
        };
        let real = || fault_answer(&q, false).to_vec().unwrap_or_default();
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
                for g in garbage(&raw, &q) {
                    send(&g);
                }
            }
            Fault::WrongIdThenRight | Fault::WrongQuestionThenRight | Fault::SpoofOnly => {
                let forged = forgeries(
                    &q,
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
                let mut m = fault_answer(&q, false);
                m.metadata.truncation = true;
                m.answers.clear();
                m.authorities.clear();
                send(&m.to_vec().unwrap_or_default());
            }
        }
    }
}

fn fault_tcp_loop(
    l: TcpListener,
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    seen: Arc<Mutex<HashMap<(String, &'static str), usize>>>,
    stop: Arc<AtomicBool>,
) {
    let mut listener = Some(l);
    while !stop.load(Ordering::Relaxed) {
        if matches!(current(&fault), Fault::Down | Fault::TruncatedNoTcp) {
            listener = None;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(addr) {
                Ok(l) => listener.insert(l),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        l.set_nonblocking(true).ok();
        let Ok((mut s, _)) = l.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let seen = seen.clone();
        std::thread::spawn(move || {
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
                record(&seen, &name, "tcp");
                if name.starts_with("noanswer.") {
                    continue;
                }
                let b = fault_answer(&q, true).to_vec().unwrap_or_default();
                let mut framed = (b.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&b);
                if s.write_all(&framed).is_err() {
                    return;
                }
            }
        });
    }
}

impl Server {
    /// As [`Server::start_with`], letting `customize` adjust the command
    /// (environment, `pre_exec` resource limits) before it is spawned.
    pub fn start_customized(
        upstream: &[SocketAddr],
        lists: &[(&str, &str)],
        extra: &str,
        server_extra: &str,
        customize: &dyn Fn(&mut Command),
    ) -> Server {
        let mut dir = tempfile::tempdir().expect("tempdir");
        let list_dir = dir.path().join("lists");
        std::fs::create_dir(&list_dir).expect("mkdir");
        for (name, content) in lists {
            std::fs::write(list_dir.join(name), content).expect("write list");
        }
        let extra = extra
            .replace("{lists}", &list_dir.display().to_string())
            .replace("{dir}", &dir.path().display().to_string());
        for _ in 0..5 {
            let port = free_port();
            let addr: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
            let ups: Vec<String> = upstream.iter().map(|a| format!("\"{a}\"")).collect();
            let config = format!(
                "[server]\nlisten = [\"{addr}\"]\nworkers = 2\n{server_extra}\n[upstream]\nservers = [{}]\ntimeout_ms = 800\n[lists]\npaths = [\"{}\"]\n{extra}\n",
                ups.join(", "),
                list_dir.display()
            );
            let cfg_path: PathBuf = dir.path().join("sinkhole.toml");
            std::fs::write(&cfg_path, config).expect("write config");
            let log = std::fs::File::create(dir.path().join("sinkhole.log")).expect("log");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_sinkhole"));
            cmd.arg("serve")
                .arg("--config")
                .arg(&cfg_path)
                .env("RUST_LOG", "sinkhole=debug")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log);
            customize(&mut cmd);
            let child = cmd.spawn().expect("spawn sinkhole");
            let mut s = Server { addr, dir, child };
            if s.wait_ready() {
                return s;
            }
            let log = s.log();
            if !log.contains("cannot listen") {
                panic!("sinkhole did not start; log:\n{log}");
            }
            let _ = s.child.kill();
            let _ = s.child.wait();
            dir = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("tempdir"));
        }
        panic!("sinkhole could not bind a free port in 5 attempts");
    }

    /// The exit status if it has exited, without waiting.
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Poll `f` every 20 ms until it returns `Some`, for at most `within`.
pub fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free loopback port for `[metrics] listen`.
pub fn metrics_addr() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, free_port()).into()
}

/// One value from `/metrics` at `addr` (None: unreachable or absent).
pub fn metric(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
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
pub fn tcp_connect_from(from: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect_timeout(&server.into(), Duration::from_secs(3))?;
    Ok(s.into())
}

/// One query over an open TCP connection; None on EOF, error or timeout.
pub fn tcp_query_on(s: &mut TcpStream, q: &Message, wait: Duration) -> Option<Message> {
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
pub fn closed_by_server(s: &mut TcpStream, wait: Duration) -> bool {
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
