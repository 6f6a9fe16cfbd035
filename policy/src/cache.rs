//! A bounded per-worker cache of verified tokens, keyed by a keyed 128-bit hash of the
//! token (the token itself is never kept), whose entries never outlive the token's `exp`.
//! An entry is shared, not copied, with the requests it authenticates: a hit allocates
//! nothing.
//!
//! The hash is SipHash-2-4 with a 128-bit secret key and 128-bit output: a PRF, so without
//! the key no one can make two tokens share an entry (one that could would be served
//! another token's identity), at a fraction of SHA-256's cost over a whole token, paid on
//! every request.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hasher;
use std::sync::Arc;

use siphasher::sip128::{Hasher128, SipHasher24};

use crate::jwt::Verified;

/// A cache key: the keyed hash of a token.
pub type CacheKey = [u8; 16];

/// Verified tokens by keyed hash.
#[derive(Default)]
pub struct TokenCache {
    capacity: usize,
    hash_key: [u8; 16],
    entries: HashMap<CacheKey, Arc<Verified>>,
    order: VecDeque<CacheKey>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash key stays out of logs.
        f.debug_struct("TokenCache")
            .field("capacity", &self.capacity)
            .field("len", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0 disables it), hashing tokens with the secret
    /// `hash_key`.
    pub fn new(capacity: usize, hash_key: [u8; 16]) -> Self {
        Self {
            capacity,
            hash_key,
            ..Self::default()
        }
    }

    /// The cache key of a token.
    pub fn key(&self, token: &str) -> CacheKey {
        let mut h = SipHasher24::new_with_key(&self.hash_key);
        h.write(token.as_bytes());
        h.finish128().as_bytes()
    }

    /// The verified token, if cached and not expired at `now` (unix seconds).
    pub fn get(&mut self, key: &CacheKey, now: i64) -> Option<&Arc<Verified>> {
        if self.entries.get(key).is_some_and(|v| v.expires_at <= now) {
            self.entries.remove(key);
        }
        self.entries.get(key)
    }

    /// Remembers a verified token, evicting the oldest entry when full.
    pub fn put(&mut self, key: CacheKey, verified: Arc<Verified>) {
        if self.capacity == 0 {
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&old);
        }
        if self.entries.insert(key, verified).is_none() {
            self.order.push_back(key);
        }
        // `order` may hold keys already removed on expiry; keep it bounded too.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_contract::Identity;

    fn verified(sub: &str, expires_at: i64) -> Arc<Verified> {
        let identity = Identity {
            sub: sub.into(),
            ..Identity::default()
        };
        Arc::new(Verified {
            identity,
            claims: serde_json::Map::new(),
            expires_at,
            scopes: None,
        })
    }

    #[test]
    fn bounded_and_never_past_exp() {
        let mut cache = TokenCache::new(2, [7; 16]);
        let (a, b, c) = (cache.key("a"), cache.key("b"), cache.key("c"));
        assert_ne!(a, b);
        assert_ne!(
            a,
            TokenCache::new(2, [8; 16]).key("a"),
            "the key is the hash's"
        );
        cache.put(a, verified("a", 100));
        cache.put(b, verified("b", 200));
        assert_eq!(
            cache.get(&a, 99).map(|v| v.identity.sub.as_str()),
            Some("a")
        );
        assert!(cache.get(&a, 100).is_none(), "expired at exp");
        cache.put(a, verified("a", 100));
        cache.put(c, verified("c", 300));
        assert_eq!(cache.len(), 2, "the oldest entry made room");
        assert!(cache.get(&c, 0).is_some());
        for i in 0..10_000 {
            let key = cache.key(&i.to_string());
            cache.put(key, verified("x", 1_000));
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.order.len() <= 4);
        assert!(TokenCache::new(0, [0; 16]).is_empty());
    }
}
