//! The TLS front's decision over the snapshot in force ([`SniPolicy`]):
//! a host blocked as a whole, or one with an `https://` (or scheme-less)
//! URL rule while `policy.https_url = "host"`, is refused and recorded as
//! a `tls-refuse` hit; any other host with URL rules is passed through; a
//! host the DNS side does not steer is not carried.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::acl::Acl;
use crate::audit::AuditLog;
use crate::list::Snapshot;
use crate::policy::{self, Decision, PolicyConfig, Query};

use super::config::HttpsUrl;
use super::quote::Quoted;
use super::tls::{SniPolicy, SniVerdict};

pub(crate) struct SnapshotSniPolicy {
    pub(crate) snapshot: Arc<ArcSwap<Snapshot>>,
    pub(crate) policy: PolicyConfig,
    pub(crate) acl: Acl,
    pub(crate) audit: Option<AuditLog>,
    pub(crate) https_url: HttpsUrl,
}

impl SnapshotSniPolicy {
    /// The refusal for `host` on `port`, if any, and whether it is steered.
    fn judge(&self, snap: &Snapshot, host: &str, port: u16) -> (Option<Quoted>, bool) {
        let q = Query {
            name: host.as_bytes(),
            qtype: policy::TYPE_A,
        };
        if let Decision::Block { rule, key, .. } = policy::decide(snap, &q, &self.policy) {
            let r = Quoted::name_rule(&snap.rule(rule), host, key);
            return (Some(r), true);
        }
        let rules = snap.url_rules_for(host);
        if rules.is_empty() {
            return (None, false);
        }
        if self.https_url == HttpsUrl::Pass {
            return (None, true);
        }
        // A rule without a port is for the default HTTPS port, which is
        // what the TLS front serves whatever `origin_https_port` says; one
        // with an explicit port applies to that origin port only.
        let refusing = rules
            .iter()
            .find(|v| v.url().covers_https() && v.url().port.is_none_or(|p| p == port));
        let r = refusing.map(|v| Quoted::url_rule(v));
        (r, true)
    }
}

impl SniPolicy for SnapshotSniPolicy {
    fn decide(&self, sni: &str, client: SocketAddr, port: u16) -> SniVerdict {
        let snap = self.snapshot.load();
        let (refusal, steered) = self.judge(&snap, sni, port);
        match refusal {
            Some(r) => {
                if let Some(audit) = &self.audit {
                    audit.record(r.hit(
                        client,
                        sni.to_string(),
                        "tls-refuse",
                        snap.version(),
                        (None, Some(sni.to_string())),
                    ));
                }
                SniVerdict::Refuse
            }
            None if steered => SniVerdict::Pass,
            None => SniVerdict::NotSteered,
        }
    }

    fn admits(&self, client: SocketAddr) -> bool {
        self.acl.allows(client.ip())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::list::{Format, ListOptions};

    fn policy_for(https_url: HttpsUrl) -> SnapshotSniPolicy {
        let text = "whole.example\nhttps://tls.example/page\nboth.example/page\n\
                    http://plain.example/page\nhttps://port.example:8443/p\n";
        let list = crate::list::parse::parse_bytes(
            Path::new("court.txt"),
            text.as_bytes(),
            &ListOptions {
                format: Some(Format::Plain),
                ..ListOptions::default()
            },
        );
        let snap = crate::list::compile::compile(&[list]).unwrap();
        SnapshotSniPolicy {
            snapshot: Arc::new(ArcSwap::from_pointee(snap)),
            policy: crate::config::Config::from_toml_str_with_resolv_text(
                "[upstream]\nservers = [\"192.0.2.53\"]\n",
                "test",
                "",
            )
            .unwrap()
            .policy,
            acl: Acl::new(&["192.0.2.0/24".parse().unwrap()]),
            audit: None,
            https_url,
        }
    }

    #[test]
    fn verdicts_by_sni() {
        let c: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let host = policy_for(HttpsUrl::Host);
        let pass = policy_for(HttpsUrl::Pass);
        let rows: &[(&str, u16, SniVerdict, SniVerdict)] = &[
            ("whole.example", 443, SniVerdict::Refuse, SniVerdict::Refuse),
            (
                "www.whole.example",
                443,
                SniVerdict::Refuse,
                SniVerdict::Refuse,
            ),
            ("tls.example", 443, SniVerdict::Refuse, SniVerdict::Pass),
            ("both.example", 443, SniVerdict::Refuse, SniVerdict::Pass),
            ("plain.example", 443, SniVerdict::Pass, SniVerdict::Pass),
            ("port.example", 443, SniVerdict::Pass, SniVerdict::Pass),
            ("port.example", 8443, SniVerdict::Refuse, SniVerdict::Pass),
            (
                "other.example",
                443,
                SniVerdict::NotSteered,
                SniVerdict::NotSteered,
            ),
        ];
        for &(sni, port, want_host, want_pass) in rows {
            assert_eq!(host.decide(sni, c, port), want_host, "{sni}:{port} host");
            assert_eq!(pass.decide(sni, c, port), want_pass, "{sni}:{port} pass");
        }
        assert!(host.admits(c));
        assert!(!host.admits("198.51.100.1:1".parse().unwrap()));
    }
}
