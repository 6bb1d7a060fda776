//! The port to proxy-wasm shared data: a key-value map shared by every worker's VM, with a CAS
//! token per key. The shell implements it with hostcalls; tests and benchmarks use `MemStore`
//! (feature `test-support`: not part of the plugin).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The value changed since it was read (another worker wrote it).
    CasMismatch,
    /// The host refused (should not happen; treated as "state unavailable").
    Unavailable,
    /// The ledger has no slot it may reuse: every probed line is still unfinished.
    Full,
}

pub trait Store {
    /// The value and its CAS token; `None` when the key was never set. An empty value means
    /// "deleted": shared data has no delete.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Write; with `cas = Some(t)` only if the key's token is still `t`.
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

#[cfg(feature = "test-support")]
pub use mem::MemStore;

#[cfg(feature = "test-support")]
mod mem {
    use std::collections::HashMap;

    use super::{Store, StoreError};

    /// An in-memory store with Envoy's semantics (a new CAS token on every write; a CAS write to a
    /// missing key succeeds).
    #[derive(Debug, Default)]
    pub struct MemStore {
        map: HashMap<String, (Vec<u8>, u32)>,
        next_cas: u32,
    }

    impl MemStore {
        pub fn new() -> MemStore {
            MemStore::default()
        }

        pub fn len(&self) -> usize {
            self.map.values().filter(|(v, _)| !v.is_empty()).count()
        }

        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        pub fn keys(&self) -> Vec<String> {
            let mut k: Vec<String> = self
                .map
                .iter()
                .filter(|(_, (v, _))| !v.is_empty())
                .map(|(k, _)| k.clone())
                .collect();
            k.sort();
            k
        }
    }

    impl Store for MemStore {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.map.get(key).cloned()
        }

        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.next_cas = self.next_cas.wrapping_add(1).max(1);
            let next = self.next_cas;
            match self.map.get_mut(key) {
                Some(entry) => {
                    if let Some(c) = cas {
                        if c != entry.1 {
                            return Err(StoreError::CasMismatch);
                        }
                    }
                    *entry = (value.to_vec(), next);
                }
                None => {
                    self.map.insert(key.to_owned(), (value.to_vec(), next));
                }
            }
            Ok(())
        }
    }
}
