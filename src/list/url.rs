//! URL normalisation and matching, one function for list rules (at parse
//! time, so the snapshot stores canonical text) and HTTP requests (at the
//! web front) alike: two spellings of one page must compare equal, or a
//! rule is evaded by writing `%7E` for `~` or `/a/../page` for `/page`.
//!
//! The table (also in `blocklists/FORMAT.md`):
//!
//! | part | rule |
//! |---|---|
//! | scheme | lower-cased; none = an `http` and an `https` rule; the front matches either scheme (an `https` page is blocked over plain HTTP too) |
//! | host | lower-cased, IDN → punycode, one trailing dot removed; `www.` is not implied |
//! | port | the scheme's default (80, 443) removed; an explicit other port matches requests to that port only |
//! | path | unreserved characters percent-decoded, other escapes upper-case hex, non-ASCII and unsafe bytes percent-encoded (UTF-8), dot-segments removed, duplicate slashes collapsed; case-sensitive |
//! | path ending in `/` | covers everything below it; otherwise exact |
//! | query | percent-normalised as the path; ignored unless the rule has one, then equal |
//! | fragment | dropped |

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use thiserror::Error;

/// Why a URL (rule or request) cannot be normalised.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum UrlError {
    #[error("URL has no host")]
    NoHost,
    #[error("unclosed `[` in URL host {0:?}")]
    Bracket(String),
    #[error("bad port in URL host {0:?}")]
    Port(String),
    #[error("URL host: {0}")]
    Host(String),
    #[error("URL host may not be a wildcard: {0:?}")]
    Wildcard(String),
    #[error("bad URL scheme {0:?}")]
    Scheme(String),
}

/// A URL in canonical form. `scheme` is `None` for a scheme-less rule
/// (`twitter.com/Account`, both `http` and `https`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NormUrl {
    pub scheme: Option<String>,
    /// Lower-case ASCII name, IPv4 dotted quad, or `[v6]`.
    pub host: String,
    /// `None` for the scheme's default port.
    pub port: Option<u16>,
    /// Starts with `/`.
    pub path: String,
    /// Without the `?`; `None` when absent or empty.
    pub query: Option<String>,
}

/// The default port of a scheme (scheme-less rules count as `http`).
fn default_port(scheme: Option<&str>) -> Option<u16> {
    match scheme {
        None | Some("http") => Some(80),
        Some("https") => Some(443),
        Some(_) => None,
    }
}

impl NormUrl {
    /// Parse and normalise a URL as written in a list or typed on the
    /// command line: `scheme://[user@]host[:port][/path][?query][#frag]` or
    /// `host[:port]/path…` without a scheme. User info is dropped (never
    /// part of what is blocked, and a password in audit output would leak).
    pub fn parse(raw: &str) -> Result<NormUrl, UrlError> {
        let s = raw.trim();
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => {
                let ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
                if !ok {
                    return Err(UrlError::Scheme(scheme.to_string()));
                }
                (Some(scheme.to_ascii_lowercase()), rest)
            }
            None => (None, s),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = split_host_port(hostport)?;
        if host.starts_with("*.") {
            return Err(UrlError::Wildcard(host.to_string()));
        }
        let host = normalize_host(host)?;
        let port = port.filter(|p| Some(*p) != default_port(scheme.as_deref()));
        let (path, query) = normalize_target(tail);
        Ok(NormUrl {
            scheme,
            host,
            port,
            path,
            query,
        })
    }

    /// A request as the front sees it: the `Host` header (or the authority
    /// of an absolute-form target) and the origin-form target
    /// (`/path?query`), on a plain-HTTP connection.
    pub fn from_request(host_header: &str, target: &str) -> Result<NormUrl, UrlError> {
        let (host, port) = split_host_port(host_header.trim())?;
        let host = normalize_host(host)?;
        let port = port.filter(|&p| p != 80);
        let (path, query) = normalize_target(target);
        Ok(NormUrl {
            scheme: Some("http".into()),
            host,
            port,
            path,
            query,
        })
    }

    /// Whether this (rule) URL's path and query cover `req`'s. Host and
    /// port are compared by the caller's index; see [`UrlRule::matches`].
    pub fn covers(&self, req: &NormUrl) -> bool {
        if self.host != req.host || self.port != req.port {
            return false;
        }
        let path_ok = if self.path.ends_with('/') {
            req.path.starts_with(&self.path)
        } else {
            req.path == self.path
        };
        path_ok && (self.query.is_none() || self.query == req.query)
    }

    /// `true` for a rule that names the `https` scheme, or none (which
    /// stands for both).
    pub fn covers_https(&self) -> bool {
        matches!(self.scheme.as_deref(), None | Some("https"))
    }

    /// `true` if the front (plain HTTP) can enforce it: `http`, `https` or
    /// no scheme (an `ftp://` rule is kept and reported, never matched).
    pub fn is_web(&self) -> bool {
        matches!(self.scheme.as_deref(), None | Some("http") | Some("https"))
    }
}

impl fmt::Display for NormUrl {
    /// The canonical text: `[scheme://]host[:port]/path[?query]`. Parsing
    /// it again gives the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.scheme {
            write!(f, "{s}://")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        f.write_str(&self.path)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

/// `host[:port]` or `[v6][:port]`. The port must be 1–65535.
fn split_host_port(hostport: &str) -> Result<(&str, Option<u16>), UrlError> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(UrlError::Bracket(hostport.to_string()));
        };
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(UrlError::Port(hostport.to_string())),
        }
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => {
            let ok = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
            match p.parse::<u16>() {
                Ok(n) if ok && n != 0 => Some(n),
                _ => return Err(UrlError::Port(hostport.to_string())),
            }
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    Ok((host, port))
}

/// Lower-case, one trailing dot off, IDN → punycode; IP literals in their
/// canonical text (IPv6 in brackets).
pub fn normalize_host(host: &str) -> Result<String, UrlError> {
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return Ok(format!("[{v6}]"));
    }
    if host.starts_with(|c: char| c.is_ascii_digit())
        && let Ok(ip) = host.trim_end_matches('.').parse::<IpAddr>()
    {
        return Ok(ip.to_string());
    }
    super::name::normalize(host).map_err(|e| UrlError::Host(e.to_string()))
}

/// What follows the authority (`/path?query#fragment`, any part may be
/// missing) → normalised path and query; the fragment is dropped.
pub fn normalize_target(tail: &str) -> (String, Option<String>) {
    let tail = tail.split_once('#').map_or(tail, |(t, _)| t);
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let mut encoded = String::with_capacity(path.len() + 1);
    percent_normalize(path, &mut encoded, false);
    let path = remove_dot_segments(&encoded);
    let query = query.filter(|q| !q.is_empty()).map(|q| {
        let mut out = String::with_capacity(q.len());
        percent_normalize(q, &mut out, true);
        out
    });
    (path, query)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes kept as they are in a path (RFC 3986 pchar and `/`); a query also
/// keeps `?`.
fn is_kept(b: u8, query: bool) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
        || (query && b == b'?')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escaped(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 15) as usize] as char);
}

/// Escapes of unreserved characters decoded, other escapes in upper-case
/// hex, a `%` that starts no escape and every other byte outside the kept
/// set (non-ASCII as its UTF-8 bytes) escaped.
fn percent_normalize(s: &str, out: &mut String, query: bool) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex_val),
                b.get(i + 2).copied().and_then(hex_val),
            )
        {
            let v = h << 4 | l;
            if is_unreserved(v) {
                out.push(v as char);
            } else {
                push_escaped(out, v);
            }
            i += 3;
            continue;
        }
        if c != b'%' && is_kept(c, query) {
            out.push(c as char);
        } else {
            push_escaped(out, c);
        }
        i += 1;
    }
}

/// RFC 3986 §5.2.4 on an absolute path, with empty segments (duplicate
/// slashes) dropped as well; a trailing `/`, `/.` or `/..` leaves the
/// result ending in `/`.
fn remove_dot_segments(path: &str) -> String {
    let body = path.strip_prefix('/').unwrap_or(path);
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    let mut segments = body.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            "" | "." => trailing = last,
            ".." => {
                out.pop();
                trailing = last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len() + 1);
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if out.is_empty() || trailing {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> NormUrl {
        NormUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn req(host: &str, target: &str) -> NormUrl {
        NormUrl::from_request(host, target).unwrap_or_else(|e| panic!("{host}{target}: {e}"))
    }

    /// Every row of the table: (rule, Host header, target, match?).
    #[test]
    fn the_matching_table() {
        let rows: &[(&str, &str, &str, bool, &str)] = &[
            // host: case, IDN, trailing dot, default port; no implied www.
            (
                "http://Example.COM/page",
                "example.com",
                "/page",
                true,
                "host case",
            ),
            (
                "http://example.com/page",
                "EXAMPLE.com.",
                "/page",
                true,
                "request host case, dot",
            ),
            (
                "http://example.com/page",
                "example.com:80",
                "/page",
                true,
                "default port",
            ),
            (
                "http://легально.com/p",
                "xn--80affxdmh4i.com",
                "/p",
                true,
                "IDN rule",
            ),
            (
                "http://xn--80affxdmh4i.com/p",
                "легально.com",
                "/p",
                true,
                "IDN request",
            ),
            (
                "http://example.com/page",
                "www.example.com",
                "/page",
                false,
                "www not implied",
            ),
            (
                "http://www.example.com/page",
                "example.com",
                "/page",
                false,
                "www not implied",
            ),
            // explicit non-default port
            (
                "http://example.com:8080/p",
                "example.com:8080",
                "/p",
                true,
                "same port",
            ),
            (
                "http://example.com:8080/p",
                "example.com",
                "/p",
                false,
                "other port",
            ),
            (
                "http://example.com/p",
                "example.com:8080",
                "/p",
                false,
                "rule default port",
            ),
            (
                "https://example.com:443/p",
                "example.com",
                "/p",
                true,
                "https default port",
            ),
            // no scheme; https rule over plain HTTP
            ("example.com/p", "example.com", "/p", true, "scheme-less"),
            (
                "https://example.com/p",
                "example.com",
                "/p",
                true,
                "https rule, http request",
            ),
            // path normalisation
            (
                "http://h.example/%7Euser",
                "h.example",
                "/~user",
                true,
                "unreserved decoded",
            ),
            (
                "http://h.example/~user",
                "h.example",
                "/%7eUser",
                false,
                "case-sensitive path",
            ),
            (
                "http://h.example/a%2fb",
                "h.example",
                "/a%2Fb",
                true,
                "hex upper-cased",
            ),
            (
                "http://h.example/a%2Fb",
                "h.example",
                "/a/b",
                false,
                "escaped slash is no slash",
            ),
            (
                "http://h.example/страница",
                "h.example",
                "/%D1%81%D1%82%D1%80%D0%B0%D0%BD%D0%B8%D1%86%D0%B0",
                true,
                "non-ASCII",
            ),
            (
                "http://h.example/a/./b/../c",
                "h.example",
                "/a/c",
                true,
                "dot-segments",
            ),
            (
                "http://h.example/a/c",
                "h.example",
                "/a/b/%2E%2E/c",
                true,
                "encoded dot-segments",
            ),
            (
                "http://h.example//a///b",
                "h.example",
                "/a/b",
                true,
                "duplicate slashes",
            ),
            (
                "http://h.example/a/b",
                "h.example",
                "//a//b",
                true,
                "request duplicate slashes",
            ),
            (
                "http://h.example/Page",
                "h.example",
                "/page",
                false,
                "path case",
            ),
            // exact path vs prefix
            (
                "http://h.example/page",
                "h.example",
                "/page/x",
                false,
                "exact path",
            ),
            (
                "http://h.example/page",
                "h.example",
                "/page2",
                false,
                "exact path",
            ),
            (
                "http://h.example/dir/",
                "h.example",
                "/dir/x/y",
                true,
                "slash covers below",
            ),
            (
                "http://h.example/dir/",
                "h.example",
                "/dir/",
                true,
                "slash covers itself",
            ),
            (
                "http://h.example/dir/",
                "h.example",
                "/dir",
                false,
                "not the bare name",
            ),
            (
                "http://h.example/dir/",
                "h.example",
                "/directory",
                false,
                "segment boundary",
            ),
            // query
            (
                "http://h.example/p",
                "h.example",
                "/p?a=1",
                true,
                "query ignored",
            ),
            (
                "http://h.example/p?a=1",
                "h.example",
                "/p?a=1",
                true,
                "query equal",
            ),
            (
                "http://h.example/p?a=1",
                "h.example",
                "/p?a=2",
                false,
                "query differs",
            ),
            (
                "http://h.example/p?a=1",
                "h.example",
                "/p",
                false,
                "query missing",
            ),
            (
                "http://h.example/p?a=%7e",
                "h.example",
                "/p?a=~",
                true,
                "query normalised",
            ),
            // fragment
            (
                "http://h.example/p#frag",
                "h.example",
                "/p",
                true,
                "fragment dropped",
            ),
        ];
        for (r, host, target, want, why) in rows {
            let got = rule(r).covers(&req(host, target));
            assert_eq!(got, *want, "{why}: rule {r} vs {host}{target}");
        }
    }

    #[test]
    fn canonical_text() {
        let rows: &[(&str, &str)] = &[
            (
                "HTTP://User:pw@Example.COM.:80/a/../b?x=%7e#f",
                "http://example.com/b?x=~",
            ),
            ("https://example.com:443/p", "https://example.com/p"),
            ("https://example.com:8443/p", "https://example.com:8443/p"),
            ("twitter.com/SomeAccount", "twitter.com/SomeAccount"),
            ("http://[2001:DB8::1]:8080/a", "http://[2001:db8::1]:8080/a"),
            ("http://h.example/a b", "http://h.example/a%20b"),
            ("http://h.example/100%", "http://h.example/100%25"),
            ("http://h.example/p?", "http://h.example/p"),
            ("http://h.example", "http://h.example/"),
            ("ftp://h.example/file", "ftp://h.example/file"),
        ];
        for (raw, want) in rows {
            assert_eq!(rule(raw).to_string(), *want, "{raw}");
        }
    }

    #[test]
    fn bad_urls_are_errors() {
        for raw in [
            "http:///path",
            "http://h.example:0/p",
            "http://h.example:99999/p",
            "http://h.example:x/p",
            "http://[::1/p",
            "http://*.h.example/p",
            "http://bad_char!.example/p",
            "1ab://h/p",
        ] {
            assert!(NormUrl::parse(raw).is_err(), "{raw}");
        }
        assert!(NormUrl::from_request("", "/").is_err());
        assert!(NormUrl::from_request("h.example:", "/").is_err());
    }

    #[test]
    fn scheme_predicates() {
        assert!(rule("h.example/p").covers_https());
        assert!(rule("https://h.example/p").covers_https());
        assert!(!rule("http://h.example/p").covers_https());
        assert!(!rule("ftp://h.example/p").is_web());
    }

    mod prop {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn normalising_never_panics_and_is_idempotent(s in "\\PC{0,60}") {
                if let Ok(u) = NormUrl::parse(&s) {
                    let again = NormUrl::parse(&u.to_string());
                    prop_assert_eq!(again.as_ref(), Ok(&u), "text {}", u);
                }
                let _ = NormUrl::from_request(&s, &s);
            }

            #[test]
            fn paths_are_idempotent(p in "[/a-zA-Z0-9.%~ éп?#&=]{0,40}") {
                let (path, query) = normalize_target(&p);
                let text = match &query { Some(q) => format!("{path}?{q}"), None => path.clone() };
                prop_assert_eq!(normalize_target(&text), (path.clone(), query));
                prop_assert!(path.starts_with('/'));
                prop_assert!(!path.contains("//"));
            }

            #[test]
            fn a_rule_covers_its_own_url(p in "/[a-z0-9./%]{0,30}") {
                if let Ok(u) = NormUrl::parse(&format!("http://h.example{p}")) {
                    let r = NormUrl::from_request("h.example", &u.to_string()["http://h.example".len()..]);
                    prop_assert!(r.is_ok_and(|r| u.covers(&r)));
                }
            }
        }
    }
}
