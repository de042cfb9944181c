//! `[audit]` configuration: the raw TOML shape and its validated form.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::AuditError;

/// How the client address is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientMode {
    /// The address as seen (IPv4-mapped IPv6 written as IPv4).
    #[default]
    Full,
    /// `hmac:` + 32 hex digits of HMAC-SHA-256(key, address octets).
    Hmac,
}

impl ClientMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientMode::Full => "full",
            ClientMode::Hmac => "hmac",
        }
    }
}

/// `[audit]` as written in the configuration file. Every key has a default,
/// so an absent section means "log to stdout".
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuditConfig {
    /// A directory, or `-` for stdout.
    pub path: String,
    /// Rotate when the current file would grow past this many bytes.
    pub max_file_bytes: u64,
    /// Keep at most this many files, the current one included (0 = no limit).
    pub max_files: u32,
    /// Delete files last written more than this many days ago (0 = never).
    pub max_age_days: u32,
    /// fsync the current file at most this often (0 = after every write).
    pub fsync_every_ms: u64,
    /// Records waiting for the writer; beyond this they are counted as lost.
    pub queue_capacity: usize,
    /// Write a checkpoint record after this many records (0 = never).
    pub checkpoint_every: u64,
    /// …and after this many seconds with new records (0 = never).
    pub checkpoint_every_secs: u64,
    /// `full` or `hmac`.
    pub client: ClientMode,
    /// Key for `client = "hmac"`: the file's bytes, trailing newline
    /// stripped, at least 16 bytes.
    pub hmac_key_file: Option<PathBuf>,
    /// Path to `audit.key` (`sinkhole audit keygen`); empty: checkpoints
    /// and starts are not signed.
    pub signing_key: String,
    /// The witness endpoint (`http(s)://HOST:PORT/v1/checkpoints`) every
    /// signed checkpoint is POSTed to; empty: no anchoring.
    pub anchor_url: String,
    /// PEM file of the CA that signed the witness's certificate (a private
    /// CA); empty: the system's roots.
    pub anchor_ca_file: String,
    /// Signed records waiting for the witness; beyond this the oldest is
    /// dropped (each checkpoint covers the whole chain before it).
    pub anchor_backlog: usize,
}

pub(super) const DEFAULT_ANCHOR_BACKLOG: usize = 1024;
const MAX_ANCHOR_BACKLOG: usize = 1 << 20;

pub(super) const DEFAULT_MAX_FILE_BYTES: u64 = 128 * 1024 * 1024;
pub(super) const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
pub(super) const DEFAULT_CHECKPOINT_EVERY: u64 = 10_000;
pub(super) const DEFAULT_CHECKPOINT_SECS: u64 = 60;

impl Default for RawAuditConfig {
    fn default() -> Self {
        RawAuditConfig {
            path: "-".into(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_files: 0,
            max_age_days: 0,
            fsync_every_ms: 1000,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_every_secs: DEFAULT_CHECKPOINT_SECS,
            client: ClientMode::Full,
            hmac_key_file: None,
            signing_key: String::new(),
            anchor_url: String::new(),
            anchor_ca_file: String::new(),
            anchor_backlog: DEFAULT_ANCHOR_BACKLOG,
        }
    }
}

/// Where signed checkpoints are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorSettings {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub backlog: usize,
}

/// Where records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditPath {
    Stdout,
    Dir(PathBuf),
}

/// Validated `[audit]` settings, as [`super::AuditLog::open`] takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    pub path: AuditPath,
    pub max_file_bytes: u64,
    /// 0 = no limit.
    pub max_files: u32,
    pub max_age: Option<Duration>,
    /// Zero = fsync after every write.
    pub fsync_every: Duration,
    pub queue_capacity: usize,
    /// 0 = never.
    pub checkpoint_every: u64,
    pub checkpoint_interval: Option<Duration>,
    pub client: ClientMode,
    pub hmac_key_file: Option<PathBuf>,
    /// `audit.key`: sign every `start` and `checkpoint`.
    pub signing_key: Option<PathBuf>,
    pub anchor: Option<AnchorSettings>,
}

impl AuditSettings {
    /// The defaults, writing into `dir`.
    pub fn dir(dir: impl Into<PathBuf>) -> AuditSettings {
        let mut s = AuditSettings::stdout();
        s.path = AuditPath::Dir(dir.into());
        s
    }

    /// The defaults, writing to stdout.
    pub fn stdout() -> AuditSettings {
        // The defaults are valid by construction.
        match RawAuditConfig::default().validate() {
            Ok(s) => s,
            Err(_) => unreachable!("default audit config is valid"),
        }
    }
}

const MIN_FILE_BYTES: u64 = 4096;
const MAX_QUEUE: usize = 1 << 24;

impl RawAuditConfig {
    pub fn validate(self) -> Result<AuditSettings, AuditError> {
        let err = |m: String| Err(AuditError::Config(m));
        let path = match self.path.as_str() {
            "" => return err("audit.path is empty (use \"-\" for stdout)".into()),
            "-" => AuditPath::Stdout,
            p => AuditPath::Dir(PathBuf::from(p)),
        };
        if self.max_file_bytes < MIN_FILE_BYTES {
            return err(format!(
                "audit.max_file_bytes = {} is below the minimum {MIN_FILE_BYTES}",
                self.max_file_bytes
            ));
        }
        if self.queue_capacity == 0 || self.queue_capacity > MAX_QUEUE {
            return err(format!(
                "audit.queue_capacity = {} must be between 1 and {MAX_QUEUE}",
                self.queue_capacity
            ));
        }
        match (self.client, &self.hmac_key_file) {
            (ClientMode::Hmac, None) => {
                return err("audit.client = \"hmac\" needs audit.hmac_key_file".into());
            }
            (ClientMode::Full, Some(_)) => {
                // Refused rather than ignored: someone who set a key expects
                // pseudonyms, and a silent fallback would log full addresses.
                return err("audit.hmac_key_file is set but audit.client = \"full\"".into());
            }
            _ => {}
        }
        let signing_key = (!self.signing_key.is_empty()).then(|| PathBuf::from(&self.signing_key));
        let anchor = if self.anchor_url.is_empty() {
            if !self.anchor_ca_file.is_empty() {
                return err("audit.anchor_ca_file is set but audit.anchor_url is empty".into());
            }
            None
        } else {
            let https = self.anchor_url.starts_with("https://");
            if !https && !self.anchor_url.starts_with("http://") {
                return err(format!(
                    "audit.anchor_url = {:?} must be an http:// or https:// URL",
                    self.anchor_url
                ));
            }
            if signing_key.is_none() {
                // The witness takes signed checkpoints only.
                return err("audit.anchor_url needs audit.signing_key".into());
            }
            if !https && !self.anchor_ca_file.is_empty() {
                return err("audit.anchor_ca_file needs an https:// anchor_url".into());
            }
            if self.anchor_backlog == 0 || self.anchor_backlog > MAX_ANCHOR_BACKLOG {
                return err(format!(
                    "audit.anchor_backlog = {} must be between 1 and {MAX_ANCHOR_BACKLOG}",
                    self.anchor_backlog
                ));
            }
            Some(AnchorSettings {
                url: self.anchor_url.clone(),
                ca_file: (!self.anchor_ca_file.is_empty())
                    .then(|| PathBuf::from(&self.anchor_ca_file)),
                backlog: self.anchor_backlog,
            })
        };
        Ok(AuditSettings {
            path,
            max_file_bytes: self.max_file_bytes,
            max_files: self.max_files,
            max_age: (self.max_age_days > 0)
                .then(|| Duration::from_secs(u64::from(self.max_age_days) * 86_400)),
            fsync_every: Duration::from_millis(self.fsync_every_ms),
            queue_capacity: self.queue_capacity,
            checkpoint_every: self.checkpoint_every,
            checkpoint_interval: (self.checkpoint_every_secs > 0)
                .then(|| Duration::from_secs(self.checkpoint_every_secs)),
            client: self.client,
            hmac_key_file: self.hmac_key_file,
            signing_key,
            anchor,
        })
    }
}

/// Reads an HMAC key file: raw bytes with trailing whitespace removed, so a
/// key written by `head -c 32 /dev/urandom | base64 > key` and one edited in
/// a text editor both work.
pub(crate) fn load_key(path: &std::path::Path) -> Result<Vec<u8>, AuditError> {
    let mut key = std::fs::read(path).map_err(|e| AuditError::io(path, e))?;
    while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
        key.pop();
    }
    if key.len() < 16 {
        return Err(AuditError::Config(format!(
            "{}: HMAC key must be at least 16 bytes, found {}",
            path.display(),
            key.len()
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<RawAuditConfig, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn defaults_and_validation() {
        let s = parse("").unwrap().validate().unwrap();
        assert_eq!(s.path, AuditPath::Stdout);
        assert_eq!(s.fsync_every, Duration::from_millis(1000));
        assert_eq!(s.client, ClientMode::Full);
        assert_eq!(s.max_age, None);

        let s = parse("path = \"/var/log/sinkhole\"\nmax_files = 3\nmax_age_days = 2")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(s.path, AuditPath::Dir("/var/log/sinkhole".into()));
        assert_eq!(s.max_age, Some(Duration::from_secs(2 * 86_400)));

        let table: &[(&str, &str)] = &[
            ("path = \"\"", "empty"),
            ("max_file_bytes = 10", "minimum"),
            ("queue_capacity = 0", "queue_capacity"),
            ("client = \"hmac\"", "hmac_key_file"),
            ("hmac_key_file = \"/k\"", "client"),
            (
                "anchor_url = \"http://127.0.0.1:1/v1/checkpoints\"",
                "signing_key",
            ),
            (
                "signing_key = \"/k\"\nanchor_url = \"ftp://x\"",
                "http:// or https://",
            ),
            ("anchor_ca_file = \"/ca.pem\"", "anchor_url is empty"),
            (
                "signing_key = \"/k\"\nanchor_url = \"http://x/\"\nanchor_ca_file = \"/ca\"",
                "https://",
            ),
            (
                "signing_key = \"/k\"\nanchor_url = \"http://x/\"\nanchor_backlog = 0",
                "anchor_backlog",
            ),
        ];
        for (text, want) in table {
            let e = parse(text).unwrap().validate().unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let s = parse(
            "signing_key = \"/k/audit.key\"\nanchor_url = \"https://w:8443/v1/checkpoints\"\nanchor_ca_file = \"/ca.pem\"",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(s.signing_key, Some(PathBuf::from("/k/audit.key")));
        let a = s.anchor.unwrap();
        assert_eq!(a.url, "https://w:8443/v1/checkpoints");
        assert_eq!(a.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(a.backlog, DEFAULT_ANCHOR_BACKLOG);
        assert!(parse("bogus = 1").is_err());
        assert!(parse("client = \"partial\"").is_err());
    }

    #[test]
    fn key_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "0123456789abcdef\n").unwrap();
        assert_eq!(load_key(&p).unwrap(), b"0123456789abcdef");
        std::fs::write(&p, "short\n").unwrap();
        assert!(load_key(&p).is_err());
        assert!(load_key(&dir.path().join("missing")).is_err());
    }
}
