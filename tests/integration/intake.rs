//! List intake end to end (issue 13): real minisign keys and signatures
//! (Debian's `minisign`), pushes with curl and `sinkhole push` to the real
//! binary, each refusal with its status while the old list keeps being
//! answered, K of N, a dry run, a replayed old version after a restart, a
//! pull from a test HTTP server (changed file, 304), and the `list` change
//! records in the audit log with `audit verify` after them.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::common::*;

const NXDOMAIN: u16 = 3;
const TOKEN: &str = "clerk-token-0123456789";
const OTHER_TOKEN: &str = "other-token-0123456789";
const BOSS_TOKEN: &str = "boss-token-0123456789";

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run")
}

fn minisign_keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (p, s) = (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.key")),
    );
    let out = run(Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&p)
        .arg("-s")
        .arg(&s));
    assert!(out.status.success(), "minisign -G: {out:?}");
    (p, s)
}

/// Signs `file` with `key` and trusted comment `comment`; returns the
/// `.minisig` path (one per key, so several can coexist).
fn sign(file: &Path, key: &Path, comment: &str) -> PathBuf {
    let key_name = key.file_stem().unwrap().to_string_lossy();
    let sig = file.with_extension(format!("{key_name}.minisig"));
    let out = run(Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(key)
        .arg("-m")
        .arg(file)
        .arg("-x")
        .arg(&sig)
        .args(["-t", comment]));
    assert!(out.status.success(), "minisign -S: {out:?}");
    sig
}

fn b64_file(p: &Path) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap())
}

/// `curl -T FILE` to the API; returns (status, body).
fn curl_put(
    api: SocketAddr,
    list: &str,
    query: &str,
    token: Option<&str>,
    file: &Path,
    sigs: &[&Path],
) -> (u16, serde_json::Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-T"])
        .arg(file)
        .arg(format!("http://{api}/v1/lists/{list}{query}"));
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    for s in sigs {
        cmd.args(["-H", &format!("Sinkhole-Signature: {}", b64_file(s))]);
    }
    parse_curl(run(&mut cmd))
}

fn curl_get(api: SocketAddr, path: &str, token: &str) -> (u16, Vec<u8>) {
    let out = run(Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://{api}{path}")));
    let text = out.stdout;
    let cut = text.iter().rposition(|&b| b == b'\n').expect("status line");
    let status = String::from_utf8_lossy(&text[cut + 1..])
        .trim()
        .parse()
        .unwrap();
    (status, text[..cut].to_vec())
}

fn parse_curl(out: Output) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status: u16 = status
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl: {out:?}"));
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn names(prefix: &str, n: usize) -> String {
    (1..=n).map(|i| format!("{prefix}{i}.example\n")).collect()
}

fn blocked(server: &Server, name: &str) -> bool {
    rcode(&udp(server, name, RecordType::A, false)) == NXDOMAIN
}

fn sinkhole(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_sinkhole")).args(args))
}

/// Keys a, b, c; list `afm` needs 2 of them.
struct Keys {
    dir: tempfile::TempDir,
    a: (PathBuf, PathBuf),
    b: (PathBuf, PathBuf),
    c: (PathBuf, PathBuf),
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let a = minisign_keygen(dir.path(), "a");
    let b = minisign_keygen(dir.path(), "b");
    let c = minisign_keygen(dir.path(), "c");
    Keys { dir, a, b, c }
}

fn config(keys: &Keys, state: &Path, audit: &Path, max_body_mb: u64, extra: &str) -> String {
    format!(
        "state_dir = \"{state}\"\n\
         [[lists.managed]]\nname = \"afm\"\nsigners = [\"{}\", \"{}\", \"{}\"]\nrequired_signatures = 2\n\
         {extra}\n\
         [api]\nlisten = \"127.0.0.1:0\"\nmax_body_mb = {max_body_mb}\n\
         [[api.token]]\nname = \"afm-clerk-1\"\nsha256 = \"{}\"\nlists = [\"afm\"]\n\
         [[api.token]]\nname = \"other\"\nsha256 = \"{}\"\nlists = [\"nothere\"]\n\
         [[api.token]]\nname = \"boss\"\nsha256 = \"{}\"\nlists = [\"*\"]\nmay_force = true\n\
         [audit]\npath = \"{audit}\"\nfsync_every_ms = 0\n",
        keys.a.0.display(),
        keys.b.0.display(),
        keys.c.0.display(),
        sha256_hex(TOKEN),
        sha256_hex(OTHER_TOKEN),
        sha256_hex(BOSS_TOKEN),
        state = state.display(),
        audit = audit.display(),
    )
}

fn start(up: &Upstream, cfg: &str) -> Server {
    Server::builder(&[up.addr])
        .lists(&[("block.txt", "fileblocked.example\n")])
        .config(cfg)
        .start()
}

#[test]
fn push_receipt_refusals_k_of_n_dry_run_and_replay_after_restart() {
    let up = Upstream::start();
    let k = keys();
    let state = tempfile::tempdir().unwrap();
    let audit = tempfile::tempdir().unwrap();
    let cfg = config(&k, state.path(), audit.path(), 1, "");
    let server = start(&up, &cfg);
    let api = server.listeners.first("api");
    let work = k.dir.path();

    // Version 1, signed by a and b (2 of 3).
    let v1 = work.join("afm-v1.txt");
    let v1_text = names("a", 20);
    std::fs::write(&v1, &v1_text).unwrap();
    let (sa, sb) = (
        sign(&v1, &k.a.1, "list=afm version=1"),
        sign(&v1, &k.b.1, "list=afm version=1"),
    );
    assert!(!blocked(&server, "a1.example"));
    let (status, receipt) = curl_put(api, "afm", "", Some(TOKEN), &v1, &[&sa, &sb]);
    let answered = Instant::now();
    assert_eq!(status, 200, "{receipt}");
    let sum = run(Command::new("sha256sum").arg(&v1));
    let sum = String::from_utf8_lossy(&sum.stdout);
    assert_eq!(receipt["sha256"], sum.split_whitespace().next().unwrap());
    assert_eq!(receipt["list"], "afm");
    assert_eq!(receipt["version"], 1);
    assert_eq!(receipt["rules"]["names"], 20);
    assert_eq!(receipt["added"], 20);
    assert_eq!(receipt["removed"], 0);
    assert_eq!(receipt["token"], "afm-clerk-1");
    assert_eq!(receipt["signers"].as_array().unwrap().len(), 2);
    assert!(receipt["enforced_at"].as_str().unwrap().ends_with('Z'));
    let seq1 = receipt["audit_seq"].as_u64().expect("audit seq");
    // Enforced by the time the receipt arrives (well within 1 s).
    assert!(blocked(&server, "a1.example") && blocked(&server, "a20.example"));
    assert!(answered.elapsed() < Duration::from_secs(1));
    assert!(blocked(&server, "fileblocked.example"), "file lists stay");

    // Refusals, in the order, each leaving version 1 in force.
    let v2 = work.join("afm-v2.txt");
    std::fs::write(&v2, names("a", 25)).unwrap();
    let (s2a, s2b) = (
        sign(&v2, &k.a.1, "list=afm version=2"),
        sign(&v2, &k.b.1, "list=afm version=2"),
    );
    let s2c_other_list = sign(&v2, &k.c.1, "list=other version=2");
    let big = work.join("big.txt");
    std::fs::write(&big, names("big", 120_000)).unwrap(); // > 1 MiB
    let sbig = sign(&big, &k.a.1, "list=afm version=9");
    let tiny = work.join("tiny.txt");
    std::fs::write(&tiny, "a1.example\n").unwrap();
    let (sta, stb) = (
        sign(&tiny, &k.a.1, "list=afm version=3"),
        sign(&tiny, &k.b.1, "list=afm version=3"),
    );
    // (list, query, token, file, signatures, status, what)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a Path,
        Vec<&'a Path>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("afm", "", None, &v2, vec![&s2a, &s2b], 401, "no token"),
        (
            "afm",
            "",
            Some("wrong"),
            &v2,
            vec![&s2a, &s2b],
            401,
            "unknown token",
        ),
        (
            "afm",
            "",
            Some(OTHER_TOKEN),
            &v2,
            vec![&s2a, &s2b],
            403,
            "other list's token",
        ),
        (
            "afm",
            "?force=true",
            Some(TOKEN),
            &tiny,
            vec![&sta, &stb],
            403,
            "force without may_force",
        ),
        (
            "undeclared",
            "",
            Some(BOSS_TOKEN),
            &v2,
            vec![&s2a, &s2b],
            404,
            "not declared",
        ),
        ("afm", "", Some(TOKEN), &big, vec![&sbig], 413, "too large"),
        ("afm", "", Some(TOKEN), &v2, vec![], 422, "no signature"),
        (
            "afm",
            "",
            Some(TOKEN),
            &v2,
            vec![&s2a],
            422,
            "1 of 2 signers",
        ),
        (
            "afm",
            "",
            Some(TOKEN),
            &v2,
            vec![&s2a, &s2a],
            422,
            "the same signer twice",
        ),
        (
            "afm",
            "",
            Some(TOKEN),
            &v1,
            vec![&s2a, &s2b],
            422,
            "signature over other bytes",
        ),
        (
            "afm",
            "",
            Some(TOKEN),
            &v2,
            vec![&s2a, &s2c_other_list],
            422,
            "different comments",
        ),
        (
            "afm",
            "",
            Some(TOKEN),
            &v1,
            vec![&sa, &sb],
            409,
            "replayed version 1",
        ),
        (
            "afm",
            "",
            Some(TOKEN),
            &tiny,
            vec![&sta, &stb],
            400,
            "shrink guard",
        ),
    ];
    for (list, query, token, file, sigs, want, what) in &cases {
        let (status, body) = curl_put(api, list, query, *token, file, sigs);
        assert_eq!(status, *want, "{what}: {body}");
        assert!(
            body["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{what}: {body}"
        );
        assert!(
            blocked(&server, "a20.example"),
            "{what}: version 1 still answered"
        );
        assert!(
            !blocked(&server, "a21.example"),
            "{what}: nothing of version 2"
        );
    }
    // Without a declared length the limit is counted while streaming.
    let out = run(Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-T"])
        .arg(&big)
        .args(["-H", "Transfer-Encoding: chunked"])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["-H", &format!("Sinkhole-Signature: {}", b64_file(&sbig))])
        .arg(format!("http://{api}/v1/lists/afm")));
    let (status, body) = parse_curl(out);
    assert_eq!(status, 413, "chunked: {body}");
    assert!(blocked(&server, "a20.example"));
    let c = curl_put(api, "afm", "", Some(TOKEN), &v2, &[&s2a, &s2c_other_list]);
    assert!(
        c.1["reason"]
            .as_str()
            .unwrap()
            .contains("different trusted comments")
    );
    let shrink = curl_put(api, "afm", "", Some(TOKEN), &tiny, &[&sta, &stb]);
    assert!(
        shrink.1["reason"].as_str().unwrap().contains("20 to 1"),
        "{}",
        shrink.1
    );

    // A dry run says what version 2 would do and changes nothing.
    let (status, dry) = curl_put(api, "afm", "?dry_run=true", Some(TOKEN), &v2, &[&s2a, &s2b]);
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (dry["dry_run"].as_bool(), dry["added"].as_u64()),
        (Some(true), Some(5))
    );
    assert!(dry.get("audit_seq").is_none() && dry.get("enforced_at").is_none());
    assert!(!blocked(&server, "a21.example"));
    // K of N with the other pair of keys (b and c) puts it in force.
    let s2c = sign(&v2, &k.c.1, "list=afm version=2");
    let (status, r2) = curl_put(api, "afm", "", Some(TOKEN), &v2, &[&s2c, &s2b]);
    assert_eq!(status, 200, "{r2}");
    assert_eq!(
        (r2["version"].as_u64(), r2["added"].as_u64()),
        (Some(2), Some(5))
    );
    assert!(r2["audit_seq"].as_u64().unwrap() > seq1);
    assert!(blocked(&server, "a25.example"));
    // Forced past the shrink guard by a may_force token.
    let (status, forced) = curl_put(
        api,
        "afm",
        "?force=true",
        Some(BOSS_TOKEN),
        &tiny,
        &[&sta, &stb],
    );
    assert_eq!(status, 200, "{forced}");
    assert_eq!(forced["forced"], true);
    assert!(blocked(&server, "a1.example") && !blocked(&server, "a2.example"));

    // A delta for a version not in force.
    let delta = work.join("delta.xml");
    std::fs::write(
        &delta,
        "<reg:register xmlns:reg=\"http://rsoc.ru\"></reg:register>\n",
    )
    .unwrap();
    let (da, db) = (
        sign(&delta, &k.a.1, "list=afm version=4 base=2"),
        sign(&delta, &k.b.1, "list=afm version=4 base=2"),
    );
    let (status, body) = curl_put(api, "afm", "", Some(TOKEN), &delta, &[&da, &db]);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("delta for version 2"),
        "{body}"
    );

    // A version past its signed expiry stays enforced, with the alarm up.
    let v4 = work.join("afm-v4.txt");
    std::fs::write(&v4, "a1.example\na3.example\n").unwrap();
    let comment = "list=afm version=4 expires=2001-01-01T00:00:00Z";
    let (s4a, s4b) = (sign(&v4, &k.a.1, comment), sign(&v4, &k.b.1, comment));
    let (status, r4) = curl_put(api, "afm", "", Some(TOKEN), &v4, &[&s4a, &s4b]);
    assert_eq!(status, 200, "{r4}");
    assert_eq!(r4["expires"], "2001-01-01T00:00:00Z");
    assert!(
        blocked(&server, "a3.example"),
        "an expired list is still enforced"
    );

    // What is in force, and its exact bytes.
    let (status, lists) = curl_get(api, "/v1/lists", TOKEN);
    assert_eq!(status, 200);
    let lists: serde_json::Value = serde_json::from_slice(&lists).unwrap();
    let seen: Vec<&str> = lists["lists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ["afm"], "a token sees only its lists");
    let afm = &lists["lists"][0];
    assert_eq!(
        (afm["version"].as_u64(), afm["source"].as_str()),
        (Some(4), Some("push"))
    );
    assert_eq!(
        (afm["expired"].as_bool(), afm["rules"].as_u64()),
        (Some(true), Some(2))
    );
    assert_eq!(afm["signers"].as_array().unwrap().len(), 2);
    let (_, all) = curl_get(api, "/v1/lists", BOSS_TOKEN);
    let all: serde_json::Value = serde_json::from_slice(&all).unwrap();
    assert!(
        all["lists"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "block" && l["source"] == "file")
    );
    let (status, bytes) = curl_get(api, "/v1/lists/afm/content", TOKEN);
    assert_eq!(
        (status, bytes.as_slice()),
        (200, b"a1.example\na3.example\n".as_slice())
    );
    assert_eq!(curl_get(api, "/v1/lists/afm/content", OTHER_TOKEN).0, 403);

    // A file list changed by the watcher is on the record too.
    std::fs::write(
        server.list_dir().join("block.txt"),
        "fileblocked.example\nfile2.example\n",
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || blocked(&server, "file2.example")
            .then_some(()))
        .is_some(),
        "file list reloaded"
    );
    let file_recorded = || {
        let out = sinkhole(&[
            "audit",
            "search",
            audit.path().to_str().unwrap(),
            "--kind",
            "list",
            "--list",
            "*",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .contains("applied")
            .then_some(())
    };
    assert!(
        wait_for(Duration::from_secs(5), file_recorded).is_some(),
        "file change on record"
    );

    // After a restart version 4 is still in force and older ones stay refused.
    drop(server);
    let server = start(&up, &cfg);
    let api = server.listeners.first("api");
    assert!(blocked(&server, "a3.example") && !blocked(&server, "a2.example"));
    let (status, body) = curl_put(api, "afm", "", Some(TOKEN), &v2, &[&s2a, &s2b]);
    assert_eq!(status, 409, "replay after restart: {body}");
    assert!(!blocked(&server, "a2.example"));
    drop(server);

    // Every change and refusal is on the record, and the chain verifies.
    let dir = audit.path().to_str().unwrap();
    let out = sinkhole(&["audit", "search", dir, "--kind", "list", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let all: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let file_changes: Vec<&serde_json::Value> = all.iter().filter(|r| r["list"] == "*").collect();
    assert!(
        file_changes
            .iter()
            .any(|r| r["source"] == "file" && r["outcome"] == "applied" && r["added"] == 1),
        "{file_changes:?}"
    );
    let records: Vec<serde_json::Value> = all.into_iter().filter(|r| r["list"] == "afm").collect();
    let outcomes: Vec<(&str, u64)> = records
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap(),
                r["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| o.0 != "rejected")
            .copied()
            .collect::<Vec<_>>(),
        [
            ("applied", 1),
            ("applied", 2),
            ("forced", 3),
            ("applied", 4)
        ]
    );
    // 413, 5 × 422, 409, 400, the chunked 413, the two repeated to check
    // their messages,
    // the delta's 409 and the 409 after the restart; 401-404 are not
    // recorded.
    let rejected = records
        .iter()
        .filter(|r| r["outcome"] == "rejected")
        .count();
    assert_eq!(rejected, 1 + 5 + 1 + 1 + 1 + 2 + 1 + 1, "{records:?}");
    assert_eq!(records[0]["seq"].as_u64(), Some(seq1));
    assert_eq!(records[0]["token"], "afm-clerk-1");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(TOKEN),
        "tokens never recorded"
    );
    let at = records[1]["ts"].as_str().unwrap();
    let out = sinkhole(&["audit", "stats", dir, "--list", "afm", "--at", at]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("version 1"),
        "{out:?}"
    );
    let out = sinkhole(&["audit", "verify", dir]);
    assert!(out.status.success(), "audit verify: {out:?}");
}

/// Path → bytes served.
type Files = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A tiny HTTP/1.1 file server for pulls: serves `/afm.txt` (with an
/// ETag, answering 304 to a matching If-None-Match) and
/// `/afm.txt.minisig`; counts the 304s it sent.
struct Registry {
    addr: SocketAddr,
    files: Files,
    not_modified: Arc<Mutex<usize>>,
}

impl Registry {
    fn start() -> Registry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let files: Files = Arc::default();
        let not_modified: Arc<Mutex<usize>> = Arc::default();
        let (f, nm) = (files.clone(), not_modified.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut if_none_match = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("if-none-match:") {
                        if_none_match = Some(v.trim().to_string());
                    }
                }
                let body = f
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, b)| b.clone());
                let resp = match body {
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                    Some(b) => {
                        let etag =
                            format!("\"{}\"", &sha256_hex(&String::from_utf8_lossy(&b))[..16]);
                        if if_none_match.as_deref() == Some(etag.as_str()) {
                            *nm.lock().unwrap() += 1;
                            format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n").into_bytes()
                        } else {
                            let mut r = format!(
                                "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                b.len()
                            )
                            .into_bytes();
                            r.extend_from_slice(&b);
                            r
                        }
                    }
                };
                let _ = s.write_all(&resp);
            }
        });
        Registry {
            addr,
            files,
            not_modified,
        }
    }

    fn publish(&self, list: &Path, sig: &Path) {
        let mut f = self.files.lock().unwrap();
        f.clear();
        f.push(("/afm.txt".into(), std::fs::read(list).unwrap()));
        f.push(("/afm.txt.minisig".into(), std::fs::read(sig).unwrap()));
    }
}

#[test]
fn sinkhole_push_to_two_nodes_and_pull_with_conditional_requests() {
    let up = Upstream::start();
    let k = keys();
    let work = k.dir.path();
    let token_file = work.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (states, audits): (Vec<_>, Vec<_>) = (0..2)
        .map(|_| (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()))
        .unzip();
    // The first node speaks HTTPS with a certificate of a private CA.
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (work.join("api.crt"), work.join("api.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let tls = format!(
        "max_body_mb = 16\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let nodes: Vec<Server> = states
        .iter()
        .zip(&audits)
        .enumerate()
        .map(|(i, (s, a))| {
            let mut cfg = config(&k, s.path(), a.path(), 16, "");
            if i == 0 {
                cfg = cfg.replace("max_body_mb = 16\n", &tls);
            }
            start(&up, &cfg)
        })
        .collect();
    let urls: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let scheme = if i == 0 { "https" } else { "http" };
            format!("{scheme}://{}", n.listeners.first("api"))
        })
        .collect();

    let v1 = work.join("afm.txt");
    std::fs::write(&v1, names("p", 10)).unwrap();
    let (sa, sb) = (
        sign(&v1, &k.a.1, "list=afm version=1"),
        sign(&v1, &k.b.1, "list=afm version=1"),
    );
    let tf = token_file.to_str().unwrap();
    let push = |extra: &[&str], sigs: &[&Path]| {
        let mut args: Vec<String> = vec!["push".into()];
        for u in &urls {
            args.extend(["--to".into(), u.clone()]);
        }
        args.extend([
            "--list".into(),
            "afm".into(),
            "--token-file".into(),
            tf.into(),
            "--ca-file".into(),
            cert.display().to_string(),
        ]);
        for s in sigs {
            args.extend(["--sig".into(), s.display().to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(v1.display().to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        sinkhole(&refs)
    };
    let out = push(&["--dry-run"], &[&sa, &sb]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("dry-run ok")
            .count(),
        2
    );
    assert!(nodes.iter().all(|n| !blocked(n, "p1.example")));
    let out = push(&[], &[&sa, &sb]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text.lines().count(), 2, "one receipt line per node: {text}");
    for (line, url) in text.lines().zip(&urls) {
        assert!(
            line.starts_with(&format!("{url}: applied list afm version 1")),
            "{line}"
        );
    }
    assert!(nodes.iter().all(|n| blocked(n, "p10.example")));
    // Pushed again: both refuse (version not newer), exit 1.
    let out = push(&[], &[&sa, &sb]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("rejected 409")
            .count(),
        2
    );
    drop(nodes);

    // Pull: version 1 from the registry at start, version 2 once it is
    // published, 304s in between, and a bad signature keeps version 2.
    let reg = Registry::start();
    reg.publish(&v1, &sa);
    let state = tempfile::tempdir().unwrap();
    let audit = tempfile::tempdir().unwrap();
    let pull = format!(
        "pull_url = \"http://{}/afm.txt\"\npull_interval_secs = 1\n",
        reg.addr
    );
    let mut cfg = config(&k, state.path(), audit.path(), 16, &pull);
    cfg = cfg.replace("required_signatures = 2", "required_signatures = 1");
    let node = start(&up, &cfg);
    assert!(
        wait_for(Duration::from_secs(5), || blocked(&node, "p1.example")
            .then_some(()))
        .is_some(),
        "first pull"
    );
    assert!(
        wait_for(Duration::from_secs(5), || (*reg
            .not_modified
            .lock()
            .unwrap()
            > 0)
        .then_some(()))
        .is_some(),
        "a 304"
    );
    let v2 = work.join("afm2.txt");
    std::fs::write(&v2, names("p", 12)).unwrap();
    reg.publish(&v2, &sign(&v2, &k.c.1, "list=afm version=2"));
    assert!(
        wait_for(Duration::from_secs(5), || blocked(&node, "p12.example")
            .then_some(()))
        .is_some(),
        "changed file pulled"
    );
    let v3 = work.join("afm3.txt");
    std::fs::write(&v3, names("p", 13)).unwrap();
    reg.publish(&v3, &sign(&v2, &k.c.1, "list=afm version=3")); // signs other bytes
    let api = node.listeners.first("api");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!blocked(&node, "p13.example") && blocked(&node, "p12.example"));
    let (_, lists) = curl_get(api, "/v1/lists", TOKEN);
    let lists: serde_json::Value = serde_json::from_slice(&lists).unwrap();
    assert_eq!(lists["lists"][0]["source"], "pull");
    assert_eq!(lists["lists"][0]["version"], 2);
    drop(node);
    let dir = audit.path().to_str().unwrap();
    let out = sinkhole(&["audit", "search", dir, "--kind", "list", "--format", "json"]);
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let url = format!("http://{}/afm.txt", reg.addr);
    assert!(
        records
            .iter()
            .all(|r| r["source"] == "pull" && r["url"] == url.as_str())
    );
    let applied: Vec<u64> = records
        .iter()
        .filter(|r| r["outcome"] == "applied")
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert_eq!(applied, [1, 2]);
    assert!(
        records.iter().any(|r| r["outcome"] == "rejected"
            && r["reason"].as_str().unwrap().contains("does not verify"))
    );
    assert!(sinkhole(&["audit", "verify", dir]).status.success());
}

/// A registry dump pushed whole, then a `dump_delta.xml` signed with
/// `base=` the version in force: the merged dump is enforced and served
/// as the content.
#[test]
fn a_dump_delta_push_applies_to_the_dump_in_force() {
    let up = Upstream::start();
    let k = keys();
    let state = tempfile::tempdir().unwrap();
    let audit = tempfile::tempdir().unwrap();
    let server = start(&up, &config(&k, state.path(), audit.path(), 1, ""));
    let api = server.listeners.first("api");
    let work = k.dir.path();
    let content = |id: u32, host: &str| {
        format!(
            "<content id=\"{id}\" includeTime=\"2026-11-30T10:00:00\" blockType=\"domain\" hash=\"h{id}\">\
             <decision date=\"2026-11-29\" number=\"{id}-N\" org=\"Court\"/>\
             <domain><![CDATA[{host}]]></domain></content>\n"
        )
    };
    let dump = work.join("dump.xml");
    std::fs::write(
        &dump,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <reg:register xmlns:reg=\"http://rsoc.ru\" updateTime=\"2026-11-30T10:00:00+03:00\" formatVersion=\"2.4\">\n\
             {}{}{}</reg:register>\n",
            content(1, "evil1.example"),
            content(2, "evil2.example"),
            content(3, "evil3.example"),
        ),
    )
    .unwrap();
    let v1 = "list=afm version=1";
    let (sa, sb) = (sign(&dump, &k.a.1, v1), sign(&dump, &k.b.1, v1));
    let (status, r1) = curl_put(api, "afm", "", Some(TOKEN), &dump, &[&sa, &sb]);
    assert_eq!(status, 200, "{r1}");
    assert!(blocked(&server, "evil2.example"));

    let delta = work.join("dump_delta.xml");
    std::fs::write(
        &delta,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <reg:register xmlns:reg=\"http://rsoc.ru\" updateTime=\"2026-12-01T10:00:00+03:00\" formatVersion=\"2.4\">\n\
             <delete id=\"2\"/>\n{}</reg:register>\n",
            content(4, "evil4.example"),
        ),
    )
    .unwrap();
    let v2 = "list=afm version=2 base=1";
    let (da, db) = (sign(&delta, &k.a.1, v2), sign(&delta, &k.b.1, v2));
    let (status, r2) = curl_put(api, "afm", "", Some(TOKEN), &delta, &[&da, &db]);
    assert_eq!(status, 200, "{r2}");
    assert_eq!(r2["version"], 2);
    assert_eq!(
        (r2["added"].as_u64(), r2["removed"].as_u64()),
        (Some(1), Some(1)),
        "{r2}"
    );
    assert!(
        blocked(&server, "evil4.example"),
        "the delta's addition is enforced"
    );
    assert!(
        !blocked(&server, "evil2.example"),
        "the delta's deletion is enforced"
    );
    assert!(blocked(&server, "evil1.example") && blocked(&server, "evil3.example"));
    // What is in force is the merged full dump, not the delta.
    let (status, body) = curl_get(api, "/v1/lists/afm/content", TOKEN);
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("evil4.example") && text.contains("evil1.example"),
        "{text}"
    );
    assert!(
        !text.contains("evil2.example") && !text.contains("<delete"),
        "{text}"
    );
}
