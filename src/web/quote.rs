//! What the fronts quote from the rule that blocks a request or a TLS
//! connection: the block page shows it, the audit log records it. One
//! shape for a whole-host name rule and for a URL rule, so the HTTP front's
//! `url-block` hits and the TLS front's `tls-refuse` hits carry the same
//! provenance.

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::audit::HitRecord;
use crate::list::snapshot::UrlRuleView;
use crate::list::{MatchedKey, RuleMeta, RuleView};
use crate::wire::Transport;

pub(super) struct Quoted {
    pub(super) rule: String,
    pub(super) list: String,
    pub(super) file: String,
    pub(super) line: u32,
    /// The rule's legal references (decision, authority, date, category,
    /// registry entry and when it was included).
    pub(super) meta: RuleMeta,
}

impl Quoted {
    /// A name rule that blocks `host` as a whole (`key`: what it matched).
    pub(super) fn name_rule(view: &RuleView<'_>, host: &str, key: Option<MatchedKey>) -> Quoted {
        Quoted {
            rule: view.text_matched(host.as_bytes(), key),
            list: view.list().to_string(),
            file: view.file().to_string(),
            line: view.line(),
            meta: view.meta(),
        }
    }

    pub(super) fn url_rule(view: &UrlRuleView<'_>) -> Quoted {
        Quoted {
            rule: view.text(),
            list: view.list().to_string(),
            file: view.file().to_string(),
            line: view.line(),
            meta: view.meta(),
        }
    }

    /// The hit record of a block over TCP (`action`: `url-block` or
    /// `tls-refuse`; `path` for HTTP, `sni` for TLS).
    pub(super) fn hit(
        self,
        peer: SocketAddr,
        host: String,
        action: &'static str,
        list_version: u64,
        (path, sni): (Option<String>, Option<String>),
    ) -> HitRecord {
        HitRecord {
            client: peer.ip(),
            port: peer.port(),
            transport: Transport::Tcp,
            qname: host,
            qtype: 0,
            action,
            rule: self.rule,
            list: self.list,
            file: self.file,
            line: self.line,
            decision: self.meta.decision,
            authority: self.meta.authority,
            category: self.meta.category,
            date: self.meta.date,
            entry: self.meta.entry,
            included: self.meta.included,
            list_version,
            time: SystemTime::now(),
            path,
            sni,
        }
    }
}
