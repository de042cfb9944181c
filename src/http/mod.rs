//! The one HTTP stack every HTTP front runs on (`/metrics` today; the block
//! page, the push API and the auditor console next): axum routers served
//! by hyper 1 HTTP/1.1 connections on tokio, optionally over rustls (ring).
//!
//! A front builds an [`axum::Router`], binds an [`HttpListener`] with its
//! [`HttpLimits`] (and [`TlsSettings`] for HTTPS), reports
//! [`HttpListener::local_addrs`] and calls [`HttpListener::serve`]. The
//! stack adds, for every front alike:
//!
//! * a cap on open connections, kept by evicting the connection that has
//!   waited longest for a request head (see [`HttpListener`]);
//! * a header timeout (hyper's `header_read_timeout`: a new connection,
//!   one dribbling its head, and a kept-alive one between requests: hyper
//!   restarts that timer when a connection goes idle after a response,
//!   hyperium/hyper#3828, in the locked 1.12), a shorter keep-alive idle
//!   timeout if configured, a header size
//!   limit (431), a body limit (413), a request timeout (408) and a
//!   write-stall timeout for clients that do not read their answer;
//! * request logging at debug level (`tower_http::trace`), inside a span
//!   naming the front and the peer;
//! * the peer address as axum's `ConnectInfo<SocketAddr>`;
//! * graceful shutdown: stop accepting, close idle connections, let
//!   requests in progress finish within the request timeout.

mod config;
mod conn;
mod tls;

#[cfg(test)]
pub(crate) mod tests;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{Instrument, Level};

pub use config::{HttpLimits, MIN_HEADER_BYTES, RawHttpLimits, RawListen, SettingError};
pub use tls::{TlsError, TlsSettings};

use conn::{ConnContext, ConnTable};

#[derive(Debug, Error)]
pub enum HttpError {
    #[error("{front}: no address to listen on")]
    NoAddress { front: &'static str },
    #[error("{front}: cannot listen on {addr}: {source}")]
    Bind {
        front: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// How long accept errors other than a client's own (EMFILE, ENFILE,
/// ENOBUFS) pause the accept loop; fds or memory need a moment to free.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one accept-error warning per this period.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// The bound sockets of one HTTP front (any number of addresses, one
/// connection cap over all of them).
///
/// # Bounded
///
/// The number of open connections never exceeds
/// [`HttpLimits::max_connections`]. When a connection arrives at the cap,
/// the connection that has waited longest for a request head (new, in its
/// TLS handshake, dribbling a head, or kept alive between requests) is
/// closed to make room, and the newcomer is admitted once it has gone.
/// Only when every connection is inside a request does the listener stop
/// accepting until one finishes (each is bounded by the request timeout).
///
/// Why evict rather than only stop accepting at the cap: with the latter a
/// client that opens `max_connections` idle connections and reopens each
/// as it times out holds the listener, and a scraper queued in the kernel
/// backlog behind them waits for header timeouts — or for ever, as the
/// backlog is first come first served and the flood keeps coming. With
/// eviction a newcomer gets in at once, and an idle flood can only push
/// out connections that have not yet asked for anything; a scraper sends
/// its request right after connecting, so it is the last to be evicted
/// and is busy (not evictable) by the time it matters. The connection
/// being admitted is already accepted while the evicted one closes, so
/// the process briefly holds one socket more than the cap; it is not
/// served until the table has room.
#[derive(Debug)]
pub struct HttpListener {
    front: &'static str,
    listeners: Vec<TcpListener>,
    local_addrs: Vec<SocketAddr>,
    limits: HttpLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    table: Arc<ConnTable>,
}

/// Live figures of one listener (for tests, logs and metrics).
#[derive(Clone, Debug)]
pub struct HttpStats {
    table: Arc<ConnTable>,
}

impl HttpStats {
    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.table.open()
    }

    /// The most connections ever open at once.
    pub fn peak_connections(&self) -> usize {
        self.table.peak()
    }

    /// Connections closed to make room for a new one.
    pub fn evicted_connections(&self) -> u64 {
        self.table.evicted()
    }
}

impl HttpListener {
    /// Bind every address now (port 0: the kernel picks one), so a taken
    /// port is reported before the daemon says it is ready. `front` names
    /// the listener in logs and errors ("metrics").
    pub async fn bind(
        front: &'static str,
        addrs: &[SocketAddr],
        limits: HttpLimits,
    ) -> Result<HttpListener, HttpError> {
        if addrs.is_empty() {
            return Err(HttpError::NoAddress { front });
        }
        let mut listeners = Vec::with_capacity(addrs.len());
        let mut local_addrs = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            let bind_err = |source| HttpError::Bind {
                front,
                addr,
                source,
            };
            let l = TcpListener::bind(addr).await.map_err(bind_err)?;
            local_addrs.push(l.local_addr().map_err(bind_err)?);
            listeners.push(l);
        }
        Ok(HttpListener {
            front,
            listeners,
            local_addrs,
            table: ConnTable::new(limits.max_connections),
            limits,
            tls: None,
        })
    }

    /// Serve HTTPS with `config` (see [`TlsSettings::server_config`]).
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> HttpListener {
        self.tls = Some(config);
        self
    }

    /// The bound addresses, in the order given to [`HttpListener::bind`],
    /// with the ports the kernel chose.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    pub fn stats(&self) -> HttpStats {
        HttpStats {
            table: self.table.clone(),
        }
    }

    /// Serve `router` until `shutdown` resolves, then stop accepting, close
    /// idle connections and give requests in progress up to the request
    /// timeout to finish; returns when every connection is closed. Accept
    /// errors are logged (rate-limited) and retried, never fatal.
    pub async fn serve(self, router: Router, shutdown: impl Future<Output = ()>) {
        let HttpListener {
            front,
            listeners,
            local_addrs,
            limits,
            tls,
            table,
        } = self;
        let cx = Arc::new(ConnContext {
            http: http1_builder(&limits),
            router: with_stack_layers(router, &limits),
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            limits,
        });
        tracing::info!(front, addrs = ?local_addrs, tls = cx.tls.is_some(), "HTTP listener serving");
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut next = 0usize;
        let mut last_warn: Option<Instant> = None;
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(r) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = r && e.is_panic() {
                        tracing::error!(front, error = %e, "HTTP connection task panicked");
                    }
                    continue;
                }
                r = accept_any(&listeners, &mut next) => r,
            };
            let (stream, peer) = match accepted {
                Ok(c) => c,
                Err(e) if is_client_error(&e) => continue,
                Err(e) => {
                    if last_warn.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_EVERY) {
                        tracing::warn!(front, error = %e, "HTTP listener cannot accept; retrying");
                        last_warn = Some(Instant::now());
                    }
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            };
            let conn = tokio::select! {
                () = &mut shutdown => break,
                c = table.admit() => c,
            };
            // Responses are written whole; don't hold their last segment back.
            let _ = stream.set_nodelay(true);
            let span = tracing::debug_span!("http", front, %peer);
            tasks
                .spawn(conn::run(stream, peer, conn, cx.clone(), stop_rx.clone()).instrument(span));
        }

        // New clients are refused from here on.
        drop(listeners);
        let _ = stop_tx.send(true);
        let grace = cx.limits.request_timeout;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                front,
                open = tasks.len(),
                "HTTP requests still running after the shutdown grace; closing them"
            );
            tasks.shutdown().await;
        }
        tracing::info!(front, "HTTP listener stopped");
    }
}

/// hyper's HTTP/1.1 settings for `limits`.
fn http1_builder(limits: &HttpLimits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The read buffer bounds the request head: a head that does not
        // fit gets 431. (Body reads go through it in pieces.)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .keep_alive(!limits.keepalive_timeout.is_zero())
        // A client that half-closes after its request gets no answer on a
        // server that keeps reading; closing is the safe reading of it.
        .half_close(false);
    b
}

/// The layers every front gets, outermost first: logging, request
/// timeout, body limit.
fn with_stack_layers(router: Router, limits: &HttpLimits) -> Router {
    router
        // axum's extractors (Bytes, Json, …) have their own 2 MB default;
        // make them agree with the configured limit.
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        // Refuses a declared Content-Length over the limit before the
        // handler runs, and cuts off any body stream at the limit.
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        // 5xx (e.g. /readyz answering 503) is an answer, not an error of
        // the stack: debug like the rest.
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG)))
}

/// Accept from whichever listener has a connection, starting after the one
/// that accepted last so that a flood on one address cannot starve another.
/// (The TLS front's accept loop uses it too.)
pub(crate) async fn accept_any(
    listeners: &[TcpListener],
    next: &mut usize,
) -> io::Result<(TcpStream, SocketAddr)> {
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        for i in 0..n {
            let k = (*next + i) % n;
            if let Poll::Ready(r) = listeners[k].poll_accept(cx) {
                *next = (k + 1) % n;
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await
}

/// Errors that concern one client (it reset or aborted before the accept
/// completed), not the listener: retry at once.
pub(crate) fn is_client_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
