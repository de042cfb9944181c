//! `sinkhole serve` under a pretend systemd: `NOTIFY_SOCKET` points at a
//! Unix datagram socket this test owns, `WATCHDOG_USEC` asks for pings.
//! READY=1 must mean "answering": the first query sent after it, with no
//! retry, gets an answer. STATUS= names the list version, WATCHDOG=1 keeps
//! coming at about half the interval, and SIGTERM brings STOPPING=1.

use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::common::*;

/// Every datagram, split into its `KEY=value` lines, with when it arrived.
fn listen(sock: UnixDatagram) -> mpsc::Receiver<(Instant, Vec<String>)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            let lines = String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_string)
                .collect();
            if tx.send((Instant::now(), lines)).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn ready_status_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let rx = listen(sock);
    let up = Upstream::start();
    // The harness waits for the ready file, which sends no query either.
    let mut s = Server::builder(&[up.addr])
        .lists(&[("block.txt", "blocked.example\n*.wild.example\n")])
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .start();
    let addr = s.addr;

    // Wait for READY=1 without querying, so nothing but the server's own
    // start-up decides when it comes.
    let mut status = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, lines) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no READY=1 within 20 s; log:\n{}", s.log()));
        for l in &lines {
            if let Some(s) = l.strip_prefix("STATUS=") {
                status.push(s.to_string());
            }
        }
        if lines.iter().any(|l| l == "READY=1") {
            break;
        }
    }
    // READY means answering: one try, no retry.
    for (name, want) in [("blocked.example.", 3), ("www.example.example.", 0)] {
        let q = query_msg(name, RecordType::A, false);
        let m = try_query_udp(addr, &q, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("READY=1 sent but {name} got no answer; log:\n{}", s.log()));
        assert_eq!(rcode(&m), want, "{name}");
    }

    // STATUS= (with READY or just before it) carries the list version.
    let has_version = |s: &str| {
        let lower = s.to_ascii_lowercase();
        lower.find("version").is_some_and(|i| {
            lower[i + "version".len()..]
                .trim_start_matches([' ', '=', ':', 'v'])
                .starts_with(|c: char| c.is_ascii_digit())
        })
    };
    assert!(
        status.iter().any(|s| has_version(s)),
        "no STATUS= with the list version (e.g. \"lists version 1, 2 rules\"): {status:?}"
    );

    // WATCHDOG_USEC=200000: a ping about every 100 ms.
    let t0 = Instant::now();
    let mut pings = Vec::new();
    while t0.elapsed() < Duration::from_millis(1200) {
        if let Ok((at, lines)) = rx.recv_timeout(Duration::from_millis(50)) {
            if lines.iter().any(|l| l == "WATCHDOG=1") {
                pings.push(at);
            }
        }
    }
    assert!(
        pings.len() >= 6,
        "{} WATCHDOG=1 in 1.2 s: {pings:?}",
        pings.len()
    );
    let longest = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        longest < Duration::from_millis(200),
        "a gap of {longest:?} between pings would trip a 200 ms watchdog"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    s.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stopping = false;
    while Instant::now() < deadline && !stopping {
        if let Ok((_, lines)) = rx.recv_timeout(Duration::from_millis(100)) {
            stopping = lines.iter().any(|l| l == "STOPPING=1");
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM; log:\n{}", s.log());
    let code = s
        .wait_exit(Duration::from_secs(10))
        .expect("did not exit after SIGTERM");
    assert!(code.success(), "exit status {code:?}; log:\n{}", s.log());
}

/// Without NOTIFY_SOCKET (a shell, another supervisor) serve runs as usual.
#[test]
fn serves_without_notify_socket() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(&[("block.txt", "blocked.example\n")])
        .env_remove("NOTIFY_SOCKET")
        .start();
    let m = udp(&s, "blocked.example.", RecordType::A, false);
    assert_eq!(rcode(&m), 3);
}
