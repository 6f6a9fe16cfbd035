//! The configuration as written in `envoy.yaml`: serde structs that refuse unknown
//! fields, with their defaults (defined here only). Documented field by field in
//! `plugin/CONFIG.md`. The `Raw*` structs stop at validation; the enums that need no
//! conversion ([`Unmatched`], [`OrgSource`], [`IdempotencyMode`]) are the validated
//! [`Policy`](super::Policy)'s too.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::permission::Condition;
use crate::rls::FailureMode;

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Trusted token issuers.
    pub issuers: Vec<RawIssuer>,
    /// How the verified identity is signed for the backend.
    pub identity: RawIdentity,
    /// Role name to the permissions it carries.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    /// Per-route policies, matched in order.
    pub routes: Vec<RawRoute>,
    /// What happens to a request that matches no route.
    #[serde(default)]
    pub unmatched: Unmatched,
    /// Size limits and the per-address limit on unauthenticated traffic.
    #[serde(default)]
    pub limits: RawLimits,
    /// Idempotency record settings.
    #[serde(default)]
    pub idempotency: RawIdempotency,
    /// Leave every request's decision in Envoy filter state for access logs and later
    /// filters (`wasm.edge_decision`, `wasm.edge_reason`, `wasm.edge_dry_run`).
    #[serde(default)]
    pub decision_state: bool,
}

/// What to do with a request no route matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Require a valid token and forward the identity (the default: nothing passes unchecked).
    #[default]
    Authenticate,
    /// Answer 404 from the edge.
    Reject,
}

/// One trusted issuer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    /// The exact `iss` claim value.
    pub issuer: String,
    /// Accepted `aud` values; the token's audience must intersect them.
    pub audiences: Vec<String>,
    /// The algorithm allow-list, e.g. `["EdDSA", "RS256"]`.
    pub algorithms: Vec<String>,
    /// An inline JWKS document (`{"keys": [...]}`).
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// A JWKS fetched through an Envoy cluster.
    #[serde(default)]
    pub remote_jwks: Option<RawRemoteJwks>,
    /// Where else than `Authorization: Bearer` this issuer's tokens may come from.
    #[serde(default)]
    pub token_sources: Vec<RawTokenSource>,
    /// The claim holding the token's OAuth scopes (`scope` or `scp`); when set, the
    /// token's permissions are narrowed to its scopes.
    #[serde(default)]
    pub scope_claim: Option<String>,
    /// The header `typ` every token must carry, e.g. `at+jwt` (RFC 9068 access tokens).
    #[serde(default)]
    pub typ: Option<String>,
    /// Allowed clock difference for `exp`, `nbf` and `iat`.
    #[serde(default = "default_skew", deserialize_with = "duration::deserialize")]
    pub clock_skew: Duration,
    /// Longest accepted token lifetime (`exp - iat`).
    #[serde(
        default = "default_max_lifetime",
        deserialize_with = "duration::deserialize"
    )]
    pub max_lifetime: Duration,
}

fn default_skew() -> Duration {
    Duration::from_secs(60)
}
fn default_max_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// A place a token may be sent in: exactly one of `header` and `cookie`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenSource {
    /// A request header whose value is the token (after `prefix`).
    #[serde(default)]
    pub header: Option<String>,
    /// A prefix the header's value starts with, e.g. `"Token "`; compared ignoring case.
    #[serde(default)]
    pub prefix: Option<String>,
    /// A cookie whose value is the token.
    #[serde(default)]
    pub cookie: Option<String>,
}

/// A remote JWKS endpoint reached through an Envoy cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteJwks {
    /// The Envoy cluster that reaches the key server.
    pub cluster: String,
    /// The `:authority` sent to it (with `discovery`, the URL's host by default).
    #[serde(default)]
    pub authority: Option<String>,
    /// The path of the JWKS document.
    #[serde(default)]
    pub path: Option<String>,
    /// The issuer's OpenID Connect discovery document (URL), instead of `path`.
    #[serde(default)]
    pub discovery: Option<String>,
    /// The cluster that reaches the `jwks_uri` discovery names, when it is on another host.
    #[serde(default)]
    pub jwks_cluster: Option<String>,
    /// How often keys are refreshed.
    #[serde(
        default = "default_refresh",
        deserialize_with = "duration::deserialize"
    )]
    pub refresh_interval: Duration,
    /// Shortest interval between refreshes triggered by an unknown `kid`.
    #[serde(
        default = "default_min_refresh",
        deserialize_with = "duration::deserialize"
    )]
    pub min_refresh_interval: Duration,
    /// Timeout of one fetch.
    #[serde(
        default = "default_fetch_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub timeout: Duration,
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_min_refresh() -> Duration {
    Duration::from_secs(30)
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The key that signs forwarded identities. Exactly one of the two fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// The key itself (local development only).
    #[serde(default)]
    pub hmac_key: Option<String>,
    /// Name of an environment variable holding the key, exposed to the VM through
    /// `vm_config.environment_variables`.
    #[serde(default)]
    pub hmac_key_env: Option<String>,
}

/// One route policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Name used in stats and rate-limit keys.
    pub name: String,
    /// HTTP method, upper case.
    pub method: String,
    /// Path pattern: literal segments, `{param}` for one segment, a final `*` for the rest.
    pub path: String,
    /// Permission required in the target organization.
    #[serde(default)]
    pub permission: Option<String>,
    /// Where the target organization comes from.
    #[serde(default)]
    pub org: Option<OrgSource>,
    /// Conditions on claims that must all hold.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Per-user token bucket.
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
    /// Whether `Idempotency-Key` is required, optional or ignored.
    #[serde(default)]
    pub idempotency: IdempotencyMode,
    /// Which checks are applied (`false`: all in dry-run), by default all.
    #[serde(default)]
    pub enforce: Option<RawEnforce>,
    /// The issuers whose tokens this route accepts (any of them); all by default.
    #[serde(default)]
    pub issuers: Option<Vec<String>>,
    /// Audiences this route requires of the token, any or all of them.
    #[serde(default)]
    pub audiences: Option<RawAudiences>,
    /// Whether the route needs a token.
    #[serde(default)]
    pub auth: RouteAuth,
}

/// Whether a route needs a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum RouteAuth {
    /// A valid token, and the signed identity forwarded (the default).
    #[default]
    #[serde(rename = "token")]
    Token,
    /// No token is read and no identity is forwarded: for a probe such as `GET /healthz`,
    /// which the backend serves without an identity. Only `GET` and `HEAD`, with no
    /// permission, organization, condition, rate limit or idempotency.
    #[serde(rename = "none")]
    Anonymous,
    /// A token is not needed; one that is sent is verified (an invalid one is refused) and
    /// its identity forwarded. No permission, organization, condition, rate limit or
    /// idempotency, which would need a caller when none may be known.
    #[serde(rename = "optional")]
    Optional,
}

/// A route's audience requirement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudiences {
    /// The token's audience must contain at least one of these.
    #[serde(default)]
    pub any_of: Vec<String>,
    /// The token's audience must contain every one of these.
    #[serde(default)]
    pub all_of: Vec<String>,
}

/// `enforce`: a boolean for every check of the route, or one per check.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawEnforce {
    /// Every check.
    All(bool),
    /// Per check; a check not named is enforced.
    Each(RawEnforceEach),
}

/// `enforce` per check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnforceEach {
    /// Membership, permission and scopes.
    #[serde(default = "yes")]
    pub permission: bool,
    /// The ABAC conditions.
    #[serde(default = "yes")]
    pub conditions: bool,
    /// The rate limit.
    #[serde(default = "yes")]
    pub rate_limit: bool,
}

fn yes() -> bool {
    true
}

/// Where a route's target organization comes from (validation refuses an empty name).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum OrgSource {
    /// A top-level string field of the JSON body.
    BodyField(String),
    /// A string claim of the token.
    Claim(String),
    /// A `{name}` segment of the route's path, e.g. `orgId` in `/api/orgs/{orgId}/settings`:
    /// decided at the request's headers, compared as sent (no decoding or case folding).
    PathParam(String),
}

/// A token bucket: `requests` per `per`, refilled continuously.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Bucket size and requests per window.
    pub requests: u32,
    /// The window.
    #[serde(deserialize_with = "duration::deserialize")]
    pub per: Duration,
    /// Enforced by a rate limit service instead of the local buckets (routes only).
    #[serde(default)]
    pub service: Option<RawRateLimitService>,
}

/// A rate limit service reached through an Envoy cluster (gRPC, `ShouldRateLimit`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimitService {
    /// The Envoy cluster (HTTP/2) that reaches the service.
    pub cluster: String,
    /// The RLS domain the service's limits are configured under.
    pub domain: String,
    /// How long one call may take.
    #[serde(
        default = "default_rls_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub timeout: Duration,
    /// What an unanswered call decides.
    #[serde(default)]
    pub failure_mode: FailureMode,
}

fn default_rls_timeout() -> Duration {
    Duration::from_millis(250)
}

/// How a route treats `Idempotency-Key`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdempotencyMode {
    /// The header is ignored.
    #[default]
    Off,
    /// Used when present.
    Optional,
    /// 400 when absent.
    Required,
}

/// Size limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Longest accepted bearer token in bytes.
    #[serde(default = "default_max_token")]
    pub max_token_bytes: usize,
    /// Largest body buffered on routes that read it (413 beyond).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Per client address limit on requests that fail authentication.
    #[serde(default = "default_unauth")]
    pub unauthenticated: RawRateLimit,
    /// How long a request may wait for its issuer's keys to load.
    #[serde(
        default = "default_key_wait",
        deserialize_with = "duration::deserialize"
    )]
    pub key_wait: Duration,
    /// Number of hashed slots of per-user buckets in shared data (memory bound).
    #[serde(default = "default_rl_slots")]
    pub rate_limit_slots: u32,
    /// Number of hashed slots of per-address allowances in shared data (memory bound),
    /// apart from the per-user ones so failed authentications never displace them.
    #[serde(default = "default_unauth_slots")]
    pub unauthenticated_slots: u32,
    /// How many requests one worker holds at once while their issuer's keys load.
    #[serde(default = "default_max_waiting")]
    pub max_waiting_for_keys: u32,
    /// Verified tokens cached per worker.
    #[serde(default = "default_token_cache")]
    pub token_cache_entries: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_token_bytes: default_max_token(),
            max_body_bytes: default_max_body(),
            unauthenticated: default_unauth(),
            key_wait: default_key_wait(),
            rate_limit_slots: default_rl_slots(),
            unauthenticated_slots: default_unauth_slots(),
            max_waiting_for_keys: default_max_waiting(),
            token_cache_entries: default_token_cache(),
        }
    }
}

fn default_max_token() -> usize {
    8 * 1024
}
fn default_max_body() -> usize {
    64 * 1024
}
fn default_unauth() -> RawRateLimit {
    RawRateLimit {
        requests: 120,
        per: Duration::from_secs(60),
        service: None,
    }
}
fn default_key_wait() -> Duration {
    Duration::from_secs(5)
}
fn default_rl_slots() -> u32 {
    4096
}
fn default_unauth_slots() -> u32 {
    4096
}
fn default_max_waiting() -> u32 {
    64
}
fn default_token_cache() -> usize {
    1024
}

/// Idempotency records.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdempotency {
    /// How long a completed response is replayed.
    #[serde(
        default = "default_idem_ttl",
        deserialize_with = "duration::deserialize"
    )]
    pub ttl: Duration,
    /// How long an in-flight claim blocks retries if its request never completes.
    #[serde(
        default = "default_in_flight",
        deserialize_with = "duration::deserialize"
    )]
    pub in_flight_timeout: Duration,
    /// Largest response body stored for replay; larger responses release the key.
    #[serde(default = "default_idem_body")]
    pub max_response_bytes: usize,
    /// Number of hashed record slots in shared data (memory bound).
    #[serde(default = "default_idem_slots")]
    pub slots: u32,
}

impl Default for RawIdempotency {
    fn default() -> Self {
        Self {
            ttl: default_idem_ttl(),
            in_flight_timeout: default_in_flight(),
            max_response_bytes: default_idem_body(),
            slots: default_idem_slots(),
        }
    }
}

fn default_idem_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_in_flight() -> Duration {
    Duration::from_secs(60)
}
fn default_idem_body() -> usize {
    16 * 1024
}
fn default_idem_slots() -> u32 {
    1024
}
