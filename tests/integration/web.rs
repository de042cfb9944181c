//! URL enforcement (issue 12) end to end: the real binary with `[web]` on,
//! the fake upstream resolving `*.loop2.example` to 127.0.0.2 where the
//! test runs an HTTP origin, `dig` for the steering, `curl` and raw sockets
//! for the front, the CLI for the audit records, and headless Chromium for
//! the page a user sees.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;

/// A registry-style CSV with legal references: every clause of the
/// matching table has a row.
const REGISTRY: &str = "url;decision;authority;date\n\
http://pages.loop2.example/page;D-PAGE;Court of Test;2026-01-02\n\
https://pages.loop2.example/dir/;D-DIR;Court of Test;2026-01-03\n\
pages.loop2.example/q?id=1;D-QUERY;Ministry;2026-01-04\n\
http://pages.loop2.example:8080/port;D-PORT;Court of Test;2026-01-05\n\
http://pages.loop2.example/frag#section;D-FRAG;Court of Test;2026-01-06\n\
http://pages.loop2.example/%7Euser;D-TILDE;Court of Test;2026-01-07\n\
http://Pages.LOOP2.example/<script>;D-<b>;Court & Co;2026-01-08\n\
https://tls.loop2.example/secret;D-TLS;Court of Test;2026-01-09\n\
http://gone.example/page;D-GONE;Court of Test;2026-01-10\n\
http://plain.loop2.example/page;D-PLAIN;Court of Test;2026-01-11\n";

const PLAIN: &str = "whole.example\n";

/// The origin the test starts on 127.0.0.2, on a kernel-chosen port that
/// `web.origin_http_port` names. It answers every
/// request with `origin METHOD TARGET body-bytes=N` and an `Alt-Svc`
/// header, and keeps the request heads it saw.
struct Origin {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.2", self.port));
    }
}

fn read_head(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        let n = s.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
            return Some((head, buf[i + 4..].to_vec()));
        }
    }
}

/// The body of a request whose head is `head` and whose first body bytes
/// are `rest` (Content-Length or chunked).
fn read_body(s: &mut TcpStream, head: &str, mut rest: Vec<u8>) -> Vec<u8> {
    let lower = head.to_ascii_lowercase();
    let mut byte = [0u8; 4096];
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while rest.len() < len {
            match s.read(&mut byte) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&byte[..n]),
            }
        }
        return rest;
    }
    if lower.contains("transfer-encoding: chunked") {
        // Decode chunks until the zero chunk.
        let mut out = Vec::new();
        loop {
            while !rest.windows(2).any(|w| w == b"\r\n") {
                match s.read(&mut byte) {
                    Ok(0) | Err(_) => return out,
                    Ok(n) => rest.extend_from_slice(&byte[..n]),
                }
            }
            let i = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..i])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap_or(0);
            rest.drain(..i + 2);
            if size == 0 {
                return out;
            }
            while rest.len() < size + 2 {
                match s.read(&mut byte) {
                    Ok(0) | Err(_) => return out,
                    Ok(n) => rest.extend_from_slice(&byte[..n]),
                }
            }
            out.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
        }
    }
    Vec::new()
}

impl Origin {
    fn start() -> Origin {
        let l = TcpListener::bind("127.0.0.2:0").expect("bind origin on 127.0.0.2");
        let port = l.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, st) = (heads.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut s) = conn else { continue };
                let h = h.clone();
                std::thread::spawn(move || {
                    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                    while let Some((head, rest)) = read_head(&mut s) {
                        let body = read_body(&mut s, &head, rest);
                        let line = head.lines().next().unwrap_or("").to_string();
                        h.lock().unwrap().push(head.clone());
                        let text = format!("origin {line} body-bytes={}\n", body.len());
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nAlt-Svc: h3=\":443\"\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nContent-Length: {}\r\n\r\n{text}",
                            text.len()
                        );
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Origin { port, heads, stop }
    }

    fn last_head(&self) -> String {
        self.heads
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

/// Fields drop in order: the server stops before its upstream and origin.
struct Web {
    server: Server,
    front: SocketAddr,
    audit: tempfile::TempDir,
    origin: Origin,
    _up: Upstream,
}

fn start(extra: &str) -> Web {
    let up = Upstream::start();
    let origin = Origin::start();
    let audit = tempfile::tempdir().expect("tempdir");
    let server = Server::builder(&[up.addr])
        .lists(&[("registry.csv", REGISTRY), ("plain.txt", PLAIN)])
        .config(&format!(
            "[policy]\naddress_v4 = \"127.0.0.1\"\n\
             [acl]\nallow = [\"127.0.0.1/32\"]\n\
             [audit]\npath = \"{}\"\nfsync_every_ms = 0\n\
             [web]\nlisten = \"127.0.0.1:0\"\nallow_private_origins = true\n\
             origin_http_port = {}\nhostname = \"block.isp.example\"\n\
             operator = \"Test ISP: blocked by order\"\n\
             blocked_by_url = \"https://isp.example/blocking\"\n{extra}",
            audit.path().display(),
            origin.port,
        ))
        .metrics()
        .start();
    let front = server.listeners.first("web");
    Web {
        server,
        front,
        audit,
        origin,
        _up: up,
    }
}

/// A curl answer: status, lower-cased head, body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        let want = format!("{}:", name.to_ascii_lowercase());
        self.head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&want))
            .map(|l| l[want.len()..].trim())
    }
}

/// `curl` to `url` with every connection sent to the front.
fn curl(front: SocketAddr, url: &str, extra: &[&str]) -> Reply {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--path-as-is", "--max-time", "10"])
        .arg("--connect-to")
        .arg(format!("::{}:{}", front.ip(), front.port()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {url}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Send raw bytes from `from` and read the status code of the answer.
fn raw_status(from: Ipv4Addr, front: SocketAddr, request: &[u8]) -> u16 {
    let mut s = tcp_connect_from(from, front).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(request).expect("write");
    // The status line is enough: read until the head ends or the server
    // closes, not until a kept-alive connection times out.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sinkhole"))
        .args(args)
        .output()
        .expect("run sinkhole");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn dig(server: SocketAddr, name: &str, qtype: &str) -> String {
    let out = Command::new("dig")
        .args(["+norec", "+tries=1", "+time=3", "-p"])
        .arg(server.port().to_string())
        .arg(format!("@{}", server.ip()))
        .arg(name)
        .arg(qtype)
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_dns_side_steers_hosts_with_url_rules_only() {
    let w = start("");
    let a = dig(w.server.addr, "pages.loop2.example", "A");
    assert!(a.contains("status: NOERROR"), "{a}");
    assert!(
        a.lines().any(|l| l.starts_with("pages.loop2.example.")
            && l.contains("\t30\t")
            && l.ends_with("127.0.0.1")),
        "steered to the front with the steer TTL:\n{a}"
    );
    assert!(!a.contains("EDE"), "no EDE on a steer:\n{a}");
    for t in ["HTTPS", "SVCB", "AAAA"] {
        let r = dig(w.server.addr, "pages.loop2.example", t);
        assert!(
            r.contains("status: NOERROR") && r.contains("ANSWER: 0"),
            "{t}:\n{r}"
        );
    }
    // Another type goes upstream; a name without URL rules is not steered.
    let mx = dig(w.server.addr, "pages.loop2.example", "MX");
    assert!(mx.contains("status: NOERROR"), "{mx}");
    let other = dig(w.server.addr, "other.loop2.example", "A");
    assert!(other.contains("127.0.0.2"), "{other}");
    // A name blocked as a whole keeps its block answer (nxdomain default).
    let whole = dig(w.server.addr, "whole.example", "A");
    assert!(whole.contains("status: NXDOMAIN"), "{whole}");
    // A, HTTPS, SVCB and AAAA were steered; MX and the others were not.
    assert_eq!(
        metric(w.server.metrics(), "sinkhole_steered_total", &[]),
        Some(4.0)
    );
}

#[test]
fn covered_urls_get_451_with_the_decision_and_the_rest_is_not_blocked() {
    let w = start("");
    let f = w.front;
    // (url, extra curl args, decision expected or None for "not blocked")
    let rows: &[(&str, &[&str], Option<&str>)] = &[
        ("http://pages.loop2.example/page", &[], Some("D-PAGE")),
        ("http://PAGES.loop2.example./page", &[], Some("D-PAGE")),
        ("http://pages.loop2.example/%70age", &[], Some("D-PAGE")),
        ("http://pages.loop2.example/x/../page", &[], Some("D-PAGE")),
        ("http://pages.loop2.example//page", &[], Some("D-PAGE")),
        ("http://pages.loop2.example/page?any=1", &[], Some("D-PAGE")),
        ("http://pages.loop2.example/page/x", &[], None),
        ("http://pages.loop2.example/Page", &[], None),
        // An https:// rule is enforced over plain HTTP; its `/` covers below.
        ("http://pages.loop2.example/dir/a/b", &[], Some("D-DIR")),
        ("http://pages.loop2.example/dir", &[], None),
        ("http://pages.loop2.example/q?id=1", &[], Some("D-QUERY")),
        ("http://pages.loop2.example/q?id=2", &[], None),
        ("http://pages.loop2.example:8080/port", &[], Some("D-PORT")),
        ("http://pages.loop2.example/port", &[], None),
        ("http://pages.loop2.example/frag", &[], Some("D-FRAG")),
        ("http://pages.loop2.example/~user", &[], Some("D-TILDE")),
        (
            "http://whole.example/anything",
            &[],
            Some("list plain, line 1"),
        ),
    ];
    for (url, extra, want) in rows {
        let r = curl(f, url, extra);
        match want {
            Some(decision) => {
                assert_eq!(r.status, 451, "{url}: {}", r.head);
                assert!(r.body.contains(decision), "{url}: {}", r.body);
                assert_eq!(
                    r.header("link"),
                    Some("<https://isp.example/blocking>; rel=\"blocked-by\""),
                    "{url}"
                );
                assert!(r.body.contains("Test ISP: blocked by order"), "{url}");
                assert!(r.body.len() < 10 * 1024);
            }
            None => assert_ne!(r.status, 451, "{url}: {}\n{}", r.head, r.body),
        }
    }
    // Values from the list are escaped on the page.
    let r = curl(f, "http://pages.loop2.example/%3Cscript%3E", &[]);
    assert_eq!(r.status, 451, "{}", r.head);
    assert!(
        r.body.contains("D-&lt;b&gt;") && r.body.contains("Court &amp; Co"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("<script>"), "{}", r.body);

    // Not ours: 421. Ours: the notice.
    assert_eq!(curl(f, "http://unrelated.example/", &[]).status, 421);
    let notice = curl(f, "http://block.isp.example/", &[]);
    assert_eq!(notice.status, 200);
    assert!(notice.body.contains("Test ISP"), "{}", notice.body);
    assert_eq!(curl(f, &format!("http://{f}/"), &[]).status, 200);
    let count = |outcome: &str| {
        metric(
            w.server.metrics(),
            "sinkhole_web_requests_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(count("blocked"), Some(13.0));
    assert_eq!(count("misdirected"), Some(1.0));
    assert_eq!(count("notice"), Some(2.0));
}

#[test]
fn proxy_hygiene_and_the_acl() {
    let w = start("");
    let f = w.front;
    let lo = Ipv4Addr::LOCALHOST;
    let connect =
        b"CONNECT pages.loop2.example:443 HTTP/1.1\r\nHost: pages.loop2.example:443\r\n\r\n";
    assert_eq!(raw_status(lo, f, connect), 405);
    let absolute =
        b"GET http://unrelated.example/ HTTP/1.1\r\nHost: pages.loop2.example\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(lo, f, absolute), 400);
    let ws = b"GET /chat HTTP/1.1\r\nHost: pages.loop2.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    assert_eq!(raw_status(lo, f, ws), 501);
    let no_host = b"GET / HTTP/1.0\r\n\r\n";
    assert_eq!(raw_status(lo, f, no_host), 400);
    // A head over max_header_bytes (8192 by default): 431.
    let huge = format!(
        "GET /page HTTP/1.1\r\nHost: pages.loop2.example\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(raw_status(lo, f, huge.as_bytes()), 431);
    // An absolute-form target for the same host (a client configured with
    // the front as its proxy) is decided like any request.
    let proxied = b"GET http://pages.loop2.example/page HTTP/1.1\r\nHost: pages.loop2.example\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(lo, f, proxied), 451);
    // Outside `acl.allow` (127.0.0.1/32 here): refused, even a blocked URL.
    let page = b"GET /page HTTP/1.1\r\nHost: pages.loop2.example\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(Ipv4Addr::new(127, 0, 0, 3), f, page), 403);
    assert_eq!(raw_status(lo, f, page), 451);
}

#[test]
fn blocks_are_audited_in_the_chain() {
    let w = start("");
    for path in ["/page", "/dir/x", "/not-blocked"] {
        curl(w.front, &format!("http://pages.loop2.example{path}"), &[]);
    }
    let dir = w.audit.path().to_str().unwrap().to_string();
    let hits = wait_for(Duration::from_secs(10), || {
        let (ok, out) = cli(&[
            "audit",
            "search",
            &dir,
            "--name",
            "pages.loop2.example",
            "--format",
            "json",
        ]);
        (ok && out.matches("url-block").count() >= 2).then_some(out)
    })
    .expect("two url-block hits");
    assert!(hits.contains("\"path\":\"/page\""), "{hits}");
    assert!(hits.contains("\"path\":\"/dir/x\""), "{hits}");
    assert!(
        hits.contains("D-DIR") && hits.contains("registry"),
        "{hits}"
    );
    assert!(!hits.contains("not-blocked"), "{hits}");
    let (ok, out) = cli(&["audit", "verify", &dir]);
    assert!(ok, "{out}");
}

#[test]
fn a_browser_renders_the_block_page_with_the_decision() {
    let Some(browser) = chromium() else { return };
    let w = start("");
    let profile = tempfile::tempdir().expect("tempdir");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!(
            "--host-resolver-rules=MAP * {}:{}",
            w.front.ip(),
            w.front.port()
        ))
        .arg("--dump-dom")
        .arg("http://pages.loop2.example/page")
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("<dd id=\"decision\">D-PAGE</dd>"),
        "{out:?}\n{dom}"
    );
    assert!(dom.contains("Court of Test"), "{dom}");
}

#[test]
fn lookup_lists_url_rules_and_matches_urls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("registry.csv");
    std::fs::write(&list, REGISTRY).expect("write");
    let l = list.to_str().unwrap();
    let (ok, out) = cli(&[
        "lookup",
        "--list",
        l,
        "pages.loop2.example",
        "http://pages.loop2.example/a/../page",
        "http://pages.loop2.example/nothing",
    ]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pages.loop2.example url-rules 7", "{out}");
    assert_eq!(lines.len(), 1 + 7 + 2, "{out}");
    assert!(
        lines[1].starts_with("  http://pages.loop2.example/page block ")
            && lines[1].contains("registry.csv:2")
            && lines[1].contains("decision=\"D-PAGE\""),
        "{out}"
    );
    let url_line = lines
        .iter()
        .find(|l| l.starts_with("http://pages.loop2.example/a/../page "))
        .expect("URL line");
    assert!(
        url_line.starts_with("http://pages.loop2.example/a/../page blocked url-block ")
            && url_line
                .contains("registry.csv:2 http://pages.loop2.example/page decision=\"D-PAGE\""),
        "{out}"
    );
    assert!(
        out.contains("http://pages.loop2.example/nothing none"),
        "{out}"
    );
}

#[test]
fn the_front_refuses_to_start_without_explicit_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[upstream]\nservers = [\"192.0.2.53\"]\n[web]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("write");
    let (ok, out) = cli(&["serve", "--check-config", "--config", cfg.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("policy.address_v4"), "{out}");
}

#[test]
fn other_requests_are_proxied_intact_and_streamed() {
    let w = start("origin_timeout_ms = 1500\n");
    let f = w.front;
    let r = curl(
        f,
        "http://pages.loop2.example/other/x%7e?q=1",
        &[
            "-H",
            "X-Test: kept",
            "-H",
            "Connection: keep-alive, X-Hop-Secret",
            "-H",
            "X-Hop-Secret: 1",
        ],
    );
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);
    // The target exactly as sent, the body, the headers minus hop-by-hop.
    assert_eq!(r.body, "origin GET /other/x%7e?q=1 HTTP/1.1 body-bytes=0\n");
    let head = w.origin.last_head().to_ascii_lowercase();
    assert!(head.contains("host: pages.loop2.example\r\n"), "{head}");
    assert!(head.contains("x-test: kept"), "{head}");
    assert!(head.contains("via: 1.1 sinkhole"), "{head}");
    assert!(!head.contains("x-hop-secret"), "{head}");
    // The response: Alt-Svc and hop-by-hop headers gone, Via added.
    assert_eq!(r.header("alt-svc"), None, "{}", r.head);
    assert_eq!(r.header("x-hop"), None, "{}", r.head);
    assert_eq!(r.header("via"), Some("1.1 sinkhole"), "{}", r.head);

    // A streamed (chunked) POST of 3 MB arrives whole.
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body");
    std::fs::write(&body, vec![b'x'; 3 << 20]).expect("write");
    let r = curl(
        f,
        "http://pages.loop2.example/upload",
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Expect:",
            "--data-binary",
            &format!("@{}", body.display()),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(
        r.body,
        format!("origin POST /upload HTTP/1.1 body-bytes={}\n", 3 << 20)
    );

    // Content-Length with Transfer-Encoding: one request reaches the
    // origin, framed by the chunks; the smuggled one never does.
    let smuggle = b"POST /cl-te HTTP/1.1\r\nHost: pages.loop2.example\r\nContent-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: pages.loop2.example\r\n\r\n";
    assert_eq!(raw_status(Ipv4Addr::LOCALHOST, f, smuggle), 200);
    std::thread::sleep(Duration::from_millis(300));
    let heads = w.origin.heads.lock().unwrap().join("");
    assert!(heads.contains("POST /cl-te "), "{heads}");
    assert!(!heads.contains("smuggled"), "{heads}");

    // An origin that does not answer (192.0.2.10, TEST-NET): 502 or 504.
    let r = curl(f, "http://gone.example/other", &[]);
    assert!(matches!(r.status, 502 | 504), "{}", r.head);
    assert_eq!(curl(f, "http://gone.example/page", &[]).status, 451);
}

/// A TLS origin on 127.0.0.2 (`openssl s_server -www`), with a self-signed
/// certificate for `*.loop2.example`.
struct TlsOrigin {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_origin() -> TlsOrigin {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=tls.loop2.example",
            "-addext",
            "subjectAltName=DNS:*.loop2.example",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl req");
    assert!(ok.status.success(), "{ok:?}");
    // A free port on 127.0.0.2.
    let port = TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.2:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    wait_for(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.2", port)).ok()
    })
    .expect("s_server listening");
    TlsOrigin {
        child,
        port,
        _dir: dir,
    }
}

#[test]
fn the_tls_front_passes_steered_hosts_and_refuses_blocked_ones() {
    let origin = tls_origin();
    let w = start(&format!(
        "tls_listen = \"127.0.0.1:0\"\norigin_https_port = {}\n",
        origin.port
    ));
    let tls = w.server.listeners.first("web-tls");
    let https = |url: &str| {
        Command::new("curl")
            .args([
                "-sS",
                "-k",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{ssl_verify_result}",
                "--max-time",
                "10",
            ])
            .arg("--connect-to")
            .arg(format!("::{}:{}", tls.ip(), tls.port()))
            .arg(url)
            .output()
            .expect("curl")
    };
    // Steered, with http:// rules only: through to the origin, whose
    // certificate the client sees (s_server -www answers 200). A host with
    // an https:// or scheme-less rule is refused as a whole
    // (`policy.https_url = "host"`), as pages.loop2.example is.
    let out = https("https://plain.loop2.example/page");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).split(' ').next(),
        Some("200"),
        "{out:?}"
    );
    // An https:// URL rule blocks the host over TLS (policy.https_url =
    // "host"), and so does a whole-host rule: the handshake fails.
    for url in [
        "https://tls.loop2.example/",
        "https://whole.example/",
        "https://pages.loop2.example/",
    ] {
        let out = https(url);
        assert!(!out.status.success(), "{url}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("alert"),
            "{url}: {out:?}"
        );
    }
    // A host the front did not steer: closed.
    assert!(!https("https://unrelated.example/").status.success());
    let dir = w.audit.path().to_str().unwrap().to_string();
    let hits = wait_for(Duration::from_secs(10), || {
        let (ok, out) = cli(&["audit", "search", &dir, "--format", "json"]);
        (ok && out.matches("tls-refuse").count() >= 3).then_some(out)
    })
    .expect("three tls-refuse hits");
    assert!(
        hits.contains("\"sni\":\"tls.loop2.example\"") && hits.contains("D-TLS"),
        "{hits}"
    );
    assert!(hits.contains("\"sni\":\"whole.example\""), "{hits}");
    let (ok, out) = cli(&["audit", "verify", &dir]);
    assert!(ok, "{out}");
}
