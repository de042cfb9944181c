//! Figures of the URL-enforcement web front (issue 12): DNS steering, HTTP
//! requests by outcome, the reverse proxy's upstream latency, open
//! connections. (The TLS front's series are fed at scrape time by
//! `web::tls`.)

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// What became of one HTTP request at the front.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebOutcome {
    /// 451 with the block page.
    Blocked,
    /// Passed to the origin and answered.
    Proxied,
    /// 421: a host the front did not steer.
    Misdirected,
    /// 200: the front's own notice page.
    Notice,
    /// 400/403/405/501: proxy hygiene or the ACL.
    Refused,
    /// 502/504: the origin failed.
    Error,
}

impl WebOutcome {
    pub const ALL: [WebOutcome; 6] = [
        WebOutcome::Blocked,
        WebOutcome::Proxied,
        WebOutcome::Misdirected,
        WebOutcome::Notice,
        WebOutcome::Refused,
        WebOutcome::Error,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            WebOutcome::Blocked => "blocked",
            WebOutcome::Proxied => "proxied",
            WebOutcome::Misdirected => "misdirected",
            WebOutcome::Notice => "notice",
            WebOutcome::Refused => "refused",
            WebOutcome::Error => "error",
        }
    }
}

/// The web front's series, registered with the rest.
#[derive(Debug)]
pub struct WebMetrics {
    steered: Counter,
    requests: [Counter; 6],
    upstream: Histogram,
    open: Gauge,
}

impl WebMetrics {
    pub(super) fn register(registry: &mut Registry) -> WebMetrics {
        let steered = Counter::default();
        registry.register(
            "steered",
            "A/AAAA/HTTPS/SVCB queries for names with URL rules answered for the web front",
            steered.clone(),
        );
        let family = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let requests =
            WebOutcome::ALL.map(|o| family.get_or_create_owned(&[("outcome", o.as_str())]));
        registry.register(
            "web_requests",
            "HTTP requests at the web front, by outcome",
            family,
        );
        // 0.1 ms … 6.5 s.
        let upstream = Histogram::new(exponential_buckets(0.0001, 2.0, 17));
        registry.register_with_unit(
            "web_upstream_duration",
            "Time from connecting to an origin to its response head",
            Unit::Seconds,
            upstream.clone(),
        );
        let open = Gauge::default();
        registry.register(
            "web_http_open_connections",
            "Connections open at the HTTP front (sampled every second)",
            open.clone(),
        );
        WebMetrics {
            steered,
            requests,
            upstream,
            open,
        }
    }

    pub fn steered(&self) {
        self.steered.inc();
    }
    pub fn request(&self, outcome: WebOutcome) {
        let i = WebOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(5);
        self.requests[i].inc();
    }
    pub fn upstream_latency(&self, seconds: f64) {
        self.upstream.observe(seconds);
    }
    pub fn set_open_connections(&self, n: usize) {
        self.open.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
