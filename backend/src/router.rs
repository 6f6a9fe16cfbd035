//! Which resource a path names, and the methods it accepts.

/// A resource of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`: the health probe, served without an identity.
    Health,
    /// `/api/workspaces`: create (POST) and list (GET).
    Workspaces,
    /// `/api/workspaces/{workspaceId}`.
    Workspace(String),
    /// `/api/v3/workspaces`: create.
    V3Workspaces,
    /// `/api/v3/workspaces/{id}`.
    V3Workspace(String),
    /// `/api/orgs/{orgId}/settings`.
    OrgSettings(String),
}

impl Route {
    /// The resource at `path`, if any.
    pub fn parse(path: &str) -> Option<Route> {
        if path == "/healthz" {
            return Some(Route::Health);
        }
        let rest = path.strip_prefix("/api/")?;
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            ["workspaces"] => Some(Route::Workspaces),
            ["workspaces", id] if !id.is_empty() => Some(Route::Workspace((*id).to_owned())),
            ["v3", "workspaces"] => Some(Route::V3Workspaces),
            ["v3", "workspaces", id] if !id.is_empty() => {
                Some(Route::V3Workspace((*id).to_owned()))
            }
            ["orgs", org, "settings"] if !org.is_empty() => {
                Some(Route::OrgSettings((*org).to_owned()))
            }
            _ => None,
        }
    }

    /// The methods this resource accepts, for `Allow`.
    pub fn allowed(&self) -> &'static [&'static str] {
        match self {
            Route::Workspaces => &["GET", "POST"],
            Route::Health | Route::Workspace(_) | Route::V3Workspace(_) => &["GET"],
            Route::V3Workspaces => &["POST"],
            Route::OrgSettings(_) => &["GET", "PUT"],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_their_methods() {
        let cases = [
            ("/api/workspaces", Some(Route::Workspaces)),
            ("/api/workspaces/w-1", Some(Route::Workspace("w-1".into()))),
            ("/api/workspaces/", None),
            ("/api/workspaces/w-1/x", None),
            ("/api/v3/workspaces", Some(Route::V3Workspaces)),
            ("/api/v3/workspaces/7", Some(Route::V3Workspace("7".into()))),
            ("/api/orgs/o/settings", Some(Route::OrgSettings("o".into()))),
            ("/api/orgs//settings", None),
            ("/other", None),
            ("/healthz", Some(Route::Health)),
            ("/healthz/", None),
            ("/api/healthz", None),
        ];
        for (path, want) in cases {
            assert_eq!(Route::parse(path), want, "{path}");
        }
        assert_eq!(Route::Workspaces.allowed(), &["GET", "POST"]);
    }
}
