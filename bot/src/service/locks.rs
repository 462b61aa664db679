//! Per-key async locks (one per conversation id) that do not accumulate:
//! an entry is removed when its last holder or waiter lets go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug, Default)]
pub struct KeyedLocks {
    // Who holds the other end: every `KeyGuard` holds one clone of its
    // entry's Arc; the map's own clone is dropped when the last guard drops.
    map: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

/// Holds the lock of one key until dropped.
#[derive(Debug)]
pub struct KeyGuard {
    guard: Option<OwnedMutexGuard<()>>,
    // Dropped after `guard`: removes the entry when nobody else uses it.
    _entry: Entry,
}

/// One user (holder or waiter) of a key's entry. Dropping the last user
/// removes the entry, also when a waiter is cancelled before it gets the lock.
#[derive(Debug)]
struct Entry {
    key: String,
    mutex: Arc<AsyncMutex<()>>,
    map: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // The map's clone and ours: nobody else holds or waits.
        if Arc::strong_count(&self.mutex) == 2 {
            map.remove(&self.key);
        }
    }
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> KeyGuard {
        let entry = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            Entry {
                key: key.to_owned(),
                mutex: map.entry(key.to_owned()).or_default().clone(),
                map: self.map.clone(),
            }
        };
        let guard = entry.mutex.clone().lock_owned().await;
        KeyGuard {
            guard: Some(guard),
            _entry: entry,
        }
    }

    /// Keys with a holder or waiter (for tests).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        // Release first; `_entry` then drops and cleans up.
        self.guard.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_no_leftovers() {
        let locks = Arc::new(KeyedLocks::default());
        let counter = Arc::new(Mutex::new((0u32, 0u32))); // (inside, max inside)
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let locks = locks.clone();
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock("c1").await;
                {
                    let mut c = counter.lock().unwrap();
                    c.0 += 1;
                    c.1 = c.1.max(c.0);
                }
                tokio::task::yield_now().await;
                counter.lock().unwrap().0 -= 1;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(counter.lock().unwrap().1, 1);
        assert!(locks.is_empty());
        let a = locks.lock("a").await;
        let _b = locks.lock("b").await; // other keys do not wait
        assert_eq!(locks.len(), 2);
        // A waiter that gives up leaves nothing behind either.
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock("a")).await;
        assert!(waiting.is_err());
        drop(a);
        assert_eq!(locks.len(), 1);
    }
}
