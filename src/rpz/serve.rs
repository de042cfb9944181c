//! sinkhole as an RPZ primary (`[rpz.serve]`): the rules in force (all
//! lists, or those named) as one Response Policy Zone, served over AXFR
//! and IXFR on the normal TCP listeners to clients in `allow_transfer`,
//! with NOTIFY to the `notify` addresses on every change, so that Unbound,
//! BIND, PowerDNS or Knot resolvers can follow a sinkhole node.
//!
//! The zone ([`zone`]) is rebuilt whenever the snapshot's version changes;
//! when its records differ, the serial goes up by one, the difference is
//! kept in a bounded journal (IXFR answers from it, AXFR when it does not
//! reach back to the follower's serial) and the followers are notified.
//! The serial is persisted in `STATE_DIR/rpz-serve.json` with a hash of
//! the zone, so it only ever increases: a restart with the same zone keeps
//! it, a restart with another zone takes the next one.
//!
//! In the query core ([`RpzServe::answer`]), before the ACL: queries for
//! the zone's apex are answered here (AA), REFUSED outside
//! `allow_transfer`; SOA and NS from the zone, AXFR and IXFR over TCP as a
//! [`Outcome::Transfer`] the TCP connection streams, IXFR over UDP with
//! the SOA alone (RFC 1995 §2: "use TCP"), AXFR over UDP NOTIMP.

pub(crate) mod tsig;
pub(crate) mod zone;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use thiserror::Error;

use crate::acl::Acl;
use crate::list::Snapshot;
use crate::policy::PolicyConfig;
use crate::server::query::{Outcome, TransferJob};
use crate::wire::{self, Request, Transport};

use self::zone::{LeftOut, RpzData, Rules, SOA_TIMERS, ZoneRecord};

/// `[rpz.serve]` as written. Nothing is served until `zone` is set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RawRpzServeConfig {
    /// The zone's name (e.g. `rpz.sinkhole`); empty: not served.
    pub zone: String,
    /// List names to export; empty: all.
    pub lists: Vec<String>,
    /// Who may transfer the zone (and ask for its SOA): addresses or CIDRs.
    pub allow_transfer: Vec<String>,
    /// A BIND key file (`tsig-keygen` output); when set, transfers need a
    /// valid TSIG with that key and every message of the answer is signed.
    pub tsig_key_file: String,
    /// `ADDR:PORT` of followers to NOTIFY on every change.
    pub notify: Vec<String>,
}

impl Default for RawRpzServeConfig {
    fn default() -> Self {
        RawRpzServeConfig {
            zone: String::new(),
            lists: Vec::new(),
            allow_transfer: vec!["127.0.0.0/8".into(), "::1/128".into()],
            tsig_key_file: String::new(),
            notify: Vec::new(),
        }
    }
}

/// `[rpz.serve]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpzServeConfig {
    /// Lowercase, no trailing dot.
    pub zone: String,
    pub lists: Vec<String>,
    pub allow_transfer: Vec<IpNet>,
    pub notify: Vec<SocketAddr>,
    /// `STATE_DIR/rpz-serve.json`.
    pub state_file: PathBuf,
    /// BIND key file: TSIG required on transfers.
    pub tsig_key_file: Option<PathBuf>,
}

/// A bad `[rpz.serve]` key and why.
#[derive(Debug, Error)]
#[error("invalid value for `rpz.serve.{key}`: {message}")]
pub struct RpzServeConfigError {
    pub key: &'static str,
    pub message: String,
}

fn invalid(key: &'static str, message: impl Into<String>) -> RpzServeConfigError {
    RpzServeConfigError {
        key,
        message: message.into(),
    }
}

impl RawRpzServeConfig {
    /// `None` when `zone` is empty. `state_dir` is `lists.state_dir`, which
    /// serving needs (the serial must survive restarts).
    pub fn validate(
        &self,
        state_dir: Option<&Path>,
    ) -> Result<Option<RpzServeConfig>, RpzServeConfigError> {
        let zone = self.zone.trim().trim_end_matches('.').to_ascii_lowercase();
        if zone.is_empty() {
            return Ok(None);
        }
        if Name::from_ascii(format!("{zone}.")).is_err() || zone.len() > 200 {
            return Err(invalid("zone", format!("{zone:?} is not a zone name")));
        }
        let Some(dir) = state_dir else {
            return Err(invalid(
                "zone",
                "serving a zone needs lists.state_dir (its serial must survive restarts)",
            ));
        };
        let allow_transfer = self
            .allow_transfer
            .iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .map(|n| n.trunc())
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        invalid("allow_transfer", format!("{s:?} is not an address or CIDR"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let notify = self
            .notify
            .iter()
            .map(|s| crate::config::parse_upstream(s).map_err(|m| invalid("notify", m)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(RpzServeConfig {
            zone,
            lists: self.lists.clone(),
            allow_transfer,
            notify,
            state_file: dir.join("rpz-serve.json"),
            tsig_key_file: Some(self.tsig_key_file.trim())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        }))
    }
}

#[derive(Debug, Error)]
pub enum RpzServeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a saved [rpz.serve] state: {message}")]
    State { path: PathBuf, message: String },
    #[error("rpz.serve.tsig_key_file: {0}")]
    Key(#[from] tsig::KeyFileError),
}

/// What `STATE_DIR/rpz-serve.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct SavedState {
    zone: String,
    serial: u32,
    /// SHA-256 of the records, hex.
    hash: String,
}

fn load_state(path: &Path) -> Result<Option<SavedState>, RpzServeError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RpzServeError::State {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RpzServeError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn save_state(path: &Path, state: &SavedState) -> Result<(), RpzServeError> {
    let err = |source| RpzServeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_vec_pretty(state).map_err(|e| err(std::io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn records_hash(records: &[ZoneRecord]) -> String {
    let mut h = sha2::Sha256::new();
    for (owner, data) in records {
        h.update(owner.as_bytes());
        h.update(b" ");
        h.update(data.rdata_text().as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The next serial (RFC 1982 arithmetic: never 0 after a wrap, which some
/// secondaries treat as "no zone").
fn next_serial(s: u32) -> u32 {
    match s.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

/// One change of the zone.
#[derive(Debug)]
struct Delta {
    from: u32,
    to: u32,
    removed: Vec<ZoneRecord>,
    added: Vec<ZoneRecord>,
}

/// Deltas kept for IXFR, and the most records they may hold in all.
const JOURNAL_DELTAS: usize = 64;
const JOURNAL_RECORDS: usize = 2_000_000;

/// The zone in force.
#[derive(Debug)]
struct ZoneState {
    serial: u32,
    version: u64,
    records: Arc<Vec<ZoneRecord>>,
    journal: VecDeque<Arc<Delta>>,
}

/// Counters, read by metrics.
#[derive(Debug, Default)]
pub struct RpzServeStats {
    pub axfr: AtomicU64,
    pub ixfr: AtomicU64,
    /// IXFR requests answered with the whole zone (journal too short).
    pub ixfr_fallback: AtomicU64,
    pub refused: AtomicU64,
    pub notify_sent: AtomicU64,
    pub notify_failed: AtomicU64,
    pub serial: AtomicU64,
    pub records: AtomicU64,
    /// Rules left out of the zone: keyword, url, other.
    pub left_out: Mutex<(u64, u64, u64)>,
}

/// The zone server.
pub struct RpzServe {
    cfg: RpzServeConfig,
    policy: PolicyConfig,
    acl: Acl,
    /// `tsig_key_file`: transfers need a valid TSIG.
    key: Option<tsig::Key>,
    apex: Name,
    apex_wire: Vec<u8>,
    state: ArcSwap<ZoneState>,
    stats: Arc<RpzServeStats>,
    /// Serialises rebuilds (and the serial they persist).
    rebuild: Mutex<()>,
}

impl std::fmt::Debug for RpzServe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpzServe")
            .field("zone", &self.cfg.zone)
            .finish_non_exhaustive()
    }
}

/// Records per transfer message: well under 64 KiB with names of any length.
const RECORDS_PER_MESSAGE: usize = 200;

impl RpzServe {
    /// Build the zone from `snap` and take its serial (blocking: run it
    /// off the runtime's worker threads for large snapshots).
    pub fn new(
        cfg: RpzServeConfig,
        policy: PolicyConfig,
        snap: &Snapshot,
    ) -> Result<RpzServe, RpzServeError> {
        let apex =
            Name::from_ascii(format!("{}.", cfg.zone)).map_err(|e| RpzServeError::State {
                path: cfg.state_file.clone(),
                message: e.to_string(),
            })?;
        let apex_wire = crate::dnstap::dotted_to_wire(cfg.zone.as_bytes()).unwrap_or_default();
        let key = cfg
            .tsig_key_file
            .as_deref()
            .map(tsig::Key::load)
            .transpose()?;
        let stats = Arc::new(RpzServeStats::default());
        let (records, left) = build(snap, &cfg, &policy, apex_wire.len());
        let hash = records_hash(&records);
        let saved = load_state(&cfg.state_file)?;
        let serial = match saved {
            Some(s) if s.zone == cfg.zone && s.hash == hash => s.serial,
            Some(s) => next_serial(s.serial),
            None => 1,
        };
        save_state(
            &cfg.state_file,
            &SavedState {
                zone: cfg.zone.clone(),
                serial,
                hash,
            },
        )?;
        set_stats(&stats, serial, records.len(), left);
        let state = ZoneState {
            serial,
            version: snap.version(),
            records: Arc::new(records),
            journal: VecDeque::new(),
        };
        Ok(RpzServe {
            acl: Acl::new(&cfg.allow_transfer),
            key,
            cfg,
            policy,
            apex,
            apex_wire,
            state: ArcSwap::from_pointee(state),
            stats,
            rebuild: Mutex::new(()),
        })
    }

    pub fn stats(&self) -> &Arc<RpzServeStats> {
        &self.stats
    }

    pub fn serial(&self) -> u32 {
        self.state.load().serial
    }

    /// The zone as a master file (what `named-checkzone` reads).
    pub fn zone_text(&self) -> String {
        let st = self.state.load();
        zone::zone_text(&self.cfg.zone, st.serial, self.policy.ttl, &st.records)
    }

    /// Rebuild from `snap` if its version is new. Returns the new serial
    /// when the zone changed (followers are then to be notified).
    pub fn refresh(&self, snap: &Snapshot) -> Result<Option<u32>, RpzServeError> {
        let _one = self
            .rebuild
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cur = self.state.load_full();
        if cur.version == snap.version() {
            return Ok(None);
        }
        let (records, left) = build(snap, &self.cfg, &self.policy, self.apex_wire.len());
        if records == *cur.records {
            self.state.store(Arc::new(ZoneState {
                serial: cur.serial,
                version: snap.version(),
                records: cur.records.clone(),
                journal: cur.journal.clone(),
            }));
            return Ok(None);
        }
        let serial = next_serial(cur.serial);
        save_state(
            &self.cfg.state_file,
            &SavedState {
                zone: self.cfg.zone.clone(),
                serial,
                hash: records_hash(&records),
            },
        )?;
        let (removed, added) = sorted_difference(&cur.records, &records);
        let mut journal = cur.journal.clone();
        journal.push_back(Arc::new(Delta {
            from: cur.serial,
            to: serial,
            removed,
            added,
        }));
        let mut held: usize = journal
            .iter()
            .map(|d| d.removed.len() + d.added.len())
            .sum();
        while journal.len() > JOURNAL_DELTAS || (held > JOURNAL_RECORDS && journal.len() > 1) {
            if let Some(d) = journal.pop_front() {
                held -= d.removed.len() + d.added.len();
            }
        }
        set_stats(&self.stats, serial, records.len(), left);
        self.state.store(Arc::new(ZoneState {
            serial,
            version: snap.version(),
            records: Arc::new(records),
            journal,
        }));
        Ok(Some(serial))
    }

    /// Answer a query for the zone's apex; `None` for any other name (the
    /// query goes on through the normal path).
    pub(crate) fn answer(
        self: &Arc<Self>,
        req: &Request,
        packet: &[u8],
        client: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Option<Outcome> {
        if req.lower_wire() != self.apex_wire.as_slice() {
            return None;
        }
        if !self.acl.allows(client.ip()) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            crate::sinkhole::error_answer(out, req, wire::RCODE_REFUSED);
            return Some(Outcome::Reply);
        }
        let st = self.state.load_full();
        let qtype = RecordType::from(req.qtype);
        let reply = |m: Message, out: &mut Vec<u8>| match m.to_vec() {
            Ok(bytes) => {
                out.clear();
                out.extend_from_slice(&bytes);
                Outcome::Reply
            }
            Err(_) => {
                crate::sinkhole::error_answer(out, req, wire::RCODE_SERVFAIL);
                Outcome::Reply
            }
        };
        // Transfers (not SOA refresh checks) need the key when there is one.
        let mut request_mac = None;
        if let Some(key) = &self.key
            && transport == Transport::Tcp
            && matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            match key.verify(packet) {
                Ok(mac) => request_mac = Some(mac),
                Err(why) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    let rcode = match why {
                        tsig::Rejected::Unsigned => wire::RCODE_REFUSED,
                        tsig::Rejected::BadSignature => RCODE_NOTAUTH,
                    };
                    crate::sinkhole::error_answer(out, req, rcode);
                    return Some(Outcome::Reply);
                }
            }
        }
        let job = |theirs: Option<u32>| {
            let me = self.clone();
            let (id, rd) = (req.id, req.rd());
            let chain = match (&self.key, request_mac.clone()) {
                (Some(key), Some(mac)) => Some(key.chain(mac)),
                _ => None,
            };
            Outcome::Transfer(TransferJob(Box::new(move |emit| {
                me.transfer(id, rd, qtype, &st, theirs, chain, emit)
            })))
        };
        let outcome = match (qtype, transport) {
            (RecordType::AXFR, Transport::Tcp) => {
                self.stats.axfr.fetch_add(1, Ordering::Relaxed);
                job(None)
            }
            (RecordType::IXFR, Transport::Tcp) => {
                let Some(theirs) = client_serial(packet) else {
                    crate::sinkhole::error_answer(out, req, wire::RCODE_FORMERR);
                    return Some(Outcome::Reply);
                };
                self.stats.ixfr.fetch_add(1, Ordering::Relaxed);
                job(Some(theirs))
            }
            (RecordType::AXFR, Transport::Udp) => {
                crate::sinkhole::error_answer(out, req, wire::RCODE_NOTIMP);
                Outcome::Reply
            }
            (RecordType::IXFR | RecordType::SOA, _) => {
                let st = self.state.load();
                let mut m = self.response(req, qtype);
                m.add_answer(self.soa(st.serial));
                reply(m, out)
            }
            (RecordType::NS, _) => {
                let mut m = self.response(req, qtype);
                m.add_answer(self.ns());
                reply(m, out)
            }
            _ => {
                let st = self.state.load();
                let mut m = self.response(req, qtype);
                m.add_authority(self.soa(st.serial));
                reply(m, out)
            }
        };
        Some(outcome)
    }

    fn response(&self, req: &Request, qtype: RecordType) -> Message {
        self.response_to(req.id, req.rd(), qtype)
    }

    fn response_to(&self, id: u16, rd: bool, qtype: RecordType) -> Message {
        let mut m = Message::response(id, OpCode::Query);
        m.metadata.authoritative = true;
        m.metadata.recursion_desired = rd;
        m.metadata.response_code = ResponseCode::NoError;
        m.add_query(Query::query(self.apex.clone(), qtype));
        m
    }

    fn soa(&self, serial: u32) -> Record {
        let (refresh, retry, expire, minimum) = SOA_TIMERS;
        let local = Name::from_ascii("localhost.").unwrap_or_else(|_| Name::root());
        let mbox = Name::from_ascii("hostmaster.localhost.").unwrap_or_else(|_| Name::root());
        let soa = SOA::new(
            local,
            mbox,
            serial,
            refresh as i32,
            retry as i32,
            expire as i32,
            minimum,
        );
        Record::from_rdata(self.apex.clone(), self.policy.ttl, RData::SOA(soa))
    }

    fn ns(&self) -> Record {
        let local = Name::from_ascii("localhost.").unwrap_or_else(|_| Name::root());
        Record::from_rdata(self.apex.clone(), self.policy.ttl, RData::NS(NS(local)))
    }

    fn record(&self, (owner, data): &ZoneRecord) -> Option<Record> {
        let name = Name::from_ascii(owner)
            .ok()?
            .append_domain(&self.apex)
            .ok()?;
        let rdata = match data {
            RpzData::Cname(t) => RData::CNAME(CNAME(Name::from_ascii(t).ok()?)),
            RpzData::Addr(IpAddr::V4(a)) => RData::A(A(*a)),
            RpzData::Addr(IpAddr::V6(a)) => RData::AAAA(AAAA(*a)),
        };
        Some(Record::from_rdata(name, self.policy.ttl, rdata))
    }

    /// Stream the messages of an AXFR, or of an IXFR from `theirs` (RFC
    /// 1995: the deltas from the journal when it reaches back that far, the
    /// whole zone otherwise, the SOA alone when they are up to date) to
    /// `emit`, [`RECORDS_PER_MESSAGE`] records each, signed by `chain` when
    /// the request was; stops when `emit` says the connection is gone. Runs
    /// off the async workers (a large zone takes a while) and holds one
    /// message at a time, not the transfer.
    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &self,
        id: u16,
        rd: bool,
        qtype: RecordType,
        st: &ZoneState,
        theirs: Option<u32>,
        mut chain: Option<tsig::ChainSigner>,
        emit: &mut dyn FnMut(Vec<u8>) -> bool,
    ) {
        let soa = self.soa(st.serial);
        let records =
            |rs: &'_ [ZoneRecord]| rs.iter().filter_map(|r| self.record(r)).collect::<Vec<_>>();
        // The answer as a sequence of record groups, produced lazily.
        let groups: Box<dyn Iterator<Item = Vec<Record>> + '_> = match theirs {
            Some(s) if s == st.serial => Box::new(std::iter::once(vec![soa])),
            Some(s) if let Some(start) = st.journal.iter().position(|d| d.from == s) => {
                let deltas = st.journal.iter().skip(start).map(move |d| {
                    let mut g = vec![self.soa(d.from)];
                    g.extend(records(&d.removed));
                    g.push(self.soa(d.to));
                    g.extend(records(&d.added));
                    g
                });
                Box::new(
                    std::iter::once(vec![soa.clone()])
                        .chain(deltas)
                        .chain(std::iter::once(vec![soa])),
                )
            }
            _ => {
                if theirs.is_some() {
                    self.stats.ixfr_fallback.fetch_add(1, Ordering::Relaxed);
                }
                let body = st.records.chunks(RECORDS_PER_MESSAGE).map(records);
                Box::new(
                    std::iter::once(vec![soa.clone(), self.ns()])
                        .chain(body)
                        .chain(std::iter::once(vec![soa])),
                )
            }
        };
        let mut pending: Vec<Record> = Vec::with_capacity(RECORDS_PER_MESSAGE);
        let mut send = |rrs: &mut Vec<Record>, chain: &mut Option<tsig::ChainSigner>| -> bool {
            let mut m = self.response_to(id, rd, qtype);
            m.add_answers(rrs.drain(..));
            let bytes = match chain {
                Some(c) => c.sign(m),
                None => m.to_vec().ok(),
            };
            match bytes {
                Some(b) => emit(b),
                None => false,
            }
        };
        for group in groups {
            for r in group {
                pending.push(r);
                if pending.len() == RECORDS_PER_MESSAGE && !send(&mut pending, &mut chain) {
                    return;
                }
            }
        }
        if !pending.is_empty() {
            send(&mut pending, &mut chain);
        }
    }

    /// NOTIFY every `notify` address of `serial` (RFC 1996), each retried
    /// a few times until it answers.
    pub async fn notify_followers(self: &Arc<Self>, serial: u32) {
        for &to in &self.cfg.notify {
            let me = self.clone();
            tokio::spawn(async move {
                if me.notify_one(to, serial).await {
                    me.stats.notify_sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    me.stats.notify_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(follower = %to, serial, "rpz serve: NOTIFY not answered");
                }
            });
        }
    }

    async fn notify_one(&self, to: SocketAddr, serial: u32) -> bool {
        let bind: SocketAddr = if to.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
            return false;
        };
        let id: u16 = rand::random();
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.op_code = OpCode::Notify;
        m.metadata.authoritative = true;
        m.add_query(Query::query(self.apex.clone(), RecordType::SOA));
        m.add_answer(self.soa(serial));
        let Ok(bytes) = m.to_vec() else { return false };
        let mut buf = [0u8; 512];
        for attempt in 0..NOTIFY_TRIES {
            if sock.send_to(&bytes, to).await.is_err() {
                return false;
            }
            let wait = NOTIFY_WAIT * (attempt + 1);
            let answered = tokio::time::timeout(wait, async {
                loop {
                    match sock.recv_from(&mut buf).await {
                        Ok((n, from)) if from == to && n >= 4 && buf[..2] == id.to_be_bytes() => {
                            return true;
                        }
                        Ok(_) => continue,
                        Err(_) => return false,
                    }
                }
            })
            .await;
            if answered == Ok(true) {
                return true;
            }
        }
        false
    }

    /// Follow the snapshot: every `poll`, rebuild if its version changed
    /// and notify on a new serial. Runs until the task is aborted.
    pub async fn follow(self: Arc<Self>, snapshot: Arc<ArcSwap<Snapshot>>, poll: Duration) {
        loop {
            tokio::time::sleep(poll).await;
            let snap = snapshot.load_full();
            if snap.version() == self.state.load().version {
                continue;
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.refresh(&snap)).await {
                Ok(Ok(Some(serial))) => {
                    tracing::info!(zone = %self.cfg.zone, serial, "rpz serve: zone changed");
                    self.notify_followers(serial).await;
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "rpz serve: cannot save the serial; the zone keeps its previous serial");
                }
                Err(e) => tracing::error!(error = %e, "rpz serve: rebuild failed"),
            }
        }
    }
}

/// RCODE NOTAUTH (RFC 8945 §5.2: a bad signature).
const RCODE_NOTAUTH: u16 = 9;

const NOTIFY_TRIES: u32 = 5;
const NOTIFY_WAIT: Duration = Duration::from_millis(500);

fn set_stats(stats: &RpzServeStats, serial: u32, records: usize, left: LeftOut) {
    stats.serial.store(u64::from(serial), Ordering::Relaxed);
    stats.records.store(records as u64, Ordering::Relaxed);
    *stats
        .left_out
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = (left.keyword, left.url, left.other);
}

fn build(
    snap: &Snapshot,
    cfg: &RpzServeConfig,
    policy: &PolicyConfig,
    apex_wire_len: usize,
) -> (Vec<ZoneRecord>, LeftOut) {
    let (rules, mut left) = Rules::from_snapshot(snap, &cfg.lists, policy);
    // Every list: the snapshot's own lookup decides (so the zone follows
    // sinkhole's semantics exactly, RPZ files included); some lists: the
    // builder's reading of just those rules.
    let (records, too_long) = if cfg.lists.is_empty() {
        rules.zone_with(apex_wire_len, &|n| zone::snapshot_decides(snap, policy, n))
    } else {
        rules.zone_with(apex_wire_len, &|n| rules.decide(n))
    };
    left.other += too_long;
    (records, left)
}

/// Records only in `old`, records only in `new` (both sorted).
fn sorted_difference(old: &[ZoneRecord], new: &[ZoneRecord]) -> (Vec<ZoneRecord>, Vec<ZoneRecord>) {
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                removed.push(a.clone());
                i += 1;
            }
            (Some(_), Some(b)) => {
                added.push(b.clone());
                j += 1;
            }
            (Some(a), None) => {
                removed.push(a.clone());
                i += 1;
            }
            (None, Some(b)) => {
                added.push(b.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (removed, added)
}

/// The serial in an IXFR query's authority SOA.
fn client_serial(packet: &[u8]) -> Option<u32> {
    let m = Message::from_vec(packet).ok()?;
    m.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

/// The zone-apex answers on arbitrary packets, for the `xfr_request`
/// fuzz target: a served zone of a few rules (with TSIG), every packet
/// through [`RpzServe::answer`] over UDP and TCP from inside and outside
/// `allow_transfer`. Every reply must decode; transfers only over TCP.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use super::*;

    pub struct XfrHarness {
        serve: Arc<RpzServe>,
        _dir: tempfile_free::Dir,
    }

    /// A private state directory under the system's temporary directory,
    /// removed on drop (no tempfile dependency outside tests).
    mod tempfile_free {
        pub(super) struct Dir(pub(super) std::path::PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    impl XfrHarness {
        pub fn new() -> XfrHarness {
            let dir =
                std::env::temp_dir().join(format!("sinkhole-fuzz-xfr-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            let key = dir.join("xfr.key");
            let _ = std::fs::write(
                &key,
                "key \"k\" { algorithm hmac-sha256; secret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\"; };",
            );
            let opts = crate::list::ListOptions {
                format: Some(crate::list::Format::Plain),
                name: Some("court".into()),
                ..Default::default()
            };
            let list = crate::list::parse::parse_bytes(
                Path::new("court"),
                b"a.example\nb.a.example\n",
                &opts,
            );
            let Ok(snap) = crate::list::compile::compile(&[list]) else {
                panic!("fixed list compiles");
            };
            let cfg = RpzServeConfig {
                zone: "rpz.test".into(),
                lists: Vec::new(),
                allow_transfer: vec![IpNet::from(IpAddr::from([127, 0, 0, 1]))],
                notify: Vec::new(),
                state_file: dir.join("rpz-serve.json"),
                tsig_key_file: Some(key),
            };
            let Ok(config) = crate::config::Config::from_toml_str_with_resolv_text(
                "[upstream]\nservers = [\"127.0.0.1\"]\n",
                "fuzz",
                "",
            ) else {
                panic!("harness config");
            };
            let policy = config.policy;
            let Ok(serve) = RpzServe::new(cfg, policy, &snap) else {
                panic!("harness zone");
            };
            XfrHarness {
                serve: Arc::new(serve),
                _dir: tempfile_free::Dir(dir),
            }
        }

        pub fn request(&self, packet: &[u8]) {
            let Ok(req) = wire::parse_request(packet) else {
                return;
            };
            let mut out = Vec::new();
            for client in ["127.0.0.1:5300", "192.0.2.1:5300"] {
                let Ok(client) = client.parse::<SocketAddr>() else {
                    continue;
                };
                for transport in [Transport::Udp, Transport::Tcp] {
                    match self.serve.answer(&req, packet, client, transport, &mut out) {
                        None | Some(Outcome::Silent) => {}
                        Some(Outcome::Reply) => {
                            assert!(Message::from_vec(&out).is_ok(), "undecodable reply");
                        }
                        Some(Outcome::Transfer(job)) => {
                            assert_eq!(transport, Transport::Tcp, "transfer over UDP");
                            for m in job.collect() {
                                assert!(Message::from_vec(&m).is_ok(), "undecodable transfer");
                            }
                        }
                        Some(Outcome::Forward(_)) => panic!("the apex is never forwarded"),
                    }
                }
            }
        }
    }

    impl Default for XfrHarness {
        fn default() -> Self {
            XfrHarness::new()
        }
    }
}

#[cfg(test)]
mod tests;
