//! The key layout and every read and write of the service's data.
//!
//! Every key is written by exactly one request, except counters (atomic `increment`),
//! idempotency records (compare-and-swap) and the nonce queue's slots (deleted by the one
//! request that drew the slot's sweeping ticket), so concurrent requests never overwrite
//! each other and no operation needs a transaction:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `ws/{workspaceId}` | [`Workspace`] JSON | its create |
//! | `org/{orgId}/seq` | counter: workspaces ever created in the org | `increment` |
//! | `org/{orgId}/idx/{n:020}` | the `n`-th workspace ID | the create that drew `n` |
//! | `org/{orgId}/settings` | [`OrgSettings`] JSON | `PUT /api/orgs/{orgId}/settings` |
//! | `member/{workspaceId}/{principal-hash}` | [`Membership`] JSON | its create |
//! | `v3/seq` | counter: last v3 ID | `increment` |
//! | `v3/ws/{id}` | [`V3Workspace`] JSON | its create |
//! | `member/v3-{id}/{principal-hash}` | [`Membership`] JSON | its create |
//! | `idem/{principal-hash}/{key-hash}` | idempotency record | compare-and-swap |
//! | `idem/{principal-hash}/{key-hash}#claims` | counter: the last claim election | `increment` |
//! | `nonce/{nonce}` | counter: acceptances of a gateway nonce | `increment` ([`crate::replay`]) |
//! | `nonceq/head`, `nonceq/tail` | counters: last queue slot drawn, last swept | `increment` |
//! | `nonceq/{n:020}` | `{forget-after} {nonce}` | the request that drew `n`; deleted by its sweeper |
//!
//! The principal is [`edge_contract::Identity::principal`] (issuer and subject), hashed
//! so keys stay short and free of characters an issuer chose.

use sha2::{Digest, Sha256};

use crate::model::{Membership, OrgSettings, V3Workspace, Workspace};
use crate::store::{Kv, StoreError};

/// The most items one page of a listing returns.
pub const MAX_PAGE: usize = 100;

fn ws_key(id: &str) -> String {
    format!("ws/{id}")
}
fn seq_key(org: &str) -> String {
    format!("org/{org}/seq")
}
fn idx_key(org: &str, n: i64) -> String {
    format!("org/{org}/idx/{n:020}")
}
fn settings_key(org: &str) -> String {
    format!("org/{org}/settings")
}
fn member_key(ws: &str, principal: &str) -> String {
    let hash = Sha256::digest(principal.as_bytes());
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("member/{ws}/{hex}")
}
const V3_SEQ: &str = "v3/seq";
fn v3_key(id: i64) -> String {
    format!("v3/ws/{id}")
}

fn get_json<T: serde::de::DeserializeOwned>(
    kv: &dyn Kv,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match kv.get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError(format!("{key}: {e}"))),
    }
}

fn set_json<T: serde::Serialize>(kv: &dyn Kv, key: &str, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError(e.to_string()))?;
    kv.set(key, &bytes)
}

/// Stores a new workspace and its owner. The record and the membership are written before
/// the index slot, so a listing never sees an ID whose record is missing; a create that
/// fails half-way leaves at most an unlisted record and an empty slot, both harmless.
pub fn create_workspace(kv: &dyn Kv, ws: &Workspace, owner: &Membership) -> Result<(), StoreError> {
    set_json(kv, &ws_key(&ws.workspace_id), ws)?;
    set_json(kv, &member_key(&ws.workspace_id, &owner.user), owner)?;
    let slot = kv.increment(&seq_key(&ws.org_id), 1)?;
    kv.set(&idx_key(&ws.org_id, slot), ws.workspace_id.as_bytes())
}

/// The workspace with this ID.
pub fn get_workspace(kv: &dyn Kv, id: &str) -> Result<Option<Workspace>, StoreError> {
    get_json(kv, &ws_key(id))
}

/// One page of an organization's workspaces in creation order, starting at slot `from`
/// (1-based), and the slot to continue from when more may follow.
pub fn list_workspaces(
    kv: &dyn Kv,
    org: &str,
    from: i64,
    limit: usize,
) -> Result<(Vec<Workspace>, Option<i64>), StoreError> {
    // `increment` by 0 reads the counter atomically whatever encoding the host uses.
    let last = kv.increment(&seq_key(org), 0)?;
    let mut items = Vec::new();
    let mut slot = from.max(1);
    while slot <= last && items.len() < limit {
        if let Some(id) = kv.get(&idx_key(org, slot))? {
            let id = String::from_utf8_lossy(&id).into_owned();
            if let Some(ws) = get_workspace(kv, &id)? {
                items.push(ws);
            }
        }
        slot += 1;
    }
    Ok((items, (slot <= last).then_some(slot)))
}

/// The organization's settings; the defaults (creation disabled) when it has no record.
pub fn get_org_settings(kv: &dyn Kv, org: &str) -> Result<OrgSettings, StoreError> {
    Ok(get_json(kv, &settings_key(org))?.unwrap_or_default())
}

/// Replaces the organization's settings.
pub fn put_org_settings(kv: &dyn Kv, org: &str, settings: &OrgSettings) -> Result<(), StoreError> {
    set_json(kv, &settings_key(org), settings)
}

/// Draws the next v3 workspace ID (unique under concurrency: an atomic increment).
pub fn next_v3_id(kv: &dyn Kv) -> Result<i64, StoreError> {
    kv.increment(V3_SEQ, 1)
}

/// Stores a v3 workspace and its owner.
pub fn create_v3(kv: &dyn Kv, ws: &V3Workspace, owner: &Membership) -> Result<(), StoreError> {
    set_json(
        kv,
        &member_key(&format!("v3-{}", ws.id), &owner.user),
        owner,
    )?;
    set_json(kv, &v3_key(ws.id), ws)
}

/// The v3 workspace with this ID.
pub fn get_v3(kv: &dyn Kv, id: i64) -> Result<Option<V3Workspace>, StoreError> {
    get_json(kv, &v3_key(id))
}

/// The membership of `principal` in a v3 workspace, if any.
pub fn get_v3_membership(
    kv: &dyn Kv,
    id: i64,
    principal: &str,
) -> Result<Option<Membership>, StoreError> {
    get_json(kv, &member_key(&format!("v3-{id}"), principal))
}
