//! A blocked Bloom filter over every name that has a rule, stored in the
//! snapshot. It lets a lookup answer "no rule" for most unlisted names
//! without walking the fst, and tells a hit how many labels deep the walk
//! needs to go. It never decides a match: a positive is always confirmed
//! by the fst, so a false positive costs time, never a wrong block.
//!
//! Each key sets `PROBES` bits inside one 512-bit block (one cache line),
//! so a probe touches one line. The hash is FNV-1a over the reversed-label
//! key bytes (so it can be extended label by label while a query name is
//! read from its end) and a splitmix64 finaliser; both are fixed here
//! because the filter is persisted.

pub(crate) const BLOCK_BYTES: usize = 64;
const BLOCK_BITS: u64 = 512;
const PROBES: u32 = 7;
/// Bits of filter per distinct name (≈1% false positives per probe).
pub(crate) const BITS_PER_KEY: usize = 10;

pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline]
pub(crate) fn fnv(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
}

#[inline]
fn finish(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of a whole reversed-label key (without the scope byte).
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(FNV_OFFSET, |h, &b| fnv(h, b))
}

/// Filter size in bytes for `keys` distinct names (0 keys → 0 bytes).
pub(crate) fn size_for(keys: usize) -> usize {
    let blocks = (keys * BITS_PER_KEY).div_ceil(BLOCK_BITS as usize);
    blocks * BLOCK_BYTES
}

#[inline]
fn positions(h: u64, blocks: usize) -> (usize, u64) {
    let h = finish(h);
    let block = (((h >> 32) * blocks as u64) >> 32) as usize;
    (block * BLOCK_BYTES, h)
}

/// Insert the (unfinished) FNV hash `h` into `filter`.
pub(crate) fn insert(filter: &mut [u8], h: u64) {
    let blocks = filter.len() / BLOCK_BYTES;
    if blocks == 0 {
        return;
    }
    let (base, mut bits) = positions(h, blocks);
    for _ in 0..PROBES {
        let bit = (bits % BLOCK_BITS) as usize;
        filter[base + bit / 8] |= 1 << (bit % 8);
        bits = bits.rotate_right(9);
    }
}

/// May `h` be in the filter? An empty filter holds nothing.
#[inline]
pub(crate) fn may_contain(filter: &[u8], h: u64) -> bool {
    let blocks = filter.len() / BLOCK_BYTES;
    if blocks == 0 {
        return false;
    }
    let (base, mut bits) = positions(h, blocks);
    let block = &filter[base..base + BLOCK_BYTES];
    for _ in 0..PROBES {
        let bit = (bits % BLOCK_BITS) as usize;
        if block[bit / 8] & (1 << (bit % 8)) == 0 {
            return false;
        }
        bits = bits.rotate_right(9);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("com.name{i}")).collect();
        let mut f = vec![0u8; size_for(keys.len())];
        for k in &keys {
            insert(&mut f, key_hash(k.as_bytes()));
        }
        for k in &keys {
            assert!(may_contain(&f, key_hash(k.as_bytes())), "{k}");
        }
        let fp = (0..20_000)
            .filter(|i| may_contain(&f, key_hash(format!("org.other{i}").as_bytes())))
            .count();
        assert!(fp < 20_000 / 25, "{fp} false positives of 20000");
        assert!(!may_contain(&[], key_hash(b"com")));
    }
}
