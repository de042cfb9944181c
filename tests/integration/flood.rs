//! A random-subdomain ("water torture") flood, scaled down for CI: unique
//! names under `dead.example`, a zone the fake upstream never answers,
//! while a probe asks legitimate names. Also: one dead zone does not make
//! an upstream fail over for other zones, and special-use names never
//! leave the server. The full-size figures (RSS, 10k–60k qps, Unbound
//! side by side) are `make bench-attack`'s, not a test's.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};

use crate::common::*;

/// A list, so the server starts; nothing in these tests is blocked by it.
const LISTS: &[(&str, &str)] = &[("block.txt", "listed.test\n")];

/// What the flood's client saw.
#[derive(Debug, Default)]
struct FloodReport {
    sent: usize,
    answered: usize,
    /// Replies by (rcode, EDE code, EDE text).
    by_kind: HashMap<(u16, Option<u16>, String), usize>,
}

impl FloodReport {
    fn servfail(&self) -> usize {
        self.by_kind
            .iter()
            .filter(|((rcode, _, _), _)| *rcode == 2)
            .map(|(_, n)| n)
            .sum()
    }

    fn with_text(&self, text: &str) -> usize {
        self.by_kind
            .iter()
            .filter(|((_, _, t), _)| t == text)
            .map(|(_, n)| n)
            .sum()
    }
}

/// `<unique>.dead.example A` (with EDNS, so failures carry their EDE) at
/// `qps` for `length` from one socket; replies are read until `drain`
/// after the last query.
fn flood(server: SocketAddr, qps: usize, length: Duration, drain: Duration) -> FloodReport {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
    // Room for a burst of replies while the reader is busy.
    let _ = sock.set_recv_buffer_size(4 << 20);
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let sock: UdpSocket = sock.into();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let reader = sock.try_clone().expect("clone");
    let done = Arc::new(AtomicBool::new(false));
    let replies = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut report = FloodReport::default();
            let mut buf = [0u8; 1500];
            loop {
                match reader.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        let Ok(m) = Message::from_vec(&buf[..n]) else {
                            continue;
                        };
                        report.answered += 1;
                        let (code, text) = match ede(&m) {
                            Some((c, t)) => (Some(c), t),
                            None => (None, String::new()),
                        };
                        *report.by_kind.entry((rcode(&m), code, text)).or_default() += 1;
                    }
                    Err(_) if done.load(Ordering::Relaxed) => return report,
                    Err(_) => {}
                }
            }
        })
    };
    let start = Instant::now();
    let tick = Duration::from_millis(10);
    let per_tick = (qps / 100).max(1);
    let mut sent = 0;
    let salt: u32 = rand::random();
    while start.elapsed() < length {
        for _ in 0..per_tick {
            let q = query_msg(
                &format!("f{sent}x{salt:08x}.dead.example."),
                RecordType::A,
                true,
            );
            let _ = sock.send_to(&q.to_vec().expect("encode"), server);
            sent += 1;
        }
        let next = start + tick * (sent / per_tick) as u32;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    std::thread::sleep(drain);
    done.store(true, Ordering::Relaxed);
    let mut report = replies.join().expect("reader");
    report.sent = sent;
    report
}

/// Ask one legitimate name every 50 ms (a new one each time, and a cached
/// one) until `stop`; returns (asked, answered with the upstream's
/// address, latencies).
fn probe(server: SocketAddr, stop: Arc<AtomicBool>) -> (usize, usize, Vec<Duration>) {
    let (mut asked, mut ok, mut took) = (0, 0, Vec::new());
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        for name in [
            format!("probe{i}.fine.example."),
            "cached.fine.example.".into(),
        ] {
            let t0 = Instant::now();
            let m = try_query_udp(
                server,
                &query_msg(&name, RecordType::A, false),
                Duration::from_secs(2),
            );
            asked += 1;
            if m.is_some_and(|m| a_records(&m) == vec![UP_V4]) {
                ok += 1;
                took.push(t0.elapsed());
            }
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    (asked, ok, took)
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get((v.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

#[test]
fn random_subdomain_flood_keeps_legitimate_names_answering() {
    let _alone = common_gate();
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .server_keys("max_inflight = 100")
        .metrics()
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (addr, stop) = (s.addr, stop.clone());
        std::thread::spawn(move || probe(addr, stop))
    };
    let report = flood(
        s.addr,
        1500,
        Duration::from_secs(3),
        Duration::from_millis(1500),
    );
    stop.store(true, Ordering::Relaxed);
    let (asked, ok, took) = prober.join().expect("probe");

    let p99 = p99(took);
    eprintln!("legitimate {ok}/{asked}, p99 {p99:?}; flood {report:?}");
    assert_eq!(
        ok, asked,
        "every legitimate lookup answered during the flood"
    );
    assert!(p99 < Duration::from_millis(500), "legitimate p99 {p99:?}");
    // Answered, not dropped: SERVFAIL, "overload" for the shed ones and
    // No Reachable Authority for those that waited out the timeout.
    assert!(
        report.answered * 100 >= report.sent * 99,
        "flood answered {}/{}: {:?}",
        report.answered,
        report.sent,
        report.by_kind
    );
    assert_eq!(report.servfail(), report.answered, "{:?}", report.by_kind);
    assert!(report.with_text("overload") > 0, "{:?}", report.by_kind);
    let m = s.metrics();
    let peak = metric(m, "sinkhole_inflight_queries_peak", &[]).expect("peak");
    assert!(
        peak <= 100.0,
        "in flight peaked at {peak} over max_inflight 100"
    );
    assert!(metric(m, "sinkhole_shed_queries_total", &[]).unwrap_or(0.0) > 0.0);
    // Nothing is left waiting once the flood is over.
    let settled = wait_for(Duration::from_secs(3), || {
        (metric(m, "sinkhole_inflight_queries", &[]) == Some(0.0)).then_some(())
    });
    assert!(
        settled.is_some(),
        "exchanges still in flight after the flood"
    );
}

#[test]
fn zone_rate_limit_caps_what_reaches_the_upstream() {
    let _alone = common_gate();
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config("[limits]\nupstream_qps_per_zone = 100\nupstream_ratelimit_factor = 10")
        .metrics()
        .start();
    let length = Duration::from_secs(2);
    let report = flood(s.addr, 1000, length, Duration::from_millis(1200));
    let reached = up.count_under("dead.example", "udp");
    eprintln!("upstream saw {reached} for the victim zone; flood {report:?}");
    // The bucket (one second's worth), the rate, one in ten of the rest.
    let most = 100 + 100 * length.as_secs() as usize + report.sent / 10 + 20;
    assert!(
        reached <= most,
        "upstream saw {reached} of {} flood queries (at most {most})",
        report.sent
    );
    assert!(
        reached >= 100,
        "the rate and the probes still go through: {reached}"
    );
    let limited = report.with_text("upstream rate limit for dead.example");
    assert!(limited * 2 >= report.sent, "{:?}", report.by_kind);
    assert!(
        report.answered * 100 >= report.sent * 99,
        "{:?}",
        report.by_kind
    );
    let counted = metric(
        s.metrics(),
        "sinkhole_upstream_ratelimited_total",
        &[("zone", "dead.example")],
    )
    .unwrap_or(0.0);
    assert_eq!(counted as usize, limited);
    // Other zones are untouched.
    let m = udp(&s, "www.fine.example.", RecordType::A, false);
    assert_eq!(a_records(&m), vec![UP_V4]);
}

#[test]
fn a_dead_zone_does_not_fail_other_zones_over() {
    let _alone = common_gate();
    let (first, second) = (Upstream::start(), Upstream::start());
    let s = Server::builder(&[first.addr, second.addr])
        .lists(LISTS)
        .start();
    let addr = s.addr;
    let failed = Arc::new(AtomicUsize::new(0));
    let dead: Vec<_> = (0..8)
        .map(|i| {
            let failed = failed.clone();
            std::thread::spawn(move || {
                let q = query_msg(&format!("d{i}.dead.example."), RecordType::A, true);
                let m = try_query_udp(addr, &q, Duration::from_secs(3)).expect("answered");
                if rcode(&m) == 2 && ede(&m).is_some_and(|(code, _)| code == 22) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in dead {
        t.join().expect("dead query");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        8,
        "SERVFAIL, EDE 22 No Reachable Authority"
    );
    assert!(first.count_under("dead.example", "udp") >= 8);
    for i in 0..5 {
        let name = format!("n{i}.alive.example");
        let m = udp(&s, &format!("{name}."), RecordType::A, false);
        assert_eq!(a_records(&m), vec![UP_V4], "{name}");
        assert_eq!(
            first.count(&name, "udp"),
            1,
            "{name} asked of the first upstream"
        );
        assert_eq!(second.count(&name, "udp"), 0, "{name} did not fail over");
    }
}

#[test]
fn special_use_names_are_answered_here_and_never_forwarded() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr]).lists(LISTS).metrics().start();
    // name, type, rcode, A record (for localhost)
    let table: &[(&str, RecordType, u16, Option<&str>)] = &[
        ("localhost", RecordType::A, 0, Some("127.0.0.1")),
        ("www.localhost", RecordType::AAAA, 0, Some("::1")),
        ("a.test", RecordType::A, 3, None),
        ("a.invalid", RecordType::A, 3, None),
        ("xyz.onion", RecordType::A, 3, None),
        ("nas.home.arpa", RecordType::A, 3, None),
        ("4.3.2.10.in-addr.arpa", RecordType::PTR, 3, None),
        ("1.1.16.172.in-addr.arpa", RecordType::PTR, 3, None),
        ("1.1.168.192.in-addr.arpa", RecordType::PTR, 3, None),
        ("1.0.0.127.in-addr.arpa", RecordType::PTR, 3, None),
        ("1.1.254.169.in-addr.arpa", RecordType::PTR, 3, None),
        (
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
            RecordType::PTR,
            0,
            None,
        ),
        (
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa",
            RecordType::PTR,
            3,
            None,
        ),
        (
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
            RecordType::PTR,
            3,
            None,
        ),
    ];
    for (name, t, want, addr) in table {
        let m = udp(&s, &format!("{name}."), *t, false);
        assert_eq!(rcode(&m), *want, "{name}");
        if let Some(addr) = addr {
            let got: Vec<String> = m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0.to_string()),
                    RData::AAAA(a) => Some(a.0.to_string()),
                    _ => None,
                })
                .collect();
            assert_eq!(got, vec![addr.to_string()], "{name}");
        }
        assert_eq!(
            up.count(name, "udp") + up.count(name, "tcp"),
            0,
            "{name} went upstream"
        );
    }
    let local = |zone| {
        metric(
            s.metrics(),
            "sinkhole_local_answers_total",
            &[("zone", zone)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(local("private-reverse"), 8.0);
    assert_eq!(local("localhost"), 2.0);
    // A listed special-use name keeps its block answer and EDE.
    let m = udp(&s, "listed.test.", RecordType::A, true);
    assert_eq!(rcode(&m), 3);
    assert_eq!(ede(&m).map(|(code, _)| code), Some(16));
    // Public reverse space still goes upstream.
    let _ = udp(&s, "8.8.8.8.in-addr.arpa.", RecordType::PTR, false);
    assert_eq!(up.count("8.8.8.8.in-addr.arpa", "udp"), 1);
}

#[test]
fn private_reverse_can_be_left_to_the_upstream() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config("[policy]\nlocal_zones = [\"localhost\", \"test\", \"invalid\", \"onion\", \"home.arpa\"]")
        .start();
    let m = udp(&s, "4.3.2.10.in-addr.arpa.", RecordType::PTR, false);
    assert_eq!(rcode(&m), 0, "the upstream's answer");
    assert_eq!(up.count("4.3.2.10.in-addr.arpa", "udp"), 1);
    assert_eq!(rcode(&udp(&s, "a.test.", RecordType::A, false)), 3);
    assert_eq!(up.count("a.test", "udp"), 0);
}

/// The flood tests load the machine on purpose: they run alone among the
/// tests that start a server.
fn common_gate() -> crate::common::gate::Guard {
    crate::common::gate::exclusive()
}
