//! Fault injection against the real binary: upstream faults (down, slow,
//! garbage, spoofed, truncated, TCP only), serve-stale, resource faults
//! (audit directory gone, file size limit, list directory deleted) and
//! graceful shutdown.
//!
//! Each upstream fault is checked the same way ([`upstream_fault`]): the
//! faulty question gets its expected answer (SERVFAIL, or the real answer
//! when the fault is one sinkhole must see through) within
//! `upstream.timeout_ms` plus slack, and meanwhile blocked names, cached
//! names and a second, healthy upstream keep answering at once.
//!
//! Already covered in the `serve` module and not repeated here: a slow upstream
//! (never answering) giving SERVFAIL in time while others answer, failover
//! past a dead first upstream, a forged wrong-ID answer ignored, TC → TCP
//! retry, a silent upstream moved to the back of the order.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

const LISTS: &[(&str, &str)] = &[("block.txt", "blocked.example\n")];

/// `upstream.timeout_ms` in the harness configuration.
const TIMEOUT: Duration = Duration::from_millis(800);
/// Scheduling slack on a loaded CI machine.
const SLACK: Duration = Duration::from_millis(700);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    ServFail,
    /// The scripted upstream's real answer (never the forged one).
    RealAnswer,
}

/// Ask `name` in a thread; (answer, time taken).
fn ask_async(addr: SocketAddr, name: &str) -> std::thread::JoinHandle<(Option<Message>, Duration)> {
    let q = query_msg(name, RecordType::A, false);
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let m = try_query_udp(addr, &q, Duration::from_secs(4));
        (m, t0.elapsed())
    })
}

/// Assert the victim got what `expect` says, within the timeout plus slack.
fn check_expected(m: &Option<Message>, took: Duration, expect: Expect, what: &str) {
    let m = m
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no answer at all (SERVFAIL expected at worst)"));
    match expect {
        Expect::ServFail => assert_eq!(rcode(m), 2, "{what}: {m:?}"),
        Expect::RealAnswer => {
            assert_eq!(rcode(m), 0, "{what}: {m:?}");
            assert_eq!(a_records(m), vec![UP_V4], "{what}: forged answer accepted?");
        }
    }
    assert!(
        took < TIMEOUT + SLACK,
        "{what}: answered after {took:?} (timeout {TIMEOUT:?})"
    );
}

/// The shared check for one upstream fault; see the module comment.
fn upstream_fault(fault: Fault, expect: Expect) -> (Upstream, Server) {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr]).lists(LISTS).start();
    // Cached while the upstream is healthy.
    assert_eq!(
        a_records(&udp(&s, "cached.example.", RecordType::A, false)),
        vec![UP_V4]
    );
    up.set(fault);
    let asked_before = up.count("cached.example", "udp");

    let victim = ask_async(s.addr, "victim.example.");
    std::thread::sleep(Duration::from_millis(30));
    // While the victim waits on the faulty upstream, the rest is served at once.
    let t0 = Instant::now();
    assert_eq!(rcode(&udp(&s, "blocked.example.", RecordType::A, false)), 3);
    assert_eq!(
        a_records(&udp(&s, "cached.example.", RecordType::A, false)),
        vec![UP_V4]
    );
    let quick = t0.elapsed();
    assert!(quick < Duration::from_millis(500), "{fault:?}: {quick:?}");
    assert_eq!(
        up.count("cached.example", "udp"),
        asked_before,
        "cached answer came from the cache"
    );
    let (m, took) = victim.join().expect("join");
    check_expected(&m, took, expect, &format!("{fault:?}"));
    if expect == Expect::RealAnswer {
        // And what got cached is the real answer, not a forgery.
        let m = udp(&s, "victim.example.", RecordType::A, false);
        assert_eq!(a_records(&m), vec![UP_V4], "{fault:?}: cache poisoned");
    }

    // A healthy second upstream behind the faulty one answers within the
    // timeout (each upstream gets a share of it).
    let healthy = Upstream::start();
    let s2 = Server::builder(&[up.addr, healthy.addr])
        .lists(LISTS)
        .start();
    let t0 = Instant::now();
    let m = udp(&s2, "second.example.", RecordType::A, false);
    assert_eq!(a_records(&m), vec![UP_V4], "{fault:?} then healthy");
    assert!(
        t0.elapsed() < TIMEOUT + SLACK,
        "{fault:?}: {:?}",
        t0.elapsed()
    );
    (up, s)
}

#[test]
fn upstream_down_servfail_fast_and_others_served() {
    let (_up, s) = upstream_fault(Fault::Down, Expect::ServFail);
    // Nothing listening fails at once (ICMP), well before the timeout.
    let t0 = Instant::now();
    assert_eq!(rcode(&udp(&s, "down2.example.", RecordType::A, false)), 2);
    assert!(t0.elapsed() < TIMEOUT, "{:?}", t0.elapsed());
}

#[test]
fn upstream_slower_than_the_timeout() {
    let (up, s) = upstream_fault(Fault::Slow(Duration::from_millis(1500)), Expect::ServFail);
    // The late answer arrives after the SERVFAIL; it must not be cached or
    // confuse the next exchange, which gets its own answer once healthy.
    std::thread::sleep(Duration::from_millis(1000));
    up.set(Fault::Healthy);
    let m = udp(&s, "victim.example.", RecordType::A, false);
    assert_eq!(a_records(&m), vec![UP_V4]);
}

#[test]
fn upstream_answering_garbage() {
    let (up, s) = upstream_fault(Fault::Garbage, Expect::ServFail);
    // Still alive and serving once the upstream recovers.
    up.set(Fault::Healthy);
    assert_eq!(
        a_records(&udp(&s, "after.example.", RecordType::A, false)),
        vec![UP_V4]
    );
}

#[test]
fn forged_wrong_id_is_ignored_and_the_real_answer_accepted() {
    upstream_fault(Fault::WrongIdThenRight, Expect::RealAnswer);
}

#[test]
fn forged_wrong_question_is_ignored_and_the_real_answer_accepted() {
    upstream_fault(Fault::WrongQuestionThenRight, Expect::RealAnswer);
}

#[test]
fn only_forged_answers_give_servfail() {
    upstream_fault(Fault::SpoofOnly, Expect::ServFail);
}

#[test]
fn truncated_over_udp_answered_over_tcp() {
    let (up, _s) = upstream_fault(Fault::Truncated, Expect::RealAnswer);
    assert!(up.count("victim.example", "tcp") >= 1, "retried over TCP");
}

#[test]
fn truncated_over_udp_with_tcp_refused_gives_servfail() {
    upstream_fault(Fault::TruncatedNoTcp, Expect::ServFail);
}

/// sinkhole asks over UDP and uses TCP only after a truncated answer (as
/// stubs and forwarders do, RFC 7766 §5): an upstream that only answers
/// over TCP looks silent, so the client gets SERVFAIL at the timeout.
#[test]
fn upstream_answering_only_over_tcp_gives_servfail() {
    let (up, _s) = upstream_fault(Fault::TcpOnly, Expect::ServFail);
    assert_eq!(up.count("victim.example", "tcp"), 0);
}

// ------------------------------------------------------------ serve-stale

#[test]
fn serve_stale_answers_expired_entries_with_ttl_30_when_upstreams_fail() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config("[cache]\nserve_stale_secs = 3600")
        .metrics()
        .start();
    let maddr = s.metrics();
    let m = udp(&s, "ttl1.stale.example.", RecordType::A, false);
    assert_eq!(m.answers[0].ttl, 1);
    let _ = udp(&s, "ttl1.fresh.example.", RecordType::A, false);
    std::thread::sleep(Duration::from_millis(1300));

    for (fault, slowest) in [(Fault::Down, TIMEOUT), (Fault::Silent, TIMEOUT + SLACK)] {
        up.set(fault);
        let t0 = Instant::now();
        let m = udp(&s, "ttl1.stale.example.", RecordType::A, false);
        let took = t0.elapsed();
        assert_eq!(rcode(&m), 0, "{fault:?}: stale answer, not SERVFAIL");
        assert_eq!(a_records(&m), vec![UP_V4]);
        assert_eq!(m.answers[0].ttl, 30, "RFC 8767 §4");
        assert!(took < slowest, "{fault:?}: {took:?}");
        // Never cached: SERVFAIL as before.
        assert_eq!(rcode(&udp(&s, "never.example.", RecordType::A, false)), 2);
    }
    // Back up: the fresh answer replaces the stale one.
    up.set(Fault::Healthy);
    let m = udp(&s, "ttl1.fresh.example.", RecordType::A, false);
    assert_eq!(m.answers[0].ttl, 1, "refetched, not stale");
    let stale = wait_for(Duration::from_secs(3), || {
        metric(maddr, "sinkhole_stale_answers_total", &[]).filter(|v| *v >= 2.0)
    });
    assert_eq!(stale, Some(2.0));
}

#[test]
fn without_serve_stale_expired_entries_are_not_served() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr]).lists(LISTS).start();
    let _ = udp(&s, "ttl1.nostale.example.", RecordType::A, false);
    std::thread::sleep(Duration::from_millis(1300));
    up.set(Fault::Down);
    assert_eq!(
        rcode(&udp(&s, "ttl1.nostale.example.", RecordType::A, false)),
        2
    );
}

// ------------------------------------------------------------ resources

/// `n` distinct blocked names (`q0.blocked.example`, …), each answered NXDOMAIN.
fn blocked_burst(s: &Server, n: usize) {
    for i in 0..n {
        let m = udp(s, &format!("q{i}.blocked.example."), RecordType::A, false);
        assert_eq!(rcode(&m), 3);
    }
}

/// `sinkhole audit verify DIR`: exit code and output.
fn audit_verify(dir: &std::path::Path) -> (i32, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sinkhole"))
        .args(["audit", "verify"])
        .arg(dir)
        .output()
        .expect("sinkhole audit verify");
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// The audit directory is replaced by a file (so every new audit file
/// fails with ENOTDIR; as root, permissions would not stop a write): the
/// resolver keeps answering, the failure is logged and counted, and the
/// log recovers when the directory is back.
#[test]
fn audit_directory_gone_keeps_serving_and_recovers() {
    let up = Upstream::start();
    let keep = tempfile::tempdir().expect("tempdir");
    let audit = keep.path().join("audit");
    let moved = keep.path().join("audit.moved");
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config(&format!(
            "[audit]\npath = \"{}\"\nmax_file_bytes = 4096\nfsync_every_ms = 0",
            audit.display()
        ))
        .metrics()
        .start();
    let maddr = s.metrics();
    blocked_burst(&s, 5);
    let written = |min: f64| {
        wait_for(Duration::from_secs(5), || {
            metric(maddr, "sinkhole_audit_records_written_total", &[]).filter(|v| *v >= min)
        })
    };
    let before = written(5.0).expect("hits written");

    std::fs::rename(&audit, &moved).expect("move the audit directory away");
    std::fs::write(&audit, b"not a directory").expect("a file in its place");
    // Enough hits to need new files (4 KiB each).
    blocked_burst(&s, 60);
    let errors = wait_for(Duration::from_secs(5), || {
        metric(maddr, "sinkhole_audit_write_errors_total", &[]).filter(|v| *v > 0.0)
    });
    assert!(errors.is_some(), "write errors counted; log:\n{}", s.log());
    // Still answering, blocked and forwarded alike.
    assert_eq!(rcode(&udp(&s, "blocked.example.", RecordType::A, false)), 3);
    assert_eq!(
        a_records(&udp(&s, "fine.example.", RecordType::A, false)),
        vec![UP_V4]
    );
    assert!(
        s.log().contains("audit log write failed"),
        "logged; log:\n{}",
        s.log()
    );

    // Fixed: the directory is back, and hits are written again.
    std::fs::remove_file(&audit).expect("remove the file");
    std::fs::rename(&moved, &audit).expect("directory back");
    let errors_then = metric(maddr, "sinkhole_audit_write_errors_total", &[]).unwrap_or(0.0);
    let written_then = metric(maddr, "sinkhole_audit_records_written_total", &[]).unwrap_or(0.0);
    assert!(written_then >= before);
    // The writer retries with a backoff; give it time, with hits coming in.
    let recovered = wait_for(Duration::from_secs(15), || {
        blocked_burst(&s, 3);
        metric(maddr, "sinkhole_audit_records_written_total", &[])
            .filter(|v| *v > written_then + 5.0)
    });
    assert!(
        recovered.is_some(),
        "audit log recovered; log:\n{}",
        s.log()
    );
    let errors_now = metric(maddr, "sinkhole_audit_write_errors_total", &[]).unwrap_or(0.0);
    blocked_burst(&s, 10);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        metric(maddr, "sinkhole_audit_write_errors_total", &[]),
        Some(errors_now),
        "no new errors once fixed (were {errors_then} when fixed)"
    );
    let log = s.log();
    let status = s.stop().expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}; log:\n{log}");
    // Every file back in one directory: one chain, the outage a `lost` record.
    let (code, out) = audit_verify(&audit);
    assert_eq!(code, 0, "{out}\nlog:\n{log}");
}

/// Disk full, simulated with RLIMIT_FSIZE (a loop-mounted filesystem needs
/// privileges a container may not have): audit writes fail with EFBIG
/// (SIGXFSZ is ignored by sinkhole), are counted, DNS keeps answering, and
/// once the limit is raised (prlimit on the running process) hits are
/// written again; the log then verifies, the loss explained by a `lost`
/// record.
#[test]
fn audit_disk_full_keeps_serving_counts_and_recovers() {
    use std::os::unix::process::CommandExt;
    const LIMIT: u64 = 64 * 1024;
    let up = Upstream::start();
    let keep = tempfile::tempdir().expect("tempdir");
    let audit = keep.path().join("audit");
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config(&format!(
            "[audit]\npath = \"{}\"\nmax_file_bytes = 16777216\nfsync_every_ms = 0",
            audit.display()
        ))
        .metrics()
        .customize(|cmd| {
            // The limit covers every file sinkhole writes; its stderr log
            // (sinkhole.log) stays far below it.
            // SAFETY: setrlimit is async-signal-safe and touches no memory
            // of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    let lim = libc::rlimit {
                        rlim_cur: LIMIT,
                        rlim_max: libc::RLIM_INFINITY,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
        .start();
    let maddr = s.metrics();
    // Each hit is a few hundred bytes: 64 KiB fills after a few hundred.
    let errors = wait_for(Duration::from_secs(60), || {
        blocked_burst(&s, 50);
        metric(maddr, "sinkhole_audit_write_errors_total", &[]).filter(|v| *v > 0.0)
    });
    assert!(errors.is_some(), "write errors counted; log:\n{}", s.log());
    let mut s = s;
    assert!(s.try_exit_status().is_none(), "still running (no SIGXFSZ)");
    let log = s.log();
    assert!(
        log.contains("audit log write failed") && log.contains("File too large"),
        "logged; log:\n{log}"
    );
    assert_eq!(rcode(&udp(&s, "blocked.example.", RecordType::A, false)), 3);
    assert_eq!(
        a_records(&udp(&s, "fine.example.", RecordType::A, false)),
        vec![UP_V4]
    );

    // Space again: lift the limit on the running process.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit with a valid pid and a valid new-limit struct.
    let rc = unsafe {
        libc::prlimit(
            s.pid() as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &unlimited,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let written_then = metric(maddr, "sinkhole_audit_records_written_total", &[]).unwrap_or(0.0);
    let recovered = wait_for(Duration::from_secs(15), || {
        blocked_burst(&s, 5);
        metric(maddr, "sinkhole_audit_records_written_total", &[])
            .filter(|v| *v > written_then + 10.0)
    });
    assert!(
        recovered.is_some(),
        "audit log recovered; log:\n{}",
        s.log()
    );
    let lost = metric(maddr, "sinkhole_audit_records_lost_total", &[]).unwrap_or(0.0);
    let log = s.log();
    let status = s.stop().expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}; log:\n{log}");
    let (code, out) = audit_verify(&audit);
    assert_eq!(
        code, 0,
        "verify after a full disk (lost {lost}):\n{out}\nlog:\n{log}"
    );
}

/// The list directory is deleted under the running server: it keeps
/// serving the lists it has, the failed reload is logged and counted as
/// `reason="io"`, and a SIGHUP after the directory is back loads it.
#[test]
fn list_directory_deleted_keeps_serving_and_recovers() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr]).lists(LISTS).metrics().start();
    let maddr = s.metrics();
    let lists = s.list_dir();
    std::fs::remove_dir_all(&lists).expect("delete the list directory");
    let failures = wait_for(Duration::from_secs(5), || {
        metric(
            maddr,
            "sinkhole_list_reload_failures_total",
            &[("reason", "io")],
        )
        .filter(|v| *v >= 1.0)
    });
    assert!(failures.is_some(), "counted as io; log:\n{}", s.log());
    assert!(
        s.log().contains("list reload rejected"),
        "logged; log:\n{}",
        s.log()
    );
    // The lists in force stay in force.
    assert_eq!(rcode(&udp(&s, "blocked.example.", RecordType::A, false)), 3);
    assert_eq!(
        a_records(&udp(&s, "fine.example.", RecordType::A, false)),
        vec![UP_V4]
    );

    // Fixed (with one more rule), and reloaded.
    std::fs::create_dir(&lists).expect("recreate");
    std::fs::write(
        lists.join("block.txt"),
        "blocked.example\nnew-blocked.example\n",
    )
    .expect("list");
    s.signal(libc::SIGHUP);
    let applied = wait_for(Duration::from_secs(5), || {
        let m = udp(&s, "new-blocked.example.", RecordType::A, false);
        (rcode(&m) == 3).then_some(())
    });
    assert!(applied.is_some(), "reloaded; log:\n{}", s.log());
    assert_eq!(rcode(&udp(&s, "blocked.example.", RecordType::A, false)), 3);
}

// ------------------------------------------------------------ shutdown

/// SIGTERM with queries in flight: a UDP and a TCP query waiting for a
/// slow upstream get their answers, one the upstream never answers gets
/// SERVFAIL at the timeout, the process exits 0 within 5 s, and the audit
/// log verifies with every hit in it.
#[test]
fn sigterm_answers_in_flight_flushes_audit_and_exits_0() {
    let up = Upstream::start();
    up.set(Fault::Slow(Duration::from_millis(400)));
    let keep = tempfile::tempdir().expect("tempdir");
    let audit = keep.path().join("audit");
    let s = Server::builder(&[up.addr])
        .lists(LISTS)
        .config(&format!(
            "[audit]\npath = \"{}\"\nfsync_every_ms = 60000",
            audit.display()
        ))
        .start();
    blocked_burst(&s, 20);
    let answered = ask_async(s.addr, "slowanswer.example.");
    let unanswered = ask_async(s.addr, "noanswer.example.");
    let addr = s.addr;
    let over_tcp = std::thread::spawn(move || {
        let mut c = tcp_connect_from(Ipv4Addr::LOCALHOST, addr).expect("tcp");
        tcp_query_on(
            &mut c,
            &query_msg("tcpslow.example.", RecordType::A, false),
            Duration::from_secs(4),
        )
    });
    // All three in flight at the upstream before the signal.
    for name in ["slowanswer.example", "noanswer.example", "tcpslow.example"] {
        up.await_query(name, "udp");
    }
    let t0 = Instant::now();
    let log_before = s.log();
    let status = s.stop().expect("exited within 10 s");
    let took = t0.elapsed();
    assert!(status.success(), "{status:?}; log:\n{log_before}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    let (m, _) = answered.join().expect("join");
    let m = m.expect("in-flight UDP query answered");
    assert_eq!(a_records(&m), vec![UP_V4]);
    let m = over_tcp
        .join()
        .expect("join")
        .expect("in-flight TCP query answered");
    assert_eq!(a_records(&m), vec![UP_V4]);
    let (m, _) = unanswered.join().expect("join");
    assert_eq!(rcode(&m.expect("SERVFAIL, not silence")), 2);

    // fsync_every_ms is a minute: only the shutdown flush wrote and synced these.
    let (code, out) = audit_verify(&audit);
    assert_eq!(code, 0, "{out}");
    let text: String = std::fs::read_dir(&audit)
        .expect("audit dir")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    for i in 0..20 {
        assert!(
            text.contains(&format!("\"qname\":\"q{i}.blocked.example\"")),
            "hit {i} in the log"
        );
    }
}
