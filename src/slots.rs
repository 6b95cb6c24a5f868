//! A fixed table of lock-free slots keyed by a 32-byte digest: what the
//! hot path remembers (minted identity tokens and JWT assertions, route
//! policy decisions). Direct-mapped: a newer entry for the same slot
//! replaces the older; reads take no lock and never allocate.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// One slot: the key it holds and its value.
type Slot<V> = ArcSwapOption<([u8; 32], V)>;

pub struct Slots<V> {
    slots: Box<[Slot<V>]>,
}

impl<V> Slots<V> {
    pub fn new(n: usize) -> Self {
        Slots {
            slots: (0..n.max(1)).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    fn slot(&self, key: &[u8; 32]) -> &Slot<V> {
        let mut n = [0u8; 8];
        n.copy_from_slice(&key[..8]);
        &self.slots[(u64::from_be_bytes(n) % self.slots.len() as u64) as usize]
    }

    /// The entry remembered for `key`, if its slot still holds it.
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<([u8; 32], V)>> {
        self.slot(key).load_full().filter(|e| e.0 == *key)
    }

    pub fn put(&self, key: [u8; 32], value: V) {
        self.slot(&key).store(Some(Arc::new((key, value))));
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn a_key_finds_only_its_own_entry() {
        let s = Slots::new(4);
        let (a, mut b) = ([1u8; 32], [1u8; 32]);
        b[31] = 2; // same slot (first 8 bytes), other key
        s.put(a, "a");
        assert_eq!(s.get(&a).map(|e| e.1), Some("a"));
        assert!(s.get(&b).is_none());
        s.put(b, "b");
        assert!(s.get(&a).is_none());
        assert_eq!(s.get(&b).map(|e| e.1), Some("b"));
    }
}
