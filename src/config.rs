//! The `sinkhole serve` configuration: raw serde structs that mirror the TOML
//! file one to one (every key has a default, unknown keys are errors), and the
//! validated [`Config`] the server runs on.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::audit::{AuditSettings, RawAuditConfig};
use crate::bypass::{BypassSignal, BypassSignals};
use crate::cache::CacheConfig;
use crate::forward::UpstreamConfig;
use crate::list::config::{ListFileConfig, ListsConfig};
use crate::list::{Format, ListOptions};
use crate::policy::{Action, PolicyConfig};
use crate::server::ServerConfig;
use crate::server::limits::LimitsConfig;
use crate::sinkhole::Template;
use crate::special::{LocalZone, LocalZones};

/// Where upstream servers come from when `[upstream] servers` is empty.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// serde/toml's message names the offending key (`unknown field `x``)
    /// and the line, so it is passed through verbatim.
    #[error("{path}: {message}")]
    Toml { path: String, message: String },
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error(
        "no upstream servers: `[upstream] servers` is empty and {0} lists none usable (set `[upstream] servers`)"
    )]
    NoUpstream(String),
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------- raw TOML

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub lists: RawLists,
    pub policy: RawPolicy,
    pub acl: RawAcl,
    pub cache: RawCache,
    pub limits: RawLimits,
    #[serde(default = "default_audit_table")]
    pub audit: RawAudit,
    pub metrics: crate::metrics::RawMetricsConfig,
    pub console: crate::console::RawConsoleConfig,
    /// `[web]`: the URL-enforcement front (issue 12); off until `listen`.
    pub web: crate::web::RawWebConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: Vec<String>,
    pub workers: usize,
    pub tcp_idle_timeout_ms: u64,
    pub tcp_max_connections: usize,
    /// Queries one TCP connection may have in flight at once.
    pub tcp_max_pipeline: usize,
    /// Upstream queries in flight at once, over all clients.
    pub max_inflight: usize,
    /// Unix socket for `sinkhole reload`; empty: no control socket.
    pub control_socket: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: vec!["127.0.0.1:5353".into()],
            workers: 0,
            tcp_idle_timeout_ms: 10_000,
            tcp_max_connections: 1024,
            tcp_max_pipeline: 64,
            max_inflight: 10_000,
            control_socket: String::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub servers: Vec<String>,
    pub timeout_ms: u64,
    /// Cap for one TCP exchange (after a truncated UDP answer); never beyond
    /// the overall `timeout_ms`.
    pub tcp_timeout_ms: u64,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            servers: Vec::new(),
            timeout_ms: 1500,
            tcp_timeout_ms: 1500,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLists {
    pub paths: Vec<PathBuf>,
    /// Plain/hosts entries block only the name itself, not its subdomains.
    pub exact_only: bool,
    /// Per-file overrides.
    pub file: Vec<RawListFile>,
    /// Reject a reload in which more than this share of lines is skipped.
    pub max_skipped_ratio: f64,
    /// Reject a reload that removes more than this share of the rules.
    pub max_shrink_ratio: f64,
    /// Where the last good snapshot and its manifest live; empty: not kept.
    pub state_dir: String,
    /// Watch the list paths and reload on change.
    pub watch: bool,
    /// Quiet time after the last file event before reloading.
    pub debounce_ms: u64,
}

impl Default for RawLists {
    fn default() -> Self {
        RawLists {
            paths: vec![PathBuf::from("./blocklists/")],
            exact_only: false,
            file: Vec::new(),
            max_skipped_ratio: 0.10,
            max_shrink_ratio: 0.50,
            state_dir: String::new(),
            watch: true,
            debounce_ms: 150,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawListFile {
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicy {
    pub action: String,
    pub address_v4: String,
    pub address_v6: String,
    pub ttl: u32,
    pub ede_code: u32,
    pub ede_text: String,
    /// Special-use zones answered locally (see `special`); remove
    /// `private-reverse` when the upstream holds internal PTR zones.
    pub local_zones: Vec<String>,
    /// What an `https://` URL rule does at the TLS front: `host` (refuse
    /// the whole host) or `pass` (see `[web]`).
    pub https_url: String,
    /// Names that tell clients this network filters DNS (see `bypass`):
    /// `firefox-canary`, `icloud-private-relay`.
    pub bypass_signals: Vec<String>,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            action: "nxdomain".into(),
            address_v4: "192.0.2.1".into(),
            address_v6: "2001:db8::1".into(),
            ttl: 300,
            ede_code: 16,
            ede_text: "blocked by order {decision}".into(),
            local_zones: LocalZone::ALL
                .iter()
                .map(|z| z.as_str().to_string())
                .collect(),
            https_url: "host".into(),
            bypass_signals: BypassSignal::ALL
                .iter()
                .map(|s| s.as_str().to_string())
                .collect(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAcl {
    pub allow: Vec<String>,
}

impl Default for RawAcl {
    fn default() -> Self {
        RawAcl {
            allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    pub max_entries: usize,
    /// Bytes the cached answers may hold in all (0: only max_entries).
    pub max_bytes: usize,
    /// Upper bound on how long an answer stays cached, whatever its TTL.
    pub max_ttl: u32,
    /// Upper bound for negative answers (RFC 2308 §5 suggests hours at most).
    pub max_negative_ttl: u32,
    /// RFC 8767 serve-stale: how long past its expiry an answer may still be
    /// served (with TTL 30) when no upstream answers; 0 = off.
    pub serve_stale_secs: u32,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            max_entries: 1_000_000,
            max_bytes: 256 * 1024 * 1024,
            max_ttl: 86_400,
            max_negative_ttl: 3_600,
            serve_stale_secs: 0,
        }
    }
}

/// `[limits]`: per-client limits, so one subscriber cannot take the
/// resolver from the others. Every key 0 = off.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Queries per second one client (IPv4 address, IPv6 /64) may send.
    pub qps_per_client: u32,
    /// Queries a client may send at once after a quiet spell (the token
    /// bucket's size); 0 = `qps_per_client`.
    pub qps_burst: u32,
    /// TCP connections one client (IPv4 address, IPv6 /64) may hold open.
    pub tcp_connections_per_client: usize,
    /// Queries per second one zone (registered domain) may send upstream.
    pub upstream_qps_per_zone: u32,
    /// Over that, one query in this many still goes upstream (0: none).
    pub upstream_ratelimit_factor: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            qps_per_client: 0,
            qps_burst: 0,
            tcp_connections_per_client: 0,
            upstream_qps_per_zone: 0,
            upstream_ratelimit_factor: 10,
        }
    }
}

/// `[audit]` is owned by the audit module (`audit::RawAuditConfig`). It is
/// kept here as the table the user wrote, so the effective configuration can
/// echo it, and is validated by the audit module's own serde struct (which
/// names unknown keys the same way).
pub type RawAudit = toml::Table;

fn default_audit_table() -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("path".into(), toml::Value::String("-".into()));
    t
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            server: RawServer::default(),
            upstream: RawUpstream::default(),
            lists: RawLists::default(),
            policy: RawPolicy::default(),
            acl: RawAcl::default(),
            cache: RawCache::default(),
            limits: RawLimits::default(),
            audit: default_audit_table(),
            metrics: Default::default(),
            console: Default::default(),
            web: Default::default(),
        }
    }
}

impl RawConfig {
    /// The configuration `sinkhole serve` runs without `--config` (`make
    /// run`): the defaults, plus the URL-enforcement fronts on
    /// 127.0.0.1:8080 (HTTP) and 127.0.0.1:8443 (TLS) with
    /// `policy.address_v4` pointing at them, so a
    /// newcomer can `curl -x 127.0.0.1:8080` a blocked URL. A file without
    /// `[web]` keeps the front off.
    pub fn embedded() -> RawConfig {
        let mut raw = RawConfig::default();
        raw.web.listen = crate::http::RawListen::One("127.0.0.1:8080".into());
        raw.web.tls_listen = crate::http::RawListen::One("127.0.0.1:8443".into());
        raw.policy.address_v4 = "127.0.0.1".into();
        raw
    }
}

// ---------------------------------------------------------------- validated

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub lists: ListsConfig,
    pub policy: PolicyConfig,
    pub acl: Vec<IpNet>,
    pub cache: CacheConfig,
    pub limits: LimitsConfig,
    pub audit: AuditSettings,
    /// `[metrics]`: where metrics are served (none: off) and with what
    /// limits.
    pub metrics: crate::metrics::MetricsConfig,
    /// `[console]`: the auditors' console (None: off).
    pub console: Option<crate::console::ConsoleConfig>,
    /// `[web]`: the URL-enforcement front (None: off).
    pub web: Option<crate::web::WebConfig>,
    /// The effective raw configuration (defaults and resolv.conf upstreams
    /// filled in), for `--check-config`.
    pub raw: RawConfig,
}

impl Config {
    /// What the listeners and the query path need.
    pub fn server_settings(&self) -> crate::server::ServerSettings {
        crate::server::ServerSettings {
            server: self.server.clone(),
            policy: self.policy.clone(),
            acl: self.acl.clone(),
            cache: self.cache.clone(),
            limits: self.limits.clone(),
            upstream: self.upstream.clone(),
            steer: self.web.as_ref().map(|w| w.steer),
        }
    }

    /// Load `path`, or the embedded default when `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                    path: p.to_path_buf(),
                    source,
                })?;
                Config::from_toml_str(&text, &p.display().to_string())
            }
            None => Config::from_raw(RawConfig::embedded()),
        }
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_raw(Config::parse_raw(text, origin)?)
    }

    /// As [`Config::from_toml_str`], with `resolv_text` standing in for
    /// /etc/resolv.conf, so nothing is read from the host (tests, fuzzing).
    pub fn from_toml_str_with_resolv_text(
        text: &str,
        origin: &str,
        resolv_text: &str,
    ) -> Result<Config, ConfigError> {
        let raw = Config::parse_raw(text, origin)?;
        Config::validate(raw, &|| {
            Ok((resolv_text.to_string(), "resolv.conf".to_string()))
        })
    }

    fn parse_raw(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        Config::from_raw_with_resolv(raw, Path::new(RESOLV_CONF))
    }

    /// As [`Config::from_raw`], reading fallback upstreams from `resolv`.
    pub fn from_raw_with_resolv(raw: RawConfig, resolv: &Path) -> Result<Config, ConfigError> {
        // Read only when needed: a configuration with servers never touches it.
        let read = || {
            std::fs::read_to_string(resolv)
                .map(|text| (text, resolv.display().to_string()))
                .map_err(|source| ConfigError::Io {
                    path: resolv.to_path_buf(),
                    source,
                })
        };
        Config::validate(raw, &read)
    }

    /// Validate `raw`; `resolv` yields the resolv.conf text and its name
    /// when the upstreams must come from there.
    fn validate(
        mut raw: RawConfig,
        resolv: &dyn Fn() -> Result<(String, String), ConfigError>,
    ) -> Result<Config, ConfigError> {
        let server = validate_server(&raw.server)?;
        if raw.upstream.servers.is_empty() {
            let (text, name) = resolv()?;
            let found = upstreams_from_resolv_conf(&text, &server.listen);
            if found.is_empty() {
                return Err(ConfigError::NoUpstream(name));
            }
            raw.upstream.servers = found.iter().map(|a| a.to_string()).collect();
        }
        let upstream = validate_upstream(&raw.upstream)?;
        // Show what will actually be used (`192.0.2.53` → `192.0.2.53:53`).
        raw.upstream.servers = upstream.servers.iter().map(|a| a.to_string()).collect();
        let lists = validate_lists(&raw.lists)?;
        let policy = validate_policy(&raw.policy)?;
        let acl = raw
            .acl
            .allow
            .iter()
            .map(|s| parse_net(s).map_err(|m| invalid("acl.allow", m)))
            .collect::<Result<Vec<_>, _>>()?;
        if raw.cache.max_ttl == 0 && raw.cache.max_entries > 0 {
            return Err(invalid(
                "cache.max_ttl",
                "must be > 0 (set max_entries = 0 to disable)",
            ));
        }
        // RFC 8767 §5 suggests 1 to 3 days; a week is plenty.
        if raw.cache.serve_stale_secs > 604_800 {
            return Err(invalid(
                "cache.serve_stale_secs",
                "at most 604800 (one week)",
            ));
        }
        let cache = CacheConfig {
            max_entries: raw.cache.max_entries,
            max_bytes: raw.cache.max_bytes,
            max_ttl: raw.cache.max_ttl,
            max_negative_ttl: raw.cache.max_negative_ttl,
            serve_stale: Duration::from_secs(u64::from(raw.cache.serve_stale_secs)),
        };
        let limits = validate_limits(&raw.limits)?;
        let audit = RawAuditConfig::deserialize(toml::Value::Table(raw.audit.clone()))
            .map_err(|e| invalid("audit", e.to_string()))?
            .validate()
            .map_err(|e| invalid("audit", e.to_string()))?;
        let metrics = raw
            .metrics
            .validate()
            .map_err(|e| invalid(&e.key, e.message))?;
        let audit_dir = match &audit.path {
            crate::audit::AuditPath::Dir(d) => Some(d.as_path()),
            crate::audit::AuditPath::Stdout => None,
        };
        let console = raw
            .console
            .validate(audit_dir)
            .map_err(|e| invalid(&e.key, e.message))?;
        let default_policy = RawPolicy::default();
        let web = raw
            .web
            .validate(&crate::web::config::PolicyAddresses {
                address_v4: &raw.policy.address_v4,
                address_v6: &raw.policy.address_v6,
                default_v4: &default_policy.address_v4,
                default_v6: &default_policy.address_v6,
                https_url: &raw.policy.https_url,
            })
            .map_err(|e| invalid(&e.key, e.message))?;
        Ok(Config {
            server,
            upstream,
            lists,
            policy,
            acl,
            cache,
            limits,
            audit,
            metrics,
            console,
            web,
            raw,
        })
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.raw).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_toml())
    }
}

fn validate_server(raw: &RawServer) -> Result<ServerConfig, ConfigError> {
    if raw.listen.is_empty() {
        return Err(invalid("server.listen", "at least one address is needed"));
    }
    let listen = raw
        .listen
        .iter()
        .map(|s| {
            s.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "server.listen",
                    format!("{s:?} is not ADDRESS:PORT (IPv6 as \"[::1]:5353\")"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let workers = if raw.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        raw.workers
    };
    if workers > 1024 {
        return Err(invalid("server.workers", "at most 1024"));
    }
    for (key, v) in [
        ("server.tcp_max_connections", raw.tcp_max_connections),
        ("server.tcp_max_pipeline", raw.tcp_max_pipeline),
        ("server.max_inflight", raw.max_inflight),
    ] {
        if v == 0 {
            return Err(invalid(key, "must be > 0"));
        }
    }
    if raw.tcp_idle_timeout_ms == 0 {
        return Err(invalid("server.tcp_idle_timeout_ms", "must be > 0"));
    }
    Ok(ServerConfig {
        listen,
        workers,
        tcp_idle_timeout: Duration::from_millis(raw.tcp_idle_timeout_ms),
        tcp_max_connections: raw.tcp_max_connections,
        tcp_max_pipeline: raw.tcp_max_pipeline,
        max_inflight: raw.max_inflight,
        control_socket: Some(raw.control_socket.trim())
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
    })
}

fn validate_limits(raw: &RawLimits) -> Result<LimitsConfig, ConfigError> {
    // Beyond these the bucket arithmetic (milli-tokens in a u64) would still
    // be exact, but such a "limit" is a typo, not a policy.
    if raw.qps_per_client > 1_000_000 {
        return Err(invalid("limits.qps_per_client", "at most 1000000"));
    }
    if raw.qps_burst > 10_000_000 {
        return Err(invalid("limits.qps_burst", "at most 10000000"));
    }
    if raw.upstream_qps_per_zone > 1_000_000 {
        return Err(invalid("limits.upstream_qps_per_zone", "at most 1000000"));
    }
    if raw.upstream_ratelimit_factor > 1_000_000 {
        return Err(invalid(
            "limits.upstream_ratelimit_factor",
            "at most 1000000",
        ));
    }
    if raw.qps_burst > 0 && raw.qps_per_client == 0 {
        return Err(invalid(
            "limits.qps_burst",
            "needs limits.qps_per_client > 0",
        ));
    }
    Ok(LimitsConfig {
        qps_per_client: raw.qps_per_client,
        qps_burst: if raw.qps_burst == 0 {
            raw.qps_per_client
        } else {
            raw.qps_burst
        },
        tcp_connections_per_client: raw.tcp_connections_per_client,
        upstream_qps_per_zone: raw.upstream_qps_per_zone,
        upstream_ratelimit_factor: raw.upstream_ratelimit_factor,
    })
}

fn validate_upstream(raw: &RawUpstream) -> Result<UpstreamConfig, ConfigError> {
    let servers = raw
        .servers
        .iter()
        .map(|s| parse_upstream(s).map_err(|m| invalid("upstream.servers", m)))
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(invalid("upstream.servers", "at least one server is needed"));
    }
    if raw.timeout_ms == 0 || raw.timeout_ms > 60_000 {
        return Err(invalid("upstream.timeout_ms", "must be 1..=60000"));
    }
    if raw.tcp_timeout_ms == 0 {
        return Err(invalid("upstream.tcp_timeout_ms", "must be > 0"));
    }
    Ok(UpstreamConfig {
        servers,
        timeout: Duration::from_millis(raw.timeout_ms),
        tcp_timeout: Duration::from_millis(raw.tcp_timeout_ms),
    })
}

/// `ADDR:PORT`, `[V6]:PORT`, or a bare address meaning port 53.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(format!("{s:?} is not ADDRESS[:PORT]"))
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!("{s:?} is not an address or ADDRESS/PREFIX"))
}

/// A per-list `action`: any action name; `block` keeps the default.
fn list_action(s: &str) -> Result<Action, String> {
    Action::parse(s).ok_or_else(|| {
        format!(
            "unknown action {s:?} (allow | block | nxdomain | nodata | address | refused | drop)"
        )
    })
}

fn validate_lists(raw: &RawLists) -> Result<ListsConfig, ConfigError> {
    let mut files = Vec::new();
    for f in &raw.file {
        if f.path.as_os_str().is_empty() {
            return Err(invalid("lists.file.path", "empty"));
        }
        let format = match &f.format {
            None => None,
            Some(s) => Some(
                s.parse::<Format>()
                    .map_err(|m| invalid("lists.file.format", m))?,
            ),
        };
        let action = match &f.action {
            None => None,
            Some(s) => Some(list_action(s).map_err(|m| invalid("lists.file.action", m))?),
        };
        files.push(ListFileConfig {
            path: f.path.clone(),
            options: ListOptions {
                format,
                exact_only: f.exact_only.unwrap_or(raw.exact_only),
                action,
                name: f.name.clone(),
            },
        });
    }
    for (key, v) in [
        ("lists.max_skipped_ratio", raw.max_skipped_ratio),
        ("lists.max_shrink_ratio", raw.max_shrink_ratio),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(invalid(key, "must be between 0.0 and 1.0"));
        }
    }
    if raw.debounce_ms > 60_000 {
        return Err(invalid("lists.debounce_ms", "at most 60000"));
    }
    let state_dir = Some(raw.state_dir.trim())
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    Ok(ListsConfig {
        paths: raw.paths.clone(),
        exact_only: raw.exact_only,
        files,
        max_skipped_ratio: raw.max_skipped_ratio,
        max_shrink_ratio: raw.max_shrink_ratio,
        state_dir,
        watch: raw.watch,
        debounce: Duration::from_millis(raw.debounce_ms),
    })
}

fn validate_policy(raw: &RawPolicy) -> Result<PolicyConfig, ConfigError> {
    let action = Action::parse(&raw.action)
        .filter(|a| a.is_answer())
        .ok_or_else(|| {
            invalid(
                "policy.action",
                format!(
                    "{:?} is not one of nxdomain | nodata | address | refused | drop",
                    raw.action
                ),
            )
        })?;
    let address_v4 = raw.address_v4.parse::<Ipv4Addr>().map_err(|_| {
        invalid(
            "policy.address_v4",
            format!("{:?} is not an IPv4 address", raw.address_v4),
        )
    })?;
    let address_v6 = raw.address_v6.parse::<Ipv6Addr>().map_err(|_| {
        invalid(
            "policy.address_v6",
            format!("{:?} is not an IPv6 address", raw.address_v6),
        )
    })?;
    // RFC 8914 §5.2: 0..=49151 are assigned by IANA (0..=30 so far),
    // 49152..=65535 are private use.
    let ede_code = match raw.ede_code {
        c @ (0..=30 | 49152..=65535) => c as u16,
        c => {
            return Err(invalid(
                "policy.ede_code",
                format!(
                    "{c} is neither a registered RFC 8914 code (0..=30; 15 Blocked, 16 Censored, 17 Filtered) nor private use (49152..=65535)"
                ),
            ));
        }
    };
    let ede_text = Template::parse(&raw.ede_text).map_err(|m| invalid("policy.ede_text", m))?;
    if raw.ede_text.len() > 512 {
        return Err(invalid("policy.ede_text", "longer than 512 bytes"));
    }
    if raw.ttl > 604_800 {
        return Err(invalid("policy.ttl", "at most 604800 (one week)"));
    }
    let local_zones =
        LocalZones::parse_list(&raw.local_zones).map_err(|m| invalid("policy.local_zones", m))?;
    let bypass_signals = BypassSignals::parse_list(&raw.bypass_signals)
        .map_err(|m| invalid("policy.bypass_signals", m))?;
    Ok(PolicyConfig {
        action,
        address_v4,
        address_v6,
        ttl: raw.ttl,
        ede_code,
        ede_text,
        local_zones,
        bypass_signals,
    })
}

/// The `nameserver` entries of resolv.conf text as port-53 upstreams,
/// minus any that would send queries back to ourselves.
pub fn upstreams_from_resolv_conf(text: &str, own: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(word) = words.next() else { continue };
        // A scoped IPv6 address (`fe80::1%eth0`) cannot be parsed portably; skip it.
        let Ok(ip) = word.parse::<IpAddr>() else {
            continue;
        };
        let addr = SocketAddr::new(ip, 53);
        // A wildcard listener on port 53 also answers on every loopback address.
        let loops = own.iter().any(|l| {
            l.port() == 53
                && (l.ip() == ip
                    || (l.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
        });
        if !loops && !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinkhole::TemplatePart;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: "t".into(),
            message: e.to_string(),
        })?;
        if raw.upstream.servers.is_empty() {
            raw.upstream.servers = vec!["192.0.2.53".into()];
        }
        Config::from_raw(raw)
    }

    #[test]
    fn defaults_match_the_issue() {
        let c = load("").unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert!(c.server.workers >= 1);
        assert_eq!(c.upstream.timeout, Duration::from_millis(1500));
        assert_eq!(c.upstream.servers, vec!["192.0.2.53:53".parse().unwrap()]);
        assert_eq!(c.lists.paths, vec![PathBuf::from("./blocklists/")]);
        assert_eq!(c.policy.action, Action::Nxdomain);
        assert_eq!(c.policy.address_v4, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(c.policy.ttl, 300);
        assert_eq!(c.policy.ede_code, 16);
        assert_eq!(c.acl.len(), 2);
        assert_eq!(c.cache.max_entries, 1_000_000);
        assert_eq!(c.audit.path, crate::audit::AuditPath::Stdout);
    }

    #[test]
    fn unknown_keys_are_named() {
        for (text, key) in [
            ("[server]\nlisten_addr = []\n", "listen_addr"),
            ("[policy]\nactoin = \"drop\"\n", "actoin"),
            ("[bogus]\n", "bogus"),
            ("[[lists.file]]\npath = \"x\"\nfmt = \"rpz\"\n", "fmt"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("[server]\nlisten = [\"nope\"]\n", "server.listen"),
            ("[policy]\naction = \"explode\"\n", "policy.action"),
            ("[policy]\nede_code = 1000\n", "policy.ede_code"),
            ("[policy]\nede_text = \"by {court}\"\n", "policy.ede_text"),
            ("[policy]\naddress_v4 = \"::1\"\n", "policy.address_v4"),
            ("[acl]\nallow = [\"10.0.0.0/33\"]\n", "acl.allow"),
            ("[upstream]\nservers = [\"x\"]\n", "upstream.servers"),
            ("[upstream]\ntimeout_ms = 0\n", "upstream.timeout_ms"),
            (
                "[[lists.file]]\npath = \"a\"\naction = \"zap\"\n",
                "lists.file.action",
            ),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn template_parts() {
        let t = Template::parse("order {decision} by {authority} ({list}: {rule}) {{x}}").unwrap();
        assert_eq!(
            t.parts,
            vec![
                TemplatePart::Lit("order ".into()),
                TemplatePart::Decision,
                TemplatePart::Lit(" by ".into()),
                TemplatePart::Authority,
                TemplatePart::Lit(" (".into()),
                TemplatePart::List,
                TemplatePart::Lit(": ".into()),
                TemplatePart::Rule,
                TemplatePart::Lit(") {x}".into()),
            ]
        );
        assert!(Template::parse("{decision").is_err());
        assert!(Template::parse("a } b").is_err());
    }

    #[test]
    fn resolv_conf_skips_loops() {
        let own: Vec<SocketAddr> = vec!["127.0.0.1:53".parse().unwrap()];
        let text = "# c\nnameserver 127.0.0.1\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\nnameserver ::1\nsearch x\n";
        assert_eq!(
            upstreams_from_resolv_conf(text, &own),
            vec!["10.0.0.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
        let own: Vec<SocketAddr> = vec!["0.0.0.0:53".parse().unwrap()];
        assert_eq!(
            upstreams_from_resolv_conf("nameserver 127.0.0.53\nnameserver 9.9.9.9", &own),
            vec!["9.9.9.9:53".parse().unwrap()]
        );
        assert!(upstreams_from_resolv_conf("", &own).is_empty());
    }

    #[test]
    fn effective_config_round_trips() {
        let c = load("[policy]\naction = \"address\"\n").unwrap();
        let again = Config::from_toml_str(&c.to_toml(), "x").unwrap();
        assert_eq!(again.policy.action, Action::Address);
        assert_eq!(again.upstream.servers, c.upstream.servers);
    }

    #[test]
    fn metrics_listen_and_limits() {
        let c = load("").unwrap();
        assert!(c.metrics.listen.is_empty(), "off by default");
        assert_eq!(c.metrics.limits, crate::http::HttpLimits::default());
        let one: SocketAddr = "127.0.0.1:9153".parse().unwrap();
        let c = load("[metrics]\nlisten = \"127.0.0.1:9153\"\n").unwrap();
        assert_eq!(c.metrics.listen, vec![one]);
        let c = load("[metrics]\nlisten = \"\"\n").unwrap();
        assert!(c.metrics.listen.is_empty());
        let c = load(
            "[metrics]\nlisten = [\"127.0.0.1:9153\", \"[::1]:0\"]\nmax_connections = 8\nheader_timeout_ms = 2000\n",
        )
        .unwrap();
        assert_eq!(c.metrics.listen, vec![one, "[::1]:0".parse().unwrap()]);
        assert_eq!(c.metrics.limits.max_connections, 8);
        assert_eq!(c.metrics.limits.header_timeout, Duration::from_secs(2));
        // The effective configuration keeps the list and the limits.
        let again = Config::from_toml_str(&c.to_toml(), "x").unwrap();
        assert_eq!(again.metrics, c.metrics);
        for (text, key) in [
            ("[metrics]\nlisten = \"localhost:9153\"\n", "metrics.listen"),
            ("[metrics]\nlisten = [\"127.0.0.1\"]\n", "metrics.listen"),
            (
                "[metrics]\nmax_connections = 0\n",
                "metrics.max_connections",
            ),
            (
                "[metrics]\nheader_timeout_ms = 0\n",
                "metrics.header_timeout_ms",
            ),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
        let e = load("[metrics]\nmax_conns = 1\n").unwrap_err().to_string();
        assert!(e.contains("max_conns"), "{e}");
    }

    #[test]
    fn list_file_overrides() {
        let c = load("[lists]\nexact_only = true\n[[lists.file]]\npath = \"/a/x.txt\"\naction = \"drop\"\nexact_only = false\n").unwrap();
        let o = c.lists.options_for(Path::new("/a/x.txt"));
        assert_eq!(o.action, Some(Action::Drop));
        assert!(!o.exact_only);
        assert!(c.lists.options_for(Path::new("/a/y.txt")).exact_only);
    }

    #[test]
    fn bypass_signals_default_to_both_and_are_validated() {
        use crate::bypass::{BypassSignal, BypassSignals};
        let c = load("").unwrap();
        assert_eq!(c.policy.bypass_signals, BypassSignals::default());
        let c = load("[policy]\nbypass_signals = [\"firefox-canary\"]\n").unwrap();
        assert_eq!(
            c.policy.bypass_signals,
            BypassSignals::of(&[BypassSignal::FirefoxCanary])
        );
        let c = load("[policy]\nbypass_signals = []\n").unwrap();
        assert_eq!(c.policy.bypass_signals, BypassSignals::none());
        let e = load("[policy]\nbypass_signals = [\"chrome\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("policy.bypass_signals"), "{e}");
    }
}
