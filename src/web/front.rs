//! The HTTP front: one handler for every request, deciding in this order
//!
//! 1. the client must be in `acl.allow` (403 otherwise);
//! 2. proxy hygiene: `CONNECT` is 405, a request with both
//!    `Content-Length` and `Transfer-Encoding` is framed by the chunked
//!    encoding alone and its connection closed (hyper, RFC 9112 §6.1; 400
//!    if both ever reach the handler), an absolute-form
//!    target naming another host than `Host` is 400, no usable host is 400;
//! 3. the front's own host name or addresses: `GET /` is the notice (200),
//!    anything else 404;
//! 4. a host blocked as a whole (reached in `address` mode, or with a stale
//!    cached address) and a URL a rule covers: 451 with the block page, a
//!    `Link: <…>; rel="blocked-by"` header and a `url-block` audit record;
//! 5. any other request for a host with URL rules: reverse-proxied to the
//!    origin (`proxy.rs`; a WebSocket or other `Upgrade` is refused with 501,
//!    because the front decides per request and an upgraded stream is opaque);
//! 6. anything else: 421 Misdirected Request (the front is never an open
//!    proxy).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::acl::Acl;
use crate::audit::AuditLog;
use crate::list::Snapshot;
use crate::list::url::NormUrl;
use crate::metrics::Metrics;
use crate::metrics::web::WebOutcome;
use crate::policy::{self, Decision, PolicyConfig, Query};

use super::config::WebConfig;
use super::page::{self, PageValues};
use super::proxy::Proxy;
use super::quote::Quoted;

/// Everything a request needs, shared by every connection.
pub(crate) struct Front {
    pub(crate) config: WebConfig,
    pub(crate) policy: PolicyConfig,
    pub(crate) acl: Acl,
    pub(crate) snapshot: Arc<ArcSwap<Snapshot>>,
    pub(crate) audit: Option<AuditLog>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) proxy: Proxy,
    /// The front's own addresses (notice page; never proxied to).
    pub(crate) own: Vec<IpAddr>,
}

pub(crate) fn router(front: Arc<Front>) -> Router {
    Router::new().fallback(handle).with_state(front)
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
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

async fn handle(
    State(front): State<Arc<Front>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (outcome, resp) = decide(&front, peer, req).await;
    front.metrics.web.request(outcome);
    resp
}

/// The host a request is for: the absolute-form target's authority if
/// there is one (it must agree with `Host`), else `Host`.
fn request_host(req: &Request) -> Result<String, &'static str> {
    let host_header = match req.headers().get_all(header::HOST).iter().count() {
        0 => None,
        1 => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string),
        _ => return Err("more than one Host header\n"),
    };
    match (req.uri().authority(), host_header) {
        (Some(auth), Some(h)) => {
            let same = NormUrl::from_request(auth.as_str(), "/")
                .ok()
                .zip(NormUrl::from_request(&h, "/").ok())
                .is_some_and(|(a, b)| a.host == b.host && a.port == b.port);
            if same {
                Ok(h)
            } else {
                Err("absolute-form target for another host than Host\n")
            }
        }
        (Some(auth), None) => Ok(auth.as_str().to_string()),
        (None, Some(h)) => Ok(h),
        (None, None) => Err("no Host header\n"),
    }
}

fn has_both_lengths(h: &HeaderMap) -> bool {
    h.contains_key(header::CONTENT_LENGTH) && h.contains_key(header::TRANSFER_ENCODING)
}

async fn decide(front: &Front, peer: SocketAddr, req: Request) -> (WebOutcome, Response) {
    if !front.acl.allows(peer.ip()) {
        return (
            WebOutcome::Refused,
            plain(StatusCode::FORBIDDEN, "forbidden\n"),
        );
    }
    if req.method() == Method::CONNECT {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not served: this is not a forward proxy\n",
        );
        r.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"),
        );
        return (WebOutcome::Refused, r);
    }
    // hyper already resolves this ambiguity as RFC 9112 §6.1 allows: it
    // drops Content-Length, reads the chunked body and closes the
    // connection after the response, and the proxy re-frames every body,
    // so no second request can be smuggled to an origin. Kept for any
    // parser that hands both through.
    if has_both_lengths(req.headers()) {
        return (
            WebOutcome::Refused,
            plain(
                StatusCode::BAD_REQUEST,
                "Content-Length with Transfer-Encoding (request smuggling)\n",
            ),
        );
    }
    let host = match request_host(&req) {
        Ok(h) => h,
        Err(why) => return (WebOutcome::Refused, plain(StatusCode::BAD_REQUEST, why)),
    };
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let url = match NormUrl::from_request(&host, &target) {
        Ok(u) => u,
        Err(_) => {
            return (
                WebOutcome::Refused,
                plain(StatusCode::BAD_REQUEST, "bad Host\n"),
            );
        }
    };
    if is_own(front, &url.host) {
        return if url.path == "/" && matches!(*req.method(), Method::GET | Method::HEAD) {
            let body = page::notice(&front.config.operator);
            let resp = (
                StatusCode::OK,
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
                body,
            )
                .into_response();
            (WebOutcome::Notice, resp)
        } else {
            (
                WebOutcome::Notice,
                plain(StatusCode::NOT_FOUND, "not found\n"),
            )
        };
    }
    let snap = front.snapshot.load_full();
    if let Some(blocked) = blocked_by(front, &snap, &url) {
        let page = block_page(front, &url, &blocked);
        record(front, &snap, peer, &url, blocked);
        return (WebOutcome::Blocked, page);
    }
    if !snap.has_url_rules(url.host.as_bytes()) {
        return (
            WebOutcome::Misdirected,
            plain(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected request: this server does not serve that host\n",
            ),
        );
    }
    if req.headers().contains_key(header::UPGRADE) {
        return (
            WebOutcome::Refused,
            plain(
                StatusCode::NOT_IMPLEMENTED,
                "protocol upgrades (WebSocket) are not carried through the filtering front\n",
            ),
        );
    }
    drop(snap);
    front.proxy.forward(&url, peer, req).await
}

fn is_own(front: &Front, host: &str) -> bool {
    if front.config.hostname.as_deref() == Some(host) {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .is_ok_and(|ip| front.own.contains(&ip) || ip.is_unspecified())
}

/// The rule that blocks this request: the host as a whole (a name rule,
/// what the DNS side blocks), else a URL rule.
fn blocked_by(front: &Front, snap: &Snapshot, url: &NormUrl) -> Option<Quoted> {
    let q = Query {
        name: url.host.as_bytes(),
        qtype: policy::TYPE_A,
    };
    if let Decision::Block { rule, key, .. } = policy::decide(snap, &q, &front.policy) {
        return Some(Quoted::name_rule(&snap.rule(rule), &url.host, key));
    }
    snap.match_url(url).map(|view| Quoted::url_rule(&view))
}

fn block_page(front: &Front, url: &NormUrl, b: &Quoted) -> Response {
    // A list without legal references (a plain file) still says where
    // the block came from.
    let fallback = format!("list {}, line {}", b.list, b.line);
    let shown = url.to_string();
    let body = front.config.page.render(&PageValues {
        url: &shown,
        decision: b.meta.decision.as_deref().unwrap_or(&fallback),
        authority: b.meta.authority.as_deref().unwrap_or("-"),
        date: b.meta.date.as_deref().unwrap_or("-"),
        entry: b.meta.entry.as_deref().unwrap_or("-"),
        included: b.meta.included.as_deref().unwrap_or("-"),
        operator: &front.config.operator,
    });
    let link = format!("<{}>; rel=\"blocked-by\"", front.config.blocked_by_url);
    let mut resp = (StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&link) {
        h.insert(header::LINK, v);
    }
    resp
}

fn record(front: &Front, snap: &Snapshot, peer: SocketAddr, url: &NormUrl, b: Quoted) {
    let Some(audit) = &front.audit else { return };
    let mut path = url.path.clone();
    if let Some(q) = &url.query {
        path.push('?');
        path.push_str(q);
    }
    audit.record(b.hit(
        peer,
        url.host.clone(),
        "url-block",
        snap.version(),
        (Some(path), None),
    ));
}
