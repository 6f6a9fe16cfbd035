//! The request pipeline: request ID, language, readable headers, routing, body size, the
//! gateway identity (signature, then nonce), then the handler; and the one place a
//! [`Problem`] becomes a response.

use chrono::{DateTime, SecondsFormat, Utc};
use edge_contract::headers::{ACCEPT_LANGUAGE, IDEMPOTENCY_KEY, REQUEST_ID};
use edge_contract::{request_id, Identity, Verifier, IDENTITY_HEADER, SIGNATURE_HEADER};

use crate::handlers;
use crate::http::{ApiRequest, ApiResponse, MAX_BODY_BYTES};
use crate::i18n::Lang;
use crate::problem::{Kind, Problem};
use crate::replay::{self, Seen};
use crate::router::Route;
use crate::store::Kv;

/// What a request runs against: the store, the keys, the clock and a UUID source.
pub struct Env<'a> {
    /// The key-value store.
    pub kv: &'a dyn Kv,
    /// The gateway identity verifier; `None` when `gateway_hmac_keys` is unset (every
    /// request then fails closed with 500).
    pub verifier: Option<&'a Verifier>,
    /// The current time.
    pub now: DateTime<Utc>,
    /// A fresh random UUID per call.
    pub new_uuid: &'a dyn Fn() -> uuid::Uuid,
}

impl Env<'_> {
    /// `now` in RFC 3339 UTC, seconds precision (`2025-10-22T15:45:30Z`).
    pub fn timestamp(&self) -> String {
        self.now.to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

/// Everything a handler knows about the request it serves.
pub struct Ctx<'a> {
    /// The request.
    pub req: &'a ApiRequest,
    /// The environment.
    pub env: &'a Env<'a>,
    /// The verified caller.
    pub identity: Identity,
}

/// Handles one request.
pub fn handle(req: &ApiRequest, env: &Env<'_>) -> ApiResponse {
    let lang = Lang::negotiate(req.header(ACCEPT_LANGUAGE));
    // The edge's parser: an ID the edge kept is kept here as it is. One the edge would have
    // refused (only a direct call can carry it) gets a fresh one instead of a 400, so that
    // every answer, the 401 of a direct call included, has an ID to log it by.
    let request_id = match req.header_values(REQUEST_ID).as_deref() {
        Ok([one]) => request_id::normalize(one).ok(),
        _ => None,
    }
    .unwrap_or_else(|| (env.new_uuid)().hyphenated().to_string());
    let response = match dispatch(req, env) {
        Ok(response) => response,
        Err(problem) => {
            if problem.kind.status() >= 500 || problem.kind == Kind::Unauthenticated {
                // The request ID ties this line to what the client saw; no secret is in
                // `cause`. A 401 is logged with its reason (stale, replayed, …), which the
                // client is not told.
                eprintln!(
                    "request {request_id}: {} {}: {} ({})",
                    req.method,
                    req.path,
                    problem.kind.type_uri(),
                    problem.cause.as_deref().unwrap_or("no cause")
                );
            }
            problem.to_response(lang, &req.path, &request_id)
        }
    };
    response.with_header(REQUEST_ID, &request_id)
}

fn dispatch(req: &ApiRequest, env: &Env<'_>) -> Result<ApiResponse, Problem> {
    readable_headers(req)?;
    let route = Route::parse(&req.path).ok_or(Problem::new(Kind::NotFound))?;
    let allowed = route.allowed();
    if !allowed.contains(&req.method.as_str()) {
        let allow = allowed.join(", ");
        return Err(
            Problem::with_arg(Kind::MethodNotAllowed, allow.clone()).with_header("allow", &allow)
        );
    }
    // Before authentication: the signature covers the whole body, which was not read.
    if req.body_too_large {
        return Err(Problem::with_arg(
            Kind::PayloadTooLarge,
            MAX_BODY_BYTES.to_string(),
        ));
    }
    if route == Route::Health {
        // No identity, but the same keys check: an instance that would refuse every
        // request for want of a key is not ready.
        env.verifier.ok_or_else(missing_key)?;
        return handlers::health::check(env);
    }
    let identity = authenticate(req, env)?;
    let ctx = Ctx { req, env, identity };
    match (route, req.method.as_str()) {
        (Route::Health, _) => handlers::health::check(env),
        (Route::Workspaces, "POST") => handlers::workspaces::create(&ctx),
        (Route::Workspaces, _) => handlers::workspaces::list(&ctx),
        (Route::Workspace(id), _) => handlers::workspaces::get(&ctx, &id),
        (Route::V3Workspaces, _) => handlers::v3::create(&ctx),
        (Route::V3Workspace(id), _) => handlers::v3::get(&ctx, &id),
        (Route::OrgSettings(org), "PUT") => handlers::orgs::put_settings(&ctx, &org),
        (Route::OrgSettings(org), _) => handlers::orgs::get_settings(&ctx, &org),
    }
}

/// Refuses a request whose interpreted headers cannot be read as they are: reading them
/// some other way (a lossy conversion) could make the backend act on a value the gateway
/// never saw.
fn readable_headers(req: &ApiRequest) -> Result<(), Problem> {
    match req.unreadable_header() {
        None => Ok(()),
        Some(IDEMPOTENCY_KEY) => Err(Problem::new(Kind::InvalidIdempotencyKey)),
        Some(name) => Err(Problem::with_arg(Kind::InvalidHeader, name)),
    }
}

fn unauthenticated(reason: &str) -> Problem {
    Problem {
        cause: Some(format!("gateway identity refused: {reason}")),
        ..Problem::new(Kind::Unauthenticated).with_header("www-authenticate", "Bearer")
    }
}

/// The 500 of a component whose `gateway_hmac_keys` holds no usable key.
fn missing_key() -> Problem {
    Problem {
        cause: Some(format!(
            "the Spin variable {} has no usable key",
            crate::KEYS_VARIABLE
        )),
        ..Problem::new(Kind::Internal)
    }
}

/// The caller, from the gateway's signed identity headers: an authentic, fresh signature
/// over this very request (body included) whose nonce was never accepted before.
fn authenticate(req: &ApiRequest, env: &Env<'_>) -> Result<Identity, Problem> {
    let verifier = env.verifier.ok_or_else(missing_key)?;
    let text = |name| {
        req.text(name)
            .map(Option::unwrap_or_default)
            .map_err(|_| unauthenticated("header not UTF-8"))
    };
    let path = req.path_and_query();
    let request = edge_contract::Request {
        request_id: req.header(REQUEST_ID).unwrap_or(""),
        method: &req.method,
        path: &path,
        body: &req.body,
    };
    let now = env.now.timestamp();
    let verified = verifier
        .verify(
            text(IDENTITY_HEADER)?,
            text(SIGNATURE_HEADER)?,
            &request,
            u64::try_from(now).unwrap_or(0),
        )
        .map_err(|e| unauthenticated(e.reason()))?;
    let until = verifier.accepted_until(verified.timestamp);
    match replay::remember(env.kv, &verified.nonce_text(), until, now)? {
        Seen::First => Ok(verified.identity),
        Seen::Again => Err(unauthenticated("replayed_nonce")),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use edge_contract::{Identity, Signer};

    use super::*;
    use crate::store::MemoryKv;

    const KEY: &[u8] = b"test-gateway-key-0123456789abcdef";

    #[test]
    fn a_replay_is_the_same_401_as_a_forgery_but_logged_apart() {
        let kv = MemoryKv::new();
        let verifier = Verifier::new(vec![KEY.to_vec()]);
        let env = Env {
            kv: &kv,
            verifier: Some(&verifier),
            now: Utc.timestamp_opt(1_795_000_000, 0).unwrap(),
            new_uuid: &uuid::Uuid::nil,
        };
        let who = Identity {
            iss: "https://idp.example".into(),
            sub: "u-1".into(),
            ..Identity::default()
        };
        let req = ApiRequest::new("GET", "/api/workspaces/w-1").with_header("x-request-id", "r");
        let gateway = edge_contract::Request {
            request_id: "r",
            method: "GET",
            path: "/api/workspaces/w-1",
            body: b"",
        };
        let signed = Signer::new(KEY.to_vec()).sign(&who, &gateway, 1_795_000_000, [1; 16]);
        let req = req
            .with_header(IDENTITY_HEADER, &signed.identity)
            .with_header(SIGNATURE_HEADER, &signed.signature);
        assert_eq!(authenticate(&req, &env), Ok(who));
        let replayed = authenticate(&req, &env).unwrap_err();
        let mut forged = req.clone();
        forged.method = "PUT".into();
        let forged = authenticate(&forged, &env).unwrap_err();
        let cause = |p: &Problem| p.cause.clone().unwrap_or_default();
        assert_eq!(cause(&replayed), "gateway identity refused: replayed_nonce");
        assert_eq!(cause(&forged), "gateway identity refused: bad_signature");
        let render = |p: &Problem| p.to_response(Lang::En, "/x", "r");
        assert_eq!(render(&replayed), render(&forged));
    }
}
