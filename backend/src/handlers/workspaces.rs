//! `/api/workspaces`: organization workspaces (seed 004).

use edge_contract::permission::{WORKSPACE_CREATE, WORKSPACE_READ};
use serde_json::json;

use crate::app::Ctx;
use crate::body;
use crate::handlers::{idempotency_key, once, require};
use crate::http::ApiResponse;
use crate::model::{Membership, Settings, Workspace};
use crate::problem::{Expected, FieldError, Kind, Problem, Reason};
use crate::repo;
use crate::store::Kv;
use crate::validate::{self, check_uuid};

/// Default page size of listings.
pub const DEFAULT_PAGE: usize = 20;

/// `POST /api/workspaces`.
pub fn create(ctx: &Ctx<'_>) -> Result<ApiResponse, Problem> {
    let key = idempotency_key(ctx)?;
    let payload = body::json(ctx.req)?;
    let new = validate::new_workspace(&payload)
        .map_err(|errors| Problem::invalid(Kind::ValidationFailed, errors))?;
    require(ctx, &new.org_id, WORKSPACE_CREATE)?;
    let kv = ctx.env.kv;
    let new_id = || Ok(format!("w-{}", (ctx.env.new_uuid)().hyphenated()));
    once(ctx, key, new_id, |resource| {
        let now = ctx.env.timestamp();
        let workspace_id = resource.id;
        let owner = Membership {
            workspace_id: workspace_id.clone(),
            user: ctx.identity.principal(),
            role: "OWNER".into(),
            created_at: now.clone(),
        };
        let resumed = if resource.resumed {
            repo::resume_workspace(kv, &workspace_id, &owner)?
        } else {
            None
        };
        let ws = match resumed {
            Some(ws) => ws,
            None => {
                let ws = new_workspace(kv, new, workspace_id.clone(), &ctx.identity.sub, &now)?;
                repo::create_workspace(kv, &ws, &owner)?;
                ws
            }
        };
        Ok(ApiResponse::json(
            201,
            &json!({"message": "Workspace created successfully", "data": ws}),
        )
        .with_header("location", &format!("/api/workspaces/{workspace_id}")))
    })
}

/// The workspace a validated create makes, with the server-side fields.
fn new_workspace(
    kv: &dyn Kv,
    new: validate::NewWorkspace,
    workspace_id: String,
    created_by: &str,
    now: &str,
) -> Result<Workspace, Problem> {
    let org = repo::get_org_settings(kv, &new.org_id)?;
    Ok(Workspace {
        workspace_id,
        org_id: new.org_id,
        name: new.name,
        description: new.description,
        visibility: new.visibility,
        created_by: created_by.to_owned(),
        created_at: now.to_owned(),
        updated_at: now.to_owned(),
        settings: Settings {
            timezone: new.timezone,
            default_language: new.default_language,
            education_mode: new.education_mode,
            lms_integration: new.lms_integration,
            exam_generation_enabled: new.exam_generation_enabled,
            beginner_mode_default: new.beginner_mode_default,
            dlp_enabled: true,
            real_time_summaries: true,
            retention_alerts: true,
        },
        allowed_domains: new.allowed_domains,
        feature_flags: new.feature_flags,
        supported_languages: new.supported_languages,
        subscription_id: org.subscription_id,
        member_count: 1,
    })
}

/// `GET /api/workspaces/{workspaceId}`: to whoever may read its organization's workspaces;
/// 404 to anyone else, so IDs cannot be probed.
pub fn get(ctx: &Ctx<'_>, id: &str) -> Result<ApiResponse, Problem> {
    match repo::get_workspace(ctx.env.kv, id)? {
        Some(ws) if ctx.identity.may(&ws.org_id, WORKSPACE_READ).is_ok() => {
            Ok(ApiResponse::json(200, &json!({"data": ws})))
        }
        _ => Err(Problem::new(Kind::NotFound)),
    }
}

/// `GET /api/workspaces?orgId=…[&limit=…][&cursor=…]`: the organization's workspaces in
/// creation order, to whoever may read them.
pub fn list(ctx: &Ctx<'_>) -> Result<ApiResponse, Problem> {
    let mut errors = Vec::new();
    let (mut org, mut limit, mut from) = (None, DEFAULT_PAGE, 1_i64);
    for (name, value) in ctx.req.query_pairs() {
        match name.as_str() {
            "orgId" => {
                org = check_uuid(&value).or_else(|| {
                    errors.push(FieldError::new("/orgId", Reason::NotUuid));
                    None
                })
            }
            "limit" => match decimal(&value) {
                Some(n) if (1..=repo::MAX_PAGE as u64).contains(&n) => limit = n as usize,
                _ => errors.push(FieldError::new(
                    "/limit",
                    Reason::OutOfRange(1, repo::MAX_PAGE as i64),
                )),
            },
            "cursor" => match decode_cursor(&value) {
                Some(n) => from = n,
                None => errors.push(FieldError::new(
                    "/cursor",
                    Reason::WrongType(Expected::Cursor),
                )),
            },
            _ => errors.push(FieldError::new(&format!("/{name}"), Reason::Unknown)),
        }
    }
    if org.is_none() && errors.is_empty() {
        errors.push(FieldError::new("/orgId", Reason::Required));
    }
    let org = match org {
        Some(org) if errors.is_empty() => org,
        _ => return Err(Problem::invalid(Kind::InvalidQuery, errors)),
    };
    require(ctx, &org, WORKSPACE_READ)?;
    let (items, next) = repo::list_workspaces(ctx.env.kv, &org, from, limit)?;
    Ok(ApiResponse::json(
        200,
        &json!({"data": items, "nextCursor": next.map(encode_cursor)}),
    ))
}

/// Cursors are opaque to clients: the next index slot, behind a version prefix.
fn encode_cursor(slot: i64) -> String {
    format!("c1.{slot}")
}

/// The slot of a cursor this API returned: `c1.` and a positive number without leading zeros,
/// below 10^18 (`Cursor` in `openapi.yaml`). Anything else, `+1` or `01` included, is refused
/// rather than read leniently, so the document and the service accept the same cursors.
fn decode_cursor(cursor: &str) -> Option<i64> {
    let slot = cursor.strip_prefix("c1.")?;
    if slot.starts_with('0') || slot.len() > 18 {
        return None;
    }
    decimal(slot).and_then(|n| i64::try_from(n).ok())
}

/// A number written in decimal digits alone (no sign, no space; `parse` would take `+5`).
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
