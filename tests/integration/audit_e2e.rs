//! Every action, over UDP and TCP, reaches the audit log with every field,
//! including the legal references of a registry rule; the log verifies.

use std::time::{Duration, Instant};

use crate::common::*;
use hickory_proto::rr::RecordType;

const LISTS: &[(&str, &str)] = &[
    ("block.txt", "blocked.example\n"),
    ("nodata.txt", "nodata.example\n"),
    ("refused.txt", "refused.example\n"),
    ("drop.txt", "drop.example\n"),
    ("address.txt", "address.example\n"),
    (
        "orders.csv",
        "domain;url;authority;decision;date;category\norder.example;;AFM;2025-17/KZ;2025-03-01;crypto\n",
    ),
];

/// Every audit file in `dir`, concatenated (empty while there is none).
fn read_log(dir: &std::path::Path) -> String {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect()
}

#[test]
fn every_action_and_transport_is_logged_with_every_field() {
    let up = Upstream::start();
    let audit = tempfile::tempdir().expect("tempdir");
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config(PER_LIST)
        .config(&format!(
            "[audit]\npath = \"{}\"\nfsync_every_ms = 0",
            audit.path().display()
        ))
        .start();
    let names = [
        ("Blocked.example.", "nxdomain"),
        ("nodata.example.", "nodata"),
        ("refused.example.", "refused"),
        ("drop.example.", "drop"),
        // A per-list address action is stored as local data (like RPZ A records).
        ("address.example.", "address"),
        ("www.order.example.", "nxdomain"),
    ];
    for (name, _) in names {
        // UDP (drop gets no answer) and TCP.
        let _ = try_query_udp(
            s.addr,
            &query_msg(name, RecordType::A, true),
            Duration::from_millis(300),
        );
        if !name.starts_with("drop") {
            let r = tcp_pipelined(s.addr, &[query_msg(name, RecordType::AAAA, false)]);
            assert_eq!(r.len(), 1, "{name}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = String::new();
    while Instant::now() < deadline {
        log = read_log(audit.path());
        if log.matches("\"kind\":\"hit\"").count() >= 11 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let hits: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "hit")
        .collect();
    assert_eq!(hits.len(), 11, "{log}");
    for (name, action) in names {
        let qname = name.trim_end_matches('.');
        for transport in ["udp", "tcp"] {
            if transport == "tcp" && action == "drop" {
                continue;
            }
            let h = hits
                .iter()
                .find(|h| h["qname"] == qname && h["transport"] == transport)
                .unwrap_or_else(|| panic!("no {transport} hit for {qname}:\n{log}"));
            assert_eq!(h["action"], action, "{h}");
            assert_eq!(h["client"], "127.0.0.1", "{h}");
            assert!(h["port"].as_u64().is_some_and(|p| p > 0), "{h}");
            assert_eq!(
                h["qtype"],
                if transport == "udp" { "A" } else { "AAAA" },
                "{h}"
            );
            assert!(
                h["ts"]
                    .as_str()
                    .is_some_and(|t| t.ends_with('Z') && t.len() == 27),
                "{h}"
            );
            assert!(h["seq"].as_u64().is_some(), "{h}");
            assert_eq!(h["list_version"], 1, "{h}");
            assert_eq!(h["prev"].as_str().map(str::len), Some(64), "{h}");
            assert!(
                h["file"].as_str().is_some_and(|f| f.contains("/lists/")),
                "{h}"
            );
            assert!(h["line"].as_u64().is_some_and(|l| l >= 1), "{h}");
        }
    }
    let order = hits
        .iter()
        .find(|h| h["qname"] == "www.order.example")
        .expect("registry hit");
    assert_eq!(order["rule"], "order.example");
    assert_eq!(order["list"], "orders");
    assert_eq!(order["line"], 2);
    assert_eq!(order["decision"], "2025-17/KZ");
    assert_eq!(order["authority"], "AFM");
    assert_eq!(order["category"], "crypto");
    assert_eq!(hits[0]["qname"], "Blocked.example", "letter case as asked");

    // Stop cleanly (final checkpoint, fsync) and verify the chain.
    assert!(s.stop().is_some_and(|st| st.success()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sinkhole"))
        .args(["audit", "verify"])
        .arg(audit.path())
        .output()
        .expect("run verify");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
