//! Hot reload through the running server: a pushed list is enforced within
//! a second (rename over, in-place edit, new file, deleted file, SIGHUP,
//! `sinkhole reload`), a broken push is refused and the last good list
//! keeps serving, also across a restart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use hickory_proto::rr::RecordType;

const NXDOMAIN: u16 = 3;
const NOERROR: u16 = 0;

/// `n` names `{prefix}0.example` … one per line.
fn names(prefix: &str, n: usize) -> String {
    (0..n).map(|i| format!("{prefix}{i}.example\n")).collect()
}

/// Write beside and rename over, as a ministry push does.
fn push(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// The rcode of an A query for `name` over UDP.
fn rcode_of(server: &Server, name: &str) -> u16 {
    rcode(&udp(server, name, RecordType::A, false))
}

/// Poll until every (name, rcode) holds; the time it took, or a panic
/// naming what did not change after `limit`.
fn wait_for(server: &Server, want: &[(&str, u16)], limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let got: Vec<u16> = want.iter().map(|(n, _)| rcode_of(server, n)).collect();
        if got.iter().zip(want).all(|(g, (_, w))| g == w) {
            return t0.elapsed();
        }
        if t0.elapsed() > limit {
            panic!(
                "after {:?}: wanted {want:?}, got {got:?}\nlog:\n{}",
                t0.elapsed(),
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The list every test starts from: `old.example` and 20 `keepN.example`.
fn base_list() -> String {
    format!("old.example\n{}", names("keep", 20))
}

#[test]
fn renamed_list_is_enforced_within_a_second() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(&[("gov.txt", &base_list())])
        .start();
    assert_eq!(rcode_of(&s, "new.example"), NOERROR);
    assert_eq!(rcode_of(&s, "www.old.example"), NXDOMAIN);
    let list = s.list_dir().join("gov.txt");
    push(&list, &format!("new.example\n{}", names("keep", 20)));
    let took = wait_for(
        &s,
        &[
            ("new.example", NXDOMAIN),
            ("www.new.example", NXDOMAIN),
            ("old.example", NOERROR),
        ],
        Duration::from_secs(5),
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(rcode_of(&s, "keep7.example"), NXDOMAIN);
}

#[test]
fn in_place_edit_new_file_and_deleted_file() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(&[
            ("gov.txt", &base_list()),
            ("extra.txt", "extra-old.example\n"),
        ])
        .start();
    // In-place append (an editor saving over the same inode).
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(s.list_dir().join("gov.txt"))
            .expect("open");
        f.write_all(b"appended.example\n").expect("append");
    }
    let took = wait_for(
        &s,
        &[("appended.example", NXDOMAIN)],
        Duration::from_secs(5),
    );
    assert!(took < Duration::from_secs(1), "edit took {took:?}");

    // A new file in the watched directory.
    std::fs::write(s.list_dir().join("court.txt"), "court.example\n").expect("write");
    let took = wait_for(&s, &[("court.example", NXDOMAIN)], Duration::from_secs(5));
    assert!(took < Duration::from_secs(1), "new file took {took:?}");

    // A deleted file: its names are answered from upstream again.
    assert_eq!(rcode_of(&s, "extra-old.example"), NXDOMAIN);
    std::fs::remove_file(s.list_dir().join("extra.txt")).expect("rm");
    let took = wait_for(
        &s,
        &[("extra-old.example", NOERROR)],
        Duration::from_secs(5),
    );
    assert!(took < Duration::from_secs(1), "delete took {took:?}");
    assert_eq!(rcode_of(&s, "court.example"), NXDOMAIN);
}

#[test]
fn sighup_reloads_when_watching_is_off() {
    let up = Upstream::start();
    let s = Server::builder(&[up.addr])
        .lists(&[("gov.txt", &base_list())])
        .config("watch = false")
        .start();
    push(
        &s.list_dir().join("gov.txt"),
        &format!("{}hup.example\n", base_list()),
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        rcode_of(&s, "hup.example"),
        NOERROR,
        "not watching: nothing changes yet"
    );
    s.signal(libc::SIGHUP);
    let took = wait_for(&s, &[("hup.example", NXDOMAIN)], Duration::from_secs(5));
    assert!(took < Duration::from_secs(1), "SIGHUP took {took:?}");
    assert!(s.log().contains("SIGHUP"), "{}", s.log());
}

/// `sinkhole reload --socket SOCKET EXTRA…`: exit code, stdout then stderr.
fn reload_cmd(socket: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sinkhole"))
        .arg("reload")
        .arg("--socket")
        .arg(socket)
        .args(extra)
        .output()
        .expect("run sinkhole reload");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn reload_command_applies_and_guards_reject() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("control.sock");
    let s = Server::builder(&[up.addr])
        .lists(&[("gov.txt", &base_list())])
        .config("watch = false")
        .server_keys(&format!("control_socket = \"{}\"", socket.display()))
        .start();
    let list = s.list_dir().join("gov.txt");
    push(
        &list,
        &format!("{}cmd.example\nnot a valid line\n", base_list()),
    );
    let t0 = Instant::now();
    let (code, out) = reload_cmd(&socket, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reloaded: version 2"), "{out}");
    assert!(out.contains("names=22"), "{out}");
    assert!(out.contains("gov.txt:23: "), "skipped line reported: {out}");
    assert_eq!(rcode_of(&s, "cmd.example"), NXDOMAIN);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t0.elapsed()
    );

    // A truncated push is refused; the old list keeps serving.
    push(&list, "keep1.example\n");
    let (code, out) = reload_cmd(&socket, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rejected (shrink)"), "{out}");
    assert!(out.contains("version 2 stays in force"), "{out}");
    assert_eq!(rcode_of(&s, "keep15.example"), NXDOMAIN);
    assert_eq!(rcode_of(&s, "cmd.example"), NXDOMAIN);

    // --force applies it anyway.
    let (code, out) = reload_cmd(&socket, &["--force"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(forced)"), "{out}");
    assert_eq!(rcode_of(&s, "keep15.example"), NOERROR);
    assert_eq!(rcode_of(&s, "keep1.example"), NXDOMAIN);
}

#[test]
fn restart_serves_the_last_good_snapshot_when_lists_are_broken() {
    let up = Upstream::start();
    let state = tempfile::tempdir().expect("tempdir");
    let extra = format!("state_dir = \"{}\"", state.path().display());
    let s = Server::builder(&[up.addr])
        .lists(&[("gov.txt", &base_list())])
        .config(&extra)
        .start();
    assert_eq!(rcode_of(&s, "old.example"), NXDOMAIN);
    assert!(
        s.stop().is_some_and(|st| st.success()),
        "clean exit on SIGTERM"
    );
    assert!(state.path().join("last-good.snapshot").exists());

    // Restart with the list cut to one name (a truncated push while the
    // server was down): the saved version serves at once, the guard
    // refuses the new files, and the log says so loudly.
    let s = Server::builder(&[up.addr])
        .lists(&[("gov.txt", "keep1.example\n")])
        .config(&extra)
        .start();
    let took = wait_for(
        &s,
        &[("keep15.example", NXDOMAIN), ("old.example", NXDOMAIN)],
        Duration::from_secs(5),
    );
    assert!(took < Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.log().contains("SERVING THE LAST GOOD SNAPSHOT") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        s.log().contains("SERVING THE LAST GOOD SNAPSHOT"),
        "{}",
        s.log()
    );
}
