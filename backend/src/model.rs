//! What the service stores and returns.

use serde::{Deserialize, Serialize};

/// An organization workspace (`/api/workspaces`), stored and returned as the seed's `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    /// `w-` followed by a UUID.
    pub workspace_id: String,
    /// The owning organization (lower-case UUID).
    pub org_id: String,
    /// Trimmed display name.
    pub name: String,
    /// Free text, `""` by default.
    pub description: String,
    /// One of [`VISIBILITIES`].
    pub visibility: String,
    /// The creator's subject.
    pub created_by: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
    /// Settings, with the server-side ones.
    pub settings: Settings,
    /// Normalized (ASCII, lower case), de-duplicated DNS names.
    pub allowed_domains: Vec<String>,
    /// Feature flags, with the server-side ones.
    pub feature_flags: FeatureFlags,
    /// Canonical BCP 47 tags, de-duplicated.
    pub supported_languages: Vec<String>,
    /// The organization's subscription, when it has one.
    pub subscription_id: Option<String>,
    /// Members, the creator included.
    pub member_count: u32,
}

/// Workspace settings; the last three are set by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// IANA time zone.
    pub timezone: String,
    /// Canonical BCP 47 tag, one of the supported languages.
    pub default_language: String,
    /// Education features on.
    pub education_mode: bool,
    /// One of [`LMS_INTEGRATIONS`].
    pub lms_integration: String,
    /// Exam generation on.
    pub exam_generation_enabled: bool,
    /// New members start in beginner mode.
    pub beginner_mode_default: bool,
    /// Server-side: data-loss prevention (always on).
    pub dlp_enabled: bool,
    /// Server-side: real-time summaries (always on).
    pub real_time_summaries: bool,
    /// Server-side: retention alerts (always on).
    pub retention_alerts: bool,
}

/// Feature flags; `meetingEnergyDashboard` is set by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureFlags {
    /// Live translation.
    pub real_time_translation: bool,
    /// Summaries tailored to each role.
    pub role_aware_summaries: bool,
    /// Exam generation.
    pub exam_generation: bool,
    /// Breakout rooms.
    pub breakout_rooms: bool,
    /// AI meeting attendee.
    pub ai_attendee: bool,
    /// Server-side, off until generally available.
    pub meeting_energy_dashboard: bool,
}

/// Allowed `visibility` values.
pub const VISIBILITIES: &[&str] = &["private", "org", "public"];
/// Allowed `settings.lmsIntegration` values.
pub const LMS_INTEGRATIONS: &[&str] = &[
    "none",
    "canvas",
    "moodle",
    "blackboard",
    "brightspace",
    "google-classroom",
    "schoology",
];

/// A v3 company workspace (`/api/v3/workspaces`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct V3Workspace {
    /// Allocated by an atomic counter.
    pub id: i64,
    /// The company (organization ID) it belongs to.
    pub company: String,
    /// 1 to 100 characters.
    pub name: String,
    /// `""` by default.
    pub description: String,
    /// The creator's subject.
    pub created_by: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
}

/// Workspaces created through v3 are custom workspaces.
pub const V3_WORKSPACE_TYPE: &str = "custom";
/// Documents reach v3 workspaces by manual upload until connectors are configured.
pub const V3_DOCUMENT_UPLOAD_METHOD: &str = "manual";

impl V3Workspace {
    /// The `StandardWorkspaceV3DetailsResponse` for a caller whose role is `user_role`.
    pub fn details(&self, user_role: &str) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "workspace_type": V3_WORKSPACE_TYPE,
            "document_upload_method": V3_DOCUMENT_UPLOAD_METHOD,
            "description": self.description,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "user_role": user_role,
            "used_storage": 0.0,
            "files_count": 0,
            "summaries": [],
        })
    }
}

/// A member of a workspace (the creator is stored as `OWNER`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    /// The workspace (`w-…` or the v3 integer as a string).
    pub workspace_id: String,
    /// The member ([`edge_contract::Identity::principal`]: issuer and subject).
    pub user: String,
    /// `OWNER`, `ADMIN` or `MEMBER`.
    pub role: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// An organization's backend settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct OrgSettings {
    /// Whether standard users (not admins) may create v3 workspaces. Off without a record.
    pub allow_user_workspace_creation: bool,
    /// The organization's subscription, copied into new workspaces.
    pub subscription_id: Option<String>,
    /// RFC 3339 UTC of the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Who made the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}
