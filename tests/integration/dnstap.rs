//! `[dnstap]` against Debian's Frame Streams tools: `fstrm_capture`
//! (fstrm-bin) receives the stream over a Unix socket or TCP, writes a
//! Frame Streams file, and `dnstap-ldns -r` reads it (message types and
//! query names asserted). Neither tool decodes dnstap's Policy, so the same
//! file is also decoded here with sinkhole's own prost types.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use prost::Message as _;
use sinkhole::dnstap::pb;

use crate::common::*;

/// `fstrm_capture` writing what it receives to `out`; killed on drop.
struct Capture {
    child: Child,
    out: PathBuf,
}

impl Capture {
    fn unix(sock: &Path, out: &Path) -> Capture {
        Capture::spawn(&["-u", &sock.display().to_string()], out)
    }

    fn tcp(addr: SocketAddr, out: &Path) -> Capture {
        Capture::spawn(
            &["-a", &addr.ip().to_string(), "-p", &addr.port().to_string()],
            out,
        )
    }

    fn spawn(listen: &[&str], out: &Path) -> Capture {
        let child = Command::new("fstrm_capture")
            .args(["-t", "protobuf:dnstap.Dnstap"])
            .args(listen)
            .arg("-w")
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fstrm_capture (Debian fstrm-bin; `make test-deps`)");
        Capture {
            child,
            out: out.to_path_buf(),
        }
    }

    /// Stop it (SIGINT: it closes the output file properly) and return
    /// the file's bytes.
    fn finish(mut self) -> Vec<u8> {
        signal(self.child.id(), libc::SIGINT);
        let child = &mut self.child;
        wait_for(Duration::from_secs(5), || child.try_wait().ok().flatten())
            .expect("fstrm_capture did not stop");
        std::fs::read(&self.out).expect("capture file")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The data frames of a Frame Streams file (START … data … STOP), as
/// dnstap messages.
fn decode_file(bytes: &[u8]) -> Vec<pb::Dnstap> {
    let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len = u32_at(at);
        if len == 0 {
            // A control frame: escape, length, body.
            let clen = u32_at(at + 4);
            at += 8 + clen;
            continue;
        }
        let payload = &bytes[at + 4..at + 4 + len];
        out.push(pb::Dnstap::decode(payload).expect("a dnstap message"));
        at += 4 + len;
    }
    out
}

/// `dnstap-ldns -r FILE` in its default (quiet text) format: one line per
/// message, `DATE TIME TYPE ADDRESS PROTOCOL SIZE "QNAME" CLASS TYPE`.
fn dnstap_ldns(file: &Path) -> String {
    let out = Command::new("dnstap-ldns")
        .arg("-r")
        .arg(file)
        .output()
        .expect("dnstap-ldns (Debian dnstap-ldns; `make test-deps`)");
    assert!(out.status.success(), "dnstap-ldns failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(type mnemonic, qname)` of each line dnstap-ldns printed.
fn ldns_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let kind = words
                .iter()
                .find(|w| w.len() == 2 && w.ends_with(['Q', 'R']))?;
            let name = words.iter().find(|w| w.starts_with('"'))?;
            Some((kind.to_string(), name.trim_matches('"').to_string()))
        })
        .collect()
}

fn metric_at_least(s: &Server, name: &str, want: f64) -> bool {
    wait_for(Duration::from_secs(10), || {
        metric(s.metrics(), name, &[]).filter(|v| *v >= want)
    })
    .is_some()
}

#[test]
fn blocked_queries_reach_fstrm_capture_over_a_unix_socket_with_their_policy() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dnstap.sock");
    let file = dir.path().join("out.fstrm");
    // sinkhole first: the collector is not there yet, so the writer must
    // retry (with backoff) and deliver what was queued meanwhile.
    let s = Server::builder(&[up.addr])
        .lists(&[
            (
                "court.csv",
                "domain;authority;decision\nblocked.example;AFM;D-77\n",
            ),
            ("drop.txt", "dropped.example\n"),
        ])
        .config("[[lists.file]]\npath = \"{lists}/drop.txt\"\naction = \"drop\"\n")
        .config(&format!(
            "[dnstap]\nunix = \"{}\"\nidentity = \"node-1\"\n",
            sock.display()
        ))
        .metrics()
        .start();
    let early = udp(&s, "early.blocked.example.", RecordType::A, true);
    assert_eq!(rcode(&early), 3, "NXDOMAIN");
    let capture = Capture::unix(&sock, &file);
    assert!(
        metric_at_least(&s, "sinkhole_dnstap_connects_total", 1.0),
        "never connected; log:\n{}",
        s.log()
    );
    assert_eq!(
        rcode(&udp(&s, "www.Blocked.example.", RecordType::AAAA, true)),
        3
    );
    // Allowed, forwarded: not streamed with messages = "blocked".
    assert_eq!(rcode(&udp(&s, "fine.example.", RecordType::A, true)), 0);
    // Dropped: a query without a response.
    let q = query_msg("dropped.example.", RecordType::A, false);
    assert!(try_query_udp(s.addr, &q, Duration::from_millis(300)).is_none());
    assert!(
        metric_at_least(&s, "sinkhole_dnstap_messages_sent_total", 5.0),
        "log:\n{}",
        s.log()
    );
    assert_eq!(
        metric(s.metrics(), "sinkhole_dnstap_messages_dropped_total", &[]),
        Some(0.0)
    );
    // SIGTERM: STOP, FINISH, exit.
    let status = s.stop();
    assert!(status.is_some_and(|st| st.success()), "{status:?}");
    let bytes = capture.finish();

    let lines = ldns_lines(&dnstap_ldns(&file));
    let want: Vec<(String, String)> = [
        ("CQ", "early.blocked.example."),
        ("CR", "early.blocked.example."),
        ("CQ", "www.Blocked.example."),
        ("CR", "www.Blocked.example."),
        ("CQ", "dropped.example."),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(lines, want, "dnstap-ldns read:\n{}", dnstap_ldns(&file));

    let msgs = decode_file(&bytes);
    assert_eq!(msgs.len(), 5);
    let www = &msgs[2];
    assert_eq!(www.identity.as_deref(), Some(&b"node-1"[..]));
    let extra = String::from_utf8(www.extra.clone().unwrap()).unwrap();
    assert!(extra.starts_with("list=court;version="), "{extra}");
    assert!(extra.contains(";decision=D-77;action=nxdomain"), "{extra}");
    let m = www.message.as_ref().unwrap();
    assert_eq!(m.query_address.as_deref(), Some(&[127, 0, 0, 1][..]));
    assert_eq!(m.socket_protocol, Some(pb::SocketProtocol::Udp as i32));
    let p = m.policy.as_ref().expect("Policy (field 15)");
    assert_eq!(p.r#type.as_deref(), Some("sinkhole"));
    assert_eq!(p.rule.as_deref(), Some(&b"\x07blocked\x07example\x00"[..]));
    assert_eq!(p.action, Some(pb::policy::Action::Nxdomain as i32));
    assert_eq!(p.r#match, Some(pb::policy::Match::Qname as i32));
    assert_eq!(
        p.value.as_deref(),
        Some(&b"\x03www\x07blocked\x07example\x00"[..])
    );
    // The query as received, the response as sent.
    let query = hickory_proto::op::Message::from_vec(m.query_message.as_ref().unwrap()).unwrap();
    assert_eq!(query.queries[0].name().to_string(), "www.Blocked.example.");
    let resp = msgs[3].message.as_ref().unwrap();
    let reply =
        hickory_proto::op::Message::from_vec(resp.response_message.as_ref().unwrap()).unwrap();
    assert_eq!(u16::from(reply.metadata.response_code), 3);
    let dropped = msgs[4].message.as_ref().unwrap();
    assert_eq!(
        dropped.policy.as_ref().unwrap().action,
        Some(pb::policy::Action::Drop as i32)
    );
}

#[test]
fn all_answers_over_tcp_with_pseudonymised_clients() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.fstrm");
    let key = dir.path().join("hmac.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let capture = Capture::tcp(addr, &file);
    let s = Server::builder(&[up.addr])
        .lists(&[("court.txt", "blocked.example\n")])
        .config(&format!(
            "[dnstap]\ntcp = \"{addr}\"\nmessages = \"all\"\n[audit]\npath = \"{{dir}}/audit\"\nclient = \"hmac\"\nhmac_key_file = \"{}\"\n",
            key.display()
        ))
        .metrics()
        .start();
    assert!(
        metric_at_least(&s, "sinkhole_dnstap_connects_total", 1.0),
        "never connected; log:\n{}",
        s.log()
    );
    assert_eq!(rcode(&udp(&s, "fine.example.", RecordType::A, true)), 0);
    assert_eq!(rcode(&udp(&s, "blocked.example.", RecordType::A, true)), 3);
    // A cached answer is an answer too.
    assert_eq!(rcode(&udp(&s, "fine.example.", RecordType::A, true)), 0);
    let tcp = tcp_pipelined(s.addr, &[query_msg("other.example.", RecordType::A, false)]);
    assert_eq!(rcode(&tcp[0]), 0);
    assert!(
        metric_at_least(&s, "sinkhole_dnstap_messages_sent_total", 8.0),
        "log:\n{}",
        s.log()
    );
    assert!(s.stop().is_some_and(|st| st.success()));
    let bytes = capture.finish();
    let lines = ldns_lines(&dnstap_ldns(&file));
    let names: Vec<&str> = lines
        .iter()
        .filter(|(k, _)| k == "CQ")
        .map(|(_, n)| n.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "fine.example.",
            "blocked.example.",
            "fine.example.",
            "other.example."
        ],
        "{lines:?}"
    );
    assert_eq!(lines.iter().filter(|(k, _)| k == "CR").count(), 4);
    let msgs = decode_file(&bytes);
    assert_eq!(msgs.len(), 8);
    for d in &msgs {
        let m = d.message.as_ref().unwrap();
        assert!(m.query_address.is_none(), "address left out with hmac");
        let extra = String::from_utf8(d.extra.clone().unwrap()).unwrap();
        assert!(extra.contains("client=hmac:"), "{extra}");
        // Only the block has a Policy.
        let wire = m.query_message.as_ref().or(m.response_message.as_ref());
        let name = hickory_proto::op::Message::from_vec(wire.unwrap())
            .unwrap()
            .queries[0]
            .name()
            .to_string();
        assert_eq!(m.policy.is_some(), name == "blocked.example.", "{name}");
    }
    let last = msgs[7].message.as_ref().unwrap();
    assert_eq!(last.socket_protocol, Some(pb::SocketProtocol::Tcp as i32));
}
