//! A bounded per-worker cache of verified tokens, keyed by the SHA-256 of the token (the
//! token itself is never kept), whose entries never outlive the token's `exp`.

use std::collections::{HashMap, VecDeque};

use crate::hash::digest;
use crate::jwt::Verified;

/// Verified tokens by hash.
#[derive(Debug, Default)]
pub struct TokenCache {
    capacity: usize,
    entries: HashMap<[u8; 32], Verified>,
    order: VecDeque<[u8; 32]>,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// The cache key of a token.
    pub fn key(token: &str) -> [u8; 32] {
        digest(&[token.as_bytes()])
    }

    /// The verified token, if cached and not expired at `now` (unix seconds).
    pub fn get(&mut self, key: &[u8; 32], now: i64) -> Option<&Verified> {
        if self.entries.get(key).is_some_and(|v| v.expires_at <= now) {
            self.entries.remove(key);
        }
        self.entries.get(key)
    }

    /// Remembers a verified token, evicting the oldest entry when full.
    pub fn put(&mut self, key: [u8; 32], verified: Verified) {
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

    fn verified(sub: &str, expires_at: i64) -> Verified {
        let identity = Identity {
            sub: sub.into(),
            ..Identity::default()
        };
        Verified {
            identity,
            claims: serde_json::Map::new(),
            expires_at,
            scopes: None,
        }
    }

    #[test]
    fn bounded_and_never_past_exp() {
        let mut cache = TokenCache::new(2);
        let (a, b, c) = (
            TokenCache::key("a"),
            TokenCache::key("b"),
            TokenCache::key("c"),
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
            cache.put(TokenCache::key(&i.to_string()), verified("x", 1_000));
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.order.len() <= 4);
        assert!(TokenCache::new(0).is_empty());
    }
}
