//! systemd service notifications (`sd_notify(3)`) for `Type=notify` units.
//!
//! `serve` tells systemd `READY=1` once its listeners are bound and a list
//! snapshot is loaded (so `systemctl start` returns only when the resolver
//! answers), keeps a one-line `STATUS=` current (list version, rule counts),
//! says `RELOADING=1` / `STOPPING=1` around reloads and shutdown, and pings
//! `WATCHDOG=1` at half the `WatchdogSec=` interval.
//!
//! Everything is a no-op when `NOTIFY_SOCKET` is unset (run from a shell,
//! under tests, or under another supervisor), and failures to notify are
//! logged, never fatal: a resolver that answers queries must not stop
//! because its supervisor's socket went away.
//!
//! The `sd-notify` crate provides the message vocabulary ([`NotifyState`])
//! and the `WATCHDOG_USEC`/`WATCHDOG_PID` rules; sending is done here so a
//! [`Notifier`] can target an explicit socket (tests must not mutate the
//! process environment: `set_var` races with other threads) and so abstract
//! socket names (`@name`, used by some container managers) work too.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub(crate) use sd_notify::NotifyState;
use thiserror::Error;

#[derive(Debug, Error)]
pub(crate) enum NotifyError {
    #[error("NOTIFY_SOCKET {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor an abstract name (@name)")]
    BadSocket(String),
}

/// Where notifications go, and how often the watchdog wants a ping.
#[derive(Clone, Debug, Default)]
pub(crate) struct Notifier {
    socket: Option<OsString>,
    watchdog: Option<Duration>,
}

/// `STATUS=` is one line of the newline-separated protocol: a newline in the
/// text would start a bogus assignment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the
    /// watchdog is ours only when `WATCHDOG_PID` is unset or our PID).
    pub(crate) fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty());
        let watchdog = if socket.is_some() {
            sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
        } else {
            None
        };
        Notifier { socket, watchdog }
    }

    /// An explicit socket path (or `@abstract` name) and watchdog interval.
    #[cfg(test)]
    pub(crate) fn new(socket: impl Into<OsString>, watchdog: Option<Duration>) -> Notifier {
        Notifier {
            socket: Some(socket.into()),
            watchdog: watchdog.filter(|d| !d.is_zero()),
        }
    }

    /// One that never sends anything.
    #[cfg(test)]
    pub(crate) fn disabled() -> Notifier {
        Notifier::default()
    }

    #[cfg(test)]
    pub(crate) fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// `WatchdogSec=` as systemd passed it, when the watchdog is ours.
    #[cfg(test)]
    pub(crate) fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Send `states` as one datagram.
    pub(crate) fn notify(&self, states: &[NotifyState<'_>]) -> Result<(), NotifyError> {
        let Some(path) = &self.socket else {
            return Ok(());
        };
        let mut msg = String::new();
        for s in states {
            msg.push_str(&s.to_string());
            msg.push('\n');
        }
        send(path, msg.as_bytes())
    }

    /// `READY=1` with a `STATUS=` line.
    pub(crate) fn ready(&self, status: &str) -> Result<(), NotifyError> {
        let status = one_line(status);
        self.notify(&[NotifyState::Ready, NotifyState::Status(&status)])
    }

    #[cfg(test)]
    pub(crate) fn status(&self, text: &str) -> Result<(), NotifyError> {
        let text = one_line(text);
        self.notify(&[NotifyState::Status(&text)])
    }

    /// `RELOADING=1` (with `MONOTONIC_USEC`, which systemd ≥ 253 requires);
    /// follow it with [`Notifier::ready`] when the reload is done.
    pub(crate) fn reloading(&self) -> Result<(), NotifyError> {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.notify(&[NotifyState::Reloading, now]),
            Err(_) => self.notify(&[NotifyState::Reloading]),
        }
    }

    pub(crate) fn stopping(&self) -> Result<(), NotifyError> {
        self.notify(&[NotifyState::Stopping])
    }

    /// One `WATCHDOG=1` ping.
    pub(crate) fn watchdog(&self) -> Result<(), NotifyError> {
        self.notify(&[NotifyState::Watchdog])
    }

    /// Ping `WATCHDOG=1` at half the watchdog interval, as sd_watchdog_enabled(3)
    /// advises, for as long as the task runs. `None` when there is no watchdog.
    /// Must be called inside a tokio runtime.
    pub(crate) fn spawn_watchdog(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.spawn_watchdog_checked(|| true)
    }

    /// As [`Notifier::spawn_watchdog`], but a ping is sent only while
    /// `healthy()` says so: a wedged component then makes systemd restart
    /// the service after one interval, which is the watchdog's purpose.
    pub(crate) fn spawn_watchdog_checked<F>(
        &self,
        healthy: F,
    ) -> Option<tokio::task::JoinHandle<()>>
    where
        F: Fn() -> bool + Send + 'static,
    {
        let interval = self.watchdog?;
        let me = self.clone();
        // tokio's interval panics on a zero period; WATCHDOG_USEC=1 is legal.
        let period = (interval / 2).max(Duration::from_millis(1));
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut warned = false;
            loop {
                tick.tick().await;
                if !healthy() {
                    continue;
                }
                match me.watchdog() {
                    Ok(()) => warned = false,
                    Err(e) if !warned => {
                        // Once per outage, not every few seconds.
                        tracing::warn!(error = %e, "cannot ping the systemd watchdog");
                        warned = true;
                    }
                    Err(_) => {}
                }
            }
        }))
    }
}

fn send(path: &OsStr, msg: &[u8]) -> Result<(), NotifyError> {
    let io_err = |source| NotifyError::Io {
        path: path.to_string_lossy().into_owned(),
        source,
    };
    let sock = UnixDatagram::unbound().map_err(io_err)?;
    let bytes = path.as_bytes();
    let sent = match bytes.first() {
        Some(b'/') => sock.send_to(msg, path).map_err(io_err)?,
        Some(b'@') => send_abstract(&sock, &bytes[1..], msg).map_err(io_err)?,
        _ => return Err(NotifyError::BadSocket(path.to_string_lossy().into_owned())),
    };
    if sent != msg.len() {
        return Err(io_err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification datagram cut short",
        )));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], msg: &[u8]) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(msg, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets are Linux-only",
    ))
}

// ------------------------------------------------- process-wide shorthands

/// The notifier for this process, read from the environment once.
pub(crate) fn notifier() -> &'static Notifier {
    static N: OnceLock<Notifier> = OnceLock::new();
    N.get_or_init(Notifier::from_env)
}

fn log_failure(what: &str, r: Result<(), NotifyError>) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = r {
        // A missing supervisor socket would otherwise repeat on every status update.
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "cannot send {what} to systemd");
        } else {
            tracing::debug!(error = %e, "cannot send {what} to systemd");
        }
    }
}

/// `READY=1` and `STATUS=status`; send once listeners are bound and a
/// snapshot is loaded.
pub(crate) fn ready(status: &str) {
    log_failure("READY=1", notifier().ready(status));
}

/// `RELOADING=1`; call [`ready`] when the reload is over.
pub(crate) fn reloading() {
    log_failure("RELOADING=1", notifier().reloading());
}

/// `STOPPING=1`, at the start of a graceful shutdown.
pub(crate) fn stopping() {
    log_failure("STOPPING=1", notifier().stopping());
}

/// Start the watchdog pings (see [`Notifier::spawn_watchdog`]).
pub(crate) fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    notifier().spawn_watchdog()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn socket() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (dir, path, sock)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn ready_status_stopping_arrive() {
        let (_dir, path, sock) = socket();
        let n = Notifier::new(path.as_os_str(), None);
        assert!(n.is_enabled());
        n.ready("version 3, 120 rules\nsecond line").unwrap();
        let msg = recv(&sock);
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(
            lines,
            vec!["READY=1", "STATUS=version 3, 120 rules second line"]
        );
        n.status("reloading lists").unwrap();
        assert_eq!(recv(&sock), "STATUS=reloading lists\n");
        n.reloading().unwrap();
        let msg = recv(&sock);
        assert!(msg.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{msg}");
        n.stopping().unwrap();
        assert_eq!(recv(&sock), "STOPPING=1\n");
    }

    #[test]
    fn disabled_is_a_no_op() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.ready("x").unwrap();
        n.watchdog().unwrap();
        assert!(n.watchdog_interval().is_none());
    }

    #[test]
    fn bad_socket_is_an_error_not_a_panic() {
        let n = Notifier::new("relative/path", None);
        assert!(matches!(n.ready("x"), Err(NotifyError::BadSocket(_))));
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::new(dir.path().join("nobody-listens"), None);
        assert!(matches!(n.status("x"), Err(NotifyError::Io { .. })));
    }

    #[test]
    fn abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("sinkhole-test-{}-{:?}", std::process::id(), Instant::now());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::new(format!("@{name}"), None).watchdog().unwrap();
        assert_eq!(recv(&sock), "WATCHDOG=1\n");
    }

    #[tokio::test]
    async fn watchdog_pings_at_half_the_interval() {
        let (_dir, path, sock) = socket();
        let n = Notifier::new(path.as_os_str(), Some(Duration::from_millis(200)));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(200)));
        let task = n.spawn_watchdog().expect("watchdog enabled");
        let t0 = Instant::now();
        let got =
            tokio::task::spawn_blocking(move || (0..4).map(|_| recv(&sock)).collect::<Vec<_>>())
                .await
                .unwrap();
        task.abort();
        assert!(got.iter().all(|m| m == "WATCHDOG=1\n"), "{got:?}");
        // First tick is immediate, then every 100 ms: 4 pings take ≈ 300 ms.
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn unhealthy_withholds_pings() {
        let (_dir, path, sock) = socket();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let n = Notifier::new(path.as_os_str(), Some(Duration::from_millis(50)));
        let task = n.spawn_watchdog_checked(|| false).unwrap();
        let got = tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 64];
            sock.recv(&mut buf).is_ok()
        })
        .await
        .unwrap();
        task.abort();
        assert!(!got, "no ping while unhealthy");
        assert!(Notifier::disabled().spawn_watchdog().is_none());
    }
}
