//! Durable idempotency (draft-ietf-httpapi-idempotency-key-header), scoped per user.
//!
//! A key is claimed by a compare-and-swap from "absent" to a `pending` record carrying the
//! request's fingerprint, so two backend instances (or two gateway replicas) cannot both run
//! the same create. The winner replaces the record with the response it produced; a retry
//! then gets that response replayed. Records live 24 hours; a `pending` record older than
//! [`PENDING_TIMEOUT_SECS`] is taken to be from a request that died and may be taken over.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::http::ApiResponse;
use crate::problem::{Kind, Problem};
use crate::store::Kv;

/// How long a completed response is replayed.
pub const RETENTION_SECS: i64 = 24 * 60 * 60;
/// How long a claim may stay pending before another request may take it over.
pub const PENDING_TIMEOUT_SECS: i64 = 60;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    fingerprint: String,
    created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<StoredResponse>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// A key this request now holds.
#[derive(Debug)]
pub struct Claim {
    store_key: String,
    record: Vec<u8>,
    fingerprint: String,
    created_at: i64,
}

/// What to do with a request that carries an idempotency key.
#[derive(Debug)]
pub enum Outcome {
    /// Run it, then [`complete`] or [`release`] the claim.
    Proceed(Claim),
    /// Answer with this stored response.
    Replay(ApiResponse),
}

/// The key as sent, with the quotes of the draft's sf-string form removed; `None` when malformed.
pub fn parse_key(header: &str) -> Option<&str> {
    let key = header.trim();
    let key = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(key);
    let ok = !key.is_empty()
        && key.len() <= 255
        && key.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'"');
    ok.then_some(key)
}

/// A fingerprint of what the request asks for: its method, path and canonical payload.
pub fn fingerprint(method: &str, path: &str, payload: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    for part in [
        method.as_bytes(),
        path.as_bytes(),
        &serde_json::to_vec(payload).unwrap_or_default(),
    ] {
        h.update(part);
        h.update(b"\n");
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn store_key(user: &str, key: &str) -> String {
    // Hashes keep the store key short and free of any character a client chose.
    let user = hex(&Sha256::digest(user.as_bytes())[..16]);
    let key = hex(&Sha256::digest(key.as_bytes())[..16]);
    format!("idem/{user}/{key}")
}

/// Claims `key` for `user`, or tells why not: 409 while the first request runs, 422 when
/// the key was used for a different request, a replay when it completed.
pub fn begin(
    kv: &dyn Kv,
    user: &str,
    key: &str,
    fingerprint: &str,
    now: i64,
) -> Result<Outcome, Problem> {
    let store_key = store_key(user, key);
    let fresh = Record {
        fingerprint: fingerprint.to_owned(),
        created_at: now,
        response: None,
    };
    let fresh_bytes = serde_json::to_vec(&fresh).map_err(|_| Problem::new(Kind::Internal))?;
    // Two rounds: a lost race on an expired record is retried once, then reported as 409.
    for _ in 0..2 {
        let current = kv.get(&store_key)?;
        let existing: Option<Record> = current
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok());
        if let Some(rec) = &existing {
            let expired = match rec.response {
                Some(_) => now - rec.created_at > RETENTION_SECS,
                None => now - rec.created_at > PENDING_TIMEOUT_SECS,
            };
            if !expired {
                if rec.fingerprint != fingerprint {
                    return Err(Problem::new(Kind::IdempotencyMismatch));
                }
                return match &rec.response {
                    Some(r) => Ok(Outcome::Replay(replay(r))),
                    None => {
                        Err(Problem::new(Kind::IdempotencyInFlight).with_header("retry-after", "1"))
                    }
                };
            }
        }
        if kv.compare_and_swap(&store_key, current.as_deref(), &fresh_bytes)? {
            return Ok(Outcome::Proceed(Claim {
                store_key,
                record: fresh_bytes,
                fingerprint: fingerprint.to_owned(),
                created_at: now,
            }));
        }
    }
    Err(Problem::new(Kind::IdempotencyInFlight).with_header("retry-after", "1"))
}

fn replay(r: &StoredResponse) -> ApiResponse {
    let mut response = ApiResponse {
        status: r.status,
        headers: r.headers.clone(),
        body: r.body.clone().into_bytes(),
    };
    response
        .headers
        .push(("idempotent-replayed".into(), "true".into()));
    response
}

/// Stores the response of a successful request so retries replay it.
pub fn complete(
    kv: &dyn Kv,
    claim: Claim,
    response: &ApiResponse,
) -> Result<(), crate::store::StoreError> {
    let headers = response
        .headers
        .iter()
        .filter(|(n, _)| n == "content-type" || n == "location")
        .cloned()
        .collect();
    let done = Record {
        fingerprint: claim.fingerprint,
        created_at: claim.created_at,
        response: Some(StoredResponse {
            status: response.status,
            headers,
            body: String::from_utf8_lossy(&response.body).into_owned(),
        }),
    };
    let bytes = serde_json::to_vec(&done).map_err(|e| crate::store::StoreError(e.to_string()))?;
    // Only the claim's holder writes here, but a CAS keeps a request that outlived its
    // pending timeout from overwriting the request that took over.
    kv.compare_and_swap(&claim.store_key, Some(&claim.record), &bytes)
        .map(|_| ())
}

/// Gives the key up after a failure, so a retry can run the request again.
pub fn release(kv: &dyn Kv, claim: Claim) {
    // A tombstone rather than a delete: a plain delete could remove the claim of a request
    // that took this one over. Best effort: if this fails too, the claim times out.
    let _ = kv.compare_and_swap(&claim.store_key, Some(&claim.record), b"{}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryKv;

    fn proceed(o: Result<Outcome, Problem>) -> Claim {
        match o {
            Ok(Outcome::Proceed(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_are_visible_ascii_optionally_quoted() {
        assert_eq!(parse_key("abc-123"), Some("abc-123"));
        assert_eq!(parse_key("\"abc\""), Some("abc"));
        for bad in ["", "\"\"", "a b", "é", &"x".repeat(256)] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn claim_then_conflict_then_replay_then_mismatch() {
        let kv = MemoryKv::new();
        let claim = proceed(begin(&kv, "u", "k", "f1", 100));
        assert_eq!(
            begin(&kv, "u", "k", "f1", 101).unwrap_err().kind,
            Kind::IdempotencyInFlight
        );
        assert_eq!(
            begin(&kv, "u", "k", "f2", 101).unwrap_err().kind,
            Kind::IdempotencyMismatch
        );
        // Another user's identical key is independent.
        proceed(begin(&kv, "v", "k", "f1", 101));
        let resp = ApiResponse::json(201, &serde_json::json!({"ok": true}));
        complete(&kv, claim, &resp).unwrap();
        match begin(&kv, "u", "k", "f1", 102).unwrap() {
            Outcome::Replay(r) => {
                assert_eq!(r.status, 201);
                assert_eq!(r.header("idempotent-replayed"), Some("true"));
                assert_eq!(r.json_body(), serde_json::json!({"ok": true}));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            begin(&kv, "u", "k", "f2", 102).unwrap_err().kind,
            Kind::IdempotencyMismatch
        );
        // After the retention period the key is free again.
        proceed(begin(&kv, "u", "k", "f2", 100 + RETENTION_SECS + 1));
    }

    #[test]
    fn released_or_stale_claims_can_be_taken_over() {
        let kv = MemoryKv::new();
        let claim = proceed(begin(&kv, "u", "k", "f", 0));
        release(&kv, claim);
        let _held = proceed(begin(&kv, "u", "k", "f", 1));
        proceed(begin(&kv, "u", "k", "f", 2 + PENDING_TIMEOUT_SECS));
    }

    #[test]
    fn store_failure_is_a_503() {
        let kv = MemoryKv::new();
        kv.set_failing(Some("down"));
        assert_eq!(
            begin(&kv, "u", "k", "f", 0).unwrap_err().kind,
            Kind::StoreUnavailable
        );
    }
}
