//! `[rpz.serve]` followed by Debian's Unbound: Unbound's `rpz:` clause
//! (`primary: 127.0.0.1@PORT`) transfers sinkhole's zone and must then
//! block exactly what sinkhole blocks, on lists with nested allow and block
//! rules (a blocked `a.example` with an allowed `ok.b.a.example`: the
//! empty non-terminal `b.a.example` needs its own triggers). A list change
//! on sinkhole (the list directory is watched) reaches Unbound through
//! NOTIFY and IXFR. `dig` checks AXFR, IXFR and REFUSED outside
//! `allow_transfer`.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::common::*;

/// A loopback port free for both UDP and TCP (then released).
fn free_port() -> u16 {
    (0..100)
        .find_map(|_| {
            let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
            let port = udp.local_addr().ok()?.port();
            TcpListener::bind(("127.0.0.1", port)).ok()?;
            Some(port)
        })
        .expect("a free port")
}

/// `unbound -d` on 127.0.0.1:`port`, forwarding to `upstream` and following
/// `zone` from `primary`; killed on drop.
struct Unbound {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Unbound {
    fn start(
        dir: &Path,
        port: u16,
        upstream: SocketAddr,
        zone: &str,
        primary: SocketAddr,
    ) -> Unbound {
        let conf = dir.join("unbound.conf");
        let log = dir.join("unbound.log");
        std::fs::write(
            &conf,
            format!(
                r#"server:
    interface: 127.0.0.1
    port: {port}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    logfile: "{log}"
    use-syslog: no
    verbosity: 2
    do-ip6: no
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    module-config: "respip iterator"
    qname-minimisation: no
    cache-max-negative-ttl: 0
    cache-max-ttl: 0
forward-zone:
    name: "."
    forward-addr: {up_ip}@{up_port}
rpz:
    name: "{zone}"
    primary: {p_ip}@{p_port}
    zonefile: "{dir}/{zone}.zone"
    rpz-log: yes
"#,
                dir = dir.display(),
                log = log.display(),
                up_ip = upstream.ip(),
                up_port = upstream.port(),
                p_ip = primary.ip(),
                p_port = primary.port(),
            ),
        )
        .unwrap();
        let child = Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unbound (Debian unbound; `make test-deps`)");
        Unbound {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn rcode(&self, name: &str) -> Option<u16> {
        let q = query_msg(name, RecordType::A, false);
        try_query_udp(self.addr, &q, Duration::from_millis(500)).map(|m| rcode(&m))
    }
}

/// `dig` output for a transfer from `server`, sent from `source`.
fn dig(server: SocketAddr, source: &str, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["+tcp", "+nocookie", "-b", source, "-p"])
        .arg(server.port().to_string())
        .arg(format!("@{}", server.ip()))
        .args(args)
        .output()
        .expect("dig (Debian bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sinkhole_rcode(s: &Server, name: &str) -> u16 {
    rcode(&udp(s, name, RecordType::A, false))
}

/// Names covering every rule, the empty non-terminal, and around them.
const NAMES: &[&str] = &[
    "a.example.",
    "www.a.example.",
    "b.a.example.",
    "x.b.a.example.",
    "ok.b.a.example.",
    "deep.ok.b.a.example.",
    "bad.ok.b.a.example.",
    "x.bad.ok.b.a.example.",
    "fine.example.",
    "exact.example.",
    "sub.exact.example.",
    "other.test.example.",
];

#[test]
fn unbound_follows_the_zone_and_blocks_what_sinkhole_blocks() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let unbound_port = free_port();
    let s = Server::builder(&[up.addr])
        .lists(&[
            ("court.txt", "a.example\nbad.ok.b.a.example\n"),
            ("allow.txt", "@@||ok.b.a.example^\n"),
            ("exact.rpz", "exact.example CNAME .\n"),
        ])
        .config(&format!(
            "state_dir = \"{{dir}}/state\"\ndebounce_ms = 50\n[rpz.serve]\nzone = \"rpz.test\"\nallow_transfer = [\"127.0.0.1\"]\nnotify = [\"127.0.0.1:{unbound_port}\"]\n"
        ))
        .metrics()
        .start();

    // dig: AXFR from an allowed address, REFUSED from another.
    let axfr = dig(s.addr, "127.0.0.1", &["rpz.test", "AXFR"]);
    for want in [
        "a.example.rpz.test.",
        "*.a.example.rpz.test.",
        "*.b.a.example.rpz.test.",
        "ok.b.a.example.rpz.test.",
        "rpz-passthru.",
    ] {
        assert!(axfr.contains(want), "{want} missing from AXFR:\n{axfr}");
    }
    let refused = dig(s.addr, "127.0.0.2", &["rpz.test", "AXFR"]);
    assert!(
        refused.contains("REFUSED") || refused.contains("Transfer failed"),
        "{refused}"
    );
    assert!(!refused.contains("rpz-passthru"), "{refused}");

    let unbound = Unbound::start(dir.path(), unbound_port, up.addr, "rpz.test", s.addr);
    // Unbound transfers the zone at start; wait until it enforces it.
    let enforced = wait_for(Duration::from_secs(15), || {
        (unbound.rcode("a.example.") == Some(3)).then_some(())
    });
    assert!(
        enforced.is_some(),
        "unbound never enforced the zone; log:\n{}",
        unbound.log()
    );
    for name in NAMES {
        let ours = sinkhole_rcode(&s, name);
        let theirs = unbound.rcode(name);
        assert_eq!(
            theirs,
            Some(ours),
            "{name}: unbound {theirs:?}, sinkhole {ours}; log:\n{}",
            unbound.log()
        );
    }
    // The table above has both outcomes.
    assert_eq!(sinkhole_rcode(&s, "x.b.a.example."), 3);
    assert_eq!(sinkhole_rcode(&s, "deep.ok.b.a.example."), 0);

    // A list change: NOTIFY, then IXFR.
    let serial_before = metric(s.metrics(), "sinkhole_rpz_serve_serial", &[]).unwrap();
    std::fs::write(s.list_dir().join("new.txt"), "new.example\n").unwrap();
    let t0 = Instant::now();
    let reached = wait_for(Duration::from_secs(10), || {
        (unbound.rcode("www.new.example.") == Some(3)).then_some(())
    });
    assert!(
        reached.is_some(),
        "the change never reached unbound; log:\n{}",
        unbound.log()
    );
    println!("list change enforced by unbound after {:?}", t0.elapsed());
    let serial = metric(s.metrics(), "sinkhole_rpz_serve_serial", &[]).unwrap();
    assert_eq!(serial, serial_before + 1.0);
    let ixfr = metric(
        s.metrics(),
        "sinkhole_rpz_serve_transfers_total",
        &[("kind", "ixfr")],
    )
    .unwrap_or(0.0);
    assert!(ixfr >= 1.0, "no IXFR answered; log:\n{}", unbound.log());
    assert_eq!(
        metric(
            s.metrics(),
            "sinkhole_rpz_serve_notifies_total",
            &[("outcome", "answered")]
        ),
        Some(1.0)
    );
    // dig IXFR from the old serial: the delta alone.
    let from = format!("IXFR={}", serial_before as u32);
    let delta = dig(s.addr, "127.0.0.1", &["rpz.test", &from]);
    assert!(delta.contains("new.example.rpz.test."), "{delta}");
    assert!(!delta.contains("ok.b.a.example.rpz.test."), "{delta}");
}

#[test]
fn soa_is_served_for_refresh_checks_and_the_serial_is_saved() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(&[("court.txt", "a.example\n")])
        .config("state_dir = \"{dir}/state\"\n[rpz.serve]\nzone = \"rpz.test\"\n")
        .start();
    let q = query_msg("rpz.test.", RecordType::SOA, false);
    let soa = try_query_udp(s.addr, &q, Duration::from_secs(2)).unwrap();
    assert!(soa.metadata.authoritative);
    let serial = match &soa.answers[0].data {
        hickory_proto::rr::RData::SOA(soa) => soa.serial,
        other => panic!("{other:?}"),
    };
    assert_eq!(serial, 1);
    // The serial is saved in the list state directory (restarts are in
    // the unit tests: same zone, same serial; another zone, the next).
    let state =
        std::fs::read_to_string(s.list_dir().parent().unwrap().join("state/rpz-serve.json"))
            .unwrap();
    assert!(state.contains("\"serial\": 1"), "{state}");
}

#[test]
fn with_a_tsig_key_transfers_need_it_and_every_message_is_signed() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = "c2lua2hvbGUtcnB6LXNlcnZlLXRlc3Qta2V5LTAwMDE=";
    let key = dir.path().join("xfr.key");
    std::fs::write(
        &key,
        format!("key \"xfr-key\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n"),
    )
    .unwrap();
    // Enough names for several transfer messages (200 records each).
    let names: String = (0..300).map(|i| format!("n{i}.example\n")).collect();
    let s = Server::builder(&[up.addr])
        .lists(&[("court.txt", names.as_str())])
        .config(&format!(
            "state_dir = \"{{dir}}/state\"\n[rpz.serve]\nzone = \"rpz.test\"\ntsig_key_file = \"{}\"\n",
            key.display()
        ))
        .start();
    let good = format!("hmac-sha256:xfr-key:{secret}");
    let signed = dig(s.addr, "127.0.0.1", &["-y", &good, "rpz.test", "AXFR"]);
    // dig checks every message's TSIG and says how much it took in.
    assert!(signed.contains("XFR size: 603 records"), "{signed}");
    assert_eq!(signed.matches("TSIG\thmac-sha256.").count(), 4, "{signed}");
    assert!(!signed.contains("failure"), "{signed}");
    let unsigned = dig(s.addr, "127.0.0.1", &["rpz.test", "AXFR"]);
    assert!(unsigned.contains("Transfer failed"), "{unsigned}");
    let wrong = "hmac-sha256:xfr-key:d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZw==";
    let forged = dig(s.addr, "127.0.0.1", &["-y", wrong, "rpz.test", "AXFR"]);
    assert!(!forged.contains("XFR size"), "{forged}");
    assert!(!forged.contains("n1.example.rpz.test."), "{forged}");
}
