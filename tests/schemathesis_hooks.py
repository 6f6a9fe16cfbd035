"""Schemathesis hooks for openapi.yaml (loaded through tests/schemathesis.toml).

The document names three string formats JSON Schema has no generator for; these give
Schemathesis valid values of each, so a generated request that the document calls valid is
one the backend must accept. And it states one rule a schema cannot express: a
`defaultLanguage` must be among the `supportedLanguages` given with it.
"""

import schemathesis
from hypothesis import strategies as st

# Zone names of the IANA database, as chrono-tz knows them.
TIME_ZONES = [
    "UTC",
    "Europe/Paris",
    "America/Los_Angeles",
    "America/Argentina/Buenos_Aires",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Etc/GMT+5",
]
# Registered BCP 47 tags, in various cases (the backend returns them canonical).
LANGUAGES = ["en", "en-US", "es-ES", "fr-FR", "DE-at", "zh-Hant-TW", "sr-Latn-RS", "pt-br"]
# DNS names of two labels or more, internationalized ones included.
DNS_NAMES = ["university.edu", "Example.ORG", "a-b.co.uk", "bücher.example", "xn--bcher-kva.example."]

schemathesis.openapi.format("iana-time-zone", st.sampled_from(TIME_ZONES))
schemathesis.openapi.format("bcp47-registered", st.sampled_from(LANGUAGES))
schemathesis.openapi.format("dns-name", st.sampled_from(DNS_NAMES))


@schemathesis.hook("filter_body")
def default_language_among_supported(context, body):
    """`settings.defaultLanguage` must be one of `supportedLanguages` when both are given."""
    if context.operation is None or context.operation.label != "POST /api/workspaces":
        return True
    if not isinstance(body, dict):
        return True
    settings = body.get("settings")
    default = settings.get("defaultLanguage") if isinstance(settings, dict) else None
    supported = body.get("supportedLanguages")
    if not isinstance(default, str) or not isinstance(supported, list):
        return True
    return default.lower() in {s.lower() for s in supported if isinstance(s, str)}
