//! Name normalisation shared by every list format: trim, lowercase, one
//! trailing dot off, UTS-46 to punycode, then length and label checks.

use thiserror::Error;

/// Why a string is not a usable domain name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("empty label in {0:?}")]
    EmptyLabel(String),
    #[error("label longer than 63 octets in {0:?}")]
    LabelTooLong(String),
    #[error("name longer than 253 octets ({0} octets)")]
    NameTooLong(usize),
    #[error("invalid character {ch:?} in {name:?}")]
    BadChar { ch: char, name: String },
    #[error("not a valid internationalised name {0:?}")]
    Idna(String),
}

/// Normalise one name as written in a list. Returns the lowercase ASCII
/// (punycode) form without a trailing dot.
pub fn normalize(raw: &str) -> Result<String, NameError> {
    let trimmed = raw.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        // UTS-46 maps (case-folds, NFC) and converts each U-label to an A-label.
        idna::domain_to_ascii(trimmed).map_err(|_| NameError::Idna(trimmed.to_string()))?
    };
    validate(&ascii)?;
    Ok(ascii)
}

/// Check an already lowercase ASCII name: LDH plus `_` (used by real
/// service names), labels 1..=63 octets, at most 253 octets in all.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 253 {
        return Err(NameError::NameTooLong(name.len()));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel(name.to_string()));
        }
        if label.len() > 63 {
            return Err(NameError::LabelTooLong(name.to_string()));
        }
        if let Some(ch) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(NameError::BadChar {
                ch,
                name: name.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok: &[(&str, &str)] = &[
            ("Example.COM", "example.com"),
            ("  example.com \t", "example.com"),
            ("0xarb.xyz.", "0xarb.xyz"),
            ("IMXtoken.net", "imxtoken.net"),
            ("aavè.com", "xn--aav-8la.com"),
            ("легально.com", "xn--80affxdmh4i.com"),
            ("xn--80affxdmh4i.com", "xn--80affxdmh4i.com"),
            ("_dmarc.example.com", "_dmarc.example.com"),
            ("a-b.c", "a-b.c"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize(raw).as_deref(), Ok(*want), "input {raw:?}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}.com", ["abcdefghi"; 26].join("."));
        type Check = fn(&NameError) -> bool;
        let bad: &[(&str, Check)] = &[
            ("", |e| matches!(e, NameError::Empty)),
            (".", |e| matches!(e, NameError::Empty)),
            ("a..b", |e| matches!(e, NameError::EmptyLabel(_))),
            (".a.b", |e| matches!(e, NameError::EmptyLabel(_))),
            ("example.com..", |e| matches!(e, NameError::EmptyLabel(_))),
            (&long_label, |e| matches!(e, NameError::LabelTooLong(_))),
            (&long_name, |e| matches!(e, NameError::NameTooLong(_))),
            ("exa mple.com", |e| matches!(e, NameError::BadChar { .. })),
            ("exa/mple.com", |e| matches!(e, NameError::BadChar { .. })),
        ];
        for (raw, check) in bad {
            let err = normalize(raw).expect_err(raw);
            assert!(check(&err), "input {raw:?} gave {err:?}");
        }
    }
}
