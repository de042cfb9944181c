//! The query path without sockets, for the cargo-fuzz targets in `fuzz/`
//! (`dns_request`, `dns_upstream`) and for the regression tests that keep
//! their crashing inputs. Not a public API.
//!
//! [`Harness::request`] feeds raw client bytes to [`Shared::handle`] (UDP
//! and TCP, an allowed and a refused client) over a fixed snapshot with
//! every action, and a cache holding fresh, CNAME-to-blocked, oversized,
//! negative and expired (serve-stale) answers; a cache miss is completed
//! as if every upstream had failed. [`Harness::upstream`] feeds raw bytes
//! as the upstream's reply to one of a few fixed questions: the forwarder's
//! acceptance check, the cache insert, the reply to the waiting client and
//! then a cache hit for it.
//!
//! Both check the invariants every reply must keep and panic (a fuzzer
//! crash) when one does not hold: same ID, QR set, the client's question
//! echoed byte for byte, within the client's UDP size, and decodable by an
//! independent parser (hickory) whenever the data it came from is.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::query::{Inbound, Outcome, Pending, QueryCore};
use crate::acl::Acl;
use crate::cache;
use crate::config::Config;
use crate::forward::{self, UpstreamQuery};
use crate::list::{Format, ListOptions, Snapshot};
use crate::metrics::Metrics;
use crate::policy::Action;
use crate::wire::{self, RequestError, Transport};

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:5353"]
workers = 1
[upstream]
servers = ["192.0.2.53"]
[policy]
ede_text = "order {decision} by {authority} ({list}: {rule})"
[acl]
allow = ["127.0.0.0/8", "::1/128"]
[cache]
max_entries = 4096
serve_stale_secs = 86400
"#;

/// The lists every run sees: (name, format, action, content).
const LISTS: &[(&str, Format, Option<Action>, &str)] = &[
    (
        "block",
        Format::Plain,
        None,
        "blocked.test\n*.wild.test\nvia.chain.test\n@@||ok.blocked.test^\n",
    ),
    (
        "nodata",
        Format::Plain,
        Some(Action::Nodata),
        "nodata.test\n",
    ),
    (
        "refused",
        Format::Plain,
        Some(Action::Refused),
        "refused.test\n",
    ),
    ("drop", Format::Plain, Some(Action::Drop), "drop.test\n"),
    (
        "registry",
        Format::Csv,
        None,
        "domain;url;authority;decision;date;category\nregistry.test;;AFM;2025-17/KZ;2025-03-01;crypto\n",
    ),
];

/// The client an allowed query comes from, and one outside the ACL.
const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
const STRANGER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)), 40000);

/// The ID [`Harness::upstream`] sends its question with.
pub(crate) const UPSTREAM_ID: u16 = 0x5151;

/// Questions [`Harness::upstream`] asks; the first input byte picks one.
const QUESTIONS: &[(&str, RecordType, Option<bool>)] = &[
    ("www.example.test.", RecordType::A, None),
    ("WwW.ExAmPlE.TeSt.", RecordType::AAAA, Some(false)),
    ("cname.example.test.", RecordType::A, Some(true)),
    ("big.example.test.", RecordType::TXT, Some(false)),
    ("nx.example.test.", RecordType::MX, None),
];

pub struct Harness {
    /// For [`Harness::request`]: its cache is filled once and only read.
    core: QueryCore,
    config: Config,
    snapshot: Snapshot,
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap_or_else(|_| Name::root())
}

fn soa() -> Record {
    let soa = SOA::new(name("ns.test."), name("h.test."), 1, 3600, 600, 86400, 60);
    Record::from_rdata(name("test."), 3600, RData::SOA(soa))
}

/// An upstream-style reply for the cache.
fn reply(qname: &str, t: RecordType, edns: Option<bool>, ttl: u32) -> Vec<u8> {
    let mut m = Message::response(0, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.recursion_available = true;
    let owner = name(qname);
    m.add_query(Query::query(owner.clone(), t));
    if let Some(dnssec_ok) = edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    match (qname, t) {
        ("nx.test.", _) => {
            m.metadata.response_code = ResponseCode::NXDomain;
            m.add_authority(soa());
        }
        ("cname.test.", _) => {
            let via = name("via.chain.test.");
            let fin = name("final.chain.test.");
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
            m.add_answer(Record::from_rdata(
                fin,
                ttl,
                RData::A(A::new(192, 0, 2, 10)),
            ));
        }
        (_, RecordType::TXT) => {
            for i in 0..40 {
                let txt = TXT::new(vec![format!("{i:02}-{}", "x".repeat(60))]);
                m.add_answer(Record::from_rdata(owner.clone(), ttl, RData::TXT(txt)));
            }
        }
        (_, RecordType::A) => {
            m.add_answer(Record::from_rdata(
                owner,
                ttl,
                RData::A(A::new(192, 0, 2, 10)),
            ));
        }
        _ => {
            m.add_authority(soa());
        }
    }
    m.to_vec().unwrap_or_default()
}

fn cache_key(qname: &str, t: RecordType, bits: u8) -> Vec<u8> {
    let mut k = [0u8; cache::MAX_KEY];
    let w = wire::dotted_to_wire(qname.trim_end_matches('.'));
    let n = cache::make_key(&mut k, &w, u16::from(t), 1, bits);
    k[..n].to_vec()
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

impl Harness {
    pub fn new() -> Harness {
        let config = Config::from_toml_str_with_resolv_text(CONFIG, "fuzz", "")
            .unwrap_or_else(|e| panic!("harness config: {e}"));
        let lists: Vec<_> = LISTS
            .iter()
            .map(|(n, format, action, text)| {
                let opts = ListOptions {
                    format: Some(*format),
                    action: *action,
                    name: Some((*n).to_string()),
                    ..ListOptions::default()
                };
                crate::list::parse::parse_bytes(Path::new(n), text.as_bytes(), &opts)
            })
            .collect();
        let snap =
            crate::list::compile::compile(&lists).unwrap_or_else(|e| panic!("harness lists: {e}"));
        let snapshot = snap;
        let core = Harness::core(&config);
        let now = Instant::now();
        let edns_bits = [
            (0, None),
            (cache::KEY_EDNS, Some(false)),
            (cache::KEY_EDNS | cache::KEY_DO, Some(true)),
        ];
        for (qname, t) in [
            ("cached.test.", RecordType::A),
            ("cached.test.", RecordType::AAAA),
            ("cname.test.", RecordType::A),
            ("big.test.", RecordType::TXT),
            ("nx.test.", RecordType::A),
        ] {
            for (bits, edns) in edns_bits {
                let r = reply(qname, t, edns, 300);
                if let Some(scan) = wire::scan_response(&r) {
                    core.cache()
                        .insert(&cache_key(qname, t, bits), &r, &scan, now);
                }
            }
        }
        // Expired a while ago (serve-stale material), where the clock allows.
        if let Some(past) = now.checked_sub(Duration::from_secs(400)) {
            for (bits, edns) in edns_bits {
                for (qname, t) in [
                    ("stale.test.", RecordType::A),
                    ("cname.test.", RecordType::AAAA),
                ] {
                    let r = reply(qname, t, edns, 300);
                    if let Some(scan) = wire::scan_response(&r) {
                        core.cache()
                            .insert(&cache_key(qname, t, bits), &r, &scan, past);
                    }
                }
            }
        }
        Harness {
            core,
            config,
            snapshot,
        }
    }

    fn core(config: &Config) -> QueryCore {
        let metrics = Arc::new(Metrics::new(&config.upstream.servers));
        QueryCore::new(
            config.policy.clone(),
            Acl::new(&config.acl),
            &config.cache,
            &config.limits,
            metrics,
            None,
        )
    }

    /// Raw client bytes through the query path, every way a client can
    /// send them.
    pub fn request(&self, packet: &[u8]) {
        let mut out = Vec::with_capacity(512);
        for (client, udp) in [(CLIENT, true), (CLIENT, false), (STRANGER, true)] {
            let inbound = inbound(packet, client, udp, Instant::now());
            match self.core.handle(&self.snapshot, &inbound, &mut out) {
                Outcome::Reply => check_reply(packet, &out, udp, true),
                Outcome::Silent => check_silent(packet),
                Outcome::Forward(p) => {
                    let asked = wire::parse_request(packet).map(|r| r.question().to_vec());
                    assert_eq!(
                        asked.ok().as_deref(),
                        Some(p.request.question()),
                        "forwarded question changed"
                    );
                    // No upstream here: as if every one had failed.
                    let mut r = Vec::new();
                    if self.core.complete(
                        &self.snapshot,
                        &p,
                        Err(super::query::Failure::Timeout),
                        Instant::now(),
                        SystemTime::now(),
                        &mut r,
                    ) {
                        check_reply(packet, &r, udp, true);
                    }
                }
            }
        }
    }

    /// `data[0]` picks a question; the rest is the upstream's reply to it.
    pub fn upstream(&self, data: &[u8]) {
        let Some((&pick, reply)) = data.split_first() else {
            return;
        };
        let (qname, t, edns) = QUESTIONS[pick as usize % QUESTIONS.len()];
        let udp = pick & 0x80 == 0;
        let mut q = Message::query();
        q.metadata.id = 0x1234;
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(name(qname), t));
        if let Some(dnssec_ok) = edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            e.set_dnssec_ok(dnssec_ok);
            q.set_edns(e);
        }
        let Ok(packet) = q.to_vec() else { return };
        let Ok(req) = wire::parse_request(&packet) else {
            panic!("harness query does not parse");
        };
        let uq = UpstreamQuery {
            name: req.lower_wire(),
            qtype: req.qtype,
            qclass: req.qclass,
            rd: req.rd(),
            cd: req.cd(),
            ad: req.ad(),
            edns: req.edns.map(|e| e.dnssec_ok),
            zone: super::limits::registered_zone(req.dotted()),
        };
        // What the forwarder sends must be a query hickory reads back.
        let sent = forward::build_query(UPSTREAM_ID, &uq);
        assert!(
            Message::from_vec(&sent).is_ok(),
            "upstream query undecodable"
        );
        let Some(scan) = forward::accept_reply(reply, UPSTREAM_ID, &uq) else {
            return;
        };
        // The acceptance check is the anti-spoofing rule: hold it to that.
        assert_eq!(scan.id, UPSTREAM_ID);
        assert!(scan.flags & wire::FLAG_QR != 0);
        // A fresh server per input, so no run depends on an earlier one.
        let core = Harness::core(&self.config);
        let key = super::query::cache_key(&req);
        let now = Instant::now();
        core.store(key.as_bytes(), reply, &scan, now);
        // Only a reply hickory can read is held to hickory reading ours.
        let decodable = Message::from_vec(reply).is_ok();
        let client = CLIENT;
        let p = Pending {
            request: crate::wire::StoredRequest::new(&req),
            key: std::sync::Arc::from(key.as_bytes()),
            client,
            transport: if udp { Transport::Udp } else { Transport::Tcp },
        };
        let mut r = Vec::new();
        if core.complete(
            &self.snapshot,
            &p,
            Ok((reply, &scan)),
            now,
            SystemTime::now(),
            &mut r,
        ) {
            check_reply(&packet, &r, udp, decodable);
        }
        // The same question again: a cache hit (or a miss if not cacheable).
        let mut out = Vec::new();
        match core.handle(
            &self.snapshot,
            &inbound(&packet, client, udp, now),
            &mut out,
        ) {
            Outcome::Reply => check_reply(&packet, &out, udp, decodable),
            Outcome::Silent => {}
            Outcome::Forward(p) => {
                // Not cached: then a stale answer may not come from it either
                // unless it was cached; either way the reply is checked.
                let mut r = Vec::new();
                if core.complete(
                    &self.snapshot,
                    &p,
                    Err(super::query::Failure::Network),
                    now,
                    SystemTime::now(),
                    &mut r,
                ) {
                    check_reply(&packet, &r, udp, decodable);
                }
            }
        }
        // Much later: expired, so served stale (TTL 30) or SERVFAIL.
        if let Some(later) = now.checked_add(Duration::from_secs(7 * 86400)) {
            let mut out = Vec::new();
            if core
                .cache()
                .get_stale_into(
                    key.as_bytes(),
                    &mut out,
                    req.id,
                    req.qname_wire(),
                    later,
                    Duration::from_secs(30 * 86400),
                )
                .is_some()
            {
                assert_eq!(wire::read_u16(&out, 0), Some(req.id));
                if decodable && let Ok(m) = Message::from_vec(&out) {
                    for r in m.answers.iter().chain(&m.authorities) {
                        assert_eq!(r.ttl, cache::STALE_TTL, "stale TTL");
                    }
                }
            }
        }
    }
}

/// A query as the harness feeds it to the core.
fn inbound(packet: &[u8], client: SocketAddr, udp: bool, now: Instant) -> Inbound<'_> {
    Inbound {
        packet,
        client,
        transport: if udp { Transport::Udp } else { Transport::Tcp },
        now,
        wall: SystemTime::now(),
    }
}

/// Silence is right only for what must be dropped (too short, QR set) and
/// for `drop` rules; a malformed query gets FORMERR instead.
fn check_silent(packet: &[u8]) {
    if let Err(e) = wire::parse_request(packet) {
        assert!(e.is_drop(), "{e:?} must be answered, not dropped");
    }
}

/// The invariants of every reply to `packet`.
fn check_reply(packet: &[u8], reply: &[u8], udp: bool, decodable: bool) {
    assert!(
        reply.len() >= wire::HEADER_LEN,
        "reply shorter than a header"
    );
    assert_eq!(reply[..2], packet[..2], "reply ID differs from the query's");
    let flags = wire::read_u16(reply, 2).unwrap_or(0);
    assert!(flags & wire::FLAG_QR != 0, "reply without QR");
    match wire::parse_request(packet) {
        Ok(req) => {
            if udp {
                assert!(
                    reply.len() <= req.udp_limit(),
                    "{} bytes over UDP to a client taking {}",
                    reply.len(),
                    req.udp_limit()
                );
            }
            if wire::read_u16(reply, 4) == Some(1) {
                let q = req.question();
                assert_eq!(
                    reply.get(wire::HEADER_LEN..wire::HEADER_LEN + q.len()),
                    Some(q),
                    "question not echoed as asked"
                );
            }
            // The client's own query: hickory may reject names or classes
            // we accept; only then is it excused from decoding our reply.
            if decodable
                && Message::from_vec(packet).is_ok()
                && let Err(e) = Message::from_vec(reply)
            {
                panic!("reply does not decode: {e}\nquery {packet:02x?}\nreply {reply:02x?}");
            }
        }
        Err(RequestError::Short | RequestError::Response) => {
            panic!("a reply to a packet that must be dropped")
        }
        Err(RequestError::FormErr(_) | RequestError::NotImp(_)) => {
            assert_eq!(reply.len(), wire::HEADER_LEN, "error reply with a body");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, t: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if let Some((p, d)) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            e.set_dnssec_ok(d);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn every_path_of_the_harness_keeps_the_invariants() {
        let h = Harness::new();
        for name in [
            "blocked.test.",
            "a.wild.test.",
            "ok.blocked.test.",
            "nodata.test.",
            "refused.test.",
            "drop.test.",
            "www.registry.test.",
            "cached.test.",
            "cname.test.",
            "big.test.",
            "nx.test.",
            "stale.test.",
            "miss.test.",
            ".",
        ] {
            for t in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
                for edns in [None, Some((512, false)), Some((4096, true))] {
                    h.request(&query(name, t, edns));
                }
            }
        }
        h.request(&[]);
        h.request(&[0; 12]);
        let mut notimp = query("a.test.", RecordType::A, None);
        notimp[2] |= 0x10;
        h.request(&notimp);
        for pick in 0..=255u8 {
            let (qname, t, edns) = QUESTIONS[pick as usize % QUESTIONS.len()];
            let mut r = reply(&qname.to_ascii_lowercase(), t, edns, 300);
            wire::set_id(&mut r, UPSTREAM_ID);
            let mut data = vec![pick];
            data.extend_from_slice(&r);
            h.upstream(&data);
            h.upstream(&data[..data.len() / 2]);
        }
    }

    /// Crashing inputs the fuzzers found, kept as regression tests
    /// (`fuzz/regressions/<target>/`).
    #[test]
    fn fuzz_regressions() {
        let h = Harness::new();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
        for (target, run) in [
            ("dns_request", Harness::request as fn(&Harness, &[u8])),
            ("dns_upstream", Harness::upstream),
        ] {
            let Ok(dir) = std::fs::read_dir(root.join(target)) else {
                continue;
            };
            for entry in dir.flatten() {
                let bytes = std::fs::read(entry.path()).unwrap();
                run(&h, &bytes);
            }
        }
    }
}
