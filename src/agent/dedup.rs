//! A bounded set of recently seen ids (event ids and delivery ids): remembers the newest
//! `capacity` ids, forgetting the oldest first. It serializes, so a restart does not process an
//! event twice.

use std::collections::{HashSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Ids seen recently, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dedup {
    capacity: usize,
    order: VecDeque<String>,
    #[serde(skip)]
    set: HashSet<String>,
}

impl Dedup {
    pub fn new(capacity: usize) -> Self {
        Dedup {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    /// Rebuilds the index after deserializing.
    pub fn reindex(&mut self) {
        self.set = self.order.iter().cloned().collect();
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Records an id; false when it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_string());
        self.set.insert(id.to_string());
        true
    }

    /// Forgets an id, so that it is taken again (linear in the window; rare).
    pub fn remove(&mut self, id: &str) {
        if self.set.remove(id) {
            self.order.retain(|x| x != id);
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_newest_and_survives_serialization() {
        let mut d = Dedup::new(2);
        assert!(d.insert("a"));
        assert!(!d.insert("a"));
        assert!(d.insert("b"));
        assert!(d.insert("c"));
        assert!(!d.contains("a"), "the oldest is forgotten first");
        let mut back: Dedup = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        back.reindex();
        assert!(back.contains("b") && back.contains("c"));
        assert!(!back.insert("c"));
        back.remove("c");
        assert!(back.insert("c"), "a removed id is taken again");
    }
}
