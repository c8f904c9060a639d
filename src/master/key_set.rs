//! A set of worker keys (the slab keys of the core's records), each listed once, in the order
//! listed: what the loop has to look at this turn, so that it touches those workers and not
//! every one. O(1) to add; taking them out costs only what was listed.

#[derive(Debug, Default)]
pub(super) struct KeySet {
    keys: Vec<usize>,
    listed: Vec<bool>,
}

impl KeySet {
    /// Lists `key` (once).
    pub fn insert(&mut self, key: usize) {
        if key >= self.listed.len() {
            self.listed.resize(key + 1, false);
        }
        if !std::mem::replace(&mut self.listed[key], true) {
            self.keys.push(key);
        }
    }

    #[cfg(debug_assertions)]
    pub fn contains(&self, key: usize) -> bool {
        self.listed.get(key).copied().unwrap_or(false)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The listed keys, in the order listed.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.keys.iter().copied()
    }

    /// Keeps listed only the keys `keep` says to.
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let listed = &mut self.listed;
        self.keys.retain(|&key| {
            let kept = keep(key);
            listed[key] = kept;
            kept
        });
    }

    /// Moves every listed key into `out` (emptied first), in the order listed; the set is
    /// empty after. `out` is the caller's to keep, so that a turn allocates nothing.
    pub fn take_into(&mut self, out: &mut Vec<usize>) {
        out.clear();
        for &key in &self.keys {
            self.listed[key] = false;
        }
        std::mem::swap(&mut self.keys, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_listed_once_in_order_and_taking_empties_the_set() {
        let mut set = KeySet::default();
        assert!(set.is_empty());
        for key in [7, 2, 7, 0, 2] {
            set.insert(key);
        }
        let mut out = vec![99];
        set.take_into(&mut out);
        assert_eq!(out, [7, 2, 0]);
        assert!(set.is_empty());
        set.insert(2);
        set.take_into(&mut out);
        assert_eq!(out, [2], "listed again once taken");
        for key in [3, 1, 4] {
            set.insert(key);
        }
        set.retain(|key| key != 1);
        assert_eq!(set.iter().collect::<Vec<_>>(), [3, 4]);
        set.insert(1);
        set.insert(3);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [3, 4, 1],
            "1 listed again, 3 once"
        );
    }
}
