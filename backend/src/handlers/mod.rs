//! One module per resource; each handler reads like the API it serves.

pub mod health;
pub mod orgs;
pub mod v3;
pub mod workspaces;

use edge_contract::headers::{CONTENT_TYPE, IDEMPOTENCY_KEY};
use edge_contract::idempotency::{fingerprint, is_replayable, key_of};

use crate::app::Ctx;
use crate::http::ApiResponse;
use crate::idempotency::{self, Outcome, Resource};
use crate::problem::{Kind, Problem};

/// The caller may use `permission` in `org`, as the signed identity says (the filter's role
/// map, applied at the edge); otherwise 403 naming the permission. Never a role name.
pub fn require(ctx: &Ctx<'_>, org: &str, permission: &str) -> Result<(), Problem> {
    ctx.identity
        .may(org, permission)
        .map_err(|_| Problem::with_arg(Kind::Forbidden, permission))
}

/// The request's idempotency key, if it sent one; 400 when repeated or malformed.
pub fn idempotency_key<'a>(ctx: &'a Ctx<'_>) -> Result<Option<&'a str>, Problem> {
    let values = ctx.req.header_values(IDEMPOTENCY_KEY);
    key_of(&values.unwrap_or_default()).map_err(|_| Problem::new(Kind::InvalidIdempotencyKey))
}

/// Runs `create` at most once per (caller, idempotency key): replays a completed response,
/// refuses a concurrent or different reuse, releases the key when `create` fails. The
/// request's fingerprint is the contract's, over its decoded payload, as the edge computes
/// it: a retry in another encoding is a replay at both tiers. `new_id` draws the ID of what
/// `create` makes; a request that takes over the claim of one that died holding it gets
/// that request's ID instead, marked [`Resource::resumed`], and `create` must then finish
/// what may already be stored under it rather than make another.
pub fn once(
    ctx: &Ctx<'_>,
    key: Option<&str>,
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
    let req = ctx.req;
    let fingerprint = fingerprint(&req.method, &req.path, req.header(CONTENT_TYPE), &req.body);
    let claim = match idempotency::begin(
        kv,
        &ctx.identity.principal(),
        key,
        &fingerprint.to_hex(),
        ctx.env.now.timestamp(),
        &mut new_id,
    )? {
        Outcome::Replay(response) => return Ok(response),
        Outcome::Proceed(claim) => claim,
    };
    match create(claim.resource().clone()) {
        Ok(response) if is_replayable(response.status) => {
            if let Err(e) = idempotency::complete(kv, claim, &response) {
                // The workspace is stored; only the replay record is missing, and the
                // pending claim times out. Report the create as done.
                eprintln!("idempotency record not completed: {e}");
            }
            Ok(response)
        }
        outcome => {
            idempotency::release(kv, claim);
            outcome
        }
    }
}
