//! The auditors' console of the running server: authentication, roles,
//! the JSON API against the CLI's `audit stats`/`audit search` on the same
//! log, `console` records on the chain, and a real browser (headless
//! Chromium) rendering the pages.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use hickory_proto::rr::RecordType;

use crate::common::*;

const DECISION: &str = "2025-17/KZ";
const LISTS: &[(&str, &str)] = &[
    ("block.txt", "blocked.test\n"),
    (
        "orders.csv",
        "domain;url;authority;decision;date;category\norder.test;;AFM;2025-17/KZ;2025-03-01;crypto\nother.test;;AFM;2025-18;2025-03-02;gambling\n",
    ),
];
const AUDITOR: (&str, &str) = ("ann", "ann-password");
const VIEWER: (&str, &str) = ("vic", "vic-password");

/// A server with an audit directory and a console (HTTP on loopback).
struct Console {
    server: Server,
    audit: tempfile::TempDir,
    addr: SocketAddr,
    hits: usize,
}

fn hash(password: &str) -> String {
    // Cost 4: the lowest bcrypt allows, so the test spends no time hashing.
    sinkhole::console::auth::hash_password(password, 4).expect("hash")
}

/// Starts the server and makes hits from five client addresses: names
/// under the order (two decisions) and a plain block list.
fn start() -> Console {
    let up = Upstream::start();
    let audit = tempfile::tempdir().expect("tempdir");
    let server = Server::builder(&[up.addr])
        .lists(LISTS)
        .config(&format!(
            "[audit]\npath = \"{}\"\nfsync_every_ms = 0\n\
             [console]\nlisten = \"127.0.0.1:0\"\nverify_every_secs = 1\n\
             [console.basic_auth_users]\n{} = \"{}\"\n{} = \"{}\"\n\
             [console.roles]\n{} = \"auditor\"\n{} = \"viewer\"\n",
            audit.path().display(),
            AUDITOR.0,
            hash(AUDITOR.1),
            VIEWER.0,
            hash(VIEWER.1),
            AUDITOR.0,
            VIEWER.0,
        ))
        .start();
    let names = [
        "www.order.test.",
        "order.test.",
        "cdn.order.test.",
        "other.test.",
        "blocked.test.",
    ];
    let mut hits = 0;
    for client in 2..=6u8 {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, client));
        for (i, name) in names.iter().enumerate() {
            for _ in 0..=(i + usize::from(client)) % 3 {
                let q = query_msg(name, RecordType::A, false);
                try_query_udp_from(from, server.addr, &q, Duration::from_secs(2))
                    .expect("an answer");
                hits += 1;
            }
        }
    }
    wait_for(Duration::from_secs(10), || {
        (count_kind(audit.path(), "hit") == hits).then_some(())
    })
    .expect("every hit logged");
    let addr = server.listeners.first("console");
    Console {
        server,
        audit,
        addr,
        hits,
    }
}

/// Lines of kind `kind` in the log.
fn count_kind(dir: &Path, kind: &str) -> usize {
    let needle = format!("\"kind\":\"{kind}\"");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|t| t.lines().filter(|l| l.contains(&needle)).count())
        .sum()
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

fn basic(user: &str, pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

/// GET with optional Basic credentials; decodes a chunked body.
fn get(addr: SocketAddr, path: &str, auth: Option<(&str, &str)>) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let creds = auth
        .map(|(u, p)| format!("Authorization: Basic {}\r\n", basic(u, p)))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{creds}\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        head: head.to_string(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = s.split_once("\r\n") else {
            panic!("chunked body cut short");
        };
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

fn json(r: &Reply) -> serde_json::Value {
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);
    serde_json::from_str(&r.body).expect("json")
}

/// Runs the CLI; its standard output.
fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sinkhole"))
        .args(args)
        .output()
        .expect("run sinkhole");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

fn stats(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let d = dir.to_str().expect("utf-8 path");
    let mut args = vec!["audit", "stats", d, "--format", "json", "--top", "1000"];
    args.extend_from_slice(extra);
    serde_json::from_str(&cli(&args)).expect("stats json")
}

fn client_addresses(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '/'))
        .filter(|w| w.starts_with("127.0.0.") && !w.ends_with("/24") && w.len() > 8)
        .collect()
}

#[test]
fn console_auth_roles_api_and_console_records() {
    let c = start();
    let a = c.addr;
    let dir = c.audit.path();

    // Nothing without credentials, a Basic challenge, and 401 for a wrong
    // password or an unknown user.
    for path in ["/", "/api/overview", "/api/search?name=test", "/nothing"] {
        let r = get(a, path, None);
        assert_eq!(r.status, 401, "{path}");
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("www-authenticate: basic")
        );
        assert!(!r.body.contains("order.test"));
    }
    assert_eq!(
        get(a, "/api/overview", Some((AUDITOR.0, "wrong"))).status,
        401
    );
    assert_eq!(
        get(a, "/api/overview", Some(("eve", AUDITOR.1))).status,
        401
    );

    // The overview's counts are `audit stats`'s on the same log.
    let o = json(&get(a, "/api/overview", Some(AUDITOR)));
    let by_decision = stats(dir, &["--by", "decision"]);
    assert_eq!(o["hits"], by_decision["total"]);
    assert_eq!(o["hits"], c.hits as u64);
    let rows: Vec<(String, u64)> = by_decision["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let top: Vec<(String, u64)> = o["top_decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(top, rows);

    // The per-order report against stats filtered by the decision.
    let r = json(&get(
        a,
        &format!("/api/report?decision={}", DECISION.replace('/', "%2F")),
        Some(AUDITOR),
    ));
    let by_client = stats(dir, &["--decision", DECISION, "--by", "client"]);
    assert_eq!(r["hits"], by_client["total"]);
    assert_eq!(r["distinct_clients"], by_client["distinct"]);
    assert_eq!(r["distinct_clients"], 5);

    // CSV export: one row per record `audit search` prints.
    let d = dir.to_str().unwrap();
    for (query, args) in [
        ("since=2000-01-01", vec!["--since", "2000-01-01"]),
        ("name=order.test", vec!["--name", "order.test"]),
        ("decision=2025-18", vec!["--decision", "2025-18"]),
    ] {
        let csv = get(a, &format!("/api/search?{query}&format=csv"), Some(AUDITOR));
        assert_eq!(csv.status, 200, "{}", csv.head);
        let mut cli_args = vec!["audit", "search", d, "--format", "json"];
        cli_args.extend(args);
        let want = cli(&cli_args).lines().count();
        assert!(want > 0);
        assert_eq!(csv.body.lines().count() - 1, want, "{query}");
        let jsonl = get(
            a,
            &format!("/api/search?{query}&format=jsonl"),
            Some(AUDITOR),
        );
        assert_eq!(jsonl.body, cli(&cli_args), "auditors get the stored lines");
    }

    // A viewer: no client address anywhere, no search by client, no
    // console records.
    for path in [
        "/api/search?name=test&format=jsonl",
        "/api/search?name=test&format=csv",
        "/api/search?name=test",
        "/search?name=test",
        "/",
        "/api/overview",
    ] {
        let r = get(a, path, Some(VIEWER));
        assert_eq!(r.status, 200, "{path}");
        assert!(client_addresses(&r.body).is_empty(), "{path}: {}", r.body);
    }
    assert!(
        get(a, "/api/search?name=test&format=jsonl", Some(VIEWER))
            .body
            .contains("127.0.0.0/24")
    );
    assert_eq!(
        get(a, "/api/search?client=127.0.0.2", Some(VIEWER)).status,
        403
    );
    assert_eq!(get(a, "/api/search?kind=console", Some(VIEWER)).status, 403);

    // An auditor's search by client is on the chain, and the chain verifies.
    let before = count_kind(dir, "console");
    let page = json(&get(
        a,
        "/api/search?client=127.0.0.2&limit=5",
        Some(AUDITOR),
    ));
    assert_eq!(page["rows"].as_array().unwrap().len(), 5);
    assert!(page["more"].as_bool().unwrap());
    let rec = wait_for(Duration::from_secs(10), || {
        let text: String = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect();
        text.lines()
            .filter(|l| l.contains("\"kind\":\"console\"") && l.contains("client=127.0.0.2"))
            .map(str::to_string)
            .next()
    })
    .expect("a console record");
    let rec: serde_json::Value = serde_json::from_str(&rec).unwrap();
    assert_eq!(rec["user"], AUDITOR.0);
    assert_eq!(rec["role"], "auditor");
    assert_eq!(rec["results"], 5);
    assert!(count_kind(dir, "console") > before);
    let events = json(&get(
        a,
        "/api/search?kind=console&format=json",
        Some(AUDITOR),
    ));
    assert!(!events["rows"].as_array().unwrap().is_empty());
    let verify = Command::new(env!("CARGO_BIN_EXE_sinkhole"))
        .args(["audit", "verify", d])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");

    // The background check reports the chain intact.
    let chain = wait_for(Duration::from_secs(10), || {
        let v = json(&get(a, "/api/chain", Some(AUDITOR)));
        (v["state"] == "intact").then_some(v)
    })
    .expect("chain verified in the background");
    assert!(chain["verified_to_seq"].as_u64().is_some());
    assert!(chain["anchoring"].is_null(), "no anchor_url configured");

    // A deleted index is rebuilt, and `audit reindex` agrees.
    std::fs::remove_dir_all(dir.join(".index")).ok();
    let again = json(&get(a, "/api/overview", Some(AUDITOR)));
    assert_eq!(again["hits"], o["hits"]);
    assert!(cli(&["audit", "reindex", d]).starts_with("indexed "));
    drop(c.server);
}

/// The DOM Chromium renders for `url`.
fn dump_dom(browser: &str, url: &str) -> String {
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
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in a dumped DOM.
fn element_text<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in\n{dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    &rest[start..end]
}

#[test]
fn a_browser_sees_the_counts_the_cli_computes() {
    let Some(browser) = chromium() else { return };
    let c = start();
    let dir = c.audit.path();
    let base = format!("http://{}:{}@{}", AUDITOR.0, AUDITOR.1, c.addr);

    let dom = dump_dom(browser, &format!("{base}/"));
    let total = stats(dir, &["--by", "decision"]);
    assert_eq!(element_text(&dom, "total-hits"), total["total"].to_string());
    assert!(dom.contains("<svg"), "the charts render");
    // Every decision row of the overview, as stats counts it.
    for row in total["rows"].as_array().unwrap() {
        let key = row["key"].as_str().unwrap();
        if key == "-" {
            continue;
        }
        assert!(
            dom.contains(&format!(
                ">{key}</a></td><td class=\"n\">{}</td>",
                row["count"]
            )),
            "{key} in\n{dom}"
        );
    }

    let dom = dump_dom(
        browser,
        &format!("{base}/report?decision={}", DECISION.replace('/', "%2F")),
    );
    let by_client = stats(dir, &["--decision", DECISION, "--by", "client"]);
    let by_name = stats(dir, &["--decision", DECISION, "--by", "name"]);
    assert_eq!(element_text(&dom, "report-decision"), DECISION);
    assert_eq!(
        element_text(&dom, "report-hits"),
        by_client["total"].to_string()
    );
    assert_eq!(
        element_text(&dom, "report-clients"),
        by_client["distinct"].to_string()
    );
    assert_eq!(
        element_text(&dom, "report-names"),
        by_name["distinct"].to_string()
    );

    // Without credentials the browser gets the challenge, not the page.
    let dom = dump_dom(browser, &format!("http://{}/", c.addr));
    assert!(!dom.contains("total-hits"));
    drop(c.server);
}
