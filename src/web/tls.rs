//! The TLS front (`[web] tls_listen`, port 443 in production): routes TLS
//! connections of steered hosts by the SNI of their ClientHello, without
//! terminating TLS.
//!
//! Per connection:
//!
//! 1. A client the policy does not admit (the DNS ACL) is closed at once.
//! 2. The ClientHello is read (up to [`MAX_HELLO_BYTES`] within
//!    [`TlsFrontLimits::hello_timeout`]) and its SNI handed to the
//!    [`SniPolicy`]:
//!    * [`SniVerdict::Refuse`] (a blocked host): a fatal TLS
//!      `access_denied` alert, then close;
//!    * [`SniVerdict::Pass`]: the origin is resolved through the upstream
//!      resolvers and connected to ([`OriginResolver`]), the buffered bytes
//!      are written to it as they came, then bytes are copied both ways
//!      until either side closes or nothing moves for
//!      [`TlsFrontLimits::idle_timeout`];
//!    * [`SniVerdict::NotSteered`], no SNI, or bytes that are not a
//!      ClientHello: close. The front only carries hosts it steered.
//!
//! Every connection ends in one [`TlsOutcome`], counted in
//! [`TlsFrontStats`].
//!
//! # Bounded
//!
//! At most [`TlsFrontLimits::max_connections`] connections are open; one
//! more is accepted and closed at once (counted as `over_capacity`), so a
//! client gets a fast failure rather than waiting in the kernel backlog.
//! A connection holds at most [`MAX_HELLO_BYTES`] before its origin is
//! connected, and two 8 KB copy buffers after.

mod hello;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[cfg(feature = "fuzzing")]
pub(crate) use hello::check_prefix_consistency;
pub(crate) use hello::{HelloRead, MAX_HELLO_BYTES, parse_client_hello};

use super::origin::OriginResolver;
use crate::http::{accept_any, is_client_error};

/// What the front does with a ClientHello's SNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SniVerdict {
    /// Blocked: answer a fatal `access_denied` alert and close.
    Refuse,
    /// Steered and not blocked: pass the connection through to the origin.
    Pass,
    /// A host the front did not steer: close.
    NotSteered,
}

/// The decision the daemon plugs into the front.
pub(crate) trait SniPolicy: Send + Sync + 'static {
    /// `sni`: the ClientHello's server name, lower-cased ASCII without a
    /// trailing dot. `client`: the peer. `port`: the origin port the
    /// connection is for (`web.origin_https_port`), for rules that name a
    /// port. Called once per connection; a refusal is the place to write
    /// the audit record.
    fn decide(&self, sni: &str, client: SocketAddr, port: u16) -> SniVerdict;

    /// Whether `client` may use the front at all (the DNS ACL). Asked
    /// before anything is read; everyone by default.
    fn admits(&self, _client: SocketAddr) -> bool {
        true
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsOutcome {
    /// Passed through to the origin (counted when it closes).
    Passed,
    /// Refused with an `access_denied` alert.
    Refused,
    /// The SNI names a host the front did not steer.
    NotSteered,
    /// A ClientHello without SNI.
    NoSni,
    /// Not a ClientHello (garbage, plain HTTP, SSLv2, oversized, ...).
    NotTls,
    /// The hello did not arrive within the deadline.
    HelloTimeout,
    /// The client closed (or failed) before its hello was whole.
    ClientClosed,
    /// The origin could not be resolved or connected to, or is forbidden.
    OriginError,
    /// A client the policy does not admit.
    Denied,
    /// Closed at once: `max_connections` were open.
    OverCapacity,
}

impl TlsOutcome {
    pub(crate) const ALL: [TlsOutcome; 10] = [
        TlsOutcome::Passed,
        TlsOutcome::Refused,
        TlsOutcome::NotSteered,
        TlsOutcome::NoSni,
        TlsOutcome::NotTls,
        TlsOutcome::HelloTimeout,
        TlsOutcome::ClientClosed,
        TlsOutcome::OriginError,
        TlsOutcome::Denied,
        TlsOutcome::OverCapacity,
    ];

    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TlsOutcome::Passed => "passed",
            TlsOutcome::Refused => "refused",
            TlsOutcome::NotSteered => "not_steered",
            TlsOutcome::NoSni => "no_sni",
            TlsOutcome::NotTls => "not_tls",
            TlsOutcome::HelloTimeout => "hello_timeout",
            TlsOutcome::ClientClosed => "client_closed",
            TlsOutcome::OriginError => "origin_error",
            TlsOutcome::Denied => "denied",
            TlsOutcome::OverCapacity => "over_capacity",
        }
    }
}

/// Live figures of the front, plain atomics the metrics module reads at
/// scrape time.
#[derive(Debug, Default)]
pub(crate) struct TlsFrontStats {
    outcomes: [AtomicU64; TlsOutcome::ALL.len()],
    open: AtomicU64,
    /// Bytes passed through, client to origin and origin to client.
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl TlsFrontStats {
    fn count(&self, outcome: TlsOutcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections ended with `outcome` so far.
    pub(crate) fn outcome(&self, outcome: TlsOutcome) -> u64 {
        self.outcomes[outcome as usize].load(Ordering::Relaxed)
    }

    /// Every outcome with its count, in [`TlsOutcome::ALL`] order.
    pub(crate) fn outcomes(&self) -> [(TlsOutcome, u64); TlsOutcome::ALL.len()] {
        TlsOutcome::ALL.map(|o| (o, self.outcome(o)))
    }

    /// Connections open now (reading a hello or passing through).
    pub(crate) fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Bytes passed through (client → origin, origin → client).
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (
            self.bytes_up.load(Ordering::Relaxed),
            self.bytes_down.load(Ordering::Relaxed),
        )
    }

    /// Fill the scrape-time sample: the daemon registers
    /// `metrics.on_scrape(move |s| stats.sample(s))` for
    /// `sinkhole_web_tls_connections_total{outcome}`,
    /// `sinkhole_web_tls_open_connections` and
    /// `sinkhole_web_tls_bytes_total{direction}`.
    pub(crate) fn sample(&self, s: &mut crate::metrics::Sample) {
        s.tls_connections = self
            .outcomes()
            .iter()
            .map(|(o, n)| (o.as_str(), *n))
            .collect();
        s.tls_open_connections = Some(self.open_connections());
        let (up, down) = self.bytes();
        s.tls_bytes = vec![("client_to_origin", up), ("origin_to_client", down)];
    }
}

/// The bounds of the front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TlsFrontLimits {
    /// Open connections at most (`web.max_connections`).
    pub max_connections: usize,
    /// From accept to a whole ClientHello.
    pub hello_timeout: Duration,
    /// Resolving the origin and connecting to it.
    pub connect_timeout: Duration,
    /// A passed-through connection on which no byte moved either way for
    /// this long is closed.
    pub idle_timeout: Duration,
}

impl TlsFrontLimits {
    pub(crate) const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
    pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

    /// `max_connections` with the default timeouts.
    pub(crate) fn new(max_connections: usize) -> TlsFrontLimits {
        TlsFrontLimits {
            max_connections,
            hello_timeout: Self::DEFAULT_HELLO_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug, Error)]
pub(crate) enum TlsFrontError {
    #[error("TLS front: no address to listen on")]
    NoAddress,
    #[error("TLS front: web.max_connections must be at least 1")]
    NoConnections,
    #[error("TLS front: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The fatal `access_denied` (49) alert record (RFC 8446 §6; the legacy
/// record version 0x0303, which every TLS version accepts).
const ACCESS_DENIED_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49];

/// How long accept errors other than a client's own (EMFILE, ENFILE)
/// pause the accept loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long a refusal alert may take to write before the connection is
/// closed anyway.
const ALERT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long, and how many bytes, a refused client is read from after its
/// alert (see [`refuse`]).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// At most one accept-error warning per this period.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);
/// Bytes read per read call while waiting for the hello.
const READ_CHUNK: usize = 4096;

/// The bound sockets of the TLS front.
#[derive(Debug)]
pub(crate) struct TlsFront {
    listeners: Vec<TcpListener>,
    local_addrs: Vec<SocketAddr>,
    limits: TlsFrontLimits,
    stats: Arc<TlsFrontStats>,
}

impl TlsFront {
    /// Bind every address now (port 0: the kernel picks one), so that a
    /// taken port is reported before the daemon says it is ready.
    pub(crate) async fn bind(
        addrs: &[SocketAddr],
        limits: TlsFrontLimits,
    ) -> Result<TlsFront, TlsFrontError> {
        if addrs.is_empty() {
            return Err(TlsFrontError::NoAddress);
        }
        if limits.max_connections == 0 {
            return Err(TlsFrontError::NoConnections);
        }
        let mut listeners = Vec::with_capacity(addrs.len());
        let mut local_addrs = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            let bind_err = |source| TlsFrontError::Bind { addr, source };
            let l = TcpListener::bind(addr).await.map_err(bind_err)?;
            local_addrs.push(l.local_addr().map_err(bind_err)?);
            listeners.push(l);
        }
        Ok(TlsFront {
            listeners,
            local_addrs,
            limits,
            stats: Arc::new(TlsFrontStats::default()),
        })
    }

    /// The bound addresses, in the order given to [`TlsFront::bind`].
    pub(crate) fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The front's counters (shared; still live after `serve` returns).
    pub(crate) fn stats(&self) -> Arc<TlsFrontStats> {
        self.stats.clone()
    }

    /// Serve until `shutdown` resolves, then stop accepting and close every
    /// open connection (a pass-through has no request boundary to wait
    /// for; clients reconnect). Accept errors are logged and retried.
    pub(crate) async fn serve(
        self,
        policy: Arc<dyn SniPolicy>,
        origins: Arc<OriginResolver>,
        origin_https_port: u16,
        shutdown: impl Future<Output = ()>,
    ) {
        let TlsFront {
            listeners,
            local_addrs,
            limits,
            stats,
        } = self;
        tracing::info!(addrs = ?local_addrs, "TLS front serving");
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let cx = Arc::new(Conn {
            policy,
            origins,
            origin_port: origin_https_port,
            limits,
            stats: stats.clone(),
        });
        let mut tasks = JoinSet::new();
        let mut next = 0usize;
        let mut last_warn: Option<std::time::Instant> = None;
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(r) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = r && e.is_panic() {
                        tracing::error!(error = %e, "TLS front connection task panicked");
                    }
                    continue;
                }
                r = accept_any(&listeners, &mut next) => r,
            };
            let (stream, peer) = match accepted {
                Ok(c) => c,
                Err(e) if is_client_error(&e) => continue,
                Err(e) => {
                    // EMFILE and the like: fds or memory need a moment.
                    if last_warn.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_EVERY) {
                        tracing::warn!(error = %e, "TLS front cannot accept; retrying");
                        last_warn = Some(std::time::Instant::now());
                    }
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                stats.count(TlsOutcome::OverCapacity);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let cx = cx.clone();
            tasks.spawn(async move {
                cx.stats.open.fetch_add(1, Ordering::Relaxed);
                let outcome = cx.run(stream, peer).await;
                cx.stats.open.fetch_sub(1, Ordering::Relaxed);
                cx.stats.count(outcome);
                drop(slot);
            });
        }
        drop(listeners);
        let open = tasks.len();
        tasks.shutdown().await;
        tracing::info!(closed = open, "TLS front stopped");
    }
}

/// What every connection task shares.
struct Conn {
    policy: Arc<dyn SniPolicy>,
    origins: Arc<OriginResolver>,
    origin_port: u16,
    limits: TlsFrontLimits,
    stats: Arc<TlsFrontStats>,
}

impl Conn {
    async fn run(&self, mut client: TcpStream, peer: SocketAddr) -> TlsOutcome {
        if !self.policy.admits(peer) {
            return TlsOutcome::Denied;
        }
        let deadline = Instant::now() + self.limits.hello_timeout;
        let (buf, sni) = match read_hello(&mut client, deadline).await {
            Ok(hello) => hello,
            Err(outcome) => {
                tracing::debug!(%peer, outcome = outcome.as_str(), "TLS front closed before routing");
                return outcome;
            }
        };
        let Some(sni) = sni else {
            return TlsOutcome::NoSni;
        };
        match self.policy.decide(&sni, peer, self.origin_port) {
            SniVerdict::NotSteered => TlsOutcome::NotSteered,
            SniVerdict::Refuse => {
                refuse(&mut client).await;
                TlsOutcome::Refused
            }
            SniVerdict::Pass => {
                let connected = self
                    .origins
                    .connect(&sni, self.origin_port, self.limits.connect_timeout)
                    .await;
                let (origin, addr) = match connected {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::info!(%peer, sni, reason = e.as_str(), error = %e, "TLS front: origin unreachable");
                        return TlsOutcome::OriginError;
                    }
                };
                let _ = origin.set_nodelay(true);
                tracing::debug!(%peer, sni, origin = %addr, "TLS front passing through");
                self.pass_through(client, origin, buf).await;
                TlsOutcome::Passed
            }
        }
    }

    /// Write what the client sent so far to the origin, then copy both ways
    /// until either side closes, an error, or the idle timeout.
    async fn pass_through(&self, mut client: TcpStream, mut origin: TcpStream, hello: Vec<u8>) {
        let idle = self.limits.idle_timeout;
        let first = tokio::time::timeout(idle, origin.write_all(&hello)).await;
        if !matches!(first, Ok(Ok(()))) {
            return;
        }
        self.stats
            .bytes_up
            .fetch_add(hello.len() as u64, Ordering::Relaxed);
        drop(hello);
        let clock = Arc::new(Activity::new());
        let mut client = Tracked {
            inner: &mut client,
            clock: clock.clone(),
            read: &self.stats.bytes_up,
        };
        let mut origin = Tracked {
            inner: &mut origin,
            clock: clock.clone(),
            read: &self.stats.bytes_down,
        };
        let copy = tokio::io::copy_bidirectional(&mut client, &mut origin);
        tokio::pin!(copy);
        loop {
            let wake = clock.last() + idle;
            tokio::select! {
                r = &mut copy => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "TLS front: pass-through ended");
                    }
                    return;
                }
                () = tokio::time::sleep_until(wake) => {
                    if clock.last() + idle <= Instant::now() {
                        tracing::debug!("TLS front: idle pass-through closed");
                        return;
                    }
                }
            }
        }
    }
}

/// Send the `access_denied` alert and close. Closing a socket with unread
/// bytes (a ChangeCipherSpec or early data behind the hello) makes the
/// kernel send a reset, which can destroy the alert before the client
/// reads it; so after the alert the rest of what the client sends is read
/// and dropped, for a bounded time and amount, before the close.
async fn refuse(client: &mut TcpStream) {
    let sent = tokio::time::timeout(ALERT_WRITE_TIMEOUT, async {
        client.write_all(&ACCESS_DENIED_ALERT).await?;
        client.shutdown().await
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 1024];
        let mut drained = 0usize;
        while drained < LINGER_BYTES {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// Read until the bytes hold a whole ClientHello: the bytes and the SNI,
/// or the outcome that ends the connection.
async fn read_hello(
    client: &mut TcpStream,
    deadline: Instant,
) -> Result<(Vec<u8>, Option<String>), TlsOutcome> {
    // Read straight into the buffer: a read chunk in the task would stay
    // in its size for the connection's whole life.
    let mut buf = Vec::new();
    loop {
        // Never hold more than the cap (the parser refuses at the cap).
        let room = (MAX_HELLO_BYTES + 1)
            .saturating_sub(buf.len())
            .min(READ_CHUNK);
        let filled = buf.len();
        buf.resize(filled + room, 0);
        let read = tokio::time::timeout_at(deadline, client.read(&mut buf[filled..])).await;
        let n = match read {
            Err(_) => return Err(TlsOutcome::HelloTimeout),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(TlsOutcome::ClientClosed),
            Ok(Ok(n)) => n,
        };
        buf.truncate(filled + n);
        match parse_client_hello(&buf) {
            HelloRead::NeedMore => continue,
            HelloRead::Hello { sni } => return Ok((buf, sni)),
            HelloRead::NotTls(reason) => {
                tracing::debug!(reason = reason.as_str(), detail = %reason, "TLS front: not a ClientHello");
                return Err(TlsOutcome::NotTls);
            }
        }
    }
}

/// When bytes last moved on a pass-through, either way.
struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records on `clock` every read or write that moved bytes,
/// and counts the bytes read from it in `read`.
struct Tracked<'a> {
    inner: &'a mut TcpStream,
    clock: Arc<Activity>,
    read: &'a AtomicU64,
}

impl AsyncRead for Tracked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut *self.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0 {
            self.clock.touch();
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tracked<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut *self.inner).poll_write(cx, buf))?;
        if n > 0 {
            self.clock.touch();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
