//! `[dnstap]`: where dnstap messages go and which.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[dnstap]` as written. Nothing is streamed until `unix` or `tcp` is set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RawDnstapConfig {
    /// Path of the collector's Unix socket (fstrm_capture -u, dnstap
    /// collectors); empty: not used.
    pub unix: String,
    /// `ADDR:PORT` of the collector over TCP; empty: not used.
    pub tcp: String,
    /// `blocked` (CLIENT_QUERY + CLIENT_RESPONSE of blocked queries only)
    /// or `all` (every query answered).
    pub messages: String,
    /// Messages waiting for the collector; beyond this they are dropped
    /// and counted (the query path never waits).
    pub queue_capacity: usize,
    /// The `identity` field of every message (e.g. the node's name);
    /// empty: left out.
    pub identity: String,
}

impl Default for RawDnstapConfig {
    fn default() -> Self {
        RawDnstapConfig {
            unix: String::new(),
            tcp: String::new(),
            messages: "blocked".into(),
            queue_capacity: 65_536,
            identity: String::new(),
        }
    }
}

/// Where the stream goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnstapTarget {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for DnstapTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnstapTarget::Unix(p) => write!(f, "unix:{}", p.display()),
            DnstapTarget::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Which queries are streamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnstapMessages {
    Blocked,
    All,
}

/// `[dnstap]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnstapConfig {
    pub target: DnstapTarget,
    pub messages: DnstapMessages,
    pub queue_capacity: usize,
    pub identity: Option<String>,
}

/// A bad `[dnstap]` key and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for `dnstap.{key}`: {message}")]
pub struct DnstapConfigError {
    pub key: &'static str,
    pub message: String,
}

fn invalid(key: &'static str, message: impl Into<String>) -> DnstapConfigError {
    DnstapConfigError {
        key,
        message: message.into(),
    }
}

/// The most messages the queue may hold (each holds a query and a reply).
const MAX_QUEUE: usize = 10_000_000;

impl RawDnstapConfig {
    /// `None` when neither `unix` nor `tcp` is set (dnstap off).
    pub fn validate(&self) -> Result<Option<DnstapConfig>, DnstapConfigError> {
        let messages = match self.messages.as_str() {
            "blocked" => DnstapMessages::Blocked,
            "all" => DnstapMessages::All,
            other => {
                return Err(invalid(
                    "messages",
                    format!("{other:?} is not blocked | all"),
                ));
            }
        };
        let unix = self.unix.trim();
        let tcp = self.tcp.trim();
        let target = match (unix.is_empty(), tcp.is_empty()) {
            (true, true) => return Ok(None),
            (false, false) => return Err(invalid("tcp", "set either dnstap.unix or dnstap.tcp")),
            (false, true) => DnstapTarget::Unix(PathBuf::from(unix)),
            (true, false) => DnstapTarget::Tcp(tcp.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "tcp",
                    format!("{tcp:?} is not ADDRESS:PORT (IPv6 as \"[::1]:6000\")"),
                )
            })?),
        };
        if self.queue_capacity == 0 || self.queue_capacity > MAX_QUEUE {
            return Err(invalid(
                "queue_capacity",
                format!("must be 1..={MAX_QUEUE}"),
            ));
        }
        if self.identity.len() > 255 {
            return Err(invalid("identity", "at most 255 bytes"));
        }
        Ok(Some(DnstapConfig {
            target,
            messages,
            queue_capacity: self.queue_capacity,
            identity: Some(self.identity.clone()).filter(|s| !s.is_empty()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<DnstapConfig>, String> {
        let raw: RawDnstapConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn off_until_a_target_is_set() {
        assert_eq!(parse("").unwrap(), None);
        let c = parse("unix = \"/run/dnstap.sock\"").unwrap().unwrap();
        assert_eq!(c.target, DnstapTarget::Unix("/run/dnstap.sock".into()));
        assert_eq!(c.messages, DnstapMessages::Blocked);
        let c = parse("tcp = \"127.0.0.1:6000\"\nmessages = \"all\"\nidentity = \"node-1\"")
            .unwrap()
            .unwrap();
        assert_eq!(
            c.target,
            DnstapTarget::Tcp("127.0.0.1:6000".parse().unwrap())
        );
        assert_eq!(c.messages, DnstapMessages::All);
        assert_eq!(c.identity.as_deref(), Some("node-1"));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("unix = \"/a\"\ntcp = \"127.0.0.1:1\"", "dnstap.tcp"),
            ("tcp = \"localhost:6000\"", "dnstap.tcp"),
            ("unix = \"/a\"\nmessages = \"some\"", "dnstap.messages"),
            ("unix = \"/a\"\nqueue_capacity = 0", "dnstap.queue_capacity"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
        assert!(parse("sock = \"/a\"").unwrap_err().contains("sock"));
    }
}
