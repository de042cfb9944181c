//! `[api]` and `[[lists.managed]]` as written (raw serde structs) and as the
//! intake runs on them (validated). `crate::config` only assembles these.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::http::{HttpLimits, RawHttpLimits, RawListen, SettingError, TlsSettings};
use crate::list::Format;

use super::sign::{SignerKey, load_signer};

fn err(key: String, message: impl Into<String>) -> SettingError {
    SettingError {
        key,
        message: message.into(),
    }
}

/// Pushes larger than this are refused unless `max_body_mb` says otherwise.
pub const DEFAULT_MAX_BODY_MB: u64 = 256;

/// `[api]` as written. No push API until `listen` is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApiConfig {
    /// `ADDRESS:PORT`, or a list of them; empty: no API.
    pub listen: RawListen,
    /// PEM certificate chain and private key; both or neither. Without
    /// them the API speaks plain HTTP, which is only allowed on loopback.
    pub tls_cert: String,
    pub tls_key: String,
    /// Largest list body accepted, in MiB (more: 413 before buffering).
    pub max_body_mb: u64,
    pub max_connections: usize,
    pub header_timeout_ms: u64,
    /// Uploading and applying a list of `max_body_mb` must fit in it.
    pub request_timeout_ms: u64,
    pub keepalive_timeout_ms: u64,
    pub max_header_bytes: usize,
    pub token: Vec<RawApiToken>,
}

impl Default for RawApiConfig {
    fn default() -> Self {
        let l = RawHttpLimits::default();
        RawApiConfig {
            listen: RawListen::default(),
            tls_cert: String::new(),
            tls_key: String::new(),
            max_body_mb: DEFAULT_MAX_BODY_MB,
            max_connections: l.max_connections,
            header_timeout_ms: l.header_timeout_ms,
            // A registry dump of hundreds of MB over a slow link.
            request_timeout_ms: 600_000,
            keepalive_timeout_ms: l.keepalive_timeout_ms,
            // Signatures travel in headers: a few of them must fit.
            max_header_bytes: 32 * 1024,
            token: Vec::new(),
        }
    }
}

/// `[[api.token]]` as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApiToken {
    pub name: String,
    /// Lowercase or uppercase hex SHA-256 of the token.
    pub sha256: String,
    /// Lists this token may push and see; `["*"]`: all.
    pub lists: Vec<String>,
    /// May use `?force=true` (lifts the reload guards only).
    pub may_force: bool,
}

/// A bearer token, known by its SHA-256 only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub sha256: [u8; 32],
    /// `None`: every list.
    pub lists: Option<Vec<String>>,
    pub may_force: bool,
}

impl ApiToken {
    pub fn may_access(&self, list: &str) -> bool {
        self.lists
            .as_ref()
            .is_none_or(|l| l.iter().any(|n| n == list))
    }
}

/// The validated `[api]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: Vec<SocketAddr>,
    pub tls: Option<TlsSettings>,
    pub max_body_bytes: u64,
    pub limits: HttpLimits,
    pub tokens: Vec<ApiToken>,
}

impl RawApiConfig {
    pub fn validate(&self) -> Result<Option<ApiConfig>, SettingError> {
        let k = |key: &str| format!("api.{key}");
        let listen = self.listen.parse("api.listen")?;
        if listen.is_empty() {
            return Ok(None);
        }
        let tls = match (self.tls_cert.is_empty(), self.tls_key.is_empty()) {
            (true, true) => None,
            (false, false) => Some(TlsSettings {
                cert: PathBuf::from(&self.tls_cert),
                key: PathBuf::from(&self.tls_key),
            }),
            (true, false) => return Err(err(k("tls_cert"), "tls_key is set but tls_cert is not")),
            (false, true) => return Err(err(k("tls_key"), "tls_cert is set but tls_key is not")),
        };
        if tls.is_none()
            && let Some(a) = listen.iter().find(|a| !a.ip().is_loopback())
        {
            return Err(err(
                k("listen"),
                format!(
                    "{a} is not loopback: plain HTTP only on loopback; set tls_cert and tls_key"
                ),
            ));
        }
        if self.max_body_mb == 0 || self.max_body_mb > 16 * 1024 {
            return Err(err(k("max_body_mb"), "between 1 and 16384"));
        }
        if self.token.is_empty() {
            return Err(err(
                k("token"),
                "at least one [[api.token]] is needed (the API answers nothing without a token)",
            ));
        }
        let mut tokens: Vec<ApiToken> = Vec::new();
        for (i, t) in self.token.iter().enumerate() {
            let tk = |f: &str| format!("api.token[{i}].{f}");
            if t.name.is_empty() || t.name.chars().any(|c| c.is_control()) {
                return Err(err(
                    tk("name"),
                    "a non-empty name without control characters",
                ));
            }
            if tokens.iter().any(|o| o.name == t.name) {
                return Err(err(tk("name"), format!("{:?} is used twice", t.name)));
            }
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(t.sha256.trim(), &mut sha256).map_err(|_| {
                err(
                    tk("sha256"),
                    "64 hex digits: the SHA-256 of the token (`printf %s TOKEN | sha256sum`)",
                )
            })?;
            if tokens.iter().any(|o| o.sha256 == sha256) {
                return Err(err(tk("sha256"), "the same token is configured twice"));
            }
            if t.lists.is_empty() {
                return Err(err(tk("lists"), "name the lists it may push, or [\"*\"]"));
            }
            let lists = if t.lists.iter().any(|l| l == "*") {
                None
            } else {
                Some(t.lists.clone())
            };
            tokens.push(ApiToken {
                name: t.name.clone(),
                sha256,
                lists,
                may_force: t.may_force,
            });
        }
        let max_body_bytes = self.max_body_mb * 1024 * 1024;
        let limits = RawHttpLimits {
            max_connections: self.max_connections,
            header_timeout_ms: self.header_timeout_ms,
            request_timeout_ms: self.request_timeout_ms,
            keepalive_timeout_ms: self.keepalive_timeout_ms,
            max_header_bytes: self.max_header_bytes,
            // The push handler enforces `max_body_mb` itself: after the
            // token is checked (401/403/404 come before 413), on the
            // declared length before anything is read, and on the bytes
            // while they stream to disk. The stack's own limit would
            // answer a large declared length first, without a reason.
            max_body_bytes: usize::MAX,
        }
        .validate("api")?;
        Ok(Some(ApiConfig {
            listen,
            tls,
            max_body_bytes,
            limits,
            tokens,
        }))
    }
}

/// `[[lists.managed]]` as written: a list that arrives by push or pull
/// rather than from a watched directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawManagedList {
    pub name: String,
    /// `auto` (detected from the content) or a list format.
    pub format: String,
    /// minisign public key files (`minisign -G -p NAME.pub`).
    pub signers: Vec<PathBuf>,
    /// K: how many distinct signers must sign. Unset: 1; 0 only when
    /// written out (an unsigned list, warned about everywhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_signatures: Option<usize>,
    /// Fetch the list from here; empty: push only.
    pub pull_url: String,
    /// The detached minisign signature; empty: `{pull_url}.minisig`.
    pub pull_signature_url: String,
    pub pull_interval_secs: u64,
    /// PEM CA bundle for a registry with a private CA; empty: system roots.
    pub ca_file: String,
}

impl Default for RawManagedList {
    fn default() -> Self {
        RawManagedList {
            name: String::new(),
            format: "auto".into(),
            signers: Vec::new(),
            required_signatures: None,
            pull_url: String::new(),
            pull_signature_url: String::new(),
            pull_interval_secs: 300,
            ca_file: String::new(),
        }
    }
}

/// Where a managed list is fetched from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullConfig {
    pub url: String,
    pub signature_url: String,
    pub interval: Duration,
    pub ca_file: Option<PathBuf>,
}

/// A validated `[[lists.managed]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedList {
    pub name: String,
    /// `None`: detected from the content.
    pub format: Option<Format>,
    pub signers: Vec<SignerKey>,
    pub required_signatures: usize,
    pub pull: Option<PullConfig>,
}

impl ManagedList {
    pub fn unsigned(&self) -> bool {
        self.required_signatures == 0
    }
}

/// A list name is a file name in `state_dir/sources` and a URL path
/// segment: keep it to letters, digits, `-`, `_` and `.` (not leading).
pub fn valid_list_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Validate every `[[lists.managed]]` entry (signer keys are read now, so
/// a missing key file is a configuration error, not a refused push).
pub fn validate_managed(
    raw: &[RawManagedList],
    state_dir: Option<&Path>,
) -> Result<Vec<ManagedList>, SettingError> {
    if !raw.is_empty() && state_dir.is_none() {
        return Err(err(
            "lists.managed".into(),
            "managed lists need `lists.state_dir` (pushed and pulled files are kept there)",
        ));
    }
    let mut out: Vec<ManagedList> = Vec::new();
    for (i, m) in raw.iter().enumerate() {
        let key = |f: &str| format!("lists.managed[{i}].{f}");
        if !valid_list_name(&m.name) {
            return Err(err(
                key("name"),
                format!(
                    "{:?}: 1 to 64 letters, digits, '-', '_' or '.' (not first)",
                    m.name
                ),
            ));
        }
        if out.iter().any(|o| o.name == m.name) {
            return Err(err(key("name"), format!("{:?} is declared twice", m.name)));
        }
        let format = match m.format.as_str() {
            "" | "auto" => None,
            f => Some(f.parse::<Format>().map_err(|e| err(key("format"), e))?),
        };
        let mut signers: Vec<SignerKey> = Vec::new();
        for p in &m.signers {
            let s = load_signer(p).map_err(|e| err(key("signers"), e.to_string()))?;
            if signers.iter().any(|o| o.id == s.id) {
                return Err(err(
                    key("signers"),
                    format!("{}: key {} is listed twice", p.display(), s.id),
                ));
            }
            signers.push(s);
        }
        let required = m.required_signatures.unwrap_or(1);
        if required > signers.len() {
            return Err(err(
                key("required_signatures"),
                format!(
                    "{required} signatures required but only {} signers configured",
                    signers.len()
                ),
            ));
        }
        if required == 0 {
            tracing::warn!(
                list = %m.name,
                "managed list accepts UNSIGNED files (required_signatures = 0)"
            );
        }
        let pull = if m.pull_url.is_empty() {
            if !m.pull_signature_url.is_empty() || !m.ca_file.is_empty() {
                return Err(err(
                    key("pull_url"),
                    "pull_signature_url/ca_file need pull_url",
                ));
            }
            None
        } else {
            for (f, u) in [
                ("pull_url", &m.pull_url),
                ("pull_signature_url", &m.pull_signature_url),
            ] {
                if !(u.is_empty() || u.starts_with("https://") || u.starts_with("http://")) {
                    return Err(err(key(f), format!("{u:?} is not an http(s) URL")));
                }
            }
            if m.pull_interval_secs == 0 || m.pull_interval_secs > 7 * 86_400 {
                return Err(err(key("pull_interval_secs"), "between 1 and 604800"));
            }
            Some(PullConfig {
                url: m.pull_url.clone(),
                signature_url: if m.pull_signature_url.is_empty() {
                    format!("{}.minisig", m.pull_url)
                } else {
                    m.pull_signature_url.clone()
                },
                interval: Duration::from_secs(m.pull_interval_secs),
                ca_file: (!m.ca_file.is_empty()).then(|| PathBuf::from(&m.ca_file)),
            })
        };
        out.push(ManagedList {
            name: m.name.clone(),
            format,
            signers,
            required_signatures: required,
            pull,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `minisign -G -W`.
    const PUB: &str = "untrusted comment: minisign public key B5642AFC7538CA3\nRWSjjFPHr0JWC7ZWE831XNdfb/g/dQkrIDcmfOU85PTANMjsJfFejcvV\n";

    fn api(text: &str) -> Result<Option<ApiConfig>, SettingError> {
        toml::from_str::<RawApiConfig>(text).unwrap().validate()
    }

    #[test]
    fn api_is_off_by_default_and_needs_tokens_and_loopback_without_tls() {
        assert_eq!(api("").unwrap(), None);
        let sha = "ab".repeat(32);
        let tok = format!("[[token]]\nname = \"a\"\nsha256 = \"{sha}\"\nlists = [\"afm\"]\n");
        let c = api(&format!("listen = \"127.0.0.1:0\"\n{tok}"))
            .unwrap()
            .unwrap();
        assert_eq!(c.tokens[0].sha256, [0xab; 32]);
        assert!(c.tokens[0].may_access("afm") && !c.tokens[0].may_access("other"));
        assert_eq!(c.max_body_bytes, 256 << 20);
        let e = api("listen = \"127.0.0.1:0\"\n").unwrap_err();
        assert_eq!(e.key, "api.token");
        let e = api(&format!("listen = \"0.0.0.0:8053\"\n{tok}")).unwrap_err();
        assert_eq!(e.key, "api.listen");
        let e = api(&format!(
            "listen = \"127.0.0.1:0\"\ntls_cert = \"c\"\n{tok}"
        ))
        .unwrap_err();
        assert_eq!(e.key, "api.tls_key");
        let e = api("listen = \"127.0.0.1:0\"\n[[token]]\nname = \"a\"\nsha256 = \"xyz\"\nlists = [\"*\"]\n")
            .unwrap_err();
        assert_eq!(e.key, "api.token[0].sha256");
        let all = api(&format!(
            "listen = \"127.0.0.1:0\"\n[[token]]\nname = \"a\"\nsha256 = \"{sha}\"\nlists = [\"*\"]\n"
        ))
        .unwrap()
        .unwrap();
        assert!(all.tokens[0].may_access("anything"));
        assert!(toml::from_str::<RawApiConfig>("bogus = 1").is_err());
    }

    #[test]
    fn managed_lists_need_state_dir_known_keys_and_enough_signers() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("a.pub");
        std::fs::write(&key, PUB).unwrap();
        let m = |extra: &str| -> Vec<RawManagedList> {
            let text = format!(
                "name = \"afm\"\nsigners = [{:?}]\n{extra}",
                key.display().to_string()
            );
            vec![toml::from_str(&text).unwrap()]
        };
        let state = Some(dir.path());
        let ok = validate_managed(&m(""), state).unwrap();
        assert_eq!(ok[0].required_signatures, 1);
        assert_eq!(ok[0].signers[0].id, "B5642AFC7538CA3");
        assert!(ok[0].pull.is_none());
        assert_eq!(
            validate_managed(&m(""), None).unwrap_err().key,
            "lists.managed"
        );
        assert_eq!(
            validate_managed(&m("required_signatures = 2"), state)
                .unwrap_err()
                .key,
            "lists.managed[0].required_signatures"
        );
        assert!(validate_managed(&m("required_signatures = 0"), state).unwrap()[0].unsigned());
        let p = validate_managed(&m("pull_url = \"https://r.example/afm.csv\""), state).unwrap();
        let pull = p[0].pull.as_ref().unwrap();
        assert_eq!(pull.signature_url, "https://r.example/afm.csv.minisig");
        assert_eq!(pull.interval, Duration::from_secs(300));
        let bad: Vec<RawManagedList> =
            vec![toml::from_str("name = \"../x\"\nrequired_signatures = 0").unwrap()];
        assert_eq!(
            validate_managed(&bad, state).unwrap_err().key,
            "lists.managed[0].name"
        );
        let missing: Vec<RawManagedList> =
            vec![toml::from_str("name = \"x\"\nsigners = [\"/nonexistent/k.pub\"]").unwrap()];
        assert_eq!(
            validate_managed(&missing, state).unwrap_err().key,
            "lists.managed[0].signers"
        );
        assert_eq!(
            validate_managed(&m("format = \"bogus\""), state)
                .unwrap_err()
                .key,
            "lists.managed[0].format"
        );
    }
}
