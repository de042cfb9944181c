//! One listener's connections: the table that bounds them (and picks one
//! to evict at the cap), and the task that drives one connection through
//! hyper until it ends, is evicted, times out or the listener stops.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::time::Sleep;
use tower::ServiceExt;

use super::HttpLimits;

/// A poisoned table only means a connection task panicked mid-update; the
/// table itself is still consistent (every update is a single insert or
/// remove).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ------------------------------------------------------------ the table

/// The open connections of one listener, at most `cap`.
#[derive(Debug)]
pub(super) struct ConnTable {
    cap: usize,
    epoch: Instant,
    conns: Mutex<Conns>,
    /// Signalled when a connection closes or finishes a request: what the
    /// accept loop waits for when the table is full.
    changed: Notify,
    peak: AtomicUsize,
    evicted: AtomicU64,
}

#[derive(Debug, Default)]
struct Conns {
    next_id: u64,
    by_id: HashMap<u64, Arc<ConnState>>,
}

/// What the table knows of one connection.
#[derive(Debug)]
pub(super) struct ConnState {
    /// Requests between a complete head and the end of their response
    /// body; 0 means the connection is waiting for a request head (new,
    /// in its TLS handshake, dribbling a head, or kept alive).
    active: AtomicUsize,
    /// Milliseconds since the table's epoch when `active` last became 0
    /// (the accept time for a new connection).
    idle_since_ms: AtomicU64,
    /// Requests started on this connection.
    requests: AtomicU64,
    evicting: AtomicBool,
    evict: Notify,
}

impl ConnTable {
    pub(super) fn new(cap: usize) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            cap,
            epoch: Instant::now(),
            conns: Mutex::new(Conns::default()),
            changed: Notify::new(),
            peak: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn open(&self) -> usize {
        lock(&self.conns).by_id.len()
    }

    pub(super) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    pub(super) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// A place in the table for a connection just accepted.
    ///
    /// At the cap, the connection that has waited longest for a request
    /// head is told to close, and this waits until it has: the table never
    /// holds more than `cap`. When every connection is inside a request
    /// (each bounded by the request timeout) it waits for one to finish,
    /// and the accept loop stops accepting meanwhile, leaving newcomers in
    /// the kernel's backlog.
    pub(super) async fn admit(self: &Arc<Self>) -> Conn {
        loop {
            // Registered before looking, so a change between the look and
            // the wait is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(conn) = self.try_admit() {
                return conn;
            }
            changed.await;
        }
    }

    fn try_admit(self: &Arc<Self>) -> Option<Conn> {
        let now = self.now_ms();
        let mut conns = lock(&self.conns);
        if conns.by_id.len() < self.cap {
            let id = conns.next_id;
            conns.next_id += 1;
            let state = Arc::new(ConnState {
                active: AtomicUsize::new(0),
                idle_since_ms: AtomicU64::new(now),
                requests: AtomicU64::new(0),
                evicting: AtomicBool::new(false),
                evict: Notify::new(),
            });
            conns.by_id.insert(id, state.clone());
            self.peak.fetch_max(conns.by_id.len(), Ordering::Relaxed);
            return Some(Conn {
                table: self.clone(),
                id,
                state,
            });
        }
        // One eviction at a time: its close is what admits the newcomer.
        if conns
            .by_id
            .values()
            .any(|c| c.evicting.load(Ordering::Relaxed))
        {
            return None;
        }
        let victim = conns
            .by_id
            .values()
            .filter(|c| c.is_idle())
            .min_by_key(|c| c.idle_since_ms.load(Ordering::Relaxed));
        if let Some(v) = victim {
            v.evicting.store(true, Ordering::Relaxed);
            // notify_one keeps the wake-up if the task is not waiting yet.
            v.evict.notify_one();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        None
    }
}

impl ConnState {
    fn is_idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }
}

/// A connection's place in the table; dropping it frees the place.
#[derive(Debug)]
pub(super) struct Conn {
    table: Arc<ConnTable>,
    id: u64,
    state: Arc<ConnState>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        lock(&self.table.conns).by_id.remove(&self.id);
        self.table.changed.notify_one();
    }
}

impl Conn {
    /// Resolves when the table chose this connection to make room.
    async fn evicted(&self) {
        self.state.evict.notified().await;
    }

    /// When a kept-alive connection idle now must close; `None` while a
    /// request is in progress or before the first request (the header
    /// timeout covers that).
    fn keepalive_deadline(&self, keepalive: Duration) -> Option<Instant> {
        if !self.state.is_idle() || self.state.requests.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let since = self.state.idle_since_ms.load(Ordering::Relaxed);
        Some(self.table.epoch + Duration::from_millis(since) + keepalive)
    }
}

/// Marks its connection as inside a request until dropped (with the
/// response body, so the time spent writing the response counts).
#[derive(Debug)]
struct BusyGuard {
    table: Arc<ConnTable>,
    state: Arc<ConnState>,
}

impl BusyGuard {
    fn enter(table: &Arc<ConnTable>, state: &Arc<ConnState>) -> BusyGuard {
        state.requests.fetch_add(1, Ordering::Relaxed);
        state.active.fetch_add(1, Ordering::AcqRel);
        BusyGuard {
            table: table.clone(),
            state: state.clone(),
        }
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.state
            .idle_since_ms
            .store(self.table.now_ms(), Ordering::Relaxed);
        if self.state.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.table.changed.notify_one();
        }
    }
}

/// A response body that keeps its connection marked busy until hyper has
/// taken all of it.
struct TrackedBody<B> {
    inner: B,
    _busy: BusyGuard,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// ------------------------------------------------------------ write stalls

/// Fails a write, flush or shutdown that makes no progress for `limit`.
/// hyper has no write timeout, and a client that sends a request and never
/// reads the answer would otherwise hold its connection for ever.
struct WriteStallLimit<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteStallLimit<T> {
    fn new(inner: T, limit: Duration) -> Self {
        WriteStallLimit {
            inner,
            limit,
            stalled: None,
        }
    }

    fn check<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading the response",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStallLimit<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStallLimit<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, r)
    }
}

// ------------------------------------------------------------ one connection

/// What every connection task of a listener shares.
pub(super) struct ConnContext {
    pub(super) limits: HttpLimits,
    pub(super) http: http1::Builder,
    /// The front's router with the stack's layers applied.
    pub(super) router: Router,
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serve one accepted connection until it ends. `stop` turns true when the
/// listener shuts down.
pub(super) async fn run(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    conn: Conn,
    cx: Arc<ConnContext>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(acceptor) = cx.tls.clone() else {
        return drive(stream, peer, conn, &cx, stop).await;
    };
    // The handshake gets the header timeout: until it is done the client
    // has not even started on its request, and is evictable like one that
    // dribbles its head.
    let handshake = tokio::time::timeout(cx.limits.header_timeout, acceptor.accept(stream));
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        },
        () = conn.evicted() => return,
        _ = stop.wait_for(|s| *s) => return,
    };
    drive(tls, peer, conn, &cx, stop).await
}

async fn drive<I>(
    io: I,
    peer: SocketAddr,
    conn: Conn,
    cx: &ConnContext,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(WriteStallLimit::new(io, cx.limits.request_timeout));
    let service = {
        let router = cx.router.clone();
        let table = conn.table.clone();
        let state = conn.state.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let busy = BusyGuard::enter(&table, &state);
            // Fronts that log or limit by client read it with axum's
            // `ConnectInfo<SocketAddr>` extractor.
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                let Ok(response) = router.oneshot(req).await;
                Ok::<_, Infallible>(response.map(|inner| TrackedBody { inner, _busy: busy }))
            }
        })
    };
    let connection = cx.http.serve_connection(io, service);
    tokio::pin!(connection);
    let keepalive = cx.limits.keepalive_timeout;
    let mut closing = false;
    loop {
        // While a request runs there is no idle deadline; look again one
        // keep-alive period later, which is always before the real deadline
        // (the idle period starts after this look).
        let idle_check = conn
            .keepalive_deadline(keepalive)
            .unwrap_or_else(|| Instant::now() + keepalive);
        tokio::select! {
            r = connection.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended");
                }
                return;
            }
            () = conn.evicted() => {
                tracing::debug!("closed to make room for a new connection");
                return;
            }
            _ = stop.wait_for(|s| *s), if !closing => {
                if conn.state.is_idle() {
                    return;
                }
                // Let the request in progress finish, then close.
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_check.into()), if !closing && !keepalive.is_zero() => {
                if conn.keepalive_deadline(keepalive).is_some_and(|d| d <= Instant::now()) {
                    // Idle between requests: hyper closes at once.
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
