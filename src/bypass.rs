//! Bypass signals (`policy.bypass_signals`): names whose answer tells a
//! client that this network filters DNS, so that it keeps using the
//! network's resolver instead of switching silently to someone else's
//! encrypted DNS, where the blocklists do not apply.
//!
//! | signal | names | answer | what the client does |
//! |---|---|---|---|
//! | `firefox-canary` | `use-application-dns.net` | NXDOMAIN | Firefox does not turn on its default DNS-over-HTTPS (an explicit user choice is not overridden) |
//! | `icloud-private-relay` | `mask.icloud.com`, `mask-h2.icloud.com` | NXDOMAIN | Apple devices turn iCloud Private Relay off on this network and tell the user |
//!
//! Only the exact names are signals (not names below them), for every
//! query type. They are answered before the lists are consulted and never
//! forwarded; each answer is counted in `sinkhole_bypass_signal_total`.

use std::fmt;

/// One entry of `policy.bypass_signals`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BypassSignal {
    FirefoxCanary,
    IcloudPrivateRelay,
}

impl BypassSignal {
    pub const ALL: [BypassSignal; 2] = [
        BypassSignal::FirefoxCanary,
        BypassSignal::IcloudPrivateRelay,
    ];

    /// The name used in `policy.bypass_signals` and in the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassSignal::FirefoxCanary => "firefox-canary",
            BypassSignal::IcloudPrivateRelay => "icloud-private-relay",
        }
    }

    pub fn parse(s: &str) -> Option<BypassSignal> {
        BypassSignal::ALL.into_iter().find(|z| z.as_str() == s)
    }

    /// The names that carry the signal (lowercase, dotted, no trailing dot).
    pub fn names(self) -> &'static [&'static str] {
        match self {
            // https://support.mozilla.org/kb/canary-domain-use-application-dnsnet
            BypassSignal::FirefoxCanary => &["use-application-dns.net"],
            // https://developer.apple.com/support/prepare-your-network-for-icloud-private-relay
            BypassSignal::IcloudPrivateRelay => &["mask.icloud.com", "mask-h2.icloud.com"],
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for BypassSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The enabled entries of `policy.bypass_signals`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BypassSignals(u8);

impl Default for BypassSignals {
    /// Both: a filtering resolver that clients bypass enforces nothing.
    fn default() -> Self {
        BypassSignals::of(&BypassSignal::ALL)
    }
}

impl fmt::Debug for BypassSignals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl BypassSignals {
    pub fn none() -> BypassSignals {
        BypassSignals(0)
    }

    pub fn of(signals: &[BypassSignal]) -> BypassSignals {
        BypassSignals(signals.iter().fold(0, |m, s| m | s.bit()))
    }

    /// The validation hook of `policy.bypass_signals`: every entry must be
    /// one of the names in [`BypassSignal::ALL`].
    pub fn parse_list<S: AsRef<str>>(names: &[S]) -> Result<BypassSignals, String> {
        let mut signals = Vec::with_capacity(names.len());
        for n in names {
            let n = n.as_ref();
            signals.push(BypassSignal::parse(n).ok_or_else(|| {
                let known: Vec<_> = BypassSignal::ALL.iter().map(|s| s.as_str()).collect();
                format!("{n:?} is not one of {}", known.join(" | "))
            })?);
        }
        Ok(BypassSignals::of(&signals))
    }

    pub fn contains(self, signal: BypassSignal) -> bool {
        self.0 & signal.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = BypassSignal> {
        BypassSignal::ALL
            .into_iter()
            .filter(move |s| self.contains(*s))
    }

    /// The signal `name` (lowercase dotted, no trailing dot) carries, if
    /// it is enabled. Cheap when nothing matches: most names leave at the
    /// length and last-byte check.
    pub fn classify(self, name: &[u8]) -> Option<BypassSignal> {
        if self.0 == 0 || !matches!(name.last(), Some(b't' | b'm')) {
            return None;
        }
        self.iter()
            .find(|s| s.names().iter().any(|n| n.as_bytes() == name))
    }
}

#[cfg(test)]
mod tests {
    use super::BypassSignal::*;
    use super::*;

    #[test]
    fn names_and_their_signals() {
        let table: &[(&str, Option<BypassSignal>)] = &[
            ("use-application-dns.net", Some(FirefoxCanary)),
            ("mask.icloud.com", Some(IcloudPrivateRelay)),
            ("mask-h2.icloud.com", Some(IcloudPrivateRelay)),
            // Exact names only.
            ("www.use-application-dns.net", None),
            ("application-dns.net", None),
            ("use-application-dns.net.example", None),
            ("x.mask.icloud.com", None),
            ("mask-api.icloud.com", None),
            ("icloud.com", None),
            ("mask.icloud.co", None),
            ("net", None),
            ("", None),
        ];
        let all = BypassSignals::default();
        for (name, want) in table {
            assert_eq!(all.classify(name.as_bytes()), *want, "{name}");
        }
        assert_eq!(BypassSignals::none().classify(b"mask.icloud.com"), None);
    }

    #[test]
    fn the_list_is_validated_and_signals_can_be_removed() {
        let canary_only = BypassSignals::parse_list(&["firefox-canary"]).unwrap();
        assert!(canary_only.contains(FirefoxCanary));
        assert!(!canary_only.contains(IcloudPrivateRelay));
        assert_eq!(canary_only.classify(b"mask.icloud.com"), None);
        assert_eq!(
            canary_only.classify(b"use-application-dns.net"),
            Some(FirefoxCanary)
        );
        let err = BypassSignals::parse_list(&["firefox-canary", "chrome"]).unwrap_err();
        assert!(err.contains("\"chrome\""), "{err}");
        assert!(err.contains("icloud-private-relay"), "{err}");
        assert_eq!(
            BypassSignals::parse_list::<&str>(&[]).unwrap(),
            BypassSignals::none()
        );
        assert_eq!(BypassSignals::default().iter().count(), 2);
        for s in BypassSignal::ALL {
            assert_eq!(BypassSignal::parse(s.as_str()), Some(s));
        }
    }
}
