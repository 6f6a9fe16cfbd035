//! RFC 9457 problem details: every rejection the service makes, and the one place that
//! turns a rejection into a response.

use serde_json::json;

use crate::http::ApiResponse;
use crate::i18n::{Lang, Text};

/// Every kind of problem, each with a stable `type` URI and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 400: one or more fields are invalid (`errors` lists them).
    ValidationFailed,
    /// 400: the body is not parseable in its declared media type.
    MalformedBody,
    /// 400: the `Idempotency-Key` header is malformed.
    InvalidIdempotencyKey,
    /// 400: a query parameter is invalid.
    InvalidQuery,
    /// 400: v3 needs the caller's company and the identity names none unambiguously.
    CompanyRequired,
    /// 401: no valid gateway identity.
    Unauthenticated,
    /// 403: the caller lacks the permission on this organization.
    Forbidden,
    /// 403: the company does not let standard users create workspaces.
    CreationDisabled,
    /// 404: no such resource (or not visible to the caller).
    NotFound,
    /// 405: the resource exists but not with this method.
    MethodNotAllowed,
    /// 409: a request with this idempotency key is still being processed.
    IdempotencyInFlight,
    /// 413: the body exceeds the documented limit.
    PayloadTooLarge,
    /// 415: the body's media type is not accepted here.
    UnsupportedMediaType,
    /// 422: the idempotency key was used before with a different request.
    IdempotencyMismatch,
    /// 500: the component is misconfigured (e.g. no gateway key).
    Internal,
    /// 503: the key-value store failed; nothing was acknowledged.
    StoreUnavailable,
}

struct Spec {
    slug: &'static str,
    status: u16,
    title: Text,
    detail: Text,
}

impl Kind {
    fn spec(self) -> Spec {
        use Kind::*;
        let (slug, status, title, detail) = match self {
            ValidationFailed => ("validation-failed", 400,
                Text { en: "Invalid request", es: "Solicitud no válida", fr: "Requête invalide" },
                Text { en: "One or more fields are invalid; see errors.", es: "Uno o más campos no son válidos; consulte errors.", fr: "Un ou plusieurs champs sont invalides ; voir errors." }),
            MalformedBody => ("malformed-body", 400,
                Text { en: "Malformed body", es: "Cuerpo mal formado", fr: "Corps mal formé" },
                Text { en: "The request body could not be parsed as {}.", es: "No se pudo interpretar el cuerpo de la solicitud como {}.", fr: "Le corps de la requête n'a pas pu être lu comme {}." }),
            InvalidIdempotencyKey => ("invalid-idempotency-key", 400,
                Text { en: "Invalid Idempotency-Key", es: "Idempotency-Key no válida", fr: "Idempotency-Key invalide" },
                Text { en: "Idempotency-Key must be 1 to 255 visible ASCII characters.", es: "Idempotency-Key debe tener de 1 a 255 caracteres ASCII visibles.", fr: "Idempotency-Key doit comporter de 1 à 255 caractères ASCII visibles." }),
            InvalidQuery => ("invalid-query", 400,
                Text { en: "Invalid query", es: "Consulta no válida", fr: "Requête de recherche invalide" },
                Text { en: "One or more query parameters are invalid; see errors.", es: "Uno o más parámetros de consulta no son válidos; consulte errors.", fr: "Un ou plusieurs paramètres de requête sont invalides ; voir errors." }),
            CompanyRequired => ("company-required", 400,
                Text { en: "Company unknown", es: "Empresa desconocida", fr: "Entreprise inconnue" },
                Text { en: "Your token names several organizations but no company; ask for a token with a company claim.", es: "Su token nombra varias organizaciones pero ninguna empresa; solicite un token con la reclamación company.", fr: "Votre jeton nomme plusieurs organisations mais aucune entreprise ; demandez un jeton avec la revendication company." }),
            Unauthenticated => ("unauthenticated", 401,
                Text { en: "Unauthenticated", es: "No autenticado", fr: "Non authentifié" },
                Text { en: "The request did not carry a valid identity from the gateway.", es: "La solicitud no llevaba una identidad válida de la pasarela.", fr: "La requête ne portait pas d'identité valide de la passerelle." }),
            Forbidden => ("forbidden", 403,
                Text { en: "Forbidden", es: "Prohibido", fr: "Interdit" },
                Text { en: "You do not have the permission {} in this organization.", es: "No tiene el permiso {} en esta organización.", fr: "Vous n'avez pas la permission {} dans cette organisation." }),
            CreationDisabled => ("workspace-creation-disabled", 403,
                Text { en: "Workspace creation disabled", es: "Creación de espacios de trabajo desactivada", fr: "Création d'espaces de travail désactivée" },
                Text { en: "Standard users of this company are not allowed to create workspaces.", es: "Los usuarios estándar de esta empresa no pueden crear espacios de trabajo.", fr: "Les utilisateurs standard de cette entreprise ne peuvent pas créer d'espaces de travail." }),
            NotFound => ("not-found", 404,
                Text { en: "Not found", es: "No encontrado", fr: "Introuvable" },
                Text { en: "No resource exists at this path, or it is not visible to you.", es: "No existe ningún recurso en esta ruta, o no es visible para usted.", fr: "Aucune ressource n'existe à ce chemin, ou elle ne vous est pas visible." }),
            MethodNotAllowed => ("method-not-allowed", 405,
                Text { en: "Method not allowed", es: "Método no permitido", fr: "Méthode non autorisée" },
                Text { en: "This resource accepts only: {}.", es: "Este recurso solo acepta: {}.", fr: "Cette ressource n'accepte que : {}." }),
            IdempotencyInFlight => ("idempotency-request-in-progress", 409,
                Text { en: "Request in progress", es: "Solicitud en curso", fr: "Requête en cours" },
                Text { en: "A request with this Idempotency-Key is still being processed; retry later.", es: "Una solicitud con esta Idempotency-Key aún se está procesando; reintente más tarde.", fr: "Une requête avec cette Idempotency-Key est encore en cours de traitement ; réessayez plus tard." }),
            PayloadTooLarge => ("payload-too-large", 413,
                Text { en: "Payload too large", es: "Carga demasiado grande", fr: "Charge utile trop volumineuse" },
                Text { en: "The request body exceeds {} bytes.", es: "El cuerpo de la solicitud supera los {} bytes.", fr: "Le corps de la requête dépasse {} octets." }),
            UnsupportedMediaType => ("unsupported-media-type", 415,
                Text { en: "Unsupported media type", es: "Tipo de medio no admitido", fr: "Type de média non pris en charge" },
                Text { en: "This endpoint accepts: {}.", es: "Este punto de acceso acepta: {}.", fr: "Ce point d'accès accepte : {}." }),
            IdempotencyMismatch => ("idempotency-key-reused", 422,
                Text { en: "Idempotency-Key reused", es: "Idempotency-Key reutilizada", fr: "Idempotency-Key réutilisée" },
                Text { en: "This Idempotency-Key was already used with a different request.", es: "Esta Idempotency-Key ya se usó con una solicitud diferente.", fr: "Cette Idempotency-Key a déjà été utilisée avec une requête différente." }),
            Internal => ("internal-error", 500,
                Text { en: "Internal error", es: "Error interno", fr: "Erreur interne" },
                Text { en: "The service is misconfigured; the operators have been told.", es: "El servicio está mal configurado; se ha avisado a los operadores.", fr: "Le service est mal configuré ; les opérateurs ont été prévenus." }),
            StoreUnavailable => ("store-unavailable", 503,
                Text { en: "Service unavailable", es: "Servicio no disponible", fr: "Service indisponible" },
                Text { en: "The workspace store is unavailable; nothing was saved. Retry later with the same Idempotency-Key.", es: "El almacén de espacios de trabajo no está disponible; no se guardó nada. Reintente más tarde con la misma Idempotency-Key.", fr: "Le stockage des espaces de travail est indisponible ; rien n'a été enregistré. Réessayez plus tard avec la même Idempotency-Key." }),
        };
        Spec {
            slug,
            status,
            title,
            detail,
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        self.spec().status
    }

    /// The stable `type` URI.
    pub fn type_uri(self) -> String {
        format!("urn:workspace-api:problem:{}", self.spec().slug)
    }
}

/// What a field of the wrong type should have been.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// A JSON string.
    String,
    /// A JSON boolean.
    Boolean,
    /// A JSON object.
    Object,
    /// An array of strings.
    StringArray,
    /// A string or `null`.
    StringOrNull,
    /// A `nextCursor` from an earlier page.
    Cursor,
}

impl Expected {
    fn text(self) -> Text {
        match self {
            Expected::String => Text {
                en: "Must be a string.",
                es: "Debe ser una cadena.",
                fr: "Doit être une chaîne.",
            },
            Expected::Boolean => Text {
                en: "Must be a boolean.",
                es: "Debe ser un booleano.",
                fr: "Doit être un booléen.",
            },
            Expected::Object => Text {
                en: "Must be an object.",
                es: "Debe ser un objeto.",
                fr: "Doit être un objet.",
            },
            Expected::StringArray => Text {
                en: "Must be an array of strings.",
                es: "Debe ser una lista de cadenas.",
                fr: "Doit être une liste de chaînes.",
            },
            Expected::StringOrNull => Text {
                en: "Must be a string or null.",
                es: "Debe ser una cadena o null.",
                fr: "Doit être une chaîne ou null.",
            },
            Expected::Cursor => Text {
                en: "Must be a nextCursor returned by an earlier page.",
                es: "Debe ser un nextCursor devuelto por una página anterior.",
                fr: "Doit être un nextCursor renvoyé par une page précédente.",
            },
        }
    }
}

/// Why one field was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A required field is absent.
    Required,
    /// The field is not part of the contract.
    Unknown,
    /// Wrong JSON type.
    WrongType(Expected),
    /// A number outside `min..=max`.
    OutOfRange(i64, i64),
    /// Empty after trimming.
    Empty,
    /// Longer than the maximum (characters, or items for arrays).
    TooLong(usize),
    /// Not a UUID.
    NotUuid,
    /// Not an IANA time zone.
    NotTimezone,
    /// Not a valid BCP 47 language tag.
    NotLanguageTag,
    /// `defaultLanguage` is not among `supportedLanguages`.
    NotSupportedLanguage,
    /// Not one of the allowed values.
    NotOneOf(&'static [&'static str]),
    /// Not a valid DNS name.
    NotDomain,
    /// The field appears twice (form bodies).
    Duplicate,
}

impl Reason {
    fn text(&self) -> (Text, Vec<String>) {
        use Reason::*;
        match self {
            Required => (
                Text {
                    en: "This field is required.",
                    es: "Este campo es obligatorio.",
                    fr: "Ce champ est obligatoire.",
                },
                vec![],
            ),
            Unknown => (
                Text {
                    en: "This field is not supported.",
                    es: "Este campo no está admitido.",
                    fr: "Ce champ n'est pas pris en charge.",
                },
                vec![],
            ),
            WrongType(t) => (t.text(), vec![]),
            OutOfRange(min, max) => (
                Text {
                    en: "Must be a number from {} to {}.",
                    es: "Debe ser un número de {} a {}.",
                    fr: "Doit être un nombre de {} à {}.",
                },
                vec![min.to_string(), max.to_string()],
            ),
            Empty => (
                Text {
                    en: "Must not be empty.",
                    es: "No debe estar vacío.",
                    fr: "Ne doit pas être vide.",
                },
                vec![],
            ),
            TooLong(n) => (
                Text {
                    en: "Must have at most {} characters or items.",
                    es: "Debe tener como máximo {} caracteres o elementos.",
                    fr: "Doit comporter au plus {} caractères ou éléments.",
                },
                vec![n.to_string()],
            ),
            NotUuid => (
                Text {
                    en: "Must be a UUID.",
                    es: "Debe ser un UUID.",
                    fr: "Doit être un UUID.",
                },
                vec![],
            ),
            NotTimezone => (
                Text {
                    en: "Must be an IANA time zone such as America/Los_Angeles.",
                    es: "Debe ser una zona horaria IANA como America/Los_Angeles.",
                    fr: "Doit être un fuseau horaire IANA tel que America/Los_Angeles.",
                },
                vec![],
            ),
            NotLanguageTag => (
                Text {
                    en: "Must be a valid BCP 47 language tag such as en-US.",
                    es: "Debe ser una etiqueta de idioma BCP 47 válida como en-US.",
                    fr: "Doit être une étiquette de langue BCP 47 valide telle que en-US.",
                },
                vec![],
            ),
            NotSupportedLanguage => (
                Text {
                    en: "Must be one of supportedLanguages.",
                    es: "Debe ser uno de supportedLanguages.",
                    fr: "Doit faire partie de supportedLanguages.",
                },
                vec![],
            ),
            NotOneOf(values) => (
                Text {
                    en: "Must be one of: {}.",
                    es: "Debe ser uno de: {}.",
                    fr: "Doit être l'une des valeurs : {}.",
                },
                vec![values.join(", ")],
            ),
            NotDomain => (
                Text {
                    en: "Must be a valid DNS domain name.",
                    es: "Debe ser un nombre de dominio DNS válido.",
                    fr: "Doit être un nom de domaine DNS valide.",
                },
                vec![],
            ),
            Duplicate => (
                Text {
                    en: "Must appear only once.",
                    es: "Solo debe aparecer una vez.",
                    fr: "Ne doit apparaître qu'une fois.",
                },
                vec![],
            ),
        }
    }

    /// The reason in `lang`.
    pub fn render(&self, lang: Lang) -> String {
        let (text, args) = self.text();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        text.render(lang, &args)
    }
}

/// One offending field: a JSON pointer (`#/settings/timezone`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON pointer as a URI fragment.
    pub pointer: String,
    /// The reason.
    pub reason: Reason,
}

impl FieldError {
    /// A field error at `pointer` (without the leading `#`).
    pub fn new(pointer: &str, reason: Reason) -> Self {
        Self {
            pointer: format!("#{pointer}"),
            reason,
        }
    }
}

/// A rejection, ready to be rendered in the caller's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What went wrong.
    pub kind: Kind,
    /// Values for the detail's placeholders.
    pub args: Vec<String>,
    /// The offending fields, for validation failures.
    pub errors: Vec<FieldError>,
    /// Extra response headers (`Allow`, `Retry-After`).
    pub headers: Vec<(String, String)>,
    /// What the operators should know (logged with the request ID, never sent).
    pub cause: Option<String>,
}

impl Problem {
    /// A problem of `kind` with no arguments.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            args: vec![],
            errors: vec![],
            headers: vec![],
            cause: None,
        }
    }

    /// A problem whose detail mentions `arg`.
    pub fn with_arg(kind: Kind, arg: impl Into<String>) -> Self {
        Self {
            args: vec![arg.into()],
            ..Self::new(kind)
        }
    }

    /// A 400 listing the offending fields.
    pub fn invalid(kind: Kind, errors: Vec<FieldError>) -> Self {
        Self {
            errors,
            ..Self::new(kind)
        }
    }

    /// Adds a response header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The response: `application/problem+json` in `lang`, with `Content-Language`.
    pub fn to_response(&self, lang: Lang, instance: &str, request_id: &str) -> ApiResponse {
        let spec = self.kind.spec();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut body = json!({
            "type": self.kind.type_uri(),
            "title": spec.title.render(lang, &[]),
            "status": spec.status,
            "detail": spec.detail.render(lang, &args),
            "instance": instance,
            "requestId": request_id,
        });
        if !self.errors.is_empty() {
            body["errors"] = self
                .errors
                .iter()
                .map(|e| json!({"pointer": e.pointer, "detail": e.reason.render(lang)}))
                .collect();
        }
        let mut response = ApiResponse {
            status: spec.status,
            headers: vec![
                ("content-type".into(), "application/problem+json".into()),
                ("content-language".into(), lang.tag().into()),
            ],
            body: serde_json::to_vec(&body).unwrap_or_default(),
        };
        response.headers.extend(self.headers.iter().cloned());
        response
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Self {
        Problem {
            cause: Some(e.to_string()),
            ..Problem::new(Kind::StoreUnavailable).with_header("retry-after", "1")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9457_with_errors_in_the_callers_language() {
        let p = Problem::invalid(
            Kind::ValidationFailed,
            vec![FieldError::new("/settings/timezone", Reason::NotTimezone)],
        );
        let r = p.to_response(Lang::Fr, "/api/workspaces", "rid");
        assert_eq!(r.status, 400);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.header("content-language"), Some("fr"));
        let b = r.json_body();
        assert_eq!(b["type"], "urn:workspace-api:problem:validation-failed");
        assert_eq!(b["title"], "Requête invalide");
        assert_eq!(b["requestId"], "rid");
        assert_eq!(b["errors"][0]["pointer"], "#/settings/timezone");
        assert!(b["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("Doit être un fuseau"));
    }

    #[test]
    fn field_reasons_are_localized_too() {
        assert_eq!(
            Reason::WrongType(Expected::Boolean).render(Lang::Es),
            "Debe ser un booleano."
        );
        assert_eq!(
            Reason::OutOfRange(1, 100).render(Lang::Fr),
            "Doit être un nombre de 1 à 100."
        );
        assert_eq!(
            Reason::NotOneOf(&["a", "b"]).render(Lang::En),
            "Must be one of: a, b."
        );
    }

    #[test]
    fn every_kind_has_a_distinct_type_and_no_errors_member_unless_listed() {
        use Kind::*;
        let all = [
            ValidationFailed,
            MalformedBody,
            InvalidIdempotencyKey,
            InvalidQuery,
            CompanyRequired,
            Unauthenticated,
            Forbidden,
            CreationDisabled,
            NotFound,
            MethodNotAllowed,
            IdempotencyInFlight,
            PayloadTooLarge,
            UnsupportedMediaType,
            IdempotencyMismatch,
            Internal,
            StoreUnavailable,
        ];
        let types: std::collections::BTreeSet<_> = all.iter().map(|k| k.type_uri()).collect();
        assert_eq!(types.len(), all.len());
        for kind in all {
            for lang in [Lang::En, Lang::Es, Lang::Fr] {
                let b = Problem::with_arg(kind, "x")
                    .to_response(lang, "/", "r")
                    .json_body();
                assert!(b.get("errors").is_none());
                assert_eq!(b["status"], kind.status());
                assert!(!b["detail"].as_str().unwrap().contains("{}"));
            }
        }
    }
}
