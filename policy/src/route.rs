//! Route policies and the matching of a request's method and path to one of them.

use crate::config::{IdempotencyMode, OrgSource, RouteAuth};
use crate::permission::Condition;
use crate::ratelimit::Bucket;

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
    rest: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Param(String),
}

impl PathPattern {
    /// `/api/workspaces`, `/api/workspaces/{id}`, `/api/*`.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let body = pattern.strip_prefix('/').ok_or("must start with `/`")?;
        let mut segments = Vec::new();
        let mut rest = false;
        let parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            if *part == "*" {
                if i + 1 != parts.len() {
                    return Err("`*` may only be the last segment".into());
                }
                rest = true;
            } else if let Some(name) = part
                .strip_prefix('{')
                .and_then(|p| p.strip_suffix('}'))
                .filter(|n| !n.is_empty())
            {
                segments.push(Segment::Param(name.to_owned()));
            } else if part.is_empty() || part.contains(['{', '}', '*', '?', '#']) {
                return Err(format!("invalid segment {part:?}"));
            } else {
                segments.push(Segment::Literal((*part).to_owned()));
            }
        }
        Ok(Self { segments, rest })
    }

    /// Whether the pattern has a `{name}` segment.
    pub fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Param(n) if n == name))
    }

    /// The segment of `path` (which matches) in the place of `{name}`.
    pub fn param<'p>(&self, path: &'p str, name: &str) -> Option<&'p str> {
        let at = self
            .segments
            .iter()
            .position(|s| matches!(s, Segment::Param(n) if n == name))?;
        path.strip_prefix('/')?.split('/').nth(at)
    }

    /// Whether `path` (query string already removed) matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(body) = path.strip_prefix('/') else {
            return false;
        };
        let parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        if parts.len() < self.segments.len() || (!self.rest && parts.len() != self.segments.len()) {
            return false;
        }
        if self.rest && parts.len() == self.segments.len() {
            return false;
        }
        self.segments
            .iter()
            .zip(&parts)
            .all(|(seg, part)| match seg {
                Segment::Literal(l) => l == part,
                Segment::Param(_) => !part.is_empty(),
            })
    }
}

/// One route policy.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name (stats, rate-limit keys).
    pub name: String,
    /// Upper-case method.
    pub method: String,
    /// Path pattern.
    pub path: PathPattern,
    /// Permission required in the target organization.
    pub permission: Option<String>,
    /// Where the target organization comes from.
    pub org: Option<OrgSource>,
    /// ABAC conditions.
    pub conditions: Vec<Condition>,
    /// Per-user bucket.
    pub rate_limit: Option<Bucket>,
    /// The rate limit service that enforces `rate_limit` instead of the local buckets.
    pub rate_limit_service: Option<crate::rls::Service>,
    /// Idempotency-Key handling.
    pub idempotency: IdempotencyMode,
    /// Which checks are applied; the others run in dry-run.
    pub enforce: Enforce,
    /// The issuers (`iss`) whose tokens this route accepts; empty: every configured one.
    pub issuers: Vec<String>,
    /// Audiences the token must carry: at least one of `any_of` (when not empty) and every
    /// one of `all_of`.
    pub audiences: Audiences,
    /// Whether a token is needed.
    pub auth: RouteAuth,
}

/// A route's audience requirement; empty lists require nothing beyond the issuer's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audiences {
    /// At least one of these.
    pub any_of: Vec<String>,
    /// Every one of these.
    pub all_of: Vec<String>,
}

impl Audiences {
    /// Whether a token whose `aud` is `aud` (a string or a list) meets the requirement.
    pub fn met_by(&self, aud: Option<&serde_json::Value>) -> bool {
        let has = |want: &String| match aud {
            Some(serde_json::Value::String(a)) => a == want,
            Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
            _ => false,
        };
        (self.any_of.is_empty() || self.any_of.iter().any(has)) && self.all_of.iter().all(has)
    }
}

/// Which of a route's authorization checks are applied. A check not enforced still runs:
/// what it would have refused is counted (`dry_run.<reason>`) and logged with the request
/// ID, and the request goes on, so a team can watch a policy before turning it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enforce {
    /// Membership and permission in the target organization (and the token's scopes).
    pub permission: bool,
    /// The ABAC conditions.
    pub conditions: bool,
    /// The rate limit.
    pub rate_limit: bool,
}

impl Default for Enforce {
    fn default() -> Self {
        Self::all(true)
    }
}

impl Enforce {
    /// Every check applied (`true`) or every one in dry-run.
    pub fn all(on: bool) -> Self {
        Self {
            permission: on,
            conditions: on,
            rate_limit: on,
        }
    }

    /// Whether the check that found `denial` is applied.
    pub fn applies(&self, denial: crate::permission::Denial) -> bool {
        match denial {
            crate::permission::Denial::Condition => self.conditions,
            _ => self.permission,
        }
    }
}

/// Routes in configuration order; the first match wins.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// A table over these routes.
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The route for `method` and `path` (query string allowed; it is ignored).
    pub fn find(&self, method: &str, path: &str) -> Option<&Route> {
        self.position(method, path).and_then(|i| self.get(i))
    }

    /// The index of the route serving `method` on `path` (query and fragment ignored).
    pub fn position(&self, method: &str, path: &str) -> Option<usize> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.routes
            .iter()
            .position(|r| r.method == method && r.path.matches(path))
    }

    /// The route at `index`.
    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// The methods served on `path`, for `Allow` (empty: no route has this path).
    pub fn methods(&self, path: &str) -> Vec<&str> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.routes
            .iter()
            .filter(|r| r.path.matches(path))
            .map(|r| r.method.as_str())
            .collect()
    }

    /// All routes.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let cases = [
            ("/api/workspaces", "/api/workspaces", true),
            ("/api/workspaces", "/api/workspaces/", false),
            ("/api/workspaces", "/api/workspace", false),
            ("/api/workspaces/{id}", "/api/workspaces/w-1", true),
            ("/api/workspaces/{id}", "/api/workspaces", false),
            ("/api/workspaces/{id}", "/api/workspaces/w-1/members", false),
            ("/api/*", "/api/workspaces/w-1", true),
            ("/api/*", "/api", false),
            ("/", "/", true),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(
                PathPattern::parse(pattern).unwrap().matches(path),
                want,
                "{pattern} {path}"
            );
        }
        for bad in ["api", "/a/*/b", "/a//b", "/a/{", "/a/{}"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn named_segments() {
        let p = PathPattern::parse("/api/orgs/{orgId}/settings").unwrap();
        assert!(p.has_param("orgId") && !p.has_param("id"));
        assert_eq!(p.param("/api/orgs/o-1/settings", "orgId"), Some("o-1"));
        assert_eq!(p.param("/api/orgs/o-1/settings", "id"), None);
        let rest = PathPattern::parse("/{a}/x/{b}/*").unwrap();
        assert_eq!(rest.param("/1/x/2/3/4", "b"), Some("2"));
    }
}
