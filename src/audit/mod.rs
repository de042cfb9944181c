//! The audit hit log: one tamper-evident JSON line per blocked query.
//!
//! # What is recorded
//!
//! Every blocked query becomes one `hit` record, written as one JSON object
//! per line (UTF-8, `\n`-terminated), fields in this order:
//!
//! ```json
//! {"seq":41,"ts":"2025-03-01T12:00:00.123456Z","kind":"hit","client":"192.0.2.7","port":53124,
//!  "transport":"udp","qname":"Ads.Example.COM","qtype":"A","action":"nxdomain",
//!  "rule":"*.example.com","list":"court-orders","file":"/etc/sinkhole/orders.csv","line":12,
//!  "decision":"2025/17","authority":"AFM","category":"gambling","list_version":7,
//!  "prev":"9f86d081…"}
//! ```
//!
//! and from a registry dump's rule:
//!
//! ```json
//! {…,"line":3,"decision":"27-31-2026/Ид1-26","authority":"Роскомнадзор",
//!  "date":"2026-11-29","entry":"101","included":"2026-11-30T12:00:00","list_version":2,
//!  "prev":"…"}
//! ```
//!
//! - `seq`: record number, dense and increasing across files and restarts.
//! - `ts`: UTC, RFC 3339, always microseconds and `Z` (fixed width, so text
//!   order is time order).
//! - `client`: the address (IPv4-mapped IPv6 is written as IPv4), or with
//!   `client = "hmac"` a pseudonym `hmac:` + 32 hex digits =
//!   HMAC-SHA-256(key, address octets) truncated to 128 bits. The same
//!   address gives the same pseudonym under one key; without the key it
//!   cannot be reversed. The address itself never reaches the file.
//! - `port`, `transport` (`udp`/`tcp`), `qname` (as asked, case kept),
//!   `qtype` (mnemonic, or `TYPE65534` for unnamed types), `action`.
//! - `rule`, `list`, `file`, `line`: the winning rule and where it came from;
//!   `decision`, `authority`, `category`, `date` (the decision's),
//!   `entry` (the registry entry's id) and `included` (when the entry was
//!   included in the registry) when the rule carries them (absent
//!   otherwise); `path` and `sni` for hits of the web front;
//!   `list_version`: the list snapshot version in force.
//!
//! Fields are only ever added, optional and before `list_version`, so a
//! record without them is byte for byte what an older writer wrote, older
//! readers skip the new ones, and `verify` (which hashes the exact bytes
//! and reads only `seq`, `kind` and `prev` of a hit) is unchanged.
//! - `prev`: lowercase hex SHA-256 of the previous record's line — its exact
//!   bytes without the `\n`. The first record of a new log has 64 zeros.
//!
//! Other record kinds share `seq`, `ts`, `kind` and `prev`:
//!
//! | kind | when | extra fields |
//! |---|---|---|
//! | `start` | each time the log is opened | `version`, `client_mode`, `key_id` (first 16 hex of SHA-256 of the HMAC key), `resumed_from` (seq of the last record found), `torn`; with `signing_key` `sig_pub`, `sig` |
//! | `checkpoint` | every `checkpoint_every` records (at fixed seqs that hits skip, so exactly in place), every `checkpoint_every_secs` when there are new records, and at shutdown | `reason` (`count`/`interval`/`shutdown`), `records` and `lost` since the last `start`, `hash` (the chain head: SHA-256 of the previous line); with `signing_key` `sig_pub`, `sig` |
//! | `lost` | when writing resumes after records were lost | `first`, `last` (= its own seq), `count`, `reason` (`queue_full`, `write_error`), `torn` |
//! | `retention` | before old files are deleted | `deleted` (file names), `start_file`, `start_seq`, `start_prev`: the record the chain now starts from |
//! | `console` | a console query that filtered on or showed client addresses | `user`, `role`, `query` (path and query string), `results` (records returned) |
//! | `list` | a change to what a list enforces (push, pull, file watcher), or one refused | `list`, `source`, `outcome` (`applied`, `forced`, `rejected`), `version`, `sha256`, `signers`, `token` or `url`, `reason`, `added`, `removed`; written and fsynced before the pusher's receipt is sent (never dropped) |
//!
//! `torn` (on `start` and `lost`) lists `{"file", "bytes"}` for unterminated
//! last lines left by a crash or a failed write in earlier files.
//!
//! # The chain
//!
//! Each line commits to the previous line, so changing, removing,
//! reordering or inserting any line breaks the link at that point. Files
//! continue one chain: the first line of a file chains from the last line of
//! the previous one, so deleting a whole file breaks it too. Seqs are dense:
//! every seq is either a line or inside exactly one `lost` range, which
//! immediately follows the gap and takes the gap's last seq. So a gap with no
//! `lost` record is a removed line, and loss is never silent.
//!
//! The chain proves internal consistency only: someone able to write the
//! log can change a record and recompute every later `prev` and checkpoint
//! `hash`, and the chain verifies. Signed, anchored checkpoints close that:
//!
//! # Signed checkpoints and the witness
//!
//! With `[audit] signing_key` (an ed25519 key from `sinkhole audit keygen`,
//! one per node) every `start` and `checkpoint` record carries `sig_pub`
//! (the public key, 64 hex) and `sig` (128 hex), just before `prev`. The
//! signature covers exactly these 134 bytes (all integers unsigned
//! big-endian):
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 18 | ASCII `sinkhole audit v1` and one 0x00 byte |
//! | 18 | 1 | kind: 0x01 `start`, 0x02 `checkpoint` |
//! | 19 | 32 | key id: SHA-256 of the 32-byte public key |
//! | 51 | 8 | `seq` |
//! | 59 | 32 | chain head: the record's `prev` (= a checkpoint's `hash`) |
//! | 91 | 27 | `ts` as written, ASCII (`YYYY-MM-DDTHH:MM:SS.ffffffZ`) |
//! | 118 | 8 | `records` (0 for `start`) |
//! | 126 | 8 | `lost` (0 for `start`) |
//!
//! Plain Ed25519 (RFC 8032). Test vector: seed 32 × 0x07 gives public key
//! `ea4a6c63…d22c` and key id `fe812c12…3889`; a checkpoint at seq 10001,
//! head 32 × 0xab, ts `2025-03-01T12:00:00.000000Z`, records 10000, lost 3
//! signs to `658972bf…3b03` (full values in `sign.rs` and the README).
//!
//! A signed chain head commits to every line before it, so a key thief is
//! still needed to rewrite the log; the witness takes even that away. With
//! `[audit] anchor_url`, each signed line is POSTed, once fsynced, to
//! `sinkhole witness` on a machine the operator does not control, which
//! keeps it append-only (see [`crate::witness`] and [`anchor`]).
//! `audit verify --key K --anchors WITNESS_DIR` then fails a log whose
//! record at any seq the witness holds has another chain head (rewritten,
//! even when re-signed), or that ends before it (truncated, rolled back).
//! What the witness does not yet hold, the newest records, is reported as
//! the unanchored tail. Signing and anchoring cost one signature per
//! checkpoint on the writer thread (about 20 µs; checkpoints are periodic)
//! and a lock to hand the line over; the hit path is untouched.
//!
//! The very last line is protected only once a later line or an anchored
//! copy exists (a clean shutdown ends with a checkpoint), and cutting the
//! newest file at a line boundary cannot be told from a log that simply
//! ended there except by the witness; the last anchored checkpoint bounds
//! both.
//!
//! # Files
//!
//! The writer holds an exclusive lock (`flock`) on `DIR/.lock` while it
//! runs (the file holds its pid): a second instance pointed at the same
//! directory refuses to start instead of interleaving a second chain.
//!
//! `[audit] path` is a directory (`-` writes the same chained lines to
//! stdout, for development; each start there is a fresh chain from seq 0). Files are `audit-YYYYMMDD-HHMMSS-<first seq, 20
//! digits>.jsonl`; readers order them by the seq. A new file starts when the
//! current one would pass `max_file_bytes`, at the first record of a new UTC
//! day, at every open (the previous file is never appended to), and after a
//! failed write. With `max_files` / `max_age_days`, the oldest files are
//! deleted — always the oldest run, never one in the middle — after a
//! `retention` record naming them and the new chain start has been written
//! and fsynced. Writes go to the OS in batches: the writer drains whatever
//! is queued into one buffer and one `write`, then waits 2 ms before looking
//! again while hits keep coming (a hit after a quiet spell is written at
//! once); `fsync` happens at most every `fsync_every_ms` (default 1000; 0 =
//! after every write), so after a power loss everything up to the last
//! fsync verifies, and after `kill -9` everything written does (what was
//! still queued, under load the last few ms of hits, is gone with the
//! process; the next `start` continues the chain).
//!
//! On open, the writer reads the tail of the newest file and continues the
//! chain from its last complete line. An unterminated last line (a torn
//! write) is left in place and named in the new `start` record's `torn`.
//! If the last complete line is not a valid record, `open` fails rather
//! than guess: run `verify` and move the damaged file aside.
//!
//! # Never blocking the query path
//!
//! [`AuditLog::record`] takes a seq from an atomic counter and pushes the
//! record into a lock-free queue; it takes no lock and never waits for I/O
//! (median about 200 ns on this 2-core machine; `cargo bench --bench audit
//! -- cpu` measures it). Records can arrive out of seq order from racing
//! threads; the writer puts them back in order. The queue holds
//! `queue_capacity` seqs ahead of the writer; a record beyond that is
//! counted as lost (metric [`AuditStats::lost`]) and leaves a seq gap; the
//! writer closes it with a `lost` record as soon as it can.
//! If the directory is unwritable or the disk is full, the writer counts
//! `write_errors`, warns (at most every 10 s), retries with backoff up to
//! 5 s, keeps draining the queue meanwhile (those records become lost), and
//! writes one `lost` record for the whole gap when a write succeeds — in a
//! new file, whose first line also names any torn tail the failure left.
//!
//! # Configuration (`[audit]`)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `path` | `"-"` | directory, or `-` for stdout |
//! | `max_file_bytes` | 134217728 | rotate before a file passes this size |
//! | `max_files` | 0 | keep at most this many files (0 = no limit) |
//! | `max_age_days` | 0 | delete files last written longer ago (0 = never) |
//! | `fsync_every_ms` | 1000 | fsync interval (0 = every write) |
//! | `queue_capacity` | 65536 | records waiting for the writer |
//! | `checkpoint_every` | 10000 | records between checkpoints (0 = off) |
//! | `checkpoint_every_secs` | 60 | seconds between checkpoints when there are new records (0 = off) |
//! | `client` | `"full"` | `"full"` or `"hmac"` |
//! | `hmac_key_file` | — | key for `"hmac"`: file bytes, trailing whitespace removed, ≥ 16 bytes |
//! | `signing_key` | `""` | `audit.key` from `audit keygen` (mode 0600 enforced); empty: unsigned |
//! | `anchor_url` | `""` | witness endpoint, `http(s)://HOST:PORT/v1/checkpoints`; needs `signing_key` |
//! | `anchor_ca_file` | `""` | PEM CA for an `https` witness with a private CA (then the only trust root) |
//! | `anchor_backlog` | 1024 | signed lines waiting for the witness; the oldest is dropped beyond it |
//!
//! # Auditor commands
//!
//! ```text
//! sinkhole audit verify DIR [--json] [--key audit.pub [--anchors WITNESS_DIR [--require-anchored]]]
//! sinkhole audit keygen -o DIR
//! sinkhole audit search DIR [--since T] [--until T] [--client CIDR|ADDR|hmac:…]
//!                           [--name SUFFIX] [--decision REF] [--hmac-key-file K]
//!                           [--format json|csv|table]
//! sinkhole audit stats  DIR [same filters] [--by name|client|decision|list|hour]
//!                           [--top N] [--format json|csv|table]
//! sinkhole audit reindex DIR
//! ```
//!
//! `reindex` rebuilds the console's derived index (`DIR/.index`, see
//! [`index`]); nothing above reads it.
//!
//! `verify` exits 0 when the chain is intact (an unanchored tail is
//! reported, not an error), 1 when it is broken, 2 for usage or I/O
//! errors, 3 with `--require-anchored` when records after the last
//! anchored one exist. A broken log names the first bad file, line and one
//! of:
//!
//! - `edited` — a line's bytes changed (its hash no longer matches the next
//!   line's `prev`, seqs still consecutive), or a line is not a valid record;
//! - `dropped` — lines removed inside a file (seq gap, `prev` mismatch, no
//!   `lost` record);
//! - `reordered` — a seq goes backwards, or a gap that the next line fills;
//! - `truncated` — a file other than the newest ends inside a line and the
//!   next record does not acknowledge a torn write;
//! - `missing-file` — the chain breaks between two files (a rotated file was
//!   deleted or cut short), or the oldest file does not start at the genesis
//!   and no `retention` record names its first record as the new start;
//! - `empty` — no records at all.
//! - `bad-signature` (with `--key`) — a start/checkpoint signature does
//!   not verify, is by another key, is missing after signing began, or no
//!   start is signed by the key at all;
//! - `witness-mismatch` (with `--anchors`) — the witness holds a record
//!   the log does not have with the same chain head, or one past its end.
//!
//! A torn (unterminated) last line at the end of the newest file is what a
//! crash mid-write leaves: `verify` reports it as a warning and still exits
//! 0 if everything else is intact; the next `start` record acknowledges it.
//! Torn lines acknowledged by a later `start`/`lost` record are warnings too.
//! Other exit codes (2) are for unreadable files or bad arguments.
//!
//! `search` filters: `--since` inclusive, `--until` exclusive (RFC 3339 with
//! `Z` or an offset, or a bare date meaning 00:00Z); `--client` an address or
//! CIDR (or an exact `hmac:` pseudonym; with `--hmac-key-file`, an address is
//! turned into its pseudonym); `--name` matches the name and everything below
//! it, by whole labels, ignoring case; `--decision` is exact. `json` output is
//! the matching lines exactly as stored (so they can be re-verified against
//! the full log); `csv` has a header row; `table` is for people.
//!
//! `stats` counts matching hits by key and prints the top N (default 10) with
//! shares; `--by hour` lists hours in time order. Memory grows with the
//! number of distinct keys, not records.
//!
//! All three stream: files are read in 1 MiB chunks cut at line ends and
//! hashed/parsed on one worker per core, with a fixed number of chunks in
//! flight, so memory stays flat at any log size. Hit lines in the writer's
//! exact layout are checked without a JSON parser (seq, kind and prev sit at
//! fixed places; the hash covers every byte anyway), and search/stats read
//! the fields they filter on straight from the line, so SHA-256 is what
//! bounds `verify` (about 1.2 million records/s, 480 MiB/s, on this 2-core
//! machine) and `search` runs at several million records/s:
//! `cargo bench --bench audit` (`AUDIT_BENCH_RECORDS=10000000` for 10 M).

pub mod anchor;
pub mod changes;
mod cli;
mod config;
pub mod index;
pub(crate) mod query;
pub(crate) mod reader;
pub(crate) mod record;
pub mod sign;
pub(crate) mod time;
mod verify;
mod writer;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use anchor::AnchorStats;
pub use cli::{AuditCommand, FilterArgs, run};
/// The `audit.hmac_key_file` reader, shared with dnstap's pseudonyms.
pub(crate) use config::load_key;
pub use config::{AnchorSettings, AuditPath, AuditSettings, ClientMode, RawAuditConfig};
#[doc(hidden)]
pub use query::fuzz_search;
pub use query::{
    ClientMatch, OutputFormat, SearchFilter, StatsBy, StatsReport, parse_client, search, stats,
    write_stats,
};
pub use record::{TornRef, pseudonym};
pub use verify::{
    AnchorReport, ChainStart, EXIT_UNANCHORED, Problem, ProblemKind, SignatureReport,
    VerifyOptions, VerifyReport, verify, verify_bytes, verify_with,
};
pub use writer::AuditLog;

pub use crate::wire::Transport;

/// One blocked query, as the server hands it to [`AuditLog::record`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HitRecord {
    pub client: IpAddr,
    pub port: u16,
    pub transport: Transport,
    /// The query name as asked (case kept), in presentation form.
    pub qname: String,
    pub qtype: u16,
    /// What was done: `nxdomain`, `nodata`, `address`, `refused`, `drop` ([`crate::policy::Action::as_str`])
    pub action: &'static str,
    /// The winning rule in list syntax.
    pub rule: String,
    pub list: String,
    pub file: String,
    pub line: u32,
    pub decision: Option<String>,
    pub authority: Option<String>,
    pub category: Option<String>,
    /// The decision's date, the registry entry's id and when it was
    /// included in the registry (a dump's `<decision date>`, `<content
    /// id includeTime>`), when the rule carries them.
    pub date: Option<String>,
    pub entry: Option<String>,
    pub included: Option<String>,
    pub list_version: u64,
    /// When the query was answered.
    pub time: SystemTime,
    /// A request blocked at the web front: its path and query (`qname`
    /// holds the host).
    pub path: Option<String>,
    /// A TLS handshake refused at the web front: the SNI as sent.
    pub sni: Option<String>,
}

#[cfg(test)]
impl HitRecord {
    /// A block of `a.example` by list `court` under decision `D-1`, from
    /// `client` at `time`: the fixture the index and console tests share.
    pub(crate) fn for_test(client: IpAddr, time: std::time::SystemTime) -> HitRecord {
        HitRecord {
            client,
            port: 53,
            transport: Transport::Udp,
            qname: "a.example".into(),
            qtype: 1,
            action: "nxdomain",
            rule: "a.example".into(),
            list: "court".into(),
            file: "f".into(),
            line: 1,
            decision: Some("D-1".into()),
            authority: None,
            category: None,
            date: None,
            entry: None,
            included: None,
            list_version: 1,
            time,
            path: None,
            sni: None,
        }
    }
}

/// Now as a record timestamp (RFC 3339, microseconds, `Z`).
pub fn format_now() -> String {
    time::format_ts(time::now_micros()).as_str().to_string()
}

/// A console query that filtered on or showed client addresses, written to
/// the chain as a `console` record (`user`, `role`, `query`, `results`): who
/// looked at whom is on the record too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleRecord {
    pub user: String,
    pub role: String,
    /// The request's path and query string, as asked.
    pub query: String,
    /// Records the answer held.
    pub results: u64,
}

/// A change to what a list enforces, or a refused one, written to the chain
/// as a `list` record. Unlike hits it is never dropped: the writer fsyncs
/// it before [`AuditLog::record_list`] returns its seq.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListRecord {
    pub list: String,
    /// `push`, `pull`, `file`.
    pub source: String,
    /// `applied`, `forced` (applied past the guards), `rejected`.
    pub outcome: String,
    /// The list version (a pushed or pulled list's signed version; the
    /// snapshot version for file lists); 0 when unknown.
    pub version: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<String>,
    /// The push token's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Where a pull fetched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why it was rejected (or what a forced change overrode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub added: u64,
    #[serde(default)]
    pub removed: u64,
}

/// Writer counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Hits accepted into the queue.
    pub enqueued: u64,
    /// Lines written (hits and the writer's own records).
    pub written: u64,
    /// Records lost: queue full, write errors, or recorded after close.
    pub lost: u64,
    /// Hits waiting in the queue.
    pub queue_depth: u64,
    /// Failed writes and fsyncs.
    pub write_errors: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit config: {0}")]
    Config(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot resume the audit chain from {}: {detail}", file.display())]
    Resume { file: PathBuf, detail: String },
    #[error("{0}")]
    Arg(String),
    /// Another process holds the audit directory.
    #[error("{0}")]
    Locked(String),
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuditError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
