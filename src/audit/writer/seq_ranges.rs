//! Sets of seqs as ranges: the seqs producers lost to a full queue, until
//! the writer closes each run with one `lost` record.

/// Sets of seqs as sorted, disjoint, non-adjacent inclusive ranges.
/// Producers lose seqs nearly in order, so the set stays a handful of
/// ranges however many records a stalled writer costs.
#[derive(Default, Debug, PartialEq, Eq)]
pub(super) struct SeqRanges(pub(super) Vec<(u64, u64)>);

impl SeqRanges {
    pub(super) fn insert(&mut self, a: u64, b: u64) {
        let v = &mut self.0;
        // Seqs stay below 2^63, so `+ 1` cannot overflow.
        // First range that touches or follows [a, b]…
        let i = v.partition_point(|r| r.1 + 1 < a);
        // …and first range wholly after it.
        let j = v.partition_point(|r| r.0 <= b + 1);
        if i == j {
            v.insert(i, (a, b));
        } else {
            let merged = (a.min(v[i].0), b.max(v[j - 1].1));
            v.splice(i..j, [merged]);
        }
    }

    pub(super) fn first(&self) -> Option<(u64, u64)> {
        self.0.first().copied()
    }

    pub(super) fn pop_first(&mut self) {
        if !self.0.is_empty() {
            self.0.remove(0);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::SeqRanges;

    fn of(seqs: &[u64]) -> SeqRanges {
        let mut r = SeqRanges::default();
        for &s in seqs {
            r.insert(s, s);
        }
        r
    }

    #[test]
    fn merges_in_any_order() {
        assert_eq!(of(&[5, 6, 7]).0, vec![(5, 7)]);
        assert_eq!(of(&[7, 5, 6]).0, vec![(5, 7)]);
        assert_eq!(of(&[9, 5, 7]).0, vec![(5, 5), (7, 7), (9, 9)]);
        assert_eq!(of(&[9, 5, 7, 6, 8]).0, vec![(5, 9)]);
        assert_eq!(of(&[1, 3, 2, 3, 10]).0, vec![(1, 3), (10, 10)]);
        let mut r = of(&[1, 5, 9]);
        r.insert(2, 8);
        assert_eq!(r.0, vec![(1, 9)]);
        r.insert(11, 12);
        r.insert(0, 0);
        assert_eq!(r.0, vec![(0, 9), (11, 12)]);
        r.pop_first();
        assert_eq!(r.first(), Some((11, 12)));
    }
}
