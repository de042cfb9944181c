//! `sinkhole serve` under a pretend systemd: `NOTIFY_SOCKET` points at a
//! Unix datagram socket this test owns, `WATCHDOG_USEC` asks for pings.
//! READY=1 must mean "answering": the first query sent after it, with no
//! retry, gets an answer. STATUS= names the list version, WATCHDOG=1 keeps
//! coming at about half the interval, and SIGTERM brings STOPPING=1.

use crate::common;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

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

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, notify: &Path, upstream: SocketAddr, addr: SocketAddr) -> Serve {
    let lists = dir.join("lists");
    std::fs::create_dir(&lists).unwrap();
    std::fs::write(lists.join("block.txt"), "blocked.test\n*.wild.test\n").unwrap();
    let cfg = dir.join("sinkhole.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"{addr}\"]\nworkers = 2\n[upstream]\nservers = [\"{upstream}\"]\ntimeout_ms = 800\n[lists]\npaths = [\"{}\"]\n",
            lists.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("sinkhole.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sinkhole"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", notify)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "sinkhole=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn sinkhole");
    Serve(child)
}

#[test]

fn ready_status_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let rx = listen(sock);
    let up = common::Upstream::start();
    let addr: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let mut serve = start(dir.path(), &notify, up.addr, addr);
    let log = || std::fs::read_to_string(dir.path().join("sinkhole.log")).unwrap_or_default();

    // Wait for READY=1 without querying, so nothing but the server's own
    // start-up decides when it comes.
    let mut status = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, lines) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no READY=1 within 20 s; log:\n{}", log()));
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
    for (name, want) in [("blocked.test.", 3), ("www.example.test.", 0)] {
        let q = common::query_msg(name, RecordType::A, false);
        let m = common::try_query_udp(addr, &q, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("READY=1 sent but {name} got no answer; log:\n{}", log()));
        assert_eq!(common::rcode(&m), want, "{name}");
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
    let pid = serve.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stopping = false;
    while Instant::now() < deadline && !stopping {
        if let Ok((_, lines)) = rx.recv_timeout(Duration::from_millis(100)) {
            stopping = lines.iter().any(|l| l == "STOPPING=1");
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM; log:\n{}", log());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = serve.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "exit status {code:?}; log:\n{}", log());
}

/// Without NOTIFY_SOCKET (a shell, another supervisor) serve runs as usual.
#[test]
fn serves_without_notify_socket() {
    let up = common::Upstream::start();
    let s = common::Server::start(&[up.addr], &[("block.txt", "blocked.test\n")], "");
    let m = common::udp(&s, "blocked.test.", RecordType::A, false);
    assert_eq!(common::rcode(&m), 3);
}
