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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use super::origin::{OriginError, OriginResolver};
use crate::list::url::NormUrl;
use crate::metrics::Metrics;
use crate::metrics::web::WebOutcome;

pub(crate) struct Proxy {
    pub(crate) origins: Arc<OriginResolver>,
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

impl Proxy {
    /// Send `req` to `url.host`'s origin and stream its answer back.
    pub(crate) async fn forward(
        &self,
        url: &NormUrl,
        peer: SocketAddr,
        req: Request,
    ) -> (WebOutcome, Response) {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (stream, origin) = match self
            .origins
            .connect(&url.host, self.port, self.timeout)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(host = %url.host, client = %peer, error = %e, "origin unavailable");
                return match e {
                    OriginError::Timeout { .. } => (
                        WebOutcome::Error,
                        status(
                            StatusCode::GATEWAY_TIMEOUT,
                            "the origin did not answer in time\n",
                        ),
                    ),
                    _ => (
                        WebOutcome::Error,
                        status(StatusCode::BAD_GATEWAY, "the origin is unavailable\n"),
                    ),
                };
            }
        };
        let (mut parts, body) = req.into_parts();
        // Origin-form target: the path and query exactly as the client
        // sent them.
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        parts.uri = match target.parse::<Uri>() {
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

        let exchange = async {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "origin connection ended");
                }
            });
            sender.send_request(outgoing).await
        };
        let resp = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(host = %url.host, %origin, error = %e, "origin answered badly");
                return (
                    WebOutcome::Error,
                    status(
                        StatusCode::BAD_GATEWAY,
                        "the origin's answer was not usable HTTP\n",
                    ),
                );
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
