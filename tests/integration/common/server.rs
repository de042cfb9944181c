//! The real `sinkhole serve`, started on port 0 with a generated
//! configuration ([`Server::builder`]); the addresses it bound are read
//! from its ready file ([`Listeners`]). The process is killed when the
//! [`Server`] is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{gate, wait_for};

/// How long a start may take before the harness gives up (a debug build
/// compiling a 100,000-name list on a loaded two-core machine).
pub(crate) const READY_WITHIN: Duration = Duration::from_secs(30);

/// The listeners a `sinkhole serve --ready-file` wrote, one `ROLE ADDRESS`
/// line each: `dns` (UDP and TCP on one port, one line per `[server]
/// listen` entry), `metrics` (`[metrics] listen`). Roles this harness does
/// not know are kept but never asked for.
#[derive(Clone, Debug)]
pub(crate) struct Listeners {
    text: String,
}

impl Listeners {
    /// Read the ready file; None while it does not exist. It is written
    /// with a rename, so a file that exists is complete.
    pub(crate) fn read(path: &Path) -> Option<Listeners> {
        std::fs::read_to_string(path)
            .ok()
            .map(|text| Listeners { text })
    }

    /// Every address listed for `role`, in file order.
    pub(crate) fn all(&self, role: &str) -> Vec<SocketAddr> {
        self.text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(r, _)| *r == role)
            .map(|(_, a)| {
                a.trim().parse().unwrap_or_else(|e| {
                    panic!("ready file: bad {role} address {a:?}: {e}\n{}", self.text)
                })
            })
            .collect()
    }

    /// The first address listed for `role`; panics (showing the file) if
    /// there is none.
    pub(crate) fn first(&self, role: &str) -> SocketAddr {
        self.all(role)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no {role} listener in the ready file:\n{}", self.text))
    }
}

/// Wait, at most `within`, for the ready file at `path` that `child`
/// (started with `--ready-file path`) writes once every listener is bound.
/// Err says why not: the child exited first, or time ran out.
pub(crate) fn await_ready_file(
    path: &Path,
    child: &mut Child,
    within: Duration,
) -> Result<Listeners, String> {
    let deadline = Instant::now() + within;
    loop {
        // The file first: a child that wrote it and then stopped did start.
        if let Some(l) = Listeners::read(path) {
            return Ok(l);
        }
        match child.try_wait() {
            Ok(Some(status)) => return Err(format!("exited ({status}) before it was ready")),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot check on the child: {e}")),
        }
        if Instant::now() >= deadline {
            return Err(format!("no ready file after {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (and reaped) when this is dropped, so a failing
/// test leaves nothing running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Send `signal` to process `pid` (one of our children).
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory effects on this process.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// What [`Server::builder`] starts. Every part has a default: one list
/// directory with the given files, `listen = ["127.0.0.1:0"]`, two
/// workers, `timeout_ms = 800`, no metrics.
#[must_use = "nothing runs until .start()"]
pub(crate) struct ServerBuilder {
    upstreams: Vec<SocketAddr>,
    lists: Vec<(String, String)>,
    listen: Vec<String>,
    server_keys: String,
    config: String,
    metrics: bool,
    env: Vec<(String, Option<String>)>,
    args: Vec<String>,
    customize: Option<Customize>,
}

/// A last adjustment of the server's command ([`ServerBuilder::customize`]).
type Customize = Box<dyn FnOnce(&mut Command)>;

impl ServerBuilder {
    /// List files (name → content) written into `{lists}`, the directory
    /// `[lists] paths` names.
    pub(crate) fn lists(mut self, lists: &[(&str, &str)]) -> Self {
        self.lists
            .extend(lists.iter().map(|(n, c)| (n.to_string(), c.to_string())));
        self
    }

    /// `[server] listen` addresses instead of `127.0.0.1:0` (use port 0).
    pub(crate) fn listen(mut self, addrs: &[&str]) -> Self {
        self.listen = addrs.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Extra `[server]` keys (TOML lines).
    pub(crate) fn server_keys(mut self, toml: &str) -> Self {
        self.server_keys.push_str(toml);
        self.server_keys.push('\n');
        self
    }

    /// TOML appended after the `[lists]` table: bare keys are `[lists]`
    /// keys, other sections come with their header. `{lists}` stands for
    /// the list directory, `{dir}` for the server's temporary directory.
    pub(crate) fn config(mut self, toml: &str) -> Self {
        self.config.push_str(toml);
        self.config.push('\n');
        self
    }

    /// Serve `/metrics` on 127.0.0.1 port 0 ([`Server::metrics`] says where).
    pub(crate) fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// An environment variable for the server process.
    pub(crate) fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        let value = value.as_ref().to_string_lossy().into_owned();
        self.env.push((key.to_string(), Some(value)));
        self
    }

    /// Remove an inherited environment variable.
    pub(crate) fn env_remove(mut self, key: &str) -> Self {
        self.env.push((key.to_string(), None));
        self
    }

    /// Arguments after `serve --config FILE --ready-file FILE`.
    #[allow(dead_code)] // every current test is configured through the file
    pub(crate) fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Adjust the command just before it is spawned (e.g. `pre_exec`
    /// resource limits).
    pub(crate) fn customize(mut self, f: impl FnOnce(&mut Command) + 'static) -> Self {
        self.customize = Some(Box::new(f));
        self
    }

    /// Write the configuration and lists into a temporary directory, start
    /// the binary and wait for its ready file (at most [`READY_WITHIN`]).
    /// Panics with the server's log if it exits or times out first.
    pub(crate) fn start(self) -> Server {
        let gate = gate::shared();
        let dir = tempfile::tempdir().expect("tempdir");
        let list_dir = dir.path().join("lists");
        std::fs::create_dir(&list_dir).expect("mkdir lists");
        for (name, content) in &self.lists {
            std::fs::write(list_dir.join(name), content).expect("write list");
        }
        let quoted = |v: &[String]| {
            v.iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let listen = if self.listen.is_empty() {
            vec!["127.0.0.1:0".to_string()]
        } else {
            self.listen
        };
        let upstreams: Vec<String> = self.upstreams.iter().map(|a| a.to_string()).collect();
        let extra = self
            .config
            .replace("{lists}", &list_dir.display().to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let metrics = if self.metrics {
            "[metrics]\nlisten = \"127.0.0.1:0\"\n"
        } else {
            ""
        };
        let config = format!(
            "[server]\nlisten = [{}]\nworkers = 2\n{}\n[upstream]\nservers = [{}]\ntimeout_ms = 800\n[lists]\npaths = [\"{}\"]\n{extra}\n{metrics}",
            quoted(&listen),
            self.server_keys,
            quoted(&upstreams),
            list_dir.display(),
        );
        let cfg_path = dir.path().join("sinkhole.toml");
        std::fs::write(&cfg_path, config).expect("write config");
        let ready = dir.path().join("ready");
        let log = std::fs::File::create(dir.path().join("sinkhole.log")).expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sinkhole"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&cfg_path)
            .arg("--ready-file")
            .arg(&ready)
            .args(&self.args)
            .env("RUST_LOG", "sinkhole=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if let Some(f) = self.customize {
            f(&mut cmd);
        }
        let mut child = KillOnDrop(cmd.spawn().expect("spawn sinkhole"));
        let log = || std::fs::read_to_string(dir.path().join("sinkhole.log")).unwrap_or_default();
        let listeners = await_ready_file(&ready, &mut child.0, READY_WITHIN)
            .unwrap_or_else(|why| panic!("sinkhole did not start: {why}; log:\n{}", log()));
        Server {
            addr: listeners.first("dns"),
            listeners,
            dir,
            child,
            _gate: gate,
        }
    }
}

/// A running `sinkhole serve` (killed on drop). It holds a shared place in
/// the [`gate`], so it never runs beside the heavy test.
pub(crate) struct Server {
    /// The first `dns` listener (UDP and TCP).
    pub addr: SocketAddr,
    /// Everything its ready file lists.
    pub listeners: Listeners,
    // Fields drop in order: the process is killed before its directory
    // goes, and gives back its place in the gate last.
    child: KillOnDrop,
    dir: tempfile::TempDir,
    _gate: gate::Guard,
}

impl Server {
    /// Start describing a server forwarding to `upstreams`.
    pub(crate) fn builder(upstreams: &[SocketAddr]) -> ServerBuilder {
        ServerBuilder {
            upstreams: upstreams.to_vec(),
            lists: Vec::new(),
            listen: Vec::new(),
            server_keys: String::new(),
            config: String::new(),
            metrics: false,
            env: Vec::new(),
            args: Vec::new(),
            customize: None,
        }
    }

    /// The `/metrics` listener; panics if it was started without
    /// [`ServerBuilder::metrics`].
    pub(crate) fn metrics(&self) -> SocketAddr {
        self.listeners.first("metrics")
    }

    /// Its process ID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The directory `[lists] paths` names.
    pub(crate) fn list_dir(&self) -> PathBuf {
        self.dir.path().join("lists")
    }

    /// Send a signal (SIGHUP, SIGTERM, …) to the server.
    pub(crate) fn signal(&self, sig: libc::c_int) {
        signal(self.pid(), sig);
    }

    /// Wait up to `within` for the process to exit; its status, or None.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = &mut self.child.0;
        wait_for(within, || child.try_wait().ok().flatten())
    }

    /// Stop with SIGTERM and wait (up to 10 s) for the exit status.
    pub(crate) fn stop(mut self) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(10))
    }

    /// The exit status if it has exited, without waiting.
    pub(crate) fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.0.try_wait().ok().flatten()
    }

    /// Its stderr and stdout so far (the log and, by default, the hit log).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sinkhole.log")).unwrap_or_default()
    }
}
