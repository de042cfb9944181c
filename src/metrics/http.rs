//! `/metrics`, `/healthz` and `/readyz` as an axum [`Router`], served by the
//! shared HTTP stack ([`crate::http`]) with the `[metrics]` limits.
//!
//! `GET` and `HEAD` only (405 with `Allow` otherwise), 404 for any other
//! path; every answer is `Cache-Control: no-store`, as a probe or scrape
//! must never see a cached one.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{Metrics, MetricsConfig, MetricsError};
use crate::http::{HttpListener, HttpStats};

/// The OpenMetrics text format, which Prometheus, VictoriaMetrics and the
/// Grafana agent all scrape.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Whether `/readyz` should answer 200 ([`super::Readiness::check`]).
pub(crate) type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct Endpoints {
    metrics: Arc<Metrics>,
    ready: ReadyCheck,
}

/// The metrics endpoints, for [`HttpListener::serve`].
pub(crate) fn router(metrics: Arc<Metrics>, ready: ReadyCheck) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Endpoints { metrics, ready })
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

fn text(status: StatusCode, body: &str) -> Response {
    reply(status, TEXT, body.to_string())
}

async fn scrape(State(e): State<Endpoints>) -> Response {
    match e.metrics.render() {
        Ok(body) => reply(StatusCode::OK, OPENMETRICS, body),
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err}\n")),
    }
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

async fn readyz(State(e): State<Endpoints>) -> Response {
    if (e.ready)() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found (try /metrics, /healthz, /readyz)\n",
    )
}

async fn method_not_allowed() -> Response {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    // Set here, axum leaves it alone (it would write "GET,HEAD").
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

/// The bound metrics listener; [`MetricsServer::run`] serves it.
#[derive(Debug)]
pub struct MetricsServer {
    listener: HttpListener,
}

impl MetricsServer {
    /// Bind every `metrics.listen` address now, so a taken port is reported
    /// before the server says it is ready.
    pub async fn bind(config: &MetricsConfig) -> Result<MetricsServer, MetricsError> {
        let listener = HttpListener::bind("metrics", &config.listen, config.limits.clone()).await?;
        Ok(MetricsServer { listener })
    }

    /// The bound addresses (with the ports the kernel chose for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.listener.local_addrs()
    }

    pub fn stats(&self) -> HttpStats {
        self.listener.stats()
    }

    /// Serve until `shutdown` resolves, then stop gracefully (see
    /// [`HttpListener::serve`]).
    pub async fn run(
        self,
        metrics: Arc<Metrics>,
        ready: ReadyCheck,
        shutdown: impl Future<Output = ()>,
    ) {
        self.listener.serve(router(metrics, ready), shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::http::tests::{exchange, read_response};
    use crate::http::{HttpError, HttpLimits, MIN_HEADER_BYTES};
    use crate::metrics::{Exposition, Transport};

    fn up(i: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, i], 53))
    }

    struct Running {
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    impl Running {
        async fn stop(self) {
            let _ = self.stop.send(());
            tokio::time::timeout(Duration::from_secs(5), self.task)
                .await
                .expect("stops")
                .unwrap();
        }
    }

    async fn start(ready: bool) -> Running {
        let metrics = Arc::new(Metrics::new(&[up(1)]));
        let config = MetricsConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            limits: HttpLimits {
                header_timeout: Duration::from_millis(300),
                ..HttpLimits::default()
            },
        };
        let srv = MetricsServer::bind(&config).await.unwrap();
        let addr = srv.local_addrs()[0];
        let (stop, stopped) = oneshot::channel::<()>();
        let m = metrics.clone();
        let task = tokio::spawn(srv.run(m, Arc::new(move || ready), async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            metrics,
            stop,
            task,
        }
    }

    #[tokio::test]
    async fn http_endpoints() {
        let srv = start(true).await;
        let addr = srv.addr;
        srv.metrics.query(Transport::Udp, 1);
        let (st, head, body) = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(st, 200);
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("application/openmetrics-text"), "{head}");
        assert!(
            lower.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(lower.contains("cache-control: no-store"), "{head}");
        let e = Exposition::parse(&body).unwrap();
        assert_eq!(
            e.value(
                "sinkhole_queries_total",
                &[("transport", "udp"), ("type", "A")]
            ),
            Some(1.0)
        );
        let (st, _, body) = exchange(addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
        assert_eq!((st, body.as_str()), (200, "ok\n"));
        let (st, _, _) = exchange(addr, b"GET /readyz?verbose=1 HTTP/1.1\n\n").await;
        assert_eq!(st, 200);
        let (st, head, body) = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(st, 200);
        let lower = head.to_ascii_lowercase();
        assert!(
            body.is_empty()
                && lower.contains("content-length: ")
                && !lower.contains("content-length: 0"),
            "{head}"
        );
        let (st, _, _) = exchange(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(st, 404);
        let (st, _, _) = exchange(addr, b"GET /metricsx HTTP/1.1\r\n\r\n").await;
        assert_eq!(st, 404);
        let (st, head, _) =
            exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(st, 405);
        assert!(
            head.to_ascii_lowercase().contains("allow: get, head"),
            "{head}"
        );
        srv.stop().await;

        let srv = start(false).await;
        let (st, _, body) = exchange(srv.addr, b"GET /readyz HTTP/1.1\r\n\r\n").await;
        assert_eq!((st, body.as_str()), (503, "not ready\n"));
        let (st, _, _) = exchange(srv.addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(st, 200);
        srv.stop().await;
    }

    #[tokio::test]
    async fn keep_alive_serves_several_requests() {
        let srv = start(true).await;
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        for path in ["/healthz", "/readyz", "/metrics"] {
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let (st, _, _) = read_response(&mut s, req.as_bytes()).await;
            assert_eq!(st, 200, "{path}");
        }
        srv.stop().await;
    }

    #[tokio::test]
    async fn http_survives_garbage() {
        let srv = start(true).await;
        let addr = srv.addr;
        let huge = vec![b'A'; MIN_HEADER_BYTES * 4];
        // 0: closed without an answer. hyper answers what it can parse as
        // HTTP/1 with 400 and closes a connection whose head never ends
        // when the header timeout passes (408 before the shared stack).
        let cases: Vec<(&[u8], u16)> = vec![
            (b"\x00\xff\xfe garbage\r\n\r\n", 400),
            (b"GET\r\n\r\n", 400),
            (b"GET /metrics\r\n\r\n", 400),
            (b"GET /metrics HTTP/1.1 extra\r\n\r\n", 400),
            (b"GET /metrics SPDY/3\r\n\r\n", 400),
            (&huge, 431),
            // No blank line ever: the header timeout closes it.
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", 0),
        ];
        for (req, want) in cases {
            let (st, _, _) = exchange(addr, req).await;
            assert_eq!(
                st,
                want,
                "{:?}",
                String::from_utf8_lossy(&req[..req.len().min(40)])
            );
        }
        // Absolute-form targets are valid HTTP/1.1 (RFC 9112 §3.2.2) and
        // route by their path.
        let (st, _, _) = exchange(addr, b"GET http://x/metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(st, 200);
        // Blank lines alone are skipped before a request line (RFC 9112
        // §2.2); nothing follows, so nothing is answered.
        let (st, _, _) = exchange(addr, b"\r\n\r\n").await;
        assert_eq!(st, 0);
        // A client that connects and closes, and one that half-closes at once.
        drop(TcpStream::connect(addr).await.unwrap());
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        assert!(out.is_empty());
        // Still serving.
        let (st, _, _) = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(st, 200);
        srv.stop().await;
    }

    #[tokio::test]
    async fn bind_error_is_typed() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = MetricsConfig {
            listen: vec![l.local_addr().unwrap()],
            limits: HttpLimits::default(),
        };
        let r = MetricsServer::bind(&config).await;
        assert!(
            matches!(r, Err(MetricsError::Http(HttpError::Bind { .. }))),
            "{r:?}"
        );
        let e = r.unwrap_err().to_string();
        assert!(e.contains("metrics") && e.contains("cannot listen"), "{e}");
    }
}
