//! Coalitions: which units are kept.

use std::fmt;

/// A set of kept units out of `n`, as a bitset (any `n`, not only up to 64).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Coalition {
    n: usize,
    words: Vec<u64>,
}

impl Coalition {
    /// No unit kept.
    pub fn empty(n: usize) -> Self {
        Self {
            n,
            words: vec![0; n.div_ceil(64)],
        }
    }

    /// Every unit kept.
    pub fn full(n: usize) -> Self {
        let mut c = Self::empty(n);
        for i in 0..n {
            c.insert(i);
        }
        c
    }

    /// The coalition whose members are the set bits of `mask` (`n ≤ 64`).
    pub fn from_mask(n: usize, mask: u64) -> Self {
        assert!(n <= 64, "from_mask needs n ≤ 64");
        let mut c = Self::empty(n);
        if n > 0 {
            c.words[0] = if n == 64 {
                mask
            } else {
                mask & ((1u64 << n) - 1)
            };
        }
        c
    }

    /// The coalition of the given members.
    pub fn from_members(n: usize, members: impl IntoIterator<Item = usize>) -> Self {
        let mut c = Self::empty(n);
        for i in members {
            c.insert(i);
        }
        c
    }

    /// The coalition keeping unit `i` where `kept[i]` (the plain-data form other crates,
    /// such as the metrics' plans, use).
    pub fn from_kept(kept: &[bool]) -> Self {
        Self::from_members(kept.len(), (0..kept.len()).filter(|&i| kept[i]))
    }

    /// Number of units the coalition is over (kept or not).
    pub fn universe(&self) -> usize {
        self.n
    }

    pub fn contains(&self, i: usize) -> bool {
        i < self.n && self.words[i / 64] >> (i % 64) & 1 == 1
    }

    pub fn insert(&mut self, i: usize) {
        assert!(i < self.n, "unit {i} out of {}", self.n);
        self.words[i / 64] |= 1 << (i % 64);
    }

    pub fn remove(&mut self, i: usize) {
        assert!(i < self.n, "unit {i} out of {}", self.n);
        self.words[i / 64] &= !(1 << (i % 64));
    }

    pub fn with(&self, i: usize) -> Self {
        let mut c = self.clone();
        c.insert(i);
        c
    }

    pub fn without(&self, i: usize) -> Self {
        let mut c = self.clone();
        c.remove(i);
        c
    }

    /// Number of kept units.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Kept units in increasing order.
    pub fn members(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.n).filter(|&i| self.contains(i))
    }

    /// The complement (units not kept).
    pub fn complement(&self) -> Self {
        let mut c = Self::full(self.n);
        for (w, own) in c.words.iter_mut().zip(&self.words) {
            *w &= !own;
        }
        c
    }
}

impl fmt::Debug for Coalition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits: String = (0..self.n)
            .map(|i| if self.contains(i) { '1' } else { '0' })
            .collect();
        write!(f, "{{{bits}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_beyond_64_units() {
        let mut c = Coalition::empty(130);
        c.insert(0);
        c.insert(64);
        c.insert(129);
        assert_eq!(c.len(), 3);
        assert_eq!(c.members().collect::<Vec<_>>(), vec![0, 64, 129]);
        assert!(c.contains(64) && !c.contains(65) && !c.contains(500));
        assert_eq!(c.complement().len(), 127);
        assert_eq!(c.without(64).len(), 2);
        assert_eq!(Coalition::full(3), Coalition::from_mask(3, 0b111));
        assert_eq!(
            Coalition::from_mask(3, 0xff).len(),
            3,
            "bits beyond n are ignored"
        );
        assert_eq!(
            format!("{:?}", Coalition::from_members(4, [1, 3])),
            "{0101}"
        );
    }
}
