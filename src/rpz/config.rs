//! `[[rpz.follow]]`: the zones this node follows from RPZ primaries,
//! validated here; `config.rs` only hands the raw table over.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::list::name::normalize;

/// BIND's default for `max-records`-style limits is unlimited; a regulator's
/// zone of 20 million names is already far past any published one.
pub const DEFAULT_MAX_ZONE_RECORDS: u64 = 20_000_000;

/// `[rpz]` as written in the configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRpz {
    pub follow: Vec<RawFollow>,
    /// `[rpz.serve]`: validated by `rpz::serve`.
    pub serve: crate::rpz::serve::RawRpzServeConfig,
}

/// One `[[rpz.follow]]` entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFollow {
    pub zone: String,
    pub primaries: Vec<String>,
    pub tsig_key_file: String,
    pub max_zone_records: u64,
}

impl Default for RawFollow {
    fn default() -> Self {
        RawFollow {
            zone: String::new(),
            primaries: Vec::new(),
            tsig_key_file: String::new(),
            max_zone_records: DEFAULT_MAX_ZONE_RECORDS,
        }
    }
}

/// A followed zone, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowConfig {
    /// Lowercase, no trailing dot (`rpz.example`).
    pub zone: String,
    pub primaries: Vec<SocketAddr>,
    /// BIND key file; None: transfers unsigned (warned about at start).
    pub tsig_key_file: Option<PathBuf>,
    pub max_zone_records: u64,
}

/// A bad `[rpz]` key, named as in the file (`rpz.follow[0].zone`).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{key}: {message}")]
pub struct RpzConfigError {
    pub key: String,
    pub message: String,
}

fn err(i: usize, key: &str, message: impl Into<String>) -> RpzConfigError {
    RpzConfigError {
        key: format!("rpz.follow[{i}].{key}"),
        message: message.into(),
    }
}

/// `ADDR:PORT`, or a bare address meaning port 53.
fn parse_primary(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not ADDR or ADDR:PORT"))
}

impl RawRpz {
    /// Validate every entry. Followed zones are persisted, so they need
    /// `lists.state_dir`.
    pub fn validate(&self, state_dir: Option<&Path>) -> Result<Vec<FollowConfig>, RpzConfigError> {
        let mut out: Vec<FollowConfig> = Vec::with_capacity(self.follow.len());
        for (i, raw) in self.follow.iter().enumerate() {
            if state_dir.is_none() {
                return Err(err(
                    i,
                    "zone",
                    "[[rpz.follow]] keeps the zone and its serial in lists.state_dir: set it",
                ));
            }
            let zone_raw = raw.zone.trim().trim_end_matches('.');
            if zone_raw.is_empty() {
                return Err(err(i, "zone", "a zone name is required"));
            }
            let zone = normalize(zone_raw).map_err(|e| err(i, "zone", e.to_string()))?;
            // The zone names its file in state_dir: no way out of it.
            if zone.contains('/') || zone.starts_with('.') {
                return Err(err(i, "zone", format!("{zone:?} is not a zone name")));
            }
            if out.iter().any(|f| f.zone == zone) {
                return Err(err(i, "zone", format!("{zone} is followed twice")));
            }
            if raw.primaries.is_empty() {
                return Err(err(i, "primaries", "at least one primary is required"));
            }
            let primaries = raw
                .primaries
                .iter()
                .map(|p| parse_primary(p).map_err(|m| err(i, "primaries", m)))
                .collect::<Result<Vec<_>, _>>()?;
            if raw.max_zone_records == 0 {
                return Err(err(i, "max_zone_records", "must be > 0"));
            }
            let key = raw.tsig_key_file.trim();
            out.push(FollowConfig {
                zone,
                primaries,
                tsig_key_file: (!key.is_empty()).then(|| PathBuf::from(key)),
                max_zone_records: raw.max_zone_records,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<FollowConfig>, RpzConfigError> {
        let raw: RawRpz = toml::from_str(text).map_err(|e| RpzConfigError {
            key: "toml".into(),
            message: e.to_string(),
        })?;
        raw.validate(Some(Path::new("state")))
    }

    #[test]
    fn a_full_entry_validates() {
        let got = parse(
            "[[follow]]\nzone = \"RPZ.Example.\"\nprimaries = [\"192.0.2.10:5300\", \"::1\"]\ntsig_key_file = \"xfr.key\"\n",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![FollowConfig {
                zone: "rpz.example".into(),
                primaries: vec![
                    "192.0.2.10:5300".parse().unwrap(),
                    "[::1]:53".parse().unwrap()
                ],
                tsig_key_file: Some("xfr.key".into()),
                max_zone_records: DEFAULT_MAX_ZONE_RECORDS,
            }]
        );
    }

    #[test]
    fn bad_entries_name_the_key() {
        let cases = [
            (
                "[[follow]]\nprimaries = [\"127.0.0.1\"]\n",
                "rpz.follow[0].zone",
            ),
            ("[[follow]]\nzone = \"a.test\"\n", "rpz.follow[0].primaries"),
            (
                "[[follow]]\nzone = \"a.test\"\nprimaries = [\"nope\"]\n",
                "rpz.follow[0].primaries",
            ),
            (
                "[[follow]]\nzone = \"a.test\"\nprimaries = [\"127.0.0.1\"]\nmax_zone_records = 0\n",
                "rpz.follow[0].max_zone_records",
            ),
            (
                "[[follow]]\nzone = \"a.test\"\nprimaries = [\"127.0.0.1\"]\n[[follow]]\nzone = \"A.test.\"\nprimaries = [\"127.0.0.1\"]\n",
                "rpz.follow[1].zone",
            ),
            (
                "[[follow]]\nzone = \"a/b\"\nprimaries = [\"127.0.0.1\"]\n",
                "rpz.follow[0].zone",
            ),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
        let e = toml::from_str::<RawRpz>("[[follow]]\nzone = \"a\"\nprimary = []\n").unwrap_err();
        assert!(e.to_string().contains("primary"), "{e}");
    }

    #[test]
    fn follow_needs_a_state_dir() {
        let raw: RawRpz =
            toml::from_str("[[follow]]\nzone = \"a.test\"\nprimaries = [\"127.0.0.1\"]\n").unwrap();
        let e = raw.validate(None).unwrap_err();
        assert!(e.message.contains("state_dir"), "{e}");
        assert!(RawRpz::default().validate(None).unwrap().is_empty());
    }
}
