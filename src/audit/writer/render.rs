//! One record as a JSON line: hits, and the writer's own records (start,
//! checkpoint, lost, retention), each carrying the previous line's hash.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::audit::record::{
    CheckpointLine, ConsoleLine, Hash, HitLine, ListLine, LostLine, RetentionLine, StartLine,
    canonical, hex32, qtype_name,
};
use crate::audit::sign::SignedKind;
use crate::audit::time::{format_ts, micros_of};
use crate::audit::{ConsoleRecord, HitRecord, ListRecord};

use super::retention::RetentionPlan;
use super::{REASON_QUEUE, REASON_WRITE, Writer};

/// A record to render, borrowing what it shows.
pub(super) enum Line<'a> {
    Hit(&'a HitRecord),
    Start {
        resumed_from: Option<u64>,
    },
    Checkpoint {
        reason: &'a str,
    },
    Lost {
        first: u64,
        reason: u8,
    },
    Retention {
        deleted: &'a [String],
        start_file: &'a str,
        start_seq: u64,
        start_prev: &'a Hash,
    },
    Console(&'a ConsoleRecord),
    List(&'a ListRecord),
}

/// A record of the writer's own that takes a seq of its own (see
/// `Writer::inject`).
pub(super) enum Meta {
    Checkpoint(&'static str),
    Retention(Box<RetentionPlan>),
    Console(Box<ConsoleRecord>),
    List(Box<ListRecord>),
}

impl Writer {
    pub(super) fn render(&mut self, seq: u64, line: &Line<'_>) -> bool {
        let prev = hex32(&self.head);
        let prev = prev.as_str();
        let now = format_ts(self.now);
        // Start and checkpoint records are signed when a key is configured
        // (periodic, so the ~20 µs of a signature stay off the hit path).
        let signed = match line {
            Line::Start { .. } => Some((SignedKind::Start, 0, 0)),
            Line::Checkpoint { .. } => Some((
                SignedKind::Checkpoint,
                self.session_records,
                self.session_lost,
            )),
            _ => None,
        };
        let sig_hex = signed.and_then(|(kind, records, lost)| {
            let s = self.signer.as_ref()?;
            let sig = s.sign(kind, seq, &self.head, now.as_str(), records, lost)?;
            Some(hex::encode(sig))
        });
        let sig = sig_hex.as_deref();
        let sig_pub = sig.and(self.signer.as_ref().map(|s| s.public_hex()));
        let res = match line {
            Line::Hit(hit) => {
                let ts = format_ts(micros_of(hit.time));
                self.client_buf.clear();
                render_client(&mut self.client_buf, self.mac.as_ref(), hit.client);
                // A web front hit has no DNS type; its transport says
                // which front refused it.
                let web = hit.path.is_some() || hit.sni.is_some();
                let qtype = if web {
                    std::borrow::Cow::Borrowed("-")
                } else {
                    qtype_name(hit.qtype)
                };
                let transport = match (&hit.path, &hit.sni) {
                    (Some(_), _) => "http",
                    (None, Some(_)) => "tls",
                    (None, None) => hit.transport.as_str(),
                };
                serde_json::to_writer(
                    &mut self.batch,
                    &HitLine {
                        seq,
                        ts: ts.as_str(),
                        kind: "hit",
                        client: &self.client_buf,
                        port: hit.port,
                        transport,
                        qname: &hit.qname,
                        qtype: &qtype,
                        action: hit.action,
                        rule: &hit.rule,
                        list: &hit.list,
                        file: &hit.file,
                        line: hit.line,
                        decision: hit.decision.as_deref(),
                        authority: hit.authority.as_deref(),
                        category: hit.category.as_deref(),
                        date: hit.date.as_deref(),
                        entry: hit.entry.as_deref(),
                        included: hit.included.as_deref(),
                        path: hit.path.as_deref(),
                        sni: hit.sni.as_deref(),
                        list_version: hit.list_version,
                        prev,
                    },
                )
            }
            // Start and lost records open a file after a crash or a failed
            // write, so they carry the acknowledgement of torn tails.
            Line::Start { resumed_from } => serde_json::to_writer(
                &mut self.batch,
                &StartLine {
                    seq,
                    ts: now.as_str(),
                    kind: "start",
                    version: env!("CARGO_PKG_VERSION"),
                    client_mode: self.client_mode.as_str(),
                    key_id: self.key_id.as_deref(),
                    resumed_from: *resumed_from,
                    torn: &self.pending_torn,
                    sig_pub,
                    sig,
                    prev,
                },
            ),
            Line::Checkpoint { reason } => serde_json::to_writer(
                &mut self.batch,
                &CheckpointLine {
                    seq,
                    ts: now.as_str(),
                    kind: "checkpoint",
                    reason,
                    records: self.session_records,
                    lost: self.session_lost,
                    hash: prev,
                    sig_pub,
                    sig,
                    prev,
                },
            ),
            Line::Lost { first, reason } => serde_json::to_writer(
                &mut self.batch,
                &LostLine {
                    seq,
                    ts: now.as_str(),
                    kind: "lost",
                    first: *first,
                    last: seq,
                    count: seq - first + 1,
                    reason: match *reason {
                        REASON_QUEUE => "queue_full",
                        REASON_WRITE => "write_error",
                        _ => "queue_full,write_error",
                    },
                    torn: &self.pending_torn,
                    prev,
                },
            ),
            Line::Retention {
                deleted,
                start_file,
                start_seq,
                start_prev,
            } => serde_json::to_writer(
                &mut self.batch,
                &RetentionLine {
                    seq,
                    ts: now.as_str(),
                    kind: "retention",
                    deleted,
                    start_file,
                    start_seq: *start_seq,
                    start_prev: hex32(start_prev).as_str(),
                    prev,
                },
            ),
            Line::Console(rec) => serde_json::to_writer(
                &mut self.batch,
                &ConsoleLine {
                    seq,
                    ts: now.as_str(),
                    kind: "console",
                    user: &rec.user,
                    role: &rec.role,
                    query: &rec.query,
                    results: rec.results,
                    prev,
                },
            ),
            Line::List(change) => serde_json::to_writer(
                &mut self.batch,
                &ListLine {
                    seq,
                    ts: now.as_str(),
                    kind: "list",
                    change,
                    prev,
                },
            ),
        };
        // Serialising plain structs into a Vec cannot fail; if it ever did,
        // the partial line must not reach the file.
        res.is_ok()
    }
}

fn render_client(out: &mut String, mac: Option<&Hmac<Sha256>>, ip: IpAddr) {
    use std::fmt::Write as _;
    let ip = canonical(ip);
    match (mac, ip) {
        // The common case by far, without the formatting machinery (the
        // same dotted quad `Display` writes).
        (None, IpAddr::V4(a)) => {
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if o >= 100 {
                    out.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    out.push(char::from(b'0' + o / 10 % 10));
                }
                out.push(char::from(b'0' + o % 10));
            }
        }
        (None, IpAddr::V6(_)) => {
            let _ = write!(out, "{ip}");
        }
        (Some(mac), _) => {
            let mut mac = mac.clone();
            match ip {
                IpAddr::V4(a) => mac.update(&a.octets()),
                IpAddr::V6(a) => mac.update(&a.octets()),
            }
            let tag = mac.finalize().into_bytes();
            let mut hex = [0u8; 32];
            out.push_str("hmac:");
            // 16 bytes always fit 32 hex digits, which are ASCII.
            if hex::encode_to_slice(&tag[..16], &mut hex).is_ok() {
                out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::render_client;

    #[test]
    fn client_addresses_render_like_display() {
        let mut out = String::new();
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "192.0.2.7",
            "2001:db8::1",
            "::ffff:10.1.2.3",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            out.clear();
            render_client(&mut out, None, ip);
            assert_eq!(out, ip.to_canonical().to_string());
        }
        for n in 0..=255u8 {
            let ip = std::net::IpAddr::from([n, n / 3, n / 10, 255 - n]);
            out.clear();
            render_client(&mut out, None, ip);
            assert_eq!(out, ip.to_string());
        }
    }
}
