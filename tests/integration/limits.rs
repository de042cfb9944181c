//! Per-client limits (`[limits]`) and the TCP slowloris defence, against
//! the real binary: one client over its limits is limited while another
//! (a different loopback source address) is still served.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

const LISTS: &[(&str, &str)] = &[("block.txt", "blocked.example\n")];
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const THIRD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// Send queries from one socket bound to `from` at about `qps` for `secs`
/// seconds, counting the answers (and those arriving 300 ms after).
fn flood(from: Ipv4Addr, server: SocketAddr, qps: u32, secs: f64) -> (usize, usize) {
    let sock = UdpSocket::bind((from, 0)).expect("bind");
    sock.set_nonblocking(true).ok();
    let total = (f64::from(qps) * secs) as usize;
    let t0 = Instant::now();
    let mut buf = [0u8; 1500];
    let mut got = 0;
    let mut drain = |got: &mut usize| {
        while let Ok((len, _)) = sock.recv_from(&mut buf) {
            if Message::from_vec(&buf[..len]).is_ok() {
                *got += 1;
            }
        }
    };
    for i in 0..total {
        let due = Duration::from_secs_f64(i as f64 / f64::from(qps));
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        let mut q = query_msg("blocked.example.", RecordType::A, false);
        q.metadata.id = i as u16;
        let _ = sock.send_to(&q.to_vec().expect("encode"), server);
        drain(&mut got);
    }
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        drain(&mut got);
        std::thread::sleep(Duration::from_millis(10));
    }
    (total, got)
}

/// One A query from `from`, answered within 2 s or None.
fn ask_from(from: Ipv4Addr, server: SocketAddr, name: &str) -> Option<Message> {
    let q = query_msg(name, RecordType::A, false);
    try_query_udp_from(IpAddr::V4(from), server, &q, Duration::from_secs(2))
}

#[test]
fn one_client_over_its_qps_limit_does_not_starve_another() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config("[limits]\nqps_per_client = 20\nqps_burst = 20")
        .metrics()
        .start();
    let maddr = s.metrics();
    // The harness sends no probe queries (it waits for the ready file), so
    // 127.0.0.1 starts with a full bucket.
    // 127.0.0.1 sends 500 qps for 1.5 s, 25 times its limit...
    let addr = s.addr;
    let flooder = std::thread::spawn(move || flood(Ipv4Addr::LOCALHOST, addr, 500, 1.5));
    // ...while 127.0.0.2 is answered every time.
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..10 {
        let m = ask_from(OTHER, s.addr, &format!("other{i}.example."))
            .unwrap_or_else(|| panic!("127.0.0.2 not answered; log:\n{}", s.log()));
        assert_eq!(a_records(&m), vec![UP_V4]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (sent, answered) = flooder.join().expect("join");
    // The burst plus 20 per second, with slack for timing.
    let most = 20 + (20.0 * 1.8) as usize + 5;
    assert!(
        answered >= 20 && answered <= most,
        "{answered} of {sent} answered (20 + 20/s expected, at most {most})"
    );
    // Over TCP the limited client is told so (REFUSED), not left waiting.
    let mut c = tcp_connect_from(Ipv4Addr::LOCALHOST, s.addr).expect("tcp");
    let mut refused = 0;
    for _ in 0..40 {
        let q = query_msg("blocked.example.", RecordType::A, false);
        let m = tcp_query_on(&mut c, &q, Duration::from_secs(2)).expect("an answer over TCP");
        if rcode(&m) == 5 {
            refused += 1;
        }
    }
    assert!(refused > 0, "TCP over the limit gets REFUSED");
    let limited = metric(maddr, "sinkhole_ratelimited_total", &[("limit", "qps")]).unwrap_or(0.0);
    assert!(limited >= (sent - answered) as f64, "counted: {limited}");
    // A second later the bucket has refilled.
    std::thread::sleep(Duration::from_millis(1100));
    let m = ask_from(Ipv4Addr::LOCALHOST, s.addr, "blocked.example.").expect("answered again");
    assert_eq!(rcode(&m), 3);
}

#[test]
fn tcp_connections_per_client() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config("[limits]\ntcp_connections_per_client = 2")
        .metrics()
        .start();
    let maddr = s.metrics();
    let q = || query_msg("blocked.example.", RecordType::A, false);
    let wait = Duration::from_secs(2);
    let mut a = tcp_connect_from(Ipv4Addr::LOCALHOST, s.addr).expect("a");
    let mut b = tcp_connect_from(Ipv4Addr::LOCALHOST, s.addr).expect("b");
    assert_eq!(
        rcode(&tcp_query_on(&mut a, &q(), wait).expect("a answered")),
        3
    );
    assert_eq!(
        rcode(&tcp_query_on(&mut b, &q(), wait).expect("b answered")),
        3
    );
    // The third from the same client is closed at once...
    let mut c = tcp_connect_from(Ipv4Addr::LOCALHOST, s.addr).expect("c");
    assert!(closed_by_server(&mut c, wait), "third connection closed");
    // ...while another client connects and is answered.
    let mut d = tcp_connect_from(OTHER, s.addr).expect("d");
    assert_eq!(
        rcode(&tcp_query_on(&mut d, &q(), wait).expect("d answered")),
        3
    );
    assert_eq!(
        metric(
            maddr,
            "sinkhole_ratelimited_total",
            &[("limit", "tcp_connections")]
        ),
        Some(1.0)
    );
    // A closed connection frees its slot.
    drop(a);
    let e = wait_for(Duration::from_secs(3), || {
        let mut e = tcp_connect_from(Ipv4Addr::LOCALHOST, s.addr).ok()?;
        tcp_query_on(&mut e, &q(), wait)
    });
    assert_eq!(rcode(&e.expect("slot freed")), 3);
    drop(b);
}

/// Slowloris connections from `from`: each sends the length prefix of the
/// largest message and then one byte of it per [`Trickle::tick`], so it is
/// never idle for long and never completes a query.
struct Trickle {
    conns: Vec<TcpStream>,
    last: Instant,
}

impl Trickle {
    /// One connection from each address in `from`, the length prefix sent.
    fn open(from: &[Ipv4Addr], server: SocketAddr) -> Trickle {
        let conns = from
            .iter()
            .filter_map(|&a| {
                let mut c = tcp_connect_from(a, server).ok()?;
                c.write_all(&[0xff, 0xff]).ok()?;
                Some(c)
            })
            .collect();
        Trickle {
            conns,
            last: Instant::now(),
        }
    }

    /// One more byte on each connection, at most every 100 ms (well inside
    /// the 500 ms idle timeout).
    fn tick(&mut self) {
        if self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        for c in &mut self.conns {
            // Fails once the server closed it; that is the point.
            let _ = c.write_all(&[0]);
        }
    }
}

/// A client that trickles bytes (never a complete query) is closed after
/// `tcp_idle_timeout_ms` like an idle one, so slowloris connections cannot
/// keep the connection slots: per-client limits keep one attacker from
/// filling them, and with the global limit full of several attackers' a
/// new client gets in as soon as theirs time out. Frames that are not a
/// query at all (empty, shorter than a header) close the connection at
/// once, so they cannot be used to look busy either.
#[test]
fn slowloris_cannot_keep_others_out() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config("[limits]\ntcp_connections_per_client = 2")
        .server_keys("tcp_idle_timeout_ms = 500\ntcp_max_connections = 4")
        .start();
    let q = || query_msg("blocked.example.", RecordType::A, false);
    let wait = Duration::from_secs(2);

    // One attacker: only two of its connections get a slot, and trickling
    // does not keep them past the idle timeout.
    let mut one = Trickle::open(&[Ipv4Addr::LOCALHOST; 6], s.addr);
    let t0 = Instant::now();
    let mut served = 0;
    while t0.elapsed() < Duration::from_millis(1500) {
        one.tick();
        // Others are served throughout.
        let mut d = tcp_connect_from(OTHER, s.addr).expect("other connects");
        let m = tcp_query_on(&mut d, &q(), wait)
            .unwrap_or_else(|| panic!("127.0.0.2 not served; log:\n{}", s.log()));
        assert_eq!(rcode(&m), 3);
        served += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served >= 5);
    for (i, c) in one.conns.iter_mut().enumerate() {
        assert!(
            closed_by_server(c, Duration::from_millis(500)),
            "slowloris connection {i} still open after {:?}",
            t0.elapsed()
        );
    }

    // Two attackers fill the global limit (4); a third client gets in as
    // soon as their connections reach the idle timeout.
    let mut two = Trickle::open(
        &[Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, THIRD, THIRD],
        s.addr,
    );
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    let got = wait_for(Duration::from_secs(3), || {
        two.tick();
        let mut d = tcp_connect_from(OTHER, s.addr).ok()?;
        tcp_query_on(&mut d, &q(), Duration::from_millis(200))
    });
    let took = t0.elapsed();
    assert_eq!(rcode(&got.expect("served once the slots free up")), 3);
    assert!(took < Duration::from_millis(1500), "{took:?}");

    // Empty frames are no queries: closed at once, not kept alive.
    let mut e = tcp_connect_from(THIRD, s.addr).expect("connect");
    e.write_all(&[0, 0, 0, 0]).expect("two empty frames");
    assert!(closed_by_server(&mut e, Duration::from_millis(300)));
    // UDP never noticed.
    assert_eq!(rcode(&udp(&s, "blocked.example.", RecordType::A, false)), 3);
}
