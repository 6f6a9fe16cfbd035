//! `X-Request-ID` ([`crate::headers::REQUEST_ID`]): keep a valid client UUID, in one
//! canonical form, generate one when absent, refuse anything else.
//!
//! The edge answers a refused ID with 400 `invalid-request-id`; the backend, which is reached
//! through the edge and so only sees IDs the edge normalized (or, called directly, anything),
//! answers with a fresh ID instead. Both read the header with [`decide`], so an ID either
//! keeps is the same string at both.

use uuid::Uuid;

/// Longest value looked at; a URN-form UUID is 45 characters.
pub const MAX_LEN: usize = 64;

/// Why a client's request ID was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestIdError {
    /// Sent more than once.
    Duplicate,
    /// Longer than [`MAX_LEN`].
    TooLong,
    /// Not a UUID.
    NotUuid,
}

impl RequestIdError {
    /// What the problem body says.
    pub fn detail(self) -> &'static str {
        match self {
            Self::Duplicate => "X-Request-ID must be sent at most once",
            Self::TooLong => "X-Request-ID is too long; send a UUID",
            Self::NotUuid => "X-Request-ID must be a UUID",
        }
    }
}

/// Decides the request ID from every value of the header the client sent, drawing a
/// random v4 UUID from `random` when there is none.
pub fn decide(
    values: &[&str],
    random: impl FnOnce() -> [u8; 16],
) -> Result<String, RequestIdError> {
    match values {
        [] => Ok(generate(random())),
        [one] => normalize(one),
        _ => Err(RequestIdError::Duplicate),
    }
}

/// A client-sent ID in canonical form (lower-case, hyphenated).
pub fn normalize(value: &str) -> Result<String, RequestIdError> {
    let value = value.trim();
    if value.len() > MAX_LEN {
        return Err(RequestIdError::TooLong);
    }
    let id = Uuid::try_parse(value).map_err(|_| RequestIdError::NotUuid)?;
    if id.is_nil() || id.is_max() {
        return Err(RequestIdError::NotUuid);
    }
    Ok(id.hyphenated().to_string())
}

/// A random (version 4) UUID from 16 random bytes.
pub fn generate(bytes: [u8; 16]) -> String {
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e";

    #[test]
    fn the_contract() {
        let random = || [7u8; 16];
        let long = "a".repeat(100);
        let cases: Vec<(Vec<&str>, Result<&str, RequestIdError>)> = vec![
            (vec![ID], Ok(ID)),
            (vec!["6F1C2A7E-1C7E-4D1A-9A55-0D3D0F1C2A7E"], Ok(ID)),
            (vec!["6f1c2a7e1c7e4d1a9a550d3d0f1c2a7e"], Ok(ID)),
            (vec!["{6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e}"], Ok(ID)),
            (
                vec!["urn:uuid:6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e"],
                Ok(ID),
            ),
            (vec![ID, ID], Err(RequestIdError::Duplicate)),
            (vec!["abc"], Err(RequestIdError::NotUuid)),
            (vec![""], Err(RequestIdError::NotUuid)),
            (
                vec!["00000000-0000-0000-0000-000000000000"],
                Err(RequestIdError::NotUuid),
            ),
            (
                vec!["6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7g"],
                Err(RequestIdError::NotUuid),
            ),
            (vec![&long], Err(RequestIdError::TooLong)),
        ];
        for (values, want) in cases {
            assert_eq!(
                decide(&values, random).as_deref().map_err(|e| *e),
                want,
                "{values:?}"
            );
        }
    }

    #[test]
    fn generated_ids_are_v4_and_come_from_the_random_input() {
        let a = decide(&[], || [1u8; 16]).unwrap();
        let b = decide(&[], || [2u8; 16]).unwrap();
        assert_ne!(a, b);
        let parsed = Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(normalize(&a).unwrap(), a);
    }
}
