//! How far the connector has come on a chain, as pure bookkeeping: which blocks it has read, which
//! orders from them are still open, and so the block up to which everything is done (the
//! cursor it stores, and restarts from).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use alloy::primitives::B256;
use serde::{Deserialize, Serialize};

/// What the connector stores: every order submitted in a block up to `block` is settled (its
/// completion is as deep as the confirmations ask), and `hash` is that block's hash, to find
/// out on restart whether the chain changed under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The block.
    pub block: u64,
    /// Its hash.
    pub hash: B256,
}

/// Blocks read and orders open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The last block whose orders were read.
    read_to: u64,
    /// Open orders per block.
    open: BTreeMap<u64, usize>,
}

impl Progress {
    /// Progress after `block`, with everything up to it done (the stored cursor's block, or the
    /// block the registries were deployed after).
    pub fn after(block: u64) -> Self {
        Self { read_to: block, open: BTreeMap::new() }
    }

    /// The next blocks to read, at most `span` of them, up to the confirmed height
    /// (`head - confirmations`): none while nothing new is confirmed.
    pub fn next_range(
        &self,
        head: u64,
        confirmations: u64,
        span: u64,
    ) -> Option<RangeInclusive<u64>> {
        let confirmed = head.checked_sub(confirmations)?;
        let first = self.read_to.checked_add(1)?;
        (first <= confirmed).then(|| first..=confirmed.min(first.saturating_add(span.max(1) - 1)))
    }

    /// Records that the blocks in `range` were read and these orders found in them (each
    /// named by its block), which are open until [`Progress::settled`].
    pub fn read(&mut self, range: &RangeInclusive<u64>, orders: impl IntoIterator<Item = u64>) {
        for block in orders {
            *self.open.entry(block).or_default() += 1;
        }
        self.read_to = self.read_to.max(*range.end());
    }

    /// The last block of `range` to read now, given the blocks of what was found in it (in
    /// order), so that at most `max_open` are open afterwards: whole blocks only, and a block
    /// with more than that is read whole when nothing else is open. `None`: none of it yet.
    pub fn read_end(
        &self,
        range: &RangeInclusive<u64>,
        found: &[u64],
        max_open: usize,
    ) -> Option<u64> {
        let mut open = self.open();
        let mut rest = found;
        while let Some(&block) = rest.first() {
            let count = rest.iter().take_while(|b| **b == block).count();
            if open > 0 && open + count > max_open {
                let end = block.checked_sub(1)?;
                return (end >= *range.start()).then_some(end);
            }
            open += count;
            rest = &rest[count..];
        }
        Some(*range.end())
    }

    /// Reads again after `block`: the chain changed under what was read. What is open stays
    /// open.
    pub fn rewind_to(&mut self, block: u64) {
        self.read_to = self.read_to.min(block);
    }

    /// The last block read.
    pub fn read_to(&self) -> u64 {
        self.read_to
    }

    /// Something counted open at block `counted` was read again at block `again` (after a
    /// rewind; a reorganisation may have moved it): it stays counted once, at the lower block,
    /// which is returned.
    pub fn read_again(&mut self, counted: u64, again: u64) -> u64 {
        self.settled(counted.max(again));
        counted.min(again)
    }

    /// Records that an order from `block` is settled.
    pub fn settled(&mut self, block: u64) {
        if let Some(count) = self.open.get_mut(&block) {
            *count -= 1;
            if *count == 0 {
                self.open.remove(&block);
            }
        }
    }

    /// How many orders are open.
    pub fn open(&self) -> usize {
        self.open.values().sum()
    }

    /// The last block up to which every order is settled: where a restart reads on from.
    pub fn done_to(&self) -> u64 {
        match self.open.keys().next() {
            Some(first_open) => first_open.saturating_sub(1).min(self.read_to),
            None => self.read_to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_confirmed_blocks_are_read_in_spans() {
        let progress = Progress::after(10);
        assert_eq!(progress.next_range(12, 2, 100), None);
        assert_eq!(progress.next_range(13, 2, 100), Some(11..=11));
        assert_eq!(progress.next_range(500, 2, 100), Some(11..=110));
        assert_eq!(progress.next_range(1, 2, 100), None);
        assert_eq!(progress.next_range(12, 0, 0), Some(11..=11));
    }

    #[test]
    fn reading_stops_at_whole_blocks_once_enough_is_open() {
        let mut progress = Progress::after(10);
        let range = 11..=20;
        assert_eq!(progress.read_end(&range, &[12, 12, 15, 15, 15, 18], 10), Some(20));
        assert_eq!(progress.read_end(&range, &[12, 12, 15, 15, 15, 18], 5), Some(17));
        assert_eq!(progress.read_end(&range, &[12, 12, 15, 15, 15, 18], 4), Some(14));
        // A block with more than the bound is read whole when nothing is open.
        assert_eq!(progress.read_end(&range, &[11, 11, 11], 2), Some(20));
        progress.read(&(11..=11), [11]);
        assert_eq!(progress.read_end(&(12..=20), &[12, 12], 2), None);
        assert_eq!(progress.read_end(&(12..=20), &[13, 13], 2), Some(12));
        assert_eq!(progress.read_end(&(12..=20), &[], 1), Some(20));
    }

    #[test]
    fn what_is_read_again_at_an_earlier_block_holds_the_cursor_there() {
        let mut progress = Progress::after(10);
        progress.read(&(11..=20), [15]);
        progress.rewind_to(10);
        // Read again at block 12 (moved by a reorganisation): counted at 12 now, once.
        progress.read(&(11..=20), [12]);
        assert_eq!(progress.read_again(15, 12), 12);
        assert_eq!(progress.open(), 1);
        assert_eq!(progress.done_to(), 11);
        // Read again at a later block: still counted at the earlier one.
        progress.rewind_to(10);
        progress.read(&(11..=20), [18]);
        assert_eq!(progress.read_again(12, 18), 12);
        assert_eq!(progress.open(), 1);
        progress.settled(12);
        assert_eq!(progress.done_to(), 20);
    }

    #[test]
    fn a_rewind_reads_again_and_keeps_what_is_open() {
        let mut progress = Progress::after(10);
        progress.read(&(11..=20), [15]);
        progress.rewind_to(12);
        assert_eq!(progress.read_to(), 12);
        assert_eq!(progress.done_to(), 12);
        assert_eq!(progress.next_range(30, 0, 100), Some(13..=30));
        progress.rewind_to(40);
        assert_eq!(progress.read_to(), 12);
        progress.settled(15);
        assert_eq!(progress.open(), 0);
    }

    #[test]
    fn the_cursor_stays_before_the_first_open_order() {
        let mut progress = Progress::after(10);
        progress.read(&(11..=20), [12, 12, 15]);
        assert_eq!(progress.open(), 3);
        assert_eq!(progress.done_to(), 11);
        assert_eq!(progress.next_range(30, 0, 100), Some(21..=30));
        progress.settled(15);
        assert_eq!(progress.done_to(), 11);
        progress.settled(12);
        assert_eq!(progress.done_to(), 11);
        progress.settled(12);
        assert_eq!(progress.done_to(), 20);
        // Settling what is not open changes nothing.
        progress.settled(12);
        assert_eq!(progress.done_to(), 20);
        assert_eq!(progress.open(), 0);
    }
}
