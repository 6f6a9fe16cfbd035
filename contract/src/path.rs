//! The one form of a request path both tiers sign and verify.

use std::borrow::Cow;

/// The path the signature covers, so that the filter (which sees `:path` as the client sent
/// it) and the backend (which sees what its host hands it) cannot disagree:
///
/// 1. everything from the first `#` on is dropped (a fragment is never part of a request
///    target; Envoy strips it, others may not);
/// 2. an empty query is dropped with its `?`: `/a?` is `/a`, since hosts differ on whether
///    they keep a bare `?` (the local runner and Spin drop it, Envoy forwards it);
/// 3. nothing else changes: no percent-decoding, no case folding, no dot-segment removal,
///    and a non-empty query is kept byte for byte (`/a??` keeps its query `?`).
///
/// ```
/// use edge_contract::canonical_path;
/// assert_eq!(canonical_path("/api/workspaces?"), "/api/workspaces");
/// assert_eq!(canonical_path("/api/workspaces?orgId=a#top"), "/api/workspaces?orgId=a");
/// ```
pub fn canonical_path(raw: &str) -> Cow<'_, str> {
    let without_fragment = raw.split_once('#').map_or(raw, |(before, _)| before);
    let canonical = match without_fragment.split_once('?') {
        Some((path, "")) => path,
        _ => without_fragment,
    };
    if canonical.len() == raw.len() {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(canonical.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_question_marks_and_fragments_are_dropped_nothing_else_changes() {
        let cases = [
            ("/a", "/a"),
            ("/a?", "/a"),
            ("/a?x=1", "/a?x=1"),
            ("/a?#f", "/a"),
            ("/a#f", "/a"),
            ("/a#f?x=1", "/a"),
            ("/a?x=1#f", "/a?x=1"),
            ("/a?x=1?", "/a?x=1?"),
            ("/a??", "/a??"),
            ("/a?=", "/a?="),
            ("/a?&", "/a?&"),
            ("/a/?", "/a/"),
            ("/a%3F", "/a%3F"),
            ("/A/./b", "/A/./b"),
            ("/", "/"),
            ("?", ""),
            ("", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(canonical_path(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn an_already_canonical_path_is_not_copied() {
        assert!(matches!(
            canonical_path("/api/workspaces?x=1"),
            Cow::Borrowed(_)
        ));
    }
}
