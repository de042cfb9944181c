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
//! * `tls.rs`: the TLS pass-through front (SNI routing);
//! * `sni.rs`: its decision over the snapshot (`tls-refuse` hits).

pub mod config;
mod front;
pub(crate) mod origin;
pub mod page;
mod proxy;
mod quote;
mod sni;
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
    #[error("{0}")]
    Tls(String),
}

/// The bound fronts (HTTP, and TLS when `tls_listen` is set), not yet
/// serving.
pub struct WebServer {
    listener: HttpListener,
    tls: Option<tls::TlsFront>,
    config: WebConfig,
}

/// What the fronts share with the rest of the server.
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
    /// Bind `web.listen` (and `web.tls_listen`) now, so a taken port fails
    /// the start.
    pub async fn bind(config: &WebConfig) -> Result<WebServer, WebError> {
        let listener = HttpListener::bind("web", &config.listen, config.limits.clone()).await?;
        let tls = if config.tls_listen.is_empty() {
            None
        } else {
            let mut limits = tls::TlsFrontLimits::new(config.limits.max_connections);
            limits.connect_timeout = config.origin_timeout;
            Some(
                tls::TlsFront::bind(&config.tls_listen, limits)
                    .await
                    .map_err(|e| WebError::Tls(e.to_string()))?,
            )
        };
        Ok(WebServer {
            listener,
            tls,
            config: config.clone(),
        })
    }

    /// The HTTP front's bound addresses.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.listener.local_addrs()
    }

    /// The TLS front's bound addresses (empty without `tls_listen`).
    pub fn tls_local_addrs(&self) -> &[SocketAddr] {
        self.tls.as_ref().map_or(&[], |t| t.local_addrs())
    }

    pub fn stats(&self) -> HttpStats {
        self.listener.stats()
    }

    /// Serve until `shutdown` resolves.
    pub async fn run(self, cx: WebContext, shutdown: impl std::future::Future<Output = ()>) {
        let mut own = self.config.own_addresses();
        own.extend(self.listener.local_addrs().iter().map(|a| a.ip()));
        own.extend(self.tls_local_addrs().iter().map(|a| a.ip()));
        let origins = Arc::new(origin::OriginResolver::new(
            cx.upstreams.clone(),
            self.config.allow_private_origins,
            own.clone(),
        ));
        let proxy = proxy::Proxy {
            client: proxy::origin_client(origins.clone(), self.config.origin_timeout),
            port: self.config.origin_http_port,
            timeout: self.config.origin_timeout,
            metrics: cx.metrics.clone(),
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tls_task = self.tls.map(|front| {
            let stats = front.stats();
            cx.metrics.on_scrape(move |s| stats.sample(s));
            let sni = Arc::new(sni::SnapshotSniPolicy {
                snapshot: cx.snapshot.clone(),
                policy: cx.policy.clone(),
                acl: Acl::new(&cx.acl),
                audit: cx.audit.clone(),
                https_url: self.config.https_url,
            });
            let mut stop = stop_rx.clone();
            let port = self.config.origin_https_port;
            tokio::spawn(front.serve(sni, origins.clone(), port, async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        });
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
        let shutdown = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        self.listener.serve(front::router(front), shutdown).await;
        sampler.abort();
        if let Some(t) = tls_task {
            let _ = t.await;
        }
    }
}
