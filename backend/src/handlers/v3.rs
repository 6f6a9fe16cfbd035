//! `/api/v3/workspaces`: company workspaces (seed 000).

use edge_contract::permission::{WORKSPACE_CREATE, WORKSPACE_CREATE_SELF_SERVICE, WORKSPACE_READ};
use serde_json::{Map, Value};

use crate::app::Ctx;
use crate::body;
use crate::handlers::{idempotency_key, once, require};
use crate::http::ApiResponse;
use crate::model::{Membership, V3Workspace};
use crate::problem::{Expected, FieldError, Kind, Problem, Reason};
use crate::repo;
use crate::validate::{check_name, MAX_DESCRIPTION_CHARS};

/// The caller's company: the token's `company` claim, else its only organization.
/// Several organizations and no claim is ambiguous (400); none at all is 403.
fn company(ctx: &Ctx<'_>) -> Result<String, Problem> {
    if let Some(company) = &ctx.identity.company {
        return Ok(company.clone());
    }
    let mut orgs = ctx.identity.orgs();
    match (orgs.next(), orgs.next()) {
        (Some(only), None) => Ok(only.to_owned()),
        (Some(_), Some(_)) => Err(Problem::new(Kind::CompanyRequired)),
        (None, _) => Err(Problem::new(Kind::CreationDisabled)),
    }
}

/// `name` (1 to 100 characters after trimming) and `description` (default `""`); any other
/// field is refused.
fn validate(fields: &Map<String, Value>) -> Result<(String, String), Problem> {
    let mut errors = Vec::new();
    for key in fields
        .keys()
        .filter(|k| *k != "name" && *k != "description")
    {
        errors.push(FieldError::new(&format!("/{key}"), Reason::Unknown));
    }
    let name = match fields.get("name") {
        None | Some(Value::Null) => Err(Reason::Required),
        Some(Value::String(s)) => check_name(s),
        Some(_) => Err(Reason::WrongType(Expected::String)),
    }
    .unwrap_or_else(|reason| {
        errors.push(FieldError::new("/name", reason));
        String::new()
    });
    let description = match fields.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.chars().count() > MAX_DESCRIPTION_CHARS => {
            errors.push(FieldError::new(
                "/description",
                Reason::TooLong(MAX_DESCRIPTION_CHARS),
            ));
            String::new()
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            errors.push(FieldError::new(
                "/description",
                Reason::WrongType(Expected::String),
            ));
            String::new()
        }
    };
    if errors.is_empty() {
        Ok((name, description))
    } else {
        Err(Problem::invalid(Kind::ValidationFailed, errors))
    }
}

/// Whether the caller may create a v3 workspace in `company`: with `workspace:create`
/// always; with `workspace:create:self-service` where the company allows user creation
/// (403 `workspace-creation-disabled` otherwise); with neither, 403 naming the second.
fn may_create(ctx: &Ctx<'_>, company: &str) -> Result<(), Problem> {
    if ctx.identity.may(company, WORKSPACE_CREATE).is_ok() {
        return Ok(());
    }
    require(ctx, company, WORKSPACE_CREATE_SELF_SERVICE)?;
    if repo::get_org_settings(ctx.env.kv, company)?.allow_user_workspace_creation {
        Ok(())
    } else {
        Err(Problem::new(Kind::CreationDisabled))
    }
}

/// `POST /api/v3/workspaces`.
pub fn create(ctx: &Ctx<'_>) -> Result<ApiResponse, Problem> {
    let key = idempotency_key(ctx)?;
    let fields = body::v3_fields(ctx.req)?;
    let (name, description) = validate(&fields)?;
    let company = company(ctx)?;
    may_create(ctx, &company)?;
    let kv = ctx.env.kv;
    // The fingerprint covers the decoded fields, so a retry may use another encoding.
    let new_id = || Ok(repo::next_v3_id(kv)?.to_string());
    once(ctx, key, new_id, |resource| {
        let id: i64 = resource
            .id
            .parse()
            .map_err(|_| Problem::new(Kind::Internal))?;
        let now = ctx.env.timestamp();
        let owner = Membership {
            workspace_id: resource.id,
            user: ctx.identity.principal(),
            role: "OWNER".into(),
            created_at: now.clone(),
        };
        let resumed = if resource.resumed {
            repo::resume_v3(kv, id, &owner)?
        } else {
            None
        };
        let ws = match resumed {
            Some(ws) => ws,
            None => {
                let ws = V3Workspace {
                    id,
                    company,
                    name,
                    description,
                    created_by: ctx.identity.sub.clone(),
                    created_at: now.clone(),
                    updated_at: now,
                };
                repo::create_v3(kv, &ws, &owner)?;
                ws
            }
        };
        Ok(ApiResponse::json(201, &ws.details("OWNER"))
            .with_header("location", &format!("/api/v3/workspaces/{id}")))
    })
}

/// `GET /api/v3/workspaces/{id}`: to whoever may read its company's workspaces; 404 to
/// anyone else.
pub fn get(ctx: &Ctx<'_>, id: &str) -> Result<ApiResponse, Problem> {
    let id: i64 = id.parse().map_err(|_| Problem::new(Kind::NotFound))?;
    let kv = ctx.env.kv;
    match repo::get_v3(kv, id)? {
        Some(ws) if ctx.identity.may(&ws.company, WORKSPACE_READ).is_ok() => {
            let role = repo::get_v3_membership(kv, id, &ctx.identity.principal())?
                .map_or_else(|| "MEMBER".to_owned(), |m| m.role);
            Ok(ApiResponse::json(200, &ws.details(&role)))
        }
        _ => Err(Problem::new(Kind::NotFound)),
    }
}
