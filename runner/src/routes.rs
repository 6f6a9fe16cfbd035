//! HTTP route matching with Spin's rules: an exact route beats a wildcard, and among
//! wildcards (`/prefix/...`) the longest prefix wins. Also the `spin-*` request headers that
//! tell a component how it was reached.

use std::net::SocketAddr;

use anyhow::{bail, Result};

use crate::manifest::HttpRoute;

/// Checks that spin-runner can serve a route: exact paths and trailing wildcards only.
pub fn validate_route(route: &str) -> Result<()> {
    let based = sanitize(route);
    let pattern = based
        .strip_suffix("/...")
        .or_else(|| route.strip_suffix("/*"))
        .unwrap_or(&based);
    if pattern.contains("...") || pattern.contains('*') {
        bail!("a wildcard is only allowed at the end of a route (`/prefix/...`)");
    }
    if pattern.split('/').any(|segment| segment.starts_with(':')) {
        bail!("route parameters (`:name`) are not supported by spin-runner");
    }
    Ok(())
}

/// Adds the leading slash Spin adds and strips one trailing slash, as Spin does.
fn sanitize(route: &str) -> String {
    let absolute = if route.starts_with('/') {
        route.to_owned()
    } else {
        format!("/{route}")
    };
    match absolute.strip_suffix('/') {
        Some(stripped) => stripped.to_owned(),
        None => absolute,
    }
}

#[derive(Debug, Clone)]
struct Entry {
    component: String,
    /// As written in the manifest.
    raw: String,
    /// Sanitized (leading slash added, one trailing slash removed).
    based: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Matches this path (with or without a trailing slash).
    Exact(String),
    /// Matches this prefix and everything below it; `""` matches every path.
    Wildcard(String),
}

/// The routes of an application.
#[derive(Debug, Clone)]
pub struct Router {
    entries: Vec<Entry>,
}

/// The route a request path matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The component that serves it.
    pub component: String,
    /// The route as written in the manifest (`spin-raw-component-route`).
    pub raw_route: String,
    /// The sanitized route (`spin-matched-route`).
    pub matched_route: String,
    /// The route without its wildcard (`spin-component-route`).
    pub component_route: String,
    /// The part of the path below a wildcard's prefix (`spin-path-info`); empty for exact routes.
    pub path_info: String,
}

impl Router {
    /// Builds the router; a route given twice is an error rather than a silent override.
    pub fn build(routes: &[HttpRoute]) -> Result<Self> {
        let mut entries: Vec<Entry> = Vec::new();
        for route in routes {
            validate_route(&route.route)?;
            let based = sanitize(&route.route);
            if let Some(previous) = entries.iter().find(|e| e.based == based) {
                bail!(
                    "route {:?} is given to both component {:?} and component {:?}",
                    route.route,
                    previous.component,
                    route.component
                );
            }
            let kind = match based
                .strip_suffix("/...")
                .or_else(|| based.strip_suffix("/*"))
            {
                Some(prefix) => Kind::Wildcard(prefix.to_owned()),
                None => Kind::Exact(based.clone()),
            };
            entries.push(Entry {
                component: route.component.clone(),
                raw: route.route.clone(),
                based,
                kind,
            });
        }
        Ok(Self { entries })
    }

    /// The routes, for the start-up banner: (route, component).
    pub fn describe(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|e| (e.raw.as_str(), e.component.as_str()))
    }

    /// The best route for a request path, if any.
    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let trimmed = match path.strip_suffix('/') {
            Some(stripped) => stripped,
            None => path,
        };
        let exact = self
            .entries
            .iter()
            .find(|e| matches!(&e.kind, Kind::Exact(p) if p == trimmed));
        let entry = exact.or_else(|| {
            self.entries
                .iter()
                .filter_map(|e| match &e.kind {
                    Kind::Wildcard(prefix) if is_under(path, prefix) => Some((prefix.len(), e)),
                    _ => None,
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, e)| e)
        })?;
        let path_info = match &entry.kind {
            Kind::Wildcard(prefix) => path[prefix.len()..].to_owned(),
            Kind::Exact(_) => String::new(),
        };
        Some(RouteMatch {
            component: entry.component.clone(),
            raw_route: entry.raw.clone(),
            matched_route: entry.based.clone(),
            component_route: entry
                .raw
                .strip_suffix("/...")
                .unwrap_or(&entry.raw)
                .to_owned(),
            path_info,
        })
    }
}

fn is_under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The `spin-*` headers Spin adds to every request, as (name, value) pairs.
pub fn spin_headers(
    route: &RouteMatch,
    host: &str,
    path_and_query: &str,
    client: SocketAddr,
) -> [(&'static str, String); 7] {
    [
        ("spin-path-info", route.path_info.clone()),
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-matched-route", route.matched_route.clone()),
        ("spin-base-path", "/".to_owned()),
        ("spin-raw-component-route", route.raw_route.clone()),
        ("spin-component-route", route.component_route.clone()),
        ("spin-client-addr", client.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        let routes: Vec<HttpRoute> = routes
            .iter()
            .map(|(route, component)| HttpRoute {
                route: route.to_string(),
                component: component.to_string(),
            })
            .collect();
        Router::build(&routes).unwrap()
    }

    #[test]
    fn most_specific_route_wins() {
        let r = router(&[
            ("/...", "root"),
            ("/api/...", "api"),
            ("/api/workspaces/...", "ws"),
            ("/api/health", "health"),
            ("/exact", "exact"),
        ]);
        // path → (component, path-info)
        let cases = [
            ("/", "root", "/"),
            ("/other/thing", "root", "/other/thing"),
            ("/api", "api", ""),
            ("/api/", "api", "/"),
            ("/api/x", "api", "/x"),
            ("/apix", "root", "/apix"),
            ("/api/health", "health", ""),
            ("/api/health/", "health", ""),
            ("/api/health/deeper", "api", "/health/deeper"),
            ("/api/workspaces", "ws", ""),
            ("/api/workspaces/abc", "ws", "/abc"),
            ("/api/workspaces/abc/", "ws", "/abc/"),
            ("/exact", "exact", ""),
            ("/exact/no", "root", "/exact/no"),
        ];
        for (path, component, path_info) in cases {
            let m = r.route(path).unwrap();
            assert_eq!(
                (m.component.as_str(), m.path_info.as_str()),
                (component, path_info),
                "{path}"
            );
        }
    }

    #[test]
    fn unmatched_paths_have_no_route() {
        let r = router(&[("/api/...", "api"), ("/health", "h")]);
        for path in ["/", "/ap", "/apis", "/health/x", "/other"] {
            assert_eq!(r.route(path), None, "{path}");
        }
    }

    #[test]
    fn order_of_declaration_does_not_matter() {
        let a = router(&[
            ("/one/...", "1"),
            ("/one/two/...", "2"),
            ("/one/two/three/...", "3"),
        ]);
        let b = router(&[
            ("/one/two/three/...", "3"),
            ("/one/two/...", "2"),
            ("/one/...", "1"),
        ]);
        for r in [a, b] {
            assert_eq!(r.route("/one/two/three/four").unwrap().component, "3");
            assert_eq!(r.route("/one/two/x").unwrap().component, "2");
        }
    }

    #[test]
    fn duplicate_routes_are_refused() {
        let routes = vec![
            HttpRoute {
                route: "/a/...".into(),
                component: "x".into(),
            },
            HttpRoute {
                route: "a/...".into(),
                component: "y".into(),
            },
        ];
        assert!(Router::build(&routes).is_err());
    }

    #[test]
    fn unsupported_patterns_are_refused() {
        for bad in ["/users/:id", "/a/.../b", "/a*b", "/x/.../..."] {
            assert!(validate_route(bad).is_err(), "{bad}");
        }
        for good in ["/", "/...", "/api/...", "/api/*", "/health", "relative/..."] {
            assert!(validate_route(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn spin_headers_match_spins_values() {
        let r = router(&[("/foo/...", "c")]);
        let m = r.route("/foo/bar").unwrap();
        let client: SocketAddr = "127.0.0.1:8777".parse().unwrap();
        let headers = spin_headers(&m, "fermyon.dev", "/foo/bar?key1=value1", client);
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).unwrap().1.clone();
        assert_eq!(
            get("spin-full-url"),
            "http://fermyon.dev/foo/bar?key1=value1"
        );
        assert_eq!(get("spin-path-info"), "/bar");
        assert_eq!(get("spin-matched-route"), "/foo/...");
        assert_eq!(get("spin-base-path"), "/");
        assert_eq!(get("spin-raw-component-route"), "/foo/...");
        assert_eq!(get("spin-component-route"), "/foo");
        assert_eq!(get("spin-client-addr"), "127.0.0.1:8777");
    }
}
