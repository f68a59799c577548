//! Fixed-size records in fixed-size chunks, addressed by a dense `u32` slot.
//!
//! A `Vec` that doubles would waste up to half its memory at 10M records;
//! chunks of [`CHUNK`] records grow memory linearly instead. Freed slots are
//! reused before new ones so slot numbers stay dense, which keeps gateway
//! batches small; the longest-freed first, so a session id that was just
//! given up (and may still be named in a `resume`) is not handed out again
//! at once.

use std::collections::VecDeque;

const CHUNK: usize = 4096;

pub(crate) struct Slab<T> {
    chunks: Vec<Box<[T]>>,
    len: u32,
    free: VecDeque<u32>,
}

impl<T: Copy + Default> Slab<T> {
    pub(super) fn new() -> Self {
        Self { chunks: Vec::new(), len: 0, free: VecDeque::new() }
    }

    /// Stores `value` and returns its slot, or `None` when `u32` slots run out.
    pub(super) fn insert(&mut self, value: T) -> Option<u32> {
        let slot = match self.free.pop_front() {
            Some(slot) => slot,
            None => {
                let slot = self.len;
                self.len = self.len.checked_add(1)?;
                if slot as usize / CHUNK == self.chunks.len() {
                    self.chunks.push(vec![T::default(); CHUNK].into_boxed_slice());
                }
                slot
            }
        };
        self.set(slot, value);
        Some(slot)
    }

    /// As [`Self::insert`], but not into `avoid`: were that slot next, it is
    /// passed over and stays next in line.
    pub(super) fn insert_avoiding(&mut self, value: T, avoid: Option<u32>) -> Option<u32> {
        let next = self.free.front().copied().unwrap_or(self.len);
        if avoid != Some(next) {
            return self.insert(value);
        }
        let passed = match self.free.pop_front() {
            Some(slot) => slot,
            None => self.insert(T::default())?,
        };
        match self.insert(value) {
            Some(slot) => {
                self.free.push_front(passed);
                Some(slot)
            }
            // No other slot left: the avoided one is better than none.
            None => {
                self.set(passed, value);
                Some(passed)
            }
        }
    }

    fn set(&mut self, slot: u32, value: T) {
        self.chunks[slot as usize / CHUNK][slot as usize % CHUNK] = value;
    }

    /// How many more values [`Self::insert`] can take: freed slots, and
    /// slots never handed out.
    pub(super) fn room(&self) -> u64 {
        self.free.len() as u64 + u64::from(u32::MAX - self.len)
    }

    /// Marks a slot reusable. The caller must not use it afterwards.
    pub(super) fn remove(&mut self, slot: u32) {
        self.free.push_back(slot);
    }

    pub(super) fn get(&self, slot: u32) -> Option<&T> {
        (slot < self.len).then(|| &self.chunks[slot as usize / CHUNK][slot as usize % CHUNK])
    }

    pub(super) fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        (slot < self.len).then(|| &mut self.chunks[slot as usize / CHUNK][slot as usize % CHUNK])
    }

    /// Slots handed out so far, live or free: every slot below this is valid.
    pub(super) fn high_water(&self) -> u32 {
        self.len
    }

    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * std::mem::size_of::<T>() + self.free.capacity() * 4
    }
}

impl<T: Copy + Default> Default for Slab<T> {
    fn default() -> Self {
        Slab::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_avoiding_passes_over_the_slot_and_keeps_it_next() {
        let mut slab = Slab::<u64>::new();
        assert_eq!(slab.insert_avoiding(1, Some(0)), Some(1), "a fresh slab");
        assert_eq!(slab.insert(2), Some(0), "the passed-over slot comes next");
        slab.remove(1);
        slab.remove(0);
        assert_eq!(slab.insert_avoiding(3, Some(1)), Some(0), "from the free list");
        assert_eq!(slab.insert(4), Some(1));
        assert_eq!(slab.insert_avoiding(5, Some(7)), Some(2), "not next: as insert");
        assert_eq!((slab.get(0), slab.get(1), slab.get(2)), (Some(&3), Some(&4), Some(&5)));
    }

    #[test]
    fn reuses_freed_slots_first_oldest_first() {
        let mut slab = Slab::<u64>::new();
        let a = slab.insert(1).unwrap();
        let b = slab.insert(2).unwrap();
        assert_eq!((a, b), (0, 1));
        slab.remove(b);
        slab.remove(a);
        assert_eq!(slab.insert(3), Some(1), "the longest-freed slot first");
        assert_eq!(slab.insert(4), Some(0));
        assert_eq!(slab.get(0), Some(&4));
        assert_eq!(slab.get(2), None);
    }

    #[test]
    fn room_counts_freed_and_unused_slots() {
        let mut slab = Slab::<u8>::new();
        assert_eq!(slab.room(), u64::from(u32::MAX));
        let a = slab.insert(1).unwrap();
        slab.insert(2).unwrap();
        assert_eq!(slab.room(), u64::from(u32::MAX) - 2);
        slab.remove(a);
        assert_eq!(slab.room(), u64::from(u32::MAX) - 1);
    }

    #[test]
    fn grows_across_chunks() {
        let mut slab = Slab::<u32>::new();
        for i in 0..(CHUNK as u32 * 2 + 5) {
            assert_eq!(slab.insert(i), Some(i));
        }
        assert_eq!(slab.get(CHUNK as u32 * 2 + 4), Some(&(CHUNK as u32 * 2 + 4)));
        assert_eq!(slab.heap_bytes(), 3 * CHUNK * 4);
    }
}
