//! Special-use names no resolver should send anywhere (`policy.local_zones`):
//! they are answered locally, like Unbound, BIND and PowerDNS do by default.
//!
//! | zone | RFC | answer |
//! |---|---|---|
//! | `localhost` and below | 6761 §6.3 | A 127.0.0.1, AAAA ::1, other types no data |
//! | `test`, `invalid` | 6761 §6.2, §6.4 | NXDOMAIN |
//! | `onion` | 7686 §2 (resolvers MUST answer NXDOMAIN) | NXDOMAIN |
//! | `home.arpa` | 8375 | NXDOMAIN |
//! | `private-reverse`: reverse zones of 10/8, 172.16/12, 192.168/16 (RFC 1918), 127/8 and ::1 (loopback), 169.254/16 and fe80::/10 (link-local), fc00::/7 (ULA) | 6303 | NXDOMAIN |
//!
//! The apex of a zone (`10.in-addr.arpa` itself) exists: it gets no data
//! rather than NXDOMAIN. Leaking these names upstream costs the root and
//! the `in-addr.arpa` servers load for nothing and tells outsiders about a
//! subscriber's home network; an ISP whose upstream does hold internal
//! PTR zones removes `private-reverse` from the list.

use std::fmt;

/// One entry of `policy.local_zones`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalZone {
    Localhost,
    Test,
    Invalid,
    Onion,
    HomeArpa,
    PrivateReverse,
}

impl LocalZone {
    pub const ALL: [LocalZone; 6] = [
        LocalZone::Localhost,
        LocalZone::Test,
        LocalZone::Invalid,
        LocalZone::Onion,
        LocalZone::HomeArpa,
        LocalZone::PrivateReverse,
    ];

    /// The name used in `policy.local_zones` and in the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalZone::Localhost => "localhost",
            LocalZone::Test => "test",
            LocalZone::Invalid => "invalid",
            LocalZone::Onion => "onion",
            LocalZone::HomeArpa => "home.arpa",
            LocalZone::PrivateReverse => "private-reverse",
        }
    }

    pub fn parse(s: &str) -> Option<LocalZone> {
        LocalZone::ALL.into_iter().find(|z| z.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for LocalZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a special-use name is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalAnswer {
    /// `localhost`: the loopback address of the query type (A, AAAA), no
    /// data for other types.
    Loopback,
    /// The apex of a local zone: it exists, with no data of this type.
    NoData,
    /// Below the apex: no such name.
    NxDomain,
}

/// The zones each entry stands for (lowercase, dotted, no trailing dot).
fn apexes(zone: LocalZone) -> &'static [&'static str] {
    match zone {
        LocalZone::Localhost => &["localhost"],
        LocalZone::Test => &["test"],
        LocalZone::Invalid => &["invalid"],
        LocalZone::Onion => &["onion"],
        LocalZone::HomeArpa => &["home.arpa"],
        LocalZone::PrivateReverse => PRIVATE_REVERSE,
    }
}

const PRIVATE_REVERSE: &[&str] = &[
    // RFC 1918
    "10.in-addr.arpa",
    "16.172.in-addr.arpa",
    "17.172.in-addr.arpa",
    "18.172.in-addr.arpa",
    "19.172.in-addr.arpa",
    "20.172.in-addr.arpa",
    "21.172.in-addr.arpa",
    "22.172.in-addr.arpa",
    "23.172.in-addr.arpa",
    "24.172.in-addr.arpa",
    "25.172.in-addr.arpa",
    "26.172.in-addr.arpa",
    "27.172.in-addr.arpa",
    "28.172.in-addr.arpa",
    "29.172.in-addr.arpa",
    "30.172.in-addr.arpa",
    "31.172.in-addr.arpa",
    "168.192.in-addr.arpa",
    // Loopback
    "127.in-addr.arpa",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
    // Link-local
    "254.169.in-addr.arpa",
    "8.e.f.ip6.arpa",
    "9.e.f.ip6.arpa",
    "a.e.f.ip6.arpa",
    "b.e.f.ip6.arpa",
    // Unique local (fc00::/7)
    "c.f.ip6.arpa",
    "d.f.ip6.arpa",
];

/// The enabled entries of `policy.local_zones`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LocalZones(u8);

impl Default for LocalZones {
    /// All of them, as Unbound does.
    fn default() -> Self {
        LocalZones::of(&LocalZone::ALL)
    }
}

impl fmt::Debug for LocalZones {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl LocalZones {
    pub fn none() -> LocalZones {
        LocalZones(0)
    }

    pub fn of(zones: &[LocalZone]) -> LocalZones {
        LocalZones(zones.iter().fold(0, |m, z| m | z.bit()))
    }

    /// The validation hook of `policy.local_zones`: every entry must be
    /// one of the names in [`LocalZone::ALL`].
    pub fn parse_list<S: AsRef<str>>(names: &[S]) -> Result<LocalZones, String> {
        let mut zones = Vec::with_capacity(names.len());
        for n in names {
            let n = n.as_ref();
            zones.push(LocalZone::parse(n).ok_or_else(|| {
                let known: Vec<_> = LocalZone::ALL.iter().map(|z| z.as_str()).collect();
                format!("{n:?} is not one of {}", known.join(" | "))
            })?);
        }
        Ok(LocalZones::of(&zones))
    }

    pub fn contains(self, zone: LocalZone) -> bool {
        self.0 & zone.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = LocalZone> {
        LocalZone::ALL
            .into_iter()
            .filter(move |z| self.contains(*z))
    }

    /// Whether `name` (lowercase dotted, no trailing dot) is answered
    /// locally, and how. Cheap when nothing matches: one comparison of the
    /// last label per zone.
    pub fn classify(self, name: &[u8]) -> Option<(LocalZone, LocalAnswer)> {
        if self.0 == 0 {
            return None;
        }
        // Every zone here ends in one of these labels: most names leave here.
        let tld = name.rsplit(|&b| b == b'.').next().unwrap_or_default();
        if !matches!(
            tld,
            b"localhost" | b"test" | b"invalid" | b"onion" | b"arpa"
        ) {
            return None;
        }
        for zone in self.iter() {
            for apex in apexes(zone) {
                let apex = apex.as_bytes();
                let below = name.len() > apex.len()
                    && name.ends_with(apex)
                    && name[name.len() - apex.len() - 1] == b'.';
                if name == apex || below {
                    let answer = match zone {
                        LocalZone::Localhost => LocalAnswer::Loopback,
                        _ if name == apex => LocalAnswer::NoData,
                        _ => LocalAnswer::NxDomain,
                    };
                    return Some((zone, answer));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LocalAnswer::*;
    use LocalZone::*;

    #[test]
    fn names_and_their_answers() {
        let table: &[(&str, Option<(LocalZone, LocalAnswer)>)] = &[
            ("localhost", Some((Localhost, Loopback))),
            ("www.localhost", Some((Localhost, Loopback))),
            ("a.test", Some((Test, NxDomain))),
            ("test", Some((Test, NoData))),
            ("x.y.invalid", Some((Invalid, NxDomain))),
            (
                "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion",
                Some((Onion, NxDomain)),
            ),
            ("printer.home.arpa", Some((HomeArpa, NxDomain))),
            ("home.arpa", Some((HomeArpa, NoData))),
            ("1.0.0.10.in-addr.arpa", Some((PrivateReverse, NxDomain))),
            ("10.in-addr.arpa", Some((PrivateReverse, NoData))),
            ("5.4.16.172.in-addr.arpa", Some((PrivateReverse, NxDomain))),
            ("5.4.31.172.in-addr.arpa", Some((PrivateReverse, NxDomain))),
            ("1.1.168.192.in-addr.arpa", Some((PrivateReverse, NxDomain))),
            ("1.0.0.127.in-addr.arpa", Some((PrivateReverse, NxDomain))),
            ("1.1.254.169.in-addr.arpa", Some((PrivateReverse, NxDomain))),
            (
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
                Some((PrivateReverse, NoData)),
            ),
            (
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa",
                Some((PrivateReverse, NxDomain)),
            ),
            ("0.0.d.f.ip6.arpa", Some((PrivateReverse, NxDomain))),
            // Not special: public space and look-alikes.
            ("5.4.15.172.in-addr.arpa", None),
            ("5.4.32.172.in-addr.arpa", None),
            ("8.8.8.8.in-addr.arpa", None),
            ("110.in-addr.arpa", None),
            ("0.0.e.f.ip6.arpa", None),
            ("latest", None),
            ("mytest", None),
            ("notlocalhost", None),
            ("localhost.example", None),
            ("example.org", None),
            ("arpa", None),
            ("", None),
        ];
        let all = LocalZones::default();
        for (name, want) in table {
            assert_eq!(all.classify(name.as_bytes()), *want, "{name}");
        }
        assert_eq!(LocalZones::none().classify(b"a.test"), None);
    }

    #[test]
    fn the_list_is_validated_and_zones_can_be_removed() {
        let no_ptr =
            LocalZones::parse_list(&["localhost", "test", "invalid", "onion", "home.arpa"])
                .unwrap();
        assert!(!no_ptr.contains(PrivateReverse));
        assert_eq!(no_ptr.classify(b"1.0.0.10.in-addr.arpa"), None);
        assert_eq!(no_ptr.classify(b"a.test"), Some((Test, NxDomain)));
        let err = LocalZones::parse_list(&["test", "lan"]).unwrap_err();
        assert!(err.contains("\"lan\""), "{err}");
        assert_eq!(
            LocalZones::parse_list::<&str>(&[]).unwrap(),
            LocalZones::none()
        );
        for z in LocalZone::ALL {
            assert_eq!(LocalZone::parse(z.as_str()), Some(z));
        }
    }
}
