//! The reverse proxy of the HTTP front: a request for a steered host that
//! no rule covers goes to the real origin, as intact as HTTP allows
//! (method, target, headers, `Host`, body streamed both ways), with
//! hop-by-hop headers removed (RFC 9110 §7.6.1), `Via` added, and the
//! response's `Alt-Svc` stripped (it would move the client to HTTP/3,
//! around the front).
//!
//! The origin's address comes from the [`OriginResolver`]: the upstream
//! resolvers, never sinkhole's own policy, resolved once and connected to
//! as resolved, never a forbidden address. One connection per request, HTTP/1.1 over
//! hyper's client connection: no pool to poison, no request of one client
//! on another's connection.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::origin::{OriginError, OriginResolver};
use crate::list::url::NormUrl;
use crate::metrics::Metrics;
use crate::metrics::web::WebOutcome;

pub(crate) struct Proxy {
    pub(crate) client: OriginClient,
    pub(crate) port: u16,
    pub(crate) timeout: Duration,
    pub(crate) metrics: Arc<Metrics>,
}

const VIA: &str = "1.1 sinkhole";

/// Headers of one hop only (RFC 9110 §7.6.1), plus those `Connection`
/// names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

fn status(code: StatusCode, text: &'static str) -> Response {
    (
        code,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        text,
    )
        .into_response()
}

/// The legacy client's connector: every new origin connection goes
/// through the [`OriginResolver`] (upstream resolvers, forbidden
/// addresses refused, connected to as resolved).
#[derive(Clone)]
pub(crate) struct OriginConnector {
    origins: Arc<OriginResolver>,
    timeout: Duration,
}

impl tower::Service<Uri> for OriginConnector {
    type Response = TokioIo<TcpStream>;
    type Error = OriginError;
    type Future =
        Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, OriginError>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), OriginError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let (origins, timeout) = (self.origins.clone(), self.timeout);
        Box::pin(async move {
            let host = dst.host().unwrap_or_default().to_string();
            let port = dst.port_u16().unwrap_or(80);
            let (stream, _) = origins.connect(&host, port, timeout).await?;
            let _ = stream.set_nodelay(true);
            Ok(TokioIo::new(stream))
        })
    }
}

/// The origin client: HTTP/1.1 with idle connections kept per origin
/// host (`POOL_IDLE`, at most `POOL_PER_HOST`), so a proxied request
/// usually skips the connect.
pub(crate) type OriginClient = Client<OriginConnector, Body>;

/// How long an idle origin connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per origin host.
const POOL_PER_HOST: usize = 32;

pub(crate) fn origin_client(origins: Arc<OriginResolver>, timeout: Duration) -> OriginClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_PER_HOST)
        .pool_timer(TokioTimer::new())
        .build(OriginConnector { origins, timeout })
}

/// The origin's own error, if the client's error came from the connector.
fn origin_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a OriginError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(o) = err.downcast_ref::<OriginError>() {
            return Some(o);
        }
        cur = err.source();
    }
    None
}

impl Proxy {
    /// Send `req` to `url.host`'s origin and stream its answer back.
    pub(crate) async fn forward(
        &self,
        url: &NormUrl,
        peer: SocketAddr,
        req: Request,
    ) -> (WebOutcome, Response) {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        // The client wants an absolute URI (it keys its pool by it); it
        // sends the origin-form target, the path and query exactly as the
        // client sent them. The host is the normalised one, resolved by
        // the connector; `Host` stays as the client wrote it.
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let uri = format!("http://{}:{}{target}", url.host, self.port);
        parts.uri = match uri.parse::<Uri>() {
            Ok(u) => u,
            Err(_) => {
                return (
                    WebOutcome::Refused,
                    status(StatusCode::BAD_REQUEST, "bad target\n"),
                );
            }
        };
        if !parts.headers.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(&url.host)
        {
            parts.headers.insert(header::HOST, v);
        }
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .append(header::VIA, HeaderValue::from_static(VIA));
        let outgoing = Request::from_parts(parts, body);
        let resp = match tokio::time::timeout(self.timeout, self.client.request(outgoing)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(host = %url.host, client = %peer, error = %e, "origin failed");
                return match origin_error(&e) {
                    Some(OriginError::Timeout { .. }) => (
                        WebOutcome::Error,
                        status(
                            StatusCode::GATEWAY_TIMEOUT,
                            "the origin did not answer in time\n",
                        ),
                    ),
                    Some(_) => (
                        WebOutcome::Error,
                        status(StatusCode::BAD_GATEWAY, "the origin is unavailable\n"),
                    ),
                    None => (
                        WebOutcome::Error,
                        status(
                            StatusCode::BAD_GATEWAY,
                            "the origin's answer was not usable HTTP\n",
                        ),
                    ),
                };
            }
            Err(_) => {
                return (
                    WebOutcome::Error,
                    status(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the origin did not answer in time\n",
                    ),
                );
            }
        };
        self.metrics
            .web
            .upstream_latency(started.elapsed().as_secs_f64());
        let (mut parts, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::ALT_SVC);
        parts
            .headers
            .append(header::VIA, HeaderValue::from_static(VIA));
        (
            WebOutcome::Proxied,
            Response::from_parts(parts, Body::new(incoming)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_stay() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("content-type", "text/plain"),
            ("cookie", "a=b"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "cookie"]);
    }
}
