//! Validation of `POST /api/workspaces` bodies: every offending field is reported, with a
//! JSON pointer, in one response.

use std::str::FromStr;

use serde_json::{Map, Value};

use crate::model::{FeatureFlags, LMS_INTEGRATIONS, VISIBILITIES};
use crate::problem::{Expected, FieldError, Reason};

/// Longest workspace name, in characters (both APIs).
pub const MAX_NAME_CHARS: usize = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Most entries in `allowedDomains` or `supportedLanguages`.
pub const MAX_LIST_ITEMS: usize = 50;

/// A validated, normalized creation request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWorkspace {
    /// Lower-case UUID.
    pub org_id: String,
    /// Trimmed name.
    pub name: String,
    /// Description, `""` when absent.
    pub description: String,
    /// Visibility, `org` when absent.
    pub visibility: String,
    /// IANA zone, `UTC` when absent.
    pub timezone: String,
    /// Canonical tag; the first supported language (or `en-US`) when absent.
    pub default_language: String,
    /// Flag, false when absent.
    pub education_mode: bool,
    /// LMS, `none` when absent.
    pub lms_integration: String,
    /// Flag, false when absent.
    pub exam_generation_enabled: bool,
    /// Flag, false when absent.
    pub beginner_mode_default: bool,
    /// Normalized domains.
    pub allowed_domains: Vec<String>,
    /// `featureFlags`, each false when absent; the server-side `meetingEnergyDashboard` off.
    pub feature_flags: FeatureFlags,
    /// Canonical tags; `[defaultLanguage]` when absent.
    pub supported_languages: Vec<String>,
}

const TOP: &[&str] = &[
    "orgId",
    "name",
    "description",
    "visibility",
    "settings",
    "allowedDomains",
    "featureFlags",
    "supportedLanguages",
];
const SETTINGS: &[&str] = &[
    "timezone",
    "defaultLanguage",
    "educationMode",
    "lmsIntegration",
    "examGenerationEnabled",
    "beginnerModeDefault",
];
const FLAGS: &[&str] = &[
    "realTimeTranslation",
    "roleAwareSummaries",
    "examGeneration",
    "breakoutRooms",
    "aiAttendee",
];

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, pointer: &str, reason: Reason) {
        self.0.push(FieldError::new(pointer, reason));
    }

    fn unknown_fields(&mut self, obj: &Map<String, Value>, prefix: &str, known: &[&str]) {
        for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            self.add(&format!("{prefix}/{}", escape(key)), Reason::Unknown);
        }
    }

    fn string(&mut self, obj: &Map<String, Value>, prefix: &str, key: &str) -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.add(
                    &format!("{prefix}/{key}"),
                    Reason::WrongType(Expected::String),
                );
                None
            }
        }
    }

    fn boolean(&mut self, obj: &Map<String, Value>, prefix: &str, key: &str) -> bool {
        match obj.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.add(
                    &format!("{prefix}/{key}"),
                    Reason::WrongType(Expected::Boolean),
                );
                false
            }
        }
    }

    fn object<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        key: &str,
    ) -> Option<&'v Map<String, Value>> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(_) => {
                self.add(&format!("/{key}"), Reason::WrongType(Expected::Object));
                None
            }
        }
    }

    fn string_list(&mut self, obj: &Map<String, Value>, key: &str) -> Option<Vec<(usize, String)>> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                if items.len() > MAX_LIST_ITEMS {
                    self.add(&format!("/{key}"), Reason::TooLong(MAX_LIST_ITEMS));
                    return None;
                }
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push((i, s.clone())),
                        _ => self.add(&format!("/{key}/{i}"), Reason::WrongType(Expected::String)),
                    }
                }
                Some(out)
            }
            Some(_) => {
                self.add(&format!("/{key}"), Reason::WrongType(Expected::StringArray));
                None
            }
        }
    }
}

/// JSON pointer escaping (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A trimmed name of 1 to [`MAX_NAME_CHARS`] characters.
pub fn check_name(raw: &str) -> Result<String, Reason> {
    let name = raw.trim();
    if name.is_empty() {
        Err(Reason::Empty)
    } else if name.chars().any(char::is_control) {
        Err(Reason::ControlCharacters)
    } else if name.chars().count() > MAX_NAME_CHARS {
        Err(Reason::TooLong(MAX_NAME_CHARS))
    } else {
        Ok(name.to_owned())
    }
}

/// The lower-case hyphenated form of a UUID.
pub fn check_uuid(raw: &str) -> Option<String> {
    if raw.len() != 36 {
        return None;
    }
    uuid::Uuid::parse_str(raw)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// The canonical form of a registered BCP 47 tag (`EN-us` → `en-US`).
pub fn check_language(raw: &str) -> Option<String> {
    let tag = language_tags::LanguageTag::parse(raw).ok()?;
    tag.validate().ok()?;
    tag.canonicalize().ok().map(|t| t.to_string())
}

/// Whether `raw` names a zone of the IANA time zone database.
pub fn check_timezone(raw: &str) -> bool {
    chrono_tz::Tz::from_str(raw).is_ok()
}

/// The ASCII (punycode), lower-case form of a DNS name of at least two labels.
pub fn check_domain(raw: &str) -> Option<String> {
    let trimmed = raw.trim().strip_suffix('.').unwrap_or(raw.trim());
    let ascii = idna::domain_to_ascii_strict(trimmed).ok()?;
    let labels: Vec<&str> = ascii.split('.').collect();
    let tld = labels.last()?;
    // A name ending in an all-numeric label is an IP address, not a domain.
    if labels.len() < 2
        || tld.bytes().all(|b| b.is_ascii_digit())
        || labels.iter().any(|l| l.is_empty() || l.len() > 63)
    {
        return None;
    }
    Some(ascii)
}

/// Validates a parsed JSON body.
pub fn new_workspace(body: &Value) -> Result<NewWorkspace, Vec<FieldError>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError::new(
            "",
            Reason::WrongType(Expected::Object),
        )]);
    };
    let mut e = Errors(Vec::new());
    e.unknown_fields(obj, "", TOP);

    let org_id = match e.string(obj, "", "orgId") {
        None if !obj.contains_key("orgId") || obj["orgId"].is_null() => {
            e.add("/orgId", Reason::Required);
            String::new()
        }
        None => String::new(),
        Some(raw) => check_uuid(&raw).unwrap_or_else(|| {
            e.add("/orgId", Reason::NotUuid);
            String::new()
        }),
    };
    let name = match e.string(obj, "", "name") {
        None if obj.get("name").is_none_or(Value::is_null) => {
            e.add("/name", Reason::Required);
            String::new()
        }
        None => String::new(),
        Some(raw) => check_name(&raw).unwrap_or_else(|r| {
            e.add("/name", r);
            String::new()
        }),
    };
    let description = e.string(obj, "", "description").unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        e.add("/description", Reason::TooLong(MAX_DESCRIPTION_CHARS));
    }
    let visibility = e
        .string(obj, "", "visibility")
        .unwrap_or_else(|| "org".into());
    if !VISIBILITIES.contains(&visibility.as_str()) {
        e.add("/visibility", Reason::NotOneOf(VISIBILITIES));
    }

    let empty = Map::new();
    let settings = e.object(obj, "settings").unwrap_or(&empty);
    e.unknown_fields(settings, "/settings", SETTINGS);
    let timezone = e
        .string(settings, "/settings", "timezone")
        .unwrap_or_else(|| "UTC".into());
    if !check_timezone(&timezone) {
        e.add("/settings/timezone", Reason::NotTimezone);
    }
    let default_language = e
        .string(settings, "/settings", "defaultLanguage")
        .map(|raw| {
            check_language(&raw).unwrap_or_else(|| {
                e.add("/settings/defaultLanguage", Reason::NotLanguageTag);
                raw
            })
        });
    let education_mode = e.boolean(settings, "/settings", "educationMode");
    let lms_integration = e
        .string(settings, "/settings", "lmsIntegration")
        .unwrap_or_else(|| "none".into());
    if !LMS_INTEGRATIONS.contains(&lms_integration.as_str()) {
        e.add(
            "/settings/lmsIntegration",
            Reason::NotOneOf(LMS_INTEGRATIONS),
        );
    }
    let exam_generation_enabled = e.boolean(settings, "/settings", "examGenerationEnabled");
    let beginner_mode_default = e.boolean(settings, "/settings", "beginnerModeDefault");

    let flags_obj = e.object(obj, "featureFlags").unwrap_or(&empty);
    e.unknown_fields(flags_obj, "/featureFlags", FLAGS);
    let mut flag = |key| e.boolean(flags_obj, "/featureFlags", key);
    let feature_flags = FeatureFlags {
        real_time_translation: flag("realTimeTranslation"),
        role_aware_summaries: flag("roleAwareSummaries"),
        exam_generation: flag("examGeneration"),
        breakout_rooms: flag("breakoutRooms"),
        ai_attendee: flag("aiAttendee"),
        meeting_energy_dashboard: false,
    };

    let mut allowed_domains: Vec<String> = Vec::new();
    for (i, raw) in e.string_list(obj, "allowedDomains").unwrap_or_default() {
        match check_domain(&raw) {
            Some(d) if !allowed_domains.contains(&d) => allowed_domains.push(d),
            Some(_) => {}
            None => e.add(&format!("/allowedDomains/{i}"), Reason::NotDomain),
        }
    }

    let languages = e.string_list(obj, "supportedLanguages");
    let given_languages = languages.is_some();
    let mut supported_languages: Vec<String> = Vec::new();
    for (i, raw) in languages.unwrap_or_default() {
        match check_language(&raw) {
            Some(tag)
                if !supported_languages
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(&tag)) =>
            {
                supported_languages.push(tag)
            }
            Some(_) => {}
            None => e.add(&format!("/supportedLanguages/{i}"), Reason::NotLanguageTag),
        }
    }
    let default_language = match default_language {
        Some(tag) => {
            if given_languages
                && !supported_languages
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(&tag))
            {
                e.add("/settings/defaultLanguage", Reason::NotSupportedLanguage);
            }
            tag
        }
        None => supported_languages
            .first()
            .cloned()
            .unwrap_or_else(|| "en-US".into()),
    };
    if !given_languages {
        supported_languages = vec![default_language.clone()];
    }

    if !e.0.is_empty() {
        return Err(e.0);
    }
    Ok(NewWorkspace {
        org_id,
        name,
        description,
        visibility,
        timezone,
        default_language,
        education_mode,
        lms_integration,
        exam_generation_enabled,
        beginner_mode_default,
        allowed_domains,
        feature_flags,
        supported_languages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_languages_and_domains_come_from_their_registries() {
        for zone in [
            "America/Los_Angeles",
            "Europe/Paris",
            "UTC",
            "Asia/Kolkata",
            "America/Argentina/Buenos_Aires",
        ] {
            assert!(check_timezone(zone), "{zone}");
        }
        for zone in ["Mars/Olympus", "america/los_angeles", "PST8", "", "Europe/"] {
            assert!(!check_timezone(zone), "{zone}");
        }
        for (raw, canonical) in [
            ("en-US", "en-US"),
            ("EN-us", "en-US"),
            ("es-419", "es-419"),
            ("zh-Hant-TW", "zh-Hant-TW"),
            ("fr", "fr"),
        ] {
            assert_eq!(check_language(raw).as_deref(), Some(canonical), "{raw}");
        }
        for raw in [
            "",
            "en_US",
            "english",
            "en-AB",
            "xx-invalid-tag-!!",
            "en--US",
        ] {
            assert_eq!(check_language(raw), None, "{raw}");
        }
        for (raw, ascii) in [
            ("university.edu", "university.edu"),
            ("Sub.Example.COM.", "sub.example.com"),
            ("bücher.de", "xn--bcher-kva.de"),
        ] {
            assert_eq!(check_domain(raw).as_deref(), Some(ascii), "{raw}");
        }
        for raw in [
            "localhost",
            "not a domain",
            "-bad-.com",
            "a..b",
            "under_score.com",
            "10.0.0.1",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert_eq!(check_domain(raw), None, "{raw}");
        }
    }

    #[test]
    fn names_are_trimmed_and_counted_in_characters() {
        assert_eq!(check_name("  Lab "), Ok("Lab".into()));
        assert_eq!(check_name(" \t "), Err(Reason::Empty));
        assert_eq!(check_name("a\nb"), Err(Reason::ControlCharacters));
        assert_eq!(check_name("a\u{0}"), Err(Reason::ControlCharacters));
        assert_eq!(
            check_name(&"ü".repeat(100)).map(|n| n.chars().count()),
            Ok(100)
        );
        assert_eq!(check_name(&"a".repeat(101)), Err(Reason::TooLong(100)));
        assert_eq!(
            check_uuid("A1B2C3D4-5678-90EF-1234-567890ABCDEF").as_deref(),
            Some("a1b2c3d4-5678-90ef-1234-567890abcdef")
        );
        assert_eq!(check_uuid("a1b2c3d456789-0ef1234567890abcdef0"), None);
    }
}
