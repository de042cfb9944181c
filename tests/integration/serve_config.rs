//! `sinkhole serve --check-config`, IPv6 listeners and TCP connection
//! handling, through the real binary.

use std::io::Read;
use std::net::{Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use hickory_proto::rr::RecordType;

/// `sinkhole serve --check-config` on `text`: exit code, stdout, stderr.
fn check_config(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_sinkhole"))
        .args(["serve", "--check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_effective_config() {
    let (code, out, err) =
        check_config("[upstream]\nservers = [\"192.0.2.53\"]\n[policy]\naction = \"address\"\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("action = \"address\""), "{out}");
    assert!(out.contains("192.0.2.53:53"), "{out}");
    assert!(
        out.contains("timeout_ms = 1500"),
        "defaults are shown: {out}"
    );
    assert!(out.contains("ede_code = 16"), "{out}");
}

#[test]
fn check_config_names_unknown_and_bad_keys() {
    for (text, needle) in [
        ("[server]\nlisten_addrs = []\n", "listen_addrs"),
        (
            "[upstream]\nservers = [\"192.0.2.53\"]\n[policy]\nede_cod = 15\n",
            "ede_cod",
        ),
        (
            "[upstream]\nservers = [\"192.0.2.53\"]\n[policy]\naction = \"sinkhole\"\n",
            "policy.action",
        ),
        (
            "[upstream]\nservers = [\"192.0.2.53\"]\n[acl]\nallow = [\"everyone\"]\n",
            "acl.allow",
        ),
        (
            "[upstream]\nservers = [\"192.0.2.53\"]\n[policy]\nede_text = \"{nope}\"\n",
            "policy.ede_text",
        ),
        ("this is not toml", "c.toml"),
    ] {
        let (code, _, err) = check_config(text);
        assert_eq!(code, 1, "{text}");
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn serves_on_ipv6_loopback() {
    // Containers without IPv6 cannot test this; say so instead of failing.
    if UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_err() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(&[("l.txt", "blocked.example\n")])
        .listen(&["127.0.0.1:0", "[::1]:0"])
        .start();
    let dns = s.listeners.all("dns");
    assert_eq!(dns.len(), 2, "one dns line per listen address: {dns:?}");
    let v6 = dns
        .iter()
        .copied()
        .find(SocketAddr::is_ipv6)
        .expect("an IPv6 dns listener");
    // Bound (the ready file says so): one query, no retry.
    let q = query_msg("blocked.example.", RecordType::A, false);
    let got = (|| {
        let sock = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).ok()?;
        sock.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        sock.send_to(&q.to_vec().ok()?, v6).ok()?;
        let mut buf = [0u8; 1500];
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        hickory_proto::op::Message::from_vec(&buf[..n]).ok()
    })();
    let m = got.unwrap_or_else(|| panic!("no answer over IPv6 at {v6}; log:\n{}", s.log()));
    assert_eq!(rcode(&m), 3);
}

#[test]
fn tcp_idle_connections_are_closed() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(&[("l.txt", "blocked.example\n")])
        .server_keys("tcp_idle_timeout_ms = 300")
        .start();
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    // EOF (0 bytes) once the server gives up on the idle connection.
    let n = c.read(&mut buf).unwrap_or(usize::MAX);
    assert_eq!(n, 0);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // A fresh connection still works.
    let r = tcp_pipelined(
        s.addr,
        &[query_msg("blocked.example.", RecordType::A, false)],
    );
    assert_eq!(rcode(&r[0]), 3);
}

#[test]
fn tcp_connection_limit_keeps_serving_udp() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(&[("l.txt", "blocked.example\n")])
        .server_keys("tcp_max_connections = 2")
        .start();
    let _a = TcpStream::connect(s.addr).expect("a");
    let _b = TcpStream::connect(s.addr).expect("b");
    std::thread::sleep(Duration::from_millis(200));
    // The third is accepted by the kernel and closed by sinkhole.
    let mut c = TcpStream::connect(s.addr).expect("c");
    c.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let mut buf = [0u8; 4];
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
    assert_eq!(rcode(&udp(&s, "blocked.example.", RecordType::A, false)), 3);
}
