//! `[metrics]` in the configuration file: where `/metrics`, `/healthz` and
//! `/readyz` listen, and the limits of that listener.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::http::{HttpLimits, RawHttpLimits, RawListen, SettingError};

/// `[metrics]` as written. The limit keys are those of
/// [`RawHttpLimits`] that matter for a GET-only endpoint, spelled out here
/// because serde cannot flatten a table and still reject unknown keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetricsConfig {
    /// `ADDRESS:PORT`, or a list of them, serving `/metrics`, `/healthz`,
    /// `/readyz`; empty: off. Off by default so two servers on one host
    /// never fight over a port; the packaged configuration sets
    /// `127.0.0.1:9153`.
    pub listen: RawListen,
    /// Connections open at once (over all addresses); at the cap the one
    /// idle longest is closed to admit a new one.
    pub max_connections: usize,
    /// Time to send a complete request head (and the TLS handshake).
    pub header_timeout_ms: u64,
    /// Time from a request head to the response head.
    pub request_timeout_ms: u64,
    /// Idle time allowed between requests on one connection; 0: no
    /// keep-alive.
    pub keepalive_timeout_ms: u64,
    /// Longest request head; more gets 431.
    pub max_header_bytes: usize,
}

impl Default for RawMetricsConfig {
    fn default() -> Self {
        let l = RawHttpLimits::default();
        RawMetricsConfig {
            listen: RawListen::default(),
            max_connections: l.max_connections,
            header_timeout_ms: l.header_timeout_ms,
            request_timeout_ms: l.request_timeout_ms,
            keepalive_timeout_ms: l.keepalive_timeout_ms,
            max_header_bytes: l.max_header_bytes,
        }
    }
}

/// The validated `[metrics]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Addresses to serve on; empty: metrics are off.
    pub listen: Vec<SocketAddr>,
    pub limits: HttpLimits,
}

impl RawMetricsConfig {
    /// Check every key; errors name it (`metrics.listen`).
    pub fn validate(&self) -> Result<MetricsConfig, SettingError> {
        let listen = self.listen.parse("metrics.listen")?;
        let limits = RawHttpLimits {
            max_connections: self.max_connections,
            header_timeout_ms: self.header_timeout_ms,
            request_timeout_ms: self.request_timeout_ms,
            keepalive_timeout_ms: self.keepalive_timeout_ms,
            max_header_bytes: self.max_header_bytes,
            // The endpoints take no body; the stack's default cap applies.
            ..RawHttpLimits::default()
        }
        .validate("metrics")?;
        Ok(MetricsConfig { listen, limits })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn validate(text: &str) -> Result<MetricsConfig, SettingError> {
        toml::from_str::<RawMetricsConfig>(text).unwrap().validate()
    }

    #[test]
    fn config_listen() {
        let c: RawMetricsConfig = toml::from_str("").unwrap();
        assert_eq!(c.validate().unwrap(), MetricsConfig::default());
        let c: RawMetricsConfig = toml::from_str("listen = \"127.0.0.1:9153\"").unwrap();
        assert_eq!(
            c.validate().unwrap().listen,
            vec!["127.0.0.1:9153".parse().unwrap()]
        );
        let c: RawMetricsConfig = toml::from_str("listen = \"localhost\"").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("metrics.listen")
        );
        assert!(toml::from_str::<RawMetricsConfig>("port = 1").is_err());
    }

    #[test]
    fn listen_list_and_limits() {
        let c = validate("listen = [\"127.0.0.1:0\", \"[::1]:9153\"]\nmax_connections = 16\nheader_timeout_ms = 1500\nkeepalive_timeout_ms = 0").unwrap();
        assert_eq!(
            c.listen,
            vec![
                "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
                "[::1]:9153".parse().unwrap()
            ]
        );
        assert_eq!(c.limits.max_connections, 16);
        assert_eq!(c.limits.header_timeout, Duration::from_millis(1500));
        assert_eq!(c.limits.keepalive_timeout, Duration::ZERO);
        assert!(validate("listen = []").unwrap().listen.is_empty());
        for (text, key) in [
            ("max_connections = 0", "metrics.max_connections"),
            ("header_timeout_ms = 0", "metrics.header_timeout_ms"),
            ("max_header_bytes = 10", "metrics.max_header_bytes"),
            ("listen = [\"127.0.0.1\"]", "metrics.listen"),
        ] {
            assert_eq!(validate(text).unwrap_err().key, key, "{text}");
        }
        assert!(toml::from_str::<RawMetricsConfig>("max_body_bytes = 1").is_err());
    }
}
