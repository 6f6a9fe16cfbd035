//! A route's limit enforced by a rate limit service: Envoy's
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` (any standard RLS:
//! envoyproxy/ratelimit, Limitador, `edge-ratelimit`), so every gateway replica spends the
//! same counters.
//!
//! This module builds the request message and maps the answer (or its absence) to the same
//! [`Decision`] the local limiter makes, so the 429 and the `RateLimit`, `RateLimit-Policy`
//! and `Retry-After` headers are the same whichever enforces the limit. The host makes the
//! call (the filter: `proxy_dispatch_grpc_call` through an Envoy cluster).
//!
//! The messages are declared here with `prost` derive, with the fields and tags of Envoy's
//! `rls.proto` and `ratelimit.proto` that the exchange uses (unknown fields in an answer are
//! skipped, as protobuf requires).

use prost::Message;

use crate::ratelimit::{Bucket, Decision};

/// The gRPC service and method.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
/// The gRPC method.
pub const METHOD: &str = "ShouldRateLimit";

/// Descriptor entry naming the route (its `name`).
pub const ROUTE_KEY: &str = "route";
/// Descriptor entry naming the verified user (the principal the local limiter keys on).
pub const USER_KEY: &str = "user";

/// What happens when the service cannot answer (unreachable, timeout, error, unreadable
/// answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// 503 `rate_limit_unavailable` with `Retry-After` (fail closed).
    #[default]
    Deny,
    /// The request passes, without rate-limit headers.
    Allow,
}

/// Where and how to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The Envoy cluster that reaches the service (HTTP/2).
    pub cluster: String,
    /// The RLS domain.
    pub domain: String,
    /// How long the call may take.
    pub timeout_ms: u64,
    /// What an unanswered call decides.
    pub failure_mode: FailureMode,
}

/// `envoy.service.ratelimit.v3.RateLimitRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitRequest {
    /// The domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// The descriptors.
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    /// Hits this request adds (0 means 1).
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitDescriptor {
    /// The entries.
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
}

/// `RateLimitDescriptor.Entry`.
#[derive(Clone, PartialEq, Message)]
pub struct Entry {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitResponse {
    /// `Code`: 1 OK, 2 OVER_LIMIT.
    #[prost(int32, tag = "1")]
    pub overall_code: i32,
    /// One per descriptor sent.
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Clone, PartialEq, Message)]
pub struct DescriptorStatus {
    /// `Code`.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The limit applied.
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<RateLimit>,
    /// Hits left in the current window.
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    /// Until the window resets.
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<ProtoDuration>,
}

/// `RateLimitResponse.RateLimit`.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimit {
    /// Requests per unit.
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// `Unit`: 1 second, 2 minute, 3 hour, 4 day, 5 month, 6 year, 7 week.
    #[prost(int32, tag = "2")]
    pub unit: i32,
    /// Name.
    #[prost(string, tag = "3")]
    pub name: String,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct ProtoDuration {
    /// Seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

const CODE_OK: i32 = 1;
const CODE_OVER_LIMIT: i32 = 2;

/// The serialized `ShouldRateLimit` request for one hit of `route` by `user`: one
/// descriptor, `[("route", route), ("user", user)]`.
pub fn request(domain: &str, route: &str, user: &str) -> Vec<u8> {
    let entry = |key: &str, value: &str| Entry {
        key: key.to_owned(),
        value: value.to_owned(),
    };
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![entry(ROUTE_KEY, route), entry(USER_KEY, user)],
        }],
        hits_addend: 1,
    }
    .encode_to_vec()
}

/// Why a call brought no decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The call could not be started (no such cluster, host refused).
    NotStarted,
    /// The call ended with this gRPC status (4 DEADLINE_EXCEEDED: the timeout; 14
    /// UNAVAILABLE: unreachable).
    Status(u32),
    /// The answer is not a `RateLimitResponse` with a known code.
    Unreadable,
}

impl Failure {
    /// A short word for logs and stats.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotStarted => "not_started",
            Self::Status(4) => "timeout",
            Self::Status(14) => "unavailable",
            Self::Status(_) => "error",
            Self::Unreadable => "unreadable",
        }
    }
}

/// The decision the service's answer carries, with the `RateLimit-Policy` value: the
/// service's `current_limit` when it states one, else `bucket` (the route's configured
/// limit). The most restrictive status states what is left and when it resets.
pub fn decide(answer: &[u8], bucket: Bucket) -> Result<(Decision, Bucket), Failure> {
    let response = RateLimitResponse::decode(answer).map_err(|_| Failure::Unreadable)?;
    let allowed = match response.overall_code {
        CODE_OK => true,
        CODE_OVER_LIMIT => false,
        _ => return Err(Failure::Unreadable),
    };
    let tightest = response
        .statuses
        .iter()
        .filter(|s| s.current_limit.is_some())
        .min_by_key(|s| s.limit_remaining);
    let stated = tightest.and_then(|s| s.current_limit.as_ref().and_then(bucket_of));
    let policy = stated.unwrap_or(bucket);
    let reset_secs = tightest
        .and_then(|s| s.duration_until_reset)
        .map_or(policy.window_ms.div_ceil(1000), secs_ceil);
    let remaining = tightest.map_or(if allowed { policy.capacity } else { 0 }, |s| {
        s.limit_remaining.min(policy.capacity)
    });
    Ok((
        Decision {
            allowed,
            remaining: if allowed { remaining } else { 0 },
            reset_secs,
            retry_after_secs: if allowed { 0 } else { reset_secs.max(1) },
        },
        policy,
    ))
}

/// A stated limit as a bucket shape; `None` for an unknown unit or zero requests.
fn bucket_of(limit: &RateLimit) -> Option<Bucket> {
    let secs: u64 = match limit.unit {
        1 => 1,
        2 => 60,
        3 => 3_600,
        4 => 86_400,
        5 => 30 * 86_400,
        6 => 365 * 86_400,
        7 => 7 * 86_400,
        _ => return None,
    };
    (limit.requests_per_unit > 0).then_some(Bucket {
        capacity: limit.requests_per_unit,
        window_ms: secs * 1000,
    })
}

fn secs_ceil(d: ProtoDuration) -> u64 {
    let secs = u64::try_from(d.seconds).unwrap_or(0);
    secs + u64::from(d.nanos > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ROUTE: Bucket = Bucket {
        capacity: 20,
        window_ms: 60_000,
    };

    fn answer(code: i32, statuses: Vec<DescriptorStatus>) -> Vec<u8> {
        RateLimitResponse {
            overall_code: code,
            statuses,
        }
        .encode_to_vec()
    }

    fn status(code: i32, remaining: u32, reset: (i64, i32)) -> DescriptorStatus {
        DescriptorStatus {
            code,
            current_limit: Some(RateLimit {
                requests_per_unit: 10,
                unit: 2,
                name: "create".into(),
            }),
            limit_remaining: remaining,
            duration_until_reset: Some(ProtoDuration {
                seconds: reset.0,
                nanos: reset.1,
            }),
        }
    }

    #[test]
    fn the_request_names_the_route_and_the_user() {
        let bytes = request("workspace-api", "create-workspace", "iss|alice");
        let back = RateLimitRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.domain, "workspace-api");
        assert_eq!(back.hits_addend, 1);
        let entries: Vec<_> = back.descriptors[0]
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            entries,
            [("route", "create-workspace"), ("user", "iss|alice")]
        );
    }

    #[test]
    fn an_answer_maps_to_the_local_limiters_decision_and_headers() {
        // (answer, decision, RateLimit, RateLimit-Policy)
        let cases = [
            (
                answer(CODE_OK, vec![status(CODE_OK, 7, (41, 500))]),
                (true, 7, 42, 0),
                "\"create-workspace\";r=7;t=42",
                "\"create-workspace\";q=10;w=60",
            ),
            (
                answer(CODE_OVER_LIMIT, vec![status(CODE_OVER_LIMIT, 0, (12, 0))]),
                (false, 0, 12, 12),
                "\"create-workspace\";r=0;t=12",
                "\"create-workspace\";q=10;w=60",
            ),
            // No limit stated (the service has none for it): the route's own shape.
            (
                answer(CODE_OK, vec![DescriptorStatus::default()]),
                (true, 20, 60, 0),
                "\"create-workspace\";r=20;t=60",
                "\"create-workspace\";q=20;w=60",
            ),
            // Over the limit with a window that just reset: still a positive Retry-After.
            (
                answer(CODE_OVER_LIMIT, vec![status(CODE_OVER_LIMIT, 0, (0, 0))]),
                (false, 0, 0, 1),
                "\"create-workspace\";r=0;t=0",
                "\"create-workspace\";q=10;w=60",
            ),
        ];
        for (bytes, (allowed, remaining, reset, retry), header, policy) in cases {
            let (d, shape) = decide(&bytes, ROUTE).unwrap();
            assert_eq!(
                (d.allowed, d.remaining, d.reset_secs, d.retry_after_secs),
                (allowed, remaining, reset, retry)
            );
            assert_eq!(d.header("create-workspace"), header);
            assert_eq!(shape.policy_header("create-workspace"), policy);
        }
    }

    #[test]
    fn the_tightest_status_speaks_for_several() {
        let bytes = answer(
            CODE_OVER_LIMIT,
            vec![
                status(CODE_OK, 5, (30, 0)),
                status(CODE_OVER_LIMIT, 0, (9, 0)),
            ],
        );
        let (d, _) = decide(&bytes, ROUTE).unwrap();
        assert_eq!((d.allowed, d.reset_secs, d.retry_after_secs), (false, 9, 9));
    }

    #[test]
    fn unreadable_answers_are_failures_not_decisions() {
        for bytes in [
            vec![0xff, 0xff, 0xff],
            answer(0, vec![]),
            answer(3, vec![]),
            Vec::new(),
        ] {
            assert_eq!(decide(&bytes, ROUTE), Err(Failure::Unreadable), "{bytes:?}");
        }
        assert_eq!(Failure::Status(4).reason(), "timeout");
        assert_eq!(Failure::Status(14).reason(), "unavailable");
        assert_eq!(Failure::Status(13).reason(), "error");
        assert_eq!(Failure::NotStarted.reason(), "not_started");
    }
}
