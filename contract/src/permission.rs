//! Permissions: the names the backend checks, and how a caller's roles become the
//! permissions the signed [`crate::Identity`] carries.
//!
//! The filter's configuration (`roles`, plugin/CONFIG.md) is the one place that says what a
//! role may do. The edge applies it once, when it verifies the token ([`RoleMap::effective`]),
//! and forwards the result per organization; the backend checks permissions in the identity
//! ([`crate::Identity::may`]) and never a role name. So a platform team that changes the role
//! map changes what both tiers allow.

use std::collections::{BTreeMap, BTreeSet};

/// Create an organization workspace (`POST /api/workspaces`); on v3 also create whether or
/// not the company lets standard users do so.
pub const WORKSPACE_CREATE: &str = "workspace:create";
/// Create a v3 workspace in one's company where the company allows it
/// (`allowUserWorkspaceCreation`). Carried by every holder of [`WORKSPACE_CREATE`].
pub const WORKSPACE_CREATE_SELF_SERVICE: &str = "workspace:create:self-service";
/// Read the organization's workspaces (list, and read one by ID).
pub const WORKSPACE_READ: &str = "workspace:read";
/// Read the organization's settings.
pub const ORG_SETTINGS_READ: &str = "org:settings:read";
/// Replace the organization's settings.
pub const ORG_SETTINGS_WRITE: &str = "org:settings:write";

/// Every permission the backend checks.
pub const CHECKED_BY_BACKEND: [&str; 5] = [
    WORKSPACE_CREATE,
    WORKSPACE_CREATE_SELF_SERVICE,
    WORKSPACE_READ,
    ORG_SETTINGS_READ,
    ORG_SETTINGS_WRITE,
];

/// A permission that carries another: whoever may create regardless of the company's
/// setting may also create where the company allows it, so a role map that grants only
/// `workspace:create` does not let the edge refuse a v3 create the backend would accept.
const IMPLIED: [(&str, &str); 1] = [(WORKSPACE_CREATE, WORKSPACE_CREATE_SELF_SERVICE)];

/// Why a caller may not use a permission in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Not a member of the organization (or it does not exist).
    NotMember,
    /// A member without the permission.
    MissingPermission,
}

/// Role name to the permissions it carries, as the filter's configuration says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleMap {
    roles: BTreeMap<String, BTreeSet<String>>,
}

impl RoleMap {
    /// A map of `(role, permissions)`.
    pub fn new<R, P>(roles: R) -> Self
    where
        R: IntoIterator<Item = (String, P)>,
        P: IntoIterator<Item = String>,
    {
        Self {
            roles: roles
                .into_iter()
                .map(|(role, perms)| (role, perms.into_iter().collect()))
                .collect(),
        }
    }

    /// The permissions `role` carries (none for a role the map does not name).
    pub fn permissions_of(&self, role: &str) -> impl Iterator<Item = &str> {
        self.roles
            .get(role)
            .into_iter()
            .flat_map(|perms| perms.iter().map(String::as_str))
    }

    /// The caller's effective permissions per organization, from the token's `orgs` (org to
    /// roles) and `perms` (explicit grants): in every organization the caller belongs to, the
    /// permissions of its roles there, the explicit grants, and what those imply. An
    /// organization where the caller holds nothing stays, empty: membership is the
    /// organization's presence.
    pub fn effective(
        &self,
        orgs: &BTreeMap<String, Vec<String>>,
        grants: &[String],
    ) -> BTreeMap<String, BTreeSet<String>> {
        orgs.iter()
            .map(|(org, roles)| {
                let perms = roles
                    .iter()
                    .flat_map(|role| self.permissions_of(role))
                    .chain(grants.iter().map(String::as_str))
                    .map(str::to_owned)
                    .collect();
                (org.clone(), with_implied(perms))
            })
            .collect()
    }
}

/// `perms` and what they imply.
pub fn with_implied(mut perms: BTreeSet<String>) -> BTreeSet<String> {
    for (has, implies) in IMPLIED {
        if perms.contains(has) {
            perms.insert(implies.to_owned());
        }
    }
    perms
}

/// Narrows effective permissions to what an OAuth access token's scopes delegate: in each
/// organization, what the caller's roles give *and* the token's scopes (with what they
/// imply) name. Membership stays: an organization left with nothing is still listed.
pub fn restrict_to_scopes(
    permissions: &mut BTreeMap<String, BTreeSet<String>>,
    scopes: &BTreeSet<String>,
) {
    for perms in permissions.values_mut() {
        perms.retain(|p| scopes.contains(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> RoleMap {
        let perms = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        RoleMap::new([
            ("owner".to_owned(), perms(&CHECKED_BY_BACKEND)),
            (
                "member".to_owned(),
                perms(&[WORKSPACE_READ, ORG_SETTINGS_READ]),
            ),
            ("creator".to_owned(), perms(&[WORKSPACE_CREATE])),
        ])
    }

    fn orgs(list: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        list.iter()
            .map(|(o, r)| ((*o).to_owned(), r.iter().map(|s| (*s).to_owned()).collect()))
            .collect()
    }

    fn set(p: &[&str]) -> BTreeSet<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn roles_grants_and_implications_per_organization() {
        let map = shipped();
        let got = map.effective(
            &orgs(&[
                ("o-1", &["member"]),
                ("o-2", &["member", "creator"]),
                ("o-3", &["unknown-role"]),
                ("o-4", &[]),
            ]),
            &["custom:thing".to_owned()],
        );
        assert_eq!(
            got["o-1"],
            set(&[WORKSPACE_READ, ORG_SETTINGS_READ, "custom:thing"])
        );
        assert_eq!(
            got["o-2"],
            set(&[
                WORKSPACE_READ,
                ORG_SETTINGS_READ,
                WORKSPACE_CREATE,
                WORKSPACE_CREATE_SELF_SERVICE,
                "custom:thing"
            ])
        );
        assert_eq!(got["o-3"], set(&["custom:thing"]));
        assert_eq!(got["o-4"], set(&["custom:thing"]));
        assert_eq!(
            got.len(),
            4,
            "grants reach no organization the caller is not in"
        );
        let none = map.effective(&orgs(&[("o-1", &["unknown-role"])]), &[]);
        assert_eq!(
            none["o-1"],
            BTreeSet::new(),
            "a member with nothing is still a member"
        );
        assert!(map.effective(&BTreeMap::new(), &["x".into()]).is_empty());
        // Scopes narrow, never widen; what a scope implies is delegated with it.
        let mut narrowed = got.clone();
        let scopes = with_implied(set(&[WORKSPACE_CREATE, "custom:other"]));
        restrict_to_scopes(&mut narrowed, &scopes);
        assert_eq!(
            narrowed["o-2"],
            set(&[WORKSPACE_CREATE, WORKSPACE_CREATE_SELF_SERVICE])
        );
        assert_eq!(narrowed["o-1"], BTreeSet::new(), "still a member");
        assert_eq!(narrowed.len(), 4);
        assert_eq!(map.permissions_of("nobody").count(), 0);
    }
}
