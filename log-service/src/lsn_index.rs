//! A segment's in-memory index of its hot log: for every record it holds, where the record is
//! in the log file, ordered by LSN.
//!
//! Records nearly always arrive in LSN order (a writer's appends), and only gossip filling a hole
//! inserts below the end. So the index is a list of sorted chunks of at most [`CHUNK_ENTRIES`]
//! entries: a record above everything held is pushed onto the last chunk (no search, no node
//! allocation); a record filling a hole is inserted into the chunk it belongs to, which splits in
//! two when it overflows. Entries sit back to back, 32 bytes each, where a `BTreeMap` spends
//! about half as much again in node slack, and appends fault in a new page of memory only once
//! every 128 entries.
//!
//! # Invariants
//! - No chunk is empty, each is sorted by LSN without duplicates, and every LSN of a chunk is
//!   below every LSN of the next one.
//! - `len` is the total number of entries.

use crate::types::Lsn;

/// Entries in one chunk before it splits.
pub const CHUNK_ENTRIES: usize = 4096;

/// Where a record is in the hot log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub offset: u64,
    /// The record's backlink: the PG's previous record.
    pub prev: Lsn,
    pub len: u32,
}

#[derive(Debug, Default)]
pub struct LsnIndex {
    chunks: Vec<Vec<(Lsn, Entry)>>,
    len: usize,
}

impl LsnIndex {
    pub fn new() -> LsnIndex {
        LsnIndex::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The highest LSN held.
    pub fn last(&self) -> Option<Lsn> {
        self.chunks.last().and_then(|c| c.last()).map(|(l, _)| *l)
    }

    pub fn contains(&self, lsn: Lsn) -> bool {
        self.find(lsn).is_ok()
    }

    /// Adds `lsn` unless it is held already (the first copy wins). Returns whether it was added.
    pub fn insert(&mut self, lsn: Lsn, entry: Entry) -> bool {
        if self.last().is_none_or(|last| lsn > last) {
            match self.chunks.last_mut() {
                Some(chunk) if chunk.len() < CHUNK_ENTRIES => chunk.push((lsn, entry)),
                _ => {
                    let mut chunk = Vec::with_capacity(CHUNK_ENTRIES);
                    chunk.push((lsn, entry));
                    self.chunks.push(chunk);
                }
            }
            self.len += 1;
            return true;
        }
        let c = self.chunk_of(lsn);
        let chunk = &mut self.chunks[c];
        let Err(at) = chunk.binary_search_by_key(&lsn, |(l, _)| *l) else {
            return false;
        };
        chunk.insert(at, (lsn, entry));
        if chunk.len() > CHUNK_ENTRIES {
            let upper = chunk.split_off(chunk.len() / 2);
            self.chunks.insert(c + 1, upper);
        }
        self.len += 1;
        true
    }

    pub fn remove(&mut self, lsn: Lsn) -> Option<Entry> {
        let (c, at) = self.find(lsn).ok()?;
        let (_, entry) = self.chunks[c].remove(at);
        if self.chunks[c].is_empty() {
            self.chunks.remove(c);
        }
        self.len -= 1;
        Some(entry)
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(Lsn) -> bool) {
        for chunk in &mut self.chunks {
            chunk.retain(|(l, _)| keep(*l));
        }
        self.chunks.retain(|c| !c.is_empty());
        self.len = self.chunks.iter().map(Vec::len).sum();
    }

    /// Entries above `after`, in LSN order.
    pub fn above(&self, after: Lsn) -> impl Iterator<Item = (Lsn, Entry)> + '_ {
        let c = self.chunk_of(after);
        let start = self
            .chunks
            .get(c)
            .map_or(0, |chunk| chunk.partition_point(|(l, _)| *l <= after));
        self.chunks
            .get(c..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .flat_map(move |(i, chunk)| chunk[if i == 0 { start } else { 0 }..].iter().copied())
    }

    /// Entries in `(after, through]`, in LSN order.
    pub fn range(&self, after: Lsn, through: Lsn) -> impl Iterator<Item = (Lsn, Entry)> + '_ {
        self.above(after).take_while(move |(l, _)| *l <= through)
    }

    /// The highest LSN held at or below `lsn`.
    pub fn last_at_or_below(&self, lsn: Lsn) -> Option<Lsn> {
        let c = self.chunk_of(lsn);
        // Either in chunk `c` (whose last LSN is >= lsn) or the last of the chunk before it.
        if let Some(chunk) = self.chunks.get(c) {
            let n = chunk.partition_point(|(l, _)| *l <= lsn);
            if n > 0 {
                return Some(chunk[n - 1].0);
            }
        }
        c.checked_sub(1)
            .and_then(|p| self.chunks[p].last())
            .map(|(l, _)| *l)
    }

    /// The first chunk whose last LSN is at or above `lsn` (`chunks.len()` if none).
    fn chunk_of(&self, lsn: Lsn) -> usize {
        self.chunks
            .partition_point(|c| c.last().is_some_and(|(l, _)| *l < lsn))
    }

    /// `Ok((chunk, position))` of `lsn`, or `Err` if it is not held.
    fn find(&self, lsn: Lsn) -> Result<(usize, usize), ()> {
        let c = self.chunk_of(lsn);
        let chunk = self.chunks.get(c).ok_or(())?;
        chunk
            .binary_search_by_key(&lsn, |(l, _)| *l)
            .map(|at| (c, at))
            .map_err(|_| ())
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        let mut prev = None;
        for chunk in &self.chunks {
            assert!(!chunk.is_empty());
            assert!(chunk.len() <= CHUNK_ENTRIES);
            for (l, _) in chunk {
                assert!(prev.is_none_or(|p| p < *l), "sorted without duplicates");
                prev = Some(*l);
            }
        }
        assert_eq!(self.len, self.chunks.iter().map(Vec::len).sum::<usize>());
    }
}

#[cfg(test)]
mod tests {
    //! Proves the index behaves as a `BTreeMap` with first-copy-wins inserts, under random
    //! appends, hole fills, removals and retains, with chunk splits forced by a large run.
    use std::collections::BTreeMap;
    use std::ops::Bound;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn entry(n: u64) -> Entry {
        Entry {
            offset: n * 10,
            prev: Lsn(n / 2),
            len: n as u32,
        }
    }

    #[test]
    fn matches_a_btreemap_under_random_operations() {
        let seed = std::env::var("SIXFOLD_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        println!("seed {seed}: replay with SIXFOLD_TEST_SEED={seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut index = LsnIndex::new();
        let mut model = BTreeMap::new();
        let mut next = 1u64;
        for step in 0..60_000 {
            match rng.random_range(0..100) {
                // The writer's appends: mostly in order, sometimes skipping LSNs (holes).
                0..70 => {
                    next += rng.random_range(1..4);
                    let lsn = Lsn(next);
                    let added = index.insert(lsn, entry(next));
                    assert_eq!(added, !model.contains_key(&lsn));
                    model.entry(lsn).or_insert(entry(next));
                }
                // Gossip filling a hole, or a duplicate (the first copy must win).
                70..90 => {
                    let lsn = Lsn(rng.random_range(0..=next + 1));
                    let added = index.insert(lsn, entry(lsn.get() + 7));
                    assert_eq!(added, !model.contains_key(&lsn));
                    model.entry(lsn).or_insert(entry(lsn.get() + 7));
                }
                90..97 => {
                    let lsn = Lsn(rng.random_range(0..=next));
                    assert_eq!(index.remove(lsn), model.remove(&lsn));
                }
                97..99 => {
                    let (lo, hi) = (rng.random_range(0..=next), rng.random_range(0..=next));
                    let covered = |l: Lsn| l.get() > lo.min(hi) && l.get() <= lo.max(hi);
                    index.retain(|l| !covered(l));
                    model.retain(|l, _| !covered(*l));
                }
                _ => {}
            }
            if step % 997 == 0 {
                index.check_invariants();
            }
            let probe = Lsn(rng.random_range(0..=next + 1));
            assert_eq!(index.contains(probe), model.contains_key(&probe));
            assert_eq!(
                index.last_at_or_below(probe),
                model.range(..=probe).next_back().map(|(l, _)| *l)
            );
            let through = Lsn(probe.get() + rng.random_range(0..50));
            let got: Vec<_> = index.range(probe, through).collect();
            let want: Vec<_> = model
                .range((Bound::Excluded(probe), Bound::Included(through)))
                .map(|(l, e)| (*l, *e))
                .collect();
            assert_eq!(got, want, "range ({probe:?}, {through:?}]");
        }
        index.check_invariants();
        assert_eq!(index.len(), model.len());
        assert_eq!(index.last(), model.keys().next_back().copied());
        let all: Vec<_> = index.above(Lsn::ZERO).collect();
        let want: Vec<_> = model
            .range((Bound::Excluded(Lsn::ZERO), Bound::Unbounded))
            .map(|(l, e)| (*l, *e))
            .collect();
        assert_eq!(all, want);
    }

    #[test]
    fn holes_filled_from_below_split_chunks_and_stay_ordered() {
        let mut index = LsnIndex::new();
        // Every odd LSN first, then the even ones: each fill lands inside a full chunk.
        let n = (3 * CHUNK_ENTRIES) as u64;
        for l in (1..=n).step_by(2) {
            assert!(index.insert(Lsn(l), entry(l)));
        }
        for l in (2..=n).step_by(2) {
            assert!(index.insert(Lsn(l), entry(l)));
        }
        assert!(!index.insert(Lsn(5), entry(99)), "a duplicate is refused");
        index.check_invariants();
        assert!(index.chunks.len() > 3, "fills split chunks");
        let lsns: Vec<u64> = index.above(Lsn::ZERO).map(|(l, _)| l.get()).collect();
        assert_eq!(lsns, (1..=n).collect::<Vec<_>>());
        assert_eq!(index.range(Lsn(10), Lsn(12)).count(), 2);
        assert_eq!(index.above(Lsn(n)).count(), 0);
    }
}
