//! Configuration shared by every HTTP front: the connection limits and
//! timeouts ([`HttpLimits`], raw form [`RawHttpLimits`]) and `listen` keys
//! that take one address or a list of them ([`RawListen`]).
//!
//! Raw forms mirror the TOML one to one; `validate` turns them into the
//! typed values the listener runs on, naming the offending key in errors
//! (`metrics.max_connections`), as `crate::config` does for its own keys.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

/// A configuration value that is out of range or does not parse; `key` is
/// the full TOML key (`metrics.listen`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid value for `{key}`: {message}")]
pub struct SettingError {
    pub key: String,
    pub message: String,
}

impl SettingError {
    fn new(table: &str, key: &str, message: impl Into<String>) -> SettingError {
        SettingError {
            key: format!("{table}.{key}"),
            message: message.into(),
        }
    }
}

/// hyper's smallest read buffer; the header limit is enforced through that
/// buffer, so it cannot be smaller.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Limits and timeouts of one HTTP front. Every HTTP listener faces
/// untrusted clients, so each has all of them; the defaults suit a
/// scrape/admin endpoint with a handful of clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once. At the cap the connection that has waited
    /// longest for a request head is closed to admit a new one (see
    /// `HttpListener`).
    pub max_connections: usize,
    /// How long a client may take to send a complete request head, counted
    /// from the accept (after the TLS handshake, which has the same bound)
    /// or, on a kept-alive connection, from the end of the previous
    /// response.
    pub header_timeout: Duration,
    /// How long a request may take from its head to the response head
    /// (reading the body included); then 408. Also bounds a stalled
    /// response write and, on shutdown, how long in-flight requests get.
    pub request_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests; zero
    /// turns keep-alive off. Never longer than `header_timeout` in effect,
    /// as hyper times the wait for the next head from the same moment.
    pub keepalive_timeout: Duration,
    /// Longest request head (request line and headers); more gets 431.
    pub max_header_bytes: usize,
    /// Longest request body; more gets 413.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            // Scrapers and probes are few; the old hand-written listener
            // allowed the same.
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            // Prometheus' default scrape_timeout.
            request_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            max_header_bytes: MIN_HEADER_BYTES,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// [`HttpLimits`] as written in TOML. A front embeds it (as a nested table,
/// or by copying its keys into its own table and building this) and calls
/// [`RawHttpLimits::validate`] with its table name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttpLimits {
    pub max_connections: usize,
    pub header_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// 0: no keep-alive.
    pub keepalive_timeout_ms: u64,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
}

impl Default for RawHttpLimits {
    fn default() -> Self {
        RawHttpLimits::from(&HttpLimits::default())
    }
}

impl From<&HttpLimits> for RawHttpLimits {
    fn from(l: &HttpLimits) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        RawHttpLimits {
            max_connections: l.max_connections,
            header_timeout_ms: ms(l.header_timeout),
            request_timeout_ms: ms(l.request_timeout),
            keepalive_timeout_ms: ms(l.keepalive_timeout),
            max_header_bytes: l.max_header_bytes,
            max_body_bytes: l.max_body_bytes,
        }
    }
}

/// Upper bounds that catch a unit mistake (seconds written as
/// milliseconds twice over, a byte count in the gigabytes) rather than
/// express policy.
const MAX_CONNECTIONS: usize = 1 << 20;
const MAX_TIMEOUT_MS: u64 = 3_600_000;
const MAX_HEADER_BYTES: usize = 1 << 20;

impl RawHttpLimits {
    /// Check every limit; errors name `table.key`.
    pub fn validate(&self, table: &str) -> Result<HttpLimits, SettingError> {
        let err = |key: &str, msg: String| SettingError::new(table, key, msg);
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return Err(err(
                "max_connections",
                format!("must be 1 to {MAX_CONNECTIONS}"),
            ));
        }
        let timeout = |key: &str, v: u64, zero_ok: bool| {
            if (v == 0 && !zero_ok) || v > MAX_TIMEOUT_MS {
                let lo = if zero_ok { 0 } else { 1 };
                return Err(err(key, format!("must be {lo} to {MAX_TIMEOUT_MS} ms")));
            }
            Ok(Duration::from_millis(v))
        };
        let header_timeout = timeout("header_timeout_ms", self.header_timeout_ms, false)?;
        let request_timeout = timeout("request_timeout_ms", self.request_timeout_ms, false)?;
        let keepalive_timeout = timeout("keepalive_timeout_ms", self.keepalive_timeout_ms, true)?;
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&self.max_header_bytes) {
            return Err(err(
                "max_header_bytes",
                format!("must be {MIN_HEADER_BYTES} to {MAX_HEADER_BYTES}"),
            ));
        }
        Ok(HttpLimits {
            max_connections: self.max_connections,
            header_timeout,
            request_timeout,
            keepalive_timeout,
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: self.max_body_bytes,
        })
    }
}

/// A `listen` key: one `ADDRESS:PORT` string (empty: off) or a list of
/// them. Written back in the form it was read, so the effective
/// configuration looks like the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RawListen {
    One(String),
    Many(Vec<String>),
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen::One(String::new())
    }
}

impl RawListen {
    /// The addresses to bind (none: the front is off). Port 0 is allowed:
    /// the kernel picks one and the listener reports it.
    pub fn parse(&self, key: &str) -> Result<Vec<SocketAddr>, SettingError> {
        let items: Vec<&str> = match self {
            RawListen::One(s) if s.trim().is_empty() => return Ok(Vec::new()),
            RawListen::One(s) => vec![s.as_str()],
            RawListen::Many(v) => v.iter().map(String::as_str).collect(),
        };
        let mut out: Vec<SocketAddr> = Vec::with_capacity(items.len());
        for s in items {
            let addr: SocketAddr = s.trim().parse().map_err(|_| SettingError {
                key: key.to_string(),
                message: format!("{s:?} is not ADDRESS:PORT (IPv6 as \"[::1]:9153\")"),
            })?;
            // Port 0 twice is two kernel-chosen ports, not a clash.
            if addr.port() != 0 && out.contains(&addr) {
                return Err(SettingError {
                    key: key.to_string(),
                    message: format!("{addr} is listed twice"),
                });
            }
            out.push(addr);
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for RawListen {
    // By hand rather than `untagged`, whose error ("data did not match any
    // variant") does not say what is expected.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListenVisitor;
        impl<'de> Visitor<'de> for ListenVisitor {
            type Value = RawListen;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an \"ADDRESS:PORT\" string or a list of them")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawListen, E> {
                Ok(RawListen::One(s.to_string()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawListen, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(RawListen::Many(v))
            }
        }
        d.deserialize_any(ListenVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct T {
        #[serde(default)]
        listen: RawListen,
    }

    fn listen(text: &str) -> Result<Vec<SocketAddr>, String> {
        let t: T = toml::from_str(text).map_err(|e| e.to_string())?;
        t.listen.parse("x.listen").map_err(|e| e.to_string())
    }

    #[test]
    fn listen_string_list_or_empty() {
        let a: SocketAddr = "127.0.0.1:9153".parse().unwrap();
        let b: SocketAddr = "[::1]:0".parse().unwrap();
        assert_eq!(listen("").unwrap(), vec![]);
        assert_eq!(listen("listen = \"\"").unwrap(), vec![]);
        assert_eq!(listen("listen = []").unwrap(), vec![]);
        assert_eq!(listen("listen = \"127.0.0.1:9153\"").unwrap(), vec![a]);
        assert_eq!(
            listen("listen = [\"127.0.0.1:9153\", \"[::1]:0\", \"[::1]:0\"]").unwrap(),
            vec![a, b, b]
        );
        for bad in [
            "listen = \"localhost:1\"",
            "listen = [\"127.0.0.1:1\", \"\"]",
            "listen = [\"127.0.0.1:1\", \"127.0.0.1:1\"]",
        ] {
            let e = listen(bad).unwrap_err();
            assert!(e.contains("x.listen"), "{bad}: {e}");
        }
        let e = listen("listen = 9153").unwrap_err();
        assert!(e.contains("ADDRESS:PORT"), "{e}");
        // Written back in the form it was read.
        for text in ["listen = \"127.0.0.1:1\"\n", "listen = [\"127.0.0.1:1\"]\n"] {
            let t: T = toml::from_str(text).unwrap();
            assert_eq!(toml::to_string(&t).unwrap(), text);
        }
    }

    #[test]
    fn limits_defaults_and_bounds() {
        let raw = RawHttpLimits::default();
        assert_eq!(raw.validate("m").unwrap(), HttpLimits::default());
        let raw: RawHttpLimits = toml::from_str("max_connections = 3").unwrap();
        assert_eq!(raw.validate("m").unwrap().max_connections, 3);
        assert!(toml::from_str::<RawHttpLimits>("max_conns = 3").is_err());
        for (raw, key) in [
            (
                RawHttpLimits {
                    max_connections: 0,
                    ..Default::default()
                },
                "m.max_connections",
            ),
            (
                RawHttpLimits {
                    header_timeout_ms: 0,
                    ..Default::default()
                },
                "m.header_timeout_ms",
            ),
            (
                RawHttpLimits {
                    request_timeout_ms: MAX_TIMEOUT_MS + 1,
                    ..Default::default()
                },
                "m.request_timeout_ms",
            ),
            (
                RawHttpLimits {
                    max_header_bytes: 100,
                    ..Default::default()
                },
                "m.max_header_bytes",
            ),
        ] {
            assert_eq!(raw.validate("m").unwrap_err().key, key);
        }
        let no_keepalive = RawHttpLimits {
            keepalive_timeout_ms: 0,
            ..Default::default()
        };
        assert_eq!(
            no_keepalive.validate("m").unwrap().keepalive_timeout,
            Duration::ZERO
        );
    }
}
