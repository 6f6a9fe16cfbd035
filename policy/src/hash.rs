//! Hashes used for keys of shared state: never the secret itself, always a digest.

use sha2::{Digest, Sha256};

/// SHA-256 over the parts, each length-prefixed so `("ab","c")` and `("a","bc")` differ.
pub fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// The first 8 bytes of [`digest`] as a number, for slot selection and fingerprints.
pub fn digest64(parts: &[&[u8]]) -> u64 {
    let d = digest(parts);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// 12 hex characters of the SHA-256 of `bytes`.
pub fn short_hex(bytes: &[u8]) -> String {
    digest(&[bytes])[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
