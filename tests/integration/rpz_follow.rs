//! `[[rpz.follow]]` against a real Debian BIND primary (`named -g` on a
//! loopback port, TSIG from `tsig-keygen`, changes with `nsupdate`):
//! three sinkhole nodes on 127.0.0.2-4 follow one RPZ zone. An update is
//! enforced on all three within a second through NOTIFY + IXFR; a node
//! restarted while the zone changed catches up by IXFR from its persisted
//! serial; a wrong TSIG secret is refused and the old zone keeps serving;
//! a transfer past `max_zone_records` keeps the old zone; BIND stopped,
//! the zone keeps serving past the SOA expire, with the alarm raised.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::common::{
    Server, Upstream, a_records, metric, query_msg, rcode, try_query_udp, wait_for,
};

const ZONE: &str = "rpz.test";
/// Small enough that the expiry alarm shows within the test.
const SOA_EXPIRE: u32 = 8;

/// A loopback port free on both UDP and TCP (for BIND, and for the nodes
/// BIND's also-notify must name before they start).
fn free_port(ip: Ipv4Addr) -> u16 {
    (0..100)
        .find_map(|_| {
            let udp = UdpSocket::bind((ip, 0)).ok()?;
            let port = udp.local_addr().ok()?.port();
            TcpListener::bind((ip, port)).ok()?;
            Some(port)
        })
        .expect("a free port")
}

struct Bind {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    secret: String,
}

impl Drop for Bind {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Bind {
    fn start(dir: &Path, notify: &[SocketAddr]) -> Bind {
        std::fs::create_dir_all(dir).expect("mkdir bind");
        let key = Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", "xfr-key"])
            .output()
            .expect("tsig-keygen (Debian bind9)");
        let key = String::from_utf8(key.stdout).expect("key text");
        std::fs::write(dir.join("xfr.key"), &key).expect("write key");
        let secret = key
            .split('"')
            .nth(3)
            .expect("secret in tsig-keygen output")
            .to_string();
        let port = free_port(Ipv4Addr::LOCALHOST);
        let notify: String = notify
            .iter()
            .map(|a| format!("{} port {}; ", a.ip(), a.port()))
            .collect();
        let d = dir.display();
        std::fs::write(
            dir.join("named.conf"),
            format!(
                r#"include "{d}/xfr.key";
options {{
    directory "{d}"; pid-file "{d}/named.pid"; session-keyfile "{d}/session.key";
    listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
    recursion no; dnssec-validation no;
    notify explicit; notify-delay 0; notify-source 127.0.0.1;
}};
controls {{ }};
zone "{ZONE}" {{
    type primary; file "{d}/{ZONE}.zone";
    allow-transfer {{ key xfr-key; }}; allow-update {{ key xfr-key; }};
    also-notify {{ {notify}}};
    ixfr-from-differences yes; max-ixfr-ratio unlimited;
}};
"#
            ),
        )
        .expect("write named.conf");
        std::fs::write(
            dir.join(format!("{ZONE}.zone")),
            format!(
                "$TTL 60\n@ SOA localhost. admin.localhost. 1 3600 1 {SOA_EXPIRE} 60\n@ NS localhost.\nbad.example CNAME .\n*.bad.example CNAME .\nkept.example CNAME .\n"
            ),
        )
        .expect("write zone");
        let mut b = Bind {
            child: None,
            dir: dir.to_path_buf(),
            port,
            secret,
        };
        b.run();
        b
    }

    fn run(&mut self) {
        let log = std::fs::File::create(self.dir.join("named.log")).expect("named log");
        let child = Command::new("named")
            .args(["-g", "-n", "1", "-c"])
            .arg(self.dir.join("named.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("named (Debian bind9)");
        self.child = Some(child);
        let addr = self.addr();
        let up = wait_for(Duration::from_secs(15), || {
            let q = query_msg(&format!("{ZONE}."), RecordType::SOA, false);
            try_query_udp(addr, &q, Duration::from_millis(300)).filter(|m| rcode(m) == 0)
        });
        assert!(
            up.is_some(),
            "named did not serve the zone:\n{}",
            self.log()
        );
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()
    }

    fn key_file(&self) -> PathBuf {
        self.dir.join("xfr.key")
    }

    /// `update add/delete …` lines, sent with the TSIG key.
    fn nsupdate(&self, updates: &[&str]) {
        let mut script = format!("server 127.0.0.1 {}\nzone {ZONE}\n", self.port);
        for u in updates {
            script.push_str(u);
            script.push('\n');
        }
        script.push_str("send\n");
        let mut child = Command::new("nsupdate")
            .arg("-y")
            .arg(format!("hmac-sha256:xfr-key:{}", self.secret))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsupdate (Debian bind9-dnsutils)");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write nsupdate script");
        let out = child.wait_with_output().expect("nsupdate");
        assert!(
            out.status.success(),
            "nsupdate failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One follower node: its address, state directory and key file.
struct Node {
    ip: Ipv4Addr,
    port: u16,
    state: PathBuf,
}

impl Node {
    fn start(
        &self,
        upstream: &Upstream,
        bind: &Bind,
        key_file: &Path,
        max_records: Option<u64>,
    ) -> Server {
        let max = max_records
            .map(|m| format!("max_zone_records = {m}\n"))
            .unwrap_or_default();
        Server::builder(&[upstream.addr])
            .listen(&[&format!("{}:{}", self.ip, self.port)])
            .lists(&[("local.txt", "local.example\n")])
            .metrics()
            .config(&format!(
                "state_dir = \"{}\"\n[[rpz.follow]]\nzone = \"{ZONE}\"\nprimaries = [\"{}\"]\ntsig_key_file = \"{}\"\n{max}",
                self.state.display(),
                bind.addr(),
                key_file.display()
            ))
            .start()
    }
}

fn blocked(s: &Server, name: &str) -> bool {
    let q = query_msg(name, RecordType::A, false);
    try_query_udp_from_node(s, &q).is_some_and(|m| rcode(&m) == 3)
}

fn try_query_udp_from_node(
    s: &Server,
    q: &hickory_proto::op::Message,
) -> Option<hickory_proto::op::Message> {
    crate::common::try_query_udp_from(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        s.addr,
        q,
        Duration::from_secs(1),
    )
}

fn transfers(s: &Server, kind: &str, outcome: &str) -> f64 {
    metric(
        s.metrics(),
        "sinkhole_rpz_transfers_total",
        &[("zone", ZONE), ("kind", kind), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

/// The log without its colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut it = log.chars();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            for c in it.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The transfer counter once it reaches `n` (it is counted just after the
/// zone is put in force, so a query can see the zone a moment before).
fn settled_transfers(s: &Server, kind: &str, outcome: &str, n: f64) -> f64 {
    wait_for(Duration::from_secs(3), || {
        let v = transfers(s, kind, outcome);
        (v >= n).then_some(v)
    })
    .unwrap_or_else(|| transfers(s, kind, outcome))
}

fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    wait_for(within, || f().then_some(())).is_some()
}

#[test]
fn three_nodes_follow_a_bind_primary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let upstream = Upstream::start();
    let nodes: Vec<Node> = (2..=4)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 0, 0, i);
            Node {
                ip,
                port: free_port(ip),
                state: tmp.path().join(format!("node{i}")),
            }
        })
        .collect();
    let notify: Vec<SocketAddr> = nodes
        .iter()
        .map(|n| SocketAddr::from((n.ip, n.port)))
        .collect();
    let mut bind = Bind::start(&tmp.path().join("bind"), &notify);
    let key = bind.key_file();
    let mut servers: Vec<Server> = nodes
        .iter()
        .map(|n| n.start(&upstream, &bind, &key, None))
        .collect();

    // First start: AXFR, then the zone is enforced beside the local list.
    for s in &servers {
        assert!(
            wait_until(Duration::from_secs(10), || blocked(s, "bad.example")),
            "zone not enforced after start:\n{}",
            s.log()
        );
        assert!(blocked(s, "www.bad.example"));
        assert!(blocked(s, "local.example"));
        assert!(!blocked(s, "good.example"));
        assert_eq!(settled_transfers(s, "axfr", "applied", 1.0), 1.0);
        let serial = metric(s.metrics(), "sinkhole_rpz_zone_serial", &[("zone", ZONE)]);
        assert_eq!(serial, Some(1.0));
        assert_eq!(
            metric(s.metrics(), "sinkhole_rpz_zone_unsigned", &[("zone", ZONE)]),
            Some(0.0)
        );
    }

    // An add and a delete, enforced on every node within a second: NOTIFY, then IXFR.
    let t0 = Instant::now();
    bind.nsupdate(&[
        &format!("update add new.example.{ZONE}. 60 CNAME ."),
        &format!("update delete bad.example.{ZONE}. CNAME"),
    ]);
    for s in &servers {
        assert!(
            wait_until(Duration::from_secs(1).saturating_sub(t0.elapsed()), || {
                blocked(s, "new.example") && !blocked(s, "bad.example")
            }),
            "update not enforced within 1 s:\n{}",
            s.log()
        );
    }
    let took = t0.elapsed();
    for s in &servers {
        assert!(blocked(s, "x.bad.example"), "the wildcard stays");
        assert_eq!(
            settled_transfers(s, "ixfr", "applied", 1.0),
            1.0,
            "{}",
            s.log()
        );
        assert_eq!(settled_transfers(s, "axfr", "applied", 1.0), 1.0);
        assert!(s.log().contains("NOTIFY: refreshing now"), "{}", s.log());
        assert!(plain(&s.log()).contains("incremental=true"), "{}", s.log());
        // Enforced as a layer from the folded change: no zone rewrite.
        assert_eq!(
            metric(
                s.metrics(),
                "sinkhole_rpz_ixfr_applied_total",
                &[("zone", ZONE), ("how", "layer")],
            ),
            Some(1.0),
            "{}",
            s.log()
        );
    }
    eprintln!("nsupdate to enforced on 3 nodes: {took:?}");

    // Node 3 is down while the zone changes; it serves its saved zone at
    // once on restart and catches up with an IXFR from its serial.
    servers.pop().map(Server::stop);
    bind.nsupdate(&[&format!("update add later.example.{ZONE}. 60 CNAME .")]);
    let restarted = nodes[2].start(&upstream, &bind, &key, None);
    assert!(
        blocked(&restarted, "new.example"),
        "the saved zone serves at once"
    );
    assert!(
        wait_until(Duration::from_secs(5), || blocked(
            &restarted,
            "later.example"
        )),
        "no catch-up:\n{}",
        restarted.log()
    );
    assert_eq!(
        settled_transfers(&restarted, "ixfr", "applied", 1.0),
        1.0,
        "{}",
        restarted.log()
    );
    assert_eq!(transfers(&restarted, "axfr", "applied"), 0.0);
    // The IXFR it had applied as a layer was in its journal: replayed.
    assert!(
        plain(&restarted.log()).contains("zone journal replayed"),
        "{}",
        restarted.log()
    );
    restarted.stop();

    // A wrong secret: the transfer is refused, the saved zone keeps serving.
    let wrong = tmp.path().join("wrong.key");
    std::fs::write(
        &wrong,
        "key \"xfr-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA==\";\n};\n",
    )
    .expect("write wrong key");
    bind.nsupdate(&[&format!("update add unseen.example.{ZONE}. 60 CNAME .")]);
    let refused = nodes[2].start(&upstream, &bind, &wrong, None);
    assert!(
        wait_until(Duration::from_secs(5), || {
            transfers(&refused, "soa", "bad_signature") + transfers(&refused, "soa", "refused")
                >= 1.0
        }),
        "a wrong key was not refused:\n{}",
        refused.log()
    );
    assert!(
        blocked(&refused, "later.example"),
        "the old zone keeps serving"
    );
    assert!(!blocked(&refused, "unseen.example"));
    refused.stop();

    // Over max_zone_records: the IXFR is not applied, the old zone stays.
    servers.pop().map(Server::stop);
    bind.nsupdate(&[
        &format!("update add big1.example.{ZONE}. 60 CNAME ."),
        &format!("update add big2.example.{ZONE}. 60 CNAME ."),
    ]);
    let capped = nodes[1].start(&upstream, &bind, &key, Some(5));
    assert!(
        wait_until(Duration::from_secs(5), || transfers(
            &capped,
            "ixfr",
            "too_large"
        ) >= 1.0),
        "no too_large:\n{}",
        capped.log()
    );
    assert!(blocked(&capped, "new.example"));
    assert!(!blocked(&capped, "big1.example"));
    assert!(wait_until(Duration::from_secs(3), || blocked(
        &servers[0],
        "big1.example"
    )));

    // The primary goes away: the zone keeps serving, past expire with the alarm.
    bind.stop();
    let s = &servers[0];
    assert!(
        wait_until(Duration::from_secs(u64::from(SOA_EXPIRE) + 6), || {
            metric(s.metrics(), "sinkhole_rpz_zone_expired", &[("zone", ZONE)]) == Some(1.0)
        }),
        "no expiry alarm:\n{}",
        s.log()
    );
    assert!(s.log().contains("EXPIRED"));
    assert!(blocked(s, "big1.example"), "never fail open");
    assert!(blocked(s, "x.bad.example"));
    drop(capped);
}

/// The zone of the matching table (the same as `SEMANTICS_ZONE` in the
/// library's tests): overlapping exact, wildcard, passthru and local-data
/// triggers, names at and below empty non-terminals.
const SEMANTICS_ZONE: &str = "\
*.x.test CNAME .
deep.a.x.test CNAME rpz-passthru.
exact.y.test CNAME .
*.y.test CNAME *.
ld.y.test A 192.0.2.7
z.test CNAME .
*.z.test CNAME .
*.w.test CNAME .
*.sub.w.test CNAME rpz-passthru.
";

/// What a resolver answered for an A query, in words both can be held to.
fn answer_kind(m: &hickory_proto::op::Message) -> String {
    match (rcode(m), a_records(m).as_slice()) {
        (3, _) => "nxdomain".into(),
        (0, []) => "nodata".into(),
        (0, [a]) if *a == crate::common::UP_V4 => "upstream".into(),
        (0, addrs) => format!("local {addrs:?}"),
        (r, _) => format!("rcode {r}"),
    }
}

/// The same RPZ zone in Debian BIND (`named` as an RPZ-enforcing resolver
/// forwarding to the fake upstream) and in sinkhole (as a list file): the
/// answers agree name by name, and are the ones written here.
#[test]
fn rpz_matching_agrees_with_bind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let upstream = Upstream::start();
    let dir = tmp.path();
    let port = free_port(Ipv4Addr::LOCALHOST);
    let d = dir.display();
    std::fs::write(
        dir.join("named.conf"),
        format!(
            r#"options {{
    directory "{d}"; pid-file "{d}/named.pid"; session-keyfile "{d}/session.key";
    listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
    recursion yes; allow-recursion {{ 127.0.0.0/8; }}; dnssec-validation no;
    forwarders {{ 127.0.0.1 port {up}; }}; forward only; qname-minimization off;
    response-policy {{ zone "{ZONE}"; }} qname-wait-recurse no;
}};
controls {{ }};
zone "{ZONE}" {{ type primary; file "{d}/{ZONE}.zone"; }};
"#,
            up = upstream.addr.port()
        ),
    )
    .expect("named.conf");
    std::fs::write(
        dir.join(format!("{ZONE}.zone")),
        format!("$TTL 60\n@ SOA localhost. admin.localhost. 1 3600 600 86400 60\n@ NS localhost.\n{SEMANTICS_ZONE}"),
    )
    .expect("zone");
    let log = std::fs::File::create(dir.join("named.log")).expect("log");
    let named = Command::new("named")
        .args(["-g", "-n", "1", "-c"])
        .arg(dir.join("named.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("named (Debian bind9)");
    let mut bind = Bind {
        child: Some(named),
        dir: dir.to_path_buf(),
        port,
        secret: String::new(),
    };
    let bind_addr = bind.addr();
    let ask = |addr: SocketAddr, name: &str| {
        let q = query_msg(name, RecordType::A, false);
        try_query_udp(addr, &q, Duration::from_secs(2)).map(|m| answer_kind(&m))
    };
    assert!(
        wait_until(Duration::from_secs(15), || ask(bind_addr, "other.test")
            .as_deref()
            == Some("upstream")),
        "named is not resolving through the fake upstream:\n{}",
        bind.log()
    );
    let sinkhole = Server::builder(&[upstream.addr])
        .lists(&[("zone.rpz", SEMANTICS_ZONE)])
        .config("[policy]\nlocal_zones = []")
        .start();
    let table: &[(&str, &str)] = &[
        ("a.x.test", "upstream"),
        ("b.a.x.test", "upstream"),
        ("deep.a.x.test", "upstream"),
        ("c.deep.a.x.test", "upstream"),
        ("c.x.test", "nxdomain"),
        ("d.c.x.test", "nxdomain"),
        ("x.test", "upstream"),
        ("exact.y.test", "nxdomain"),
        ("s.exact.y.test", "upstream"),
        ("o.y.test", "nodata"),
        ("ld.y.test", "local [192.0.2.7]"),
        ("s.ld.y.test", "upstream"),
        ("z.test", "nxdomain"),
        ("q.z.test", "nxdomain"),
        ("sub.w.test", "upstream"),
        ("k.sub.w.test", "upstream"),
        ("v.w.test", "nxdomain"),
        ("other.test", "upstream"),
    ];
    let mut differ = Vec::new();
    for &(name, want) in table {
        let from_bind = ask(bind_addr, name);
        let from_sinkhole = ask(sinkhole.addr, name);
        if from_bind.as_deref() != Some(want) || from_sinkhole.as_deref() != Some(want) {
            differ.push(format!(
                "{name}: want {want}, BIND {from_bind:?}, sinkhole {from_sinkhole:?}"
            ));
        }
    }
    assert!(differ.is_empty(), "{differ:#?}\nnamed log:\n{}", bind.log());
    bind.stop();
}
