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

/// Per-client limits (`[limits]`); 0 = off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitsConfig {
    pub qps_per_client: u32,
    /// Resolved: `qps_per_client` when not set.
    pub qps_burst: u32,
    pub tcp_connections_per_client: usize,
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
        if cfg.qps_per_client == 0 {
            return None;
        }
        // `qps_burst` comes resolved from the config; 0 here still means "one second's worth".
        let burst = u64::from(if cfg.qps_burst == 0 {
            cfg.qps_per_client
        } else {
            cfg.qps_burst
        });
        Some(QpsLimiter {
            rate: u64::from(cfg.qps_per_client),
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
        let key = client_key(ip);
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
        }
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
