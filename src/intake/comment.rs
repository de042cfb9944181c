//! The signed trusted comment of a list file:
//! `list=NAME version=N [base=N] [expires=RFC3339]`.
//!
//! minisign covers the trusted comment with its global signature, so what
//! is written here cannot be changed without the signer's key: the list a
//! file is for, its version (rollback and replay protection), the version a
//! delta applies to, and when it stops being current. Fields are separated
//! by spaces or tabs, in any order, each at most once; unknown `key=value`
//! fields are refused (a typo such as `verison=` must not pass as "no
//! version"); minisign's own `timestamp:` and `file:` fields, which it
//! writes when `-t` is not given, are not `key=value` and are refused too.

use thiserror::Error;

use crate::audit::time::parse_rfc3339;

/// What a trusted comment says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedComment {
    pub list: String,
    pub version: u64,
    /// A delta: the version it applies to.
    pub base: Option<u64>,
    /// When the list stops being current, as written (RFC 3339) and in
    /// microseconds since the epoch.
    pub expires: Option<(String, i64)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CommentError {
    #[error("trusted comment has no `list=` field")]
    NoList,
    #[error("trusted comment has no `version=` field")]
    NoVersion,
    #[error("trusted comment field {0:?} is not key=value")]
    NotKeyValue(String),
    #[error("trusted comment names `{0}` twice")]
    Duplicate(&'static str),
    #[error("trusted comment field `{0}` is not known (list, version, base, expires)")]
    Unknown(String),
    #[error("trusted comment `{field}={value}` is not a number")]
    NotNumber { field: &'static str, value: String },
    #[error("trusted comment `expires={0}` is not an RFC 3339 time")]
    BadTime(String),
    #[error("trusted comment `list=` is empty")]
    EmptyList,
}

/// Parse a trusted comment (as minisign shows it, without the
/// `trusted comment: ` prefix).
pub fn parse(text: &str) -> Result<TrustedComment, CommentError> {
    let mut list = None;
    let mut version = None;
    let mut base = None;
    let mut expires = None;
    for field in text.split([' ', '\t']).filter(|f| !f.is_empty()) {
        let Some((k, v)) = field.split_once('=') else {
            return Err(CommentError::NotKeyValue(field.chars().take(64).collect()));
        };
        let number = |field: &'static str| {
            // Digits only: `+5`, `-0` and leading spaces are typos here.
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CommentError::NotNumber {
                    field,
                    value: v.chars().take(32).collect(),
                });
            }
            v.parse::<u64>().map_err(|_| CommentError::NotNumber {
                field,
                value: v.chars().take(32).collect(),
            })
        };
        match k {
            "list" => {
                if list.is_some() {
                    return Err(CommentError::Duplicate("list"));
                }
                if v.is_empty() {
                    return Err(CommentError::EmptyList);
                }
                list = Some(v.to_string());
            }
            "version" => {
                if version.is_some() {
                    return Err(CommentError::Duplicate("version"));
                }
                version = Some(number("version")?);
            }
            "base" => {
                if base.is_some() {
                    return Err(CommentError::Duplicate("base"));
                }
                base = Some(number("base")?);
            }
            "expires" => {
                if expires.is_some() {
                    return Err(CommentError::Duplicate("expires"));
                }
                let at = parse_rfc3339(v)
                    .map_err(|_| CommentError::BadTime(v.chars().take(64).collect()))?;
                expires = Some((v.to_string(), at));
            }
            other => return Err(CommentError::Unknown(other.chars().take(32).collect())),
        }
    }
    Ok(TrustedComment {
        list: list.ok_or(CommentError::NoList)?,
        version: version.ok_or(CommentError::NoVersion)?,
        base,
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let ok = parse("list=afm version=42").unwrap();
        assert_eq!((ok.list.as_str(), ok.version, ok.base), ("afm", 42, None));
        let d = parse(" version=7\tbase=6 list=rkn  expires=2027-01-01T00:00:00Z ").unwrap();
        assert_eq!(d.base, Some(6));
        assert_eq!(d.expires.as_ref().unwrap().0, "2027-01-01T00:00:00Z");
        assert!(d.expires.unwrap().1 > 0);
        let cases: &[(&str, CommentError)] = &[
            ("version=1", CommentError::NoList),
            ("list=afm", CommentError::NoVersion),
            ("list= version=1", CommentError::EmptyList),
            ("list=a list=b version=1", CommentError::Duplicate("list")),
            (
                "list=a version=1 version=2",
                CommentError::Duplicate("version"),
            ),
            ("list=a verison=1", CommentError::Unknown("verison".into())),
            (
                "timestamp:1555779966 file:test",
                CommentError::NotKeyValue("timestamp:1555779966".into()),
            ),
            (
                "list=a version=+1",
                CommentError::NotNumber {
                    field: "version",
                    value: "+1".into(),
                },
            ),
            (
                "list=a version=99999999999999999999999",
                CommentError::NotNumber {
                    field: "version",
                    value: "99999999999999999999999".into(),
                },
            ),
            (
                "list=a version=1 expires=tomorrow",
                CommentError::BadTime("tomorrow".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).as_ref().unwrap_err(), want, "{text}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn round_trips(list in "[a-z0-9_.-]{1,20}", version: u64, base: Option<u64>) {
            let mut text = format!("list={list} version={version}");
            if let Some(b) = base {
                text.push_str(&format!(" base={b}"));
            }
            let c = parse(&text).unwrap();
            prop_assert_eq!(c.list, list);
            prop_assert_eq!(c.version, version);
            prop_assert_eq!(c.base, base);
        }
    }
}
