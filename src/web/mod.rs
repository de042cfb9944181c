//! URL enforcement (issue 12): the DNS side steers names with URL rules to
//! this front (`policy::Decision::Steer`); the HTTP front answers a
//! request a rule covers with 451 and the block page, proxies every other
//! request for a steered host to its origin, and refuses the rest (421).
//!
//! * `config.rs`: `[web]` (and `policy.https_url`), validated;
//! * `page.rs`: the block page template and the notice page;
//! * `front.rs`: the request handler (decision order in its docs);
//! * `proxy.rs`: the reverse proxy;
//! * `origin.rs`: origin addresses from the upstream resolvers, checked;
//! * `tls.rs`: the TLS pass-through front (SNI routing).

pub mod config;
mod front;
pub(crate) mod origin;
pub mod page;
mod proxy;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use thiserror::Error;

use crate::acl::Acl;
use crate::audit::AuditLog;
use crate::http::{HttpError, HttpListener, HttpStats};
use crate::list::Snapshot;
use crate::metrics::Metrics;
use crate::policy::PolicyConfig;

pub use config::{HttpsUrl, RawWebConfig, WebConfig};

#[derive(Debug, Error)]
pub enum WebError {
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// The bound HTTP front, not yet serving.
pub struct WebServer {
    listener: HttpListener,
    config: WebConfig,
}

/// What the front shares with the rest of the server.
pub struct WebContext {
    pub policy: PolicyConfig,
    pub acl: Vec<ipnet::IpNet>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub audit: Option<AuditLog>,
    pub metrics: Arc<Metrics>,
    /// The upstream resolvers: origins are resolved there, never through
    /// sinkhole's own policy.
    pub upstreams: Vec<SocketAddr>,
}

impl WebServer {
    /// Bind `web.listen` now, so a taken port fails the start.
    pub async fn bind(config: &WebConfig) -> Result<WebServer, WebError> {
        let listener = HttpListener::bind("web", &config.listen, config.limits.clone()).await?;
        Ok(WebServer {
            listener,
            config: config.clone(),
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.listener.local_addrs()
    }

    pub fn stats(&self) -> HttpStats {
        self.listener.stats()
    }

    /// Serve until `shutdown` resolves.
    pub async fn run(self, cx: WebContext, shutdown: impl std::future::Future<Output = ()>) {
        let own = self.config.own_addresses();
        let proxy = proxy::Proxy {
            connector: None,
            port: self.config.origin_http_port,
            timeout: self.config.origin_timeout,
            metrics: cx.metrics.clone(),
        };
        let front = Arc::new(front::Front {
            acl: Acl::new(&cx.acl),
            policy: cx.policy,
            snapshot: cx.snapshot,
            audit: cx.audit,
            metrics: cx.metrics,
            proxy,
            own,
            config: self.config,
        });
        // The open-connection gauge, sampled: the stack keeps the count.
        let (stats, metrics) = (self.listener.stats(), front.metrics.clone());
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                metrics.web.set_open_connections(stats.open_connections());
            }
        });
        self.listener.serve(front::router(front), shutdown).await;
        sampler.abort();
    }
}
