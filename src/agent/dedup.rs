//! A bounded set of recently seen ids (event ids and delivery ids): remembers the newest
//! `capacity` ids, forgetting the oldest first. It serializes as the list of ids, so a restart
//! does not process an event twice.
//!
//! The webhook receiver consults it under a lock on every delivery, so each operation is O(1)
//! and allocation-light: an id is stored once, shared by the order queue and the index, and
//! both are sized for `capacity` up front (up to `MAX_RESERVED` ids, since a saved file sets
//! the capacity) so that no insert ever pauses to rehash the agent's window.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Ids seen recently, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "Saved", into = "Saved")]
pub struct Dedup {
    capacity: usize,
    order: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>>,
}

/// The serialized form: the capacity and the ids, oldest first.
#[derive(Serialize, Deserialize)]
struct Saved {
    capacity: usize,
    order: Vec<String>,
}

impl From<Saved> for Dedup {
    fn from(s: Saved) -> Self {
        let mut d = Dedup::new(s.capacity);
        for id in &s.order {
            d.insert(id);
        }
        d
    }
}

impl From<Dedup> for Saved {
    fn from(d: Dedup) -> Self {
        Saved {
            capacity: d.capacity,
            order: d.order.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The most ids reserved up front. The capacity may come from a saved file, so reserving it
/// whole could ask for terabytes and abort the process; beyond this the window grows as ids
/// arrive. Above the agent's window (100,000), so the agent never pauses to rehash.
const MAX_RESERVED: usize = 1 << 17;

impl Dedup {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let reserved = capacity.min(MAX_RESERVED);
        Dedup {
            capacity,
            order: VecDeque::with_capacity(reserved),
            set: HashSet::with_capacity(reserved),
        }
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
        let id: Arc<str> = Arc::from(id);
        self.order.push_back(id.clone());
        self.set.insert(id);
        true
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
        assert_eq!(d.len(), 2);
        let back: Dedup = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert!(back.contains("b") && back.contains("c") && !back.contains("a"));
        let mut back = back;
        assert!(!back.insert("c"));
        assert!(back.insert("d"));
        assert!(
            !back.contains("b"),
            "the restored order still forgets oldest first"
        );
    }

    #[test]
    fn reads_state_saved_by_earlier_versions() {
        let old = r#"{"capacity":3,"order":["x","y"]}"#;
        let d: Dedup = serde_json::from_str(old).unwrap();
        assert!(d.contains("x") && d.contains("y") && d.len() == 2);
    }
}
