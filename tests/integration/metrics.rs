//! `/metrics`, `/healthz` and `/readyz` of the running server, after known
//! queries.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;
use hickory_proto::rr::RecordType;
use sinkhole::metrics::Exposition;

/// GET `path` from `addr` (retried for up to 10 s while it does not
/// connect): status code and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).is_ok() {
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                let status = buf
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let body = buf
                    .split_once("\r\n\r\n")
                    .map(|(_, b)| b.to_string())
                    .unwrap_or_default();
                return (status, body);
            }
        }
        assert!(
            Instant::now() < deadline,
            "metrics endpoint {addr} not reachable"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn scrape_after_known_queries() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(&[("gov.txt", "blocked.example\n")])
        .metrics()
        .start();
    let maddr = s.metrics();
    for _ in 0..3 {
        assert_eq!(
            rcode(&udp(&s, "www.blocked.example", RecordType::A, false)),
            3
        );
    }
    assert_eq!(rcode(&udp(&s, "fine.example", RecordType::AAAA, false)), 0);
    assert_eq!(rcode(&udp(&s, "fine.example", RecordType::AAAA, false)), 0);

    assert_eq!(http_get(maddr, "/healthz").0, 200);
    assert_eq!(http_get(maddr, "/readyz").0, 200);
    assert_eq!(http_get(maddr, "/nope").0, 404);
    let (status, body) = http_get(maddr, "/metrics");
    assert_eq!(status, 200);
    let e = Exposition::parse(&body).expect("exposition parses");
    let v = |name: &str, labels: &[(&str, &str)]| e.value(name, labels).unwrap_or(-1.0);
    assert_eq!(
        v(
            "sinkhole_blocked_total",
            &[("list", "gov"), ("action", "nxdomain")]
        ),
        3.0,
        "{body}"
    );
    assert!(
        v(
            "sinkhole_queries_total",
            &[("transport", "udp"), ("type", "AAAA")]
        ) >= 2.0,
        "{body}"
    );
    assert!(
        v("sinkhole_responses_total", &[("rcode", "NXDOMAIN")]) >= 3.0,
        "{body}"
    );
    assert!(v("sinkhole_cache_hits_total", &[]) >= 1.0, "{body}");
    assert!(v("sinkhole_cache_misses_total", &[]) >= 1.0, "{body}");
    assert_eq!(v("sinkhole_list_version", &[]), 1.0, "{body}");
    assert_eq!(
        v("sinkhole_list_entries", &[("list", "gov")]),
        1.0,
        "{body}"
    );
    assert!(
        v("sinkhole_audit_records_written_total", &[]) >= 0.0,
        "{body}"
    );
    assert_eq!(v("sinkhole_audit_records_lost_total", &[]), 0.0, "{body}");
    assert_eq!(
        v(
            "sinkhole_list_reload_failures_total",
            &[("reason", "shrink")]
        ),
        0.0,
        "{body}"
    );
    assert!(
        body.contains("sinkhole_upstream_request_duration_seconds"),
        "{body}"
    );
    assert!(body.contains("sinkhole_build_info"), "{body}");
}
