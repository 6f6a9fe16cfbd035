//! The key layout and every read and write of the service's data.
//!
//! Every key is written by exactly one request, except counters (atomic `increment`),
//! idempotency records (compare-and-swap) and the nonce queue's slots (deleted by the one
//! request that drew the slot's sweeping ticket), so concurrent requests never overwrite
//! each other and no operation needs a transaction:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `ws/{workspaceId}` | [`Workspace`] JSON, plus `indexSlot`: the `n` of its index entry | its create |
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

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError(e.to_string()))
}

fn set_json<T: serde::Serialize>(kv: &dyn Kv, key: &str, value: &T) -> Result<(), StoreError> {
    kv.set(key, &to_json(value)?)
}

/// A workspace as stored: the API's fields, and the index slot that lists it.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredWorkspace {
    #[serde(flatten)]
    workspace: Workspace,
    /// The slot drawn for its index entry (absent in records written before slots were kept).
    #[serde(default, rename = "indexSlot", skip_serializing_if = "Option::is_none")]
    slot: Option<i64>,
}

/// Stores a new workspace and its owner. The slot is drawn first and kept in the record, and
/// the record and the membership are written before the index entry, so a listing never
/// sees an ID whose record is missing, and [`resume_workspace`] can finish the listing of a
/// create that died half-way without listing it twice. A create that fails half-way leaves
/// at most an empty slot and an unlisted record, both harmless.
pub fn create_workspace(kv: &dyn Kv, ws: &Workspace, owner: &Membership) -> Result<(), StoreError> {
    let slot = kv.increment(&seq_key(&ws.org_id), 1)?;
    let stored = StoredWorkspace {
        workspace: ws.clone(),
        slot: Some(slot),
    };
    // One batch: either may land first, and [`resume_workspace`] finishes a half-written one.
    let record = to_json(&stored)?;
    let membership = to_json(owner)?;
    kv.set_many(&[
        (&ws_key(&ws.workspace_id), &record),
        (&member_key(&ws.workspace_id, &owner.user), &membership),
    ])?;
    kv.set(&idx_key(&ws.org_id, slot), ws.workspace_id.as_bytes())
}

/// Finishes the create of workspace `id` that a request which died holding its idempotency
/// key began: if its record was stored, writes what may be missing (the owner's membership,
/// the index entry in the slot the record names) and returns it; `None` when nothing was
/// stored, and the workspace is to be created afresh under `id`.
pub fn resume_workspace(
    kv: &dyn Kv,
    id: &str,
    owner: &Membership,
) -> Result<Option<Workspace>, StoreError> {
    let Some(stored) = get_json::<StoredWorkspace>(kv, &ws_key(id))? else {
        return Ok(None);
    };
    let member = member_key(id, &owner.user);
    if kv.get(&member)?.is_none() {
        set_json(kv, &member, owner)?;
    }
    if let Some(slot) = stored.slot {
        // The same value the dead request wrote, if it got that far.
        kv.set(&idx_key(&stored.workspace.org_id, slot), id.as_bytes())?;
    }
    Ok(Some(stored.workspace))
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

/// Finishes the create of v3 workspace `id` begun by a request that died holding its
/// idempotency key: the stored record (its owner's membership written if missing), or
/// `None` when nothing was stored.
pub fn resume_v3(
    kv: &dyn Kv,
    id: i64,
    owner: &Membership,
) -> Result<Option<V3Workspace>, StoreError> {
    let member = member_key(&format!("v3-{id}"), &owner.user);
    let found = get_v3(kv, id)?;
    if found.is_some() && kv.get(&member)?.is_none() {
        set_json(kv, &member, owner)?;
    }
    Ok(found)
}

/// Stores a v3 workspace and its owner.
pub fn create_v3(kv: &dyn Kv, ws: &V3Workspace, owner: &Membership) -> Result<(), StoreError> {
    // One batch: a membership without its record is invisible (reads start from the
    // record), and [`resume_v3`] writes a missing membership.
    let membership = to_json(owner)?;
    let record = to_json(ws)?;
    kv.set_many(&[
        (
            &member_key(&format!("v3-{}", ws.id), &owner.user),
            &membership,
        ),
        (&v3_key(ws.id), &record),
    ])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FeatureFlags, Settings};
    use crate::store::MemoryKv;

    const ORG: &str = "org-1";

    fn workspace(id: &str) -> (Workspace, Membership) {
        let ws = Workspace {
            workspace_id: id.into(),
            org_id: ORG.into(),
            name: id.into(),
            description: String::new(),
            visibility: "private".into(),
            created_by: "u".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            settings: Settings {
                timezone: "UTC".into(),
                default_language: "en".into(),
                education_mode: false,
                lms_integration: "none".into(),
                exam_generation_enabled: false,
                beginner_mode_default: false,
                dlp_enabled: true,
                real_time_summaries: true,
                retention_alerts: true,
            },
            allowed_domains: Vec::new(),
            feature_flags: FeatureFlags {
                real_time_translation: false,
                role_aware_summaries: false,
                exam_generation: false,
                breakout_rooms: false,
                ai_attendee: false,
                meeting_energy_dashboard: false,
            },
            supported_languages: vec!["en".into()],
            subscription_id: None,
            member_count: 1,
        };
        let owner = Membership {
            workspace_id: id.into(),
            user: "1:i:u".into(),
            role: "OWNER".into(),
            created_at: ws.created_at.clone(),
        };
        (ws, owner)
    }

    fn listed(kv: &dyn Kv) -> Vec<String> {
        let (items, _) = list_workspaces(kv, ORG, 1, MAX_PAGE).unwrap();
        items.into_iter().map(|w| w.workspace_id).collect()
    }

    #[test]
    fn resuming_a_create_lists_it_once_wherever_its_creator_died() {
        let kv = MemoryKv::spin_sqlite();
        // Died after the index entry: resuming writes the same entry again.
        let (a, owner_a) = workspace("w-a");
        create_workspace(&kv, &a, &owner_a).unwrap();
        assert_eq!(
            resume_workspace(&kv, "w-a", &owner_a).unwrap(),
            Some(a.clone())
        );
        // Died after the record, before its membership and index entry.
        let (b, owner_b) = workspace("w-b");
        create_workspace(&kv, &b, &owner_b).unwrap();
        kv.delete(&idx_key(ORG, 2)).unwrap();
        kv.delete(&member_key("w-b", &owner_b.user)).unwrap();
        assert_eq!(listed(&kv), ["w-a"]);
        assert_eq!(resume_workspace(&kv, "w-b", &owner_b).unwrap(), Some(b));
        assert!(kv.get(&member_key("w-b", &owner_b.user)).unwrap().is_some());
        // Died before the record: nothing to resume, the retry creates it (a slot is skipped).
        assert_eq!(resume_workspace(&kv, "w-c", &owner_b).unwrap(), None);
        kv.increment(&seq_key(ORG), 1).unwrap();
        let (c, owner_c) = workspace("w-c");
        create_workspace(&kv, &c, &owner_c).unwrap();
        assert_eq!(listed(&kv), ["w-a", "w-b", "w-c"]);
        // The stored slot is not part of the API's workspace.
        let read = get_workspace(&kv, "w-a").unwrap().unwrap();
        assert_eq!(read, a);
        assert!(serde_json::to_value(&read)
            .unwrap()
            .get("indexSlot")
            .is_none());
    }
}
