//! The on-disk record format: rendering (writer) and parsing (readers).
//!
//! Field order is fixed by the struct declarations below; the chain hashes
//! the exact bytes, so readers never re-serialise a record.

use std::borrow::Cow;
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) type Hash = [u8; 32];

/// The `prev` of the first record of a fresh log.
pub(crate) const GENESIS: Hash = [0; 32];

/// SHA-256 of one line, without its terminating `\n`.
pub(crate) fn hash_line(line: &[u8]) -> Hash {
    Sha256::digest(line).into()
}

pub(crate) struct Hex64([u8; 64]);

impl Hex64 {
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

pub(crate) fn hex32(h: &Hash) -> Hex64 {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in h.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
    Hex64(out)
}

pub(crate) fn parse_hex32(s: &str) -> Option<Hash> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h).ok()?;
    Some(h)
}

/// Address octets with IPv4-mapped IPv6 folded to IPv4, so a dual-stack
/// socket and a v4 socket log (and pseudonymise) the same subscriber alike.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The pseudonym written for `ip` in `client = "hmac"` mode: 128 bits of
/// HMAC-SHA-256 over the address octets, enough to never collide among
/// subscribers while keeping lines short.
pub fn pseudonym(key: &[u8], ip: IpAddr) -> String {
    let mac = Hmac::<Sha256>::new_from_slice(key);
    // HMAC accepts keys of any length; the error arm is unreachable.
    let Ok(mut mac) = mac else {
        return String::from("hmac:invalid-key");
    };
    match canonical(ip) {
        IpAddr::V4(a) => mac.update(&a.octets()),
        IpAddr::V6(a) => mac.update(&a.octets()),
    }
    let tag = mac.finalize().into_bytes();
    let mut s = String::with_capacity(37);
    s.push_str("hmac:");
    s.push_str(&hex::encode(&tag[..16]));
    s
}

/// A short, non-secret identifier of the key, so auditors can tell which
/// key a log segment was pseudonymised with.
pub(crate) fn key_id(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

/// Mnemonic for a query type, RFC 3597 `TYPEnnn` for the rest.
pub(crate) fn qtype_name(t: u16) -> Cow<'static, str> {
    let s = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        17 => "RP",
        18 => "AFSDB",
        24 => "SIG",
        25 => "KEY",
        28 => "AAAA",
        29 => "LOC",
        33 => "SRV",
        35 => "NAPTR",
        36 => "KX",
        37 => "CERT",
        39 => "DNAME",
        41 => "OPT",
        42 => "APL",
        43 => "DS",
        44 => "SSHFP",
        45 => "IPSECKEY",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        49 => "DHCID",
        50 => "NSEC3",
        51 => "NSEC3PARAM",
        52 => "TLSA",
        53 => "SMIMEA",
        55 => "HIP",
        59 => "CDS",
        60 => "CDNSKEY",
        61 => "OPENPGPKEY",
        62 => "CSYNC",
        63 => "ZONEMD",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        108 => "EUI48",
        109 => "EUI64",
        249 => "TKEY",
        250 => "TSIG",
        251 => "IXFR",
        252 => "AXFR",
        255 => "ANY",
        256 => "URI",
        257 => "CAA",
        _ => return Cow::Owned(format!("TYPE{t}")),
    };
    Cow::Borrowed(s)
}

/// A torn (incomplete, unterminated) last line that a later record
/// acknowledges: the file it ended and its length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TornRef {
    pub file: String,
    pub bytes: u64,
}

fn no_torn(t: &&[TornRef]) -> bool {
    t.is_empty()
}

#[derive(Serialize)]
pub(crate) struct HitLine<'a> {
    pub seq: u64,
    pub ts: &'a str,
    pub kind: &'static str,
    pub client: &'a str,
    pub port: u16,
    pub transport: &'a str,
    pub qname: &'a str,
    pub qtype: &'a str,
    pub action: &'a str,
    pub rule: &'a str,
    pub list: &'a str,
    pub file: &'a str,
    pub line: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<&'a str>,
    /// Registry provenance (issue 13): the decision's date, the entry's id
    /// and when it was included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub included: Option<&'a str>,
    /// Web front hits (issue 12): the request's path, or the SNI of a
    /// refused TLS handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<&'a str>,
    pub list_version: u64,
    pub prev: &'a str,
}

#[derive(Serialize)]
pub(crate) struct StartLine<'a> {
    pub seq: u64,
    pub ts: &'a str,
    pub kind: &'static str,
    pub version: &'a str,
    pub client_mode: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u64>,
    #[serde(skip_serializing_if = "no_torn")]
    pub torn: &'a [TornRef],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig_pub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig: Option<&'a str>,
    pub prev: &'a str,
}

#[derive(Serialize)]
pub(crate) struct CheckpointLine<'a> {
    pub seq: u64,
    pub ts: &'a str,
    pub kind: &'static str,
    pub reason: &'a str,
    pub records: u64,
    pub lost: u64,
    pub hash: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig_pub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig: Option<&'a str>,
    pub prev: &'a str,
}

#[derive(Serialize)]
pub(crate) struct LostLine<'a> {
    pub seq: u64,
    pub ts: &'a str,
    pub kind: &'static str,
    pub first: u64,
    pub last: u64,
    pub count: u64,
    pub reason: &'a str,
    #[serde(skip_serializing_if = "no_torn")]
    pub torn: &'a [TornRef],
    pub prev: &'a str,
}

#[derive(Serialize)]
pub(crate) struct RetentionLine<'a> {
    pub seq: u64,
    pub ts: &'a str,
    pub kind: &'static str,
    pub deleted: &'a [String],
    pub start_file: &'a str,
    pub start_seq: u64,
    pub start_prev: &'a str,
    pub prev: &'a str,
}

/// Who queried the console for what (see [`crate::audit::ConsoleRecord`]).
#[derive(Serialize)]
pub(crate) struct ConsoleLine<'a> {
    pub seq: u64,
    pub ts: &'a str,
    pub kind: &'static str,
    pub user: &'a str,
    pub role: &'a str,
    pub query: &'a str,
    pub results: u64,
    pub prev: &'a str,
}

/// A change to a list (see [`crate::audit::ListRecord`]).
#[derive(Serialize)]
pub(crate) struct ListLine<'a> {
    pub seq: u64,
    pub ts: &'a str,
    pub kind: &'static str,
    #[serde(flatten)]
    pub change: &'a crate::audit::ListRecord,
    pub prev: &'a str,
}

/// What verification needs from any record.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub seq: u64,
    pub prev: Hash,
    pub body: Body,
}

/// A `start` or `checkpoint` record's signature and the `ts` it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sig {
    pub ts: String,
    pub public: [u8; 32],
    pub sig: [u8; 64],
}

#[derive(Debug)]
pub(crate) enum Body {
    Hit,
    /// A console query on the record; nothing for verify to check beyond
    /// the chain.
    Console,
    /// A list change on the record; nothing for verify to check beyond
    /// the chain.
    List,
    Start {
        torn: Vec<TornRef>,
        sig: Option<Sig>,
    },
    Checkpoint {
        records: u64,
        lost: u64,
        hash: Hash,
        sig: Option<Sig>,
    },
    Lost {
        first: u64,
        last: u64,
        count: u64,
        torn: Vec<TornRef>,
    },
    Retention {
        start_seq: u64,
        start_prev: Hash,
        deleted: Vec<String>,
    },
}

impl Parsed {
    pub(crate) fn torn(&self) -> &[TornRef] {
        match &self.body {
            Body::Start { torn, .. } | Body::Lost { torn, .. } => torn,
            _ => &[],
        }
    }
}

#[derive(Deserialize)]
struct AnyRecord<'a> {
    seq: u64,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    first: Option<u64>,
    last: Option<u64>,
    count: Option<u64>,
    records: Option<u64>,
    lost: Option<u64>,
    #[serde(borrow)]
    hash: Option<Cow<'a, str>>,
    start_seq: Option<u64>,
    #[serde(borrow)]
    start_prev: Option<Cow<'a, str>>,
    #[serde(default)]
    deleted: Vec<String>,
    #[serde(default)]
    torn: Vec<TornRef>,
    #[serde(borrow)]
    ts: Option<Cow<'a, str>>,
    #[serde(borrow)]
    sig_pub: Option<Cow<'a, str>>,
    #[serde(borrow)]
    sig: Option<Cow<'a, str>>,
}

/// The signature fields of a start or checkpoint: both or neither.
fn parse_sig(r: &AnyRecord<'_>) -> Result<Option<Sig>, String> {
    match (&r.sig_pub, &r.sig) {
        (None, None) => Ok(None),
        (Some(p), Some(s)) => {
            let mut public = [0u8; 32];
            let mut sig = [0u8; 64];
            hex::decode_to_slice(&**p, &mut public)
                .map_err(|_| "sig_pub is not 64 hex digits".to_string())?;
            hex::decode_to_slice(&**s, &mut sig)
                .map_err(|_| "sig is not 128 hex digits".to_string())?;
            let ts = r.ts.as_deref().ok_or("signed record without ts")?;
            Ok(Some(Sig {
                ts: ts.to_string(),
                public,
                sig,
            }))
        }
        _ => Err("sig_pub and sig must come together".into()),
    }
}

/// Parses one line for verification. Hit payload fields are not checked
/// here: their integrity is the chain's job.
pub(crate) fn parse_record(line: &[u8]) -> Result<Parsed, String> {
    let r: AnyRecord<'_> = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let prev = parse_hex32(&r.prev).ok_or("prev is not 64 hex digits")?;
    let need = |v: Option<u64>, f: &str| v.ok_or_else(|| format!("{} record without {f}", r.kind));
    let body = match &*r.kind {
        "hit" => Body::Hit,
        "console" => Body::Console,
        "list" => Body::List,
        "start" => Body::Start {
            sig: parse_sig(&r)?,
            torn: r.torn,
        },
        "checkpoint" => Body::Checkpoint {
            sig: parse_sig(&r)?,
            records: need(r.records, "records")?,
            lost: need(r.lost, "lost")?,
            hash: r
                .hash
                .as_deref()
                .and_then(parse_hex32)
                .ok_or("checkpoint hash is not 64 hex digits")?,
        },
        "lost" => Body::Lost {
            first: need(r.first, "first")?,
            last: need(r.last, "last")?,
            count: need(r.count, "count")?,
            torn: r.torn,
        },
        "retention" => Body::Retention {
            start_seq: need(r.start_seq, "start_seq")?,
            start_prev: r
                .start_prev
                .as_deref()
                .and_then(parse_hex32)
                .ok_or("retention start_prev is not 64 hex digits")?,
            deleted: r.deleted,
        },
        other => return Err(format!("unknown record kind {other:?}")),
    };
    Ok(Parsed {
        seq: r.seq,
        prev,
        body,
    })
}

/// The writer's own hit layout, read without a JSON parser:
/// `{"seq":N,"ts":"<27 bytes>","kind":"hit",…,"prev":"<64 hex>"}`. Verify
/// needs only seq, kind and prev from a hit, and the hash covers every other
/// byte, so skipping the middle loses no tamper evidence; it is what makes
/// verify hash-bound instead of parse-bound. Anything that does not fit
/// exactly takes the full parse.
pub(crate) fn parse_hit_fast(line: &[u8]) -> Option<Parsed> {
    const TAIL: usize = b",\"prev\":\"".len() + 64 + 2;
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let comma = memchr::memchr(b',', rest)?;
    let seq = parse_u64(&rest[..comma])?;
    let rest = rest[comma..].strip_prefix(b",\"ts\":\"")?;
    let rest = rest.get(super::time::TS_LEN..)?;
    let rest = rest.strip_prefix(b"\",\"kind\":\"hit\",")?;
    let tail = rest.get(rest.len().checked_sub(TAIL)?..)?;
    let hex = tail.strip_prefix(b",\"prev\":\"")?.strip_suffix(b"\"}")?;
    let prev = parse_hex32(std::str::from_utf8(hex).ok()?)?;
    Some(Parsed {
        seq,
        prev,
        body: Body::Hit,
    })
}

/// A JSON non-negative integer as serde_json accepts it for a u64.
fn parse_u64(d: &[u8]) -> Option<u64> {
    if d.is_empty() || (d.len() > 1 && d[0] == b'0') {
        return None;
    }
    d.iter().try_fold(0u64, |acc, &c| {
        if !c.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })
}

/// A string field read straight from the line bytes.
pub(crate) enum Raw<'a> {
    Missing,
    Plain(&'a str),
    /// Escaped, not a string, or not UTF-8: needs the full parse.
    Complex,
}

/// Finds `"key":` (the needle includes the quotes and colon) and returns
/// its string value if it has no escapes. A needle with its quotes cannot
/// match inside a JSON string, where quotes are escaped.
pub(crate) fn raw_str<'a>(line: &'a [u8], needle: &[u8]) -> Raw<'a> {
    let Some(i) = memchr::memmem::find(line, needle) else {
        return Raw::Missing;
    };
    let Some(v) = line[i + needle.len()..].strip_prefix(b"\"") else {
        return Raw::Complex;
    };
    match memchr::memchr2(b'"', b'\\', v) {
        Some(j) if v[j] == b'"' => match std::str::from_utf8(&v[..j]) {
            Ok(s) => Raw::Plain(s),
            Err(_) => Raw::Complex,
        },
        _ => Raw::Complex,
    }
}

/// A hit as search and stats read it. Every field is optional so that
/// non-hit records parse too and are skipped by `kind`.
#[derive(Debug, Deserialize)]
pub(crate) struct HitView<'a> {
    #[serde(default)]
    pub seq: u64,
    #[serde(borrow, default)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub ts: Cow<'a, str>,
    #[serde(borrow, default)]
    pub client: Cow<'a, str>,
    #[serde(default)]
    pub port: u16,
    #[serde(borrow, default)]
    pub transport: Cow<'a, str>,
    #[serde(borrow, default)]
    pub qname: Cow<'a, str>,
    #[serde(borrow, default)]
    pub qtype: Cow<'a, str>,
    #[serde(borrow, default)]
    pub action: Cow<'a, str>,
    #[serde(borrow, default)]
    pub rule: Cow<'a, str>,
    #[serde(borrow, default)]
    pub list: Cow<'a, str>,
    #[serde(borrow, default)]
    pub file: Cow<'a, str>,
    #[serde(default)]
    pub line: u32,
    #[serde(default)]
    pub decision: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub date: Option<String>,
    #[serde(default)]
    pub entry: Option<String>,
    #[serde(default)]
    pub included: Option<String>,
    #[serde(default)]
    pub list_version: u64,
}

pub(crate) fn parse_hit(line: &[u8]) -> Option<HitView<'_>> {
    let v: HitView<'_> = serde_json::from_slice(line).ok()?;
    (v.kind == "hit").then_some(v)
}

/// Log files are `audit-YYYYMMDD-HHMMSS-<first seq, 20 digits>.jsonl`:
/// sorting by name sorts by time, and readers sort by the seq so that a
/// clock stepped backwards cannot reorder files.
pub(crate) fn file_name(micros: i64, first_seq: u64) -> String {
    format!(
        "audit-{}-{first_seq:020}.jsonl",
        super::time::format_stamp(micros)
    )
}

pub(crate) fn file_seq(name: &str) -> Option<u64> {
    let stem = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    stem.rsplit('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qtype_names() {
        let table: &[(u16, &str)] = &[
            (1, "A"),
            (28, "AAAA"),
            (65, "HTTPS"),
            (255, "ANY"),
            (666, "TYPE666"),
            (0, "TYPE0"),
        ];
        for &(t, want) in table {
            assert_eq!(qtype_name(t), want);
        }
    }

    #[test]
    fn names_sort_and_parse() {
        let a = file_name(1_709_251_199_000_000, 7);
        assert_eq!(a, "audit-20240229-235959-00000000000000000007.jsonl");
        assert_eq!(file_seq(&a), Some(7));
        assert_eq!(file_seq("audit-x.json"), None);
        assert!(file_name(1, 9) < file_name(2_000_000, 8));
    }

    #[test]
    fn hex_round_trip() {
        let h = hash_line(b"abc");
        let x = hex32(&h);
        assert_eq!(x.as_str(), hex::encode(h));
        assert_eq!(parse_hex32(x.as_str()), Some(h));
        assert_eq!(parse_hex32("zz"), None);
    }

    #[test]
    fn pseudonyms_are_keyed_and_fold_mapped_v4() {
        let k1 = b"0123456789abcdef";
        let k2 = b"fedcba9876543210";
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(pseudonym(k1, a), pseudonym(k1, a));
        assert_eq!(pseudonym(k1, a), pseudonym(k1, mapped));
        assert_ne!(pseudonym(k1, a), pseudonym(k2, a));
        assert_eq!(pseudonym(k1, a).len(), 37);
        assert!(!pseudonym(k1, a).contains("192"));
    }

    #[test]
    fn fast_hit_path_agrees_with_the_parser() {
        let z = "ab".repeat(32);
        let good = format!(
            r#"{{"seq":42,"ts":"2025-03-01T12:00:00.000000Z","kind":"hit","qname":"a","prev":"{z}"}}"#
        );
        let p = parse_hit_fast(good.as_bytes()).unwrap();
        let q = parse_record(good.as_bytes()).unwrap();
        assert_eq!((p.seq, p.prev), (q.seq, q.prev));
        let odd = [
            good.replace("\"seq\":42", "\"seq\":042"),
            good.replace("\"seq\":42", "\"seq\":99999999999999999999"),
            good.replace("\"kind\":\"hit\"", "\"kind\":\"lost\""),
            good.replace("00.000000Z", "00Z"),
            good.replace("\"}", "\" }"),
            good[..good.len() - 3].to_string(),
        ];
        for o in &odd {
            assert!(parse_hit_fast(o.as_bytes()).is_none(), "{o}");
        }
    }

    #[test]
    fn raw_fields() {
        let line = br#"{"kind":"hit","client_mode":"x","client":"192.0.2.1","qname":"a\"b","n":5}"#;
        assert!(matches!(
            raw_str(line, b"\"client\":"),
            Raw::Plain("192.0.2.1")
        ));
        assert!(matches!(raw_str(line, b"\"qname\":"), Raw::Complex));
        assert!(matches!(raw_str(line, b"\"n\":"), Raw::Complex));
        assert!(matches!(raw_str(line, b"\"decision\":"), Raw::Missing));
    }

    #[test]
    fn parse_record_rejects_incomplete_meta() {
        let z = "0".repeat(64);
        let ok = format!(r#"{{"seq":3,"kind":"lost","first":1,"last":3,"count":3,"prev":"{z}"}}"#);
        assert!(matches!(
            parse_record(ok.as_bytes()).unwrap().body,
            Body::Lost {
                first: 1,
                last: 3,
                count: 3,
                ..
            }
        ));
        let bad = format!(r#"{{"seq":3,"kind":"lost","first":1,"prev":"{z}"}}"#);
        assert!(parse_record(bad.as_bytes()).is_err());
        let odd = format!(r#"{{"seq":3,"kind":"mystery","prev":"{z}"}}"#);
        assert!(parse_record(odd.as_bytes()).is_err());
        assert!(parse_record(br#"{"seq":1,"kind":"hit","prev":"00"}"#).is_err());
    }
}
