//! One module per resource; each handler reads like the API it serves.

pub mod orgs;
pub mod v3;
pub mod workspaces;

use edge_contract::Identity;

use crate::app::Ctx;
use crate::http::ApiResponse;
use crate::idempotency::{self, Outcome, Resource};
use crate::problem::{Kind, Problem};

/// Permission needed to create workspaces in an organization.
pub const CREATE_PERMISSION: &str = "workspace:create";

/// Whether the caller administers `org` (role `admin` or `owner`).
pub fn is_admin(identity: &Identity, org: &str) -> bool {
    identity
        .roles_in(org)
        .iter()
        .any(|r| r == "admin" || r == "owner")
}

/// Whether the caller may create workspaces in `org`: an administrator, or a member whose
/// token grants [`CREATE_PERMISSION`] explicitly.
pub fn can_create(identity: &Identity, org: &str) -> bool {
    is_admin(identity, org)
        || (identity.is_member(org) && identity.perms.iter().any(|p| p == CREATE_PERMISSION))
}

/// The request's idempotency key, if it sent one; 400 when malformed.
pub fn idempotency_key<'a>(ctx: &'a Ctx<'_>) -> Result<Option<&'a str>, Problem> {
    match ctx.req.header("idempotency-key") {
        None => Ok(None),
        Some(raw) => idempotency::parse_key(raw)
            .map(Some)
            .ok_or(Problem::new(Kind::InvalidIdempotencyKey)),
    }
}

/// Runs `create` at most once per (caller, idempotency key): replays a completed response,
/// refuses a concurrent or different reuse, releases the key when `create` fails. `new_id`
/// draws the ID of what `create` makes; a request that takes over the claim of one that
/// died holding it gets that request's ID instead, marked [`Resource::resumed`], and
/// `create` must then finish what may already be stored under it rather than make another.
pub fn once(
    ctx: &Ctx<'_>,
    key: Option<&str>,
    payload: &serde_json::Value,
    mut new_id: impl FnMut() -> Result<String, Problem>,
    create: impl FnOnce(Resource) -> Result<ApiResponse, Problem>,
) -> Result<ApiResponse, Problem> {
    let Some(key) = key else {
        return create(Resource {
            id: new_id()?,
            resumed: false,
        });
    };
    let kv = ctx.env.kv;
    let fingerprint = idempotency::fingerprint(&ctx.req.method, &ctx.req.path, payload);
    let claim = match idempotency::begin(
        kv,
        &ctx.identity.principal(),
        key,
        &fingerprint,
        ctx.env.now.timestamp(),
        &mut new_id,
    )? {
        Outcome::Replay(response) => return Ok(response),
        Outcome::Proceed(claim) => claim,
    };
    match create(claim.resource().clone()) {
        Ok(response) => {
            if let Err(e) = idempotency::complete(kv, claim, &response) {
                // The workspace is stored; only the replay record is missing, and the
                // pending claim times out. Report the create as done.
                eprintln!("idempotency record not completed: {e}");
            }
            Ok(response)
        }
        Err(problem) => {
            idempotency::release(kv, claim);
            Err(problem)
        }
    }
}
