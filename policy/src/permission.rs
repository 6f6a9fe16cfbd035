//! Who may act on an organization: the permissions the identity carries there (the role
//! map applied when the token was verified, [`edge_contract::permission`]), and ABAC
//! conditions on claims.

use edge_contract::Identity;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A condition on one claim. Exactly one of the tests is given.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Claim name, e.g. `email_verified`.
    pub claim: String,
    /// The claim equals this JSON value.
    #[serde(default)]
    pub equals: Option<Value>,
    /// The claim (a string) is one of these.
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<String>>,
    /// The claim is an e-mail address in one of these domains.
    #[serde(default)]
    pub email_domain_in: Option<Vec<String>>,
}

impl Condition {
    /// Checks that exactly one test is set.
    pub fn validate(&self) -> Result<(), String> {
        let n = usize::from(self.equals.is_some())
            + usize::from(self.one_of.is_some())
            + usize::from(self.email_domain_in.is_some());
        if self.claim.is_empty() {
            return Err("`claim` must not be empty".into());
        }
        if n != 1 {
            return Err("exactly one of `equals`, `in`, `email_domain_in` is required".into());
        }
        Ok(())
    }

    /// Whether the claims satisfy this condition. A missing claim never does.
    pub fn holds(&self, claims: &Map<String, Value>) -> bool {
        let Some(value) = claims.get(&self.claim) else {
            return false;
        };
        if let Some(want) = &self.equals {
            return value == want;
        }
        if let Some(list) = &self.one_of {
            return value.as_str().is_some_and(|v| list.iter().any(|l| l == v));
        }
        if let Some(domains) = &self.email_domain_in {
            let Some((local, domain)) = value.as_str().and_then(|v| v.rsplit_once('@')) else {
                return false;
            };
            return !local.is_empty() && domains.iter().any(|d| d.eq_ignore_ascii_case(domain));
        }
        false
    }
}

/// Why an action was denied (the stats reason; never shown to the client, whose 403 does
/// not say whether the organization exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Not a member of the organization (or it does not exist).
    NotMember,
    /// Member without the permission.
    MissingPermission,
    /// An ABAC condition failed.
    Condition,
    /// The caller's roles give the permission, but the token's scopes do not delegate it.
    InsufficientScope,
}

impl Denial {
    /// Stats reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotMember => "not_member",
            Self::MissingPermission => "missing_permission",
            Self::Condition => "condition_failed",
            Self::InsufficientScope => "insufficient_scope",
        }
    }
}

impl From<edge_contract::Denial> for Denial {
    fn from(d: edge_contract::Denial) -> Self {
        match d {
            edge_contract::Denial::NotMember => Self::NotMember,
            edge_contract::Denial::MissingPermission => Self::MissingPermission,
        }
    }
}

/// Decides whether `identity` may use `permission` in `org`, as the backend decides it
/// ([`Identity::may`]), and whether the route's conditions hold.
pub fn authorize(
    identity: &Identity,
    claims: &Map<String, Value>,
    org: &str,
    permission: &str,
    conditions: &[Condition],
) -> Result<(), Denial> {
    identity.may(org, permission)?;
    check_conditions(claims, conditions)
}

/// Every ABAC condition must hold.
pub fn check_conditions(
    claims: &Map<String, Value>,
    conditions: &[Condition],
) -> Result<(), Denial> {
    if conditions.iter().all(|c| c.holds(claims)) {
        Ok(())
    } else {
        Err(Denial::Condition)
    }
}
