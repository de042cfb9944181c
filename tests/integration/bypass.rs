//! Bypass signals (`policy.bypass_signals`) through `dig` (Debian's
//! bind9-dnsutils, installed by `make test-deps`): the Firefox canary and
//! the iCloud Private Relay names are answered NXDOMAIN by sinkhole itself,
//! never forwarded, counted per signal; an operator can turn one off.

use std::process::Command;

use crate::common::*;

/// `dig` against the server's DNS port; its whole output.
fn dig(s: &Server, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args([
            "+tries=1",
            "+time=3",
            "-p",
            &s.addr.port().to_string(),
            &format!("@{}", s.addr.ip()),
        ])
        .args(args)
        .output()
        .expect("dig (bind9-dnsutils; `make test-deps` installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn signal_count(s: &Server, signal: &str) -> Option<f64> {
    metric(
        s.metrics(),
        "sinkhole_bypass_signal_total",
        &[("signal", signal)],
    )
}

#[test]
fn signals_are_answered_here_by_default() {
    let up = Upstream::start();
    // A list naming a canary does not change its answer: the signals come
    // before the lists.
    let s = Server::builder(&[up.addr])
        .lists(&[("court.txt", "mask.icloud.com\nblocked.example\n")])
        .metrics()
        .start();
    assert_eq!(signal_count(&s, "firefox-canary"), Some(0.0));
    assert_eq!(signal_count(&s, "icloud-private-relay"), Some(0.0));
    for (name, qtype) in [
        ("use-application-dns.net", "A"),
        ("USE-APPLICATION-DNS.NET", "AAAA"),
        ("mask.icloud.com", "A"),
        ("mask.icloud.com", "HTTPS"),
        ("mask-h2.icloud.com", "AAAA"),
    ] {
        let out = dig(&s, &[name, qtype]);
        assert!(out.contains("status: NXDOMAIN"), "{name} {qtype}: {out}");
        assert!(out.contains("ANSWER: 0"), "{name} {qtype}: {out}");
        // Not a block: no "Censored" EDE.
        assert!(!out.contains("EDE"), "{name} {qtype}: {out}");
    }
    let out = dig(&s, &["+tcp", "use-application-dns.net", "A"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    for name in [
        "use-application-dns.net",
        "mask.icloud.com",
        "mask-h2.icloud.com",
    ] {
        assert_eq!(
            up.count(name, "udp") + up.count(name, "tcp"),
            0,
            "{name} went upstream"
        );
    }
    assert_eq!(signal_count(&s, "firefox-canary"), Some(3.0));
    assert_eq!(signal_count(&s, "icloud-private-relay"), Some(3.0));
    // Names below a signal are ordinary names, forwarded.
    let out = dig(&s, &["www.use-application-dns.net", "A"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("192.0.2.10"),
        "{out}"
    );
}

#[test]
fn a_signal_can_be_turned_off() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(&[("court.txt", "blocked.example\n")])
        .config("[policy]\nbypass_signals = [\"firefox-canary\"]")
        .metrics()
        .start();
    // Private Relay stays usable (iOS Mail keeps working): the names are
    // resolved upstream like any other.
    let out = dig(&s, &["mask.icloud.com", "A"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("192.0.2.10"),
        "{out}"
    );
    assert_eq!(up.count("mask.icloud.com", "udp"), 1);
    let out = dig(&s, &["use-application-dns.net", "A"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert_eq!(signal_count(&s, "icloud-private-relay"), Some(0.0));
    assert_eq!(signal_count(&s, "firefox-canary"), Some(1.0));
}
