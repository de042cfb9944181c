//! One list entry (a name, `*.name`, a URL or an address) to a [`Target`],
//! and keyword validation. Shared by every format except RPZ, which has
//! its own owner-name rules.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::list::name::normalize;
use crate::list::{Scope, Target};

/// Read one trimmed entry. The error is the skip reason.
pub(super) fn entry(raw: &str) -> Result<Target, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("empty entry".into());
    }
    if let Some(net) = ip(s) {
        return Ok(Target::Ip(net));
    }
    if !s.contains([':', '/']) {
        // The common case, a plain name: no URL scanning needed.
        return name(s);
    }
    if let Some((scheme, rest)) = s.split_once("://") {
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err(format!("not a name or URL: {s:?}"));
        }
        return url(Some(scheme), rest);
    }
    if s.contains('/') {
        // `twitter.com/Account`: a URL without a scheme.
        return url(None, s);
    }
    name(s)
}

/// `name` or `*.name`, as a subtree or subdomains rule.
pub(super) fn name(s: &str) -> Result<Target, String> {
    let (rest, scope) = match s.strip_prefix("*.") {
        Some(rest) => (rest, Scope::Subdomains),
        None => (s, Scope::Subtree),
    };
    if rest.contains('*') {
        return Err(format!(
            "`*` is only allowed as a whole leading label (`*.name`): {s:?}"
        ));
    }
    let name = normalize(rest).map_err(|e| e.to_string())?;
    Ok(Target::Name { name, scope })
}

/// A bare address or prefix; host bits of a prefix are cleared so equal
/// networks compare equal.
pub(super) fn ip(s: &str) -> Option<IpNet> {
    // An IPv4 address starts with a digit and an IPv6 one has a `:`; most
    // names are neither, and skip two failing parses.
    if !(s.starts_with(|c: char| c.is_ascii_digit()) || s.contains(':')) {
        return None;
    }
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Some(IpNet::from(addr));
    }
    s.parse::<IpNet>().ok().map(|n| n.trunc())
}

/// `scheme://host[:port]` with nothing or `/` after it: a cheap test that
/// needs no name normalisation.
pub(super) fn is_root_url(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    !scheme.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric())
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| !matches!(b, b'/' | b'?' | b'#' | b'@') && !b.is_ascii_whitespace())
}

/// `rest` is what follows `scheme://`, or the whole entry when there is no
/// scheme. A URL whose path is empty or `/` names the whole host; any other
/// is kept in the canonical form of `list::url`.
fn url(scheme: Option<&str>, rest: &str) -> Result<Target, String> {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // User info is never part of what is blocked, and keeping a password
    // from a pasted URL in audit output would leak it.
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, _) = split_port(hostport)?;
    if host.is_empty() {
        return Err(format!("URL has no host: {rest:?}"));
    }
    let host_target = match host.parse::<IpAddr>() {
        Ok(addr) => Target::Ip(IpNet::from(addr)),
        Err(_) => name(host).map_err(|e| format!("URL host: {e}"))?,
    };
    if let Target::Name {
        scope: Scope::Subdomains,
        ..
    } = host_target
    {
        return Err(format!("URL host may not be a wildcard: {host:?}"));
    }
    if path.is_empty() || path == "/" {
        return Ok(host_target);
    }
    // The rule's canonical text (`list::url`): what requests are compared
    // with at the web front. A URL whose normalised path is `/` without a
    // query (`http://host/`, `http://host/#top`) names the whole host.
    let norm = super::super::url::NormUrl::parse(&match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest.to_string(),
    })
    .map_err(|e| e.to_string())?;
    if norm.path == "/" && norm.query.is_none() {
        return Ok(host_target);
    }
    Ok(Target::Url(norm.to_string()))
}

fn split_port(hostport: &str) -> Result<(&str, Option<&str>), String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(format!("unclosed `[` in URL host {hostport:?}"));
        };
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("bad URL host {hostport:?}")),
        }
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("bad port in URL host {hostport:?}"));
    }
    Ok((host, port))
}

/// Shortest keyword accepted: two letters block far too much by accident.
const KEYWORD_MIN: usize = 3;

/// Validate and normalise the word of a `keyword:` line (see the module
/// documentation for the semantics).
pub(super) fn keyword(raw: &str) -> Result<Target, String> {
    let k = raw.trim();
    if k.is_empty() {
        return Err("empty keyword".into());
    }
    if k.contains('.') {
        return Err(format!(
            "keyword may not contain `.` (it matches within one label): {k:?}"
        ));
    }
    let k = if k.is_ascii() {
        k.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(k)
            .map_err(|_| format!("not a valid internationalised keyword {k:?}"))?
    };
    // UTS-46 maps some characters (e.g. `。`) to `.`.
    if let Some(ch) = k
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!("invalid character {ch:?} in keyword {k:?}"));
    }
    if k.len() < KEYWORD_MIN {
        return Err(format!(
            "keyword {k:?} is shorter than {KEYWORD_MIN} characters and would match too many names"
        ));
    }
    if k.len() > 63 {
        return Err(format!("keyword {k:?} is longer than a label (63 octets)"));
    }
    Ok(Target::Keyword(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str) -> Target {
        Target::Name {
            name: name.into(),
            scope: Scope::Subtree,
        }
    }

    #[test]
    fn entries() {
        let sub = |name: &str| Target::Name {
            name: name.into(),
            scope: Scope::Subdomains,
        };
        let url = |u: &str| Target::Url(u.into());
        let ipn = |s: &str| Target::Ip(s.parse().expect("net"));
        let ok: &[(&str, Target)] = &[
            ("example.com", n("example.com")),
            ("  Example.COM.  ", n("example.com")),
            ("0xarb.xyz.", n("0xarb.xyz")),
            ("IMXtoken.net", n("imxtoken.net")),
            ("aavè.com", n("xn--aav-8la.com")),
            ("5ıre.com", n("xn--5re-jua.com")),
            ("легально.com", n("xn--80affxdmh4i.com")),
            ("*.fleek.co", sub("fleek.co")),
            ("*.Fleek.CO.", sub("fleek.co")),
            ("104.168.169.107", ipn("104.168.169.107/32")),
            ("2001:db8::1", ipn("2001:db8::1/128")),
            ("::", ipn("::/128")),
            ("198.51.100.7/24", ipn("198.51.100.0/24")),
            ("2001:db8::/32", ipn("2001:db8::/32")),
            (
                "twitter.com/AcalaNetworks",
                url("twitter.com/AcalaNetworks"),
            ),
            ("X.com/AcalaNetworks", url("x.com/AcalaNetworks")),
            ("example.com/", n("example.com")),
            ("https://example.com/", n("example.com")),
            ("http://Example.com", n("example.com")),
            ("http://www.GodSpice.com", n("www.godspice.com")),
            ("http://example.com:8080/", n("example.com")),
            ("http://user:pw@example.com/", n("example.com")),
            ("http://192.0.2.1/", ipn("192.0.2.1/32")),
            ("http://[2001:db8::1]:443/", ipn("2001:db8::1/128")),
            ("http://легально.com/", n("xn--80affxdmh4i.com")),
            (
                "HTTP://Example.com/Path?Q=1",
                url("http://example.com/Path?Q=1"),
            ),
            ("https://example.com/?q=1", url("https://example.com/?q=1")),
            // The fragment is dropped (browsers never send it): the host.
            ("https://example.com#top", n("example.com")),
            ("http://h.example/a/../%7Eb#x", url("http://h.example/~b")),
            (
                "http://user:pw@example.com:81/a",
                url("http://example.com:81/a"),
            ),
            (
                "https://94.102.63.77/h/x.html",
                url("https://94.102.63.77/h/x.html"),
            ),
            ("http://[2001:DB8::1]/a", url("http://[2001:db8::1]/a")),
        ];
        for (raw, want) in ok {
            assert_eq!(entry(raw).as_ref(), Ok(want), "input {raw:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty entry"),
            ("   ", "empty entry"),
            ("a..b", "empty label"),
            ("exa mple.com", "invalid character"),
            ("*", "only allowed as a whole leading label"),
            ("*.", "empty name"),
            ("a.*.com", "only allowed as a whole leading label"),
            ("*.*.com", "only allowed as a whole leading label"),
            ("ex*ample.com", "only allowed as a whole leading label"),
            ("1http://x.com/", "not a name or URL"),
            ("http:///path", "URL has no host"),
            ("/path/only", "URL has no host"),
            ("http://exa mple.com/a", "URL host: invalid character"),
            ("http://*.example.com/a", "URL host may not be a wildcard"),
            ("http://example.com:80a/", "bad port"),
            ("http://example.com:/", "bad port"),
            ("http://[2001:db8::1/", "unclosed `[`"),
            ("http://[2001:db8::1]x/", "bad URL host"),
            ("a.com\u{0}", "invalid character"),
        ];
        for (raw, want) in bad {
            let err = entry(raw).expect_err(raw);
            assert!(err.contains(want), "input {raw:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn root_urls() {
        for u in [
            "http://a.com",
            "https://a.com/",
            "http://a.com:81/",
            "http://[::1]/",
        ] {
            assert!(is_root_url(u), "{u}");
        }
        for u in [
            "a.com/",
            "http://",
            "http:///",
            "http://a.com//",
            "http://a.com/x",
            "http://a.com?q",
            "http://a.com#f",
            "http://u@a.com/",
            "http://a b/",
            "://a.com",
            "h-t://a.com",
        ] {
            assert!(!is_root_url(u), "{u}");
        }
    }

    #[test]
    fn keywords() {
        let ok: &[(&str, &str)] = &[
            ("binance", "binance"),
            (" BiNance ", "binance"),
            ("my-brand", "my-brand"),
            ("abc", "abc"),
            ("бинанс", "xn--80abvuby"),
        ];
        for (raw, want) in ok {
            assert_eq!(
                keyword(raw),
                Ok(Target::Keyword((*want).into())),
                "input {raw:?}"
            );
        }
        let long = "a".repeat(64);
        let bad: &[(&str, &str)] = &[
            ("", "empty keyword"),
            ("ab", "shorter than 3"),
            ("AB", "shorter than 3"),
            ("bin.ance", "may not contain `.`"),
            ("bin ance", "invalid character ' '"),
            ("bin*", "invalid character '*'"),
            ("bin。ance", "invalid character '.'"),
            (&long, "longer than a label"),
        ];
        for (raw, want) in bad {
            let err = keyword(raw).expect_err(raw);
            assert!(err.contains(want), "input {raw:?}: {err:?} lacks {want:?}");
        }
    }
}
