//! Reload under load (issue 4): the real server with a 100,000-name list in
//! a watched directory, four UDP clients querying all the time (one query
//! in flight each, at most one a millisecond), and 50 pushes
//! (write a temp file, rename it over the list) alternating between two
//! versions that differ by a few thousand names.
//!
//! Checked: no query goes unanswered (one send each, no retries, 3 s to
//! answer); names in both versions are always blocked, names in neither
//! always get the upstream's answer; a name in only one version may go
//! either way while a push is being applied, but once a version's sentinel
//! has been seen blocked every later query must match that version or a
//! later one. How long each push took to be enforced is printed; the
//! one-second bound is asserted in the `reload` module.

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

/// Names in each version of the list.
const N: usize = 100_000;
/// Names only in version A, and as many only in version B.
const CHANGED: usize = 1_500;
/// Pushes, alternating B, A, B, …
const RELOADS: usize = 50;
/// Names in both versions: the rest after the changed names and the sentinel.
const COMMON: usize = N - CHANGED - 1;
/// Client threads, each with one query in flight at a time.
const CLIENTS: usize = 4;
/// Each client starts a query at most this often. Unpaced, four debug-build
/// clients keep a two-core machine busy on their own (~11,000 queries/s),
/// and the reload thread gets what is left.
const PACE: Duration = Duration::from_millis(1);
/// How long a query may take to be answered before it counts as lost.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// Bound on waiting for one push to be enforced (generous: a debug build
/// recompiling 100,000 names on a loaded two-core machine).
const ENFORCE_WITHIN: Duration = Duration::from_secs(60);

const NXDOMAIN: u16 = 3;
const NOERROR: u16 = 0;

/// Version 0 is what the server starts with; push `k` writes version `k`.
/// Even versions are "A", odd ones "B": `bodies[k % 2]` plus the sentinel.
fn list_bodies() -> [String; 2] {
    ['a', 'b'].map(|side| {
        let mut s = String::with_capacity(N * 16);
        for i in 0..COMMON {
            let _ = writeln!(s, "c{i}.example");
        }
        for i in 0..CHANGED {
            let _ = writeln!(s, "{side}{i}.example");
        }
        s
    })
}

/// The full text of `version`.
fn list_text(bodies: &[String; 2], version: usize) -> String {
    format!("{}{}\n", bodies[version % 2], sentinel(version))
}

/// The name only `version` lists, polled to see that it is in force.
fn sentinel(version: usize) -> String {
    format!("s{version}.sentinel.example")
}

/// Write beside and rename over, as a ministry push does (`*.tmp` files
/// are never read as lists). Returns the instant just before the rename:
/// the new version cannot be in force before it.
fn push(path: &Path, text: &str) -> Instant {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp list");
    let at = Instant::now();
    std::fs::rename(&tmp, path).expect("rename list into place");
    at
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// In both versions (the name itself or a name below it).
    Common,
    /// In neither: the upstream's answer.
    Free,
    /// Only in version A (even versions) or only in B (odd).
    OnlyA,
    OnlyB,
}

/// A query to a name in only one version, kept for checking after the run.
#[derive(Clone, Copy, Debug)]
struct Changed {
    sent: Instant,
    answered: Instant,
    only_a: bool,
    blocked: bool,
    name_index: usize,
}

#[derive(Default)]
struct ClientLog {
    sent: u64,
    by_class: [u64; 4],
    lost: Vec<(String, Instant)>,
    wrong: Vec<String>,
    changed: Vec<Changed>,
}

/// What the n-th query of client `c` asks.
fn pick(c: usize, n: usize) -> (Class, String, usize) {
    let k = n * CLIENTS + c;
    let i = k / 5;
    match k % 5 {
        0 => (
            Class::Common,
            format!("c{}.example", (i * 7919) % COMMON),
            0,
        ),
        1 => (
            Class::Common,
            format!("www.c{}.example", (i * 104_729) % COMMON),
            0,
        ),
        2 => (Class::Free, format!("free{}.example", i % 500), 0),
        3 => (
            Class::OnlyA,
            format!("a{}.example", i % CHANGED),
            i % CHANGED,
        ),
        _ => (
            Class::OnlyB,
            format!("b{}.example", i % CHANGED),
            i % CHANGED,
        ),
    }
}

/// One query on `sock`, sent once; the answer with its ID, or None after
/// [`ANSWER_WITHIN`]. Replies to earlier (lost) queries are ignored:
/// the ID and the question must match.
fn ask(sock: &UdpSocket, id: u16, name: &str) -> Option<(Message, Instant)> {
    let mut q = query_msg(name, RecordType::A, false);
    q.metadata.id = id;
    let bytes = q.to_vec().expect("encode query");
    sock.send(&bytes).expect("send query");
    let deadline = Instant::now() + ANSWER_WITHIN;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left)).expect("set timeout");
        let Ok(n) = sock.recv(&mut buf) else {
            continue;
        };
        let at = Instant::now();
        if let Ok(m) = Message::from_vec(&buf[..n])
            && m.metadata.id == id
            && m.queries.first().is_some_and(|q| {
                q.name()
                    .to_ascii()
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(name)
            })
        {
            return Some((m, at));
        }
    }
}

/// Client `c`: query until `stop`, one at a time, checking each answer
/// against its class.
fn client(c: usize, server: SocketAddr, stop: Arc<AtomicBool>) -> ClientLog {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    sock.connect(server).expect("connect client");
    let mut log = ClientLog::default();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (class, name, index) = pick(c, n);
        n += 1;
        let sent = Instant::now();
        log.sent += 1;
        log.by_class[class as usize] += 1;
        let Some((m, answered)) = ask(&sock, n as u16, &name) else {
            log.lost.push((name, sent));
            continue;
        };
        if let Some(rest) = (sent + PACE).checked_duration_since(Instant::now()) {
            std::thread::sleep(rest);
        }
        let code = rcode(&m);
        let upstream_answer = code == NOERROR && a_records(&m) == [UP_V4];
        let ok = match class {
            Class::Common => code == NXDOMAIN,
            Class::Free => upstream_answer,
            Class::OnlyA | Class::OnlyB => {
                log.changed.push(Changed {
                    sent,
                    answered,
                    only_a: class == Class::OnlyA,
                    blocked: code == NXDOMAIN,
                    name_index: index,
                });
                code == NXDOMAIN || upstream_answer
            }
        };
        if !ok && log.wrong.len() < 20 {
            log.wrong.push(format!(
                "{name} ({class:?}): rcode {code}, answers {:?}",
                a_records(&m)
            ));
        }
    }
    log
}

/// The versions that may have answered a query sent at `sent` and answered
/// at `answered`: at least the last one seen enforced before it was sent,
/// at most the last one pushed before it was answered.
fn possible_versions(
    sent: Instant,
    answered: Instant,
    pushed: &[Instant],
    seen: &[Instant],
) -> (usize, usize) {
    let lo = seen.iter().rposition(|&t| t <= sent).unwrap_or(0);
    let hi = pushed.iter().rposition(|&t| t < answered).unwrap_or(0);
    (lo, hi.max(lo))
}

/// Poll the sentinel of `version` until it is blocked; the instant the
/// blocked answer arrived. Unanswered polls count as lost queries.
fn wait_enforced(s: &Server, sock: &UdpSocket, version: usize, lost: &mut Vec<String>) -> Instant {
    let name = sentinel(version);
    let t0 = Instant::now();
    let mut id = 0u16;
    loop {
        id = id.wrapping_add(1);
        match ask(sock, id, &name) {
            Some((m, at)) if rcode(&m) == NXDOMAIN => return at,
            Some(_) => {}
            None => lost.push(format!("poll {name}")),
        }
        if t0.elapsed() > ENFORCE_WITHIN {
            let log = s.log();
            let tail = &log[log.len().saturating_sub(4000)..];
            panic!("version {version} not enforced within {ENFORCE_WITHIN:?}; log tail:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The values of `key=` on the server's log lines containing `message`
/// (ANSI colour codes stripped).
fn logged_ms(log: &str, message: &str, key: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for line in log.lines().filter(|l| l.contains(message)) {
        let mut plain = String::with_capacity(line.len());
        let mut chars = line.chars();
        while let Some(ch) = chars.next() {
            if ch == '\u{1b}' {
                // CSI: ESC [ parameters final-byte
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                plain.push(ch);
            }
        }
        let Some(at) = plain.find(&format!("{key}=")) else {
            continue;
        };
        let digits: String = plain[at + key.len() + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(v) = digits.parse() {
            out.push(v);
        }
    }
    out
}

#[test]
fn reload_under_load_loses_nothing_and_answers_from_old_or_new() {
    // The load is the point here; other servers' timing checks run apart.
    let _alone = gate::exclusive();
    let up = Upstream::start();
    let bodies = list_bodies();
    let v0 = list_text(&bodies, 0);
    // The audit log goes beside the lists (not in the watched directory),
    // so the server log stays readable.
    let s = Server::builder(&[up.addr])
        .lists(&[("gov.txt", &v0)])
        .config("[audit]\npath = \"{lists}/../audit\"")
        .start();
    let list = s.list_dir().join("gov.txt");
    let poll = UdpSocket::bind("127.0.0.1:0").expect("bind poller");
    poll.connect(s.addr).expect("connect poller");
    let mut lost_polls = Vec::new();

    // pushed[k] / seen[k]: version k written / first seen enforced.
    let mut pushed = vec![Instant::now()];
    let mut seen = vec![wait_enforced(&s, &poll, 0, &mut lost_polls)];

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let stop = stop.clone();
            let addr = s.addr;
            std::thread::spawn(move || client(c, addr, stop))
        })
        .collect();
    let mut stale_sentinel = Vec::new();

    let run = Instant::now();
    let mut took = Vec::with_capacity(RELOADS);
    for version in 1..=RELOADS {
        let text = list_text(&bodies, version);
        let at = push(&list, &text);
        pushed.push(at);
        let enforced = wait_enforced(&s, &poll, version, &mut lost_polls);
        seen.push(enforced);
        took.push(enforced.duration_since(at));
        // Exactly this version now: the previous sentinel is gone.
        match ask(&poll, 0xfff0, &sentinel(version - 1)) {
            Some((m, _)) if rcode(&m) == NOERROR => {}
            Some((m, _)) => stale_sentinel.push(format!(
                "{} rcode {} with version {version} in force",
                sentinel(version - 1),
                rcode(&m)
            )),
            None => lost_polls.push(format!("poll {}", sentinel(version - 1))),
        }
        // Let the clients see this version alone for a moment.
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = run.elapsed();
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<ClientLog> = clients
        .into_iter()
        .map(|h| h.join().expect("client thread panicked"))
        .collect();

    // Report first, so a failing run still shows its numbers.
    let sent: u64 = logs.iter().map(|l| l.sent).sum();
    let mut by_class = [0u64; 4];
    for l in &logs {
        for (t, x) in by_class.iter_mut().zip(l.by_class) {
            *t += x;
        }
    }
    let mut sorted = took.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    eprintln!(
        "reload under load: {RELOADS} pushes of {N} names in {run:.1?}; {sent} queries \
         ({:.0}/s; common {}, free {}, only-A {}, only-B {}); enforced after push: \
         median {median:?}, max {max:?}, min {:?}",
        sent as f64 / run.as_secs_f64(),
        by_class[0],
        by_class[1],
        by_class[2],
        by_class[3],
        sorted[0],
    );
    eprintln!("enforcement times (ms): {:?}", {
        let ms: Vec<u128> = took.iter().map(|d| d.as_millis()).collect();
        ms
    });
    let mut server_ms = logged_ms(&s.log(), "lists reloaded", "took_ms");
    server_ms.sort();
    if let (Some(first), Some(last)) = (server_ms.first(), server_ms.last()) {
        eprintln!(
            "server-side reload (settle + parse + compile + swap), {} reloads: \
             min {first} ms, median {} ms, max {last} ms",
            server_ms.len(),
            server_ms[server_ms.len() / 2]
        );
    }

    let lost: Vec<String> = logs
        .iter()
        .flat_map(|l| &l.lost)
        .map(|(name, at)| {
            let after = pushed.iter().rposition(|&p| p <= *at).unwrap_or(0);
            format!(
                "{name} sent {:?} after push {after}",
                at.duration_since(pushed[after])
            )
        })
        .chain(lost_polls.iter().cloned())
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {sent} queries unanswered within {ANSWER_WITHIN:?}: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    let wrong: Vec<&String> = logs.iter().flat_map(|l| &l.wrong).collect();
    assert!(wrong.is_empty(), "wrong answers: {wrong:?}");
    assert!(stale_sentinel.is_empty(), "{stale_sentinel:?}");

    // Names in one version only: consistent with a version that may have
    // been in force while the query was being answered.
    let mut checked_strict = 0usize;
    let mut bad = Vec::new();
    for c in logs.iter().flat_map(|l| &l.changed) {
        let (lo, hi) = possible_versions(c.sent, c.answered, &pushed, &seen);
        // Version v lists the A names when v is even.
        let fits = (lo..=hi).any(|v| ((v % 2 == 0) == c.only_a) == c.blocked);
        if lo == hi {
            checked_strict += 1;
        }
        if !fits && bad.len() < 20 {
            bad.push(format!(
                "{}{}.example blocked={} sent {:?} after push {lo}, versions {lo}..={hi} possible",
                if c.only_a { 'a' } else { 'b' },
                c.name_index,
                c.blocked,
                c.sent.duration_since(pushed[lo]),
            ));
        }
    }
    assert!(bad.is_empty(), "answers from no possible version: {bad:?}");
    assert!(
        checked_strict > 0,
        "no query fell in a window with one version in force"
    );
    eprintln!("{checked_strict} answers to changed names checked against exactly one version");
    assert!(
        max < ENFORCE_WITHIN,
        "slowest push took {max:?} to be enforced"
    );
}
