//! `/api/orgs/{orgId}/settings`: the organization's backend settings.

use edge_contract::permission::{ORG_SETTINGS_READ, ORG_SETTINGS_WRITE};
use serde_json::{json, Value};

use crate::app::Ctx;
use crate::body;
use crate::handlers::require;
use crate::http::ApiResponse;
use crate::model::OrgSettings;
use crate::problem::{Expected, FieldError, Kind, Problem, Reason};
use crate::repo;
use crate::validate::check_uuid;

/// Longest accepted subscription ID.
pub const MAX_SUBSCRIPTION_CHARS: usize = 100;

fn response(org: &str, settings: &OrgSettings) -> ApiResponse {
    let mut body = serde_json::to_value(settings).unwrap_or(Value::Null);
    body["orgId"] = json!(org);
    ApiResponse::json(200, &json!({"data": body}))
}

fn org_id(raw: &str) -> Result<String, Problem> {
    check_uuid(raw).ok_or(Problem::new(Kind::NotFound))
}

/// `GET`: to whoever may read the organization's settings.
pub fn get_settings(ctx: &Ctx<'_>, org: &str) -> Result<ApiResponse, Problem> {
    let org = org_id(org)?;
    require(ctx, &org, ORG_SETTINGS_READ)?;
    Ok(response(&org, &repo::get_org_settings(ctx.env.kv, &org)?))
}

/// `PUT`: replaces the settings, for whoever may write them.
/// Body: `{"allowUserWorkspaceCreation": bool, "subscriptionId": string|null}`.
pub fn put_settings(ctx: &Ctx<'_>, org: &str) -> Result<ApiResponse, Problem> {
    let org = org_id(org)?;
    require(ctx, &org, ORG_SETTINGS_WRITE)?;
    let payload = body::json(ctx.req)?;
    let Some(obj) = payload.as_object() else {
        return Err(Problem::invalid(
            Kind::ValidationFailed,
            vec![FieldError::new("", Reason::WrongType(Expected::Object))],
        ));
    };
    let mut errors = Vec::new();
    for key in obj
        .keys()
        .filter(|k| !["allowUserWorkspaceCreation", "subscriptionId"].contains(&k.as_str()))
    {
        errors.push(FieldError::new(&format!("/{key}"), Reason::Unknown));
    }
    let allow = match obj.get("allowUserWorkspaceCreation") {
        Some(Value::Bool(b)) => *b,
        None => {
            errors.push(FieldError::new(
                "/allowUserWorkspaceCreation",
                Reason::Required,
            ));
            false
        }
        Some(_) => {
            errors.push(FieldError::new(
                "/allowUserWorkspaceCreation",
                Reason::WrongType(Expected::Boolean),
            ));
            false
        }
    };
    let subscription_id = match obj.get("subscriptionId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => {
            errors.push(FieldError::new("/subscriptionId", Reason::Empty));
            None
        }
        Some(Value::String(s)) if s.chars().count() > MAX_SUBSCRIPTION_CHARS => {
            errors.push(FieldError::new(
                "/subscriptionId",
                Reason::TooLong(MAX_SUBSCRIPTION_CHARS),
            ));
            None
        }
        Some(Value::String(s)) => Some(s.trim().to_owned()),
        Some(_) => {
            errors.push(FieldError::new(
                "/subscriptionId",
                Reason::WrongType(Expected::StringOrNull),
            ));
            None
        }
    };
    if !errors.is_empty() {
        return Err(Problem::invalid(Kind::ValidationFailed, errors));
    }
    let settings = OrgSettings {
        allow_user_workspace_creation: allow,
        subscription_id,
        updated_at: Some(ctx.env.timestamp()),
        updated_by: Some(ctx.identity.sub.clone()),
    };
    repo::put_org_settings(ctx.env.kv, &org, &settings)?;
    Ok(response(&org, &settings))
}
