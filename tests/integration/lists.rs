//! The list CLI contract (`check`, `lookup`, `diff`, `compile`) run as the
//! real binary over the real third-party lists in tests/data/real.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test, as a command to add arguments to.
fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sinkhole"))
}

/// A real third-party list in tests/data/real.
fn real(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/real")
        .join(name)
}

/// Run it to the end: exit code, stdout, stderr.
fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run sinkhole");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// `sinkhole lookup --json --list LIST NAMES…`, one JSON value per name.
fn lookup_json(list: &Path, names: &[&str]) -> Vec<serde_json::Value> {
    let (code, out, err) = run(bin()
        .arg("lookup")
        .arg("--json")
        .arg("--list")
        .arg(list)
        .args(names));
    assert_eq!(code, 0, "lookup failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn polkadot_json_lookups() {
    let list = real("polkadot-js-phishing-all.json");
    let r = lookup_json(
        &list,
        &[
            "aavè.com",
            "0xarb.xyz.",
            "www.0xarb.xyz",
            "IMXtoken.net",
            "twitter.com",
            "x.com",
            "pages.dev",
        ],
    );
    let status: Vec<&str> = r
        .iter()
        .map(|v| v["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        status,
        [
            "blocked",
            "blocked",
            "blocked",
            "blocked",
            "url-rules",
            "url-rules",
            "allowed"
        ],
        "{r:#?}"
    );
    // twitter.com and x.com are not blocked: the list names pages on them,
    // which `lookup` lists (issue 12).
    assert_eq!(
        r[4]["url_rules"][0]["rule"], "twitter.com/AcalaNetworks",
        "{r:#?}"
    );
    // The Unicode entry is matched in its punycode form, with its line.
    assert_eq!(r[0]["name"], "xn--aav-8la.com");
    assert_eq!(r[0]["line"], 399);
    assert!(
        r[0]["file"]
            .as_str()
            .unwrap_or("")
            .ends_with("polkadot-js-phishing-all.json")
    );
    // A deny entry under an allowed shared-hosting parent stays blocked.
    let deny_under_allow = std::fs::read_to_string(&list)
        .expect("read")
        .lines()
        .map(|l| l.trim().trim_matches(|c| c == '"' || c == ','))
        .find(|l| l.ends_with(".pages.dev") && !l.contains(' '))
        .map(str::to_string)
        .expect("a *.pages.dev deny entry");
    let r = lookup_json(&list, &[&deny_under_allow]);
    assert_eq!(r[0]["status"], "blocked", "{deny_under_allow}: {r:?}");
}

#[test]
fn rpz_and_registry_lookups() {
    let r = lookup_json(
        &real("hagezi-fake.rpz.txt"),
        &["bitcoin360.ai", "www.bitcoin360.ai", "xbitcoin360.ai"],
    );
    assert_eq!(r[0]["status"], "blocked");
    assert_eq!(r[0]["action"], "nxdomain");
    assert_eq!(r[0]["rule"], "=bitcoin360.ai");
    assert_eq!(r[1]["rule"], "*.bitcoin360.ai");
    assert_eq!(r[2]["status"], "none");

    let r = lookup_json(
        &real("zapret-info-dump-2014-04-22.csv"),
        &["navalny.co.uk", "www.navalny.co.uk"],
    );
    assert_eq!(r[0]["status"], "blocked");
    assert_eq!(r[0]["authority"], "Генпрокуратура");
    assert_eq!(r[0]["decision"], "27/3-286-2014/Нд6333-14");
    assert_eq!(r[1]["status"], "blocked");
}

#[test]
fn check_reports_formats_counts_and_exit_codes() {
    let (code, out, _) = run(bin()
        .arg("check")
        .arg(real("zapret-info-dump-2014-04-22.csv")));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("format=csv names=880 wildcards=0 allows=0 keywords=0 urls=1365 ips=3"),
        "{out}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("clerk.txt");
    std::fs::write(&bad, "good.example\nnot a name at all\nbad..example\n").expect("write");
    let (code, out, _) = run(bin().arg("check").arg(&bad));
    assert_eq!(code, 1, "skipped lines exit 1: {out}");
    assert!(out.contains(&format!("{}:2: ", bad.display())), "{out}");
    assert!(out.contains(&format!("{}:3: ", bad.display())), "{out}");
    assert!(out.contains("names=1"), "{out}");
    let (code, _, _) = run(bin().args(["check", "--strict"]).arg(&bad));
    assert_eq!(code, 2, "strict turns skips into an error");
    let (code, out, _) = run(bin().args(["check", "--json"]).arg(&bad));
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["skipped"].as_array().map(Vec::len), Some(2));
    let (code, _, err) = run(bin().arg("check").arg(dir.path().join("missing.txt")));
    assert_eq!(code, 2, "I/O errors exit 2: {err}");
    assert!(err.contains("missing.txt"), "{err}");
}

#[test]
fn diff_between_two_registry_snapshots() {
    let (code, out, err) = run(bin()
        .arg("diff")
        .arg(real("zapret-info-dump-2014-04-15.csv"))
        .arg(real("zapret-info-dump-2014-04-22.csv")));
    assert_eq!(code, 0, "{err}");
    // Checked independently (Python, by distinct blocked domain): 13 added, 33 removed.
    assert!(out.ends_with("added 13 removed 33\n"), "{out}");
    assert!(out.contains("+ 7ted.com\n"), "{out}");
    assert!(out.contains("- rustuff.biz\n"), "{out}");
}

#[test]
fn compiled_snapshot_answers_like_the_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("lists.snapshot");
    let (code, out, err) = run(bin()
        .arg("compile")
        .arg("--list")
        .arg(real("hagezi-fake.rpz.txt"))
        .arg("--list")
        .arg(real("polkadot-js-phishing-all.json"))
        .arg("-o")
        .arg(&snap)
        .args(["--version", "5"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 5"), "{out}");
    let (code, out, err) = run(bin().arg("lookup").arg("--snapshot").arg(&snap).args([
        "www.bitcoin360.ai",
        "0xarb.xyz",
        "example.org",
    ]));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("www.bitcoin360.ai blocked nxdomain "),
        "{out}"
    );
    assert!(lines[1].starts_with("0xarb.xyz blocked block "), "{out}");
    assert_eq!(lines[2], "example.org none");
    // A damaged snapshot is refused with a clear error.
    let mut bytes = std::fs::read(&snap).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&snap, &bytes).expect("write");
    let (code, _, err) = run(bin()
        .arg("lookup")
        .arg("--snapshot")
        .arg(&snap)
        .arg("x.example"));
    assert_eq!(code, 2);
    assert!(err.contains("checksum"), "{err}");
}
