//! Registry and clerk file formats through the real binary: a hand-made
//! windows-1251 `dump.xml` (tests/data/formats, one `<content>` per
//! blockType) pushed into a watched list directory and queried with `dig`,
//! a `dump_delta.xml` applied to it in place, and files as clerks save
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

#[test]
fn windows_1251_dump_each_block_type_then_a_delta() {
    let up = Upstream::start();
    let server = Server::builder(&[up.addr])
        .lists(&[("seed.txt", "seed.example\n")])
        .start();
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
    // The decision's number is the EDE's order reference.
    let (_, ede) = dig(server.addr, "nourl.example");
    assert!(
        ede.as_deref()
            .is_some_and(|e| e.contains("blocked by order 2-6-27/2026")),
        "{ede:?}"
    );
    // The Cyrillic authority survives windows-1251 → UTF-8.
    let (code, out) = sinkhole(&[
        "lookup",
        "--list",
        &dump.display().to_string(),
        "exact.example",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("registry.xml:15") && out.contains("authority=\"Генпрокуратура\""),
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
