//! Packet cache for forwarded answers. An entry is the upstream's reply
//! bytes plus the offsets of every TTL field, so a hit is a copy and a few
//! in-place patches (ID, the client's spelling of the name, TTLs aged by the
//! seconds since insert) instead of a decode and re-encode.
//!
//! Bounded by `max_entries` and by `max_bytes` (what the entries hold:
//! reply bytes, keys, TTL offsets and bookkeeping, so a flood of unique
//! names answered NXDOMAIN cannot grow it past its limit whatever the
//! answers' size), split over mutex-guarded shards; eviction is
//! CLOCK (second chance) over a slot array, which costs one flag write per
//! hit and no allocation or list juggling. A hand-rolled map keeps lookups
//! borrow-only (`&[u8]` keys) and avoids a dependency for ~150 lines.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::wire::{self, ResponseScan};

/// `[cache]`, validated.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub max_entries: usize,
    /// Bytes the entries may hold in all; 0 = bounded by `max_entries` only.
    pub max_bytes: usize,
    pub max_ttl: u32,
    pub max_negative_ttl: u32,
    /// RFC 8767 stale window past expiry; zero = serve-stale off.
    pub serve_stale: Duration,
}

const SHARDS: usize = 64;
/// Flag byte + qtype + qclass + the longest wire name.
pub(crate) const MAX_KEY: usize = 5 + wire::MAX_NAME;

/// Request bits that change what the upstream answers, and so the key.
pub(crate) const KEY_DO: u8 = 1;
pub(crate) const KEY_CD: u8 = 2;
pub(crate) const KEY_AD: u8 = 4;
pub(crate) const KEY_EDNS: u8 = 8;

/// The TTL of a stale answer (RFC 8767 §4 recommends 30 seconds).
pub(crate) const STALE_TTL: u32 = 30;

/// A question's cache key (also what coalesces identical questions on
/// their way upstream): key bits, qtype, qclass, lowercased wire name.
#[derive(Clone, Eq)]
pub(crate) struct CacheKey {
    bytes: [u8; MAX_KEY],
    len: u16,
}

impl CacheKey {
    pub(crate) fn new(lower_wire: &[u8], qtype: u16, qclass: u16, bits: u8) -> CacheKey {
        let mut bytes = [0u8; MAX_KEY];
        let len = make_key(&mut bytes, lower_wire, qtype, qclass, bits) as u16;
        CacheKey { bytes, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &CacheKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey({})", hex::encode(self.as_bytes()))
    }
}

/// Build the cache key for a question into `buf`; returns its length.
pub(crate) fn make_key(
    buf: &mut [u8; MAX_KEY],
    lower_wire: &[u8],
    qtype: u16,
    qclass: u16,
    bits: u8,
) -> usize {
    let n = lower_wire.len().min(wire::MAX_NAME);
    buf[0] = bits;
    buf[1..3].copy_from_slice(&qtype.to_be_bytes());
    buf[3..5].copy_from_slice(&qclass.to_be_bytes());
    buf[5..5 + n].copy_from_slice(&lower_wire[..n]);
    5 + n
}

struct Entry {
    bytes: Box<[u8]>,
    ttl_offsets: Box<[u16]>,
    inserted: Instant,
    expires: Instant,
    opt_class_offset: Option<u16>,
    has_cname: bool,
}

struct Slot {
    key: Box<[u8]>,
    entry: Entry,
    referenced: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<[u8]>, u32>,
    slots: Vec<Slot>,
    hand: usize,
    /// What the slots hold, by [`entry_cost`].
    bytes: usize,
}

/// Bookkeeping per entry beyond its byte strings: the slot, the map's
/// bucket, and the allocator's headers of the three boxes.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Slot>() + 64;

/// What one entry costs against `max_bytes` (the key is stored twice:
/// in the map and in the slot).
fn entry_cost(key: &[u8], entry: &Entry) -> usize {
    2 * key.len() + entry.bytes.len() + 2 * entry.ttl_offsets.len() + ENTRY_OVERHEAD
}

impl Shard {
    /// Drop the slot at `i` (the last slot moves into its place).
    fn remove_slot(&mut self, i: usize) {
        let removed = self.slots.swap_remove(i);
        self.bytes -= entry_cost(&removed.key, &removed.entry);
        self.map.remove(&removed.key);
        if let Some(moved) = self.slots.get(i)
            && let Some(idx) = self.map.get_mut(&moved.key)
        {
            *idx = i as u32;
        }
        if self.hand >= self.slots.len() {
            self.hand = 0;
        }
    }

    /// CLOCK (second chance): evict one entry, expired or not referenced
    /// since the hand last passed; two sweeps at most, since the first
    /// clears every flag. False when the shard is empty.
    fn evict_one(&mut self, now: Instant) -> bool {
        let n = self.slots.len();
        for _ in 0..2 * n {
            let h = self.hand % n;
            self.hand = (h + 1) % n;
            let slot = &mut self.slots[h];
            if slot.referenced && now < slot.entry.expires {
                slot.referenced = false;
                continue;
            }
            self.remove_slot(h);
            return true;
        }
        false
    }
}

/// What a hit wrote and what the caller still has to check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub flags: u16,
    pub has_cname: bool,
    pub opt_class_offset: Option<u16>,
}

pub(crate) struct Cache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Byte budget per shard (`usize::MAX`: none).
    shard_bytes: usize,
    max_ttl: u32,
    max_negative_ttl: u32,
}

fn shard_of(key: &[u8]) -> usize {
    // FNV-1a: only spreads keys over shards; the maps hash with SipHash.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    (h as usize) % SHARDS
}

impl Cache {
    pub(crate) fn new(cfg: &CacheConfig) -> Cache {
        // Rounded down so the total stays within max_entries (one per shard
        // at least, so tiny caches still work).
        let per_shard = match cfg.max_entries {
            0 => 0,
            n => (n / SHARDS).max(1),
        };
        let shard_bytes = match cfg.max_bytes {
            0 => usize::MAX,
            n => (n / SHARDS).max(1),
        };
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            shard_bytes,
            max_ttl: cfg.max_ttl,
            max_negative_ttl: cfg.max_negative_ttl,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.per_shard > 0
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }

    /// On a fresh entry: write the reply for a client into `out` (its `id`,
    /// its spelling `client_qname`, TTLs aged) and return what it was.
    pub(crate) fn get_into(
        &self,
        key: &[u8],
        out: &mut Vec<u8>,
        id: u16,
        client_qname: &[u8],
        now: Instant,
    ) -> Option<Hit> {
        if !self.enabled() {
            return None;
        }
        let mut shard = self.shards[shard_of(key)].lock().ok()?;
        let &idx = shard.map.get(key)?;
        let slot = shard.slots.get_mut(idx as usize)?;
        if now >= slot.entry.expires {
            // Left in place: the insert after the refetch reuses the slot,
            // and CLOCK takes it first if nobody asks again.
            slot.referenced = false;
            return None;
        }
        slot.referenced = true;
        let e = &slot.entry;
        out.clear();
        out.extend_from_slice(&e.bytes);
        let elapsed = now.saturating_duration_since(e.inserted).as_secs();
        wire::age_ttls(out, &e.ttl_offsets, elapsed.min(u32::MAX as u64) as u32);
        let hit = Hit {
            flags: wire::read_u16(&e.bytes, 2).unwrap_or(0),
            has_cname: e.has_cname,
            opt_class_offset: e.opt_class_offset,
        };
        drop(shard);
        wire::set_id(out, id);
        wire::copy_qname(out, client_qname);
        Some(hit)
    }

    /// RFC 8767 serve-stale, for when no upstream answered: like
    /// [`Cache::get_into`], but an entry that expired at most `max_stale`
    /// ago is served too, with every TTL set to [`STALE_TTL`] (§4: so the
    /// client asks again soon, by when the upstreams may be back). Expired
    /// entries are the first CLOCK evicts, so under cache pressure there
    /// may be nothing stale left to serve.
    pub(crate) fn get_stale_into(
        &self,
        key: &[u8],
        out: &mut Vec<u8>,
        id: u16,
        client_qname: &[u8],
        now: Instant,
        max_stale: Duration,
    ) -> Option<Hit> {
        if !self.enabled() || max_stale.is_zero() {
            return None;
        }
        let shard = self.shards[shard_of(key)].lock().ok()?;
        let &idx = shard.map.get(key)?;
        let e = &shard.slots.get(idx as usize)?.entry;
        if now >= e.expires + max_stale {
            return None;
        }
        out.clear();
        out.extend_from_slice(&e.bytes);
        if now < e.expires {
            // Refreshed meanwhile (another query's answer): a normal hit.
            let elapsed = now.saturating_duration_since(e.inserted).as_secs();
            wire::age_ttls(out, &e.ttl_offsets, elapsed.min(u32::MAX as u64) as u32);
        } else {
            for &o in e.ttl_offsets.iter() {
                wire::set_ttl(out, o as usize, STALE_TTL);
            }
        }
        let hit = Hit {
            flags: wire::read_u16(&e.bytes, 2).unwrap_or(0),
            has_cname: e.has_cname,
            opt_class_offset: e.opt_class_offset,
        };
        drop(shard);
        wire::set_id(out, id);
        wire::copy_qname(out, client_qname);
        Some(hit)
    }

    /// How long an upstream reply may be cached (RFC 2308 for negative
    /// ones), or `None` when it must not be.
    pub(crate) fn ttl_for(&self, scan: &ResponseScan) -> Option<u32> {
        if scan.truncated() {
            return None;
        }
        let ttl = match scan.rcode() {
            wire::RCODE_NOERROR if scan.ancount > 0 => scan.min_ttl?.min(self.max_ttl),
            wire::RCODE_NOERROR | wire::RCODE_NXDOMAIN => {
                let (_, soa_ttl, minimum) = scan.soa?;
                soa_ttl.min(minimum).min(self.max_negative_ttl)
            }
            // SERVFAIL and friends are often transient: never cached.
            _ => return None,
        };
        (ttl > 0).then_some(ttl)
    }

    /// Store an upstream reply (bytes as received) under `key`.
    pub(crate) fn insert(&self, key: &[u8], reply: &[u8], scan: &ResponseScan, now: Instant) {
        if !self.enabled() {
            return;
        }
        let Some(ttl) = self.ttl_for(scan) else {
            return;
        };
        let mut bytes: Box<[u8]> = reply.into();
        wire::set_id(&mut bytes, 0);
        if let Some((off, _, _)) = scan.soa
            && scan.ancount == 0
        {
            // RFC 2308 §5: the SOA TTL served from cache is the negative TTL.
            wire::set_ttl(&mut bytes, off, ttl);
        }
        let entry = Entry {
            bytes,
            ttl_offsets: scan.ttl_offsets.as_slice().into(),
            inserted: now,
            expires: now + Duration::from_secs(ttl as u64),
            opt_class_offset: scan.opt_class_offset.map(|o| o as u16),
            has_cname: scan.has_cname,
        };
        let cost = entry_cost(key, &entry);
        if cost > self.shard_bytes {
            return;
        }
        let Ok(mut guard) = self.shards[shard_of(key)].lock() else {
            return;
        };
        let shard = &mut *guard;
        if let Some(&idx) = shard.map.get(key) {
            // Refreshed: the old answer goes, the new one is inserted below.
            shard.remove_slot(idx as usize);
        }
        while shard.slots.len() >= self.per_shard || shard.bytes + cost > self.shard_bytes {
            if !shard.evict_one(now) {
                return;
            }
        }
        let key: Box<[u8]> = key.into();
        shard.map.insert(key.clone(), shard.slots.len() as u32);
        shard.bytes += cost;
        shard.slots.push(Slot {
            key,
            entry,
            referenced: false,
        });
    }

    /// Bytes the entries hold now (as counted against `max_bytes`).
    pub(crate) fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.bytes).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, OpCode, Query};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    fn cfg(n: usize) -> CacheConfig {
        CacheConfig {
            max_entries: n,
            max_bytes: 0,
            max_ttl: 86_400,
            max_negative_ttl: 3_600,
            serve_stale: Duration::ZERO,
        }
    }

    fn reply(name: &str, ttl: u32) -> Vec<u8> {
        let mut m = Message::response(99, OpCode::Query);
        let n = Name::from_ascii(name).unwrap();
        m.add_query(Query::query(n.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(n, ttl, RData::A(A::new(1, 2, 3, 4))));
        m.to_vec().unwrap()
    }

    fn key(name: &str) -> Vec<u8> {
        let mut b = [0u8; MAX_KEY];
        let w = wire::dotted_to_wire(name);
        let n = make_key(&mut b, &w, 1, 1, 0);
        b[..n].to_vec()
    }

    #[test]
    fn max_bytes_bounds_a_flood_of_unique_names() {
        let max_bytes = 64 * 1024;
        let c = Cache::new(&CacheConfig {
            max_bytes,
            ..cfg(1_000_000)
        });
        let t0 = Instant::now();
        for i in 0..20_000 {
            let name = format!("r{i}.victim.example.");
            let r = reply(&name, 300);
            let s = wire::scan_response(&r).unwrap();
            c.insert(&key(&name), &r, &s, t0);
            assert!(c.bytes() <= max_bytes, "{} bytes after {i}", c.bytes());
        }
        assert!(c.len() > 100, "still caching: {}", c.len());
        // The newest entries are there, and lookups still find them.
        let name = "r19999.victim.example.";
        let mut out = Vec::new();
        let client = wire::dotted_to_wire(name);
        assert!(c.get_into(&key(name), &mut out, 1, &client, t0).is_some());
        // Every map index points at its slot after the swap-removes.
        for shard in c.shards.iter() {
            let shard = shard.lock().unwrap();
            assert_eq!(shard.map.len(), shard.slots.len());
            for (k, &i) in &shard.map {
                assert_eq!(&shard.slots[i as usize].key, k);
            }
            let sum: usize = shard
                .slots
                .iter()
                .map(|s| entry_cost(&s.key, &s.entry))
                .sum();
            assert_eq!(shard.bytes, sum);
        }
    }

    #[test]
    fn hit_patches_id_case_and_ttl() {
        let c = Cache::new(&cfg(100));
        let r = reply("www.example.com.", 300);
        let s = wire::scan_response(&r).unwrap();
        let t0 = Instant::now();
        c.insert(&key("www.example.com"), &r, &s, t0);
        let mut out = Vec::new();
        let client = wire::dotted_to_wire("WWW.Example.Com");
        let hit = c
            .get_into(
                &key("www.example.com"),
                &mut out,
                4242,
                &client,
                t0 + Duration::from_millis(2500),
            )
            .unwrap();
        assert!(!hit.has_cname);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.queries[0].name().to_ascii(), "WWW.Example.Com.");
        assert_eq!(m.answers[0].ttl, 298);
        // Owner names compress to the question, so they follow its case too.
        assert_eq!(m.answers[0].name.to_ascii(), "WWW.Example.Com.");
        assert!(
            c.get_into(
                &key("www.example.com"),
                &mut out,
                1,
                &client,
                t0 + Duration::from_secs(300)
            )
            .is_none()
        );
        assert!(
            c.get_into(&key("other.example.com"), &mut out, 1, &client, t0)
                .is_none()
        );
    }

    #[test]
    fn negative_answers_use_soa_minimum() {
        let c = Cache::new(&cfg(100));
        let mut m = Message::response(1, OpCode::Query);
        m.metadata.response_code = hickory_proto::op::ResponseCode::NXDomain;
        let n = Name::from_ascii("nope.example.").unwrap();
        m.add_query(Query::query(n, RecordType::A));
        let soa = SOA::new(
            Name::from_ascii("ns.").unwrap(),
            Name::from_ascii("h.").unwrap(),
            1,
            2,
            3,
            4,
            60,
        );
        m.add_authority(Record::from_rdata(
            Name::from_ascii("example.").unwrap(),
            3600,
            RData::SOA(soa),
        ));
        let b = m.to_vec().unwrap();
        let s = wire::scan_response(&b).unwrap();
        assert_eq!(c.ttl_for(&s), Some(60));
        let t0 = Instant::now();
        c.insert(&key("nope.example"), &b, &s, t0);
        let mut out = Vec::new();
        c.get_into(
            &key("nope.example"),
            &mut out,
            5,
            &wire::dotted_to_wire("nope.example"),
            t0 + Duration::from_secs(10),
        )
        .unwrap();
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.authorities[0].ttl, 50);
        assert!(
            c.get_into(
                &key("nope.example"),
                &mut out,
                5,
                b"\x00",
                t0 + Duration::from_secs(60)
            )
            .is_none()
        );
    }

    #[test]
    fn servfail_truncated_and_zero_ttl_are_not_cached() {
        let c = Cache::new(&cfg(100));
        let mut r = reply("a.example.", 300);
        r[3] = (r[3] & 0xf0) | 2;
        assert_eq!(c.ttl_for(&wire::scan_response(&r).unwrap()), None);
        let mut r = reply("a.example.", 300);
        r[2] |= 0x02;
        assert_eq!(c.ttl_for(&wire::scan_response(&r).unwrap()), None);
        let r = reply("a.example.", 0);
        assert_eq!(c.ttl_for(&wire::scan_response(&r).unwrap()), None);
        let r = reply("a.example.", 1_000_000);
        assert_eq!(c.ttl_for(&wire::scan_response(&r).unwrap()), Some(86_400));
    }

    #[test]
    fn stale_entries_within_the_window_get_ttl_30() {
        let c = Cache::new(&cfg(100));
        let r = reply("stale.example.", 300);
        let s = wire::scan_response(&r).unwrap();
        let t0 = Instant::now();
        let k = key("stale.example");
        c.insert(&k, &r, &s, t0);
        let client = wire::dotted_to_wire("Stale.Example");
        let mut out = Vec::new();
        let window = Duration::from_secs(3600);
        let expired = t0 + Duration::from_secs(301);
        assert!(c.get_into(&k, &mut out, 1, &client, expired).is_none());
        let hit = c
            .get_stale_into(&k, &mut out, 77, &client, expired, window)
            .expect("stale within the window");
        assert!(!hit.has_cname);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 77);
        assert_eq!(m.queries[0].name().to_ascii(), "Stale.Example.");
        assert_eq!(m.answers[0].ttl, STALE_TTL);
        // Still fresh: aged as usual, not 30.
        c.get_stale_into(
            &k,
            &mut out,
            1,
            &client,
            t0 + Duration::from_secs(10),
            window,
        )
        .unwrap();
        assert_eq!(Message::from_vec(&out).unwrap().answers[0].ttl, 290);
        // Past the window, or with serve-stale off: nothing.
        let late = t0 + Duration::from_secs(300) + window;
        assert!(
            c.get_stale_into(&k, &mut out, 1, &client, late, window)
                .is_none()
        );
        assert!(
            c.get_stale_into(&k, &mut out, 1, &client, expired, Duration::ZERO)
                .is_none()
        );
        assert!(
            c.get_stale_into(&key("other.example"), &mut out, 1, &client, expired, window)
                .is_none()
        );
    }

    #[test]
    fn bounded_with_clock_eviction() {
        let c = Cache::new(&cfg(SHARDS * 2));
        let t0 = Instant::now();
        for i in 0..10_000 {
            let name = format!("n{i}.example.");
            let r = reply(&name, 300);
            c.insert(&key(&name), &r, &wire::scan_response(&r).unwrap(), t0);
        }
        assert!(c.len() <= SHARDS * 2);
        let disabled = Cache::new(&cfg(0));
        let r = reply("x.", 300);
        disabled.insert(&key("x"), &r, &wire::scan_response(&r).unwrap(), t0);
        assert_eq!(disabled.len(), 0);
    }
}
