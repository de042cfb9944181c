//! `[console]` in the configuration file: where the auditors' console
//! listens, its TLS pair, its users and their roles, and its limits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::http::{HttpLimits, RawHttpLimits, RawListen, SettingError, TlsSettings};

use super::auth::Role;

/// `[console]` as written. No console until `listen` is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConsoleConfig {
    /// `ADDRESS:PORT`, or a list of them; empty: no console.
    pub listen: RawListen,
    /// PEM certificate chain and private key; both or neither. Without
    /// them the console speaks plain HTTP, which is only allowed on
    /// loopback addresses.
    pub tls_cert: String,
    pub tls_key: String,
    /// User name → bcrypt hash (`sinkhole console hash-password`).
    pub basic_auth_users: BTreeMap<String, String>,
    /// User name → `auditor` or `viewer`; users not named are viewers.
    pub roles: BTreeMap<String, String>,
    /// How long a verified credential is remembered, so bcrypt does not
    /// run on every request.
    pub auth_cache_secs: u64,
    /// Failed logins allowed per client address per minute; more get 429.
    pub max_auth_failures: u32,
    /// How often the chain is verified in the background (seconds).
    pub verify_every_secs: u64,
    pub max_connections: usize,
    pub header_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub keepalive_timeout_ms: u64,
    pub max_header_bytes: usize,
}

impl Default for RawConsoleConfig {
    fn default() -> Self {
        let l = RawHttpLimits::default();
        RawConsoleConfig {
            listen: RawListen::default(),
            tls_cert: String::new(),
            tls_key: String::new(),
            basic_auth_users: BTreeMap::new(),
            roles: BTreeMap::new(),
            auth_cache_secs: 60,
            max_auth_failures: 10,
            verify_every_secs: 300,
            max_connections: l.max_connections,
            header_timeout_ms: l.header_timeout_ms,
            // Reports over a large log on a cold index take a while.
            request_timeout_ms: 60_000,
            keepalive_timeout_ms: l.keepalive_timeout_ms,
            max_header_bytes: l.max_header_bytes,
        }
    }
}

/// A console user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleUser {
    pub name: String,
    /// bcrypt hash.
    pub hash: String,
    pub role: Role,
}

/// The validated `[console]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Empty: the console is off.
    pub listen: Vec<SocketAddr>,
    pub tls: Option<TlsSettings>,
    pub users: Vec<ConsoleUser>,
    pub auth_cache: Duration,
    pub max_auth_failures: u32,
    pub verify_every: Duration,
    pub limits: HttpLimits,
    /// The audit directory the console reads (from `[audit] path`).
    pub audit_dir: PathBuf,
}

fn err(key: &str, message: impl Into<String>) -> SettingError {
    SettingError {
        key: format!("console.{key}"),
        message: message.into(),
    }
}

/// Whether `hash` has the shape of a bcrypt hash (`$2a$`, `$2b$`, `$2y$`,
/// a two-digit cost, 53 characters of salt and hash).
pub fn is_bcrypt(hash: &str) -> bool {
    let b = hash.as_bytes();
    b.len() == 60
        && (hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))
        && b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
        && b[6] == b'$'
        && b[7..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/')
}

impl RawConsoleConfig {
    /// Check every key; errors name it (`console.listen`). `audit_dir` is
    /// `[audit] path` when it is a directory (the console reads it).
    pub fn validate(
        &self,
        audit_dir: Option<&Path>,
    ) -> Result<Option<ConsoleConfig>, SettingError> {
        let listen = self.listen.parse("console.listen")?;
        if listen.is_empty() {
            return Ok(None);
        }
        let Some(audit_dir) = audit_dir else {
            return Err(err(
                "listen",
                "the console reads the audit log: set [audit] path to a directory",
            ));
        };
        let tls = match (self.tls_cert.is_empty(), self.tls_key.is_empty()) {
            (true, true) => None,
            (false, false) => Some(TlsSettings {
                cert: PathBuf::from(&self.tls_cert),
                key: PathBuf::from(&self.tls_key),
            }),
            (true, false) => return Err(err("tls_cert", "tls_key is set but tls_cert is not")),
            (false, true) => return Err(err("tls_key", "tls_cert is set but tls_key is not")),
        };
        if tls.is_none() {
            if let Some(a) = listen.iter().find(|a| !a.ip().is_loopback()) {
                return Err(err(
                    "listen",
                    format!(
                        "{a} is not loopback: plain HTTP only on loopback; set tls_cert and tls_key"
                    ),
                ));
            }
        }
        if self.basic_auth_users.is_empty() {
            return Err(err(
                "basic_auth_users",
                "at least one user is needed (the console answers nothing without authentication)",
            ));
        }
        let mut users = Vec::new();
        for (name, hash) in &self.basic_auth_users {
            if name.is_empty() || name.contains(':') {
                return Err(err(
                    "basic_auth_users",
                    format!("{name:?}: a user name is non-empty and has no ':'"),
                ));
            }
            if !is_bcrypt(hash) {
                return Err(err(
                    &format!("basic_auth_users.{name}"),
                    "not a bcrypt hash (make one with `sinkhole console hash-password`)",
                ));
            }
            let role = match self.roles.get(name).map(String::as_str) {
                None | Some("viewer") => Role::Viewer,
                Some("auditor") => Role::Auditor,
                Some(other) => {
                    return Err(err(
                        &format!("roles.{name}"),
                        format!("{other:?}: auditor or viewer"),
                    ));
                }
            };
            users.push(ConsoleUser {
                name: name.clone(),
                hash: hash.clone(),
                role,
            });
        }
        if let Some(stray) = self
            .roles
            .keys()
            .find(|u| !self.basic_auth_users.contains_key(*u))
        {
            return Err(err(
                &format!("roles.{stray}"),
                "no such user in basic_auth_users",
            ));
        }
        if self.auth_cache_secs > 3600 {
            return Err(err("auth_cache_secs", "at most 3600"));
        }
        if self.max_auth_failures == 0 {
            return Err(err("max_auth_failures", "at least 1"));
        }
        if self.verify_every_secs == 0 {
            return Err(err("verify_every_secs", "at least 1"));
        }
        let limits = RawHttpLimits {
            max_connections: self.max_connections,
            header_timeout_ms: self.header_timeout_ms,
            request_timeout_ms: self.request_timeout_ms,
            keepalive_timeout_ms: self.keepalive_timeout_ms,
            max_header_bytes: self.max_header_bytes,
            ..RawHttpLimits::default()
        }
        .validate("console")?;
        Ok(Some(ConsoleConfig {
            listen,
            tls,
            users,
            auth_cache: Duration::from_secs(self.auth_cache_secs),
            max_auth_failures: self.max_auth_failures,
            verify_every: Duration::from_secs(self.verify_every_secs),
            limits,
            audit_dir: audit_dir.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2b$04$abcdefghijklmnopqrstuuNNf4oPpjkIhGiyvO2Eqx4iWy1zU3pXS";

    fn validate(text: &str) -> Result<Option<ConsoleConfig>, SettingError> {
        toml::from_str::<RawConsoleConfig>(text)
            .unwrap()
            .validate(Some(Path::new("audit")))
    }

    #[test]
    fn off_by_default_and_a_minimal_console() {
        assert_eq!(validate("").unwrap(), None);
        let c = validate(&format!(
            "listen = \"127.0.0.1:8054\"\n[basic_auth_users]\nann = \"{HASH}\"\nbob = \"{HASH}\"\n[roles]\nann = \"auditor\"\n"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:8054".parse().unwrap()]);
        assert_eq!(c.users[0].role, Role::Auditor);
        assert_eq!(c.users[1].role, Role::Viewer, "unnamed users are viewers");
        assert!(c.tls.is_none());
    }

    #[test]
    fn rejected_settings_name_their_key() {
        let users = format!("[basic_auth_users]\nann = \"{HASH}\"\n");
        let table: &[(String, &str)] = &[
            (
                format!("listen = \"192.0.2.1:8054\"\n{users}"),
                "console.listen",
            ),
            (
                "listen = \"127.0.0.1:8054\"\n".to_string(),
                "console.basic_auth_users",
            ),
            (
                "listen = \"127.0.0.1:8054\"\n[basic_auth_users]\nann = \"secret\"\n".to_string(),
                "console.basic_auth_users.ann",
            ),
            (
                format!("listen = \"127.0.0.1:8054\"\n{users}[roles]\nann = \"root\"\n"),
                "console.roles.ann",
            ),
            (
                format!("listen = \"127.0.0.1:8054\"\n{users}[roles]\neve = \"auditor\"\n"),
                "console.roles.eve",
            ),
            (
                format!("listen = \"127.0.0.1:8054\"\ntls_cert = \"c.pem\"\n{users}"),
                "console.tls_key",
            ),
            (
                format!("listen = \"127.0.0.1:8054\"\nmax_connections = 0\n{users}"),
                "console.max_connections",
            ),
        ];
        for (text, key) in table {
            assert_eq!(validate(text).unwrap_err().key, *key, "{text}");
        }
        // TLS makes any address acceptable.
        let c = validate(&format!(
            "listen = \"192.0.2.1:8054\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n{users}"
        ))
        .unwrap()
        .unwrap();
        assert!(c.tls.is_some());
        // Without an audit directory there is nothing to show.
        let raw: RawConsoleConfig =
            toml::from_str(&format!("listen = \"127.0.0.1:1\"\n{users}")).unwrap();
        assert_eq!(raw.validate(None).unwrap_err().key, "console.listen");
        assert!(toml::from_str::<RawConsoleConfig>("port = 1").is_err());
    }

    #[test]
    fn bcrypt_shapes() {
        assert!(is_bcrypt(HASH));
        assert!(!is_bcrypt(&HASH.replace("$2b$", "$1$x")));
        assert!(!is_bcrypt(&HASH[..59]));
        assert!(!is_bcrypt(&HASH.replace('a', "!")));
    }
}
