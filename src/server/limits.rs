//! Per-client limits (`[limits]`): a token bucket per client for queries,
//! and a count of open TCP connections per client.
//!
//! A client is an IPv4 address or an IPv6 /64 (a subscriber usually gets a
//! whole /64 or more, so per-address limits would be trivial to dodge).
//!
//! The query limiter sits on the UDP hot path, so it never allocates and
//! its memory is fixed: a set-associative table of [`TABLE_SIZE`] buckets
//! (sets of [`WAYS`], each behind its own mutex, so workers almost never
//! contend). A client not in its set takes the least recently seen way.
//! Under a flood from more sources than the table holds (spoofed UDP), a
//! bucket may be evicted and come back full: the limit then errs on the
//! lenient side for some clients, but memory stays bounded and no client
//! is ever limited for another's traffic.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Per-client and per-zone limits (`[limits]`); 0 = off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    pub qps_per_client: u32,
    /// Resolved: `qps_per_client` when not set.
    pub qps_burst: u32,
    pub tcp_connections_per_client: usize,
    /// Queries per second one zone may send upstream (Unbound's
    /// `ratelimit`); 0 = off.
    pub upstream_qps_per_zone: u32,
    /// Over the zone limit, one query in this many still goes upstream
    /// so the zone recovers when the attack stops (Unbound's
    /// `ratelimit-factor`); 0 = none.
    pub upstream_ratelimit_factor: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            qps_per_client: 0,
            qps_burst: 0,
            tcp_connections_per_client: 0,
            upstream_qps_per_zone: 0,
            upstream_ratelimit_factor: 10,
        }
    }
}

/// Buckets in the query limiter (32 bytes each: 2 MiB in all).
pub(crate) const TABLE_SIZE: usize = 65_536;
/// Ways per set: a client competes for a slot with this many others.
pub(crate) const WAYS: usize = 8;
const SETS: usize = TABLE_SIZE / WAYS;
/// Token amounts are in thousandths, so any rate refills exactly per ms.
const MILLI: u64 = 1000;

/// The client key: IPv4 addresses whole (as their IPv4-mapped IPv6 form),
/// IPv6 cut to the /64. Never 0 (0 marks an empty bucket).
pub(crate) fn client_key(ip: IpAddr) -> u128 {
    let k = match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1),
    };
    k.max(1)
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    key: u128,
    /// Milli-tokens left.
    tokens: u64,
    /// Milliseconds since the limiter's epoch at the last refill.
    last_ms: u64,
}

/// The token buckets of `qps_per_client`.
pub(crate) struct QpsLimiter {
    /// Milli-tokens added per millisecond (= queries per second).
    rate: u64,
    /// Bucket size in milli-tokens.
    cap: u64,
    sets: Box<[Mutex<[Bucket; WAYS]>]>,
    /// Spreads keys over sets; random per process so a flood cannot aim
    /// at one set from addresses chosen in advance.
    seed: u64,
    epoch: Instant,
    /// Queries refused by the limiter.
    pub limited: AtomicU64,
}

impl QpsLimiter {
    /// `None` when the limit is off.
    pub(crate) fn new(cfg: &LimitsConfig) -> Option<QpsLimiter> {
        // `qps_burst` comes resolved from the config; 0 here still means "one second's worth".
        QpsLimiter::with_rate(cfg.qps_per_client, cfg.qps_burst)
    }

    /// Buckets of `rate` per second holding `burst` (0: `rate`); `None`
    /// when `rate` is 0.
    pub(crate) fn with_rate(rate: u32, burst: u32) -> Option<QpsLimiter> {
        if rate == 0 {
            return None;
        }
        let burst = u64::from(if burst == 0 { rate } else { burst });
        Some(QpsLimiter {
            rate: u64::from(rate),
            cap: burst * MILLI,
            sets: (0..SETS)
                .map(|_| Mutex::new([Bucket::default(); WAYS]))
                .collect(),
            seed: rand::random::<u64>() | 1,
            epoch: Instant::now(),
            limited: AtomicU64::new(0),
        })
    }

    fn set_of(&self, key: u128) -> usize {
        // A multiply-xorshift mix: cheap, and the seed keeps it unpredictable.
        let mut h = (key as u64) ^ ((key >> 64) as u64).rotate_left(29) ^ self.seed;
        h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 31;
        (h as usize) % SETS
    }

    /// Take one query's token for `ip` at `now`; false when over the limit.
    pub(crate) fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        self.allow_key(client_key(ip), now)
    }

    /// Take one token from the bucket of `key` (never 0).
    pub(crate) fn allow_key(&self, key: u128, now: Instant) -> bool {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let mut set = self.sets[self.set_of(key)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let way = match set.iter().position(|b| b.key == key) {
            Some(i) => i,
            None => {
                // An empty way has key 0 and so the smallest `last_ms` of
                // all only if never used; prefer it explicitly.
                let i = set
                    .iter()
                    .position(|b| b.key == 0)
                    .unwrap_or_else(|| oldest(&set));
                set[i] = Bucket {
                    key,
                    tokens: self.cap,
                    last_ms: now_ms,
                };
                i
            }
        };
        let b = &mut set[way];
        let elapsed = now_ms.saturating_sub(b.last_ms);
        b.tokens = b
            .tokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.cap);
        b.last_ms = b.last_ms.max(now_ms);
        if b.tokens >= MILLI {
            b.tokens -= MILLI;
            true
        } else {
            drop(set);
            self.limited.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// `limits.upstream_qps_per_zone`: a token bucket per zone for the
/// queries that would go upstream, in the same fixed table as the client
/// buckets (a flood naming more zones than it holds makes the limit
/// lenient for some, never unbounded in memory).
pub(crate) struct ZoneLimiter {
    buckets: QpsLimiter,
    /// Zone cuts below registered domains, learned from the SOA owners of
    /// negative answers (`a.b.victim.org` answered from zone
    /// `b.victim.org`); at most [`MAX_LEARNED_CUTS`].
    cuts: std::sync::RwLock<std::collections::HashSet<Box<[u8]>>>,
    factor: u64,
    /// Queries over the limit so far; every `factor`-th goes through.
    over: AtomicU64,
    /// Random per process: which zones share a bucket set is not
    /// predictable from outside.
    seed: u64,
}

/// Zone cuts the limiter remembers (a flood could otherwise make it learn
/// without bound); beyond this, names count against their registered
/// domain.
pub(crate) const MAX_LEARNED_CUTS: usize = 10_000;

/// What the zone limit says about one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ZoneVerdict {
    /// Within the limit.
    Pass,
    /// Over the limit, but this is the one in `factor` let through.
    Probe,
    /// Over the limit: answer SERVFAIL here.
    Limited,
}

impl ZoneLimiter {
    /// `None` when `upstream_qps_per_zone` is 0.
    pub(crate) fn new(cfg: &LimitsConfig) -> Option<ZoneLimiter> {
        Some(ZoneLimiter {
            buckets: QpsLimiter::with_rate(cfg.upstream_qps_per_zone, 0)?,
            cuts: std::sync::RwLock::new(std::collections::HashSet::new()),
            factor: u64::from(cfg.upstream_ratelimit_factor),
            over: AtomicU64::new(0),
            seed: rand::random(),
        })
    }

    /// The zone `name` (lowercase dotted) is counted against: the deepest
    /// learned cut above it, else its registered domain.
    pub(crate) fn zone_of<'a>(&self, name: &'a [u8]) -> &'a [u8] {
        let registered = registered_zone(name);
        let cuts = self.cuts.read().unwrap_or_else(PoisonError::into_inner);
        if cuts.is_empty() {
            return registered;
        }
        let mut candidate = name;
        while candidate.len() > registered.len() {
            if cuts.contains(candidate) {
                return candidate;
            }
            match candidate.iter().position(|&b| b == b'.') {
                Some(dot) => candidate = &candidate[dot + 1..],
                None => break,
            }
        }
        registered
    }

    /// An answer for `qname` came from the zone `owner` (its SOA owner,
    /// both lowercase dotted): remember the cut when it lies below the
    /// registered domain. Only ancestors of the name asked are taken, so
    /// an answer can only split the zone it was asked about.
    pub(crate) fn learn(&self, qname: &[u8], owner: &[u8]) {
        let registered = registered_zone(qname);
        let ancestor = qname == owner
            || (qname.len() > owner.len()
                && qname.ends_with(owner)
                && qname[qname.len() - owner.len() - 1] == b'.');
        if !ancestor || owner.len() <= registered.len() {
            return;
        }
        if self
            .cuts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(owner)
        {
            return;
        }
        let mut cuts = self.cuts.write().unwrap_or_else(PoisonError::into_inner);
        if cuts.len() < MAX_LEARNED_CUTS {
            cuts.insert(owner.into());
        }
    }

    /// Count one query for `zone` (lowercase dotted) at `now`.
    pub(crate) fn check(&self, zone: &[u8], now: Instant) -> ZoneVerdict {
        if self.buckets.allow_key(self.key(zone), now) {
            return ZoneVerdict::Pass;
        }
        let n = self.over.fetch_add(1, Ordering::Relaxed);
        if self.factor > 0 && n % self.factor == 0 {
            ZoneVerdict::Probe
        } else {
            ZoneVerdict::Limited
        }
    }

    fn key(&self, zone: &[u8]) -> u128 {
        // Two seeded 64-bit FNV-1a-style passes: distinct zones collide
        // with odds of 2^-128.
        let mut a: u64 = 0xcbf2_9ce4_8422_2325 ^ self.seed;
        let mut b: u64 = 0x8422_2325_cbf2_9ce4 ^ self.seed.rotate_left(32);
        for &c in zone {
            a = (a ^ u64::from(c)).wrapping_mul(0x100_0000_01b3);
            b = (b ^ u64::from(c)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        ((u128::from(a) << 64) | u128::from(b)).max(1)
    }
}

/// The zone a name's upstream traffic is counted against: its registered
/// domain (one label below the public suffix, from the embedded Public
/// Suffix List), or the name itself when it is a public suffix.
pub(crate) fn registered_zone(name: &[u8]) -> &[u8] {
    psl::domain(name).map_or(name, |d| d.as_bytes())
}

fn oldest(set: &[Bucket; WAYS]) -> usize {
    let mut best = 0;
    for (i, b) in set.iter().enumerate() {
        if b.last_ms < set[best].last_ms {
            best = i;
        }
    }
    best
}

/// Open TCP connections per client (`tcp_connections_per_client`). Only
/// consulted on accept, never per query; the map holds one entry per
/// client with a connection open, so it is bounded by
/// `server.tcp_max_connections` (a slot is taken after the global permit).
pub(crate) struct ConnLimiter {
    max: usize,
    open: Mutex<HashMap<u128, usize>>,
    /// Connections closed at once because their client had `max` open.
    pub limited: AtomicU64,
}

/// One open connection's share of its client's count; released on drop.
pub(crate) struct ConnSlot {
    limiter: Arc<ConnLimiter>,
    key: u128,
}

impl ConnLimiter {
    /// `None` when the limit is off.
    pub(crate) fn new(cfg: &LimitsConfig) -> Option<Arc<ConnLimiter>> {
        (cfg.tcp_connections_per_client > 0).then(|| {
            Arc::new(ConnLimiter {
                max: cfg.tcp_connections_per_client,
                open: Mutex::new(HashMap::new()),
                limited: AtomicU64::new(0),
            })
        })
    }

    /// A slot for a new connection from `ip`, or `None` at the limit.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            drop(open);
            self.limited.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            limiter: self.clone(),
            key,
        })
    }

    /// Connections open now from `ip`'s client.
    #[cfg(test)]
    pub(crate) fn open_for(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&client_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = self
            .limiter
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Keeps the map as small as the set of connected clients.
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(qps: u32, burst: u32, conns: usize) -> LimitsConfig {
        LimitsConfig {
            qps_per_client: qps,
            qps_burst: if burst == 0 { qps } else { burst },
            tcp_connections_per_client: conns,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn zones_are_registered_domains() {
        for (name, zone) in [
            ("a.b.victim.org", "victim.org"),
            ("victim.org", "victim.org"),
            ("x1.victim.co.uk", "victim.co.uk"),
            ("foo.blogspot.com", "foo.blogspot.com"),
            ("r4nd0m.dead.example", "dead.example"),
            ("org", "org"),
            ("", ""),
        ] {
            assert_eq!(registered_zone(name.as_bytes()), zone.as_bytes(), "{name}");
        }
    }

    #[test]
    fn deeper_zones_are_learned_from_soa_owners() {
        let cfg = LimitsConfig {
            upstream_qps_per_zone: 10,
            ..LimitsConfig::default()
        };
        let l = ZoneLimiter::new(&cfg).unwrap();
        assert_eq!(l.zone_of(b"x.dyn.victim.org"), b"victim.org");
        l.learn(b"x.dyn.victim.org", b"dyn.victim.org");
        assert_eq!(l.zone_of(b"y.dyn.victim.org"), b"dyn.victim.org");
        assert_eq!(l.zone_of(b"dyn.victim.org"), b"dyn.victim.org");
        assert_eq!(l.zone_of(b"www.victim.org"), b"victim.org");
        // Not an ancestor of the name asked, or not below its registered
        // domain: ignored.
        l.learn(b"x.other.org", b"dyn.victim.org");
        l.learn(b"a.b.other.org", b"org");
        l.learn(b"a.b.other.org", b"other.org");
        l.learn(b"a.b.other.org", b"c.other.org");
        assert_eq!(l.zone_of(b"a.b.other.org"), b"other.org");
        assert_eq!(l.cuts.read().unwrap().len(), 1);
    }

    #[test]
    fn zone_limit_passes_the_rate_and_probes_one_in_factor() {
        let cfg = LimitsConfig {
            upstream_qps_per_zone: 10,
            upstream_ratelimit_factor: 4,
            ..LimitsConfig::default()
        };
        let l = ZoneLimiter::new(&cfg).unwrap();
        let t0 = Instant::now() + Duration::from_secs(1);
        let verdicts: Vec<_> = (0..30).map(|_| l.check(b"victim.org", t0)).collect();
        let count = |v| verdicts.iter().filter(|&&x| x == v).count();
        assert_eq!(count(ZoneVerdict::Pass), 10, "one second's worth");
        assert_eq!(count(ZoneVerdict::Probe), 5, "one in 4 of the 20 over");
        assert_eq!(count(ZoneVerdict::Limited), 15);
        // Another zone has its own bucket.
        assert_eq!(l.check(b"fine.org", t0), ZoneVerdict::Pass);
        // Refilled at the rate.
        assert_eq!(
            l.check(b"victim.org", t0 + Duration::from_millis(150)),
            ZoneVerdict::Pass
        );
        let none = LimitsConfig {
            upstream_ratelimit_factor: 0,
            ..cfg
        };
        let l = ZoneLimiter::new(&none).unwrap();
        let through = (0..100)
            .filter(|_| l.check(b"victim.org", t0) != ZoneVerdict::Limited)
            .count();
        assert_eq!(through, 10, "factor 0: nothing beyond the rate");
        assert!(ZoneLimiter::new(&LimitsConfig::default()).is_none());
    }

    #[test]
    fn keys_group_ipv6_by_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(v4), client_key(mapped));
        assert_ne!(client_key(v4), client_key("192.0.2.2".parse().unwrap()));
        assert_ne!(client_key("::".parse().unwrap()), 0);
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let l = QpsLimiter::new(&cfg(10, 5, 0)).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = l.epoch + Duration::from_secs(1);
        let allowed = (0..20).filter(|_| l.allow(ip, t0)).count();
        assert_eq!(allowed, 5, "the burst");
        assert_eq!(l.limited.load(Ordering::Relaxed), 15);
        // 10 qps: one token per 100 ms.
        assert!(!l.allow(ip, t0 + Duration::from_millis(50)));
        assert!(l.allow(ip, t0 + Duration::from_millis(150)));
        assert!(!l.allow(ip, t0 + Duration::from_millis(160)));
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| l.allow(ip, later)).count(), 5);
        // Another client is not affected.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(l.allow(other, t0));
        // Time going backwards (another worker's older `now`) is harmless.
        assert!(!l.allow(ip, t0));
    }

    #[test]
    fn table_stays_bounded_under_a_spoofed_flood() {
        let l = QpsLimiter::new(&cfg(1, 1, 0)).unwrap();
        let t0 = l.epoch + Duration::from_secs(1);
        let victim: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(l.allow(victim, t0));
        assert!(!l.allow(victim, t0));
        for i in 0..(4 * TABLE_SIZE as u32) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.allow(ip, t0 + Duration::from_millis(1));
        }
        // Evicted (lenient) or still limited; either way no panic, no growth.
        assert_eq!(l.sets.len() * WAYS, TABLE_SIZE);
        let _ = l.allow(victim, t0 + Duration::from_millis(2));
    }

    #[test]
    fn off_when_zero() {
        assert!(QpsLimiter::new(&cfg(0, 0, 0)).is_none());
        assert!(ConnLimiter::new(&cfg(0, 0, 0)).is_none());
    }

    #[test]
    fn connection_slots_per_client() {
        let l = ConnLimiter::new(&cfg(0, 0, 2)).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.try_acquire(a).unwrap();
        let s2 = l.try_acquire(a).unwrap();
        assert!(l.try_acquire(a).is_none());
        assert_eq!(l.limited.load(Ordering::Relaxed), 1);
        let _s3 = l.try_acquire(b).unwrap();
        drop(s1);
        let _s4 = l.try_acquire(a).unwrap();
        drop(s2);
        assert_eq!(l.open_for(a), 1);
        drop(_s4);
        assert_eq!(l.open_for(a), 0);
        assert!(!l.open.lock().unwrap().contains_key(&client_key(a)));
    }
}
