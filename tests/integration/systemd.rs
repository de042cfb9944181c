//! Packaging and systemd integration: the unit verifies and keeps its
//! hardening, its syscall filter admits every syscall sinkhole makes, the
//! sysusers entry creates the account, the example configuration is valid
//! and documents every key, `make install` lays out the expected files, and
//! (`make deb-check`) the Debian package holds them.
//!
//! `systemd-analyze`, `systemd-sysusers` (Debian's `systemd`) and `strace`
//! are installed by `make test`'s test-deps; without them these tests fail
//! and say so rather than pass without checking anything.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use hickory_proto::rr::RecordType;

const UNIT: &str = "systemd/sinkhole.service";
const SYSUSERS: &str = "systemd/sinkhole.sysusers";
const EXAMPLE: &str = "systemd/sinkhole.toml.example";

/// The repository root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary under test.
fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sinkhole")
}

/// A file of the repository, by relative path.
fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Run a tool the Makefile's test-deps installs; a missing one is a failure
/// with the fix in the message.
fn tool(cmd: &str, args: &[&str]) -> Output {
    match Command::new(cmd).args(args).stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{cmd}` not found: install Debian's `{}` package (`make test` does, as root)",
            if cmd == "strace" { "strace" } else { "systemd" }
        ),
        Err(e) => panic!("{cmd}: {e}"),
    }
}

/// stdout then stderr of a finished command.
fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `Key=value` assignments of the unit, in order (a key may repeat).
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Every value of `key`, in order.
fn values<'a>(s: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    s.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The unit with its paths pointing at the binary under test.
fn unit_for_test(dir: &Path) -> PathBuf {
    let unit = read(UNIT).replace("/usr/bin/sinkhole", bin());
    let path = dir.join("sinkhole.service");
    std::fs::write(&path, unit).expect("write unit copy");
    path
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let o = tool("systemd-analyze", &["verify", unit.to_str().unwrap()]);
    // Warnings (unknown keys, bad values) do not always change the exit
    // status, so any output at all is a failure too.
    assert!(
        o.status.success() && text(&o).trim().is_empty(),
        "systemd-analyze verify {}:\n{}",
        unit.display(),
        text(&o)
    );
}

#[test]
fn unit_keeps_its_contract_and_hardening() {
    let s = unit_settings(&read(UNIT));
    let one = |k: &str| -> &str {
        let v = values(&s, k);
        assert_eq!(v.len(), 1, "{k} should be set once: {v:?}");
        v[0]
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(
        one("ExecStartPre"),
        "/usr/bin/sinkhole serve --check-config --config /etc/sinkhole/sinkhole.toml"
    );
    assert_eq!(
        one("ExecStart"),
        "/usr/bin/sinkhole serve --config /etc/sinkhole/sinkhole.toml"
    );
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("User"), "sinkhole");
    assert_eq!(one("Group"), "sinkhole");
    // Port 53 and nothing else.
    assert_eq!(one("AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    assert_eq!(one("CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    for dir in [
        "StateDirectory",
        "LogsDirectory",
        "ConfigurationDirectory",
        "RuntimeDirectory",
    ] {
        assert_eq!(one(dir), "sinkhole", "{dir}");
    }
    assert_eq!(one("WatchdogSec"), "30s");
    assert_eq!(one("Restart"), "on-failure");
    let nofile: u64 = one("LimitNOFILE").parse().expect("LimitNOFILE number");
    assert!(nofile >= 65536, "{nofile}");
    for key in [
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ] {
        assert_eq!(one(key), "yes", "{key}");
    }
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("SystemCallArchitectures"), "native");
    assert_eq!(
        one("RestrictAddressFamilies"),
        "AF_UNIX AF_INET AF_INET6 AF_NETLINK"
    );
    assert_eq!(
        values(&s, "SystemCallFilter"),
        vec!["@system-service", "~@privileged @resources", "setpriority"]
    );

    // The account the unit runs as is the one sysusers creates.
    let sysusers = read(SYSUSERS);
    let user_line = sysusers
        .lines()
        .find(|l| l.starts_with("u "))
        .expect("a `u` line");
    assert_eq!(user_line.split_whitespace().nth(1), Some("sinkhole"));
}

#[test]
fn sysusers_entry_creates_the_account() {
    let root = tempfile::tempdir().unwrap();
    // An empty system: sysusers needs /etc to lock the account databases.
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let conf = repo().join(SYSUSERS);
    let o = tool(
        "systemd-sysusers",
        &[
            &format!("--root={}", root.path().display()),
            conf.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "systemd-sysusers:\n{}", text(&o));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("sinkhole:"))
        .unwrap_or_else(|| panic!("no sinkhole user in\n{passwd}"));
    let f: Vec<&str> = entry.split(':').collect();
    assert_eq!(f[5], "/var/lib/sinkhole", "{entry}");
    assert_eq!(f[6], "/usr/sbin/nologin", "{entry}");
    let uid: u32 = f[2].parse().unwrap();
    assert!(uid < 1000, "a system account: {entry}");
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("sinkhole:")), "{group}");
}

/// The example with an explicit upstream, so the check does not depend on
/// this machine's /etc/resolv.conf.
fn example_for_test(dir: &Path) -> PathBuf {
    let text = read(EXAMPLE);
    assert!(
        text.contains("\nservers = []\n"),
        "example sets `servers = []`"
    );
    let p = dir.join("sinkhole.toml");
    std::fs::write(
        &p,
        text.replace("\nservers = []\n", "\nservers = [\"192.0.2.53\"]\n"),
    )
    .unwrap();
    p
}

#[test]
fn example_config_is_valid_and_documents_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_for_test(dir.path());
    let o = Command::new(bin())
        .args(["serve", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "--check-config:\n{}", text(&o));
    let effective = String::from_utf8_lossy(&o.stdout).into_owned();
    let example = read(EXAMPLE);
    let documented = |section: &str, key: &str| {
        // `[[lists.file]]` tables are shown as `file = []` when empty.
        if section == "lists" && key == "file" {
            return example.contains("[[lists.file]]");
        }
        example
            .lines()
            .map(|l| l.trim_start_matches('#').trim_start())
            .any(|l| l.starts_with(&format!("{key} =")))
    };
    let mut section = String::new();
    let mut missing = Vec::new();
    for line in effective.lines() {
        let line = line.trim();
        if let Some(s) = line.strip_prefix('[') {
            section = s.trim_matches(|c| c == '[' || c == ']').to_string();
            if !example.contains(&format!("[{section}]")) && !section.contains('.') {
                missing.push(format!("[{section}]"));
            }
        } else if let Some((key, _)) = line.split_once(" = ") {
            if !documented(&section, key) {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys of the effective configuration not documented in {EXAMPLE}: {missing:?}"
    );
    // The packaged paths are the ones the unit makes writable/readable.
    assert!(example.contains("paths = [\"/etc/sinkhole/lists/\"]"));
    assert!(example.contains("path = \"/var/log/sinkhole\""));
}

// ------------------------------------------------------------ syscall filter

/// Expand a SystemCallFilter item (`@group` or a syscall name).
fn expand(item: &str, seen: &mut BTreeSet<String>, out: &mut BTreeSet<String>) {
    if !item.starts_with('@') {
        out.insert(item.to_string());
        return;
    }
    if !seen.insert(item.to_string()) {
        return;
    }
    let o = tool("systemd-analyze", &["syscall-filter", item]);
    assert!(o.status.success(), "syscall-filter {item}: {}", text(&o));
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') || l == item {
            continue;
        }
        expand(l, seen, out);
    }
}

/// The syscalls the unit's SystemCallFilter= lines allow. As systemd reads
/// them: the first line (an allow list here) sets the default, and each
/// later line adds (plain) or removes (`~`) in order.
fn allowed_syscalls() -> BTreeSet<String> {
    let s = unit_settings(&read(UNIT));
    let mut allow = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for v in values(&s, "SystemCallFilter") {
        let (deny, list) = match v.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, v),
        };
        let mut set = BTreeSet::new();
        for item in list.split_whitespace() {
            seen.clear();
            expand(item, &mut seen, &mut set);
        }
        if deny {
            allow.retain(|c| !set.contains(c));
        } else {
            allow.extend(set);
        }
    }
    assert!(
        allow.contains("read") && !allow.contains("setuid") && allow.contains("setpriority"),
        "expansion works"
    );
    allow
}

/// Syscall names in an `strace -f -o` trace.
fn traced_syscalls(trace: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in trace.lines() {
        // "PID name(args) = ret" or "PID <... name resumed> ..."
        let rest = line
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        let rest = rest.strip_prefix("<... ").unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let next = rest[name.len()..].chars().next();
        if !name.is_empty() && matches!(next, Some('(') | Some(' ')) {
            *out.entry(name).or_insert(0) += 1;
        }
    }
    out
}

/// `strace -f -o trace` running `args`, its output (and the traced
/// program's) in `log`.
fn strace(args: &[&str], trace: &Path, log: &Path) -> std::process::Child {
    let log = std::fs::File::create(log).expect("strace log");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o"]).arg(trace).args(args);
    match cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("strace log"))
        .stderr(log)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "`strace` not found: install Debian's `strace` package (`make test` does, as root)"
            )
        }
        Err(e) => panic!("strace: {e}"),
    }
}

/// `sinkhole serve` under `strace -f`. Dropping it (a failed assertion)
/// kills sinkhole, which strace does not do when it is killed itself, and
/// then strace.
struct Traced {
    strace: std::process::Child,
    trace: PathBuf,
}

impl Traced {
    /// sinkhole's pid: the first field of the trace's first line (strace's child).
    fn sinkhole_pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.trace)
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|p| p.parse().ok()))
    }

    /// SIGTERM to sinkhole, so the graceful shutdown path is traced too;
    /// true once strace has exited with it (within 10 s).
    fn stop(&mut self) -> bool {
        if let Some(pid) = self.sinkhole_pid() {
            common::signal(pid, libc::SIGTERM);
        }
        let strace = &mut self.strace;
        common::wait_for(Duration::from_secs(10), || strace.try_wait().ok().flatten()).is_some()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if self.strace.try_wait().ok().flatten().is_none() {
            if let Some(pid) = self.sinkhole_pid() {
                // SAFETY: kill(2) has no memory effects on this process.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            let _ = self.strace.kill();
        }
        let _ = self.strace.wait();
    }
}

/// Under the unit a syscall outside SystemCallFilter= kills the service
/// (SIGSYS), and nothing but a real systemd would notice: so trace what
/// sinkhole calls while it starts, checks its config, answers blocked and
/// forwarded queries over UDP and TCP and shuts down, and compare.
#[test]
fn syscall_filter_admits_every_syscall_sinkhole_makes() {
    let allowed = allowed_syscalls();
    let up = common::Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    std::fs::create_dir(&lists).unwrap();
    std::fs::write(lists.join("block.txt"), "blocked.example\n").unwrap();
    // Blocks go to a real audit directory, so file writes, fsync and
    // rotation are traced too (as under the unit's LogsDirectory=).
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).unwrap();
    let cfg = dir.path().join("sinkhole.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\n[upstream]\nservers = [\"{}\"]\ntimeout_ms = 800\n[lists]\npaths = [\"{}\"]\n[audit]\npath = \"{}\"\nfsync_every_ms = 0\n",
            up.addr,
            lists.display(),
            audit.display()
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();

    let check_trace = dir.path().join("check.trace");
    let status = strace(
        &[bin(), "serve", "--check-config", "--config", cfg_s],
        &check_trace,
        &dir.path().join("check.log"),
    )
    .wait()
    .unwrap();
    assert!(status.success(), "--check-config under strace failed");

    let serve_trace = dir.path().join("serve.trace");
    let serve_log = dir.path().join("serve.log");
    let ready = dir.path().join("ready");
    let mut traced = Traced {
        strace: strace(
            &[
                bin(),
                "serve",
                "--config",
                cfg_s,
                "--ready-file",
                ready.to_str().unwrap(),
            ],
            &serve_trace,
            &serve_log,
        ),
        trace: serve_trace.clone(),
    };
    let log = || std::fs::read_to_string(&serve_log).unwrap_or_default();
    let addr = common::await_ready_file(&ready, &mut traced.strace, common::server::READY_WITHIN)
        .unwrap_or_else(|why| {
            panic!(
                "sinkhole under strace did not start: {why}; log:\n{}",
                log()
            )
        })
        .first("dns");
    for name in [
        "blocked.example.",
        "www.forwarded.example.",
        "nx.gone.example.",
    ] {
        let q = common::query_msg(name, RecordType::A, true);
        assert!(
            common::try_query_udp(addr, &q, Duration::from_secs(3)).is_some(),
            "{name}"
        );
    }
    let qs = [
        common::query_msg("blocked.example.", RecordType::AAAA, false),
        common::query_msg("tcp.forwarded.example.", RecordType::A, false),
    ];
    assert_eq!(common::tcp_pipelined(addr, &qs).len(), 2);
    // A push, so the reload path (diff, layer, background merge at a
    // lower priority) is traced too.
    std::fs::write(
        lists.join(".block.tmp"),
        "blocked.example\npushed.example\n",
    )
    .unwrap();
    std::fs::rename(lists.join(".block.tmp"), lists.join("block.txt")).unwrap();
    let q = common::query_msg("pushed.example.", RecordType::A, false);
    common::wait_for(Duration::from_secs(10), || {
        let r = common::try_query_udp(addr, &q, Duration::from_millis(500));
        (r.as_ref().map(common::rcode) == Some(3)).then_some(())
    });
    // Let the merge finish under the trace (stopping would wait for it too).
    common::wait_for(Duration::from_secs(10), || {
        log()
            .contains("incremental reload merged and saved")
            .then_some(())
    });
    assert!(
        traced.stop(),
        "sinkhole under strace did not exit on SIGTERM; log:\n{}",
        log()
    );

    let mut used = traced_syscalls(&std::fs::read_to_string(&check_trace).unwrap());
    for (k, n) in traced_syscalls(&std::fs::read_to_string(&serve_trace).unwrap()) {
        *used.entry(k).or_insert(0) += n;
    }
    assert!(
        used.contains_key("recvmmsg") || used.contains_key("recvfrom"),
        "the trace saw the query path: {used:?}"
    );
    let hits = std::fs::read_dir(&audit)
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    assert!(hits > 0, "the audit log was written");
    assert!(
        used.contains_key("fsync") || used.contains_key("fdatasync"),
        "{used:?}"
    );
    assert!(
        used.contains_key("setpriority"),
        "the trace saw the push's background merge: {used:?}"
    );
    let denied: Vec<_> = used.keys().filter(|k| !allowed.contains(*k)).collect();
    assert!(
        denied.is_empty(),
        "sinkhole makes syscalls the unit's SystemCallFilter denies (the service would be killed): {denied:?}"
    );
}

// ------------------------------------------------------------ make install

/// Every file below `root`, as absolute paths inside it (`/usr/bin/…`).
fn files_under(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.insert(format!("/{}", rel.display()));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// `make install DESTDIR=… BIN=<binary under test> EXTRA…`, which must succeed.
fn make_install(destdir: &Path, extra: &[&str]) -> Output {
    let o = Command::new("make")
        .current_dir(repo())
        .arg("--no-print-directory")
        .arg("install")
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("BIN={}", bin()))
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("make");
    assert!(o.status.success(), "make install:\n{}", text(&o));
    o
}

/// The permission bits of `p`.
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn make_install_lays_out_the_package() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    make_install(d, &[]);
    let got = files_under(d);
    for want in [
        "/usr/bin/sinkhole",
        "/lib/systemd/system/sinkhole.service",
        "/usr/lib/sysusers.d/sinkhole.conf",
        "/etc/sinkhole/sinkhole.toml",
        "/etc/sinkhole/lists/sample-crypto.txt",
        "/etc/sinkhole/lists/sample-registry.csv",
        "/usr/share/sinkhole/blocklists/sample-crypto.txt",
        "/usr/share/sinkhole/blocklists/sample-registry.csv",
        "/usr/share/sinkhole/blocklists/FORMAT.md",
    ] {
        assert!(got.contains(want), "{want} missing; installed: {got:#?}");
    }
    assert_eq!(mode(&d.join("usr/bin/sinkhole")), 0o755);
    assert_eq!(mode(&d.join("lib/systemd/system/sinkhole.service")), 0o644);
    assert_eq!(mode(&d.join("etc/sinkhole/sinkhole.toml")), 0o644);
    assert_eq!(
        std::fs::read_to_string(d.join("lib/systemd/system/sinkhole.service")).unwrap(),
        read(UNIT)
    );
    assert_eq!(
        std::fs::read_to_string(d.join("etc/sinkhole/sinkhole.toml")).unwrap(),
        read(EXAMPLE)
    );
    // The installed binary runs.
    let o = Command::new(d.join("usr/bin/sinkhole"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("sinkhole"));

    // A second install keeps the operator's configuration and lists.
    std::fs::write(d.join("etc/sinkhole/sinkhole.toml"), "# mine\n").unwrap();
    std::fs::remove_file(d.join("etc/sinkhole/lists/sample-crypto.txt")).unwrap();
    std::fs::write(d.join("etc/sinkhole/lists/mine.txt"), "x.example\n").unwrap();
    let o = make_install(d, &[]);
    assert!(text(&o).contains("sinkhole.toml.dist"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(d.join("etc/sinkhole/sinkhole.toml")).unwrap(),
        "# mine\n"
    );
    assert!(d.join("etc/sinkhole/sinkhole.toml.dist").exists());
    assert!(!d.join("etc/sinkhole/lists/sample-crypto.txt").exists());
}

#[test]
fn make_install_honours_prefix() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    make_install(d, &["PREFIX=/usr/local"]);
    assert!(d.join("usr/local/bin/sinkhole").exists());
    assert!(
        d.join("usr/local/share/sinkhole/blocklists/FORMAT.md")
            .exists()
    );
    let unit = std::fs::read_to_string(d.join("lib/systemd/system/sinkhole.service")).unwrap();
    let s = unit_settings(&unit);
    assert_eq!(
        values(&s, "ExecStart"),
        vec!["/usr/local/bin/sinkhole serve --config /etc/sinkhole/sinkhole.toml"]
    );
    assert!(!unit.contains("/usr/bin/sinkhole"), "{unit}");
}

// ------------------------------------------------------------ Debian package

/// The newest `target/debian/sinkhole_*.deb`.
fn built_deb() -> PathBuf {
    // CARGO_BIN_EXE is TARGET/<profile>/sinkhole.
    let target = Path::new(bin())
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&target)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make deb` first", target.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sinkhole_") && n.ends_with(".deb"))
        })
        .collect();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop()
        .unwrap_or_else(|| panic!("no sinkhole_*.deb in {}; run `make deb`", target.display()))
}

#[test]
#[ignore = "needs `make deb` (cargo-deb); run with `make deb-check`"]
fn deb_package_holds_the_files_and_scripts() {
    let deb = built_deb();
    let deb_s = deb.to_str().unwrap();
    let o = tool("dpkg-deb", &["-c", deb_s]);
    assert!(o.status.success(), "{}", text(&o));
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    for want in [
        "./usr/bin/sinkhole",
        "./usr/lib/systemd/system/sinkhole.service",
        "./usr/lib/sysusers.d/sinkhole.conf",
        "./etc/sinkhole/sinkhole.toml",
        "./etc/sinkhole/lists/sample-crypto.txt",
        "./etc/sinkhole/lists/sample-registry.csv",
        "./usr/share/sinkhole/blocklists/FORMAT.md",
        "./usr/share/doc/sinkhole/copyright",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(want)),
            "{want} not in {}:\n{listing}",
            deb.display()
        );
    }
    let info = text(&tool("dpkg-deb", &["-I", deb_s]));
    assert!(info.contains("Package: sinkhole"), "{info}");
    assert!(
        info.contains("systemd-sysusers"),
        "Depends names a sysusers provider: {info}"
    );

    let ctl = tempfile::tempdir().unwrap();
    let o = tool("dpkg-deb", &["-e", deb_s, ctl.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let conffiles = std::fs::read_to_string(ctl.path().join("conffiles")).unwrap();
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/sinkhole/sinkhole.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(ctl.path().join("postinst")).unwrap();
    let users = postinst
        .find("systemd-sysusers")
        .expect("postinst creates the user");
    let enable = postinst
        .find("deb-systemd-helper enable sinkhole.service")
        .expect("postinst enables the unit");
    assert!(
        users < enable,
        "the account exists before the unit is enabled"
    );
    let postrm = std::fs::read_to_string(ctl.path().join("postrm")).unwrap();
    assert!(postrm.contains("purge"), "{postrm}");
}
