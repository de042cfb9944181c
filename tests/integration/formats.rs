//! Registry and clerk file formats through the real binary: a hand-made
//! windows-1251 `dump.xml` (tests/data/formats, one `<content>` per
//! blockType) pushed into a watched list directory and queried with `dig`,
//! its registry entries named in the EDE text, on the 451 page and in the
//! audit log, a `dump_delta.xml` applied to it in place, and files as clerks save
//! them (Excel "Unicode Text" in UTF-16 LE with tabs, UTF-16 BE with
//! semicolons, an `.xlsx` written by a spreadsheet library) enforced the
//! same way; `sinkhole check` says what is wrong with a table it cannot use.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/formats")
        .join(name)
}

/// Write beside and rename over, as a ministry push does.
fn push(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// `dig` against the server: the status word and the EDE text, if any.
fn dig(server: SocketAddr, name: &str) -> (String, Option<String>) {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+tries=1", "+time=2", name, "A"])
        .output()
        .expect("dig (apt-get install -y bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO ANSWER")
        .to_string();
    let ede = text
        .lines()
        .find(|l| l.starts_with("; EDE:"))
        .map(str::to_string);
    (status, ede)
}

/// Poll until every (name, status) holds, or panic with what did not.
fn wait_for_statuses(server: &Server, want: &[(&str, &str)], limit: Duration) {
    let t0 = Instant::now();
    loop {
        let got: Vec<String> = want.iter().map(|(n, _)| dig(server.addr, n).0).collect();
        if got.iter().zip(want).all(|(g, (_, w))| g == w) {
            return;
        }
        if t0.elapsed() > limit {
            panic!(
                "after {:?}: wanted {want:?}, got {got:?}\nlog:\n{}",
                t0.elapsed(),
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sinkhole(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sinkhole"))
        .args(args)
        .output()
        .expect("run sinkhole");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `curl` for `url` with the connection sent to the web front `front`:
/// the status line and the body.
fn curl_front(front: SocketAddr, url: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--connect-to"])
        .arg(format!("::{}:{}", front.ip(), front.port()))
        .arg(url)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {url}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The audit log's hits as JSON, once `ready` holds for them (the writer
/// is asynchronous).
fn audit_hits(dir: &Path, ready: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let t0 = Instant::now();
    loop {
        let (code, out) = sinkhole(&[
            "audit",
            "search",
            &dir.display().to_string(),
            "--format",
            "json",
        ]);
        let hits: Vec<serde_json::Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if code == 0 && ready(&hits) {
            return hits;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "audit search: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn windows_1251_dump_each_block_type_then_a_delta() {
    let up = Upstream::start();
    let audit = tempfile::tempdir().expect("tempdir");
    let server = Server::builder(&[up.addr])
        .lists(&[("seed.txt", "seed.example\n")])
        .config(&format!(
            "[policy]\naddress_v4 = \"127.0.0.1\"\n\
             ede_text = \"blocked by order {{decision}} of {{date}}, registry entry {{entry}} included {{included}}\"\n\
             [audit]\npath = \"{}\"\nfsync_every_ms = 0\n\
             [web]\nlisten = \"127.0.0.1:0\"\nhostname = \"block.isp.example\"\n",
            audit.path().display()
        ))
        .start();
    let front = server.listeners.first("web");
    let dump = server.list_dir().join("registry.xml");
    let bytes = std::fs::read(fixture("dump-cp1251.xml")).expect("fixture");
    assert!(
        std::str::from_utf8(&bytes).is_err(),
        "the fixture is cp1251"
    );
    push(&dump, &bytes);

    wait_for_statuses(
        &server,
        &[
            // blockType=domain: the host, not its subdomains.
            ("exact.example", "NXDOMAIN"),
            ("www.exact.example", "NOERROR"),
            // domain-mask: the names below it, not the name.
            ("a.mask.example", "NXDOMAIN"),
            ("mask.example", "NOERROR"),
            // default without a URL: the domain; with URLs: only the pages,
            // not the host, except a root URL.
            ("nourl.example", "NXDOMAIN"),
            ("page.example", "NOERROR"),
            ("secure.example", "NOERROR"),
            ("root.example", "NXDOMAIN"),
            // A Cyrillic host, as punycode.
            ("xn--80affxdmh4i.example", "NXDOMAIN"),
            // blockType=ip: addresses, not the row's domain.
            ("ip-row.example", "NOERROR"),
            ("seed.example", "NXDOMAIN"),
        ],
        Duration::from_secs(5),
    );
    // The decision's number and date, the `<content id>` and its
    // `includeTime` fill the EDE text.
    let (_, ede) = dig(server.addr, "nourl.example");
    assert!(
        ede.as_deref().is_some_and(|e| e.contains(
            "blocked by order 2-6-27/2026 of 2026-11-28, registry entry 102 included 2026-11-30T12:00:01"
        )),
        "{ede:?}"
    );
    // The 451 page for a page of row 101 names the order and the row.
    let (status, page) = curl_front(front, "http://page.example/offer?id=1&x=2");
    assert!(status.contains(" 451 "), "{status}\n{page}");
    for shown in [
        "<dd id=\"decision\">27-31-2026/Ид1-26</dd>",
        "<dd id=\"authority\">Роскомнадзор</dd>",
        "<dd id=\"date\">2026-11-29</dd>",
        "<dd id=\"entry\">101</dd>",
        "<dd id=\"included\">2026-11-30T12:00:00</dd>",
    ] {
        assert!(page.contains(shown), "{shown} in:\n{page}");
    }
    // Both blocks are on the record with the row they enforce, and the
    // chain verifies with the new fields in it.
    let dns_hit = |h: &serde_json::Value| h["action"] == "nxdomain" && h["entry"] == "102";
    let web_hit = |h: &serde_json::Value| h["action"] == "url-block" && h["entry"] == "101";
    let hits = audit_hits(audit.path(), |hits| {
        hits.iter().any(dns_hit) && hits.iter().any(web_hit)
    });
    let dns = hits.iter().find(|h| dns_hit(h)).expect("DNS hit");
    assert_eq!(
        (
            &dns["decision"],
            &dns["date"],
            &dns["included"],
            &dns["authority"]
        ),
        (
            &serde_json::json!("2-6-27/2026"),
            &serde_json::json!("2026-11-28"),
            &serde_json::json!("2026-11-30T12:00:01"),
            &serde_json::json!("суд")
        ),
        "{dns}"
    );
    let web = hits.iter().find(|h| web_hit(h)).expect("url-block hit");
    assert_eq!(
        (&web["path"], &web["included"], &web["decision"]),
        (
            &serde_json::json!("/offer?id=1&x=2"),
            &serde_json::json!("2026-11-30T12:00:00"),
            &serde_json::json!("27-31-2026/Ид1-26")
        ),
        "{web}"
    );
    let (code, out) = sinkhole(&["audit", "verify", &audit.path().display().to_string()]);
    assert_eq!(code, 0, "{out}");
    // The Cyrillic authority survives windows-1251 → UTF-8; lookup names
    // the row.
    let (code, out) = sinkhole(&[
        "lookup",
        "--list",
        &dump.display().to_string(),
        "exact.example",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("registry.xml:15")
            && out.contains("authority=\"Генпрокуратура\"")
            && out.contains("entry=\"103\" included=\"2026-11-30T12:00:02\""),
        "{out}"
    );

    // The delta, applied in place: the watcher sees one rename.
    let stats = sinkhole::list::parse::dump::apply_delta(&dump, &fixture("dump_delta.xml"), &dump)
        .expect("apply delta");
    assert_eq!(
        (stats.kept, stats.deleted, stats.replaced, stats.added),
        (5, 1, 1, 2)
    );
    wait_for_statuses(
        &server,
        &[
            ("nourl.example", "NOERROR"),
            ("exact.example", "NOERROR"),
            ("exact2.example", "NXDOMAIN"),
            ("x.new.example", "NXDOMAIN"),
            ("a.mask.example", "NXDOMAIN"),
            ("root.example", "NXDOMAIN"),
        ],
        Duration::from_secs(5),
    );
    // Row 103 replaced by the delta: its new version is quoted.
    let (code, out) = sinkhole(&[
        "lookup",
        "--list",
        &dump.display().to_string(),
        "exact2.example",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("decision=\"3a\"")
            && out.contains("entry=\"103\" included=\"2026-12-02T09:00:00\""),
        "{out}"
    );
    let (code, out) = sinkhole(&["check", &dump.display().to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("format=dump"), "check names the format: {out}");
}

fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
    let mut out = if big_endian {
        vec![0xFE, 0xFF]
    } else {
        vec![0xFF, 0xFE]
    };
    for unit in text.encode_utf16() {
        out.extend_from_slice(&if big_endian {
            unit.to_be_bytes()
        } else {
            unit.to_le_bytes()
        });
    }
    out
}

fn workbook() -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (col, h) in ["Domain", "Decision", "Authority"].iter().enumerate() {
        sheet.write_string(0, col as u16, *h).expect("header");
    }
    sheet.write_string(1, 0, "xlsx-scam.example").expect("cell");
    sheet.write_number(1, 1, 2025017.0).expect("cell");
    sheet.write_string(1, 2, "АФМ").expect("cell");
    book.save_to_buffer().expect("xlsx")
}

#[test]
fn clerk_exports_are_enforced_and_bad_tables_explained() {
    let up = Upstream::start();
    let server = Server::builder(&[up.addr])
        .lists(&[("seed.txt", "seed.example\n")])
        .start();
    let dir = server.list_dir();
    // Excel "Unicode Text": UTF-16 LE, BOM, tabs, CRLF, a quoted field.
    push(
        &dir.join("orders.txt"),
        &utf16(
            "domain\turl\tdecision\r\nunicode-text.example\t\t\"No. 7\tfinal\"\r\n",
            false,
        ),
    );
    push(
        &dir.join("orders-be.csv"),
        &utf16("Domain;Decision\nutf16be.example;8\n", true),
    );
    push(&dir.join("orders.xlsx"), &workbook());
    wait_for_statuses(
        &server,
        &[
            ("unicode-text.example", "NXDOMAIN"),
            ("www.utf16be.example", "NXDOMAIN"),
            ("xlsx-scam.example", "NXDOMAIN"),
        ],
        Duration::from_secs(5),
    );
    let (_, ede) = dig(server.addr, "xlsx-scam.example");
    assert!(
        ede.as_deref()
            .is_some_and(|e| e.contains("blocked by order 2025017")),
        "{ede:?}"
    );
    let (_, ede) = dig(server.addr, "unicode-text.example");
    assert!(
        ede.as_deref()
            .is_some_and(|e| e.contains("blocked by order No. 7")),
        "{ede:?}"
    );

    // A table with other column names: a CSV error naming what was found,
    // not a plain list with every line skipped.
    let scratch = tempfile::tempdir().expect("tempdir");
    let bad = scratch.path().join("export.txt");
    std::fs::write(&bad, utf16("Сайт\tРешение\r\nscam.example\t1\r\n", false)).expect("write");
    let (code, out) = sinkhole(&["check", &bad.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("format=csv")
            && out.contains(":1: CSV header names neither a `domain` nor a `url` column: found \"Сайт\", \"Решение\" (read as UTF-16LE with tab separators)"),
        "{out}"
    );
    let (code, out) = sinkhole(&["check", &dir.join("orders.xlsx").display().to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("format=xlsx"), "{out}");
}

fn minisign(args: &[&std::ffi::OsStr]) {
    let out = Command::new("minisign")
        .args(args)
        .output()
        .expect("minisign (apt-get install -y minisign)");
    assert!(out.status.success(), "minisign {args:?}: {out:?}");
}

/// `curl -T FILE` to the push API with one signature; (status, JSON body).
fn push_signed(api: SocketAddr, token: &str, file: &Path, sig: &Path) -> (u16, serde_json::Value) {
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD.encode(std::fs::read(sig).expect("sig"));
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-T"])
        .arg(file)
        .arg(format!("http://{api}/v1/lists/rkn"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", &format!("Sinkhole-Signature: {sig}")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// The registry's dump pushed signed through the API, then a delta signed
/// for it (`base=1`): the delta is applied to the dump in force and the
/// merged dump is what is enforced and served as the content.
#[test]
fn signed_dump_push_then_a_delta_push() {
    let up = Upstream::start();
    let work = tempfile::tempdir().expect("tempdir");
    let (state, audit) = (work.path().join("state"), work.path().join("audit"));
    std::fs::create_dir_all(&audit).expect("mkdir");
    let (pubkey, seckey) = (work.path().join("rkn.pub"), work.path().join("rkn.key"));
    minisign(&[
        "-G".as_ref(),
        "-W".as_ref(),
        "-p".as_ref(),
        pubkey.as_os_str(),
        "-s".as_ref(),
        seckey.as_os_str(),
    ]);
    let token = "rkn-clerk-token-0123456789";
    let token_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    };
    let server = Server::builder(&[up.addr])
        .lists(&[("seed.txt", "seed.example\n")])
        .config(&format!(
            "state_dir = \"{}\"\n[[lists.managed]]\nname = \"rkn\"\nsigners = [\"{}\"]\nrequired_signatures = 1\n\
             [api]\nlisten = \"127.0.0.1:0\"\nmax_body_mb = 16\n\
             [[api.token]]\nname = \"rkn-clerk\"\nsha256 = \"{token_sha}\"\nlists = [\"rkn\"]\n\
             [audit]\npath = \"{}\"\nfsync_every_ms = 0\n",
            state.display(),
            pubkey.display(),
            audit.display()
        ))
        .start();
    let api = server.listeners.first("api");
    let sign = |file: &Path, comment: &str| -> PathBuf {
        let sig = file.with_extension("minisig");
        minisign(&[
            "-S".as_ref(),
            "-s".as_ref(),
            seckey.as_os_str(),
            "-m".as_ref(),
            file.as_os_str(),
            "-x".as_ref(),
            sig.as_os_str(),
            "-t".as_ref(),
            comment.as_ref(),
        ]);
        sig
    };

    let dump = work.path().join("dump.xml");
    std::fs::copy(fixture("dump-cp1251.xml"), &dump).expect("copy");
    let (status, receipt) = push_signed(api, token, &dump, &sign(&dump, "list=rkn version=1"));
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["format"], "dump", "{receipt}");
    assert_eq!(receipt["rules"]["urls"], 3, "{receipt}");
    assert_eq!(dig(server.addr, "nourl.example").0, "NXDOMAIN");
    assert_eq!(dig(server.addr, "exact.example").0, "NXDOMAIN");

    let delta = work.path().join("dump_delta.xml");
    std::fs::copy(fixture("dump_delta.xml"), &delta).expect("copy");
    let (status, receipt) = push_signed(
        api,
        token,
        &delta,
        &sign(&delta, "list=rkn version=2 base=1"),
    );
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["version"], 2, "{receipt}");
    for (name, want) in [
        ("nourl.example", "NOERROR"),
        ("exact.example", "NOERROR"),
        ("exact2.example", "NXDOMAIN"),
        ("x.new.example", "NXDOMAIN"),
        ("a.mask.example", "NXDOMAIN"),
    ] {
        assert_eq!(dig(server.addr, name).0, want, "{name} after the delta");
    }
    // The content in force is the merged full dump, in UTF-8.
    let out = Command::new("curl")
        .args(["-sS", "-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://{api}/v1/lists/rkn/content"))
        .output()
        .expect("curl");
    let content = String::from_utf8(out.stdout).expect("UTF-8 content");
    assert!(
        content.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
            && content.contains("<content id=\"108\"")
            && !content.contains("<content id=\"102\""),
        "{content}"
    );
}
