//! `edge-ratelimit`: Envoy's rate limit service protocol
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`) on Kuadrant's
//! [`limitador`], so that every gateway replica spends the same counters.
//!
//! No limiting logic lives here. The configuration ([`Config`]) maps request descriptors
//! to limitador [`Limit`]s; limitador keeps the counters (in Redis when given a URL,
//! in memory otherwise) and decides. This crate only translates: the request's domain is
//! the limit's namespace, each descriptor is checked on its own, and each answer becomes
//! a `DescriptorStatus` with the limit, what is left and when the window resets.
//!
//! Admission is limitador's reservation (`reserve`): its Redis storage checks every
//! counter that applies and holds the hits in one Lua script, so two replicas (or two
//! concurrent calls) never admit the same last request. A hit's cost is known when it is
//! admitted, so nothing is committed later: the hold lasts until its window ends (the
//! script caps a hold at the window's end), which is what a counted hit does. (limitador's
//! `check_rate_limited_and_update` reads and then increments in two round trips, so
//! concurrent calls can admit past the limit; `commit_reservation` increments and then
//! releases the hold in two steps, so for a moment a hit counts twice and a request that
//! fits is refused.)

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use limitador::counter::Counter;
use limitador::limit::{Context, Expression, Limit, Namespace, Predicate};
use limitador::reservation::ReservationLimits;
use limitador::storage::in_memory::InMemoryStorage;
use limitador::storage::redis::AsyncRedisStorage;
use limitador::storage::{AsyncStorage, Storage};
use limitador::{AsyncRateLimiter, AsyncRateLimiterBuilder, RateLimiter, RateLimiterBuilder};
use serde::Deserialize;

/// The CEL binding limitador evaluates limits against: the list of one request
/// descriptor's entries, as `descriptors[0]["key"]` (the binding limitador's own server uses).
const DESCRIPTORS: &str = "descriptors";

/// How long an admitted hit is held: the longest window; the storage ends each hold with
/// its own window.
const HOLD: Duration = Duration::from_secs(86_400);

/// The limits file (TOML): `[[limit]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The limits.
    #[serde(default)]
    pub limit: Vec<LimitConfig>,
}

/// One limit: descriptors of `namespace` (the request's `domain`) whose entries equal
/// `descriptor` are counted per distinct values of the `per` entries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// The RLS domain the filter sends.
    pub namespace: String,
    /// Entries a descriptor must carry with exactly these values for the limit to apply.
    #[serde(default)]
    pub descriptor: BTreeMap<String, String>,
    /// Entries whose values key separate counters (e.g. `["user"]`: one counter per user);
    /// a descriptor without one of them is not counted by this limit.
    #[serde(default)]
    pub per: Vec<String>,
    /// Requests per window.
    pub max_value: u64,
    /// The window: 1, 60, 3600 or 86400 seconds (the units the protocol reports).
    pub seconds: u64,
    /// Name reported in `current_limit.name`.
    #[serde(default)]
    pub name: Option<String>,
}

impl Config {
    /// Parses and validates a limits file; the error names the limit and field.
    pub fn parse(text: &str) -> Result<Vec<Limit>, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config
            .limit
            .iter()
            .enumerate()
            .map(|(i, l)| l.to_limit().map_err(|why| format!("limit[{i}].{why}")))
            .collect()
    }
}

impl LimitConfig {
    fn to_limit(&self) -> Result<Limit, String> {
        if self.namespace.is_empty() {
            return Err("namespace: must not be empty".into());
        }
        if self.max_value == 0 {
            return Err("max_value: must be at least 1".into());
        }
        if unit_of(self.seconds).is_none() {
            return Err(format!(
                "seconds: {} is not 1, 60, 3600 or 86400 (the units a ShouldRateLimit answer can state)",
                self.seconds
            ));
        }
        let mut conditions = Vec::new();
        for (key, value) in &self.descriptor {
            let source = format!(
                "{DESCRIPTORS}[0][{}] == {}",
                literal(key).map_err(|why| format!("descriptor: {why}"))?,
                literal(value).map_err(|why| format!("descriptor.{key}: {why}"))?
            );
            conditions.push(Predicate::parse(source).map_err(|e| format!("descriptor: {e}"))?);
        }
        let mut variables = Vec::new();
        for key in &self.per {
            let source = format!(
                "{DESCRIPTORS}[0][{}]",
                literal(key).map_err(|why| format!("per: {why}"))?
            );
            variables.push(Expression::parse(source).map_err(|e| format!("per: {e}"))?);
        }
        let mut limit = Limit::new(
            self.namespace.as_str(),
            self.max_value,
            self.seconds,
            conditions,
            variables,
        );
        if let Some(name) = &self.name {
            limit.set_name(name.clone());
        }
        Ok(limit)
    }
}

/// A CEL string literal for a descriptor key or value: printable ASCII without quotes or
/// backslashes, so no escaping is needed and none can be abused.
fn literal(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("empty key or value".into());
    }
    if let Some(c) = text
        .chars()
        .find(|c| !c.is_ascii_graphic() && *c != ' ' || *c == '"' || *c == '\\')
    {
        return Err(format!("{text:?} has the character {c:?}"));
    }
    Ok(format!("\"{text}\""))
}

fn unit_of(seconds: u64) -> Option<Unit> {
    match seconds {
        1 => Some(Unit::Second),
        60 => Some(Unit::Minute),
        3600 => Some(Unit::Hour),
        86_400 => Some(Unit::Day),
        _ => None,
    }
}

/// limitador with one of its storages.
pub enum Limiter {
    /// In this process (counters are not shared).
    Memory(RateLimiter),
    /// In Redis, shared by every instance on the same server.
    Redis(AsyncRateLimiter),
}

/// One descriptor's verdict and the counters it touched.
struct Verdict {
    limited: bool,
    counters: Vec<Counter>,
}

impl Limiter {
    /// limitador on Redis at `redis_url`, or in memory without one, with `limits`.
    pub async fn new(redis_url: Option<&str>, limits: Vec<Limit>) -> anyhow::Result<Self> {
        let holds = ReservationLimits {
            max_fraction: 1.0,
            max_ttl: HOLD,
        };
        let limiter = match redis_url {
            Some(url) => {
                let counters = AsyncRedisStorage::new(url).await?;
                let storage = AsyncStorage::with_counter_storage(Box::new(counters));
                Self::Redis(
                    AsyncRateLimiterBuilder::new(storage)
                        .reservation_limits(holds)
                        .build(),
                )
            }
            None => {
                let counters = InMemoryStorage::new(10_000);
                let storage = Storage::with_counter_storage(Box::new(counters));
                Self::Memory(
                    RateLimiterBuilder::with_storage(storage)
                        .reservation_limits(holds)
                        .build(),
                )
            }
        };
        for limit in limits {
            match &limiter {
                Self::Memory(l) => l.add_limit(limit),
                Self::Redis(l) => l.add_limit(limit),
            };
        }
        Ok(limiter)
    }

    /// Admits `hits` against every limit that applies, or none (atomic per storage).
    async fn admit(
        &self,
        namespace: &Namespace,
        ctx: &Context<'_>,
        hits: u64,
    ) -> Result<Verdict, limitador::errors::LimitadorError> {
        let held = match self {
            Self::Memory(l) => l.reserve(namespace, ctx, hits, Some(HOLD))?,
            Self::Redis(l) => l.reserve(namespace, ctx, hits, Some(HOLD)).await?,
        };
        Ok(Verdict {
            limited: held.limited,
            counters: held.counters,
        })
    }

    /// Answers one `ShouldRateLimit` request.
    pub async fn should_rate_limit(
        &self,
        request: &RateLimitRequest,
    ) -> Result<RateLimitResponse, limitador::errors::LimitadorError> {
        let namespace = Namespace::from(request.domain.as_str());
        let hits = u64::from(request.hits_addend.max(1));
        let mut statuses = Vec::with_capacity(request.descriptors.len());
        for descriptor in &request.descriptors {
            let verdict = {
                let ctx = context_of(descriptor);
                self.admit(&namespace, &ctx, hits).await?
            };
            statuses.push(status_of(verdict));
        }
        let over = statuses.iter().any(|s| s.code == Code::OverLimit as i32);
        Ok(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            ..RateLimitResponse::default()
        })
    }
}

/// A `ShouldRateLimit` request of one descriptor with these entries, one hit (what the
/// filter sends; for tests and tools).
pub fn request(domain: &str, entries: &[(&str, &str)]) -> RateLimitRequest {
    let entries = entries
        .iter()
        .map(|(key, value)| Entry {
            key: (*key).to_owned(),
            value: (*value).to_owned(),
        })
        .collect();
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries,
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 1,
    }
}

fn context_of(descriptor: &RateLimitDescriptor) -> Context<'static> {
    let entries: HashMap<String, String> = descriptor
        .entries
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    let mut ctx = Context::default();
    ctx.list_binding(DESCRIPTORS.to_owned(), vec![entries]);
    ctx
}

/// The status of one descriptor: the most restrictive counter (least remaining) states
/// the limit, what is left and when its window resets.
fn status_of(verdict: Verdict) -> DescriptorStatus {
    let code = if verdict.limited {
        Code::OverLimit
    } else {
        Code::Ok
    } as i32;
    let tightest = verdict
        .counters
        .iter()
        .min_by_key(|c| c.remaining().unwrap_or(c.max_value()));
    let Some(counter) = tightest else {
        return DescriptorStatus {
            code,
            ..DescriptorStatus::default()
        };
    };
    let reset = counter.expires_in().unwrap_or(counter.window());
    DescriptorStatus {
        code,
        current_limit: Some(RateLimit {
            name: counter.limit().name().unwrap_or_default().to_owned(),
            requests_per_unit: u32::try_from(counter.max_value()).unwrap_or(u32::MAX),
            unit: unit_of(counter.window().as_secs()).unwrap_or(Unit::Unknown) as i32,
        }),
        limit_remaining: u32::try_from(counter.remaining().unwrap_or(counter.max_value()))
            .unwrap_or(u32::MAX),
        duration_until_reset: Some(ProtoDuration {
            seconds: i64::try_from(reset.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(reset.subsec_nanos()).unwrap_or(0),
        }),
        ..DescriptorStatus::default()
    }
}

/// The gRPC service over a [`Limiter`].
pub struct Service {
    limiter: Limiter,
}

impl Service {
    /// The service.
    pub fn new(limiter: Limiter) -> Self {
        Self { limiter }
    }

    /// The tonic server for it.
    pub fn into_server(self) -> RateLimitServiceServer<Self> {
        RateLimitServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        match self.limiter.should_rate_limit(request.get_ref()).await {
            Ok(response) => Ok(tonic::Response::new(response)),
            // The caller applies its failure mode (deny or allow) to an error.
            Err(e) => Err(tonic::Status::unavailable(format!("counter storage: {e}"))),
        }
    }
}

/// Serves the service on `listener` until `shutdown` completes.
pub async fn serve(
    service: Service,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    pub(crate) const LIMITS: &str = r#"
        [[limit]]
        namespace = "edge"
        descriptor = { route = "create" }
        per = ["user"]
        max_value = 3
        seconds = 60
        name = "create"
    "#;

    fn request(route: &str, user: &str) -> RateLimitRequest {
        super::request("edge", &[("route", route), ("user", user)])
    }

    #[test]
    fn bad_limits_name_the_field() {
        let cases = [
            (
                "[[limit]]\nnamespace = \"e\"\nmax_value = 1\nseconds = 90",
                "limit[0].seconds: 90 is not",
            ),
            (
                "[[limit]]\nnamespace = \"e\"\nmax_value = 0\nseconds = 60",
                "limit[0].max_value",
            ),
            (
                "[[limit]]\nnamespace = \"e\"\ndescriptor = { route = 'a\"b' }\nmax_value = 1\nseconds = 60",
                "limit[0].descriptor.route: ",
            ),
            (
                "[[limit]]\nnamespace = \"e\"\nper = ['u\\\\']\nmax_value = 1\nseconds = 60",
                "limit[0].per: ",
            ),
            ("[[limit]]\nnamespace = \"e\"\nmax = 1", "unknown field `max`"),
        ];
        for (text, want) in cases {
            let got = Config::parse(text).unwrap_err();
            assert!(got.contains(want), "{text}: {got}");
        }
    }

    #[tokio::test]
    async fn in_memory_counts_per_user_and_reports_the_limit() {
        let limiter = Limiter::new(None, Config::parse(LIMITS).unwrap())
            .await
            .unwrap();
        for left in [2, 1, 0] {
            let r = limiter
                .should_rate_limit(&request("create", "alice"))
                .await
                .unwrap();
            assert_eq!(r.overall_code, Code::Ok as i32);
            let status = &r.statuses[0];
            assert_eq!(status.limit_remaining, left);
            let limit = status.current_limit.as_ref().unwrap();
            assert_eq!(
                (limit.requests_per_unit, limit.unit, limit.name.as_str()),
                (3, Unit::Minute as i32, "create")
            );
            let reset = status.duration_until_reset.unwrap();
            assert!((1..=60).contains(&reset.seconds), "{reset:?}");
        }
        let over = limiter
            .should_rate_limit(&request("create", "alice"))
            .await
            .unwrap();
        assert_eq!(over.overall_code, Code::OverLimit as i32);
        assert_eq!(over.statuses[0].code, Code::OverLimit as i32);
        assert_eq!(over.statuses[0].limit_remaining, 0);
        // Another user, and another route (no limit applies): their own answers.
        let bob = limiter
            .should_rate_limit(&request("create", "bob"))
            .await
            .unwrap();
        assert_eq!(bob.statuses[0].limit_remaining, 2);
        let other = limiter
            .should_rate_limit(&request("list", "alice"))
            .await
            .unwrap();
        assert_eq!(other.overall_code, Code::Ok as i32);
        assert_eq!(other.statuses[0].current_limit, None);
    }
}
