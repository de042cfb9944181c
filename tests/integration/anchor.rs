//! Signed checkpoints anchored at a witness (issue 15): the rewrite
//! attack, truncation and rollback fail against the witness; the server
//! keeps answering while the witness is down and delivers the backlog when
//! it returns; two instances cannot share an audit directory or state_dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use sha2::{Digest, Sha256};
use sinkhole::audit::sign::{AuditSigner, SignedKind};

use crate::common::*;

const LISTS: &[(&str, &str)] = &[("block.txt", "blocked.test\n")];

fn sinkhole(args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_sinkhole"))
        .args(args)
        .output()
        .expect("run sinkhole");
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `audit keygen` into `dir`: (audit.key, audit.pub).
fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let (code, out) = sinkhole(&["audit", "keygen", "-o", p(dir)]);
    assert_eq!(code, 0, "{out}");
    (dir.join("audit.key"), dir.join("audit.pub"))
}

/// A running `sinkhole witness`, killed on drop.
struct Witness {
    addr: std::net::SocketAddr,
    child: Child,
}

impl Witness {
    fn start(dir: &Path, allow: &Path, listen: &str) -> Witness {
        let ready = dir.with_extension("ready");
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(env!("CARGO_BIN_EXE_sinkhole"))
            .args(["witness", "--listen", listen, "--dir", p(dir)])
            .args(["--allow-key", p(allow), "--ready-file", p(&ready)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn witness");
        let l = await_ready_file(&ready, &mut child, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("witness did not start: {e}"));
        Witness {
            addr: l.first("witness"),
            child,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v1/checkpoints", self.addr)
    }

    /// Records held for the key.
    fn held(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().len() == 70)
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .map(|t| t.lines().count())
            .sum()
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn audit_config(audit: &Path, key: &Path, url: &str) -> String {
    format!(
        "[audit]\npath = \"{}\"\ncheckpoint_every = 4\nfsync_every_ms = 0\nsigning_key = \"{}\"\nanchor_url = \"{url}\"",
        p(audit),
        p(key)
    )
}

fn query_blocked(s: &Server, from: usize, to: usize) {
    for i in from..to {
        let m = udp(s, &format!("q{i}.blocked.test."), RecordType::A, false);
        assert_eq!(rcode(&m), 3, "q{i} answered NXDOMAIN");
    }
}

fn verify(dir: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["audit", "verify", p(dir)];
    args.extend_from_slice(extra);
    sinkhole(&args)
}

/// The single log file's lines.
fn log_file(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("audit dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

fn copy_log(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    let f = log_file(from);
    std::fs::copy(&f, to.join(f.file_name().expect("name"))).expect("copy");
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let needle = format!("\"{key}\":");
    let at = line
        .find(&needle)
        .unwrap_or_else(|| panic!("{key} in {line}"))
        + needle.len();
    let rest = &line[at..];
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    let end = rest.find(['"', ',', '}']).expect("end of value");
    &rest[..end]
}

/// The attacker's rewrite: change one hit's qname, then recompute every
/// later `prev` (and checkpoint `hash`); with `resign`, also re-sign every
/// start and checkpoint with the (stolen) key.
fn rewrite(lines: &[String], victim: usize, resign: Option<&AuditSigner>) -> String {
    let mut out = Vec::with_capacity(lines.len());
    let mut prev_hash: Option<String> = None;
    for (i, l) in lines.iter().enumerate() {
        let mut l = l.clone();
        if i == victim {
            l = l.replace(".blocked.test\"", ".innocent.test\"");
        }
        if let Some(h) = &prev_hash {
            let old = field(&l, "prev").to_string();
            l = l.replace(&old, h);
        }
        if let Some(key) = resign {
            let kind = match field(&l, "kind") {
                "start" => Some(SignedKind::Start),
                "checkpoint" => Some(SignedKind::Checkpoint),
                _ => None,
            };
            if let Some(kind) = kind {
                let num = |k: &str| field(&l, k).parse::<u64>().expect("number");
                let (records, lost) = match kind {
                    SignedKind::Start => (0, 0),
                    SignedKind::Checkpoint => (num("records"), num("lost")),
                };
                let mut head = [0u8; 32];
                hex::decode_to_slice(field(&l, "prev"), &mut head).expect("hex");
                let sig = key
                    .sign(kind, num("seq"), &head, field(&l, "ts"), records, lost)
                    .expect("sign");
                let old = field(&l, "sig").to_string();
                l = l.replace(&old, &hex::encode(sig));
            }
        }
        prev_hash = Some(hex::encode(Sha256::digest(l.as_bytes())));
        out.push(l);
    }
    out.join("\n") + "\n"
}

#[test]
fn rewritten_truncated_and_rolled_back_logs_fail_against_the_witness() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(&tmp.path().join("keys"));
    let wdir = tmp.path().join("witness");
    let w = Witness::start(&wdir, &public, "127.0.0.1:0");
    let audit = tmp.path().join("audit");
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config(&audit_config(&audit, &key, &w.url()))
        .start();
    query_blocked(&s, 0, 6);
    // start (seq 0) and the checkpoints at seq 5 (and 10 once written).
    assert!(
        wait_for(Duration::from_secs(10), || (Witness::held(&wdir) >= 2)
            .then_some(()))
        .is_some(),
        "the witness received the first checkpoint"
    );
    let early = tmp.path().join("early");
    copy_log(&audit, &early);
    query_blocked(&s, 6, 14);
    assert!(s.stop().is_some_and(|st| st.success()));
    // The final checkpoint is delivered before the server exits.
    let final_lines: Vec<String> = std::fs::read_to_string(log_file(&audit))
        .expect("log")
        .lines()
        .map(String::from)
        .collect();
    let last = final_lines.last().expect("lines");
    assert!(last.contains("\"reason\":\"shutdown\""), "{last}");
    let held = Witness::held(&wdir);
    let checkpoints = final_lines
        .iter()
        .filter(|l| l.contains("\"kind\":\"checkpoint\"") || l.contains("\"kind\":\"start\""))
        .count();
    assert_eq!(held, checkpoints, "every signed record reached the witness");
    let (pk, wd) = (p(&public), p(&wdir));

    // Untouched: intact, signed, anchored through the final checkpoint.
    let (code, out) = verify(
        &audit,
        &["--key", pk, "--anchors", wd, "--require-anchored"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("unanchored tail: none"), "{out}");

    // The same log against a witness that has not yet received the last
    // two records: the tail after the last anchored one is reported, with
    // its count and seqs; exit 0, or 3 when anchoring is required.
    let partial = tmp.path().join("partial-witness");
    std::fs::create_dir_all(&partial).expect("mkdir");
    for e in std::fs::read_dir(&wdir).expect("witness dir").flatten() {
        if e.file_name().len() == 70 {
            let t = std::fs::read_to_string(e.path()).expect("read");
            let kept: Vec<&str> = t.lines().collect();
            let kept = kept[..kept.len() - 2].join("\n") + "\n";
            std::fs::write(partial.join(e.file_name()), kept).expect("write");
        }
    }
    let anchored: Vec<&String> = final_lines
        .iter()
        .filter(|l| l.contains("\"kind\":\"checkpoint\"") || l.contains("\"kind\":\"start\""))
        .collect();
    let anchored_seq: u64 = field(anchored[anchored.len() - 3], "seq")
        .parse()
        .expect("seq");
    let last_seq: u64 = field(last, "seq").parse().expect("seq");
    let (code, out) = verify(&audit, &["--key", pk, "--anchors", p(&partial)]);
    assert_eq!(code, 0, "{out}");
    let want = format!(
        "unanchored tail: {} record(s), seq {}..={last_seq}",
        last_seq - anchored_seq,
        anchored_seq + 1
    );
    assert!(out.contains(&want), "want {want:?} in {out}");
    let (code, out) = verify(
        &audit,
        &["--key", pk, "--anchors", p(&partial), "--require-anchored"],
    );
    assert_eq!(code, 3, "{out}");

    // The rewrite attack: one hit's qname changed, every later prev and
    // checkpoint hash recomputed. The chain alone cannot tell.
    let victim = final_lines
        .iter()
        .position(|l| l.contains("\"kind\":\"hit\""))
        .expect("a hit");
    let rewritten = tmp.path().join("rewritten");
    copy_log(&audit, &rewritten);
    std::fs::write(log_file(&rewritten), rewrite(&final_lines, victim, None)).expect("write");
    let (code, out) = verify(&rewritten, &[]);
    assert_eq!(code, 0, "the chain alone is fooled: {out}");
    let (code, out) = verify(&rewritten, &["--key", pk]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad-signature"), "{out}");

    // With the checkpoints re-signed by a stolen key the signatures pass;
    // the witness still holds the original chain heads.
    let stolen = AuditSigner::load(&key).expect("key");
    std::fs::write(
        log_file(&rewritten),
        rewrite(&final_lines, victim, Some(&stolen)),
    )
    .expect("write");
    let (code, out) = verify(&rewritten, &["--key", pk]);
    assert_eq!(
        code, 0,
        "signatures alone are fooled by a stolen key: {out}"
    );
    let (code, out) = verify(&rewritten, &["--key", pk, "--anchors", wd]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("witness-mismatch"), "{out}");
    assert!(out.contains("was rewritten"), "{out}");

    // Truncated at a line boundary (the newest records and the final
    // checkpoint cut off): the chain is intact, the witness is not fooled.
    let truncated = tmp.path().join("truncated");
    copy_log(&audit, &truncated);
    let keep = final_lines[..final_lines.len() - 3].join("\n") + "\n";
    std::fs::write(log_file(&truncated), keep).expect("write");
    let (code, out) = verify(&truncated, &["--key", pk]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&truncated, &["--key", pk, "--anchors", wd]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("truncated or rolled back"), "{out}");

    // Rolled back to the copy taken mid-run.
    let (code, out) = verify(&early, &["--key", pk, "--anchors", wd]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("witness-mismatch"), "{out}");

    // Usage errors exit 2.
    let (code, _) = verify(&audit, &["--anchors", wd]);
    assert_eq!(code, 2);
}

#[test]
fn the_server_keeps_serving_while_the_witness_is_down_and_delivers_the_backlog() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(&tmp.path().join("keys"));
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/v1/checkpoints");
    let audit = tmp.path().join("audit");
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config(&audit_config(&audit, &key, &url))
        .start();
    query_blocked(&s, 0, 10);
    let wdir = tmp.path().join("witness");
    assert!(
        wait_for(Duration::from_secs(5), || s
            .log()
            .contains("cannot reach the audit witness")
            .then_some(()))
        .is_some(),
        "{}",
        s.log()
    );
    let _w = Witness::start(&wdir, &public, &format!("127.0.0.1:{port}"));
    // start + checkpoints at seq 5 and 10, after the retry backoff.
    assert!(
        wait_for(Duration::from_secs(15), || (Witness::held(&wdir) >= 3)
            .then_some(()))
        .is_some(),
        "backlog delivered: {} held\n{}",
        Witness::held(&wdir),
        s.log()
    );
    query_blocked(&s, 10, 12);
    assert!(s.stop().is_some_and(|st| st.success()));
    let (code, out) = verify(
        &audit,
        &[
            "--key",
            p(&public),
            "--anchors",
            p(&wdir),
            "--require-anchored",
        ],
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_second_server_on_the_same_audit_dir_or_state_dir_refuses_to_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let audit = tmp.path().join("audit");
    let state = tmp.path().join("state");
    let up = Upstream::start();
    let cfg = |audit: &Path| {
        format!(
            "state_dir = \"{}\"\n[audit]\npath = \"{}\"",
            p(&state),
            p(audit)
        )
    };
    let first = Server::builder(&[up.addr])
        .lists(LISTS)
        .config(&cfg(&audit))
        .start();
    let second = |audit: &Path| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("b.txt"), "blocked.test\n").expect("list");
        let config = dir.path().join("s.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{}\"]\n[lists]\npaths = [\"{}\"]\n{}",
                up.addr,
                p(dir.path()),
                cfg(audit)
            ),
        )
        .expect("config");
        sinkhole(&["serve", "--config", p(&config)])
    };
    // Same state_dir and audit directory: the state_dir lock is taken first.
    let (code, out) = second(&audit);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("in use by another sinkhole process"), "{out}");
    assert!(out.contains("lists state_dir"), "{out}");
    assert!(out.contains(&format!("pid {}", first.pid())), "{out}");
    // Nor may `compile --state-dir` write under the running server.
    let snap = tmp.path().join("x.snapshot");
    let list = first.list_dir().join("block.txt");
    let (code, out) = sinkhole(&[
        "compile",
        "--list",
        p(&list),
        "-o",
        p(&snap),
        "--state-dir",
        p(&state),
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("in use by another sinkhole process"), "{out}");
    drop(first);

    // Same audit directory only.
    let other_state = tmp.path().join("state2");
    let first = Server::builder(&[up.addr])
        .lists(LISTS)
        .config(&format!(
            "state_dir = \"{}\"\n[audit]\npath = \"{}\"",
            p(&other_state),
            p(&audit)
        ))
        .start();
    let (code, out) = second(&audit);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("audit log directory"), "{out}");
    assert!(out.contains("in use by another sinkhole process"), "{out}");
    // The first server's chain is untouched.
    query_blocked(&first, 0, 2);
    assert!(first.stop().is_some_and(|st| st.success()));
    let (code, out) = verify(&audit, &[]);
    assert_eq!(code, 0, "{out}");
}
