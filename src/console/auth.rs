//! HTTP Basic authentication against bcrypt hashes, as Prometheus's web
//! configuration does it, with two roles, a short-lived cache of verified
//! credentials and a per-address limit on failed attempts.
//!
//! bcrypt is slow on purpose (cost 12 ≈ a quarter of a second), so a
//! verified `Authorization` header is remembered for `auth_cache_secs`,
//! keyed by its SHA-256: the cache never holds a password, and a lookup
//! by digest leaks nothing useful about other entries. A wrong password
//! for an unknown user still costs one bcrypt run, so timing does not tell
//! which user names exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::config::ConsoleUser;

/// What a user may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including client addresses.
    Auditor,
    /// Everything but client addresses (shown as /24 and /48 prefixes) and
    /// no search by client.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Auditor => "auditor",
            Role::Viewer => "viewer",
        }
    }
}

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No or wrong credentials: 401 with a Basic challenge.
    Unauthorized,
    /// Too many failures from this address: 429, retry after this long.
    TooMany(Duration),
}

/// Failed attempts are counted in windows of this length.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Entries kept in each table before expired ones are swept (and, if
/// still full, everything is dropped: a flood must not grow memory).
const MAX_ENTRIES: usize = 4096;

#[derive(Debug)]
pub struct Authenticator {
    users: HashMap<String, ConsoleUser>,
    /// A real hash to check unknown users against (equal cost).
    decoy: Option<String>,
    ttl: Duration,
    max_failures: u32,
    cache: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The user and password of a `Basic` authorization header.
pub fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let s = std::str::from_utf8(header).ok()?;
    let (scheme, rest) = s.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

impl Authenticator {
    pub fn new(users: &[ConsoleUser], ttl: Duration, max_failures: u32) -> Authenticator {
        Authenticator {
            users: users.iter().map(|u| (u.name.clone(), u.clone())).collect(),
            decoy: users.first().map(|u| u.hash.clone()),
            ttl,
            max_failures,
            cache: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Checks one request's `Authorization` header (None: absent). Runs
    /// bcrypt on a blocking thread when the credential is not cached.
    pub async fn check(&self, peer: IpAddr, header: Option<&[u8]>) -> Result<Principal, Denied> {
        let Some(header) = header else {
            // A browser's first request carries no credentials: not a failure.
            return Err(Denied::Unauthorized);
        };
        let key: [u8; 32] = Sha256::digest(header).into();
        let now = Instant::now();
        if let Some((p, until)) = lock(&self.cache).get(&key) {
            if *until > now {
                return Ok(p.clone());
            }
        }
        if let Some(wait) = self.blocked(peer, now) {
            return Err(Denied::TooMany(wait));
        }
        let verified = match parse_basic(header) {
            Some((user, password)) => {
                let (hash, known) = match self.users.get(&user) {
                    Some(u) => (Some(u.hash.clone()), Some(u.clone())),
                    None => (self.decoy.clone(), None),
                };
                let ok = match hash {
                    Some(h) => tokio::task::spawn_blocking(move || {
                        bcrypt::verify(password.as_bytes(), &h).unwrap_or(false)
                    })
                    .await
                    .unwrap_or(false),
                    None => false,
                };
                known.filter(|_| ok)
            }
            None => None,
        };
        match verified {
            Some(u) => {
                let p = Principal {
                    user: u.name,
                    role: u.role,
                };
                let mut cache = lock(&self.cache);
                if cache.len() >= MAX_ENTRIES {
                    cache.retain(|_, (_, until)| *until > now);
                    if cache.len() >= MAX_ENTRIES {
                        cache.clear();
                    }
                }
                cache.insert(key, (p.clone(), now + self.ttl));
                Ok(p)
            }
            None => {
                self.fail(peer, now);
                Err(Denied::Unauthorized)
            }
        }
    }

    /// How long `peer` must wait, if it has used up its failures.
    fn blocked(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let f = lock(&self.failures);
        let (count, since) = f.get(&bucket(peer))?;
        let ends = *since + FAILURE_WINDOW;
        (*count >= self.max_failures && ends > now).then(|| ends - now)
    }

    fn fail(&self, peer: IpAddr, now: Instant) {
        let mut f = lock(&self.failures);
        if f.len() >= MAX_ENTRIES {
            f.retain(|_, (_, since)| *since + FAILURE_WINDOW > now);
            if f.len() >= MAX_ENTRIES {
                f.clear();
            }
        }
        let e = f.entry(bucket(peer)).or_insert((0, now));
        if e.1 + FAILURE_WINDOW <= now {
            *e = (0, now);
        }
        e.0 += 1;
    }
}

/// Failures are counted per IPv4 address and per IPv6 /64: one host
/// usually holds a whole /64, and could otherwise rotate through it.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(a) => {
            let s = a.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// `sinkhole console hash-password`: a bcrypt hash of `password` at
/// `cost` (4..=31; 12 by default, as Prometheus's documentation suggests).
pub fn hash_password(password: &str, cost: u32) -> Result<String, String> {
    bcrypt::hash(password, cost).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> Vec<u8> {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        format!("Basic {b}").into_bytes()
    }

    #[test]
    fn basic_headers() {
        type Case<'a> = (&'a [u8], Option<(&'a str, &'a str)>);
        let table: &[Case] = &[
            (b"Basic YW5uOnNlY3JldA==", Some(("ann", "secret"))),
            (b"basic YW5uOnNlY3JldA==", Some(("ann", "secret"))),
            // A password may contain ':'.
            (b"Basic YW5uOmE6Yg==", Some(("ann", "a:b"))),
            (b"Bearer YW5uOnNlY3JldA==", None),
            (b"Basic !!!", None),
            (b"Basic YW5u", None),
            (b"", None),
        ];
        for &(h, want) in table {
            let got = parse_basic(h);
            assert_eq!(
                got.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
                want,
                "{h:?}"
            );
        }
    }

    #[tokio::test]
    async fn roles_cache_and_rate_limit() {
        let hash = hash_password("right", 4).unwrap();
        assert!(super::super::config::is_bcrypt(&hash), "{hash}");
        let users = [
            ConsoleUser {
                name: "ann".into(),
                hash: hash.clone(),
                role: Role::Auditor,
            },
            ConsoleUser {
                name: "bob".into(),
                hash,
                role: Role::Viewer,
            },
        ];
        let a = Authenticator::new(&users, Duration::from_secs(60), 3);
        let me: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(a.check(me, None).await, Err(Denied::Unauthorized));
        let ann = a.check(me, Some(&basic("ann", "right"))).await.unwrap();
        assert_eq!(ann.role, Role::Auditor);
        let bob = a.check(me, Some(&basic("bob", "right"))).await.unwrap();
        assert_eq!((bob.user.as_str(), bob.role), ("bob", Role::Viewer));
        // Three failures (wrong password, unknown user, garbage) use up the
        // allowance of this address only.
        for h in [
            basic("ann", "wrong"),
            basic("eve", "right"),
            b"Basic !!".to_vec(),
        ] {
            assert_eq!(a.check(me, Some(&h)).await, Err(Denied::Unauthorized));
        }
        assert!(matches!(
            a.check(me, Some(&basic("ann", "wrong"))).await,
            Err(Denied::TooMany(_))
        ));
        assert!(matches!(
            a.check(me, Some(&basic("bob", "new-header-same-user")))
                .await,
            Err(Denied::TooMany(_))
        ));
        // A credential verified before is still accepted from the cache.
        assert_eq!(a.check(me, Some(&basic("ann", "right"))).await, Ok(ann));
        assert_eq!(
            a.check(other, Some(&basic("ann", "wrong"))).await,
            Err(Denied::Unauthorized)
        );
        // IPv6: one /64 shares one allowance.
        for i in 1..=3u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i));
            assert_eq!(
                a.check(ip, Some(&basic("ann", "wrong"))).await,
                Err(Denied::Unauthorized)
            );
        }
        let same64: IpAddr = "2001:db8:0:1::99".parse().unwrap();
        let next64: IpAddr = "2001:db8:0:2::1".parse().unwrap();
        assert!(matches!(
            a.check(same64, Some(&basic("ann", "wrong"))).await,
            Err(Denied::TooMany(_))
        ));
        assert_eq!(
            a.check(next64, Some(&basic("ann", "wrong"))).await,
            Err(Denied::Unauthorized)
        );
    }
}
