//! `sinkhole serve` end to end: the real binary, a scripted upstream, real
//! DNS messages over UDP and TCP on loopback.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};

const LISTS: &[(&str, &str)] = &[
    (
        "block.txt",
        "blocked.example\n*.wild.example\nvia.cdnchain.example\n@@||ok.blocked.example^\n",
    ),
    ("nodata.txt", "nodata.example\n"),
    ("refused.txt", "refused.example\n"),
    ("drop.txt", "drop.example\n"),
    ("address.txt", "address.example\n"),
];

/// A server with [`LISTS`], each per-list action file its action, and
/// `extra` configuration.
fn server(up: &Upstream, extra: &str) -> Server {
    Server::builder(&[up.addr])
        .lists(LISTS)
        .config(PER_LIST)
        .config(extra)
        .start()
}

/// The TTL of the SOA in the authority section, if any.
fn soa_ttl(m: &Message) -> Option<u32> {
    m.authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| r.ttl)
}

#[test]
fn nxdomain_default_with_soa_and_ede() {
    let up = Upstream::start();
    let s = server(&up, "");
    for name in [
        "blocked.example.",
        "www.blocked.example.",
        "a.b.c.blocked.example.",
    ] {
        let m = udp(&s, name, RecordType::A, true);
        assert_eq!(rcode(&m), 3, "{name}");
        assert!(m.answers.is_empty());
        assert_eq!(soa_ttl(&m), Some(300), "{name}");
        let (code, text) = ede(&m).expect("EDE");
        assert_eq!(code, 16);
        assert!(text.starts_with("blocked by order"), "{text}");
        assert!(m.metadata.recursion_available);
    }
    // Without EDNS: no OPT at all.
    let m = udp(&s, "blocked.example.", RecordType::AAAA, false);
    assert_eq!(rcode(&m), 3);
    assert!(m.edns.is_none());
    // Label boundary: a longer name that merely ends the same is not blocked.
    let m = udp(&s, "xblocked.example.", RecordType::A, true);
    assert_eq!(rcode(&m), 0);
    assert_eq!(a_records(&m), vec![UP_V4]);
    // `*.wild.example` blocks below, not the name itself.
    assert_eq!(rcode(&udp(&s, "a.wild.example.", RecordType::A, false)), 3);
    assert_eq!(rcode(&udp(&s, "wild.example.", RecordType::A, false)), 0);
    assert_eq!(
        up.count("blocked.example", "udp"),
        0,
        "blocked names never go upstream"
    );
}

#[test]
fn per_list_actions_and_qtypes() {
    let up = Upstream::start();
    let s = server(&up, "");
    for t in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::HTTPS,
    ] {
        let m = udp(&s, "nodata.example.", t, true);
        assert_eq!(rcode(&m), 0, "{t}");
        assert!(m.answers.is_empty(), "{t}");
        assert_eq!(soa_ttl(&m), Some(300));
        assert_eq!(ede(&m).map(|e| e.0), Some(16));

        let m = udp(&s, "refused.example.", t, true);
        assert_eq!(rcode(&m), 5);
        assert_eq!(ede(&m).map(|e| e.0), Some(16));
    }
    let q = query_msg("drop.example.", RecordType::A, true);
    assert!(try_query_udp(s.addr, &q, Duration::from_millis(700)).is_none());

    let m = udp(&s, "www.address.example.", RecordType::A, true);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(192, 0, 2, 1)]);
    let m = udp(&s, "address.example.", RecordType::AAAA, true);
    assert!(
        matches!(&m.answers[0].data, RData::AAAA(a) if a.0 == "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap())
    );
    for t in [RecordType::MX, RecordType::HTTPS, RecordType::TXT] {
        let m = udp(&s, "address.example.", t, true);
        assert_eq!(rcode(&m), 0);
        assert!(m.answers.is_empty(), "never an address for {t}");
        assert_eq!(soa_ttl(&m), Some(300));
    }
}

#[test]
fn address_as_default_action() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config("[policy]\naction = \"address\"\naddress_v4 = \"10.9.9.9\"\naddress_v6 = \"fd00::9\"\nttl = 120\n")
        .start();
    let m = udp(&s, "blocked.example.", RecordType::A, false);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 9, 9, 9)]);
    assert_eq!(m.answers[0].ttl, 120);
    let m = udp(&s, "blocked.example.", RecordType::AAAA, false);
    assert!(
        matches!(&m.answers[0].data, RData::AAAA(a) if a.0 == "fd00::9".parse::<std::net::Ipv6Addr>().unwrap())
    );
    for t in [RecordType::MX, RecordType::HTTPS, RecordType::SRV] {
        let m = udp(&s, "blocked.example.", t, false);
        assert_eq!(rcode(&m), 0);
        assert!(m.answers.is_empty(), "{t}");
        assert_eq!(soa_ttl(&m), Some(120));
    }
}

#[test]
fn ede_code_and_text_from_the_rule() {
    let up = Upstream::start();
    let csv = "domain;url;authority;decision;date;category\nregistry-blocked.example;;AFM;2025-17/KZ;2025-03-01;crypto\n";
    let s = Server::builder(&[up.addr])
        .lists(&[("registry.csv", csv)])
        .config("[policy]\nede_code = 15\nede_text = \"order {decision} by {authority} ({list}: {rule})\"\n")
        .start();
    let m = udp(&s, "www.registry-blocked.example.", RecordType::A, true);
    assert_eq!(rcode(&m), 3);
    assert_eq!(
        ede(&m),
        Some((
            15,
            "order 2025-17/KZ by AFM (registry: registry-blocked.example)".to_string()
        ))
    );
}

#[test]
fn allow_rules_and_forwarding() {
    let up = Upstream::start();
    let s = server(&up, "");
    let m = udp(&s, "ok.blocked.example.", RecordType::A, false);
    assert_eq!(rcode(&m), 0);
    assert_eq!(a_records(&m), vec![UP_V4]);
    let m = udp(&s, "www.ok.blocked.example.", RecordType::AAAA, false);
    assert_eq!(m.answers.len(), 1);
    let m = udp(&s, "nx.example.example.", RecordType::A, true);
    assert_eq!(rcode(&m), 3, "upstream NXDOMAIN passes through");
    assert_eq!(soa_ttl(&m), Some(3600));
}

#[test]
fn cname_chain_inspection() {
    let up = Upstream::start();
    let s = server(&up, "");
    // cname.cdnchain.example → via.cdnchain.example (blocked) → final.cdnchain.example
    for _ in 0..2 {
        // The second round comes from the cache and must still be blocked.
        let m = udp(&s, "cname.cdnchain.example.", RecordType::A, true);
        assert_eq!(rcode(&m), 3);
        assert!(m.answers.is_empty());
        assert_eq!(ede(&m).map(|e| e.0), Some(16));
    }
    let m = udp(&s, "cname.okchain.example.", RecordType::A, false);
    assert_eq!(rcode(&m), 0);
    assert_eq!(m.answers.len(), 3, "chain intact");
    assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
    assert!(
        s.log().contains("via.cdnchain.example"),
        "hit names the CNAME target"
    );
}

#[test]
fn letter_case_is_preserved() {
    let up = Upstream::start();
    let s = server(&up, "");
    for name in [
        "BlOcKeD.ExAmPlE.",
        "WwW.FoRwArDeD.ExAmPlE.",
        "CnAmE.OkChAiN.eXaMpLe.",
    ] {
        let m = udp(&s, name, RecordType::A, true);
        assert_eq!(m.queries[0].name().to_ascii(), name);
        // Twice: the second answer comes from the cache with the new spelling.
        let lower = name.to_ascii_lowercase();
        let m2 = udp(&s, &lower, RecordType::A, true);
        assert_eq!(m2.queries[0].name().to_ascii(), lower);
    }
    let m = udp(&s, "WwW.FoRwArDeD.ExAmPlE.", RecordType::A, false);
    assert_eq!(m.answers[0].name.to_ascii(), "WwW.FoRwArDeD.ExAmPlE.");
}

#[test]
fn tcp_pipelined_out_of_order() {
    let up = Upstream::start();
    let s = server(&up, "");
    let qs = vec![
        query_msg("slow.example.", RecordType::A, false),
        query_msg("blocked.example.", RecordType::A, false),
        query_msg("tcp1.example.", RecordType::A, true),
        query_msg("tcp2.example.", RecordType::AAAA, false),
    ];
    let t0 = Instant::now();
    let replies = tcp_pipelined(s.addr, &qs);
    assert_eq!(replies.len(), 4);
    // The slow upstream query must not hold the others back.
    assert_ne!(
        replies[0].metadata.id, qs[0].metadata.id,
        "answered as they complete"
    );
    for q in &qs {
        let r = replies
            .iter()
            .find(|r| r.metadata.id == q.metadata.id)
            .expect("reply");
        let want = match q.queries[0].name().to_ascii().as_str() {
            "slow.example." => 2,
            "blocked.example." => 3,
            _ => 0,
        };
        assert_eq!(rcode(r), want, "{}", q.queries[0].name());
    }
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[test]
fn truncated_upstream_answer_is_retried_over_tcp() {
    let up = Upstream::start();
    let s = server(&up, "");
    let m = udp(&s, "big.example.", RecordType::TXT, true);
    assert!(m.metadata.truncation, "too big for UDP: TC to the client");
    assert!(
        up.count("big.example", "tcp") >= 1,
        "sinkhole asked upstream over TCP"
    );
    let r = tcp_pipelined(s.addr, &[query_msg("big.example.", RecordType::TXT, true)]);
    assert_eq!(r[0].answers.len(), 40);
    assert!(!r[0].metadata.truncation);
}

#[test]
fn upstream_timeout_gives_servfail_in_time_while_others_answer() {
    let up = Upstream::start();
    let s = server(&up, "");
    let addr = s.addr;
    let slow = std::thread::spawn(move || {
        let t0 = Instant::now();
        let m = try_query_udp(
            addr,
            &query_msg("slow.example.", RecordType::A, false),
            Duration::from_secs(3),
        );
        (m, t0.elapsed())
    });
    up.await_query("slow.example", "udp");
    for i in 0..5 {
        let m = udp(&s, &format!("fast{i}.example."), RecordType::A, false);
        assert_eq!(a_records(&m), vec![UP_V4]);
    }
    let (m, took) = slow.join().expect("join");
    let m = m.expect("SERVFAIL, not silence");
    assert_eq!(rcode(&m), 2);
    // timeout_ms = 800 in the harness config
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[test]
fn failover_to_the_next_upstream() {
    let up = Upstream::start();
    // Nothing listens on the first upstream's port: it fails at once (ICMP).
    let dead = Upstream::start();
    dead.set(Fault::Down);
    let s = Server::builder(&[dead.addr, up.addr]).lists(LISTS).start();
    let m = udp(&s, "failover.example.", RecordType::A, false);
    assert_eq!(a_records(&m), vec![UP_V4]);
}

#[test]
fn acl_refuses_other_clients() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config("[acl]\nallow = [\"127.0.0.1/32\"]\n")
        .start();
    let q = query_msg("a.example.", RecordType::A, true);
    let m = try_query_udp_from(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        s.addr,
        &q,
        Duration::from_secs(3),
    )
    .expect("an answer to 127.0.0.2");
    assert_eq!(rcode(&m), 5);
    assert_eq!(ede(&m).map(|e| e.0), Some(18));
    assert_eq!(up.count("a.example", "udp"), 0);
    let m = udp(&s, "a.example.", RecordType::A, true);
    assert_eq!(rcode(&m), 0);
}

#[test]
fn garbage_is_dropped_or_formerr_and_service_continues() {
    let up = Upstream::start();
    let s = server(&up, "");
    let wait = Duration::from_millis(300);
    // Too short, and a response (QR=1): dropped.
    assert!(udp_raw(s.addr, &[1, 2, 3], wait).is_none());
    let mut resp = query_msg("a.example.", RecordType::A, false)
        .to_vec()
        .unwrap();
    resp[2] |= 0x80;
    assert!(udp_raw(s.addr, &resp, wait).is_none());
    // A header with a broken body: FORMERR with the same ID.
    let mut bad = query_msg("a.example.", RecordType::A, false)
        .to_vec()
        .unwrap();
    bad.truncate(16);
    let r = udp_raw(s.addr, &bad, Duration::from_secs(2)).expect("FORMERR");
    let m = Message::from_vec(&r).unwrap();
    assert_eq!(rcode(&m), 1);
    assert_eq!(&r[0..2], &bad[0..2]);
    // Noise of every length.
    let mut x: u32 = 12345;
    for len in 0..300 {
        let p: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let _ = sock.send_to(&p, s.addr);
    }
    let m = udp(&s, "after-garbage.example.", RecordType::A, false);
    assert_eq!(a_records(&m), vec![UP_V4]);
    let m = udp(&s, "blocked.example.", RecordType::A, false);
    assert_eq!(rcode(&m), 3);
}

#[test]
fn cache_counts_ttl_down() {
    let up = Upstream::start();
    let s = server(&up, "");
    let m1 = udp(&s, "ttl.count.example.", RecordType::A, false);
    assert_eq!(m1.answers[0].ttl, 100);
    std::thread::sleep(Duration::from_millis(1100));
    let m2 = udp(&s, "ttl.count.example.", RecordType::A, false);
    assert!(
        m2.answers[0].ttl < 100 && m2.answers[0].ttl >= 97,
        "{}",
        m2.answers[0].ttl
    );
    assert_eq!(
        up.count("ttl.count.example", "udp"),
        1,
        "second answer from the cache"
    );
    // Negative answers are cached too (RFC 2308: SOA minimum 60).
    let n1 = udp(&s, "nx.neg.example.", RecordType::A, false);
    assert_eq!(rcode(&n1), 3);
    let n2 = udp(&s, "nx.neg.example.", RecordType::A, false);
    assert_eq!(rcode(&n2), 3);
    assert!(soa_ttl(&n2).unwrap_or(999) <= 60);
    assert_eq!(up.count("nx.neg.example", "udp"), 1);
}

#[test]
fn ad_flag_and_upstream_edns_pass_through() {
    let up = Upstream::start();
    let s = server(&up, "");
    // RFC 6840 §5.8: AD only for a query that set AD or DO.
    let ad_query = |name: &str| {
        let mut q = query_msg(name, RecordType::A, true);
        q.metadata.authentic_data = true;
        try_query_udp(s.addr, &q, Duration::from_secs(3)).expect("answer")
    };
    let m = ad_query("ad.example.");
    assert!(m.metadata.authentic_data);
    assert_eq!(
        m.edns.as_ref().map(|e| e.max_payload()),
        Some(1232),
        "payload clamped"
    );
    let m = ad_query("ad.example.");
    assert!(m.metadata.authentic_data, "also from the cache");
    let m = udp(&s, "ad.example.", RecordType::A, true);
    assert!(
        !m.metadata.authentic_data,
        "no AD for a query without AD or DO, though the upstream set it"
    );
}

/// RFC 1035 §4.1.1: RD in a reply is the query's, also when the answer
/// comes from a cache entry filled by a query with another RD.
#[test]
fn cached_reply_copies_rd_from_the_query_it_answers() {
    let up = Upstream::start();
    let s = server(&up, "");
    let first = udp(&s, "rd.cache.example.", RecordType::A, false);
    assert!(first.metadata.recursion_desired);
    let mut q = query_msg("rd.cache.example.", RecordType::A, false);
    q.metadata.recursion_desired = false;
    let m = try_query_udp(s.addr, &q, Duration::from_secs(3)).expect("answer");
    assert_eq!(
        up.count("rd.cache.example", "udp"),
        1,
        "served from the cache"
    );
    assert!(
        !m.metadata.recursion_desired,
        "RD follows the answering query"
    );
    assert!(!m.metadata.authentic_data);
}

#[test]
fn spoofed_upstream_answer_is_ignored() {
    let up = Upstream::start();
    let s = server(&up, "");
    let m = udp(&s, "spoof.example.", RecordType::A, false);
    assert_eq!(a_records(&m), vec![UP_V4]);
}

/// The same through `dig` (Debian's bind9-dnsutils, installed by `make
/// test-deps`), when it is there.
#[test]
fn dig_sees_the_sinkhole_answer() {
    if std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("skipped: dig not installed");
        return;
    }
    let up = Upstream::start();
    let s = server(&up, "");
    let dig = |args: &[&str]| {
        let out = std::process::Command::new("dig")
            .args([
                "+tries=1",
                "+time=3",
                "-p",
                &s.addr.port().to_string(),
                "@127.0.0.1",
            ])
            .args(args)
            .output()
            .expect("dig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = dig(&["Www.Blocked.Example", "A"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert!(out.contains("EDE: 16 (Censored)"), "{out}");
    assert!(
        out.contains(";Www.Blocked.Example."),
        "0x20 case kept: {out}"
    );
    let out = dig(&["+tcp", "allowed.example", "A"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("192.0.2.10"),
        "{out}"
    );
}

/// The server log once it contains `needle`, or after 5 s whatever it holds.
fn wait_for_log(s: &Server, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = s.log();
        if log.contains(needle) || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_block_reaches_the_hit_log() {
    let up = Upstream::start();
    // Default `[audit] path = "-"`: one JSON line per hit on stdout.
    let s = server(&up, "");
    udp(&s, "Www.Blocked.Example.", RecordType::AAAA, false);
    let log = wait_for_log(&s, "\"qname\":\"Www.Blocked.Example\"");
    let line = log
        .lines()
        .find(|l| l.contains("\"qname\":\"Www.Blocked.Example\""))
        .unwrap_or_else(|| panic!("no hit line; log:\n{log}"));
    for field in [
        "\"kind\":\"hit\"",
        "\"transport\":\"udp\"",
        "\"qtype\":\"AAAA\"",
        "\"action\":\"nxdomain\"",
        "\"rule\":\"blocked.example\"",
        "\"list\":\"block\"",
        "\"line\":1",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    // A block through a CNAME names the target's rule; drop is logged too.
    udp(&s, "cname.cdnchain.example.", RecordType::A, false);
    let q = query_msg("drop.example.", RecordType::A, false);
    let _ = try_query_udp(s.addr, &q, Duration::from_millis(300));
    let log = wait_for_log(&s, "\"action\":\"drop\"");
    assert!(
        log.contains("\"qname\":\"cname.cdnchain.example\""),
        "{log}"
    );
    assert!(log.contains("\"rule\":\"via.cdnchain.example\""), "{log}");
    assert!(log.contains("\"action\":\"drop\""), "{log}");
    // Over TCP, into a directory.
    let dir = tempfile::tempdir().expect("tempdir");
    let s = server(
        &up,
        &format!("[audit]\npath = \"{}\"\n", dir.path().display()),
    );
    let r = tcp_pipelined(
        s.addr,
        &[query_msg("refused.example.", RecordType::MX, false)],
    );
    assert_eq!(rcode(&r[0]), 5);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut found = String::new();
    while Instant::now() < deadline {
        found = std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect();
        if found.contains("refused.example") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        found.contains("\"transport\":\"tcp\"") && found.contains("\"action\":\"refused\""),
        "{found}"
    );
}

#[test]
fn overload_sheds_the_oldest_upstream_query() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .server_keys("max_inflight = 2")
        .start();
    let addr = s.addr;
    // Two queries the upstream never answers fill the in-flight limit.
    let first = query_msg("slow.example.", RecordType::A, true);
    // A different name: the same question would join the first exchange.
    let second = query_msg("slow2.example.", RecordType::A, false);
    let sock1 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sock2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock1.send_to(&first.to_vec().unwrap(), addr).unwrap();
    up.await_query("slow.example", "udp");
    sock2.send_to(&second.to_vec().unwrap(), addr).unwrap();
    up.await_query("slow2.example", "udp");
    // A third query still gets through, at the cost of the oldest.
    let t0 = Instant::now();
    let m = udp(&s, "fresh.example.", RecordType::A, false);
    assert_eq!(a_records(&m), vec![UP_V4]);
    assert!(
        t0.elapsed() < Duration::from_millis(700),
        "did not wait for a slot"
    );
    let mut buf = [0u8; 512];
    sock1
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    sock2
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    // The oldest is answered at once, not left to time out in silence.
    let (n, _) = sock1.recv_from(&mut buf).expect("the oldest is answered");
    let shed = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(rcode(&shed), 2, "SERVFAIL");
    assert_eq!(ede(&shed), Some((0, "overload".to_string())));
    let (n, _) = sock2
        .recv_from(&mut buf)
        .expect("the second still times out normally");
    assert_eq!(rcode(&Message::from_vec(&buf[..n]).unwrap()), 2);
}

#[test]
fn a_silent_upstream_stops_costing_every_query() {
    let up = Upstream::start();
    // Bound but never answering: every query to it times out.
    let silent = Upstream::start();
    silent.set(Fault::Silent);
    let s = Server::builder(&[silent.addr, up.addr])
        .lists(LISTS)
        .start();
    for i in 0..3 {
        let m = udp(&s, &format!("warm{i}.example."), RecordType::A, false);
        assert_eq!(a_records(&m), vec![UP_V4], "failover works");
    }
    let t0 = Instant::now();
    let m = udp(&s, "quick.example.", RecordType::A, false);
    assert_eq!(a_records(&m), vec![UP_V4]);
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn identical_misses_share_one_upstream_query() {
    let up = Upstream::start();
    let s = server(&up, "");
    // The upstream delays spoof.example by 50 ms, so these overlap.
    let addr = s.addr;
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let name = if i % 2 == 0 {
                    "SpOoF.ExAmPlE."
                } else {
                    "spoof.example."
                };
                let q = query_msg(name, RecordType::A, false);
                let m = try_query_udp(addr, &q, Duration::from_secs(3)).expect("answer");
                (name, m)
            })
        })
        .collect();
    for t in threads {
        let (name, m) = t.join().expect("join");
        assert_eq!(a_records(&m), vec![UP_V4]);
        assert_eq!(
            m.queries[0].name().to_ascii(),
            name,
            "each client keeps its spelling"
        );
    }
    assert_eq!(
        up.count("spoof.example", "udp"),
        1,
        "one upstream query for all"
    );
}
