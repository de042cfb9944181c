//! `[web]` in the configuration file: the URL-enforcement front (issue 12),
//! plus `policy.https_url`, which only means something with the front on.
//! Off until `[web] listen` is set.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::http::{HttpLimits, RawHttpLimits, RawListen, SettingError};
use crate::policy::Steer;

use super::page::PageTemplate;

/// `[web]` as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebConfig {
    /// `ADDRESS:PORT`, or a list; empty: no front (URL rules are parsed and
    /// reported, never enforced).
    pub listen: RawListen,
    /// The TLS pass-through front (port 443 in production); empty: none.
    pub tls_listen: RawListen,
    pub origin_http_port: u16,
    pub origin_https_port: u16,
    /// TTL of the steered A/AAAA answers and NODATA (seconds).
    pub steer_ttl: u32,
    /// The operator's text on the block page.
    pub operator: String,
    /// The `Link: <…>; rel="blocked-by"` target; empty: the front's own
    /// notice page.
    pub blocked_by_url: String,
    /// The front's own host name (its notice page answers for it).
    pub hostname: String,
    /// Block page template file; empty: the built-in page.
    pub page: String,
    pub max_connections: usize,
    /// Proxy to loopback, private, link-local, shared and unspecified
    /// origin addresses too (tests, private deployments).
    pub allow_private_origins: bool,
    /// Connecting to an origin and reading its response head.
    pub origin_timeout_ms: u64,
    pub header_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub keepalive_timeout_ms: u64,
    pub max_header_bytes: usize,
    /// Largest request body passed to an origin.
    pub max_body_bytes: usize,
}

impl Default for RawWebConfig {
    fn default() -> Self {
        let l = RawHttpLimits::default();
        RawWebConfig {
            listen: RawListen::default(),
            tls_listen: RawListen::default(),
            origin_http_port: 80,
            origin_https_port: 443,
            steer_ttl: 30,
            operator: "This page is blocked by order of the competent authority.".into(),
            blocked_by_url: String::new(),
            hostname: String::new(),
            page: String::new(),
            max_connections: 10_000,
            allow_private_origins: false,
            origin_timeout_ms: 10_000,
            header_timeout_ms: l.header_timeout_ms,
            // A proxied response head may take a while; bodies stream
            // outside this limit.
            request_timeout_ms: 30_000,
            keepalive_timeout_ms: l.keepalive_timeout_ms,
            max_header_bytes: l.max_header_bytes,
            max_body_bytes: 16 << 20,
        }
    }
}

/// `policy.https_url`: what an `https://` URL rule (or a scheme-less one,
/// which stands for both schemes) does at the TLS front, where the path
/// is invisible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpsUrl {
    /// Refuse the whole host's TLS handshakes (what registries' operators do).
    Host,
    /// Let them through.
    Pass,
}

impl HttpsUrl {
    pub fn parse(s: &str) -> Option<HttpsUrl> {
        match s.trim().to_ascii_lowercase().as_str() {
            "host" => Some(HttpsUrl::Host),
            "pass" => Some(HttpsUrl::Pass),
            _ => None,
        }
    }
}

/// The validated `[web]` table.
#[derive(Clone, Debug)]
pub struct WebConfig {
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub origin_http_port: u16,
    pub origin_https_port: u16,
    /// What the DNS side answers for names with URL rules.
    pub steer: Steer,
    pub operator: String,
    pub blocked_by_url: String,
    pub hostname: Option<String>,
    pub page: PageTemplate,
    pub allow_private_origins: bool,
    pub origin_timeout: Duration,
    pub limits: HttpLimits,
    pub https_url: HttpsUrl,
}

impl WebConfig {
    /// The front's own addresses (the steer targets): its notice page
    /// answers for them, and it never proxies to them.
    pub fn own_addresses(&self) -> Vec<IpAddr> {
        let mut own: Vec<IpAddr> = self.steer.v4.map(IpAddr::V4).into_iter().collect();
        own.extend(self.steer.v6.map(IpAddr::V6));
        own.extend(self.listen.iter().chain(&self.tls_listen).map(|a| a.ip()));
        own.sort();
        own.dedup();
        own
    }
}

fn err(key: &str, message: impl Into<String>) -> SettingError {
    SettingError {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The `[policy]` keys the front depends on, as written.
pub struct PolicyAddresses<'a> {
    pub address_v4: &'a str,
    pub address_v6: &'a str,
    /// The values `[policy]` has when the file does not set them.
    pub default_v4: &'a str,
    pub default_v6: &'a str,
    pub https_url: &'a str,
}

/// Largest block page template read.
const MAX_TEMPLATE_BYTES: u64 = 64 << 10;

impl RawWebConfig {
    /// Check every key; errors name it (`web.listen`). `policy` gives the
    /// addresses the DNS side answers with: with the front on, they must be
    /// set explicitly (the defaults are documentation addresses where
    /// nothing listens), or the server refuses to start.
    pub fn validate(
        &self,
        policy: &PolicyAddresses<'_>,
    ) -> Result<Option<WebConfig>, SettingError> {
        let https_url = HttpsUrl::parse(policy.https_url).ok_or_else(|| {
            err(
                "policy.https_url",
                format!("{:?}: host or pass", policy.https_url),
            )
        })?;
        let listen = self.listen.parse("web.listen")?;
        let tls_listen = self.tls_listen.parse("web.tls_listen")?;
        if listen.is_empty() {
            if !tls_listen.is_empty() {
                return Err(err(
                    "web.tls_listen",
                    "the TLS front needs the HTTP front: set web.listen too",
                ));
            }
            return Ok(None);
        }
        let explicit = |set: &str, default: &str| set.trim() != default;
        let v4 = explicit(policy.address_v4, policy.default_v4)
            .then(|| policy.address_v4.trim().parse::<Ipv4Addr>())
            .transpose()
            .map_err(|_| err("policy.address_v4", "not an IPv4 address"))?;
        let v6 = explicit(policy.address_v6, policy.default_v6)
            .then(|| policy.address_v6.trim().parse::<Ipv6Addr>())
            .transpose()
            .map_err(|_| err("policy.address_v6", "not an IPv6 address"))?;
        if v4.is_none() && v6.is_none() {
            return Err(err(
                "policy.address_v4",
                "[web] listen is set: set policy.address_v4 and/or address_v6 to the front's public \
                 addresses (steered names would otherwise resolve to an address where nothing listens)",
            ));
        }
        if self.steer_ttl == 0 || self.steer_ttl > 86_400 {
            return Err(err("web.steer_ttl", "must be 1 to 86400 seconds"));
        }
        if self.origin_http_port == 0 {
            return Err(err("web.origin_http_port", "must be 1 to 65535"));
        }
        if self.origin_https_port == 0 {
            return Err(err("web.origin_https_port", "must be 1 to 65535"));
        }
        if self.origin_timeout_ms == 0 || self.origin_timeout_ms > 600_000 {
            return Err(err("web.origin_timeout_ms", "must be 1 to 600000 ms"));
        }
        let hostname = match self.hostname.trim() {
            "" => None,
            h => Some(
                crate::list::url::normalize_host(h)
                    .map_err(|e| err("web.hostname", e.to_string()))?,
            ),
        };
        let page = if self.page.trim().is_empty() {
            PageTemplate::builtin()
        } else {
            let path = PathBuf::from(self.page.trim());
            let meta = std::fs::metadata(&path)
                .map_err(|e| err("web.page", format!("{}: {e}", path.display())))?;
            if meta.len() > MAX_TEMPLATE_BYTES {
                return Err(err(
                    "web.page",
                    format!("{}: larger than {MAX_TEMPLATE_BYTES} bytes", path.display()),
                ));
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| err("web.page", format!("{}: {e}", path.display())))?;
            PageTemplate::parse(&text).map_err(|m| err("web.page", m))?
        };
        let blocked_by_url = match self.blocked_by_url.trim() {
            "" => {
                let host = hostname.clone().unwrap_or_else(|| match (v4, v6) {
                    (Some(v4), _) => v4.to_string(),
                    (None, Some(v6)) => format!("[{v6}]"),
                    (None, None) => String::from("localhost"),
                });
                format!("http://{host}/")
            }
            u if u.contains(['<', '>', '"', '\r', '\n']) || !u.is_ascii() => {
                return Err(err(
                    "web.blocked_by_url",
                    "must be an ASCII URL without <, >, \" or line breaks",
                ));
            }
            u => u.to_string(),
        };
        let limits = RawHttpLimits {
            max_connections: self.max_connections,
            header_timeout_ms: self.header_timeout_ms,
            request_timeout_ms: self.request_timeout_ms,
            keepalive_timeout_ms: self.keepalive_timeout_ms,
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: self.max_body_bytes,
        }
        .validate("web")?;
        Ok(Some(WebConfig {
            listen,
            tls_listen,
            origin_http_port: self.origin_http_port,
            origin_https_port: self.origin_https_port,
            steer: Steer {
                v4,
                v6,
                ttl: self.steer_ttl,
            },
            operator: self.operator.clone(),
            blocked_by_url,
            hostname,
            page,
            allow_private_origins: self.allow_private_origins,
            origin_timeout: Duration::from_millis(self.origin_timeout_ms),
            limits,
            https_url,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy<'a>(v4: &'a str, v6: &'a str) -> PolicyAddresses<'a> {
        PolicyAddresses {
            address_v4: v4,
            address_v6: v6,
            default_v4: "192.0.2.1",
            default_v6: "2001:db8::1",
            https_url: "host",
        }
    }

    fn on() -> RawWebConfig {
        RawWebConfig {
            listen: RawListen::One("127.0.0.1:0".into()),
            ..RawWebConfig::default()
        }
    }

    #[test]
    fn off_by_default_and_needs_explicit_addresses() {
        let d = RawWebConfig::default();
        assert!(
            d.validate(&policy("192.0.2.1", "2001:db8::1"))
                .unwrap()
                .is_none()
        );
        let e = on()
            .validate(&policy("192.0.2.1", "2001:db8::1"))
            .unwrap_err();
        assert_eq!(e.key, "policy.address_v4");
        let c = on()
            .validate(&policy("127.0.0.1", "2001:db8::1"))
            .unwrap()
            .unwrap();
        assert_eq!(c.steer.v4, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            c.steer.v6, None,
            "the documentation default is never a steer target"
        );
        assert_eq!(c.steer.ttl, 30);
        assert_eq!(c.blocked_by_url, "http://127.0.0.1/");
        let c = on().validate(&policy("192.0.2.1", "::1")).unwrap().unwrap();
        assert_eq!((c.steer.v4, c.steer.v6), (None, Some(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn bad_values_name_the_key() {
        let p = policy("127.0.0.1", "2001:db8::1");
        let cases: Vec<(RawWebConfig, &str)> = vec![
            (
                RawWebConfig {
                    steer_ttl: 0,
                    ..on()
                },
                "web.steer_ttl",
            ),
            (
                RawWebConfig {
                    hostname: "bad host".into(),
                    ..on()
                },
                "web.hostname",
            ),
            (
                RawWebConfig {
                    page: "/nonexistent/page.html".into(),
                    ..on()
                },
                "web.page",
            ),
            (
                RawWebConfig {
                    blocked_by_url: "x\"y".into(),
                    ..on()
                },
                "web.blocked_by_url",
            ),
            (
                RawWebConfig {
                    max_connections: 0,
                    ..on()
                },
                "web.max_connections",
            ),
            (
                RawWebConfig {
                    listen: RawListen::default(),
                    tls_listen: RawListen::One("127.0.0.1:0".into()),
                    ..on()
                },
                "web.tls_listen",
            ),
        ];
        for (raw, key) in cases {
            assert_eq!(raw.validate(&p).unwrap_err().key, key);
        }
        let bad_https = PolicyAddresses {
            https_url: "block",
            ..policy("127.0.0.1", "2001:db8::1")
        };
        assert_eq!(
            on().validate(&bad_https).unwrap_err().key,
            "policy.https_url"
        );
    }
}
